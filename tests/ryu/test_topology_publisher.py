"""What a master writes, and when: the publisher's decisions against a view of the store."""

from __future__ import annotations

import random

from coordination.records import Host, Link, Port, Switch, record_path
from coordination.topology import Change, Snapshot
from ryu_integration.topology.publisher import (
    Delete,
    ForgetHost,
    ForgetLink,
    LocalHost,
    LocalSwitch,
    Publisher,
    Put,
    stored_lookup,
)
from ryu_integration.topology.view import TopologyView

ME = "c1"
PORTS = [Port(1, "p1"), Port(2, "p2"), Port(3, "p3")]


def store_apply(view: TopologyView, ops, pub: Publisher | None = None) -> None:
    """Pretend the store did the ops and the watch reported them."""
    for op in ops:
        kind, _, key = op.path.partition("/")
        if isinstance(op, Put):
            view.apply(Change("put", kind, key, op.record, None))
        else:
            view.apply(Change("delete", kind, key, None, op.record))
        if pub is not None:
            pub.stored_changed({op.dpid}, [op.path])


def run(pub: Publisher, view: TopologyView, now: float):
    ops = pub.plan(view, now)
    for op in ops:
        pub.done(op, now)
    store_apply(view, ops, pub)
    return ops


def paths(ops) -> list[tuple[str, str]]:
    return [(type(op).__name__, op.path) for op in ops]


def mastered(dpids=(1,), term: int = 10, now: float = 0.0) -> tuple[Publisher, TopologyView]:
    pub = Publisher(ME, reconcile_window=5.0)
    view = TopologyView()
    view.apply(Snapshot(()))
    for dpid in (1, 2, 3):  # every controller is connected to every switch
        pub.switch_up(dpid, f"127.0.0.1:{dpid}", PORTS)
    for dpid in dpids:
        pub.set_master(dpid, term, now)
    return pub, view


def test_links_from_switches_we_are_not_connected_to_are_not_published() -> None:
    pub, view = mastered()
    pub.link_added((7, 1, 1, 1))  # Ryu would not find it without a connection to 7
    assert ("Put", "link/0000000000000007-1-0000000000000001-1") not in paths(
        pub.plan(view, 0.1))


def test_nothing_is_written_for_switches_we_do_not_master() -> None:
    pub = Publisher(ME)
    view = TopologyView()
    pub.switch_up(1, "a", PORTS)
    pub.link_added((2, 1, 1, 1))
    pub.host_seen("00:00:00:00:00:01", 1, 3)
    assert pub.plan(view, 0.0) == []


def test_master_publishes_switch_links_to_it_and_hosts_once() -> None:
    pub, view = mastered()
    pub.link_added((2, 1, 1, 1))  # discovered here: LLDP from 2 arrived at 1
    pub.link_added((1, 1, 2, 1))  # not ours to publish: its destination is switch 2
    pub.host_seen("00:00:00:00:00:01", 1, 3, ["10.0.0.1"])
    ops = run(pub, view, 0.1)
    assert sorted(paths(ops)) == sorted([
        ("Put", "switch/0000000000000001"),
        ("Put", f"link/{Link(src_dpid=2, src_port=1, dst_dpid=1, dst_port=1).key}"),
        ("Put", "host/000000000001"),
    ])
    put_switch = next(op.record for op in ops if isinstance(op.record, Switch))
    assert (put_switch.owner, put_switch.term, len(put_switch.ports)) == (ME, 10, 3)
    # nothing changed: nothing written, however often we plan
    pub.mark_all()
    assert pub.plan(view, 0.2) == []


def test_our_writes_are_not_repeated_while_the_view_lags() -> None:
    pub, view = mastered()
    ops = pub.plan(view, 0.1)
    for op in ops:
        pub.done(op, 0.1)
    pub.mark_all()
    assert pub.plan(view, 0.2) == []  # the watch has not shown them yet: the overlay knows
    # if the view never shows them (someone removed them), they are written again after the ttl
    pub.mark_all()
    assert paths(pub.plan(view, 0.2 + pub.overlay_ttl + 1)) == [("Put", "switch/0000000000000001")]


def test_link_flap_within_a_batch_costs_nothing() -> None:
    pub, view = mastered()
    pub.link_added((2, 1, 1, 1))
    run(pub, view, 0.1)
    pub.link_deleted((2, 1, 1, 1))
    pub.link_added((2, 1, 1, 1))
    assert pub.plan(view, 0.2) == []


