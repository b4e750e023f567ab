"""The global view: store events in, visible changes out (no Ryu, no store)."""

from __future__ import annotations

import random

import networkx as nx

from coordination.records import Host, Link, Mastership, Port, Switch, record_path
from coordination.topology import Change, Snapshot
from ryu_integration.topology.view import (
    HostAdded,
    HostMoved,
    HostRemoved,
    HostUpdated,
    LinkAdded,
    LinkRemoved,
    MasterChanged,
    PortAdded,
    PortModified,
    PortRemoved,
    SwitchAdded,
    SwitchUpdated,
    TopologyView,
    describe,
)


def sw(dpid: int, *ports: int, down: tuple[int, ...] = (), owner: str = "c1", term: int = 5,
       address: str = "127.0.0.1:1") -> Switch:
    return Switch(owner=owner, term=term, dpid=dpid, address=address,
                  ports=tuple(Port(p, f"p{p}", up=p not in down) for p in ports))


def ln(s: int, sp: int, d: int, dp: int, owner: str = "c1", term: int = 5) -> Link:
    return Link(owner=owner, term=term, src_dpid=s, src_port=sp, dst_dpid=d, dst_port=dp)


def host(mac: str, dpid: int, port: int, *ips: str, owner: str = "c1", term: int = 5) -> Host:
    return Host(owner=owner, term=term, mac=mac, ips=ips, dpid=dpid, port_no=port)


def put(view: TopologyView, record, previous=None):
    kind, _, key = record_path(record).partition("/")
    return view.apply(Change("put", kind, key, record, previous))


def delete(view: TopologyView, record):
    kind, _, key = record_path(record).partition("/")
    return view.apply(Change("delete", kind, key, None, record))


def kinds(changes) -> list[str]:
    return [type(c).__name__ for c in changes]


def test_snapshot_builds_the_view_and_emits_additions_in_order() -> None:
    view = TopologyView()
    records = (ln(1, 1, 2, 1), sw(1, 1, 2), sw(2, 1), host("00:00:00:00:00:0a", 1, 2, "10.0.0.1"),
               Mastership(owner="c1", term=5, dpid=1))
    changes = view.apply(Snapshot(records))
    assert kinds(changes) == ["SwitchAdded", "SwitchAdded", "LinkAdded", "HostAdded",
                              "MasterChanged"]
    topo = view.topology()
    assert set(topo.switches) == {1, 2}
    assert [(lk.src_dpid, lk.dst_dpid) for lk in topo.links] == [(1, 2)]
    assert set(topo.hosts) == {"00:00:00:00:00:0a"}
    assert topo.master_of(1) == "c1" and topo.master_of(2) is None


def test_link_is_visible_only_with_both_ports_present_and_up() -> None:
    view = TopologyView()
    assert put(view, ln(1, 1, 2, 1)) == []  # no switches yet: hidden
    assert view.topology().hidden_links and not view.topology().links
    assert put(view, sw(1, 1)) == [SwitchAdded(sw(1, 1))]
    changes = put(view, sw(2, 1))
    assert kinds(changes) == ["SwitchAdded", "LinkAdded"]
    # the port goes down: the link disappears before the port changes
    changes = put(view, sw(2, 1, down=(1,)), sw(2, 1))
    assert kinds(changes) == ["LinkRemoved", "PortModified"]
    changes = put(view, sw(2, 1), sw(2, 1, down=(1,)))
    assert kinds(changes) == ["PortModified", "LinkAdded"]
    # the port is deleted
    changes = put(view, sw(2), sw(2, 1))
    assert kinds(changes) == ["LinkRemoved", "PortRemoved"]
    assert isinstance(changes[1], PortRemoved) and changes[1].port.port_no == 1


def test_switch_removal_removes_its_links_and_hosts_first() -> None:
    view = TopologyView()
    view.apply(Snapshot((sw(1, 1, 2), sw(2, 1), ln(1, 1, 2, 1), ln(2, 1, 1, 1),
                         host("00:00:00:00:00:0b", 1, 2))))
    changes = delete(view, sw(1, 1, 2))
    assert kinds(changes) == ["HostRemoved", "LinkRemoved", "LinkRemoved", "SwitchRemoved"]
    # the records are still there, hidden: the switch coming back shows them again
    changes = put(view, sw(1, 1, 2))
    assert kinds(changes) == ["SwitchAdded", "LinkAdded", "LinkAdded", "HostAdded"]


