"""The example coordinator: a session in the shared namespace (its member record), and the
hooks that hand elections and records to `election` and `store`."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from coordination.api import Coordinator
from coordination.dispatch import SerialExecutor
from coordination.driver_support import decode_members
from coordination.election import Election
from coordination.store import RecordStoreDriver
from coordination.types import MemberInfo, SessionState
from coordination.urls import BackendURL

from .election import ExampleElection, settle
from .store import ExampleRecordStore, space_for


class ExampleCoordinator(Coordinator):
    """A member of `example://name`: every coordinator of one name in this process shares it."""

    #: one thread of ours: election reports and topology watches run there, never in a caller
    EXECUTORS: ClassVar[dict[str, str]] = {"worker": "example-driver"}
    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "watch_members": "members join and leave in this process; the failure detector, "
                         "which would follow them, never runs (EVICTS is False)"}
    worker: SerialExecutor

    def __init__(self, url: BackendURL, member_id: str, options: dict[str, Any]) -> None:
        super().__init__(url, member_id, options)
        self.space = space_for(",".join(h for h, _ in url.hosts) + url.path)

    def _driver_start(self) -> None:
        with self.space.lock:
            self.space.members[self.member_id] = json.dumps(self.info.to_dict()).encode()
        self.worker.call(self._set_session_state, SessionState.CONNECTED)

    def _driver_stop(self) -> None:
        with self.space.lock:
            self.space.members.pop(self.member_id, None)
            for name, cands in self.space.candidates.items():
                cands[:] = [c for c in cands if c[2].coordinator is not self]
                settle(self.space, name)

    def _driver_members(self) -> dict[str, MemberInfo]:
        with self.space.lock:
            return decode_members(sorted(self.space.members.items()))

    def _driver_election(self, name: str) -> Election:
        return ExampleElection(self, name)

    def _driver_election_names(self) -> list[str]:
        with self.space.lock:
            return sorted(name for name, cands in self.space.candidates.items() if cands)

    def _driver_record_store(self) -> RecordStoreDriver:
        return ExampleRecordStore(self.space, self.worker)