def test_link_down_is_one_delete() -> None:
    pub, view = mastered()
    pub.link_added((2, 1, 1, 1))
    run(pub, view, 0.1)
    pub.link_deleted((2, 1, 1, 1))
    ops = run(pub, view, 0.2)
    assert paths(ops) == [("Delete", f"link/{Link(src_dpid=2, src_port=1, dst_dpid=1, dst_port=1).key}")]
    assert ops[0].term == 10


def test_port_deleted_updates_switch_and_drops_links_and_hosts_on_it() -> None:
    pub, view = mastered()
    pub.link_added((2, 1, 1, 1))
    pub.host_seen("00:00:00:00:00:01", 1, 3)
    run(pub, view, 0.1)
    pub.port_deleted(1, 1)
    pub.port_deleted(1, 3)
    ops = run(pub, view, 0.2)
    assert sorted(paths(ops)) == sorted([
        ("Put", "switch/0000000000000001"),
        ("Delete", f"link/{Link(src_dpid=2, src_port=1, dst_dpid=1, dst_port=1).key}"),
        ("Delete", "host/000000000001"),
    ])
    assert [p.port_no for p in view.switch(1).ports] == [2]


def test_port_down_is_a_switch_update_and_removes_its_links() -> None:
    pub, view = mastered()
    pub.link_added((2, 1, 1, 1))
    run(pub, view, 0.1)
    pub.port_up(1, Port(1, "p1", up=False))
    ops = run(pub, view, 0.2)
    assert sorted(paths(ops)) == sorted([
        ("Put", "switch/0000000000000001"),
        ("Delete", f"link/{Link(src_dpid=2, src_port=1, dst_dpid=1, dst_port=1).key}")])


def test_hosts_on_ports_facing_switches_are_not_hosts() -> None:
    pub, view = mastered()
    # a link the *other* master published makes port 1 a switch-facing port
    view.apply(Change("put", "link", "x", Link(owner="c2", term=3, src_dpid=1, src_port=1,
                                               dst_dpid=2, dst_port=1), None))
    pub.host_seen("00:00:00:00:00:01", 1, 1)
    ops = run(pub, view, 0.1)
    assert ("Put", "host/000000000001") not in paths(ops)
    assert "00:00:00:00:00:01" not in pub.hosts


def test_failover_republishes_now_and_removes_unconfirmed_after_the_window() -> None:
    old = Switch(owner="c0", term=4, dpid=1, address="x", ports=(Port(1), Port(9)))
    confirmed = Link(owner="c0", term=4, src_dpid=2, src_port=1, dst_dpid=1, dst_port=1)
    unconfirmed = Link(owner="c0", term=4, src_dpid=3, src_port=1, dst_dpid=1, dst_port=2)
    kept_host = Host(owner="c0", term=4, mac="00:00:00:00:00:01", dpid=1, port_no=3)
    gone_host = Host(owner="c0", term=4, mac="00:00:00:00:00:02", dpid=1, port_no=9)
    other = Link(owner="c7", term=2, src_dpid=1, src_port=2, dst_dpid=3, dst_port=1)
    view = TopologyView()
    view.apply(Snapshot((old, confirmed, unconfirmed, kept_host, gone_host, other)))
    pub = Publisher(ME, reconcile_window=5.0)
    for dpid in (1, 2, 3):
        pub.switch_up(dpid, f"127.0.0.1:{dpid}", PORTS)  # 1: port 9 went while nobody was master
    pub.set_master(1, 10, now=100.0)
    ops = run(pub, view, 100.1)
    # at once: the switch as it is now, the adopted host (its port still exists)
    assert sorted(paths(ops)) == sorted([("Put", "switch/0000000000000001"),
                                         ("Put", "host/000000000001")])
    assert view.switch(1).owner == ME and [p.port_no for p in view.switch(1).ports] == [1, 2, 3]
    # discovery confirms one link within the window
    pub.link_added((2, 1, 1, 1))
    ops = run(pub, view, 101.0)
    assert paths(ops) == [("Put", f"link/{confirmed.key}")]
    assert pub.next_deadline() == 105.0
    # the window closes: what was not confirmed goes, fenced by our term; others' links stay
    ops = run(pub, view, 105.0)
    assert sorted(paths(ops)) == sorted([("Delete", f"link/{unconfirmed.key}"),
                                         ("Delete", "host/000000000002")])
    assert all(op.term == 10 for op in ops)
    assert pub.next_deadline() is None
    assert view.links_to(3) == [other]


