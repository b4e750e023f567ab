"""Who should master which switch: balancing policies and the damping rule, pure (no I/O, no clock).

What: `plan()` takes the live members (id, advertised capacity), each election's current leader,
optionally who may lead each election (its candidates) and ordered preference lists, and returns
the moves that reach the policy's target. `should_rebalance()` decides, from a history of member
joins / leaves and the current time, whether an automatic rebalance may run now; `Coalescer`
turns a stream of switch connection changes into at most one plan per damping period, and
`is_balanced()` says when no plan is needed at all.
Why pure: every member computes the same plan from the same inputs (the store's view), so any
member can execute or check it, and it is tested without a store.

Policies:
- `first`: no moves; whoever the election picks (the first candidate) leads.
- `balanced`: every live member leads its capacity-weighted share of the elections, rounded to
  the floor or the ceiling of the exact share (largest remainder), so within +-1 of it. Current
  leaders are kept wherever their quota allows, so the number of moves is the minimum for any
  such target: the elections of dead or absent leaders plus each member's excess over its quota.
- `preferred`: an election with a preference list goes to the first live member of its list that
  is a candidate there (ONOS regions); the elections without one (no list, or nobody on it
  alive) are balanced among all live members as with `balanced`.

Capacity: a member's weight is its advertised `MemberInfo.capacity`. If no live member
advertises one (all 0), all weigh the same; otherwise a member advertising 0 is a standby that
balancing gives nothing (it still wins elections by failover when it is the only candidate).
"""

from __future__ import annotations

import enum
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field


