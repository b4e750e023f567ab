"""The topology store: typed records, fenced writes, and watches with snapshot + change stream."""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from . import instrument
from .dispatch import SerialExecutor
from .errors import ConflictError, CoordinationError, InvalidRecordError, StaleTermError
from .names import printable, shown
from .records import KINDS, RECORD_TYPES, TOPOLOGY_KINDS, Record, decode, encode, record_path
from .store import (
    RawChange,
    RawEvent,
    RawSnapshot,
    RecordExistsError,
    RecordStoreDriver,
    Versioned,
    VersionMismatchError,
    WatchHandle,
    Write,
    write_one,
)

LOG = logging.getLogger(__name__)
_CAS_ATTEMPTS = 20
_Method = TypeVar("_Method", bound=Callable[..., Any])


@dataclass(frozen=True)
class Snapshot:
    """The whole (filtered) topology. First event of every watch; again after a resync."""

    records: tuple[Record, ...]
    resync: bool = False


@dataclass(frozen=True)
class Change:
    """One record put or deleted. `record` is None for a delete; `previous` what it replaced."""

    op: str  # "put" | "delete"
    kind: str
    key: str
    record: Record | None
    previous: Record | None


TopologyEvent = Snapshot | Change


@dataclass(frozen=True)
class PutRecord:
    """For `TopologyStore.apply`: `put(record, fenced=fenced)`."""

    record: Record
    fenced: bool = True


@dataclass(frozen=True)
class DeleteRecord:
    """For `TopologyStore.apply`: `delete(kind, key, term=term, domain=domain)`."""

    kind: str
    key: str
    term: int | None = None
    domain: int | None = None


StoreOp = PutRecord | DeleteRecord
#: What `apply` says of one op: as `put`/`delete` return (True: written, False: nothing to
#: do), or the error they would have raised for it (`StaleTermError`, `ConflictError`).
Outcome = bool | CoordinationError


class TopologyWatch:
    """A live watch; `cancel()` stops it. Keeps the view it has reported, to drop duplicates."""

    def __init__(
        self,
        callback: Callable[[TopologyEvent], None],
        kinds: frozenset[str],
        executor: SerialExecutor,
    ) -> None:
        self._callback = callback
        self._kinds = kinds
        self._executor = executor
        self._view: dict[str, Record] = {}
        self._handle: WatchHandle | None = None
        self._cancelled = False
        self._lock = threading.Lock()

    def cancel(self) -> None:
        self._cancelled = True
        if self._handle is not None:
            self._handle.cancel()

    @property
    def view(self) -> dict[str, Record]:
        """What this watch has reported so far, by `kind/key`."""
        with self._lock:
            return dict(self._view)

    def _accept(self, path: str) -> bool:
        return isinstance(path, str) and path.partition("/")[0] in self._kinds

    def _on_raw(self, event: RawEvent) -> None:
        if self._cancelled:
            return
        with self._lock:
            out = self._translate(event)
        for item in out:
            self._executor.submit(self._deliver, item)

    def _deliver(self, event: TopologyEvent) -> None:
        if not self._cancelled:
            self._callback(event)

    def _translate(self, event: RawEvent) -> list[TopologyEvent]:
        if isinstance(event, RawSnapshot):
            view: dict[str, Record] = {}
            for path, value in sorted(event.items.items(), key=_by_path):
                if self._accept(path):
                    record = _decode_or_log(path, value)
                    if record is not None:
                        view[path] = record
            self._view = view
            if event.resync:
                LOG.warning("topology watch resynchronised from a snapshot (%d records)", len(view))
            return [Snapshot(tuple(view.values()), resync=event.resync)]
        assert isinstance(event, RawChange)
        path = event.path
        if not self._accept(path):
            return []
        kind, _, key = path.partition("/")
        previous = self._view.get(path)
        if event.value is None:
            if previous is None:
                return []
            del self._view[path]
            return [Change("delete", kind, key, None, previous)]
        record = _decode_or_log(path, event.value)
        if record is None or record == previous:
            return []
        self._view[path] = record
        return [Change("put", kind, key, record, previous)]


#: Every way decoding a stored value can fail. `decode` itself raises only InvalidRecordError
#: (coordination.codec bounds size and depth); the rest is a last line of defence, so that one
#: bad value can never stop a snapshot, a watch or a list for every other record.
_DECODE_FAILURES = (InvalidRecordError, ValueError, TypeError, AttributeError, RecursionError)


def _by_path(item: tuple[object, object]) -> str:
    return str(item[0])


def _decode_or_log(path: str, value: bytes) -> Record | None:
    try:
        return decode(path, value)
    except InvalidRecordError as exc:
        LOG.error("skipping malformed topology record: %s", exc)
    except _DECODE_FAILURES as exc:
        LOG.error("skipping malformed topology record %s: %s: %s", shown(path),
                  type(exc).__name__, printable(str(exc), 200))
    return None


