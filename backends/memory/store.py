"""Topology records in the memory server, and watches fed on the member's worker."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from coordination.dispatch import SerialExecutor
from coordination.store import (
    RawEvent,
    RawSnapshot,
    RecordExistsError,
    RecordStoreDriver,
    Versioned,
    VersionMismatchError,
    WatchHandle,
)

from .server import MemoryServer

if TYPE_CHECKING:
    from .coordinator import MemoryCoordinator


class MemoryWatch(WatchHandle):
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

    def watch(self, sink: Callable[[RawEvent], None],
              kinds: frozenset[str] | None = None) -> WatchHandle:
        with self._server.lock:
            watch = MemoryWatch(self._server, self._coordinator.worker, sink)
            items = {p: v.value for p, v in self._server.records.items()}
            watch.push(RawSnapshot(items))
            self._server.watchers.append(watch)
            return watch
