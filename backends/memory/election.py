"""Elections in the memory server: the server settles them under its lock and reports to each
member's worker; this side joins, leaves and reads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordination.election import Election
from coordination.types import Candidate, Leadership

from .server import ElectionState

if TYPE_CHECKING:
    from .coordinator import MemoryCoordinator


class MemoryElection(Election):
    """An election kept in the process's `MemoryServer`."""

    coordinator: MemoryCoordinator

    def _driver_join(self, priority: int) -> None:
        self.coordinator.server.join(self.name, self, self.coordinator.session, priority)

    def _driver_leave(self) -> None:
        self.coordinator.server.leave(self.name, self)

    def _driver_forget(self) -> None:
        pass  # the server dropped the candidacy with the session

    def _driver_reevaluate(self) -> None:
        server = self.coordinator.server
        with server.lock:
            state = server.elections.get(self.name)
            mine = state is not None and any(c.election is self for c in state.candidates)
        priority = self.campaign_priority
        if not mine and priority is not None:
            self._driver_join(priority)

    def _driver_observe(self) -> None:
        server = self.coordinator.server
        with server.lock:
            state = server.elections.setdefault(self.name, ElectionState())
            if self not in state.observers:
                state.observers.append(self)
            self.coordinator.worker.submit(self._leader_seen, server.leader(self.name))

    def _driver_read_leader(self) -> Leadership | None:
        return self.coordinator.server.leader(self.name)

    def _driver_read_candidates(self) -> list[Candidate]:
        server = self.coordinator.server
        with server.lock:
            state = server.elections.get(self.name)
            ranked = sorted(state.candidates) if state else []
            return [Candidate(c.member_id, c.priority) for c in ranked]

    def _revoked_if_term(self, term: int) -> None:
        leadership = self.leadership
        if leadership is not None and leadership.term <= term:
            self._revoked()