class Policy(enum.Enum):
    """`[coordination] balance_policy` in ryu.conf."""

    FIRST = "first"
    BALANCED = "balanced"
    PREFERRED = "preferred"

    @classmethod
    def parse(cls, text: str) -> Policy:
        """The policy named `text`; ValueError with a one-line message otherwise."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            names = ", ".join(p.value for p in cls)
            raise ValueError(f"balance policy must be one of {names}, got {text!r}") from None


@dataclass(frozen=True)
class Member:
    """A live member as balancing sees it (from `MemberInfo`)."""

    member_id: str
    capacity: int = 0


@dataclass(frozen=True, order=True)
class Move:
    """Hand `election` over from `source` (None: no live leader) to `target`."""

    election: str
    source: str | None
    target: str


@dataclass(frozen=True)
class Plan:
    """The target assignment and the moves that reach it (sorted by election)."""

    moves: tuple[Move, ...]
    #: election -> member that should lead it (only elections with an eligible live member).
    target: Mapping[str, str]
    #: member -> how many elections balancing gives it (the ones with a preference excluded).
    quotas: Mapping[str, int] = field(default_factory=dict)
    #: Elections no live member may lead (no live candidate): left to the election.
    unassignable: tuple[str, ...] = ()

    def load(self) -> dict[str, int]:
        """member -> number of elections it leads once the plan is carried out."""
        out: dict[str, int] = defaultdict(int)
        for member in self.target.values():
            out[member] += 1
        return dict(out)


def weights(members: Iterable[Member]) -> dict[str, int]:
    """member -> weight: the advertised capacities, or 1 each if nobody advertises one."""
    members = list(members)
    if all(m.capacity <= 0 for m in members):
        return {m.member_id: 1 for m in members}
    return {m.member_id: max(m.capacity, 0) for m in members}


def quotas(
    total: int, weight: Mapping[str, int], current: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Split `total` elections by `weight`: each member gets the floor or the ceiling of its exact
    share `total * w / sum(w)`. The ceilings go first to members that currently lead more than
    their floor (fewer moves), then to the largest remainders, then by member id."""
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    live = {m: w for m, w in weight.items() if w > 0}
    if not live:
        return {m: 0 for m in weight}
    whole = sum(live.values())
    floor = {m: total * w // whole for m, w in live.items()}
    remainder = {m: total * w % whole for m, w in live.items()}
    spare = total - sum(floor.values())
    current = current or {}
    # Only members with a fractional share may round up (strictly within 1 of the share).
    order = sorted(
        (m for m in live if remainder[m]),
        key=lambda m: (current.get(m, 0) <= floor[m], -remainder[m], m),
    )
    out = {m: 0 for m in weight}
    out.update(floor)
    for m in order[:spare]:
        out[m] += 1
    return out


def capped_quotas(
    total: int, weight: Mapping[str, int], reach: Mapping[str, int],
    current: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """`quotas`, but a member may lead at most the `reach` elections it is a candidate in: one
    whose share is more gets its reach, and the rest is split among the others by weight
    (water-filling). Why: a controller still connecting to the switches (a candidate in few
    elections yet) would otherwise get a quota it cannot take, and the excess the others must
    shed would only move around among them."""
    fixed: dict[str, int] = {}
    while True:
        rest = {m: w for m, w in weight.items() if m not in fixed}
        out = quotas(max(total - sum(fixed.values()), 0), rest, current)
        over = [m for m in rest if out[m] > reach.get(m, 0)]
        if not over:
            return {**out, **fixed}
        for m in over:
            fixed[m] = reach.get(m, 0)


def plan(
    members: Iterable[Member],
    leaders: Mapping[str, str | None],
    policy: Policy = Policy.BALANCED,
    *,
    candidates: Mapping[str, Iterable[str]] | None = None,
    preferred: Mapping[str, Sequence[str]] | None = None,
    excluded: Iterable[str] = (),
) -> Plan:
    """The moves that bring `leaders` (election -> current leader or None) to `policy`'s target.

    `candidates`: election -> members that may lead it (connected to the switch); an election
    missing from it may be led by any live member. `preferred`: election -> ordered members
    (policy `preferred` only). `excluded`: live members balancing gives nothing (flapping, see
    `should_rebalance`); what they lead moves to the others."""
    live = {m.member_id: m for m in members}
    barred = set(excluded)
    eligible_members = {m: info for m, info in live.items() if m not in barred}
    if policy is Policy.FIRST or not eligible_members:
        return Plan((), {e: lead for e, lead in leaders.items() if lead in live})
    candidates = candidates or {}
    preferred = preferred or {}

    everyone = sorted(eligible_members)
    cache: dict[str, list[str]] = {}

    def allowed(election: str) -> list[str]:
        if election not in cache:
            names = candidates.get(election)
            cache[election] = everyone if names is None else sorted(
                {m for m in names if m in eligible_members})
        return cache[election]

    target: dict[str, str] = {}
    free: list[str] = []
    unassignable: list[str] = []
    for election in sorted(leaders):
        may = allowed(election)
        if not may:
            unassignable.append(election)
            continue
        pick = None
        if policy is Policy.PREFERRED:
            pick = next((m for m in preferred.get(election, ()) if m in may), None)
        if pick is not None:
            target[election] = pick
        else:
            free.append(election)

    weight = weights(eligible_members.values())
    quota: dict[str, int] = {}
    if candidates:
        # Members whose share is more than they can reach (still connecting) take all they
        # can first; the rest is balanced among the others.
        reach = _reach(free, allowed)
        capped = capped_quotas(len(free), weight, reach, _current(free, leaders, weight))
        saturated = {m for m, n in capped.items() if 0 < n == reach.get(m, 0) < len(free)}
        for election in free:
            takers = [m for m in allowed(election)
                      if m in saturated and quota.get(m, 0) < capped[m]]
            if takers:
                pick = leaders[election] if leaders[election] in takers else takers[0]
                target[election] = pick  # type: ignore[assignment]
                quota[pick] = quota.get(pick, 0) + 1  # type: ignore[index]
        free = [e for e in free if e not in target]
        weight = {m: w for m, w in weight.items() if m not in saturated}
        rest = capped_quotas(len(free), weight, _reach(free, allowed),
                             _current(free, leaders, weight))
    else:
        rest = quotas(len(free), weight, _current(free, leaders, weight))
    _assign(free, leaders, rest, allowed, target)
    quota.update(rest)

    moves = tuple(
        Move(e, leaders[e] if leaders[e] in live else None, m)
        for e, m in sorted(target.items())
        if leaders[e] != m
    )
    return Plan(moves, target, quota, tuple(unassignable))


def _reach(free: list[str], allowed: Callable[[str], list[str]]) -> dict[str, int]:
    """member -> how many of `free` it may lead."""
    out: dict[str, int] = defaultdict(int)
    for election in free:
        for member in allowed(election):
            out[member] += 1
    return out


def _current(free: list[str], leaders: Mapping[str, str | None],
             weight: Mapping[str, int]) -> dict[str, int]:
    """member (of `weight`) -> how many of `free` it leads now."""
    out: dict[str, int] = defaultdict(int)
    for election in free:
        leader = leaders[election]
        if leader in weight:
            out[leader] += 1  # type: ignore[index]
    return out


def _assign(
    free: list[str],
    leaders: Mapping[str, str | None],
    quota: Mapping[str, int],
    allowed: Callable[[str], list[str]],
    target: dict[str, str],
) -> None:
    """Keep current leaders within their quota, then fill the others' quotas (largest room
    first). An election none of whose candidates has room goes to its least-loaded candidate."""
    load: dict[str, int] = defaultdict(int)
    orphans: list[str] = []
    for election in free:  # sorted: the same elections are kept on every member
        leader = leaders[election]
        if leader is not None and leader in allowed(election) and load[leader] < quota[leader]:
            target[election] = leader
            load[leader] += 1
        else:
            orphans.append(election)
    # Most constrained elections first, so a candidate with few options is not crowded out.
    orphans.sort(key=lambda e: (len(allowed(e)), e))
    for election in orphans:
        may = allowed(election)
        room = [m for m in may if quota[m] - load[m] > 0]
        pool = room or may
        # Most room left first; over quota, the least loaded relative to its quota.
        best = min(pool, key=lambda m: (load[m] - quota[m], m))
        target[election] = best
        load[best] += 1


# ---- damping ---------------------------------------------------------------------------------


class Change(enum.Enum):
    JOINED = "joined"
    LEFT = "left"


@dataclass(frozen=True)
class MemberEvent:
    """A member joined or left the live set at time `t` (seconds, any monotonic clock)."""

    t: float
    member_id: str
    change: Change


@dataclass(frozen=True)
class Damping:
    """Knobs of `should_rebalance` (ryu.conf `balance_settle`, `balance_min_interval`,
    `balance_flap_count`, `balance_flap_window`)."""

    #: Membership must be quiet this long before an automatic rebalance.
    settle: float = 10.0
    #: At least this long between two automatic rebalances.
    min_interval: float = 60.0
    #: A member with this many joins/leaves within `flap_window` is flapping ...
    flap_count: int = 4
    #: ... and gets no switches from balancing until `flap_window` after its last change.
    flap_window: float = 300.0

    def __post_init__(self) -> None:
        for name in ("settle", "min_interval", "flap_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.flap_count < 2:
            raise ValueError(f"flap_count must be >= 2, got {self.flap_count!r}")


@dataclass(frozen=True)
class Decision:
    """Rebalance now or not; `at`: when to ask again (None: only after the next event)."""

    rebalance: bool
    at: float | None
    #: Members balancing must give nothing new (pass as `plan(excluded=...)`).
    suppressed: frozenset[str]
    reason: str


def suppressed_until(events: Sequence[MemberEvent], damping: Damping) -> dict[str, float]:
    """member -> time its flap suppression ends, for members that ever flapped: `flap_count`
    changes within `flap_window` make it flapping until `flap_window` after its last change."""
    by_member: dict[str, list[float]] = defaultdict(list)
    for event in sorted(events, key=lambda e: e.t):
        by_member[event.member_id].append(event.t)
    out: dict[str, float] = {}
    n = damping.flap_count
    for member, times in by_member.items():
        if any(times[i + n - 1] - times[i] <= damping.flap_window for i in range(len(times) - n + 1)):
            out[member] = times[-1] + damping.flap_window
    return out


def should_rebalance(
    events: Sequence[MemberEvent],
    now: float,
    last_rebalance: float | None,
    damping: Damping | None = None,
) -> Decision:
    """Whether an automatic rebalance may run at `now`.

    A rebalance is due when membership changed since `last_rebalance` (a join, a leave, or a
    flapping member's suppression ending). It runs once membership has been quiet for `settle`
    and at least `min_interval` after the previous one; otherwise `at` says when to ask again (one
    timer, no polling). Failover is not balancing: a dead leader's switches are taken over by
    their elections at once; balancing only evens the load out afterwards. On-demand rebalances
    (`coordctl balance`) skip this rule."""
    damping = damping or Damping()
    ends = suppressed_until(events, damping)
    suppressed = frozenset(m for m, end in ends.items() if end > now)
    since = float("-inf") if last_rebalance is None else last_rebalance
    changed = [e.t for e in events if since < e.t <= now]
    changed += [end for end in ends.values() if since < end <= now]
    future_ends = [end for end in ends.values() if end > now]
    if not changed:
        return Decision(False, min(future_ends, default=None), suppressed, "no membership change")
    quiet = max(e.t for e in events if e.t <= now) + damping.settle
    spaced = since + damping.min_interval
    earliest = max(quiet, spaced)
    if now >= earliest:
        return Decision(True, None, suppressed, f"{len(changed)} membership change(s)")
    why = "settling" if quiet >= spaced else "rebalanced recently"
    return Decision(False, earliest, suppressed, why)


@dataclass
class Coalescer:
    """Turns a stream of change notices into rare actions; pure (the caller passes the time).

    An action is due once the notices have been quiet for `quiet` seconds, or `max_delay`
    after the oldest notice not yet acted on if they never go quiet, and never within
    `spacing` of the previous action: however many notices arrive, at most one action per
    `spacing`. Why: switches connect in bursts (a fleet over seconds, a bridge dialling each
    controller in turn); one plan after the burst sees every candidate, one per burst costs
    little, and a burst that never ends still gets a plan every `max_delay`."""

    quiet: float
    max_delay: float
    spacing: float
    #: the oldest and the newest notice not yet acted on (None: nothing pending)
    first: float | None = None
    last: float | None = None
    #: the previous action
    acted_at: float | None = None

    def __post_init__(self) -> None:
        for name in ("quiet", "max_delay", "spacing"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    @property
    def pending(self) -> bool:
        return self.first is not None

    def notice(self, now: float) -> None:
        """Something changed at `now`."""
        if self.first is None:
            self.first = now
        self.last = now if self.last is None else max(self.last, now)

    def due_at(self) -> float | None:
        """When the pending notices call for an action (None: nothing pending)."""
        if self.first is None or self.last is None:
            return None
        at = min(self.last + self.quiet, self.first + self.max_delay)
        if self.acted_at is not None:
            at = max(at, self.acted_at + self.spacing)
        return at

    def due(self, now: float) -> bool:
        at = self.due_at()
        return at is not None and now >= at

    def acted(self, now: float, *, covered: bool = True) -> None:
        """An action ran at `now`; `covered`: it took every notice so far into account (else
        they stay pending, and only the spacing restarts)."""
        self.acted_at = now
        if covered:
            self.clear()

    def clear(self) -> None:
        """The pending notices need no action (the spacing is left as it was)."""
        self.first = self.last = None


def is_balanced(
    members: Iterable[Member],
    leaders: Mapping[str, str | None],
    policy: Policy = Policy.BALANCED,
    *,
    preferred: Mapping[str, Sequence[str]] | None = None,
) -> bool:
    """Whether `leaders` already meets `policy`'s target for `members` (`plan` would move
    nothing, whoever the candidates): every election led by a live member, the load within
    +-1 of the weighted share, preference lists honoured."""
    return not plan(members, leaders, policy, preferred=preferred).moves


def preference_lists(
    per_switch: Mapping[str, Sequence[str]],
    groups: Mapping[str, Iterable[str]],
    per_group: Mapping[str, Sequence[str]],
) -> dict[str, tuple[str, ...]]:
    """election -> ordered members, from per-switch lists and per-group lists (`groups`: group ->
    its elections). A per-switch list wins over its group's; a switch in two groups is an error."""
    out: dict[str, tuple[str, ...]] = {}
    owner: dict[str, str] = {}
    for group, elections in sorted(groups.items()):
        if group not in per_group:
            raise ValueError(f"group {group!r} has switches but no preference list")
        for election in elections:
            if election in owner:
                raise ValueError(
                    f"switch {election!r} is in groups {owner[election]!r} and {group!r}")
            owner[election] = group
            out[election] = tuple(per_group[group])
    for election, members in per_switch.items():
        out[election] = tuple(members)
    return out