def test_reconcile_windows_follow_the_current_term_of_each_switch() -> None:
    """A window belongs to one term: a new term restarts it, losing mastership ends it."""
    pub, view = Publisher(ME, reconcile_window=10.0), TopologyView()
    pub.set_master(1, 5, 0.0)
    pub.set_master(2, 5, 5.0)
    assert pub.next_deadline() == 10.0
    pub.set_master(1, 6, 3.0)  # a new term of switch 1: its window starts again
    assert pub.next_deadline() == 13.0
    pub.set_master(1, None, 4.0)
    assert pub.next_deadline() == 15.0
    pub.plan(view, 15.0)
    assert pub.next_deadline() is None


def test_deposed_stops_writing_until_a_newer_term() -> None:
    pub, view = mastered(term=10)
    assert pub.deposed(1, 10)
    assert pub.masters() == {}
    pub.set_master(1, 10, 1.0)  # the same, refused term again: ignored
    assert pub.plan(view, 1.0) == []
    pub.set_master(1, 12, 2.0)
    assert paths(pub.plan(view, 2.0)) == [("Put", "switch/0000000000000001")]
    assert not pub.deposed(1, 11)  # an older refusal does not depose a newer term


def test_losing_mastership_stops_writes() -> None:
    pub, view = mastered()
    pub.set_master(1, None, 0.0)
    pub.link_added((2, 1, 1, 1))
    assert pub.plan(view, 0.1) == []
    assert not pub.pending


def test_host_moved_to_another_masters_switch_is_forgotten() -> None:
    pub, view = mastered()
    pub.host_seen("00:00:00:00:00:01", 1, 3)
    run(pub, view, 0.1)
    # another master saw it on switch 2 later and published that
    moved = Host(owner="c2", term=20, mac="00:00:00:00:00:01", dpid=2, port_no=1)
    view.apply(Change("put", "host", moved.key, moved, None))
    pub.stored_changed({1, 2}, ["host/000000000001"])
    assert pub.plan(view, 0.2) == []  # we neither fight nor delete the other's record
    assert pub.take_forgotten() == [ForgetHost("00:00:00:00:00:01", 1, 3)]
    assert "00:00:00:00:00:01" not in pub.hosts
    # a fresh sighting here is news again: it moves back
    pub.host_seen("00:00:00:00:00:01", 1, 3)
    assert paths(pub.plan(view, 0.3)) == [("Put", "host/000000000001")]


def test_links_dropped_with_their_port_or_switch_are_forgotten_locally() -> None:
    """Local discovery is told to forget each link dropped for a port or switch (Ryu keeps a
    link into a lost port whose reverse it never saw); not one Ryu itself reported deleted."""
    pub, _ = mastered(dpids=(1, 2, 3))
    for lid in [(2, 1, 1, 1), (1, 2, 3, 1), (3, 2, 2, 2)]:
        pub.link_added(lid)
    pub.link_deleted((3, 2, 2, 2))
    assert pub.take_forgotten() == []
    pub.port_up(1, Port(1, "p1", up=False))
    assert pub.take_forgotten() == [ForgetLink((2, 1, 1, 1))]
    pub.port_deleted(3, 1)
    assert pub.take_forgotten() == [ForgetLink((1, 2, 3, 1))]
    pub.link_added((2, 1, 1, 1))
    pub.switch_down(2)
    assert pub.take_forgotten() == [ForgetLink((2, 1, 1, 1))] and pub.links == set()


def test_host_ips_are_merged_and_republished() -> None:
    pub, view = mastered()
    pub.host_seen("00:00:00:00:00:01", 1, 3, ["10.0.0.1"])
    run(pub, view, 0.1)
    pub.host_seen("00:00:00:00:00:01", 1, 3, ["10.0.0.1"])
    assert pub.plan(view, 0.2) == []
    pub.host_seen("00:00:00:00:00:01", 1, 3, ["10.0.0.2"])
    ops = run(pub, view, 0.3)
    assert ops[0].record.ips == ("10.0.0.1", "10.0.0.2")


