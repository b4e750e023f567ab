"""Topology records on ZooKeeper: persistent znodes `<prefix>/topology/<kind>/<key>` holding
JSON, and watches that deliver a snapshot then every change, resynchronised after every
reconnect: one persistent recursive watch per kind (ZooKeeper 3.6+), or on older servers
children watches per kind plus a data watch per record."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, SessionExpiredError
from kazoo.protocol.states import EventType

from coordination.driver_support import SnapshotStreamWatch
from coordination.store import (
    RawEvent,
    RecordExistsError,
    RecordStoreDriver,
    Versioned,
    VersionMismatchError,
    WatchHandle,
    Write,
)

from .client import PIPELINE_DEPTH, TRANSIENT, BoundedClient, BoundedResult, chunks
from .persistent import NotSupported, PersistentWatches, check_answer, for_client

if TYPE_CHECKING:
    from .coordinator import ZooKeeperCoordinator

LOG = logging.getLogger(__name__)
#: What a conditional write meets when its condition does not hold.
_CONDITION_FAILED = (BadVersionError, NodeExistsError, NoNodeError)


class _Step:
    """What one watch event reports, once the reads it needs are answered: `items` are
    ("read", path, answer), ("gone", path) and ("listed", kind, children) in report order."""

    __slots__ = ("items", "waiting")

    def __init__(self, *items: tuple[Any, ...]) -> None:
        self.items: list[Any] = list(items)
        self.waiting = 0


class _ZooKeeperWatch(SnapshotStreamWatch):
    """A persistent recursive watch per kind (or, on servers before 3.6, children watches per
    kind plus a data watch per record); dedup by mzxid; resync on reconnect (kazoo does not
    restore watches reliably: #29, #151, and never persistent ones).

    ZooKeeper's watches say what changed, not to what: a create or a change needs a read. The
    reads go out as the events come, from kazoo's event thread, without waiting for each other
    or for the watch's worker (a batch of changes costs one round trip, not one each). Each
    event is reported, on the worker, when its reads are answered and every earlier event has
    been: in the order ZooKeeper notified them. A delete needs no read and is reported as soon
    as its turn comes. With one-shot watches, a create or delete also costs a listing of its
    kind (to re-arm the children watch and find new records), which later events wait for.
    """

    def __init__(self, store: ZooKeeperRecordStore, sink: Callable[[RawEvent], None],
                 kinds: frozenset[str] | None) -> None:
        super().__init__(store.coordinator.watch_worker, sink, store.watches,
                         quiet=(*TRANSIENT, SessionExpiredError))
        self._store = store
        self._kinds = kinds  # the kinds this watch reports (None: all)
        # kind -> record name -> mzxid of what was reported
        self._known: dict[str, dict[str, int]] = collections.defaultdict(dict)
        self._steps: collections.deque[_Step] = collections.deque()
        self._gone: set[str] = set()  # deletes queued in `_steps`, not reported yet
        self._persistent: PersistentWatches | None = None  # None: one-shot watches
        self._streaming = False  # a snapshot was taken: events after it are reported

    def _snapshot(self, resync: bool) -> dict[str, bytes]:
        zk, items = self._store.client, {}
        known: dict[str, dict[str, int]] = collections.defaultdict(dict)
        # events before the snapshot are in it: answers to their reads are dropped; and until
        # a snapshot is taken (this one may fail) no event is reported
        self._steps, self._gone, self._streaming = collections.deque(), set(), False
        # armed before the reads, so that no change falls between the snapshot and the stream
        self._persistent = self._store.arm_persistent(self._on_event, self._kinds)
        one_shot = self._persistent is None
        for kind, children in self._store.children_by_kind(
                self._on_children if one_shot else None, self._kinds).items():
            fetches = {c: zk.get_async(self._store.path(f"{kind}/{c}"),
                                       watch=self._on_data if one_shot else None)
                       for c in children}
            for child, fetch in fetches.items():
                try:
                    data, stat = fetch.get()
                except NoNodeError:
                    continue
                items[f"{kind}/{child}"] = data
                known[kind][child] = stat.mzxid
        self._known = known
        self._streaming = True
        return items

    def _stop(self) -> None:
        if self._persistent is not None:
            self._persistent.discard(self._on_event)

    # ---- events (kazoo's event thread): reads started here, steps queued in order ----------

    def _on_event(self, kind: str, path: str) -> None:
        """A persistent watch's notification: `kind` CREATED, CHANGED or DELETED at `path`."""
        if self.cancelled:
            return
        relative = self._store.relative(path)
        record_kind, _, key = relative.partition("/")
        if not key or "/" in key or (self._kinds is not None and record_kind not in self._kinds):
            return  # the kind's own znode, or not a record this watch reports
        self._record_event(kind == EventType.DELETED, relative)

    def _on_children(self, event: Any) -> None:
        if event.path is None or self.cancelled:
            return  # kazoo's session notice to every watch; watches are re-armed on reconnect
        kind = event.path.rsplit("/", 1)[1]
        step = _Step()
        step.waiting += 1
        self.submit(self._queue, step)  # queued before any answer can be
        result = self._store.client.client.get_children_async(event.path,
                                                              watch=self._on_children)
        result.rawlink(lambda answer: self.submit(self._listed, step, kind, answer))

    def _on_data(self, event: Any) -> None:
        if event.path is None or self.cancelled:
            return  # as above
        self._record_event(event.type == EventType.DELETED, self._store.relative(event.path))

    def _record_event(self, deleted: bool, path: str) -> None:
        """Queue the report of a record's change: a delete at once, anything else once the
        read started here is answered."""
        if deleted:
            self.submit(self._deleted, path)
            return
        step = _Step()
        self._read(step, path)
        self.submit(self._queue, step)

    # ---- the worker: report in order -----------------------------------------------------------

    def _queue(self, step: _Step) -> None:
        if self._streaming:
            self._steps.append(step)
            self._deliver()

    def _deleted(self, path: str) -> None:
        if not self._streaming:
            return
        # A re-created record is found by the children watch this delete also fired (or is
        # named by the persistent watch).
        self._gone.add(path)
        self._steps.append(_Step(("gone", path)))
        self._deliver()

    def _read(self, step: _Step, path: str) -> None:
        """Read `path` for `step` (re-arming its data watch, with one-shot watches), without
        waiting; the answer is handed to the worker."""
        index = len(step.items)
        step.items.append(("read", path, None))
        step.waiting += 1
        result = self._store.client.client.get_async(
            self._store.path(path), watch=None if self._persistent else self._on_data)
        result.rawlink(lambda answer: self.submit(self._answered, step, index, answer))

    def _answered(self, step: _Step, index: int, answer: Any) -> None:
        _, path, _ = step.items[index]
        step.items[index] = ("read", path, answer)
        step.waiting -= 1
        self._deliver()

    def _listed(self, step: _Step, kind: str, answer: Any) -> None:
        step.waiting -= 1
        if step not in self._steps:
            return  # a snapshot came between
        children = set(answer.get())
        step.items.append(("listed", kind, children))
        # new records (or re-created ones whose delete is still queued) are read as part of
        # this step, so they are reported before any later event
        known = self._known[kind]
        new = sorted(f"{kind}/{c}" for c in children
                     if c not in known or f"{kind}/{c}" in self._gone)
        if len(new) <= PIPELINE_DEPTH:
            for path in new:
                self._read(step, path)
        else:  # a burst (a switch's start-up, a peer's resync): a bounded pipeline, waited for
            zk = self._store.client
            for path, got in zk.pipelined(
                    new, lambda p: zk.get_async(self._store.path(p), watch=self._on_data)):
                step.items.append(("read", path, _Answered(got)))
        self._deliver()

    def _deliver(self) -> None:
        """Report every step at the head of the queue whose reads are all answered."""
        while self._steps and self._steps[0].waiting == 0:
            for item in self._steps.popleft().items:
                if item[0] == "read":
                    self._report_read(item[1], item[2])
                elif item[0] == "gone":
                    self._gone.discard(item[1])
                    self._report_gone(item[1])
                else:
                    _, kind, children = item
                    for child in sorted(self._known[kind].keys() - children):
                        self._report_gone(f"{kind}/{child}")

    def _report_read(self, path: str, answer: Any) -> None:
        try:
            data, stat = answer.get()
        except NoNodeError:
            self._report_gone(path)
            return
        kind, _, child = path.partition("/")
        known = self._known[kind]
        if stat.mzxid > known.get(child, -1):
            known[child] = stat.mzxid
            self.changed(path, data)

    def _report_gone(self, path: str) -> None:
        kind, _, child = path.partition("/")
        if self._known[kind].pop(child, None) is not None:
            self.changed(path, None)


class _Answered:
    """An answer already in hand, shaped as kazoo's async result (`get()`)."""

    __slots__ = ("_value",)

    def __init__(self, value: Any) -> None:
        self._value = value

    def get(self) -> Any:
        if isinstance(self._value, Exception):
            raise self._value
        return self._value


class ZooKeeperRecordStore(RecordStoreDriver):
    """Topology records as persistent znodes `topology/<kind>/<key>` holding JSON."""

    def __init__(self, coordinator: ZooKeeperCoordinator) -> None:
        from coordination.records import KINDS

        self.coordinator = coordinator
        self.root = f"{coordinator.prefix}/topology"
        self.kinds = KINDS
        self.watches: set[_ZooKeeperWatch] = set()
        self._ready = False
        self._persistent: tuple[Any, PersistentWatches | None] | None = None  # per kazoo client

    def arm_persistent(self, listener: Callable[[str, str], None],
                       kinds: frozenset[str] | None) -> PersistentWatches | None:
        """Arm a persistent recursive watch on each of `kinds` (None: all) for `listener` and
        wait until the server has; None if this server or kazoo cannot (the watch then uses
        one-shot watches). Transient errors are raised: the caller retries after the reconnect."""
        self._prepare()
        kazoo = self.client.client
        if self._persistent is None or self._persistent[0] is not kazoo:
            try:
                self._persistent = (kazoo, for_client(kazoo))
            except NotSupported as exc:
                LOG.info("zookeeper: topology watches use one-shot watches: %s", exc)
                self._persistent = (kazoo, None)
        watches = self._persistent[1]
        if watches is None:
            return None
        results = [self.client._bounded(watches.add(self.path(kind), listener))
                   for kind in self.kinds if kinds is None or kind in kinds]
        try:
            for result in results:
                check_answer(result)
        except NotSupported as exc:
            LOG.info("zookeeper: topology watches use one-shot watches: %s", exc)
            watches.discard(listener)
            self._persistent = (kazoo, None)
            return None
        return watches

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

    def get_many(self, paths: Sequence[str]) -> dict[str, Versioned | None]:
        """Every read in flight at once on the connection: one round trip for the batch."""
        def op() -> dict[str, Versioned | None]:
            out: dict[str, Versioned | None] = {}
            for path, result in self.client.pipelined(
                    paths, lambda p: self.client.get_async(self.path(p))):
                if isinstance(result, NoNodeError):
                    out[path] = None
                elif isinstance(result, Exception):
                    raise result
                else:
                    out[path] = Versioned(result[0], result[1].version)
            return out

        return self.coordinator.call(op, f"get {len(paths)} records")

    def write_many(self, writes: Sequence[Write]) -> list[bool]:
        """One `multi` per chunk of writes; a chunk whose transaction fails (some condition
        did not hold, so none was made) is sent again as single writes, all in flight at
        once, to find out which hold."""
        def op() -> list[bool]:
            self._prepare()
            made: list[bool] = []
            for chunk in chunks(writes):
                results = self.client.multi(lambda txn, chunk=chunk: self._fill(txn, chunk))
                if not any(isinstance(result, Exception) for result in results):
                    made.extend(True for _ in chunk)
                    continue
                for _, result in self.client.pipelined(chunk, self._start_write):
                    if isinstance(result, Exception) and not isinstance(result,
                                                                        _CONDITION_FAILED):
                        raise result
                    made.append(not isinstance(result, Exception))
            return made

        return self.coordinator.call(op, f"write {len(writes)} records")

    def _fill(self, txn: Any, writes: Sequence[Write]) -> None:
        for write in writes:
            path = self.path(write.path)
            if write.value is None:
                txn.delete(path, -1 if write.version is None else write.version)
            elif write.version is None:
                txn.create(path, write.value)
            else:
                txn.set_data(path, write.value, write.version)

    def _start_write(self, write: Write) -> BoundedResult:
        path = self.path(write.path)
        if write.value is None:
            return self.client.delete_async(path, -1 if write.version is None else write.version)
        if write.version is None:
            return self.client.create_async(path, write.value)
        return self.client.set_async(path, write.value, write.version)

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
