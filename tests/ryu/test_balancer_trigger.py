"""The balancer glue's deadlines and connection trigger (ryu_integration/mastership/
balancer_glue.py), driven input by input with a fake clock and no store: what it asks its store
thread to do is recorded instead of run.

Why here and not only end to end: the bug behind "switches that connect after the plan stay
unbalanced" was in the glue's bookkeeping (a member read cancelled the pending follow-up round),
which a run against real switches shows only as a timing-dependent imbalance."""

from __future__ import annotations

from itertools import pairwise
from types import SimpleNamespace
from typing import Any

from coordination import balancing
from coordination.records import Move, Rebalance
from ryu_integration.mastership import balancer
from ryu_integration.mastership.balancer_glue import Balancer
from ryu_integration.mastership.balancer_inputs import (
    BalancerLeadership,
    MembersRead,
    PlanReady,
    RebalanceAsked,
)

SETTLE = 3.0
ME, B, C = "a", "b", "c"


class Calls:
    """Stands in for the balancer's store thread and the app's store worker."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def submit(self, func: Any, *args: Any) -> None:
        self.calls.append((func.__name__, args))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]


def make(policy: balancing.Policy = balancing.Policy.BALANCED) -> tuple[Balancer, Calls, Calls]:
    settings = balancer.BalanceSettings(
        policy, damping=balancing.Damping(settle=SETTLE, min_interval=1.0))
    worker = Calls()
    app = SimpleNamespace(member_id=ME, settings=SimpleNamespace(balance=settings), coord=None,
                          _worker=worker, _running=True, _post=lambda item: None)
    glue = Balancer(app)  # type: ignore[arg-type]
    store = Calls()
    glue._store = store  # type: ignore[assignment]
    return glue, store, worker


def lead(glue: Balancer, store: Calls, now: float, members: tuple[str, ...] = (ME, B, C)) -> None:
    """Elected balancer; the member read answers; the membership plan computed, no moves."""
    glue.leadership(BalancerLeadership(True), now)
    glue.members_read(MembersRead(frozenset(members)), now)
    glue.tick(now + SETTLE)  # membership settled: the first plan
    assert store.named("_compute")
    glue.plan_ready(PlanReady(balancing.Plan((), {}), "membership"), now + SETTLE)


def plans(store: Calls) -> list[str]:
    return [args[-1] for args in store.named("_compute")]


def connect(glue: Balancer, dpids: range, leader: str | None, now: float) -> None:
    for dpid in dpids:
        glue.switch_changed(dpid, True, now)
        glue.leader_changed(dpid, leader, now)


def test_a_member_read_does_not_cancel_the_follow_up_round() -> None:
    """The regression: a round moved switches; the moved switch's new leader makes the glue
    read the members (nothing changed) -> the follow-up round still runs `balance_settle`
    later."""
    glue, store, _ = make()
    lead(glue, store, 0.0)
    connect(glue, range(1, 7), ME, 0.0)  # 6/0/0
    glue.members_read(MembersRead(frozenset((ME, B, C))), 0.1)  # the leader changes' read
    glue.tick(2 * SETTLE)  # the connections' plan
    assert plans(store)[-1] == "switch connections changed"
    move = balancing.Move(balancer._election(1), ME, B)
    glue.plan_ready(PlanReady(balancing.Plan((move,), {}), "connections"), 6.0)
    assert store.named("_request") == [(1, B)]
    glue.move_seen(Move(owner=B, term=1, dpid=1, id=1, source=ME, target=B, step="taken"), 6.5)
    glue.leader_changed(1, B, 6.6)  # -> a member read
    assert store.calls[-1] == ("_members", ())
    glue.members_read(MembersRead(frozenset((ME, B, C))), 6.7)  # no membership change
    before = len(plans(store))
    glue.tick(6.5 + SETTLE - 0.1)
    assert len(plans(store)) == before
    glue.tick(6.5 + SETTLE)
    assert plans(store)[before:] == ["follow-up 1: connections may have changed"]


def test_switches_connecting_after_the_plan_are_planned_for_once_settled() -> None:
    glue, store, _ = make()
    lead(glue, store, 0.0)
    before = len(plans(store))
    connect(glue, range(1, 31), ME, 10.0)  # a second wave: all 30 first-candidate-won by us
    glue.tick(10.0 + SETTLE - 0.1)
    assert len(plans(store)) == before  # not quiet yet
    glue.tick(10.0 + SETTLE)
    assert plans(store)[before:] == ["switch connections changed"]


def test_a_stream_of_connections_plans_at_most_once_per_settle() -> None:
    """A switch connects every 0.1 s for 60 s (each first won by us: never balanced): the
    plans are `balance_settle` apart, the first after 2 * settle at the latest."""
    glue, store, _ = make()
    lead(glue, store, 0.0)
    before = len(plans(store))
    times: list[float] = []
    for i in range(600):
        now = 10.0 + i * 0.1
        connect(glue, range(i + 1, i + 2), ME, now)
        glue.tick(now)
        if len(plans(store)) > before + len(times):
            times.append(now)
            glue.plan_ready(PlanReady(balancing.Plan((), {}), "x"), now)  # computed, no moves
    assert times and times[0] <= 10.0 + 2 * SETTLE + 1e-6
    assert all(b - a >= SETTLE - 1e-6 for a, b in pairwise(times))
    assert len(times) <= 60 / SETTLE + 1


def test_no_plan_while_the_switches_are_balanced() -> None:
    """Connections change (a switch reconnects), the load stays within +-1: no plan (the
    check reads no store)."""
    glue, store, worker = make()
    lead(glue, store, 0.0)
    owners = [ME, B, C] * 10
    for dpid, owner in enumerate(owners, start=1):
        connect(glue, range(dpid, dpid + 1), owner, 10.0)
    calls = len(store.calls)
    glue.switch_changed(5, False, 20.0)
    glue.switch_changed(5, True, 20.5)
    glue.leader_changed(5, owners[4], 20.5)
    for i in range(100):
        glue.tick(20.5 + i * 0.1)
    assert not [name for name, _ in store.calls[calls:] if name != "_members"]  # no plan
    assert not worker.calls


def test_a_plan_waits_for_the_round_in_flight() -> None:
    glue, store, _ = make()
    lead(glue, store, 0.0)
    connect(glue, range(1, 7), ME, 10.0)
    move = balancing.Move(balancer._election(1), ME, B)
    glue.plan_ready(PlanReady(balancing.Plan((move,), {}), "x"), 10.0)  # a move in flight
    before = len(plans(store))
    glue.tick(20.0)
    assert len(plans(store)) == before
    glue.move_seen(Move(owner=B, term=1, dpid=1, id=1, source=ME, target=B, step="aborted"), 21.0)
    glue.tick(21.1)
    assert plans(store)[before:] == ["switch connections changed"]


def test_other_controllers_report_their_connections_once_per_settle() -> None:
    """Not leading: switch connections are reported to the leader (a non-forced request
    written on the app's store worker, behind the campaigns), at once, then at most once per
    `balance_settle`; the leader takes a report as a connection change."""
    glue, _, worker = make()
    for i in range(100):
        now = i * 0.1
        glue.switch_changed(i, True, now)
        glue.tick(now)
    assert [n for n, _ in worker.calls] == ["_report"] * 4  # 0, 3, 6, 9 s

    leader, store, _ = make()
    lead(leader, store, 0.0)
    connect(leader, range(1, 31), ME, 0.0)  # 30/0/0
    before = len(plans(store))
    leader.rebalance_asked(RebalanceAsked(Rebalance(owner=B, id=7, reason="b: switch "
                                                    "connections changed", forced=False)), 10.0)
    leader.members_read(MembersRead(frozenset((ME, B, C))), 10.0)
    leader.tick(10.0 + SETTLE)
    assert plans(store)[before:] == ["switch connections changed"]


def test_policy_first_never_plans_or_reports_by_itself() -> None:
    glue, store, worker = make(balancing.Policy.FIRST)
    glue.leadership(BalancerLeadership(True), 0.0)
    glue.members_read(MembersRead(frozenset((ME, B, C))), 0.0)
    connect(glue, range(1, 31), ME, 1.0)
    for i in range(200):
        glue.tick(1.0 + i * 0.1)
    assert not store.named("_compute") and not worker.calls


def test_no_report_overwrites_our_leaving_record() -> None:
    """`rebalance/request` is one record: once a controller said it leaves (a graceful stop),
    a report still queued from its switches disconnecting must not overwrite it."""
    glue, _, _ = make()
    written: list[Rebalance] = []
    glue.app.coord = SimpleNamespace(  # type: ignore[attr-defined]
        member_id=ME, topology=SimpleNamespace(put=lambda record, fenced: written.append(record)))
    glue._report()
    glue.leave()
    glue._report()
    assert [(r.leaving, r.reason) for r in written] == [
        (False, f"{ME}: switch connections changed"), (True, f"{ME} leaving")]


def test_a_forced_request_is_not_overwritten_by_a_report() -> None:
    """`coordctl balance` and a controller's report written a moment later are two records
    (a store may show the balancer only the newest value of a key), and the balancer plans at
    once for the forced one; a resync repeating both acts on neither again."""
    from coordination import connect as connect_store

    forced = Rebalance(owner="coordctl@h:1", id=8, reason="coordctl balance", forced=True)
    report = Rebalance(owner=B, id=9, reason="b: switch connections changed", forced=False)
    with connect_store("memory://forced-report", "w") as coord:
        coord.topology.put(forced, fenced=False)
        coord.topology.put(report, fenced=False)
        assert sorted(r.id for r in coord.topology.list("rebalance")) == [8, 9]

    glue, store, _ = make()
    lead(glue, store, 0.0)
    before = len(plans(store))
    glue.rebalance_asked(RebalanceAsked(forced), 10.0)
    glue.rebalance_asked(RebalanceAsked(report), 10.0)
    assert plans(store)[before:] == ["asked: coordctl balance"]
    glue.plan_ready(PlanReady(balancing.Plan((), {}), "asked"), 10.0)
    for record in (forced, report):  # the watch's snapshot after a reconnect
        glue.rebalance_asked(RebalanceAsked(record), 20.0)
    assert plans(store)[before:] == ["asked: coordctl balance"]
