"""Elections in the example namespace. A candidacy is (-priority, revision, election), so the
smallest one (highest priority, then oldest) leads; each change of leader draws a new term
from the revision counter, so terms only grow. Everyone a change concerns is told on their
own worker thread, where `report` applies what the namespace says then."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordination.election import Election
from coordination.types import Candidate, Leadership

if TYPE_CHECKING:
    from .coordinator import ExampleCoordinator


class ExampleElection(Election):
    coordinator: ExampleCoordinator

    def _driver_join(self, priority: int | None) -> None:
        """Replace this member's candidacy by one of `priority` (None: by none). If the best
        candidacy changes, it leads under a new term and everyone concerned is told."""
        space = self.coordinator.space
        with space.lock:
            kept = tuple(c for c in space.candidates.get(self.name, ()) if c[2] is not self)
            cands = kept if priority is None else (*kept, (-priority, next(space.revisions), self))
            space.candidates[self.name] = cands
            best = min(cands, default=(0, 0, None))[2]
            old = space.leaders.get(self.name, (None, None))[0]
            if best is not old:
                leader = best and Leadership(best.coordinator.member_id, next(space.revisions))
                space.leaders[self.name] = (best, leader)
                for election in {*space.observers.get(self.name, ()), best, old} - {None}:
                    election.coordinator.worker.submit(election.report)

    def _driver_leave(self) -> None:
        self._driver_join(None)

    def _driver_reevaluate(self) -> None:
        self.coordinator.worker.submit(self.report)

    def _driver_observe(self) -> None:
        with self.coordinator.space.lock:
            self.coordinator.space.observers.setdefault(self.name, set()).add(self)
        self._driver_reevaluate()

    def _driver_read_leader(self) -> Leadership | None:
        return self.coordinator.space.leaders.get(self.name, (None, None))[1]

    def _driver_read_candidates(self) -> list[Candidate]:
        ranked = sorted(self.coordinator.space.candidates.get(self.name, ()))
        return [Candidate(e.coordinator.member_id, -rank) for rank, _, e in ranked]

    def report(self) -> None:
        """Apply what the namespace says now (worker thread): lead or not, and tell listeners."""
        leader, leadership = self.coordinator.space.leaders.get(self.name, (None, None))
        if leader is self:
            self._elected(leadership.term)
        else:
            self._revoked()
        if self.observed:
            self._leader_seen(leadership)
