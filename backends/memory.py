"""In-process driver (`memory://name`): the reference semantics, for tests and single processes.

Coordinators connected to the same `memory://name` in one process share one `MemoryServer`: a
global revision counter (terms), sessions, elections and records, behaving like one ZooKeeper
ensemble would. It also exposes fault hooks (`suspend`, `resume`, `expire`) so the conformance
suite can exercise the session policy without a network.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordination.api import Coordinator
from coordination.dispatch import SerialExecutor
from coordination.election import Election
from coordination.errors import SessionLostError
from coordination.store import (
    RawChange,
    RawEvent,
    RawSnapshot,
    RecordExistsError,
    RecordStoreDriver,
    Versioned,
    VersionMismatchError,
    WatchHandle,
)
from coordination.types import Candidate, Leadership, MemberInfo, SessionState
from coordination.urls import BackendURL

_SERVERS: dict[str, MemoryServer] = {}
_SERVERS_LOCK = threading.Lock()


@dataclass(order=True)
class _Candidacy:
    sort_key: tuple[int, int]
    member_id: str = field(compare=False)
    priority: int = field(compare=False)
    session: int = field(compare=False)
    election: MemoryElection = field(compare=False, repr=False)


@dataclass
class _ElectionState:
    candidates: list[_Candidacy] = field(default_factory=list)
    leader: _Candidacy | None = None
    term: int = 0
    observers: list[MemoryElection] = field(default_factory=list)


class MemoryServer:
    """The shared state behind one `memory://name` namespace."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.revision = 0
        self._sessions = itertools.count(1)
        self._seq = itertools.count(1)
        self.live_sessions: set[int] = set()
        self.members: dict[str, tuple[int, MemberInfo]] = {}
        self.elections: dict[str, _ElectionState] = {}
        self.records: dict[str, Versioned] = {}
        self.watchers: list[_MemoryWatch] = []

    def bump(self) -> int:
        self.revision += 1
        return self.revision

    def open_session(self) -> int:
        with self.lock:
            session = next(self._sessions)
            self.live_sessions.add(session)
            return session

    def close_session(self, session: int) -> None:
        """End a session: drop its members and candidacies (what an expiry does)."""
        with self.lock:
            self.live_sessions.discard(session)
            for member_id, (owner, _) in list(self.members.items()):
                if owner == session:
                    del self.members[member_id]
            for name, state in self.elections.items():
                state.candidates = [c for c in state.candidates if c.session != session]
                self.settle(name)

    # ---- elections ----------------------------------------------------------------------

    def join(self, name: str, election: MemoryElection, session: int, priority: int) -> None:
        with self.lock:
            if session not in self.live_sessions:
                raise SessionLostError("memory session is gone")
            state = self.elections.setdefault(name, _ElectionState())
            state.candidates = [c for c in state.candidates if c.election is not election]
            state.candidates.append(_Candidacy(
                (-priority, next(self._seq)), election.coordinator.member_id, priority, session,
                election,
            ))
            self.settle(name)

    def leave(self, name: str, election: MemoryElection) -> None:
        with self.lock:
            state = self.elections.get(name)
            if state is not None:
                state.candidates = [c for c in state.candidates if c.election is not election]
                self.settle(name)

    def settle(self, name: str) -> None:
        """Elect the best candidate if it is not the leader yet; a new leader gets a new term."""
        state = self.elections[name]
        best = min(state.candidates) if state.candidates else None
        if best is state.leader:
            return
        old, state.leader = state.leader, best
        if old is not None:
            old.election.coordinator.worker.submit(old.election._revoked_if_term, state.term)
        if best is not None:
            state.term = self.bump()
            best.election.coordinator.worker.submit(best.election._elected, state.term)
        seen = Leadership(best.member_id, state.term) if best else None
        for observer in state.observers:
            observer.coordinator.worker.submit(observer._leader_seen, seen)

    def leader(self, name: str) -> Leadership | None:
        with self.lock:
            state = self.elections.get(name)
            if state is None or state.leader is None:
                return None
            return Leadership(state.leader.member_id, state.term)

    # ---- records ------------------------------------------------------------------------

    def write(self, path: str, value: bytes | None) -> None:
        if value is None:
            self.records.pop(path, None)
        else:
            self.records[path] = Versioned(value, self.bump())
        for watch in self.watchers:
            watch.push(RawChange(path, value))


def server_for(url: BackendURL) -> MemoryServer:
    """The shared server for a URL's namespace (host and path)."""
    name = ",".join(h for h, _ in url.hosts) + url.path
    with _SERVERS_LOCK:
        return _SERVERS.setdefault(name, MemoryServer())


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
        if not mine and self._campaign is not None:
            self._driver_join(self._campaign.priority)

    def _driver_observe(self) -> None:
        server = self.coordinator.server
        with server.lock:
            state = server.elections.setdefault(self.name, _ElectionState())
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
        leadership = self._leadership
        if leadership is not None and leadership.term <= term:
            self._revoked()


class _MemoryWatch(WatchHandle):
    def __init__(self, server: MemoryServer, worker: SerialExecutor,
                 sink: Callable[[RawEvent], None]) -> None:
        self._server = server
        self._worker = worker
        self._sink = sink
        self._cancelled = False

    def push(self, event: RawEvent) -> None:
        if not self._cancelled:
            self._worker.submit(self._sink, event)

    def cancel(self) -> None:
        self._cancelled = True
        with self._server.lock:
            if self in self._server.watchers:
                self._server.watchers.remove(self)


class MemoryRecordStore(RecordStoreDriver):
    def __init__(self, coordinator: MemoryCoordinator) -> None:
        self._coordinator = coordinator
        self._server = coordinator.server

    def get(self, path: str) -> Versioned | None:
        with self._server.lock:
            return self._server.records.get(path)

    def create(self, path: str, value: bytes) -> None:
        with self._server.lock:
            self._coordinator.check_session()
            if path in self._server.records:
                raise RecordExistsError(path)
            self._server.write(path, value)

    def update(self, path: str, value: bytes, version: int) -> None:
        with self._server.lock:
            self._coordinator.check_session()
            current = self._server.records.get(path)
            if current is None or current.version != version:
                raise VersionMismatchError(path)
            self._server.write(path, value)

    def remove(self, path: str, version: int | None = None) -> bool:
        with self._server.lock:
            self._coordinator.check_session()
            current = self._server.records.get(path)
            if current is None:
                return False
            if version is not None and current.version != version:
                raise VersionMismatchError(path)
            self._server.write(path, None)
            return True

    def list(self, prefix: str = "") -> dict[str, Versioned]:
        with self._server.lock:
            return {p: v for p, v in self._server.records.items() if p.startswith(prefix)}

    def watch(self, sink: Callable[[RawEvent], None]) -> WatchHandle:
        with self._server.lock:
            watch = _MemoryWatch(self._server, self._coordinator.worker, sink)
            items = {p: v.value for p, v in self._server.records.items()}
            watch.push(RawSnapshot(items))
            self._server.watchers.append(watch)
            return watch


class MemoryCoordinator(Coordinator):
    """Coordinator for `memory://name`: every coordinator of one name in this process shares
    state. Nothing crosses process boundaries."""

    def __init__(self, url: BackendURL, member_id: str, options: dict[str, Any]) -> None:
        super().__init__(url, member_id, options)
        self.server = server_for(url)
        self.worker = SerialExecutor(f"memory-driver[{member_id}]")
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
        self.worker.stop()

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