def test_replace_local_replaces_switches_and_links_merges_hosts() -> None:
    pub, view = mastered()
    pub.link_added((2, 1, 1, 1))
    pub.host_seen("00:00:00:00:00:01", 1, 3)
    run(pub, view, 0.1)
    pub.replace_local({d: LocalSwitch(f"127.0.0.1:{d}", {p.port_no: p for p in PORTS})
                       for d in (1, 2, 3)},
                      {(3, 1, 1, 2)}, [LocalHost("00:00:00:00:00:02", 1, 3)])
    ops = run(pub, view, 0.2)
    assert sorted(paths(ops)) == sorted([
        ("Delete", f"link/{Link(src_dpid=2, src_port=1, dst_dpid=1, dst_port=1).key}"),
        ("Put", f"link/{Link(src_dpid=3, src_port=1, dst_dpid=1, dst_port=2).key}"),
        ("Put", "host/000000000002"),
    ])
    assert set(pub.hosts) == {"00:00:00:00:00:01", "00:00:00:00:00:02"}


def test_switch_down_drops_everything_local_about_it() -> None:
    pub, view = mastered(dpids=(1, 2))
    pub.link_added((2, 1, 1, 1))
    pub.link_added((1, 1, 2, 1))
    pub.host_seen("00:00:00:00:00:01", 2, 3)
    run(pub, view, 0.1)
    pub.switch_down(2)
    ops = run(pub, view, 0.2)
    # switch 2's own records are left to its next master (or the janitor); the link into 1 goes
    assert paths(ops) == [("Delete", f"link/{Link(src_dpid=2, src_port=1, dst_dpid=1, dst_port=1).key}")]
    assert pub.hosts == {} and pub.links == set()


def test_failed_op_is_retried() -> None:
    pub, view = mastered()
    ops = pub.plan(view, 0.1)
    pub.failed(ops[0])
    assert paths(pub.plan(view, 0.2)) == paths(ops)


def test_stored_lookup() -> None:
    view = TopologyView()
    link = Link(owner="c", term=1, src_dpid=1, src_port=1, dst_dpid=2, dst_port=1)
    host = Host(owner="c", term=1, mac="00:00:00:00:00:01", dpid=1, port_no=1)
    view.apply(Snapshot((link, host)))
    assert stored_lookup(view, record_path(link)) == link
    assert stored_lookup(view, record_path(host)) == host
    assert stored_lookup(view, "switch/0000000000000001") is None
    assert isinstance(Delete(link, 1, 2).path, str)


def test_per_switch_indexes_follow_every_kind_of_change() -> None:
    """Events and plans look links and hosts up by switch (their cost follows the switches
    they touch): after any sequence of observations and plans the indexes still say exactly
    what `links` and `hosts` say."""
    rng = random.Random(11)
    pub, view = mastered(dpids=(1, 2, 3))

    def some_link():
        a, b = rng.sample((1, 2, 3), 2)
        return (a, rng.randint(1, 3), b, rng.randint(1, 3))

    actions = [
        lambda: pub.link_added(some_link()),
        lambda: pub.link_deleted(rng.choice(sorted(pub.links)) if pub.links else some_link()),
        lambda: pub.host_seen(f"00:00:00:00:00:0{rng.randint(1, 6)}", rng.randint(1, 3),
                              rng.randint(1, 3)),
        lambda: pub.port_up(rng.randint(1, 3), Port(rng.randint(1, 3), "p", up=False)),
        lambda: pub.port_deleted(rng.randint(1, 3), rng.randint(1, 3)),
        lambda: pub.switch_down(rng.randint(1, 3)),
        lambda: pub.switch_up(rng.randint(1, 3), "127.0.0.1:9", PORTS),
        lambda: pub.replace_local({d: LocalSwitch("127.0.0.1:9", {p.port_no: p for p in PORTS})
                                   for d in (1, 2, 3)}, {some_link(), some_link()}, []),
        lambda: run(pub, view, rng.random()),
    ]
    for step in range(400):
        rng.choice(actions)()
        links_at: dict[int, set] = {}
        for lid in pub.links:
            links_at.setdefault(lid[0], set()).add(lid)
            links_at.setdefault(lid[2], set()).add(lid)
        hosts_at: dict[int, set] = {}
        for mac, host in pub.hosts.items():
            hosts_at.setdefault(host.dpid, set()).add(mac)
        assert dict(pub._links_at) == links_at, f"step {step}"
        assert dict(pub._hosts_at) == hosts_at, f"step {step}"
