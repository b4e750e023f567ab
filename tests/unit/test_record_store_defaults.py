"""`RecordStoreDriver`'s `create`, `update` and `remove`, derived from `compare_and_set` for a
driver that implements only that (the example driver's store): the same contract as the
drivers that implement all three (tests/conformance runs those)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from backends.example.store import ExampleRecordStore, Space
from coordination import PutRecord, StaleTermError, Switch, TopologyStore
from coordination.dispatch import SerialExecutor
from coordination.store import (
    RawEvent,
    RecordExistsError,
    RecordStoreDriver,
    Versioned,
    VersionMismatchError,
    WatchHandle,
    Write,
)


@pytest.fixture
def store() -> Iterator[ExampleRecordStore]:
    worker = SerialExecutor("store-defaults")
    yield ExampleRecordStore(Space(), worker)
    worker.stop(5.0)


class _Interleaved(ExampleRecordStore):
    """Runs `between` once, just before its first compare-and-set: a write by another member
    landing between `remove`'s read and its conditional delete."""

    def __init__(self, space: Space, worker: SerialExecutor,
                 between: Callable[[ExampleRecordStore], None]) -> None:
        super().__init__(space, worker)
        self.between: Callable[[ExampleRecordStore], None] | None = between

    def compare_and_set(self, path: str, version: int | None, value: bytes | None) -> bool:
        if self.between is not None:
            between, self.between = self.between, None
            between(ExampleRecordStore(self.space, self.worker))
        return super().compare_and_set(path, version, value)


def test_create_refuses_an_existing_path(store: ExampleRecordStore) -> None:
    store.create("switch/1", b"a")
    with pytest.raises(RecordExistsError):
        store.create("switch/1", b"b")
    assert store.get("switch/1").value == b"a"  # type: ignore[union-attr]


def test_update_only_at_the_version_read(store: ExampleRecordStore) -> None:
    store.create("switch/1", b"a")
    first = store.get("switch/1")
    assert first is not None
    store.update("switch/1", b"b", first.version)
    second = store.get("switch/1")
    assert second is not None and second.value == b"b" and second.version != first.version
    with pytest.raises(VersionMismatchError):
        store.update("switch/1", b"c", first.version)
    with pytest.raises(VersionMismatchError):
        store.update("switch/2", b"c", first.version)  # absent
    assert store.get("switch/1") == second and store.get("switch/2") is None


def test_remove_reports_absence_and_refuses_another_version(store: ExampleRecordStore) -> None:
    assert store.remove("switch/1") is False
    store.create("switch/1", b"a")
    current = store.get("switch/1")
    assert current is not None
    with pytest.raises(VersionMismatchError):
        store.remove("switch/1", current.version + 1)
    assert store.get("switch/1") == current
    assert store.remove("switch/1", current.version) is True
    assert store.get("switch/1") is None
    store.create("switch/1", b"b")
    assert store.remove("switch/1") is True and store.list() == {}


def test_unconditional_remove_retries_past_a_concurrent_write() -> None:
    worker = SerialExecutor("store-defaults")
    try:
        space = Space()
        ExampleRecordStore(space, worker).create("switch/1", b"a")
        version = space.records["switch/1"].version
        racing = _Interleaved(space, worker,
                              lambda other: other.update("switch/1", b"b", version))
        assert racing.remove("switch/1") is True
        assert space.records == {}
    finally:
        worker.stop(5.0)


def test_conditional_remove_sees_a_concurrent_write_or_delete() -> None:
    worker = SerialExecutor("store-defaults")
    try:
        space = Space()
        ExampleRecordStore(space, worker).create("switch/1", b"a")
        version = space.records["switch/1"].version
        racing = _Interleaved(space, worker,
                              lambda other: other.update("switch/1", b"b", version))
        with pytest.raises(VersionMismatchError):
            racing.remove("switch/1", version)
        assert space.records["switch/1"].value == b"b"
        version = space.records["switch/1"].version
        racing = _Interleaved(space, worker, lambda other: other.remove("switch/1"))
        assert racing.remove("switch/1", version) is False
    finally:
        worker.stop(5.0)


def test_a_driver_without_writes_fails_with_a_clear_error() -> None:
    class ReadOnly(RecordStoreDriver):
        def get(self, path: str) -> Versioned | None:
            return None

        def list(self, prefix: str = "") -> dict[str, Versioned]:
            return {}

        def watch(self, sink: Callable[[RawEvent], None]) -> WatchHandle:
            raise AssertionError("not called")

    with pytest.raises(NotImplementedError, match="ReadOnly implements neither"):
        ReadOnly().create("switch/1", b"a")


class _WrittenBetween(ExampleRecordStore):
    """Runs `between` once, just after `get_many` read: another member's write landing
    between `TopologyStore.apply`'s read and its conditional writes."""

    def __init__(self, space: Space, worker: SerialExecutor,
                 between: Callable[[TopologyStore], None]) -> None:
        super().__init__(space, worker)
        self.between: Callable[[TopologyStore], None] | None = between

    def get_many(self, paths: Sequence[str]) -> dict[str, Versioned | None]:
        got = super().get_many(paths)
        if self.between is not None:
            between, self.between = self.between, None
            between(TopologyStore(ExampleRecordStore(self.space, self.worker), self.worker))
        return got


def test_apply_redoes_an_op_that_met_a_concurrent_write_as_put_would() -> None:
    worker = SerialExecutor("store-defaults")
    try:
        space = Space()
        TopologyStore(ExampleRecordStore(space, worker), worker).put(
            Switch(dpid=1, owner="old", term=5))

        def newer_master_writes(other: TopologyStore) -> None:
            other.put(Switch(dpid=1, owner="new", term=9, address="n:1"))
            other.put(Switch(dpid=2, owner="other", term=1))

        store = TopologyStore(_WrittenBetween(space, worker, newer_master_writes), worker)
        outcomes = store.apply([PutRecord(Switch(dpid=1, owner="old", term=6)),
                                PutRecord(Switch(dpid=2, owner="mine", term=3)),
                                PutRecord(Switch(dpid=3, owner="mine", term=3))])
        # dpid 1: re-read, and the newer term fences it; dpid 2: created by the other member
        # meanwhile, re-read and overwritten (a higher term); dpid 3: made in the batch
        assert isinstance(outcomes[0], StaleTermError)
        assert outcomes[1:] == [True, True]
        assert store.get("switch", Switch(dpid=1).key).owner == "new"
        assert store.get("switch", Switch(dpid=2).key).owner == "mine"
    finally:
        worker.stop(5.0)


def test_the_default_write_many_makes_each_write_on_its_own_condition(
        store: ExampleRecordStore) -> None:
    store.create("switch/1", b"a")
    one = store.get("switch/1")
    assert one is not None
    made = store.write_many([Write("switch/1", b"b", one.version + 7),
                             Write("switch/2", b"c", None),
                             Write("switch/3", None, one.version)])
    assert made == [False, True, False]
    assert store.get_many(["switch/1", "switch/2", "switch/3"]) == {
        "switch/1": one, "switch/2": store.get("switch/2"), "switch/3": None}
    with pytest.raises(ValueError, match="needs a version"):
        store.write_many([Write("switch/2", None, None)])
