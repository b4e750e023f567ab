"""The example coordinator: a session in the shared namespace (its member record), and the
hooks that hand elections and records to `election` and `store`."""

import json
from typing import ClassVar

from coordination.api import Coordinator
from coordination.dispatch import SerialExecutor
from coordination.driver_support import decode_members
from coordination.types import MemberInfo, SessionState

from .election import ExampleElection
from .store import SPACES, ExampleRecordStore, Space


class ExampleCoordinator(Coordinator):
    """A member of `example://name`. Its election reports and topology watches run on
    `worker`, a thread of its own, never in a caller."""

    EXECUTORS: ClassVar[dict[str, str]] = {"worker": "example-driver"}
    worker: SerialExecutor
    space: Space

    def _driver_start(self) -> None:
        self.space = SPACES.setdefault((self.url.hosts, self.url.path), Space())
        with self.space.lock:
            self.space.members[self.member_id] = json.dumps(self.info.to_dict()).encode()
        self.worker.call(self._set_session_state, SessionState.CONNECTED)

    def _driver_stop(self) -> None:
        with self.space.lock:  # close() has resigned our campaigns: the rest goes now
            self.space.members.pop(self.member_id, None)
            for observers in self.space.observers.values():
                observers.difference_update(self.existing_elections())

    def _driver_members(self) -> dict[str, MemberInfo]:
        with self.space.lock:
            return decode_members(sorted(self.space.members.items()))

    def _driver_election(self, name: str) -> ExampleElection:
        return ExampleElection(self, name)

    def _driver_election_names(self) -> list[str]:
        with self.space.lock:
            return sorted(name for name, cands in self.space.candidates.items() if cands)

    def _driver_record_store(self) -> ExampleRecordStore:
        return ExampleRecordStore(self.space, self.worker)
