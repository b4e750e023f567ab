"""The small key-value interface a driver implements so the core can offer a `TopologyStore`.

Paths are `kind/key` strings; drivers map them under their own prefix. Versions are opaque
integers that change on every write of a path (ZooKeeper: the znode version; etcd: mod_revision).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import ConflictError


class RecordExistsError(ConflictError):
    """`create` found the path already present."""


class VersionMismatchError(ConflictError):
    """A conditional write or delete found another version (or no value) at the path."""


@dataclass(frozen=True)
class Versioned:
    value: bytes
    version: int


@dataclass(frozen=True)
class RawSnapshot:
    """Every value under the watched prefix at one point; `resync` when it replaces a stream."""

    items: dict[str, bytes]
    resync: bool = False


@dataclass(frozen=True)
class RawChange:
    """One change after the snapshot; `value` None means the path was deleted."""

    path: str
    value: bytes | None


RawEvent = RawSnapshot | RawChange


@dataclass(frozen=True)
class Write:
    """One conditional write of `RecordStoreDriver.write_many`: put `value` at `path` (None:
    delete it) only if the path is at `version` now (None: absent; a delete needs a version)."""

    path: str
    value: bytes | None
    version: int | None


class WatchHandle(ABC):
    @abstractmethod
    def cancel(self) -> None:
        """Stop delivering events; idempotent."""


class RecordStoreDriver(ABC):
    """Persistent, versioned values with a consistent watch. Implemented once per backend."""

    @abstractmethod
    def get(self, path: str) -> Versioned | None: ...

    def compare_and_set(self, path: str, version: int | None, value: bytes | None) -> bool:
        """Atomically: if `path` is at `version` (None: absent), write `value` there (None:
        delete it; only with a version) and return True; else change nothing, return False.

        A driver implements either this or all of `create`, `update` and `remove`, whose
        defaults derive from it (a store with native conditional writes may override them)."""
        raise NotImplementedError(
            f"{type(self).__name__} implements neither compare_and_set nor create/update/remove")

    def create(self, path: str, value: bytes) -> None:
        """Create `path`; raise `RecordExistsError` if it exists."""
        if not self.compare_and_set(path, None, value):
            raise RecordExistsError(path)

    def update(self, path: str, value: bytes, version: int) -> None:
        """Replace `path` if it still has `version`; else raise `VersionMismatchError`."""
        if not self.compare_and_set(path, version, value):
            raise VersionMismatchError(path)

    def remove(self, path: str, version: int | None = None) -> bool:
        """Delete `path` (only at `version` if given); False if it was absent."""
        while (current := self.get(path)) is not None:
            if version not in (None, current.version):
                raise VersionMismatchError(path)
            if self.compare_and_set(path, current.version, None):
                return True
        return False  # absent (a concurrent write made it retry until it saw that)

    def get_many(self, paths: Sequence[str]) -> dict[str, Versioned | None]:
        """`get` of every path (absent ones map to None). Override to read them in one round
        trip (a pipeline, a transaction): the topology writer reads a batch's records at once."""
        return {path: self.get(path) for path in paths}

    def write_many(self, writes: Sequence[Write]) -> list[bool]:
        """Make each write whose condition holds; True per write made, False where the path
        was at another version. The writes are independent: one failed condition never blocks
        another. Each path appears at most once (`TopologyStore.apply` sees to it). Override to
        send them in one round trip (ZooKeeper `multi`, an etcd txn, one database
        transaction); this default makes them one by one."""
        return [write_one(self, write) for write in writes]

    @abstractmethod
    def list(self, prefix: str = "") -> dict[str, Versioned]:
        """Every path starting with `prefix`."""

    @abstractmethod
    def watch(self, sink: Callable[[RawEvent], None],
              kinds: frozenset[str] | None = None) -> WatchHandle:
        """Deliver a `RawSnapshot` of every path, then each later `RawChange` in order.

        `kinds`: the record kinds (a path's first segment) the caller wants; None for all. A
        driver may deliver other kinds too (the core filters), but one that watches only these
        spares the store and the client every other record's traffic: a controller that
        watches the `move` records should not receive a message per switch's `mastership`.
        A driver that always delivers every kind may leave the parameter out of its signature
        (`TopologyStore` looks) and then never receives it.

        No change may fall between the snapshot and the stream. If the driver cannot guarantee
        that (reconnect, compaction, overflow), it delivers a fresh snapshot with `resync=True`.
        Duplicate deliveries are harmless (the core drops values it has already reported). The
        sink must be called from one thread at a time, and never from a client library's
        internal callback thread if the sink may block.
        """


def write_one(driver: RecordStoreDriver, write: Write) -> bool:
    """One conditional write through `create`, `update` or `remove`; True if made, False if
    the path was at another version (or absent, for a delete)."""
    try:
        if write.value is None:
            if write.version is None:
                raise ValueError(f"{write.path}: a conditional delete needs a version")
            return driver.remove(write.path, write.version)
        if write.version is None:
            driver.create(write.path, write.value)
        else:
            driver.update(write.path, write.value, write.version)
        return True
    except (RecordExistsError, VersionMismatchError):
        return False
