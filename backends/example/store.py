"""The namespace every coordinator of one `example://name` shares, and its topology records.

A real driver talks to a server here; this one keeps the server's state in memory, under one
lock, with one revision counter that every change draws from: a record's version is the
revision that wrote it, a leader's term the revision that made it leader."""

import itertools
import threading
from collections.abc import Callable
from typing import Any

from coordination.dispatch import SerialExecutor
from coordination.driver_support import SnapshotStreamWatch
from coordination.store import RawEvent, RecordStoreDriver, Versioned, WatchHandle


class Space:
    """One namespace: what a server would hold."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.revisions = itertools.count(1)
        self.members: dict[str, bytes] = {}
        self.candidates: dict[str, tuple[Any, ...]] = {}  # by election: see election.py
        self.leaders: dict[str, tuple[Any, Any]] = {}  # by election: (election, Leadership)
        self.observers: dict[str, set[Any]] = {}  # by election: elections with listeners
        self.records: dict[str, Versioned] = {}
        self.watches: set[ExampleWatch] = set()


SPACES: dict[Any, Space] = {}  # by hosts and path; dict.setdefault is atomic


class ExampleWatch(SnapshotStreamWatch):
    """Takes the snapshot and registers for changes under one lock: nothing falls between."""

    def __init__(self, space: Space, *args: Any) -> None:
        super().__init__(*args)
        self.space = space

    def _snapshot(self, resync: bool) -> dict[str, bytes]:
        with self.space.lock:
            self.space.watches.add(self)
            return {path: v.value for path, v in self.space.records.items()}

    def _stop(self) -> None:
        with self.space.lock:
            self.space.watches.discard(self)


class ExampleRecordStore(RecordStoreDriver):
    """The namespace's records; watches deliver on `worker`, the coordinator's executor. The
    core derives `create`, `update` and `remove` from `compare_and_set`."""

    def __init__(self, space: Space, worker: SerialExecutor) -> None:
        self.space, self.worker = space, worker

    def get(self, path: str) -> Versioned | None:
        return self.space.records.get(path)

    def list(self, prefix: str = "") -> dict[str, Versioned]:
        with self.space.lock:
            return {p: v for p, v in self.space.records.items() if p.startswith(prefix)}

    def compare_and_set(self, path: str, version: int | None, value: bytes | None) -> bool:
        with self.space.lock:
            current = self.space.records.get(path)
            if version != (current.version if current else None):
                return False
            if value is None:
                del self.space.records[path]
            else:
                self.space.records[path] = Versioned(value, next(self.space.revisions))
            for watch in self.space.watches:
                watch.submit(watch.changed, path, value)
            return True

    def watch(self, sink: Callable[[RawEvent], None]) -> WatchHandle:
        return ExampleWatch(self.space, self.worker, sink).start()
