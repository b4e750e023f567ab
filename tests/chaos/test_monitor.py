"""The invariant monitor catches what it must: fed by hand the events a tap and hosts report.

Why: a chaos run that finds nothing is only evidence if the monitor demonstrably flags a
duplicate, a write accepted from a slave, a reused term and an over-long masterless interval.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp

from .monitor import Monitor
from .tap import barrier_request, split_messages

_IDS = itertools.count(1)


def link(monitor: Monitor, member: str, dpid: int = 1) -> Any:
    lk = SimpleNamespace(id=next(_IDS), member=member, dpid=dpid)
    monitor.link_up(lk)  # type: ignore[arg-type]
    return lk


def confirm(monitor: Monitor, lk: Any, role: str, gen: int, xid: int = 1) -> None:
    monitor.role_request(lk, xid, role, gen)
    monitor.role_reply(lk, xid, role, gen)


def invariants(monitor: Monitor) -> list[str]:
    return [v.invariant for v in monitor.violations]


def test_duplicate_delivery_is_a_violation() -> None:
    m = Monitor()
    m.packet_delivered(1, 7)
    m.packet_delivered(2, 7)  # same number, other bridge: fine
    assert invariants(m) == []
    m.packet_delivered(1, 7)
    assert invariants(m) == ["duplicate"]


def test_write_accepted_from_a_slave_is_a_violation_refused_is_not() -> None:
    m = Monitor()
    a, b = link(m, "a"), link(m, "b")
    confirm(m, a, "master", 10)
    confirm(m, b, "slave", 10)
    m.write_sent(a, "FLOW_MOD", 100, 1)  # the master: fine
    assert m.barrier_reply(a, 1)
    m.write_sent(b, "FLOW_MOD", 101, 2)  # a slave, refused IS_SLAVE: fine
    m.error(b, 101, ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE)
    assert m.barrier_reply(b, 2)
    assert invariants(m) == []
    m.write_sent(b, "PACKET_OUT", 102, 3)  # a slave, accepted: violation
    assert m.barrier_reply(b, 3)
    assert invariants(m) == ["write-from-non-master"]
    assert not m.barrier_reply(b, 99), "a barrier the tap did not send is the controller's"


def test_demoted_master_and_unconfirmed_connection_may_not_write() -> None:
    m = Monitor()
    a, b, c = link(m, "a"), link(m, "b"), link(m, "c")
    confirm(m, a, "master", 10)
    confirm(m, b, "master", 11)  # the switch demotes a
    m.write_sent(a, "FLOW_MOD", 1, 1)
    m.barrier_reply(a, 1)
    m.write_sent(c, "FLOW_MOD", 2, 2)  # never claimed a role (EQUAL)
    m.barrier_reply(c, 2)
    assert invariants(m) == ["write-from-non-master"] * 2
    m.role_request(c, 5, "master", 12)  # a claim in flight: the write may be accepted
    m.write_sent(c, "FLOW_MOD", 3, 3)
    m.barrier_reply(c, 3)
    assert len(m.violations) == 2


def test_same_generation_for_two_masters_is_a_violation() -> None:
    m = Monitor()
    a, b = link(m, "a"), link(m, "b")
    confirm(m, a, "master", 10)
    confirm(m, a, "master", 10, xid=2)  # the same controller re-asserting: fine
    assert invariants(m) == []
    confirm(m, b, "master", 10)
    assert invariants(m) == ["term-reused"]


def test_masterless_longer_than_the_bound_is_a_violation() -> None:
    m = Monitor()
    a, b = link(m, "a"), link(m, "b")
    confirm(m, a, "master", 10)
    m.begin_fault("generous", 60.0)
    m.set_paused("a", True)  # a paused master is no master
    assert m.open_masterless()
    m.set_paused("a", False)
    assert invariants(m) == [] and not m.open_masterless()
    m.begin_fault("strict", -1.0)  # any interval at all is too long
    m.link_down(a)
    confirm(m, b, "master", 11)
    assert invariants(m) == ["masterless"]
    assert m.stats["strict"].violations == 1 and m.stats["generous"].violations == 0


def test_missing_switch_record_is_a_violation() -> None:
    m = Monitor()
    m.topology_switches = {1, 2}
    assert m.check_topology([1, 2], 0.01)
    assert not m.check_topology([1, 2, 3], 0.01)
    assert invariants(m) == ["topology-lost"]


def test_split_messages_keeps_partial_tail() -> None:
    buf = bytearray(barrier_request(1) + barrier_request(2)[:5])
    assert split_messages(buf) == [barrier_request(1)]
    assert bytes(buf) == barrier_request(2)[:5]