def test_owner_or_term_changes_alone_are_silent() -> None:
    view = TopologyView()
    view.apply(Snapshot((sw(1, 1), sw(2, 1), ln(1, 1, 2, 1), host("00:00:00:00:00:0c", 1, 1))))
    assert put(view, sw(1, 1, owner="c2", term=9), sw(1, 1)) == []
    assert put(view, ln(1, 1, 2, 1, owner="c2", term=9), ln(1, 1, 2, 1)) == []
    assert put(view, host("00:00:00:00:00:0c", 1, 1, owner="c2", term=9)) == []
    topo = view.topology()
    assert topo.switches[1].owner == "c2" and topo.links[0].term == 9


def test_ports_added_modified_removed_and_address() -> None:
    view = TopologyView()
    put(view, sw(1, 1, 2))
    changes = put(view, sw(1, 2, 3, down=(2,), address="127.0.0.1:2"))
    assert changes == [
        PortRemoved(1, Port(1, "p1")),
        PortModified(1, Port(2, "p2", up=False), Port(2, "p2")),
        PortAdded(1, Port(3, "p3")),
        SwitchUpdated(sw(1, 2, 3, down=(2,), address="127.0.0.1:2"), sw(1, 1, 2)),
    ]


def test_hosts_added_moved_updated_removed() -> None:
    view = TopologyView()
    view.apply(Snapshot((sw(1, 1, 2), sw(2, 1))))
    mac = "00:00:00:00:00:01"
    assert put(view, host(mac, 1, 2)) == [HostAdded(host(mac, 1, 2))]
    assert put(view, host(mac, 1, 2, "10.0.0.1")) == [
        HostUpdated(host(mac, 1, 2, "10.0.0.1"), host(mac, 1, 2))]
    assert put(view, host(mac, 2, 1, "10.0.0.1")) == [
        HostMoved(host(mac, 2, 1, "10.0.0.1"), host(mac, 1, 2, "10.0.0.1"))]
    # a host on a port that does not exist is hidden
    assert put(view, host(mac, 2, 7)) == [HostRemoved(host(mac, 2, 1, "10.0.0.1"))]
    assert view.topology().hosts == {}
    assert delete(view, host(mac, 2, 7)) == []


def test_mastership_changes() -> None:
    view = TopologyView()
    m1, m2 = Mastership(owner="c1", term=3, dpid=1), Mastership(owner="c2", term=8, dpid=1)
    assert put(view, m1) == [MasterChanged(1, m1, None)]
    assert put(view, m2) == [MasterChanged(1, m2, m1)]
    assert delete(view, m2) == [MasterChanged(1, None, m2)]


def test_a_hinted_mastership_record_names_no_master() -> None:
    """A record with a hint says the switch refuses its elected leader: nobody masters it."""
    view = TopologyView()
    put(view, Mastership(owner="c1", term=3, dpid=1))
    assert view.topology().master_of(1) == "c1"
    put(view, Mastership(owner="c2", term=9, dpid=1, hint="switch refuses every role request"))
    assert view.topology().master_of(1) is None


def test_resync_snapshot_emits_only_the_difference() -> None:
    view = TopologyView()
    view.apply(Snapshot((sw(1, 1), sw(2, 1), ln(1, 1, 2, 1))))
    changes = view.apply(Snapshot((sw(1, 1), sw(2, 1), ln(2, 1, 1, 1), sw(3)), resync=True))
    assert changes == [LinkRemoved(ln(1, 1, 2, 1)), SwitchAdded(sw(3)), LinkAdded(ln(2, 1, 1, 1))]
    assert view.resyncs == 1 and view.snapshots == 2


def test_graph_for_path_computation() -> None:
    view = TopologyView()
    records = [sw(d, 1, 2, 3) for d in (1, 2, 3)]
    records += [ln(1, 1, 2, 1), ln(2, 1, 1, 1), ln(2, 2, 3, 1), ln(3, 1, 2, 2),
                ln(1, 2, 2, 3), host("00:00:00:00:00:0d", 3, 3)]
    view.apply(Snapshot(tuple(records)))
    g = view.topology().graph()
    assert nx.shortest_path(g, 1, 3) == [1, 2, 3]
    assert g.edges[1, 2]["src_port"] == 1 and g.edges[1, 2]["links"] == [(1, 1), (2, 3)]
    gh = view.topology().graph(hosts=True)
    assert nx.shortest_path(gh, 1, "00:00:00:00:00:0d") == [1, 2, 3, "00:00:00:00:00:0d"]
    assert gh.edges[3, "00:00:00:00:00:0d"]["port"] == 3


