"""Topology records on ZooKeeper: persistent znodes `<prefix>/topology/<kind>/<key>` holding
JSON, and watches that deliver a snapshot then every change (children watches per kind plus a
data watch per record, resynchronised after every reconnect)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, SessionExpiredError

from coordination.driver_support import SnapshotStreamWatch
from coordination.store import (
    RawEvent,
    RecordExistsError,
    RecordStoreDriver,
    Versioned,
    VersionMismatchError,
    WatchHandle,
)

from .client import TRANSIENT, BoundedClient

if TYPE_CHECKING:
    from .coordinator import ZooKeeperCoordinator

LOG = logging.getLogger(__name__)


class _ZooKeeperWatch(SnapshotStreamWatch):
    """Children watches per kind plus a data watch per record; dedup by mzxid; resync on
    reconnect (kazoo does not restore watches reliably: #29, #151)."""

    def __init__(self, store: ZooKeeperRecordStore, sink: Callable[[RawEvent], None],
                 kinds: frozenset[str] | None) -> None:
        super().__init__(store.coordinator.watch_worker, sink, store.watches,
                         quiet=(*TRANSIENT, SessionExpiredError))
        self._store = store
        self._kinds = kinds  # children watches on these kinds only (None: all)
        self._known: dict[str, int] = {}

    def _snapshot(self, resync: bool) -> dict[str, bytes]:
        zk, items, known = self._store.client, {}, {}
        for kind, children in self._store.children_by_kind(self._on_children,
                                                                     self._kinds).items():
            fetches = {c: zk.get_async(self._store.path(f"{kind}/{c}"), watch=self._on_data)
                       for c in children}
            for child, fetch in fetches.items():
                try:
                    data, stat = fetch.get()
                except NoNodeError:
                    continue
                items[f"{kind}/{child}"] = data
                known[f"{kind}/{child}"] = stat.mzxid
        self._known = known
        return items

    def _on_children(self, event: Any) -> None:
        if event.path is None:
            return  # kazoo's session notice to every watch; watches are re-armed on reconnect
        self.submit(self._refresh_kind, event.path.rsplit("/", 1)[1])

    def _on_data(self, event: Any) -> None:
        if event.path is None:
            return  # as above
        self.submit(self._refresh_path, self._store.relative(event.path))

    def _refresh_kind(self, kind: str) -> None:
        zk = self._store.client
        children = set(zk.get_children(self._store.path(kind), watch=self._on_children))
        present = {p for p in self._known if p.startswith(kind + "/")}
        for path in sorted(present - {f"{kind}/{c}" for c in children}):
            del self._known[path]
            self.changed(path, None)
        for child in sorted(children):
            if f"{kind}/{child}" not in self._known:
                self._refresh_path(f"{kind}/{child}")

    def _refresh_path(self, path: str) -> None:
        try:
            data, stat = self._store.client.get(self._store.path(path), watch=self._on_data)
        except NoNodeError:
            if self._known.pop(path, None) is not None:
                self.changed(path, None)
            return
        if stat.mzxid > self._known.get(path, -1):
            self._known[path] = stat.mzxid
            self.changed(path, data)


class ZooKeeperRecordStore(RecordStoreDriver):
    """Topology records as persistent znodes `topology/<kind>/<key>` holding JSON."""

    def __init__(self, coordinator: ZooKeeperCoordinator) -> None:
        from coordination.records import KINDS

        self.coordinator = coordinator
        self.root = f"{coordinator.prefix}/topology"
        self.kinds = KINDS
        self.watches: set[_ZooKeeperWatch] = set()
        self._ready = False

    @property
    def client(self) -> BoundedClient:
        return self.coordinator.zk

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def relative(self, path: str) -> str:
        return path[len(self.root) + 1:]

    def _prepare(self) -> None:
        if not self._ready:
            for kind in self.kinds:
                self.client.ensure_path(self.path(kind))
            self._ready = True

    def children_by_kind(self, watch: Callable[..., None] | None = None,
                         kinds: frozenset[str] | None = None) -> dict[str, list[str]]:
        self._prepare()
        wanted = [k for k in self.kinds if kinds is None or k in kinds]
        fetches = {k: self.client.get_children_async(self.path(k), watch=watch) for k in wanted}
        return {kind: fetch.get() for kind, fetch in fetches.items()}

    def get(self, path: str) -> Versioned | None:
        def op() -> Versioned | None:
            try:
                data, stat = self.client.get(self.path(path))
            except NoNodeError:
                return None
            return Versioned(data, stat.version)

        return self.coordinator.call(op, f"get {path}")

    def create(self, path: str, value: bytes) -> None:
        def op() -> None:
            self._prepare()
            try:
                self.client.create(self.path(path), value)
            except NodeExistsError:
                raise RecordExistsError(path) from None

        self.coordinator.call(op, f"create {path}")

    def update(self, path: str, value: bytes, version: int) -> None:
        def op() -> None:
            try:
                self.client.set(self.path(path), value, version)
            except (BadVersionError, NoNodeError):
                raise VersionMismatchError(path) from None

        self.coordinator.call(op, f"update {path}")

    def remove(self, path: str, version: int | None = None) -> bool:
        def op() -> bool:
            try:
                self.client.delete(self.path(path), -1 if version is None else version)
            except NoNodeError:
                return False
            except BadVersionError:
                raise VersionMismatchError(path) from None
            return True

        return self.coordinator.call(op, f"delete {path}")

    def list(self, prefix: str = "") -> dict[str, Versioned]:
        def op() -> dict[str, Versioned]:
            self._prepare()
            self.client.sync(self.root)
            fetches = {}
            for kind, children in self.children_by_kind().items():
                for child in children:
                    if f"{kind}/{child}".startswith(prefix):
                        fetches[f"{kind}/{child}"] = self.client.get_async(self.path(f"{kind}/{child}"))
            out = {}
            for path, fetch in fetches.items():
                try:
                    data, stat = fetch.get()
                except NoNodeError:
                    continue
                out[path] = Versioned(data, stat.version)
            return out

        return self.coordinator.call(op, "list topology")

    def watch(self, sink: Callable[[RawEvent], None],
              kinds: frozenset[str] | None = None) -> WatchHandle:
        return _ZooKeeperWatch(self, sink, kinds).start()
