"""Topology sync end to end without Ryu: several runtimes on one `memory://` store."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import coordination
from coordination.records import Mastership, Port, Switch
from ryu_integration.topology.publisher import ForgetLink
from ryu_integration.topology.runtime import TopologyRuntime, TopologySettings
from ryu_integration.topology.view import LinkAdded, LinkRemoved, ViewChange

PORTS = [Port(1, "p1"), Port(2, "p2"), Port(3, "p3")]


#: Every runtime of a test notifies this after each step it takes, so waits are pushed.
PROGRESS = threading.Condition()


def wait_for(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    with PROGRESS:
        if not PROGRESS.wait_for(cond, timeout):
            raise AssertionError(f"timed out waiting for {what}")


class Node:
    """One controller: a coordinator and a runtime, recording the changes it reports."""

    def __init__(self, url: str, member: str, settings: TopologySettings) -> None:
        self.coord = coordination.connect(url, member)
        self.changes: list[ViewChange] = []
        self.resyncs = 0
        self._lock = threading.Lock()
        self.runtime = TopologyRuntime(member, settings, on_changes=self._on_changes,
                                       progress=PROGRESS)
        self.runtime.start(self.coord)
        assert self.runtime.wait_synced(5)

    def _on_changes(self, changes: list[ViewChange], resync: bool) -> None:
        with self._lock:
            self.changes.extend(changes)
            self.resyncs += int(resync)

    def links(self) -> set[tuple[int, int, int, int]]:
        return {(lk.src_dpid, lk.src_port, lk.dst_dpid, lk.dst_port)
                for lk in self.runtime.topology().links}

    def master(self, dpid: int, term: int) -> None:
        """What the mastership app does: publish Mastership, tell topology sync."""
        self.coord.topology.put(Mastership(owner=self.coord.member_id, term=term, dpid=dpid))
        self.runtime.set_master(dpid, term)

    def close(self) -> None:
        self.runtime.stop()
        self.coord.close()


@pytest.fixture
def cluster() -> Iterator[Callable[..., list[Node]]]:
    made: list[Node] = []
    url = f"memory://topo-{uuid.uuid4().hex[:8]}"

    def make(n: int = 3, **settings: object) -> list[Node]:
        defaults = {"batch_delay": 0.02, "reconcile_window": 0.5, "grace_period": 0.5}
        cfg = TopologySettings(**{**defaults, **settings})  # type: ignore[arg-type]
        nodes = [Node(url, f"c{len(made) + i + 1}", cfg) for i in range(n)]
        made.extend(nodes)
        return nodes

    yield make
    for node in made:
        node.close()


def ring_of_two(c1: Node, c2: Node) -> None:
    """c1 masters switch 1, c2 switch 2; both see both switches; each discovers the link
    arriving at its own switch."""
    for node in (c1, c2):
        node.runtime.switch_up(1, "127.0.0.1:1", PORTS)
        node.runtime.switch_up(2, "127.0.0.1:2", PORTS)
    c1.master(1, 10)
    c2.master(2, 11)
    c1.runtime.link_added((2, 1, 1, 1))
    c2.runtime.link_added((1, 1, 2, 1))


def test_every_controller_sees_the_whole_network(cluster) -> None:
    c1, c2, c3 = cluster(3)
    ring_of_two(c1, c2)
    want = {(1, 1, 2, 1), (2, 1, 1, 1)}
    for node in (c1, c2, c3):
        wait_for(lambda n=node: n.links() == want, what=f"{node.coord.member_id} links")
    topo = c3.runtime.topology()  # the standby: it discovered nothing itself
    assert set(topo.switches) == {1, 2} and topo.master_of(1) == "c1"
    # the view is updated before its changes are handed to the app: wait for those too
    wait_for(lambda: {type(c).__name__ for c in c3.changes} >= {"SwitchAdded", "LinkAdded"},
             what="c3's SwitchAdded and LinkAdded changes")
    # one write per record, and none again while nothing changes
    puts = c1.runtime.stats["puts"]
    c1.runtime.link_added((2, 1, 1, 1))
    c1.runtime.switch_up(1, "127.0.0.1:1", PORTS)
    assert c1.runtime.flush(5)
    assert c1.runtime.stats["puts"] == puts


def test_link_down_reaches_every_view_and_flaps_are_coalesced(cluster) -> None:
    c1, c2, c3 = cluster(3, batch_delay=0.2)
    ring_of_two(c1, c2)
    wait_for(lambda: len(c3.links()) == 2)
    writes = c1.runtime.stats["puts"] + c1.runtime.stats["deletes"]
    # after a quiet spell a change is written at once, and opens a 0.2 s batch...
    c1.runtime.host_seen("00:00:00:00:00:01", 1, 2, [])
    wait_for(lambda: c1.runtime.stats["puts"] + c1.runtime.stats["deletes"] == writes + 1,
             what="the first change written without waiting for the batch delay")
    c1.runtime.link_deleted((2, 1, 1, 1))  # ...so a flap within it is one batch
    c1.runtime.link_added((2, 1, 1, 1))
    assert c1.runtime.flush(5)  # before the 0.2 s batch delay: the flap is one batch
    assert c1.runtime.stats["puts"] + c1.runtime.stats["deletes"] == writes + 1
    c1.runtime.port_deleted(1, 1)  # the real thing
    c2.runtime.port_deleted(1, 1)
    for node in (c1, c2, c3):
        wait_for(lambda n=node: n.links() == set(), what="link removal")
    # the main view runs ahead of what applications were told: wait for the events too
    wait_for(lambda: sum(isinstance(c, LinkRemoved) for c in c3.changes) == 2,
             what="LinkRemoved delivered")


def test_failover_republishes_and_fences_the_old_master(cluster, caplog) -> None:
    c1, c2, c3 = cluster(3)
    ring_of_two(c1, c2)
    wait_for(lambda: len(c3.links()) == 2)
    # c2 takes switch 1 over (c1 is deposed but does not know yet)
    c2.master(1, 20)
    wait_for(lambda: c3.runtime.topology().switches[1].owner == "c2", what="switch re-published")
    assert c3.links() == {(1, 1, 2, 1), (2, 1, 1, 1)}  # kept during the reconcile window
    # c1 still thinks it masters 1 and tries to write: the store refuses, c1 stops
    with caplog.at_level(logging.WARNING, logger="ryu_integration.topology"):
        c1.runtime.port_deleted(1, 3)
        wait_for(lambda: c1.runtime.stats["refused"] > 0, what="fenced write")
    assert "deposed" in caplog.text
    assert c1.runtime.publisher.masters() == {}
    # c2 never discovered (2 -> 1): after the window it is removed everywhere
    for node in (c1, c2, c3):
        wait_for(lambda n=node: n.links() == {(1, 1, 2, 1)}, what="unconfirmed link removed")
    assert [p.port_no for p in c3.runtime.topology().switches[1].ports] == [1, 2, 3]


def test_janitor_removes_switches_nobody_owns(cluster) -> None:
    c1, c2 = cluster(2, grace_period=0.3)
    ring_of_two(c1, c2)
    wait_for(lambda: len(c2.links()) == 2)
    wait_for(lambda: c1.runtime.janitor_leader or c2.runtime.janitor_leader, what="a janitor")
    # switch 1 is unplugged: c1 (its master) leaves for good, c2 loses its connection to it
    c1.close()
    c2.runtime.switch_down(1)

    def collected() -> bool:
        topo = c2.runtime.topology()
        return (set(topo.switches) == {2} and topo.links == () == topo.hidden_links
                and 1 not in topo.masters)

    wait_for(collected, what="every record of switch 1 collected")


def test_a_controller_started_later_gets_the_view_from_the_store(cluster) -> None:
    c1, c2 = cluster(2)
    ring_of_two(c1, c2)
    wait_for(lambda: len(c2.links()) == 2)
    (late,) = cluster(1)
    assert late.links() == {(1, 1, 2, 1), (2, 1, 1, 1)}
    assert sum(isinstance(c, LinkAdded) for c in late.changes) == 2


def test_malformed_record_is_skipped_and_logged(cluster, caplog) -> None:
    c1, c2 = cluster(2)
    driver = c1.coord.topology._driver
    with caplog.at_level(logging.ERROR):
        driver.create("link/garbage", b"{not json")
        driver.create("switch/0000000000000009", json.dumps(
            {"schema": 1, "kind": "switch", "dpid": "nine"}).encode())
        ring_of_two(c1, c2)
        wait_for(lambda: len(c2.links()) == 2, what="sync despite garbage")
    assert "skipping malformed topology record" in caplog.text
    assert 9 not in c2.runtime.topology().switches


def test_applications_falling_behind_are_resynchronised(cluster, caplog) -> None:
    (c1,) = cluster(1, grace_period=60)
    gate = threading.Event()
    slow: list[bool] = []

    def blocked(changes: list[ViewChange], resync: bool) -> None:
        gate.wait(5)
        slow.append(resync)

    follower = TopologyRuntime("f1", TopologySettings(max_backlog=5, janitor=False),
                               on_changes=blocked, progress=PROGRESS)
    follower.start(c1.coord)
    try:
        with caplog.at_level(logging.WARNING, logger="ryu_integration.topology"):
            # switches nobody masters (so no publisher tidies them away)
            for i in range(1, 20):
                c1.coord.topology.put(Switch(owner="c9", term=5, dpid=100 + i))
            wait_for(lambda: follower.stats["overflows"] > 0, what="overflow")
            gate.set()
            wait_for(lambda: True in slow, what="resync delivered")
        assert "resynchronising them from a snapshot" in caplog.text
        wait_for(lambda: len(follower.topology().switches) == 19, what="every switch")
        wait_for(lambda: len(follower._emitted.topology().switches) == 19,
                 what="applications caught up")
    finally:
        gate.set()
        follower.stop()


def test_dump_file_holds_the_view(cluster, tmp_path: Path) -> None:
    dump = tmp_path / "view.json"
    c1, c2 = cluster(2)
    cluster(1, dump_file=str(dump))
    ring_of_two(c1, c2)
    wait_for(lambda: dump.exists() and len(json.loads(dump.read_text())["links"]) == 2,
             what="dump with links")
    data = json.loads(dump.read_text())
    assert data["member"] == "c3" and isinstance(data["updated_at"], float)
    assert {m["owner"] for m in data["masters"]} == {"c1", "c2"}


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        TopologySettings(batch_delay=-1)
    with pytest.raises(ValueError):
        TopologySettings(max_backlog=0)
    with pytest.raises(ValueError):
        TopologySettings(resync_interval=-1)


def test_links_dropped_with_a_port_are_forgotten_locally_on_a_controller_mastering_nothing(
        ) -> None:
    """Local discovery must forget a dropped link at once, on every controller: handed over
    later (say when this controller next becomes a master), the forget could remove a link
    found again meanwhile."""
    coord = coordination.connect(f"memory://topo-{uuid.uuid4().hex[:8]}", "c1")
    forgotten: list[object] = []
    runtime = TopologyRuntime("c1", TopologySettings(), on_forget=forgotten.append,
                              progress=PROGRESS)
    try:
        runtime.start(coord)
        runtime.switch_up(1, "127.0.0.1:1", PORTS)
        runtime.switch_up(2, "127.0.0.1:2", PORTS)
        runtime.link_added((2, 2, 1, 1))
        runtime.port_deleted(1, 1)
        wait_for(lambda: bool(forgotten), what="the forget of the link into the lost port")
        assert forgotten == [ForgetLink((2, 2, 1, 1))]
        assert runtime.publisher.masters() == {}
    finally:
        runtime.stop()
        coord.close()
