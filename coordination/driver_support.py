"""What every driver needs, written once: optional capabilities, error translation, background
calls that log instead of dying, the priority-to-rank codec, member-record decoding, and the
snapshot-then-stream skeleton of a topology watch.

`Coordinator` (coordination/api.py) builds on these: it owns the driver's executors
(`EXECUTORS`), translates the client library's errors (`LIBRARY_ERRORS`, `translate`, `call`,
`guarded`) and refuses the calls of a capability the driver declares in `UNSUPPORTED`. A driver
uses the rest directly: `encode_rank` / `decode_rank` to name candidacies so that the store's own
key order is the election order, `decode_members` to read member records, and
`SnapshotStreamWatch` for `RecordStoreDriver.watch`.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Self, TypeVar

from .dispatch import SerialExecutor
from .election import MAX_PRIORITY

# NotSupportedError is defined in errors; importing it from here still works.
from .errors import CoordinationError, InvalidRecordError, NotSupportedError
from .names import shown
from .store import RawChange, RawEvent, RawSnapshot, WatchHandle
from .types import MemberInfo

LOG = logging.getLogger(__name__)
T = TypeVar("T")


# ---- optional capabilities -------------------------------------------------------------------

#: What a driver may leave out, by name: the public calls each one gates. A driver lists the
#: ones it lacks in `Coordinator.UNSUPPORTED` ({name: why}); those calls then raise
#: `NotSupportedError` with the reason, and the conformance suite skips their tests.
CAPABILITIES: dict[str, str] = {
    "members": "Coordinator.members()",
    "election_names": "Coordinator.elections()",
    "candidates": "Election.candidates()",
    "leader_listeners": "Election.add_leader_listener()",
    "topology": "Coordinator.topology",
    "watch_members": "member-list changes pushed to the failure detector",
}


def check_capabilities(driver: str, unsupported: Mapping[str, str]) -> None:
    """TypeError (at class definition) if `unsupported` names an unknown capability."""
    unknown = sorted(set(unsupported) - set(CAPABILITIES))
    if unknown:
        raise TypeError(f"{driver}.UNSUPPORTED names unknown capabilities {unknown}; known: "
                        f"{', '.join(CAPABILITIES)}")


def not_supported(driver: str, capability: str, why: str) -> NotSupportedError:
    """The error for a call of a capability `driver` lacks."""
    return NotSupportedError(f"the {driver} driver does not support {capability} "
                             f"({CAPABILITIES[capability]}): {why}")


# ---- errors ----------------------------------------------------------------------------------

def translating(func: Callable[..., T], library_errors: tuple[type[BaseException], ...],
                translate: Callable[[BaseException], BaseException]) -> Callable[..., T]:
    """`func`, with the client library's errors raised as `translate(error)` (a
    `CoordinationError`); the project's own errors pass unchanged, and so does anything else."""

    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return func(*args, **kwargs)
        except CoordinationError:
            raise
        except library_errors as exc:
            raise translate(exc) from exc

    return wrapper


def guarded(func: Callable[..., Any], what: str, errors: tuple[type[BaseException], ...],
            quiet: tuple[type[BaseException], ...] = (),
            logger: logging.Logger = LOG) -> Callable[..., None]:
    """`func` for a background thread: `errors` (expected: the store is unreachable, the
    session went) are logged as one warning line, `quiet` ones at DEBUG (e.g. a step that
    waits for the reconnect anyway), and nothing is raised, so the thread lives on."""

    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            func(*args, **kwargs)
        except quiet as exc:
            logger.debug("%s deferred (%s)", what, exc)
        except errors as exc:
            logger.warning("%s failed: %s", what, exc)

    return wrapper


# ---- the rank codec --------------------------------------------------------------------------

#: Width of an encoded rank: every priority 0..MAX_PRIORITY encodes to this many digits.
RANK_DIGITS = len(str(MAX_PRIORITY))


def encode_rank(priority: int) -> str:
    """A fixed-width text for `priority` whose plain string order is the election order
    (higher priority first): stores that keep names or keys sorted then sort candidacies for
    free (ZooKeeper's candidate znodes, etcd's candidate keys)."""
    return f"{MAX_PRIORITY - priority:0{RANK_DIGITS}d}"


