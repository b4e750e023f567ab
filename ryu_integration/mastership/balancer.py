"""Balancing switches across controllers: the store side, shared by the app and `coordctl`.

What: `BalanceSettings` (the `balance_*` options of ryu.conf, parsed and validated),
`gather()` (the live controllers, every switch's leader and candidates, read from the store
through the public API), `compute()` (`coordination.balancing.plan` over them), and
`request_rebalance()` (the `rebalance/request` and `rebalance/forced` records the cluster's
balancer watches).
Why framework-free: `coordctl balance --dry-run` prints the very plan the balancer would carry
out, from the same code, without Ryu or os-ken. The balancer itself (one per cluster: the
leader of the reserved election `BALANCER_ELECTION`) is `mastership/balancer_glue.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from coordination import balancing
from coordination.api import Coordinator
from coordination.errors import ConfigurationError
from coordination.names import shown
from coordination.records import Rebalance

from .moves import new_move_id, parse_dpid

#: The reserved election whose leader is the cluster's balancer. Every controller running the
#: mastership app campaigns in it, so its candidates are the controllers (not observers such
#: as coordctl). It is not a switch: its name does not start with `dpid-`.
BALANCER_ELECTION = "balancer"
DPID_PREFIX = "dpid-"


@dataclass(frozen=True)
class BalanceSettings:
    """`balance_*` options, resolved (docs/balancing.md)."""

    policy: balancing.Policy = balancing.Policy.FIRST
    #: election -> ordered member ids (per-switch lists and group lists merged)
    preferred: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    damping: balancing.Damping = field(default_factory=balancing.Damping)
    max_moves: int = 32


def _pairs(option: str, lines: Iterable[str]) -> list[tuple[str, list[str]]]:
    out = []
    for line in lines:
        name, sep, rest = str(line).partition("=")
        items = [item.strip() for item in rest.split(",") if item.strip()]
        if not sep or not name.strip() or not items:
            raise ConfigurationError(f"[coordination] {option}: {shown(line)} is not "
                                     f"NAME=item,item,...")
        out.append((name.strip(), items))
    return out


def parse_balance(policy: str, preferred: Sequence[str], groups: Sequence[str],
                  damping: balancing.Damping, max_moves: int) -> BalanceSettings:
    """Validate the `balance_*` options; one-line ConfigurationError naming the option."""
    try:
        chosen = balancing.Policy.parse(policy)
    except ValueError as exc:
        raise ConfigurationError(f"[coordination] balance_policy: {exc}") from None
    members_of_group: dict[str, list[str]] = {}
    for group, dpids in _pairs("balance_group", groups or ()):
        if group in members_of_group:
            raise ConfigurationError(f"[coordination] balance_group: group {shown(group)} is "
                                     f"given twice")
        try:
            members_of_group[group] = [_election(parse_dpid(d)) for d in dpids]
        except ConfigurationError as exc:
            raise ConfigurationError(f"[coordination] balance_group {group}: {exc}") from None
    per_switch: dict[str, list[str]] = {}
    per_group: dict[str, list[str]] = {}
    for name, members in _pairs("balance_preferred", preferred or ()):
        if name.startswith("@"):
            if name[1:] not in members_of_group:
                raise ConfigurationError(f"[coordination] balance_preferred: unknown group "
                                         f"{shown(name[1:])} (declare it with balance_group)")
            per_group[name[1:]] = members
        else:
            try:
                per_switch[_election(parse_dpid(name))] = members
            except ConfigurationError as exc:
                raise ConfigurationError(f"[coordination] balance_preferred: {exc}") from None
    try:
        lists = balancing.preference_lists(per_switch, members_of_group, per_group)
    except ValueError as exc:
        raise ConfigurationError(f"[coordination] balance_group: {exc}") from None
    return BalanceSettings(chosen, lists, damping, max_moves)


def _election(dpid: int) -> str:
    return f"{DPID_PREFIX}{dpid:016x}"


@dataclass(frozen=True)
class Inputs:
    """What a plan is computed from, as read from the store."""

    members: tuple[balancing.Member, ...]
    leaders: Mapping[str, str | None]
    candidates: Mapping[str, tuple[str, ...]]


def gather(coord: Coordinator) -> Inputs:
    """The live controllers (candidates of `BALANCER_ELECTION` with a member record), each
    switch election's leader and candidates."""
    infos = coord.members()
    controllers = {c.member_id for c in coord.election(BALANCER_ELECTION).candidates()}
    members = tuple(sorted((balancing.Member(mid, infos[mid].capacity)
                            for mid in controllers if mid in infos),
                           key=lambda m: m.member_id))
    names = [n for n in coord.elections() if n.startswith(DPID_PREFIX)]
    leads = coord.read_leaders(names)
    leaders = {n: (lead.member_id if lead is not None else None) for n, lead in leads.items()}
    candidates = {n: tuple(c.member_id for c in coord.election(n).candidates()) for n in names}
    return Inputs(members, leaders, candidates)


def compute(inputs: Inputs, settings: BalanceSettings,
            excluded: Iterable[str] = ()) -> balancing.Plan:
    """The plan for `inputs` under `settings`' policy (`first` -> `balanced` when asked on
    demand is the caller's choice)."""
    return balancing.plan(inputs.members, inputs.leaders, settings.policy,
                          candidates=inputs.candidates, preferred=settings.preferred,
                          excluded=excluded)


def request_rebalance(coord: Coordinator, reason: str, *, forced: bool,
                      leaving: bool = False) -> Rebalance:
    """Ask the cluster's balancer to rebalance (`forced`: now, skipping the damping rule;
    `leaving`: this member is about to leave)."""
    record = Rebalance(owner=coord.member_id, id=new_move_id(), reason=reason, forced=forced,
                       leaving=leaving)
    coord.topology.put(record, fenced=False)
    return record


def dpid_of(election: str) -> int:
    return int(election[len(DPID_PREFIX):], 16)
