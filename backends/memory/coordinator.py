"""The memory coordinator: a session in the process's `MemoryServer`, and fault hooks."""

from __future__ import annotations

from typing import Any, ClassVar

from coordination.api import Coordinator
from coordination.dispatch import SerialExecutor
from coordination.election import Election
from coordination.errors import SessionLostError
from coordination.store import RecordStoreDriver
from coordination.types import MemberInfo, SessionState
from coordination.urls import BackendURL

from .election import MemoryElection
from .server import server_for
from .store import MemoryRecordStore


class MemoryCoordinator(Coordinator):
    """Coordinator for `memory://name`: every coordinator of one name in this process shares
    state. Nothing crosses process boundaries."""

    #: the server reports election outcomes to each member here
    EXECUTORS: ClassVar[dict[str, str]] = {"worker": "memory-driver"}
    worker: SerialExecutor

    def __init__(self, url: BackendURL, member_id: str, options: dict[str, Any]) -> None:
        super().__init__(url, member_id, options)
        self.server = server_for(url)
        self.session = 0
        self._suspended = False

    def check_session(self) -> None:
        if self._suspended or self.session not in self.server.live_sessions:
            raise SessionLostError(f"member {self.member_id!r} has no live session")

    def _register(self) -> None:
        self.session = self.server.open_session()
        with self.server.lock:
            self.server.members[self.member_id] = (self.session, self.info)

    def _driver_start(self) -> None:
        self._register()
        self.worker.call(self._set_session_state, SessionState.CONNECTED)

    def _driver_stop(self) -> None:
        self.server.close_session(self.session)

    def _driver_members(self) -> dict[str, MemberInfo]:
        with self.server.lock:
            return {m: info for m, (_, info) in sorted(self.server.members.items())}

    def _driver_election(self, name: str) -> Election:
        return MemoryElection(self, name)

    def _driver_election_names(self) -> list[str]:
        with self.server.lock:
            return sorted(n for n, s in self.server.elections.items() if s.candidates)

    def _driver_record_store(self) -> RecordStoreDriver:
        return MemoryRecordStore(self)

    # ---- fault hooks (for the conformance suite) ----------------------------------------

    def suspend(self) -> None:
        """The connection drops; the session lives on."""
        self._suspended = True
        self.worker.call(self._set_session_state, SessionState.SUSPENDED)

    def resume(self) -> None:
        """The connection returns to the same session."""
        self._suspended = False
        self.worker.call(self._set_session_state, SessionState.CONNECTED)

    def expire(self) -> None:
        """The session expires (its candidacies go), then a new session is established."""
        self.server.close_session(self.session)
        self.worker.call(self._set_session_state, SessionState.LOST)
        self._suspended = False
        self._register()
        self.worker.call(self._set_session_state, SessionState.CONNECTED)
