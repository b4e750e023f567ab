"""Grace-period removal of switches no controller owns."""

from __future__ import annotations

import pytest

from coordination.records import Host, Link, Mastership, Port, Switch, record_path
from coordination.topology import Change, Snapshot
from ryu_integration.topology.janitor import BY_SWITCH_OWNER, Janitor
from ryu_integration.topology.view import TopologyView


def records(owner: str = "c1", term: int = 5):
    return (
        Switch(owner=owner, term=term, dpid=1, ports=(Port(1), Port(2))),
        Switch(owner="c2", term=7, dpid=2, ports=(Port(1),)),
        Mastership(owner=owner, term=term, dpid=1),
        Mastership(owner="c2", term=7, dpid=2),
        Link(owner="c2", term=7, src_dpid=1, src_port=1, dst_dpid=2, dst_port=1),
        Link(owner=owner, term=term, src_dpid=2, src_port=1, dst_dpid=1, dst_port=1),
        Host(owner=owner, term=term, mac="00:00:00:00:00:01", dpid=1, port_no=2),
    )


def paths(ops) -> set[str]:
    return {op.path for op in ops}


def test_owned_switches_are_left_alone() -> None:
    view = TopologyView()
    view.apply(Snapshot(records()))
    janitor = Janitor(grace_period=10)
    assert janitor.plan(view, {"c1", "c2"}, 0.0) == []
    assert janitor.plan(view, {"c1", "c2"}, 100.0) == []
    assert janitor.next_deadline() is None


def test_dead_owner_switch_is_removed_after_the_grace_period() -> None:
    view = TopologyView()
    view.apply(Snapshot(records()))
    janitor = Janitor(grace_period=10)
    assert janitor.plan(view, {"c2"}, 0.0) == []  # c1 died: switch 1 unowned from now
    assert janitor.unowned() == {1: 0.0} and janitor.next_deadline() == 10.0
    assert janitor.plan(view, {"c2"}, 9.9) == []
    ops = janitor.plan(view, {"c2"}, 10.0)
    # everything about switch 1: its switch, mastership, both links touching it, its host
    assert paths(ops) == {"switch/0000000000000001", "mastership/0000000000000001",
                          f"link/{records()[4].key}", f"link/{records()[5].key}",
                          "host/000000000001"}
    # each delete is fenced with the term of the record as seen
    assert {op.term for op in ops if op.record.owner == "c2"} == {7}
    assert {op.term for op in ops if op.record.owner == "c1"} == {5}


def test_a_new_master_within_the_grace_period_saves_the_switch() -> None:
    view = TopologyView()
    view.apply(Snapshot(records()))
    janitor = Janitor(grace_period=10)
    janitor.plan(view, {"c2"}, 0.0)
    m = Mastership(owner="c3", term=9, dpid=1)
    view.apply(Change("put", "mastership", m.key, m, None))
    assert janitor.plan(view, {"c2", "c3"}, 20.0) == []
    assert janitor.unowned() == {}


def test_a_short_ownership_between_two_passes_restarts_the_grace_period() -> None:
    view = TopologyView()
    recs = records()
    view.apply(Snapshot(recs))
    janitor = Janitor(grace_period=10)
    janitor.plan(view, {"c2"}, 0.0)  # c1 died: unowned from 0
    # c3 takes over at 0.2 and loses the switch at 0.7; the next pass is at 1.0
    m = Mastership(owner="c3", term=9, dpid=1)
    janitor.ownership_written(m)
    janitor.ownership_written(Link(owner="c3", term=9, src_dpid=2, src_port=1, dst_dpid=1,
                                   dst_port=1))  # not an ownership record: no effect
    assert janitor.plan(view, {"c2", "c3"}, 1.0) == []
    assert janitor.unowned() == {1: 1.0}
    assert janitor.plan(view, {"c2", "c3"}, 10.5) == []  # 10 s from 1.0, not from 0
    assert janitor.plan(view, {"c2", "c3"}, 11.0) != []


def test_withdrawn_mastership_counts_as_unowned_and_gone_domains_are_forgotten() -> None:
    view = TopologyView()
    recs = records()
    view.apply(Snapshot(recs))
    janitor = Janitor(grace_period=0)
    view.apply(Change("delete", "mastership", recs[2].key, None, recs[2]))
    ops = janitor.plan(view, {"c1", "c2"}, 0.0)  # c1 alive but no longer masters switch 1
    assert "switch/0000000000000001" in paths(ops)
    for op in ops:
        kind, _, key = op.path.partition("/")
        view.apply(Change("delete", kind, key, None, op.record))
    assert janitor.plan(view, {"c1", "c2"}, 1.0) == []
    assert janitor.unowned() == {}


def test_switch_owner_mode() -> None:
    view = TopologyView()
    view.apply(Snapshot(tuple(r for r in records() if not isinstance(r, Mastership))))
    janitor = Janitor(grace_period=0, ownership=BY_SWITCH_OWNER)
    assert janitor.plan(view, {"c1", "c2"}, 0.0) == []
    assert "switch/0000000000000002" in paths(janitor.plan(view, {"c1"}, 0.0))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Janitor(-1)
    with pytest.raises(ValueError):
        Janitor(1, ownership="nobody")
    assert record_path(records()[0]) == "switch/0000000000000001"


class CountingView:
    """A view that counts the switches whose ownership a pass looks up."""

    def __init__(self, view: TopologyView) -> None:
        self.view = view
        self.looked: set[int] = set()

    @property
    def lookups(self) -> int:
        return len(self.looked)

    @lookups.setter
    def lookups(self, value: int) -> None:
        assert value == 0
        self.looked = set()

    def mastership(self, dpid: int) -> Mastership | None:
        self.looked.add(dpid)
        return self.view.mastership(dpid)

    def __getattr__(self, name: str):
        return getattr(self.view, name)


def test_a_pass_looks_only_at_switches_that_changed_or_are_unowned() -> None:
    view = TopologyView()
    view.apply(Snapshot(tuple(r for d in range(1, 201) for r in (
        Switch(owner="c1", term=1, dpid=d), Mastership(owner="c1", term=1, dpid=d)))))
    counting = CountingView(view)
    janitor = Janitor(grace_period=10)
    assert janitor.plan(counting, {"c1"}, 0.0) == [] and counting.lookups == 200
    counting.lookups = 0
    assert janitor.plan(counting, {"c1"}, 1.0) == [] and counting.lookups == 0
    gone = Mastership(owner="c1", term=1, dpid=7)
    view.apply(Change("delete", "mastership", gone.key, None, gone))
    janitor.touched({7})  # the runtime says so for every store change
    assert janitor.plan(counting, {"c1"}, 2.0) == [] and counting.lookups == 1
    assert janitor.unowned() == {7: 2.0}
    counting.lookups = 0
    assert paths(janitor.plan(counting, {"c1"}, 12.0)) == {"switch/0000000000000007"}
    assert counting.lookups == 1  # only the unowned one
    counting.lookups = 0
    janitor.plan(counting, {"c1", "c2"}, 13.0)  # a member joined: owners may have changed
    assert counting.lookups == 200
    counting.lookups = 0
    janitor.recheck_all()  # a snapshot replaced the view
    janitor.plan(counting, {"c1", "c2"}, 14.0)
    assert counting.lookups == 200
