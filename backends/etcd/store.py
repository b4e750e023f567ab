"""The topology record store on etcd: one key per record under `<prefix>/topology/`.

Versions are mod revisions; every conditional write is a txn comparing the key's
create_revision (create) or mod_revision (update, delete). A watch reads the whole prefix at
revision R, hands that over as the snapshot, then watches from R + 1, so no change can fall
between the two; if R + 1 has been compacted by the time the stream (re)starts, it takes a new
snapshot and delivers it with `resync=True` instead of skipping anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from coordination.driver_support import SnapshotStreamWatch
from coordination.errors import CoordinationError
from coordination.store import (
    RawEvent,
    RecordExistsError,
    RecordStoreDriver,
    Versioned,
    VersionMismatchError,
    WatchHandle,
    Write,
)

from .client import (
    Backoff,
    Compare,
    Delete,
    EtcdClientError,
    Get,
    Put,
    StreamHandle,
    Txn,
    TxnResult,
    WatchEvent,
    prefix_end,
)

if TYPE_CHECKING:
    from .coordinator import EtcdCoordinator

LOG = logging.getLogger(__name__)


class EtcdRecordStore(RecordStoreDriver):
    """`RecordStoreDriver` over etcd keys (see the module docstring)."""

    def __init__(self, coordinator: EtcdCoordinator) -> None:
        self.coordinator = coordinator
        self.root = f"{coordinator.prefix}/topology/".encode()
        self.watches: set[EtcdTopologyWatch] = set()

    def key(self, path: str) -> bytes:
        return self.root + path.encode()

    def path(self, key: bytes) -> str:
        return key[len(self.root):].decode("utf-8", "replace")

    def get(self, path: str) -> Versioned | None:
        def op() -> Versioned | None:
            kvs = self.coordinator.range(self.key(path)).kvs
            return Versioned(kvs[0].value, kvs[0].mod_revision) if kvs else None

        return self.coordinator.call(op, f"get {path}")

    def create(self, path: str, value: bytes) -> None:
        def op() -> None:
            key = self.key(path)
            if not self.coordinator.txn([Compare.create(key, "==", 0)], [Put(key, value)]).succeeded:
                raise RecordExistsError(path)

        self.coordinator.call(op, f"create {path}")

    def update(self, path: str, value: bytes, version: int) -> None:
        def op() -> None:
            key = self.key(path)
            compares = [Compare.create(key, ">", 0), Compare.mod(key, "==", version)]
            if not self.coordinator.txn(compares, [Put(key, value)]).succeeded:
                raise VersionMismatchError(path)

        self.coordinator.call(op, f"update {path}")

    def remove(self, path: str, version: int | None = None) -> bool:
        def op() -> bool:
            key = self.key(path)
            if version is None:
                result = self.coordinator.txn([], [Delete(key)])
                return bool(getattr(result.responses[0], "deleted", 0))
            result = self.coordinator.txn([Compare.mod(key, "==", version)], [Delete(key)],
                                          [Get(key, keys_only=True)])
            if result.succeeded:
                return bool(getattr(result.responses[0], "deleted", 0))
            if not result.range(0).kvs:
                return False
            raise VersionMismatchError(path)

        return self.coordinator.call(op, f"delete {path}")

    def get_many(self, paths: Sequence[str]) -> dict[str, Versioned | None]:
        """The reads in as few txns as etcd's --max-txn-ops allows (one for a usual batch)."""
        def op() -> dict[str, Versioned | None]:
            out: dict[str, Versioned | None] = {}
            for path, result, _ in self.coordinator.engine.txns(
                    list(paths), lambda p: Get(self.key(p))):
                kvs = getattr(result, "kvs", ())
                out[path] = Versioned(kvs[0].value, kvs[0].mod_revision) if kvs else None
            return out

        return self.coordinator.call(op, f"get {len(paths)} records")

    def write_many(self, writes: Sequence[Write]) -> list[bool]:
        """Each write a nested txn with its own compares, as many per txn as etcd allows: the
        writes succeed or fail one by one, in one round trip."""
        def op() -> list[bool]:
            return [self._made(write, result) for write, result, _ in
                    self.coordinator.engine.txns(list(writes), self._nested, nested=2)]

        return self.coordinator.call(op, f"write {len(writes)} records")

    def _nested(self, write: Write) -> Txn:
        key = self.key(write.path)
        if write.value is None:
            compares = () if write.version is None else (Compare.mod(key, "==", write.version),)
            return Txn(compares, (Delete(key),))
        if write.version is None:
            return Txn((Compare.create(key, "==", 0),), (Put(key, write.value),))
        return Txn((Compare.create(key, ">", 0), Compare.mod(key, "==", write.version)),
                   (Put(key, write.value),))

    @staticmethod
    def _made(write: Write, result: object) -> bool:
        if not isinstance(result, TxnResult) or not result.succeeded:
            return False
        if write.value is None:
            return bool(getattr(result.responses[0], "deleted", 0))
        return True

    def list(self, prefix: str = "") -> dict[str, Versioned]:
        def op() -> dict[str, Versioned]:
            start = self.key(prefix)
            kvs = self.coordinator.range(start, prefix_end(start)).kvs
            return {self.path(kv.key): Versioned(kv.value, kv.mod_revision) for kv in kvs}

        return self.coordinator.call(op, "list topology")

    def watch(self, sink: Callable[[RawEvent], None],
              kinds: frozenset[str] | None = None) -> WatchHandle:
        return EtcdTopologyWatch(self, sink, kinds).start()


