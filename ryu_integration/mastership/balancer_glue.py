"""The cluster's balancer in the mastership app: one per cluster, the leader of a reserved
election, carrying out `coordination.balancing` plans as planned handovers.

What: every controller campaigns in `balancer.BALANCER_ELECTION`; its leader
- learns membership changes pushed, never polled: a controller that starts writes the
  `rebalance/request` record (its join), and a controller that leaves changes the leaders of
  the switches it mastered, which this app's election listeners already report; either makes
  it read the member list once and diff it with the last one (join / leave events);
- applies the damping rule (`balancing.should_rebalance`) with ONE deadline, checked on the
  app's timer tick; `coordctl balance` (a forced request) skips it;
- computes the plan from the store (`balancer.gather` / `compute`, on its own store thread) and
  writes its moves as move records, at most `balance_max_moves` in flight; the next is written
  when one ends (the move records' watch). When a round has moved switches, it plans again
  `balance_settle` later (connections may have changed meanwhile), up to `MAX_ROUNDS` times.
The controllers named in the records carry the moves out (`handover_glue`).
With `balance_policy = first` nothing is planned automatically; `coordctl balance` still plans
with `balanced` rules if the policy is `first` (an operator asking wants a balance).

Logged: `BALANCE member=... moves=N reason='...' t=...` per plan, and `BALANCER member=...
leading=true|false`.
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

from .. import balancer, moves
from .balancer_inputs import BalancerLeadership, MembersRead, MoveAsked, PlanReady, RebalanceAsked

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
        self._last: float | None = None
        self._at: float | None = None
        self._reading = False
        self._queue: collections.deque[balancing.Move] = collections.deque()
        self._in_flight: set[int] = set()
        self._rounds = 0
        self._moved = 0
        self._seen_request: int | None = None
        #: members that announced they leave (ignored in member reads while still listed)
        self._leaving: set[str] = set()
        self._retry = False
        self._deferrals = 0  # written on the balancer's thread only

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
        self._at = None
        if ev.leading:
            self._read_members()

    def rebalance_asked(self, ev: RebalanceAsked, now: float) -> None:
        record = ev.record
        if record.id == self._seen_request:
            return
        self._seen_request = record.id
        if not self.leading:
            return
        if record.forced:
            self._plan(f"asked: {record.reason}", forced=True)
        elif record.leaving and self._known is not None and record.owner in self._known:
            self._known = self._known - {record.owner}
            self._leaving.add(record.owner)
            self._events.append(balancing.MemberEvent(now, record.owner, balancing.Change.LEFT))
            self._decide(now)
        else:
            self._read_members()

    def leader_changed(self) -> None:
        """A switch changed leader (failover, a move): membership may have changed."""
        if self.leading and not self._in_flight and not self._queue:
            self._read_members()

    def members_read(self, ev: MembersRead, now: float) -> None:
        self._reading = False
        if not self.leading or ev.members is None:
            return
        # a member that announced it leaves may still be listed until its session ends
        self._leaving &= ev.members
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
        if self._at is not None and now >= self._at:
            self._at = None
            if self._retry:
                self._retry = False
                self._plan(f"follow-up {self._rounds}: connections may have changed")
            else:
                self._decide(now)

    def plan_ready(self, ev: PlanReady, now: float) -> None:
        if self.leading and ev.deferred:
            LOG.info("BALANCE member=%s deferred t=%.6f reason=%r", self.member_id, time.time(),
                     ev.reason)
            self._at = now + max(self.settings.damping.settle, 1.0)
            self._retry = True
            return
        if not self.leading or ev.plan is None:
            return
        moves_ = [m for m in ev.plan.moves if m.source is not None]  # no leader: the election
        LOG.info("BALANCE member=%s moves=%d load=%s t=%.6f reason=%r", self.member_id,
                 len(moves_), dict(sorted(ev.plan.load().items())), time.time(), ev.reason)
        self._queue = collections.deque(moves_)
        self._moved = 0
        self._next()

    def move_asked(self, ev: MoveAsked, now: float) -> None:
        if not ev.ok:
            self._in_flight.discard(ev.dpid)
            self._next()

    def move_seen(self, record: Move | None) -> None:
        """A move record changed: one of ours may have ended."""
        if record is None or record.dpid not in self._in_flight \
                or record.step not in moves.FINAL_STEPS:
            return
        self._in_flight.discard(record.dpid)
        self._moved += record.step == "taken"
        self._next()

    # ---- internals -----------------------------------------------------------------------------

    def _decide(self, now: float) -> None:
        if self.settings.policy is balancing.Policy.FIRST:
            return
        decision = balancing.should_rebalance(self._events, now, self._last,
                                              self.settings.damping)
        if decision.rebalance:
            self._last = now
            self._rounds = 0
            self._plan(decision.reason, excluded=decision.suppressed)
        else:
            self._at = decision.at
            self._retry = False  # the decision's own deadline plans anew

    def _plan(self, reason: str, *, forced: bool = False,
              excluded: frozenset[str] = frozenset()) -> None:
        settings = self.settings
        if forced and settings.policy is balancing.Policy.FIRST:
            settings = replace(settings, policy=balancing.Policy.BALANCED)
        self._submit(self._compute, settings, excluded, reason)

    def _next(self) -> None:
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
            self._at = time.monotonic() + self.settings.damping.settle
            self._retry = True

    def _read_members(self) -> None:
        if not self._reading:
            self._reading = True
            self._submit(self._members)

    def _submit(self, func: Callable[..., None], *args: Any) -> None:
        if self._store is not None and self.app._running:
            self._store.submit(func, *args)

    # ---- store work (the balancer's thread) ------------------------------------------------------

    def _members(self) -> None:
        coord = self.app.coord
        assert coord is not None
        try:
            infos = coord.members()
            controllers = {c.member_id for c in
                           coord.election(balancer.BALANCER_ELECTION).candidates()}
            self.app._post(MembersRead(frozenset(controllers & set(infos))))
        except coordination.CoordinationError as exc:
            LOG.info("mastership: reading the members failed: %s", exc)
            self.app._post(MembersRead(None))

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
