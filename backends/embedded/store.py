"""Topology records in the embedded store: the `records` table, every write logged in `changes`,
and the watches the coordinator's worker feeds from each sync (snapshot first, then changes)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from coordination.store import (
    RawChange,
    RawEvent,
    RawSnapshot,
    RecordExistsError,
    RecordStoreDriver,
    Versioned,
    VersionMismatchError,
    WatchHandle,
    Write,
)

from .db import SyncState, Txn

if TYPE_CHECKING:
    from .coordinator import EmbeddedCoordinator

LOG = logging.getLogger(__name__)


class EmbeddedWatch(WatchHandle):
    """A topology watch: the revision it has delivered up to (None: it needs a snapshot)."""

    def __init__(self, coordinator: EmbeddedCoordinator, sink: Callable[[RawEvent], None]) -> None:
        self.coordinator = coordinator
        self.sink = sink
        self.rev: int | None = None
        self.resync = False
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.coordinator.drop_watch(self)

    def deliver(self, state: SyncState) -> bool:
        """Deliver a snapshot (a new watch, or one behind the change log) or the changes since
        the revision delivered last. False if the snapshot is not in `state` yet (the caller
        syncs again)."""
        if self.rev is not None and self.rev < state.log_floor:
            self.resync = True
        try:
            if self.rev is None or self.resync:
                if state.snapshot is None:  # flagged after this sync's read: the next one has it
                    return False
                self.sink(RawSnapshot(dict(state.snapshot), resync=self.resync))
            else:
                for change_rev, path, value in state.changes:
                    if change_rev > self.rev:
                        self.sink(RawChange(path, value))
        except Exception:
            LOG.exception("topology watch sink failed")
        self.rev, self.resync = state.revision, False
        return True


class EmbeddedRecordStore(RecordStoreDriver):
    """Topology records in the `records` table; every write is logged in `changes`."""

    def __init__(self, coordinator: EmbeddedCoordinator) -> None:
        self._coordinator = coordinator

    def get(self, path: str) -> Versioned | None:
        return self._coordinator.read(lambda db: db.get(path))

    def list(self, prefix: str = "") -> dict[str, Versioned]:
        return self._coordinator.read(lambda db: db.list(prefix))

    def get_many(self, paths: Sequence[str]) -> dict[str, Versioned | None]:
        return self._coordinator.read(lambda db: {path: db.get(path) for path in paths})

    def write_many(self, writes: Sequence[Write]) -> list[bool]:
        """Every write in one transaction (one commit, one notification of the peers), each
        made only if its own condition holds."""
        def op(txn: Txn) -> list[bool]:
            made = []
            for write in writes:
                current = txn.record_version(write.path)
                if write.value is None:  # a delete: the record must be there (at `version`)
                    holds = current is not None and write.version in (None, current)
                else:  # a create (version None: absent) or an update
                    holds = current == write.version
                made.append(holds)
                if holds and write.value is None:
                    txn.delete(write.path)
                elif holds:
                    txn.put(write.path, write.value)
            return made

        return self._coordinator.write(op)

    def create(self, path: str, value: bytes) -> None:
        def op(txn: Txn) -> None:
            if txn.record_version(path) is not None:
                raise RecordExistsError(path)
            txn.put(path, value)

        self._coordinator.write(op)

    def update(self, path: str, value: bytes, version: int) -> None:
        def op(txn: Txn) -> None:
            if txn.record_version(path) != version:
                raise VersionMismatchError(path)
            txn.put(path, value)

        self._coordinator.write(op)

    def remove(self, path: str, version: int | None = None) -> bool:
        def op(txn: Txn) -> bool:
            current = txn.record_version(path)
            if current is None:
                return False
            if version is not None and current != version:
                raise VersionMismatchError(path)
            txn.delete(path)
            return True

        return self._coordinator.write(op)

    def watch(self, sink: Callable[[RawEvent], None],
              kinds: frozenset[str] | None = None) -> WatchHandle:
        return self._coordinator.add_watch(sink)
