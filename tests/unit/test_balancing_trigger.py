"""The balancer's connection trigger, pure (coordination/balancing.py): `Coalescer` turns a stream
of switch connection changes into rare plans, `is_balanced` says when none is needed."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordination.balancing import (
    Coalescer,
    Member,
    Policy,
    capped_quotas,
    is_balanced,
    plan,
    quotas,
)

SETTLE = 3.0


def leader_side() -> Coalescer:
    """As the balancer configures it: quiet `settle`, at the latest 2 * settle, spaced settle."""
    return Coalescer(SETTLE, 2 * SETTLE, SETTLE)


def run(coalescer: Coalescer, notices: list[float], until: float, step: float = 0.1) -> list[float]:
    """Feed `notices` (sorted times) and tick every `step` up to `until`; the action times."""
    actions: list[float] = []
    pending = list(notices)
    for i in range(int(until / step) + 1):
        now = i * step
        while pending and pending[0] <= now:
            coalescer.notice(pending.pop(0))
        if coalescer.due(now):
            coalescer.acted(now)
            actions.append(now)
    return actions


def test_nothing_pending_nothing_due() -> None:
    c = leader_side()
    assert not c.pending and c.due_at() is None and not c.due(1e9)


def test_a_burst_is_one_action_once_quiet() -> None:
    c = leader_side()
    for t in (0.0, 0.5, 1.0, 1.2):
        c.notice(t)
    assert c.due_at() == pytest.approx(1.2 + SETTLE)
    assert not c.due(4.1) and c.due(4.2)
    c.acted(4.2)
    assert not c.pending and c.due_at() is None


def test_a_stream_that_never_goes_quiet_still_acts_after_max_delay() -> None:
    actions = run(leader_side(), [i * 0.5 for i in range(60)], until=40.0)  # 30 s of notices
    assert actions[0] == pytest.approx(2 * SETTLE)
    assert all(b - a >= SETTLE - 1e-9 for a, b in pairwise(actions))
    assert 29.5 <= actions[-1] <= 29.5 + SETTLE  # the last notices are acted on too


def test_an_action_not_covering_the_notices_keeps_them_pending_and_spaces_the_next() -> None:
    c = leader_side()
    c.notice(0.0)
    c.acted(1.0, covered=False)  # another plan ran meanwhile
    assert c.pending and c.due_at() == pytest.approx(1.0 + SETTLE)


def test_clear_drops_the_notices_without_spacing() -> None:
    c = leader_side()
    c.notice(0.0)
    c.clear()
    assert not c.pending and c.acted_at is None


def test_reporter_side_reports_at_once_then_once_per_spacing() -> None:
    actions = run(Coalescer(0.0, 0.0, SETTLE), [i * 0.1 for i in range(100)], until=20.0)
    assert actions[0] == 0.0
    assert all(b - a >= SETTLE - 1e-9 for a, b in pairwise(actions))
    assert actions == pytest.approx([0.0, 3.0, 6.0, 9.0, 12.0])  # 12: those after 9 s


def test_negative_durations_are_refused() -> None:
    with pytest.raises(ValueError, match="spacing"):
        Coalescer(1.0, 1.0, -1.0)


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=200),
       st.floats(0, 10), st.floats(0, 20), st.floats(0.1, 10))
def test_at_most_one_action_per_spacing_and_every_notice_acted_on(
        notices: list[float], quiet: float, max_delay: float, spacing: float) -> None:
    """Whatever the stream: actions are `spacing` apart, and every notice is followed by an
    action within max(max_delay, spacing) (+ a tick) of it."""
    notices = sorted(notices)
    step = 0.05
    until = 100 + quiet + max_delay + spacing + 1
    actions = run(Coalescer(quiet, max_delay, spacing), notices, until, step)
    assert all(b - a >= spacing - 1e-6 for a, b in pairwise(actions))
    bound = max(max_delay, spacing) + 2 * step
    for t in notices:
        assert any(t - step <= a <= t + bound for a in actions), (t, actions)


# ---- is_balanced ---------------------------------------------------------------------------

MEMBERS = [Member("a"), Member("b"), Member("c")]


def leaders(*owners: str | None) -> dict[str, str | None]:
    return {f"dpid-{i:016x}": owner for i, owner in enumerate(owners)}


@pytest.mark.parametrize(("owners", "expected"), [
    (("a", "b", "c", "a"), True),             # 2/1/1: within +-1
    (("a", "a", "b", "c", "a", "b"), False),  # 3/2/1: a's share is 2
    (("a", "a", "a", "b"), False),            # 3/1/0
    (("a", "b", None), False),                # a switch without a leader
    (("a", "b", "gone"), False),              # a dead leader
    ((), True),
])
def test_is_balanced_within_one(owners: tuple[str | None, ...], expected: bool) -> None:
    assert is_balanced(MEMBERS, leaders(*owners)) is expected


def test_is_balanced_weighs_capacities_and_honours_preferences() -> None:
    heavy = [Member("a", 2), Member("b", 1)]
    assert is_balanced(heavy, leaders("a", "a", "b"))
    assert not is_balanced(heavy, leaders("a", "b", "b"))
    prefs = {"dpid-0000000000000000": ("b",)}
    assert not is_balanced(MEMBERS, leaders("a", "b", "c"), Policy.PREFERRED, preferred=prefs)
    assert is_balanced(MEMBERS, leaders("b", "a", "c"), Policy.PREFERRED, preferred=prefs)
    assert is_balanced(MEMBERS, leaders("a", "a", "a"), Policy.FIRST)


# ---- a controller still connecting: quotas capped by what it can reach ---------------------


def test_capped_quotas_give_a_member_at_most_its_reach_and_split_the_rest() -> None:
    weight = {"a": 1, "b": 1, "c": 1, "d": 1}
    q = capped_quotas(1000, weight, {"a": 1000, "b": 1000, "c": 1000, "d": 12})
    assert q["d"] == 12 and sum(q.values()) == 1000 and max(q.values()) - min(
        v for m, v in q.items() if m != "d") <= 1
    assert capped_quotas(10, weight, dict.fromkeys(weight, 10)) == quotas(10, weight)
    assert capped_quotas(10, weight, {"a": 1, "b": 1}) == {"a": 1, "b": 1, "c": 0, "d": 0}


def test_a_joiner_connected_to_few_switches_takes_those_without_shuffling_the_others() -> None:
    """a, b, c lead 4 switches each; d has just joined and is a candidate of one: one move (to
    d), not a reshuffle of the excess the others could not hand to d."""
    members = [Member(m) for m in "abcd"]
    owners = {f"dpid-{i:016x}": "abc"[i // 4] for i in range(12)}
    candidates = {e: ["a", "b", "c"] + (["d"] if e == "dpid-0000000000000000" else [])
                  for e in owners}
    p = plan(members, owners, candidates=candidates)
    assert [(m.source, m.target) for m in p.moves] == [("a", "d")]
    assert sorted(p.load().values()) == [1, 3, 4, 4]
