"""The cluster's balancer in the mastership app: one per cluster, the leader of a reserved
election, carrying out `coordination.balancing` plans as planned handovers.

What: every controller campaigns in `balancer.BALANCER_ELECTION`; its leader
- learns membership changes pushed, never polled: a controller that starts writes the
  `rebalance/request` record (its join), and a controller that leaves changes the leaders of
  the switches it mastered, which this app's election listeners already report; either makes
  it read the member list once and diff it with the last one (join / leave events);
- applies the damping rule (`balancing.should_rebalance`) with one deadline, checked on the
  app's timer tick; `coordctl balance` (a forced request) skips it;
- learns switch connection changes pushed too: its own controller's SWITCH_UP / SWITCH_DOWN,
  and the other controllers' reports (each writes a non-forced `rebalance/request` record at
  most once per `balance_settle` while its switches connect or disconnect, after the
  campaigns it queued, so the candidacy is in the store when the balancer hears of it). A
  `balancing.Coalescer` turns them into at most one plan per `balance_settle`: once they have
  been quiet for `balance_settle`, at the latest `2 * balance_settle` after the first, never
  while a round is being computed or carried out, and not at all while the switches this
  controller is connected to are already balanced (`balancing.is_balanced` over the leaders
  its election listeners reported: no store work);
- computes the plan from the store (`balancer.gather` / `compute`, on its own store thread) and
  writes its moves as move records, at most `balance_max_moves` in flight; the next is written
  when one ends (the move records' watch). When a round has moved switches, it plans again
  `balance_settle` later (connections may have changed meanwhile), up to `MAX_ROUNDS` times.
The three deadlines (membership decision, follow-up round, connection plan) are kept apart, so
that one never cancels another.
The controllers named in the records carry the moves out (`handover_glue`).
With `balance_policy = first` nothing is planned automatically; `coordctl balance` still plans
with `balanced` rules if the policy is `first` (an operator asking wants a balance).

Logged: `BALANCE member=... moves=N reason='...' t=...` per plan, `BALANCE_SKIPPED member=...
switches=N` when connections changed but the load is balanced, `BALANCE_REPORT member=...` per
report, and `BALANCER member=... leading=true|false`.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import coordination
from coordination import balancing
from coordination.dispatch import SerialExecutor
from coordination.records import Move, Rebalance

from . import balancer, moves
from .balancer_inputs import BalancerLeadership, MembersRead, MoveAsked, PlanReady, RebalanceAsked
from .moves import election_name

if TYPE_CHECKING:
    from .app import Mastership

LOG = logging.getLogger("ryu_integration.mastership")
#: Follow-up plans (each `balance_settle` after the previous round ended) after rounds that
#: moved switches, at most (then: the next trigger).
MAX_ROUNDS = 5
#: Plans put off in a row because a live controller is connected to no switch (then: go on).
MAX_DEFERRALS = 5


class Balancer:
    """This controller's part in balancing: candidate always, balancer while leading."""

    def __init__(self, app: Mastership) -> None:
        self.app = app
        self.member_id = app.member_id
        self.settings = app.settings.balance
        self.leading = False
        self._store: SerialExecutor | None = None
        self._watch: Any = None
        self._events: list[balancing.MemberEvent] = []
        self._known: frozenset[str] | None = None
        self._capacity: dict[str, int] = {}
        self._last: float | None = None
        #: deadlines: the membership decision's, the follow-up round's (or a deferred plan's)
        self._member_at: float | None = None
        self._follow_at: float | None = None
        self._follow_reason = ""
        self._computing = False
        self._reading = False
        #: switch connection changes: planned on while leading, reported to the leader if not
        settle = self.settings.damping.settle
        self._connections = balancing.Coalescer(settle, 2 * settle, max(settle, 1.0))
        self._reports = balancing.Coalescer(0.0, 0.0, max(settle, 1.0))
        #: dpid -> its leader, for the switches connected to this controller (pushed by the
        #: election listeners; None: not seen yet)
        self._leaders: dict[int, str | None] = {}
        self._queue: collections.deque[balancing.Move] = collections.deque()
        self._in_flight: set[int] = set()
        self._rounds = 0
        self._moved = 0
        #: record key -> the id of the last request seen under it
        self._seen_requests: dict[str, int] = {}
        #: members that announced they leave (ignored in member reads while still listed)
        self._leaving: set[str] = set()
        self._deferrals = 0  # written on the balancer's thread only
        #: set once we told the balancer we leave: no report may overwrite that record
        self._left = False

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        coord = self.app.coord
        assert coord is not None
        self._store = SerialExecutor(f"mastership-balancer[{self.member_id}]")
        # the campaign on the app's store worker, in order with the switches' campaigns
        if self.app._worker is not None:
            self.app._worker.submit(self._join, coord)

    def _join(self, coord: coordination.Coordinator) -> None:
        try:
            coord.election(balancer.BALANCER_ELECTION).campaign(
                0, on_elected=lambda _lead: self.app._post(BalancerLeadership(True)),
                on_revoked=lambda _lead: self.app._post(BalancerLeadership(False)))
        except coordination.CoordinationError as exc:
            LOG.warning("mastership: joining the balancer election failed: %s", exc)
            return
        self._submit(self._announce, coord)

    def _announce(self, coord: coordination.Coordinator) -> None:
        try:
            self._watch = coord.topology.watch(self._on_request, kinds=["rebalance"])
            balancer.request_rebalance(coord, f"{self.member_id} joined", forced=False)
        except coordination.CoordinationError as exc:
            LOG.warning("mastership: announcing this controller to the balancer failed: %s",
                        exc)

    def leave(self) -> None:
        """A graceful stop, after the planned handovers: tell the balancer we are leaving
        (our member record goes only with the session, which no switch reports)."""
        coord = self.app.coord
        if coord is None or self.settings.policy is balancing.Policy.FIRST:
            return
        self._left = True
        try:
            balancer.request_rebalance(coord, f"{self.member_id} leaving", forced=False,
                                       leaving=True)
        except coordination.CoordinationError as exc:
            LOG.info("mastership: telling the balancer we leave failed: %s", exc)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._store is not None:
            self._store.stop(1.0)

    # ---- pushed inputs (event loop) ----------------------------------------------------------

    def _on_request(self, event: Any) -> None:  # the callback thread
        records = event.records if isinstance(event, coordination.Snapshot) else (event.record,)
        for record in records:
            if isinstance(record, Rebalance):
                self.app._post(RebalanceAsked(record))

    def leadership(self, ev: BalancerLeadership, now: float) -> None:
        self.leading = ev.leading
        LOG.info("BALANCER member=%s leading=%s t=%.6f", self.member_id,
                 str(ev.leading).lower(), time.time())
        self._queue.clear()
        self._in_flight.clear()
        self._known = None
        self._member_at = self._follow_at = None
        self._computing = False
        if ev.leading:
            if self._reports.pending:  # ours, not sent: ours to plan on now
                self._connections.notice(now)
            self._reports.clear()
            self._read_members()
        else:
            self._connections.clear()

    def rebalance_asked(self, ev: RebalanceAsked, now: float) -> None:
        record = ev.record
        if self._seen_requests.get(record.key) == record.id:
            return  # a snapshot (resync) repeating what we acted on
        self._seen_requests[record.key] = record.id
        if not self.leading:
            return
        if record.forced:
            self._plan(f"asked: {record.reason}", now, forced=True)
        elif record.leaving and self._known is not None and record.owner in self._known:
            self._known = self._known - {record.owner}
            self._leaving.add(record.owner)
            self._events.append(balancing.MemberEvent(now, record.owner, balancing.Change.LEFT))
            self._decide(now)
        else:  # a controller joined, or its switch connections changed
            if record.owner != self.member_id and self.settings.policy is not \
                    balancing.Policy.FIRST:
                self._connections.notice(now)
            self._read_members()

    def leader_changed(self, dpid: int, leader: str | None, now: float) -> None:
        """A switch connected to this controller changed leader (failover, a move):
        membership may have changed."""
        self._leaders[dpid] = leader
        if self.leading and not self._in_flight and not self._queue:
            self._read_members()

    def switch_changed(self, dpid: int, up: bool, now: float) -> None:
        """A switch connected to this controller (`up`) or disconnected: its candidates
        change, so the leader plans again (damped), and the others tell it."""
        if up:
            self._leaders.setdefault(dpid, None)
        else:
            self._leaders.pop(dpid, None)
        if self.settings.policy is balancing.Policy.FIRST:
            return
        (self._connections if self.leading else self._reports).notice(now)

    def members_read(self, ev: MembersRead, now: float) -> None:
        self._reading = False
        if not self.leading or ev.members is None:
            return
        # a member that announced it leaves may still be listed until its session ends
        self._leaving &= ev.members
        self._capacity = dict(ev.capacities)
        members = ev.members - self._leaving
        if self._known is None:  # just elected: look at the cluster once
            self._known = members
            self._events.append(balancing.MemberEvent(now, self.member_id,
                                                      balancing.Change.JOINED))
        else:
            for member in sorted(members - self._known):
                self._events.append(balancing.MemberEvent(now, member, balancing.Change.JOINED))
            for member in sorted(self._known - members):
                self._events.append(balancing.MemberEvent(now, member, balancing.Change.LEFT))
            self._known = members
        self._decide(now)

    def tick(self, now: float) -> None:
        if not self.leading:
            if self._reports.due(now):
                self._reports.acted(now)
                if self.app._worker is not None and self.app._running:
                    # behind the campaigns already queued: the leader reads them in the store
                    self.app._worker.submit(self._report)
            return
        if self._member_at is not None and now >= self._member_at:
            self._member_at = None
            self._decide(now)
        if self._computing or self._queue or self._in_flight:
            return  # one plan at a time; the next one sees this round's outcome
        if self._follow_at is not None and now >= self._follow_at:
            self._follow_at = None
            self._plan_unless_balanced(self._follow_reason, now)
        elif self._known is not None and self._connections.due(now):
            self._plan_unless_balanced("switch connections changed", now, connections=True)

    def plan_ready(self, ev: PlanReady, now: float) -> None:
        self._computing = False
        if self.leading and ev.deferred:
            LOG.info("BALANCE member=%s deferred t=%.6f reason=%r", self.member_id, time.time(),
                     ev.reason)
            self._follow_at = now + max(self.settings.damping.settle, 1.0)
            self._follow_reason = f"deferred: {ev.reason}"
            return
        if not self.leading or ev.plan is None:
            return
        moves_ = [m for m in ev.plan.moves if m.source is not None]  # no leader: the election
        LOG.info("BALANCE member=%s moves=%d load=%s t=%.6f reason=%r", self.member_id,
                 len(moves_), dict(sorted(ev.plan.load().items())), time.time(), ev.reason)
        self._queue = collections.deque(moves_)
        self._moved = 0
        self._next(now)

    def move_asked(self, ev: MoveAsked, now: float) -> None:
        if not ev.ok:
            self._in_flight.discard(ev.dpid)
            self._next(now)

    def move_seen(self, record: Move | None, now: float | None = None) -> None:
        """A move record changed: one of ours may have ended."""
        now = time.monotonic() if now is None else now
        if record is None or record.dpid not in self._in_flight \
                or record.step not in moves.FINAL_STEPS:
            return
        self._in_flight.discard(record.dpid)
        self._moved += record.step == "taken"
        self._next(now)

    # ---- internals -----------------------------------------------------------------------------

    def _decide(self, now: float) -> None:
        if self.settings.policy is balancing.Policy.FIRST:
            return
        decision = balancing.should_rebalance(self._events, now, self._last,
                                              self.settings.damping)
        if decision.rebalance:
            self._last = now
            self._rounds = 0
            self._plan(decision.reason, now, excluded=decision.suppressed)
        else:
            self._member_at = decision.at  # the follow-up and connection deadlines stay

    def _excluded(self, now: float) -> frozenset[str]:
        """The flapping members (`balancing.should_rebalance`'s `suppressed`)."""
        ends = balancing.suppressed_until(self._events, self.settings.damping)
        return frozenset(m for m, end in ends.items() if end > now)

    def _plan_unless_balanced(self, reason: str, now: float, *,
                              connections: bool = False) -> None:
        """Switch connections changed and settled (`connections`), or a round ended: plan,
        unless the switches this controller sees are balanced already (checked here, without
        reading the store, so a steady state costs no store work)."""
        if self._known is None:
            self._plan(reason, now, connections=connections)
            return
        excluded = self._excluded(now)
        members = [balancing.Member(m, self._capacity.get(m, 0)) for m in sorted(self._known)
                   if m not in excluded]
        leaders = {election_name(dpid): lead for dpid, lead in self._leaders.items()}
        if balancing.is_balanced(members, leaders, self.settings.policy,
                                 preferred=self.settings.preferred):
            if connections:
                self._connections.clear()
            LOG.info("BALANCE_SKIPPED member=%s switches=%d t=%.6f reason=%r", self.member_id,
                     len(leaders), time.time(), f"{reason}; balanced")
            return
        self._plan(reason, now, excluded=excluded, connections=connections)

    def _plan(self, reason: str, now: float, *, forced: bool = False,
              excluded: frozenset[str] = frozenset(), connections: bool = False) -> None:
        settings = self.settings
        if forced and settings.policy is balancing.Policy.FIRST:
            settings = replace(settings, policy=balancing.Policy.BALANCED)
        # A connection plan covers the connection changes noticed so far (they have been
        # quiet for `balance_settle`); any other plan only restarts their spacing, since a
        # candidacy noticed just before it may not be in the store yet.
        self._connections.acted(now, covered=connections)
        self._computing = self._submit(self._compute, settings, excluded, reason)

    def _next(self, now: float) -> None:
        while self._queue and len(self._in_flight) < self.settings.max_moves:
            move = self._queue.popleft()
            dpid = balancer.dpid_of(move.election)
            self._in_flight.add(dpid)
            self._submit(self._request, dpid, move.target)
        if not self._queue and not self._in_flight and self._moved and \
                self._rounds < MAX_ROUNDS:
            # plan again once connections had `balance_settle` to change (one deadline)
            self._rounds += 1
            self._moved = 0
            self._follow_at = now + self.settings.damping.settle
            self._follow_reason = f"follow-up {self._rounds}: connections may have changed"

    def _read_members(self) -> None:
        if not self._reading:
            self._reading = True
            self._submit(self._members)

    def _submit(self, func: Callable[..., None], *args: Any) -> bool:
        if self._store is not None and self.app._running:
            self._store.submit(func, *args)
            return True
        return False

    # ---- store work (the balancer's thread) ------------------------------------------------------

    def _members(self) -> None:
        coord = self.app.coord
        assert coord is not None
        try:
            infos = coord.members()
            controllers = {c.member_id for c in
                           coord.election(balancer.BALANCER_ELECTION).candidates()}
            live = frozenset(controllers & set(infos))
            self.app._post(MembersRead(live, {m: infos[m].capacity for m in live}))
        except coordination.CoordinationError as exc:
            LOG.info("mastership: reading the members failed: %s", exc)
            self.app._post(MembersRead(None))

    def _report(self) -> None:
        """Tell the balancer that our switch connections changed (the app's store worker)."""
        coord = self.app.coord
        assert coord is not None
        if self._left:
            return  # our switches go with us; the leaving record says so
        try:
            balancer.request_rebalance(coord, f"{self.member_id}: switch connections changed",
                                       forced=False)
            LOG.info("BALANCE_REPORT member=%s t=%.6f", self.member_id, time.time())
        except coordination.CoordinationError as exc:
            LOG.info("mastership: reporting switch connections to the balancer failed: %s",
                     exc)

    def _compute(self, settings: balancer.BalanceSettings, excluded: frozenset[str],
                 reason: str) -> None:
        coord = self.app.coord
        assert coord is not None
        try:
            inputs = balancer.gather(coord)
            LOG.info("BALANCE_INPUTS member=%s controllers=%s switches=%d t=%.6f",
                     self.member_id, ",".join(m.member_id for m in inputs.members),
                     len(inputs.leaders), time.time())
            connected = {m for names in inputs.candidates.values() for m in names}
            waiting = sorted(m.member_id for m in inputs.members
                             if m.member_id not in connected and m.member_id not in excluded)
            if inputs.leaders and waiting and self._deferrals < MAX_DEFERRALS:
                # a controller that has just joined, not yet connected to any switch: a plan
                # now would leave it out; the rest of its connections follow within seconds
                self._deferrals += 1
                self.app._post(PlanReady(None, f"{', '.join(waiting)} connected to no switch "
                                               f"yet", deferred=True))
                return
            self._deferrals = 0
            plan = balancer.compute(inputs, settings, excluded)
        except coordination.CoordinationError as exc:
            LOG.warning("mastership: computing a balance plan failed: %s", exc)
            plan = None
        self.app._post(PlanReady(plan, reason))

    def _request(self, dpid: int, target: str) -> None:
        coord = self.app.coord
        assert coord is not None
        try:
            moves.request_move(coord, dpid, target, writer=self.member_id)
            ok = True
        except coordination.CoordinationError as exc:
            LOG.info("mastership: balancing %016x to %s: %s", dpid, target, exc)
            ok = False
        self.app._post(MoveAsked(dpid, ok))
