"""The namespace every coordinator of one `example://name` shares, and its topology records.

A real driver talks to a server here; this one keeps the server's state in memory, under one
lock: members, candidacies, leaders and records, and one revision counter that every change
bumps (a leader's term is the revision that made it leader).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordination.dispatch import SerialExecutor
from coordination.driver_support import SnapshotStreamWatch
from coordination.store import (
    RawEvent,
    RecordExistsError,
    RecordStoreDriver,
    Versioned,
    VersionMismatchError,
    WatchHandle,
)
from coordination.types import Leadership

_SPACES: dict[str, Space] = {}


@dataclass
class Space:
    """One namespace. `candidates[name]` holds (priority, revision, election) per candidacy."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    revision: int = 0
    members: dict[str, bytes] = field(default_factory=dict)
    candidates: dict[str, list[tuple[int, int, Any]]] = field(default_factory=dict)
    leaders: dict[str, tuple[Any, Leadership]] = field(default_factory=dict)
    observers: dict[str, set[Any]] = field(default_factory=dict)
    records: dict[str, Versioned] = field(default_factory=dict)
    watches: set[ExampleWatch] = field(default_factory=set)

    def bump(self) -> int:
        self.revision += 1
        return self.revision


def space_for(name: str) -> Space:
    return _SPACES.setdefault(name, Space())  # atomic: one Space per name


class ExampleWatch(SnapshotStreamWatch):
    """The snapshot and the registration for changes happen under one lock: nothing between."""

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
    """Records of one namespace; watches deliver on `worker` (the coordinator's executor)."""

    def __init__(self, space: Space, worker: SerialExecutor) -> None:
        self.space, self.worker = space, worker

    def _write(self, path: str, value: bytes | None) -> None:
        if value is None:
            del self.space.records[path]
        else:
            self.space.records[path] = Versioned(value, self.space.bump())
        for watch in self.space.watches:
            watch.submit(watch.changed, path, value)

    def get(self, path: str) -> Versioned | None:
        return self.space.records.get(path)

    def create(self, path: str, value: bytes) -> None:
        with self.space.lock:
            if path in self.space.records:
                raise RecordExistsError(path)
            self._write(path, value)

    def update(self, path: str, value: bytes, version: int) -> None:
        with self.space.lock:
            if self.space.records.get(path, Versioned(b"", -1)).version != version:
                raise VersionMismatchError(path)
            self._write(path, value)

    def remove(self, path: str, version: int | None = None) -> bool:
        with self.space.lock:
            if path not in self.space.records:
                return False
            if version not in (None, self.space.records[path].version):
                raise VersionMismatchError(path)
            self._write(path, None)
            return True

    def list(self, prefix: str = "") -> dict[str, Versioned]:
        with self.space.lock:
            return {p: v for p, v in self.space.records.items() if p.startswith(prefix)}

    def watch(self, sink: Callable[[RawEvent], None],
              kinds: frozenset[str] | None = None) -> WatchHandle:
        return ExampleWatch(self.space, self.worker, sink).start()