def decode_rank(text: str | bytes) -> int | None:
    """The priority `encode_rank` encoded in `text`, or None if `text` is not an encoded rank
    (a foreign name is ignored, never misread)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    if len(text) != RANK_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return MAX_PRIORITY - int(text)


# ---- member records --------------------------------------------------------------------------

def decode_members(records: Iterable[tuple[str, bytes | str]]) -> dict[str, MemberInfo]:
    """Member records read from a store, as (the member id the store files it under, its
    value): each validated (`MemberInfo.decode`); a malformed one, or one that names another
    member than its place in the store, is logged and skipped, never raised."""
    out: dict[str, MemberInfo] = {}
    for member_id, value in records:
        try:
            info = MemberInfo.decode(value, f"member record {shown(member_id)}")
        except InvalidRecordError as exc:
            LOG.error("skipping malformed %s", exc)
            continue
        if info.member_id != member_id:
            LOG.error("skipping member record %s: it names member %s", shown(member_id),
                      shown(info.member_id))
            continue
        out[member_id] = info
    return out


# ---- the watch skeleton ----------------------------------------------------------------------

class SnapshotStreamWatch(WatchHandle):
    """The skeleton of `RecordStoreDriver.watch`: every step, and every call of the sink, on
    one executor (never on a client library's thread), in this order: `_snapshot()` reads
    every path and arms the change stream so that nothing falls between the two, the sink gets
    the `RawSnapshot`, then `_stream()` may start a stream that resumes after the snapshot.
    Changes the stream reports reach the sink through `submit(self.changed, path, value)`.
    `resync(True)` starts over (after a reconnect, a compaction, a failed stream).

    A subclass implements `_snapshot` (and `_stream`, `_stop` if it needs them). Steps that
    fail with one of `quiet` are dropped at DEBUG: the driver resynchronises when the session
    is back. `live` (the store's set of watches, if given) lets the driver resync or cancel
    them all.
    """

    def __init__(self, executor: SerialExecutor, sink: Callable[[RawEvent], None],
                 live: set[Any] | None = None, quiet: tuple[type[BaseException], ...] = ()
                 ) -> None:
        self.executor = executor
        self.sink = sink
        self.cancelled = False
        self._live: set[Any] = set() if live is None else live
        self._quiet = quiet

    def start(self) -> Self:
        """Register with the store's watches and deliver the first snapshot (asynchronously)."""
        self._live.add(self)
        self.submit(self.resync, False)
        return self

    def cancel(self) -> None:
        self.cancelled = True
        self._live.discard(self)
        self._stop()

    def submit(self, func: Callable[..., None], *args: Any) -> None:
        """Run `func(*args)` on the watch's executor (any thread; dropped once cancelled)."""
        if not self.cancelled:
            self.executor.submit(self._run, func, *args)

    def _run(self, func: Callable[..., None], *args: Any) -> None:
        if self.cancelled:
            return
        try:
            func(*args)
        except self._quiet as exc:
            LOG.debug("topology watch deferred until reconnect (%s)", exc)

    def resync(self, resync: bool) -> None:
        """Deliver a fresh snapshot (`resync` says it replaces an interrupted stream)."""
        if self.cancelled:
            return
        items = self._snapshot(resync)
        if items is None:
            return  # failed: the driver arranged to try again
        self.sink(RawSnapshot(items, resync=resync))
        self._stream()

    def changed(self, path: str, value: bytes | None) -> None:
        """One change after the snapshot (`value` None: deleted)."""
        self.sink(RawChange(path, value))

    @abstractmethod
    def _snapshot(self, resync: bool) -> dict[str, bytes] | None:
        """Read every path and arm the change stream (or note where `_stream` resumes); None
        if the read failed and a retry of `resync(resync)` is scheduled."""

    def _stream(self) -> None:
        """Start the change stream after the snapshot was delivered (default: `_snapshot`
        armed it already)."""

    def _stop(self) -> None:
        """Stop the change stream (default: nothing to stop)."""