def _timed(operation: str) -> Callable[[_Method], _Method]:
    """Report each call of the method as `operation` (see `coordination.instrument`)."""
    def decorate(method: _Method) -> _Method:
        @functools.wraps(method)
        def timed_method(self: TopologyStore, *args: Any, **kwargs: Any) -> Any:
            with instrument.timed(self.backend, operation):
                return method(self, *args, **kwargs)
        return timed_method  # type: ignore[return-value]
    return decorate


class TopologyStore:
    """Switches, links, hosts and masterships, shared by every controller through the backend."""

    def __init__(self, driver: RecordStoreDriver, executor: SerialExecutor,
                 backend: str = "") -> None:
        self._driver = driver
        self._watch_takes_kinds = "kinds" in inspect.signature(driver.watch).parameters
        self._executor = executor
        #: the backend's scheme, as store operations are reported (`coordination.instrument`)
        self.backend = backend

    @_timed("topology_put")
    def put(self, record: Record, *, fenced: bool = True) -> bool:
        """Store `record`; False if the store already held exactly it (no write made).

        With `fenced` (the default) a record whose stored version, in the same domain (switch),
        carries a newer term is kept, and `StaleTermError` is raised.
        """
        op = PutRecord(record, fenced)
        return self._until_written(op, *self._prepare(op))

    @_timed("topology_delete")
    def delete(self, kind: str, key: str, *, term: int | None = None, domain: int | None = None) -> bool:
        """Delete a record; False if absent. With `term`, refuse (StaleTermError) to delete a
        record of the same `domain` written under a newer term."""
        op = DeleteRecord(kind, key, term, domain)
        return self._until_written(op, *self._prepare(op))

    def _until_written(self, op: StoreOp, path: str, data: bytes | None) -> bool:
        """Read, decide (`_conditional_write`, as `apply` does) and write conditionally, again
        while a concurrent write gets in between; True if written, False if nothing to do."""
        for _ in range(_CAS_ATTEMPTS):
            write = _conditional_write(path, data, self._driver.get(path), op)
            if write is None:
                return False
            if write_one(self._driver, write):
                return True
        raise ConflictError(f"{path}: gave up after {_CAS_ATTEMPTS} concurrent updates")

    @_timed("topology_apply")
    def apply(self, ops: Sequence[StoreOp]) -> list[Outcome]:
        """Do many puts and deletes in two round trips where the driver allows (`get_many`,
        then `write_many`) instead of two per record; one outcome per op, in order.

        Each op means exactly what `put` or `delete` means, fencing included, and succeeds or
        fails on its own: a stale term is that op's `StaleTermError`, not the batch's. Ops that
        meet a concurrent write (or repeat a path) are redone one by one. An unusable backend
        (unreachable, closed) raises, as `put` would; some ops may have been made by then.
        """
        plans = [self._prepare(op) for op in ops]
        outcomes: list[Outcome | None] = [None] * len(ops)
        first: dict[str, int] = {}
        later: list[int] = []
        for i, (path, _) in enumerate(plans):
            if path in first:
                later.append(i)  # the same record twice: after the first, in order
            else:
                first[path] = i
        current = self._driver.get_many(list(first)) if first else {}
        writes: list[Write] = []
        writers: list[int] = []
        for path, i in first.items():
            op, data = ops[i], plans[i][1]
            try:
                write = _conditional_write(path, data, current.get(path), op)
            except StaleTermError as exc:
                outcomes[i] = exc  # reported as the single put or delete would have been
                instrument.refused(self.backend, "topology_put" if isinstance(op, PutRecord)
                                   else "topology_delete", type(exc).__name__)
                continue
            if write is None:
                outcomes[i] = False
            else:
                writes.append(write)
                writers.append(i)
        for i, made in zip(writers, self._driver.write_many(writes) if writes else [],
                           strict=True):
            if made:
                outcomes[i] = True
            else:
                later.append(i)  # someone wrote it between our read and our write
        for i in sorted(later):
            outcomes[i] = self._one(ops[i])
        return [outcome for outcome in outcomes if outcome is not None]

    def _prepare(self, op: StoreOp) -> tuple[str, bytes | None]:
        """(path, encoded record or None for a delete); invalid ops raise before any I/O."""
        if isinstance(op, PutRecord):
            if not isinstance(op.record, tuple(RECORD_TYPES.values())):
                raise InvalidRecordError(f"not a topology record: {op.record!r}")
            return record_path(op.record), encode(op.record)
        if isinstance(op, DeleteRecord):
            return f"{_check_kind(op.kind)}/{op.key}", None
        raise InvalidRecordError(f"not a PutRecord or DeleteRecord: {op!r}")

    def _one(self, op: StoreOp) -> Outcome:
        try:
            if isinstance(op, PutRecord):
                return self.put(op.record, fenced=op.fenced)
            return self.delete(op.kind, op.key, term=op.term, domain=op.domain)
        except (StaleTermError, ConflictError) as exc:
            return exc

    @_timed("topology_get")
    def get(self, kind: str, key: str) -> Record | None:
        """One record, or None if absent or malformed (malformed is logged)."""
        path = f"{_check_kind(kind)}/{key}"
        current = self._driver.get(path)
        return None if current is None else _decode_or_log(path, current.value)

    @_timed("topology_list")
    def list(self, kind: str | None = None) -> list[Record]:
        """Every valid record (of `kind`, if given, else of the `TOPOLOGY_KINDS`); malformed
        ones are logged and skipped."""
        prefix = f"{_check_kind(kind)}/" if kind else ""
        out = []
        for path, item in sorted(self._driver.list(prefix).items(), key=_by_path):
            if not kind and path.partition("/")[0] not in TOPOLOGY_KINDS:
                continue  # e.g. move records: not topology
            record = _decode_or_log(path, item.value)
            if record is not None:
                out.append(record)
        return out

    @_timed("topology_cas")
    def compare_and_set(self, expected: Record | None, new: Record | None, *,
                        kind: str | None = None, key: str | None = None) -> bool:
        """Replace the record at `new`'s (or `expected`'s, or `kind`/`key`'s) place with `new`
        (None: delete it) only if the store holds exactly `expected` there (None: nothing).
        True if written; False if the store held something else. No fencing: the comparison
        is the guard. A malformed stored value compares unequal to anything but is replaced
        when `expected` is None only if absent."""
        sample = new if new is not None else expected
        if sample is not None:
            if not isinstance(sample, tuple(RECORD_TYPES.values())):
                raise InvalidRecordError(f"not a topology record: {sample!r}")
            path = record_path(sample)
        elif kind is not None and key is not None:
            path = f"{_check_kind(kind)}/{key}"
        else:
            raise InvalidRecordError("compare_and_set needs a record or kind and key")
        if expected is not None and new is not None and record_path(expected) != path:
            raise InvalidRecordError(f"{record_path(expected)} and {path} are different records")
        current = self._driver.get(path)
        if current is None:
            if expected is not None:
                return False
            if new is None:
                return True
            try:
                self._driver.create(path, encode(new))
            except RecordExistsError:
                return False
            return True
        if expected is None or _decode_or_log(path, current.value) != expected:
            return False
        try:
            if new is None:
                return self._driver.remove(path, current.version)
            self._driver.update(path, encode(new), current.version)
        except VersionMismatchError:
            return False
        return True

    def watch(
        self, callback: Callable[[TopologyEvent], None], kinds: Iterable[str] | None = None
    ) -> TopologyWatch:
        """Call `callback` with a `Snapshot`, then a `Change` for every later change, in order.

        Callbacks run on the coordinator's callback thread, one at a time.
        """
        wanted = frozenset(_check_kind(k) for k in kinds) if kinds is not None \
            else frozenset(TOPOLOGY_KINDS)
        watch = TopologyWatch(callback, wanted, self._executor)
        if self._watch_takes_kinds:
            watch._handle = self._driver.watch(watch._on_raw, wanted)
        else:  # a driver written before `kinds`: it delivers everything, the watch filters
            watch._handle = self._driver.watch(watch._on_raw)
        return watch


