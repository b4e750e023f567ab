"""The shared state behind one `memory://name` namespace: a global revision counter (terms),
sessions, members, elections (settled under one lock) and records. It plays the store server."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from coordination.errors import SessionLostError
from coordination.store import RawChange, Versioned
from coordination.types import Leadership, MemberInfo
from coordination.urls import BackendURL

if TYPE_CHECKING:
    from .election import MemoryElection
    from .store import MemoryWatch

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
class ElectionState:
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
        self.elections: dict[str, ElectionState] = {}
        self.records: dict[str, Versioned] = {}
        self.watchers: list[MemoryWatch] = []

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
            state = self.elections.setdefault(name, ElectionState())
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