class EtcdTopologyWatch(SnapshotStreamWatch):
    """Snapshot at R, then the change stream from R + 1; a fresh snapshot after compaction.

    Every step, and every call of the sink, runs on the coordinator's watch worker (one thread),
    never on the transport's reader thread.
    """

    def __init__(self, store: EtcdRecordStore, sink: Callable[[RawEvent], None],
                 kinds: frozenset[str] | None = None) -> None:
        super().__init__(store.coordinator.watch_worker, sink, store.watches)
        self._store = store
        # One kind: that kind's prefix only; several: the whole prefix (the core filters).
        self._start = (store.key(f"{next(iter(kinds))}/") if kinds is not None and len(kinds) == 1
                       else store.root)
        self._handle: StreamHandle | None = None
        self._revision = 0
        self._gen = 0
        self._backoff = Backoff(0.1, 2.0)
        self._timer: threading.Timer | None = None

    def _stop(self) -> None:
        self._gen += 1
        stream, self._handle = self._handle, None
        if stream is not None:
            stream.cancel()
        if self._timer is not None:
            self._timer.cancel()

    def _snapshot(self, resync: bool) -> dict[str, bytes] | None:
        """Read everything at one revision (the stream resumes just after it)."""
        store, co = self._store, self._store.coordinator
        stream, self._handle = self._handle, None
        if stream is not None:
            stream.cancel()
        self._gen += 1
        try:
            snapshot = co.call(lambda: co.range(self._start, prefix_end(self._start)), "snapshot")
        except CoordinationError as exc:
            self._retry_later(f"snapshot failed ({exc})", resync)
            return None
        self._revision = snapshot.revision
        return {store.path(kv.key): kv.value for kv in snapshot.kvs}

    def _stream(self) -> None:
        co, gen = self._store.coordinator, self._gen
        try:
            self._handle = co.client.watch(
                self._start, prefix_end(self._start), self._revision + 1,
                on_events=lambda events: self.submit(self._on_events, gen, events),
                on_compacted=lambda rev: self.submit(self._on_compacted, gen, rev),
                on_failed=lambda err: self.submit(self._on_failed, gen, err),
            )
        except EtcdClientError as exc:  # the client is closing
            LOG.debug("topology watch not started: %s", exc)

    def _retry_later(self, why: str, resync: bool = True) -> None:
        delay = self._backoff.next()
        LOG.warning("topology watch: %s; resynchronising in %.2f s", why, delay)
        self._timer = threading.Timer(delay, self.submit, (self.resync, resync))
        self._timer.daemon = True
        self._timer.start()

    def _on_events(self, gen: int, events: list[WatchEvent]) -> None:
        if gen != self._gen:
            return
        self._backoff.reset()
        for event in events:
            self.changed(self._store.path(event.kv.key),
                         event.kv.value if event.type == "put" else None)

    def _on_compacted(self, gen: int, revision: int) -> None:
        if gen == self._gen:
            LOG.warning("topology watch: revision compacted (now %d); resynchronising", revision)
            self.resync(True)

    def _on_failed(self, gen: int, error: EtcdClientError) -> None:
        if gen == self._gen:
            self._handle = None
            self._retry_later(f"the watch failed ({error})")