def test_to_dict_is_json_ready_and_accessors() -> None:
    import json

    view = TopologyView()
    view.apply(Snapshot((sw(1, 1), sw(2, 1), ln(1, 1, 2, 1), ln(2, 1, 1, 1),
                         host("00:00:00:00:00:0e", 1, 1))))
    data = json.loads(json.dumps(view.topology().to_dict()))
    assert [s["dpid"] for s in data["switches"]] == [1, 2]
    assert len(data["links"]) == 2 and data["hosts"][0]["mac"] == "00:00:00:00:00:0e"
    assert [lk.key for lk in view.links_to(2)] == [ln(1, 1, 2, 1).key]
    assert len(view.links_at(1)) == 2
    assert view.is_link_port(1, 1) and view.is_link_port(2, 1) and not view.is_link_port(1, 2)
    assert view.domains() == {1, 2}
    assert len(view) == 5
    assert view.host("00:00:00:00:00:0E") is not None


def test_describe_is_short() -> None:
    assert describe(LinkAdded(ln(1, 1, 2, 1))) == f"LinkAdded {ln(1, 1, 2, 1).key}"
    assert describe(MasterChanged(1, None, None)).startswith("MasterChanged 0000000000000001")


def _summary_of_topology(view: TopologyView) -> tuple:
    topo = view.topology()
    owners = {s.owner for s in topo.switches.values()} | {lk.owner for lk in topo.links} | {
        h.owner for h in topo.hosts.values()}
    return (topo.revision, len(topo.switches), len(topo.links), len(topo.hidden_links),
            len(topo.hosts), len(topo.masters), frozenset(owners))


def test_summary_says_what_the_whole_picture_says() -> None:
    """The `TOPOLOGY` line's counts come from `summary()`, which copies nothing: the same
    figures as `topology()` through visible, hidden and removed records."""
    view = TopologyView()
    steps = [
        lambda: view.apply(Snapshot((sw(1, 1, 2), sw(2, 1), ln(1, 1, 2, 1, owner="c2"),
                                     host("00:00:00:00:00:0c", 1, 2, owner="c3")))),
        lambda: put(view, ln(2, 1, 3, 1, owner="c4")),  # hidden: switch 3 unknown
        lambda: put(view, sw(2, 1, down=(1,)), sw(2, 1)),  # the link to 2 goes hidden
        lambda: put(view, Mastership(owner="c1", term=5, dpid=1)),
        lambda: put(view, host("00:00:00:00:00:0d", 9, 1, owner="c5")),  # hidden: no switch 9
        lambda: delete(view, sw(1, 1, 2)),
    ]
    for step in steps:
        step()
        s = view.summary()
        assert (s.revision, s.switches, s.links, s.hidden_links, s.hosts, s.masters,
                s.owners) == _summary_of_topology(view)
    assert view.summary().owners == {"c1"}  # hidden records' owners are not shown


def test_summary_stays_exact_through_any_sequence_of_changes() -> None:
    """`summary()` is kept up to date change by change (no pass over the view): after each of
    many random puts and deletes (ports going down, switches going, owners changing, a
    snapshot now and then) it still says exactly what the whole picture says."""
    rng = random.Random(7)
    owners = ("c1", "c2", "c3")
    view = TopologyView()

    def some_record():
        a, b = rng.randint(1, 5), rng.randint(1, 5)
        owner = rng.choice(owners)
        return rng.choice([
            lambda: sw(a, 1, 2, 3, down=tuple(p for p in (1, 2, 3) if rng.random() < 0.3),
                       owner=owner),
            lambda: ln(a, rng.randint(1, 4), b, rng.randint(1, 4), owner=owner),
            lambda: host(f"00:00:00:00:00:0{a}", b, rng.randint(1, 4), owner=owner),
            lambda: Mastership(owner=owner, term=rng.randint(1, 9), dpid=a),
        ])()

    stored: dict[str, object] = {}
    for step in range(600):
        if step % 150 == 149:
            view.apply(Snapshot(tuple(stored.values())))
        else:
            record = some_record()
            path = record_path(record)
            if path in stored and rng.random() < 0.4:
                delete(view, stored.pop(path))
            else:
                put(view, record, stored.get(path))
                stored[path] = record
        s = view.summary()
        assert (s.revision, s.switches, s.links, s.hidden_links, s.hosts, s.masters,
                s.owners) == _summary_of_topology(view), f"step {step}"
        ends = {end for r in view.records() if isinstance(r, Link)
                for end in ((r.src_dpid, r.src_port), (r.dst_dpid, r.dst_port))}
        assert {(d, p) for d in range(1, 6) for p in range(1, 5)
                if view.is_link_port(d, p)} == ends, f"step {step}"
