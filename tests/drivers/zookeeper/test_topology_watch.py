"""The ZooKeeper topology watch on a real server: persistent recursive watches (ZooKeeper 3.6+),
and the one-shot watches it falls back to on an older server."""

from __future__ import annotations

import logging
import re
import uuid

import pytest
from kazoo.exceptions import UnimplementedError

import coordination
from backends.zookeeper import persistent
from coordination import Link, Switch
from coordination.testing import Recorder
from tests.servers.zookeeper import ZooKeeperServer, four_letter

pytestmark = pytest.mark.integration
WAIT = 15.0
RECORDS = 40


def _url(zookeeper: ZooKeeperServer) -> str:
    return f"zookeeper://{zookeeper.hosts}/watch-{uuid.uuid4().hex[:8]}"


def _server_watches(zookeeper: ZooKeeperServer) -> int:
    reply = four_letter(zookeeper.host, zookeeper.port, "wchs")
    match = re.search(r"Total watches:\s*(\d+)", reply)
    assert match, reply
    return int(match.group(1))


def _changes(events: Recorder) -> list[tuple[str, str, str]]:
    return [(c.op, c.kind, c.key) for c in events.items[1:]]


def test_a_watch_costs_the_server_one_watch_per_kind_not_one_per_record(
        zookeeper: ZooKeeperServer) -> None:
    url = _url(zookeeper)
    with coordination.connect(url, "writer") as writer, \
            coordination.connect(url, "reader") as reader:
        for dpid in range(1, RECORDS + 1):
            writer.topology.put(Switch(dpid=dpid, owner="writer", term=1))
        before = _server_watches(zookeeper)
        events = Recorder("topology")
        reader.topology.watch(events, kinds=["switch", "link"])
        assert len(events.wait_count(1, WAIT)[0].records) == RECORDS
        assert _server_watches(zookeeper) - before <= 2  # one-shot watches: RECORDS + 2
        writer.topology.put(Link(src_dpid=1, src_port=1, dst_dpid=2, dst_port=1,
                                 owner="writer", term=1))
        writer.topology.delete("switch", Switch(dpid=1).key)
        writer.topology.put(Switch(dpid=1, owner="writer", term=2))
        events.wait_count(4, WAIT)
        assert _changes(events) == [("put", "link", Link(src_dpid=1, src_port=1, dst_dpid=2,
                                                            dst_port=1).key),
                                    ("delete", "switch", Switch(dpid=1).key),
                                    ("put", "switch", Switch(dpid=1).key)]


def test_a_server_without_persistent_watches_gets_one_shot_watches(
        zookeeper: ZooKeeperServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A server before 3.6 answers addWatch with UNIMPLEMENTED (not available here: faked)."""
    def unimplemented(self: persistent.PersistentWatches, path: str, listener: object) -> object:
        result = self._client.handler.async_result()
        result.set_exception(UnimplementedError())
        return result

    monkeypatch.setattr(persistent.PersistentWatches, "add", unimplemented)
    caplog.set_level(logging.INFO, logger="backends.zookeeper.store")
    with coordination.connect(_url(zookeeper), "m") as coord:
        coord.topology.put(Switch(dpid=1, owner="m", term=1))
        events = Recorder("topology")
        coord.topology.watch(events)
        events.wait_count(1, WAIT)
        (raw,) = coord.topology._driver.watches
        assert raw._persistent is None
        assert "one-shot watches: the ZooKeeper server is older than 3.6" in caplog.text
        coord.topology.put(Link(src_dpid=1, src_port=1, dst_dpid=2, dst_port=1, owner="m",
                                term=1))
        coord.topology.delete("switch", Switch(dpid=1).key)
        coord.topology.put(Switch(dpid=1, owner="m", term=2))
        coord.topology.put(Switch(dpid=1, owner="m", term=2, address="a:1"))
        # a watch reports what it reads: the re-created switch may come with its address
        events.wait_for(lambda items: getattr(items[-1].record, "address", "") == "a:1", WAIT)
        assert [(op, kind) for op, kind, _ in _changes(events)][:3] == [
            ("put", "link"), ("delete", "switch"), ("put", "switch")]


def test_a_watch_whose_snapshot_failed_reports_nothing_until_the_next_one(
        zookeeper: ZooKeeperServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resync's reads time out after its watches were armed (not producible on demand: a
    fake): a change that follows must not reach the callback before the next snapshot."""
    import threading

    from kazoo.exceptions import OperationTimeoutError
    from kazoo.protocol.states import Callback

    from backends.zookeeper.store import ZooKeeperRecordStore

    real = ZooKeeperRecordStore.children_by_kind
    calls: list[int] = []

    def flaky(self: ZooKeeperRecordStore, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:  # the first resync
            raise OperationTimeoutError("no answer")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ZooKeeperRecordStore, "children_by_kind", flaky)
    with coordination.connect(_url(zookeeper), "m") as coord:
        coord.topology.put(Switch(dpid=1, owner="m", term=1))
        events = Recorder("topology")
        coord.topology.watch(events)
        assert [r.dpid for r in events.wait_count(1, WAIT)[0].records] == [1]
        (raw,) = coord.topology._driver.watches
        raw.executor.call(raw._run, raw.resync, True)  # fails (quietly): no snapshot
        coord.topology.delete("switch", Switch(dpid=1).key)
        # everything the delete's notification caused has run: kazoo's watch thread, the
        # watch's worker, the callback thread
        seen = threading.Event()
        coord.topology._driver.client.client.handler.dispatch_callback(
            Callback("watch", seen.set, ()))
        assert seen.wait(WAIT)
        raw.executor.call(lambda: None)
        coord.topology._executor.call(lambda: None)
        assert len(events.items) == 1, events.items
        raw.submit(raw.resync, True)  # what the next reconnect does
        second = events.wait_count(2, WAIT)[1]
        assert second.__class__.__name__ == "Snapshot" and second.resync, events.items
        assert second.records == ()


def test_a_kazoo_release_not_checked_against_gets_one_shot_watches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The wrapper uses kazoo internals: an unknown release may have moved them silently."""
    monkeypatch.setattr(persistent.kazoo_version, "__version__", "2.12.0")
    with pytest.raises(persistent.NotSupported, match=r"kazoo 2\.12\.0 is not a release"):
        persistent.PersistentWatches(object())
    monkeypatch.setattr(persistent.kazoo_version, "__version__", "3.0")
    with pytest.raises(persistent.NotSupported):
        persistent.for_client(object())
