"""Elections in the example namespace: a candidacy is (priority, revision of its creation);
the best one (higher priority, then older) leads, and each change of leader draws a new term
from the revision counter, so terms only grow. Whoever a change concerns is told on its own
worker thread, where `report` applies what the namespace says now."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordination.election import Election
from coordination.types import Candidate, Leadership

if TYPE_CHECKING:
    from .coordinator import ExampleCoordinator
    from .store import Space


def ranked(space: Space, name: str) -> list[tuple[int, int, ExampleElection]]:
    """The candidacies of election `name`, best first (under the space's lock)."""
    return sorted(space.candidates.get(name, []), key=lambda c: (-c[0], c[1]))


def settle(space: Space, name: str) -> None:
    """Elect the best candidacy if it does not lead yet, and tell everyone concerned (under
    the space's lock)."""
    best = next((c[2] for c in ranked(space, name)), None)
    old = space.leaders.get(name)
    if old is not None and old[0] is best:
        return
    if best is None:
        space.leaders.pop(name, None)
    else:
        space.leaders[name] = (best, Leadership(best.coordinator.member_id, space.bump()))
    for election in {*space.observers.get(name, ()), best, old[0] if old else None} - {None}:
        election.coordinator.worker.submit(election.report)


class ExampleElection(Election):
    coordinator: ExampleCoordinator

    def _driver_join(self, priority: int) -> None:
        space = self.coordinator.space
        with space.lock:
            cands = space.candidates.setdefault(self.name, [])
            cands[:] = [c for c in cands if c[2] is not self] + [(priority, space.bump(), self)]
            settle(space, self.name)

    def _driver_leave(self) -> None:
        space = self.coordinator.space
        with space.lock:
            cands = space.candidates.get(self.name, [])
            cands[:] = [c for c in cands if c[2] is not self]
            settle(space, self.name)

    def _driver_forget(self) -> None:
        pass  # the session's candidacies went with it

    def _driver_reevaluate(self) -> None:
        self.coordinator.worker.submit(self.report)

    def _driver_observe(self) -> None:
        with self.coordinator.space.lock:
            self.coordinator.space.observers.setdefault(self.name, set()).add(self)
        self.coordinator.worker.submit(self.report)

    def _driver_read_leader(self) -> Leadership | None:
        with self.coordinator.space.lock:
            leader = self.coordinator.space.leaders.get(self.name)
        return leader[1] if leader else None

    def _driver_read_candidates(self) -> list[Candidate]:
        with self.coordinator.space.lock:
            cands = ranked(self.coordinator.space, self.name)
        return [Candidate(e.coordinator.member_id, priority) for priority, _, e in cands]

    def report(self) -> None:
        """Apply what the namespace says now (worker thread): lead, follow, and tell listeners."""
        with self.coordinator.space.lock:
            leader = self.coordinator.space.leaders.get(self.name)
        if leader is not None and leader[0] is self:
            self._elected(leader[1].term)
        else:
            self._revoked()
        if self.observed:
            self._leader_seen(leader[1] if leader else None)