def _conditional_write(path: str, data: bytes | None, current: Versioned | None,
                       op: StoreOp) -> Write | None:
    """The write `op` needs given the stored `current` (None: nothing to do), as `put` and
    `delete` decide it; raises StaleTermError where they would."""
    if isinstance(op, PutRecord):
        assert data is not None
        if current is None:
            return Write(path, data, None)
        if current.value == data:
            return None
        if op.fenced:
            _check_fence(path, current.value, op.record.domain, op.record.term)
        return Write(path, data, current.version)
    if current is None:
        return None
    if op.term is not None:
        _check_fence(path, current.value, op.domain, op.term)
    return Write(path, None, current.version)


def _check_kind(kind: str) -> str:
    if kind not in RECORD_TYPES:
        raise InvalidRecordError(f"unknown record kind {kind!r}; kinds are {', '.join(KINDS)}")
    return kind


def _check_fence(path: str, stored_value: bytes, domain: int | None, term: int) -> None:
    try:
        stored = decode(path, stored_value)
    except _DECODE_FAILURES:
        return  # a malformed record never blocks its repair
    if (domain is None or stored.domain == domain) and stored.term > term:
        raise StaleTermError(
            f"{path}: stored record has term {stored.term} from {stored.owner!r}, "
            f"newer than the writer's term {term}"
        )
