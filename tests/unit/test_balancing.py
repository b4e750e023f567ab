"""Balancing policies and the damping rule (coordination/balancing.py): properties over random
inputs (hypothesis) plus the cases the issue names."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordination.balancing import (
    Change,
    Damping,
    Member,
    MemberEvent,
    Move,
    Policy,
    plan,
    preference_lists,
    quotas,
    should_rebalance,
    suppressed_until,
    weights,
)

# ---- strategies --------------------------------------------------------------------------

member_ids = st.sampled_from([f"c{i}" for i in range(8)])


@st.composite
def clusters(draw, *, capacities: bool = True):
    """(live members, leaders): some leaders dead or absent."""
    names = draw(st.lists(member_ids, min_size=1, max_size=6, unique=True))
    if capacities and draw(st.booleans()):
        caps = [draw(st.integers(0, 5)) for _ in names]
    else:
        caps = [0] * len(names)
    members = [Member(n, c) for n, c in zip(names, caps, strict=True)]
    n = draw(st.integers(0, 120))
    leader_pool = st.one_of(st.none(), st.sampled_from(names), st.just("dead"))
    leaders = {f"sw{i:04d}": draw(leader_pool) for i in range(n)}
    return members, leaders


def share(election_count: int, member: str, members: list[Member]) -> Fraction:
    w = weights(members)
    total = sum(w.values())
    return Fraction(election_count * w[member], total) if total else Fraction(0)


# ---- balanced ----------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(clusters())
def test_balanced_load_is_within_one_of_the_weighted_share(cluster):
    members, leaders = cluster
    p = plan(members, leaders, Policy.BALANCED)
    load = p.load()
    w = weights(members)
    assert set(p.target) == set(leaders)  # every election gets a live leader
    for m in members:
        got = load.get(m.member_id, 0)
        exact = share(len(leaders), m.member_id, members)
        assert abs(got - exact) < 1, (m, got, exact)
        if w[m.member_id] == 0:
            assert got == 0  # a capacity-0 standby next to members that advertise one


def _kept_max(members: list[Member], leaders: dict[str, str | None]) -> int:
    """Most elections that can keep their leader under any quota within 1 of the shares,
    computed independently of the implementation: floors, plus one more for as many members
    with a fractional share that lead more than their floor as there are spare elections."""
    w = weights(members)
    total, n = sum(w.values()), len(leaders)
    current = {m.member_id: sum(1 for x in leaders.values() if x == m.member_id) for m in members}
    floors = {m: n * wm // total for m, wm in w.items() if wm}
    spare = n - sum(floors.values())
    fractional_over = sum(1 for m in floors if (n * w[m]) % total and current[m] > floors[m])
    kept = sum(min(current[m], floors[m]) for m in floors)
    return kept + min(spare, fractional_over)


@settings(max_examples=400, deadline=None)
@given(clusters())
def test_balanced_moves_are_minimal_and_keep_current_leaders(cluster):
    members, leaders = cluster
    p = plan(members, leaders, Policy.BALANCED)
    assert len(p.moves) == len(leaders) - _kept_max(members, leaders)
    live = {m.member_id for m in members}
    for move in p.moves:
        assert move.target in live and move.target != leaders[move.election]
        assert move.source == (leaders[move.election] if leaders[move.election] in live else None)
    assert {m.election for m in p.moves} == {e for e, t in p.target.items() if leaders[e] != t}


@settings(max_examples=300, deadline=None)
@given(clusters(), st.randoms(use_true_random=False))
def test_plan_is_deterministic_whatever_the_input_order(cluster, rnd):
    members, leaders = cluster
    shuffled_members = members[:]
    rnd.shuffle(shuffled_members)
    items = list(leaders.items())
    rnd.shuffle(items)
    a = plan(members, leaders, Policy.BALANCED)
    b = plan(shuffled_members, dict(items), Policy.BALANCED)
    assert a.moves == b.moves and dict(a.target) == dict(b.target)


@settings(max_examples=300, deadline=None)
@given(clusters())
def test_a_balanced_cluster_needs_no_moves(cluster):
    members, leaders = cluster
    first = plan(members, leaders, Policy.BALANCED)
    again = plan(members, dict(first.target), Policy.BALANCED)
    assert again.moves == ()


def test_issue_example_three_members_thousand_switches():
    """Today: 994 / 6 / 0. Balanced: 334 / 333 / 333, moving only what must move."""
    members = [Member("c1"), Member("c2"), Member("c3")]
    leaders = {f"sw{i:04d}": "c1" for i in range(994)} | {f"sw{i:04d}": "c2"
                                                          for i in range(994, 1000)}
    p = plan(members, leaders, Policy.BALANCED)
    assert sorted(p.load().values()) == [333, 333, 334]
    assert p.load()["c1"] == 334  # the extra one stays where it already is
    assert len(p.moves) == 994 - 334 and all(m.source == "c1" for m in p.moves)


def test_capacity_weights_the_share():
    members = [Member("big", 3), Member("small", 1)]
    leaders = {f"sw{i}": None for i in range(8)}
    assert plan(members, leaders).load() == {"big": 6, "small": 2}


def test_first_policy_moves_nothing():
    members = [Member("c1"), Member("c2")]
    leaders = {"sw1": "c1", "sw2": "c1", "sw3": "gone"}
    p = plan(members, leaders, Policy.FIRST)
    assert p.moves == () and dict(p.target) == {"sw1": "c1", "sw2": "c1"}


def test_candidates_restrict_who_may_lead():
    members = [Member("c1"), Member("c2"), Member("c3")]
    leaders = {f"sw{i}": "c1" for i in range(6)}
    candidates = {f"sw{i}": ["c1", "c2"] for i in range(6)} | {"sw0": ["c1"]}
    p = plan(members, leaders, candidates=candidates)
    assert p.target["sw0"] == "c1"
    assert "c3" not in p.load()
    assert all(p.target[e] in candidates[e] for e in leaders)
    # Nobody live may lead it: left to the election.
    q = plan(members, {"swX": None}, candidates={"swX": ["gone"]})
    assert q.unassignable == ("swX",) and q.moves == ()


@settings(max_examples=200, deadline=None)
@given(clusters(), st.data(), st.randoms(use_true_random=False))
def test_targets_are_always_allowed_candidates(cluster, data, rnd):
    members, leaders = cluster
    names = [m.member_id for m in members]
    patterns = data.draw(st.lists(st.lists(st.sampled_from(names), unique=True), min_size=1,
                                  max_size=5))
    candidates = {e: rnd.choice(patterns) for e in leaders}
    p = plan(members, leaders, candidates=candidates)
    for e, m in p.target.items():
        assert m in candidates[e]
    assert set(p.unassignable) == {e for e, c in candidates.items() if not c}


def test_excluded_member_gets_nothing_and_loses_what_it_had():
    members = [Member("c1"), Member("c2"), Member("flappy")]
    leaders = {f"sw{i}": "flappy" for i in range(4)}
    p = plan(members, leaders, excluded={"flappy"})
    assert "flappy" not in p.load() and len(p.moves) == 4


# ---- preferred ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(clusters(), st.data(), st.randoms(use_true_random=False))
def test_preferred_lists_are_honoured_while_a_preferred_member_lives(cluster, data, rnd):
    members, leaders = cluster
    everyone = [f"c{i}" for i in range(8)]
    patterns = data.draw(st.lists(st.lists(st.sampled_from(everyone), unique=True, max_size=3),
                                  min_size=1, max_size=5))
    preferred = {e: rnd.choice(patterns) for e in leaders if rnd.random() < 0.6}
    p = plan(members, leaders, Policy.PREFERRED, preferred=preferred)
    live = [m.member_id for m in members]
    free = []
    for e in leaders:
        first_live = next((m for m in preferred.get(e, ()) if m in live), None)
        if first_live is not None:
            assert p.target[e] == first_live
        else:
            free.append(e)
    # The rest is balanced on its own.
    load = {m: sum(1 for e in free if p.target[e] == m) for m in live}
    for m in members:
        assert abs(load[m.member_id] - share(len(free), m.member_id, members)) < 1


def test_preference_lists_from_switches_and_groups():
    lists = preference_lists(
        {"sw1": ["c3"]},
        {"edge": ["sw1", "sw2"], "core": ["sw9"]},
        {"edge": ["c1", "c2"], "core": ["c2"]},
    )
    assert lists == {"sw1": ("c3",), "sw2": ("c1", "c2"), "sw9": ("c2",)}
    with pytest.raises(ValueError, match="in groups"):
        preference_lists({}, {"a": ["sw1"], "b": ["sw1"]}, {"a": ["c1"], "b": ["c1"]})
    with pytest.raises(ValueError, match="no preference list"):
        preference_lists({}, {"a": ["sw1"]}, {})


def test_policy_parse():
    assert Policy.parse(" Balanced ") is Policy.BALANCED
    with pytest.raises(ValueError, match="one of first, balanced, preferred"):
        Policy.parse("roundrobin")


def test_quotas_round_towards_current_leaders():
    # 4 elections, 3 equal members: shares 4/3 each, one gets 2: the one leading 2 now.
    assert quotas(4, {"a": 1, "b": 1, "c": 1}, {"c": 2}) == {"a": 1, "b": 1, "c": 2}
    assert quotas(4, {"a": 1, "b": 1, "c": 1}) == {"a": 2, "b": 1, "c": 1}
    assert quotas(3, {"a": 0, "b": 0}) == {"a": 0, "b": 0}
    with pytest.raises(ValueError):
        quotas(-1, {"a": 1})


# ---- damping -----------------------------------------------------------------------------


def ev(t: float, member: str, change: Change = Change.JOINED) -> MemberEvent:
    return MemberEvent(t, member, change)


def test_join_waits_for_settle_then_rebalances_once():
    d = Damping(settle=10, min_interval=60)
    events = [ev(100, "c4")]
    early = should_rebalance(events, 105, last_rebalance=0, damping=d)
    assert not early.rebalance and early.at == 110
    due = should_rebalance(events, 110, last_rebalance=0, damping=d)
    assert due.rebalance
    assert not should_rebalance(events, 111, last_rebalance=110, damping=d).rebalance


def test_min_interval_spaces_rebalances():
    d = Damping(settle=1, min_interval=60)
    decision = should_rebalance([ev(100, "c5")], 102, last_rebalance=90, damping=d)
    assert not decision.rebalance and decision.at == 150
    assert decision.reason == "rebalanced recently"


def test_a_flapping_member_is_suppressed_until_its_window_passes():
    d = Damping(settle=1, min_interval=1, flap_count=4, flap_window=100)
    events = [ev(t, "flappy", c) for t, c in
              [(0, Change.JOINED), (5, Change.LEFT), (10, Change.JOINED), (15, Change.LEFT),
               (20, Change.JOINED)]]
    assert suppressed_until(events, d) == {"flappy": 120}
    now = should_rebalance(events, 30, last_rebalance=None, damping=d)
    assert now.rebalance and now.suppressed == {"flappy"}
    later = should_rebalance(events, 50, last_rebalance=30, damping=d)
    assert not later.rebalance and later.at == 120  # one timer: when suppression ends
    end = should_rebalance(events, 121, last_rebalance=30, damping=d)
    assert end.rebalance and end.suppressed == frozenset()


def test_no_change_no_rebalance():
    d = Damping()
    assert not should_rebalance([], 1000, None, d).rebalance
    assert should_rebalance([], 1000, None, d).at is None
    assert not should_rebalance([ev(5, "a")], 1000, last_rebalance=6, damping=d).rebalance


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1000), member_ids, st.sampled_from(Change)),
                max_size=200),
       st.floats(0.5, 30), st.floats(1, 120))
def test_no_storm_whatever_the_events(raw, settle, min_interval):
    """A driver that asks at every event and whenever `at` says rebalances at most once per
    `min_interval`, and never while membership is unsettled."""
    d = Damping(settle=settle, min_interval=min_interval)
    events = sorted((MemberEvent(t, m, c) for t, m, c in raw), key=lambda e: e.t)
    checks = sorted({e.t for e in events})
    last: float | None = None
    done: list[float] = []
    pending = list(checks)
    while pending:
        now = pending.pop(0)
        seen = [e for e in events if e.t <= now]
        decision = should_rebalance(seen, now, last, d)
        if decision.rebalance:
            assert last is None or now - last >= min_interval - 1e-9
            assert now - max(e.t for e in seen) >= settle - 1e-9
            done.append(now)
            last = now
            decision = should_rebalance(seen, now, last, d)  # and when to ask next
            assert not decision.rebalance
        if decision.at is not None and decision.at > now:
            pending = sorted(set(pending) | {decision.at})
        assert len(done) < 1000
    if done and events:
        span = done[-1] - done[0]
        assert len(done) <= span / min_interval + 1 + 1e-9
    # Following `at`, the driver has nothing left to do once everything settled.
    if events:
        assert not should_rebalance(events, 10_000, last, d).rebalance


def test_damping_rejects_bad_values():
    with pytest.raises(ValueError, match="flap_count"):
        Damping(flap_count=1)
    with pytest.raises(ValueError, match="settle"):
        Damping(settle=-1)


def test_large_plan_is_cheap_enough_for_every_member_to_compute():
    """5,000 switches x 5 members, all on one: the plan is one pass (no timing asserted)."""
    members = [Member(f"c{i}") for i in range(5)]
    leaders = {f"sw{i:05d}": "c0" for i in range(5000)}
    p = plan(members, leaders)
    assert sorted(p.load().values()) == [1000] * 5
    assert len(p.moves) == 4000
    assert all(m.source == "c0" for m in p.moves) and list(p.moves) == sorted(p.moves)
    assert Move("sw04999", "c0", p.target["sw04999"]) in p.moves
