"""Planned handover in the mastership app: move records and OpenFlow -> the handover machines.

What: the glue around `handover` (`HandoverSource` on the current master,
`HandoverTarget` on the controller taking the switch), shaped like the app's glue around the
mastership state machine. It runs on the app's event loop (no locks), and
- watches the store's move records (`moves`) and starts a machine when a
  `requested` move names this controller as source or target; feeds it every later step the
  peer writes, and publishes the machine's own steps by compare-and-set on a store thread;
- routes the switch's messages: the target's EQUAL role reply, the marker's FLOW_REMOVED and
  the source's barrier reply to the machine; packet-ins past the cut to the machine through
  the `tap` (so no other app sees them until this controller is to handle them);
- performs the machine's actions: EQUAL role request, marker FLOW_MODs, barrier, raising the
  target's election priority (`Election.change_priority`), leader checks, delivering kept
  packet-ins to the other apps, and `is_master` false on the source from its drained cut on;
- keeps at most one deadline per running handover, checked on the app's timer tick, so the
  cost per tick grows with the handovers in flight, never with the switches.

The source's cut, with apps on other threads: the packet-ins before the marker were queued to
every app before the marker's FLOW_REMOVED reached us. Before its barrier the source asks every
app that handles packet-ins to answer a `DrainRequest` queued behind them; once all have, their
writes for those packet-ins are in the connection's send queue, ahead of the barrier. Only then
does `is_master` turn false for the switch (so those handlers could still program it).

Logged (INFO, `key=value`, wall clock): `HANDOVER dpid=... move=... role=source|target
step=... t=...` per step, and `HANDOVER_DONE dpid=... move=... role=... outcome=completed|aborted
delivered=N dropped=N took=S reason='...'`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import coordination
from coordination.dispatch import SerialExecutor
from coordination.records import Move

from ..compat import EventBase, app_manager, ofp_event
from . import handover as ho
from . import moves
from .fsm import Role, SendRoleRequest, xid_counter
from .guard import election_name
from .handover_inputs import (
    Drained,
    HeldPacketIn,
    LeadershipChecked,
    MarkerRemoved,
    MovePublished,
    MoveSeen,
    PeerChecked,
)
from .tap import HandoverTap

if TYPE_CHECKING:
    from .app import Mastership

LOG = logging.getLogger("ryu_integration.mastership")
#: Highest election priority (`coordination.election.check_priority`).
MAX_PRIORITY = 999_999


class DrainRequest(EventBase):
    """Queued to every app that handles packet-ins; its handler answers `Drained`."""

    def __init__(self, dpid: int, move_id: int) -> None:
        super().__init__()
        self.dpid = dpid
        self.move_id = move_id


@dataclass
class _Run:
    """One running handover on this controller."""

    machine: ho.HandoverSource | ho.HandoverTarget
    record: Move
    datapath: Any
    started: float
    #: apps whose drain answer the source still waits for (None: not draining)
    draining: set[str] | None = None
    #: the source's barrier, sent once drained
    barrier: ho.SendBarrier | None = None
    #: xids of our marker FLOW_MODs (an error for one aborts before the cut)
    marker_xids: set[int] = field(default_factory=set)
    delivered: int = 0
    #: when to ask whether the peer is still alive (the machine has no deadline of its own)
    peer_check_at: float | None = None

    @property
    def role(self) -> str:
        return "source" if isinstance(self.machine, ho.HandoverSource) else "target"

    @property
    def peer(self) -> str:
        return self.record.target if self.role == "source" else self.record.source


class Handovers:
    """The app's planned handovers (one per switch at most)."""

    def __init__(self, app: Mastership) -> None:
        self.app = app
        self.member_id = app.member_id
        self.timing: ho.HandoverTiming = app.settings.handover
        self.tap = HandoverTap(self._tap_marker, self._tap_packet)
        self._runs: dict[int, _Run] = {}
        #: dpids whose source has passed its drained cut: `is_master` is false (any thread)
        self._held: set[int] = set()
        #: xids of role requests we sent for the mastership machine after an abort
        self._reasserts: set[tuple[int, int]] = set()
        self._next_xid = xid_counter(0xC8000000)
        self._store: SerialExecutor | None = None
        self._watch: Any = None
        self._drain_apps: set[str] = set()
        #: called with (dpid, outcome) when a run ends (a stopping controller waits on these)
        self.on_finished: Callable[[int, ho.Outcome], None] | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        assert self.app.coord is not None
        if not self.tap.install():
            LOG.warning("mastership: no OpenFlow service to tap: planned handover disabled")
            return
        self._store = SerialExecutor(f"mastership-moves[{self.member_id}]")
        self._watch = self.app.coord.topology.watch(self._on_moves, kinds=["move"])

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self.tap.uninstall()
        if self._store is not None:
            self._store.stop(1.0)

    def holds(self, dpid: int) -> bool:
        """True while a handover forbids programming `dpid` (any thread)."""
        return dpid in self._held

    def keeps_equal(self, dpid: int) -> bool:
        """True while we are the target of a handover of `dpid`: the switch must keep us EQUAL
        (packet-ins past the cut reach us) until our MASTER claim, so the mastership machine's
        SLAVE requests are held back (an abort re-asserts its role)."""
        run = self._runs.get(dpid)
        return run is not None and isinstance(run.machine, ho.HandoverTarget)

    def running(self) -> dict[int, str]:
        """dpid -> our role ("source"/"target") in each handover in flight."""
        return {dpid: run.role for dpid, run in self._runs.items()}

    def hand_over_all(self, deadline: float) -> None:
        """A graceful stop (SIGTERM): hand every switch we master to the first other live
        candidate of its election, and wait (until `deadline`, a monotonic time) for those
        handovers to end. Runs on the stopping thread while the event loop still runs; what is
        not handed over by then fails over when we resign."""
        coord = self.app.coord
        mastered = [dpid for dpid in list(self.app._masters) if dpid not in self._runs]
        if coord is None or not mastered or time.monotonic() >= deadline:
            return
        started = time.time()
        pending: set[int] = set()
        cond = threading.Condition()

        def finished(dpid: int, _outcome: ho.Outcome) -> None:
            with cond:
                pending.discard(dpid)
                cond.notify_all()

        self.on_finished = finished
        requested = 0
        try:
            members = coord.members()
            for dpid in mastered:
                if time.monotonic() >= deadline:
                    break
                election = coord.election(election_name(dpid))
                target = next((c.member_id for c in election.candidates()
                               if c.member_id != self.member_id and c.member_id in members),
                              None)
                if target is None:
                    continue
                with cond:
                    pending.add(dpid)
                try:
                    moves.request_move(coord, dpid, target, writer=self.member_id,
                                       live=members)
                    requested += 1
                except coordination.CoordinationError as exc:
                    LOG.info("mastership: not handing %016x over on stop: %s", dpid, exc)
                    finished(dpid, ho.Outcome.ABORTED)
        except coordination.CoordinationError as exc:
            LOG.warning("mastership: no planned handover on stop: %s", exc)
        with cond:
            cond.wait_for(lambda: not pending, max(0.0, deadline - time.monotonic()))
            left = len(pending)
        self.on_finished = None
        LOG.info("HANDOVER_ON_STOP member=%s mastered=%d requested=%d unfinished=%d "
                 "took=%.3fs t=%.6f", self.member_id, len(mastered), requested, left,
                 time.time() - started, time.time())

    # ---- store events (callback thread) -> the loop ----------------------------------------

    def _on_moves(self, event: Any) -> None:
        if isinstance(event, coordination.Snapshot):
            for record in event.records:
                if isinstance(record, Move):
                    self.app._post(MoveSeen(record.dpid, record, snapshot=True))
            return
        record = event.record
        dpid = record.dpid if isinstance(record, Move) else _dpid_of(event.key)
        if dpid is not None:
            self.app._post(MoveSeen(dpid, record if isinstance(record, Move) else None))

    def _tap_marker(self, ev: Any, _state: Any) -> None:
        self.app._post(MarkerRemoved(ev))

    def _tap_packet(self, ev: Any, state: Any) -> None:
        self.app._post(HeldPacketIn(ev, state))

    # ---- inputs (event loop) ---------------------------------------------------------------

    def move_seen(self, ev: MoveSeen, now: float) -> None:
        record = ev.record
        if record is None:
            return
        run = self._runs.get(ev.dpid)
        if run is not None:
            if run.record.id == record.id and record.owner != self.member_id:
                self._log_step(run, record.step, "peer")
                self._perform(run, run.machine.peer_step(ho.Step(record.step), now))
            return
        # A watch may skip values (ZooKeeper reads the newest after a notification): the source
        # may first see the target's READY; the target writes READY itself, so it starts only
        # from REQUESTED.
        source = record.source == self.member_id
        if record.step not in (("requested", "ready") if source else ("requested",)) \
                or self.member_id not in (record.source, record.target):
            return
        fsm = self.app._fsms.get(ev.dpid)
        dp = self.app._datapaths.get(ev.dpid)
        if source:
            if fsm is None or dp is None or not fsm.may_program or fsm.elected_term != record.term:
                self._publish_abort(record, "the source is not the switch's confirmed master "
                                            "under the move's term")
                return
            machine: ho.HandoverSource | ho.HandoverTarget = ho.HandoverSource(
                ev.dpid, record.id, self.timing, next_xid=self._next_xid)
        else:
            if fsm is None or dp is None or not dp.ofproto.OFP_VERSION >= 3:
                self._publish_abort(record, "the target is not connected to the switch over "
                                            "OpenFlow 1.2+")
                return
            machine = ho.HandoverTarget(ev.dpid, record.id, self.timing, next_xid=self._next_xid)
        run = _Run(machine, record, dp, time.time())
        self._runs[ev.dpid] = run
        self.tap.open(ev.dpid, dp, machine.cookie)
        LOG.info("HANDOVER dpid=%016x member=%s move=%d role=%s step=start source=%s target=%s "
                 "t=%.6f", ev.dpid, self.member_id, record.id, run.role, record.source,
                 record.target, time.time())
        self._perform(run, machine.start(now))
        if record.step != "requested":
            self._log_step(run, record.step, "peer")
            self._perform(run, machine.peer_step(ho.Step(record.step), now))

    def published(self, ev: MovePublished, now: float) -> None:
        run = self._runs.get(ev.dpid)
        if run is None or run.record.id != ev.move_id:
            return
        self._log_step(run, ev.step, "published" if ev.ok else "refused")
        self._perform(run, run.machine.published(ho.Step(ev.step), ev.ok, now))

    def held_packet(self, ev: HeldPacketIn) -> None:
        """A packet-in past a cut: the machine decides whose it is."""
        dpid = getattr(ev.ev.msg.datapath, "id", None)
        run = self._runs.get(dpid) if dpid is not None else None
        if run is None or run.datapath is not ev.ev.msg.datapath:
            self.tap.redispatch(ev.ev, ev.state)  # the handover ended meanwhile
            return
        verdict = run.machine.packet_in((ev.ev, ev.state))
        if verdict is ho.Verdict.GUARD:
            self.tap.redispatch(ev.ev, ev.state)

    def marker_removed(self, ev: MarkerRemoved, now: float) -> None:
        msg = ev.ev.msg
        run = self._runs.get(getattr(msg.datapath, "id", None))
        if run is None or run.datapath is not msg.datapath:
            return
        self._log_step(run, "cut", "switch")
        self._perform(run, run.machine.flow_removed(msg.cookie, now))

    def drained(self, ev: Drained, now: float) -> None:
        run = self._runs.get(ev.dpid)
        if run is None or run.record.id != ev.move_id or run.draining is None:
            return
        run.draining.discard(ev.app)
        if not run.draining:
            self._drained(run)

    def leadership_checked(self, ev: LeadershipChecked, now: float) -> None:
        run = self._runs.get(ev.dpid)
        if run is not None and run.record.id == ev.move_id \
                and isinstance(run.machine, ho.HandoverTarget):
            self._perform(run, run.machine.leadership_checked(ev.is_leader, now))

    def peer_checked(self, ev: PeerChecked, now: float) -> None:
        run = self._runs.get(ev.dpid)
        if run is None or run.record.id != ev.move_id:
            return
        if not ev.alive:
            LOG.info("HANDOVER dpid=%016x member=%s move=%d peer=%s gone t=%.6f", ev.dpid,
                     self.member_id, run.record.id, run.peer, time.time())
            self._perform(run, run.machine.peer_lost(now))
        elif not run.machine.finished:
            run.peer_check_at = now + self.timing.step_timeout

    # ---- from the app's OpenFlow and election handlers ---------------------------------------

    def owns_role_xid(self, dpid: int, xid: int) -> bool:
        run = self._runs.get(dpid)
        if run is not None and isinstance(run.machine, ho.HandoverTarget) \
                and run.machine.owns_xid(xid):
            return True
        return (dpid, xid) in self._reasserts

    def role_reply(self, dpid: int, xid: int, role: Role, now: float) -> None:
        if (dpid, xid) in self._reasserts:
            self._reasserts.discard((dpid, xid))
            return
        run = self._runs.get(dpid)
        if run is not None and isinstance(run.machine, ho.HandoverTarget):
            self._perform(run, run.machine.role_reply(xid, role, now))

    def role_error(self, dpid: int, xid: int, now: float) -> None:
        self._reasserts.discard((dpid, xid))
        run = self._runs.get(dpid)
        if run is not None and isinstance(run.machine, ho.HandoverTarget):
            self._perform(run, run.machine.role_error(xid, now))

    def flow_mod_error(self, dpid: int, xid: int, now: float) -> bool:
        """An OpenFlow error for `xid`; True if it was for one of our marker FLOW_MODs."""
        run = self._runs.get(dpid)
        if run is None or xid not in run.marker_xids:
            return False
        assert isinstance(run.machine, ho.HandoverSource)
        self._perform(run, run.machine.switch_error(now))
        return True

    def barrier_reply(self, dpid: int, xid: int, now: float) -> None:
        run = self._runs.get(dpid)
        if run is not None and isinstance(run.machine, ho.HandoverSource):
            self._perform(run, run.machine.barrier_reply(xid, now))

    def elected(self, dpid: int, term: int, now: float) -> None:
        run = self._runs.get(dpid)
        if run is not None and isinstance(run.machine, ho.HandoverTarget):
            self._perform(run, run.machine.elected(term, now))

    def revoked(self, dpid: int, now: float) -> None:
        run = self._runs.get(dpid)
        if run is not None and isinstance(run.machine, ho.HandoverSource):
            self._perform(run, run.machine.leadership_lost(now))

    def leader_seen(self, dpid: int, leader: str | None, now: float) -> None:
        run = self._runs.get(dpid)
        if run is None or leader is None:
            return
        # the source: anyone else leads; the target: neither side of the move leads
        lost = leader != self.member_id if isinstance(run.machine, ho.HandoverSource) \
            else leader not in (run.record.source, run.record.target)
        if lost:
            self._perform(run, run.machine.leadership_lost(now))

    def mastership_changed(self, dpid: int, may_program: bool, term: int, now: float) -> None:
        run = self._runs.get(dpid)
        if run is not None and may_program and isinstance(run.machine, ho.HandoverTarget):
            self._perform(run, run.machine.master_confirmed(term, now))

    def switch_down(self, dpid: int, now: float) -> None:
        """The switch's connection dropped: nothing of the handover can go on over it."""
        run = self._runs.get(dpid)
        if run is None:
            return
        self._publish_abort(run.record, "the switch disconnected")
        self._end(run, ho.Finished(dpid, ho.Outcome.ABORTED, "the switch disconnected"))

    def tick(self, now: float) -> None:
        """Run the handovers whose deadline has come (their number, not the switches')."""
        for run in list(self._runs.values()):
            deadline = run.machine.next_deadline()
            if deadline is not None and deadline <= now:
                self._perform(run, run.machine.tick(now))
            elif deadline is None and not run.machine.finished:
                if run.peer_check_at is None:
                    run.peer_check_at = now + self.timing.step_timeout
                elif run.peer_check_at <= now:
                    run.peer_check_at = float("inf")  # until the answer
                    self._submit(self._check_peer, run.record.dpid, run.record.id, run.peer)

    # ---- performing actions ------------------------------------------------------------------

    def _perform(self, run: _Run, actions: list[ho.Action]) -> None:
        dp = run.datapath
        for action in actions:
            if isinstance(action, SendRoleRequest):
                self.app._send_role_request(action)
            elif isinstance(action, ho.Publish):
                self._submit(self._cas, run.record.dpid, run.record.id, action.step.value,
                             frozenset(s.value for s in action.expect))
            elif isinstance(action, ho.AddMarker):
                self._send_marker(run, dp, action.cookie, action.hard_timeout, add=True)
            elif isinstance(action, ho.DeleteMarker):
                self._send_marker(run, dp, action.cookie, 0, add=False)
            elif isinstance(action, ho.StopProgramming):
                self._log_step(run, "stop_programming", "self")
            elif isinstance(action, ho.SendBarrier):
                run.barrier = action
                self._start_drain(run)
            elif isinstance(action, ho.TakeLeadership):
                self._log_step(run, "take_leadership", "self")
                self._on_worker(self._raise_priority, run.record.dpid)
            elif isinstance(action, ho.CheckLeadership):
                self._submit(self._check_leader, run.record.dpid, run.record.id)
            elif isinstance(action, ho.Deliver):
                self._held.discard(run.record.dpid)  # we handle these as master
                run.delivered += len(action.packets)
                for ev, state in action.packets:
                    self.tap.redispatch(ev, state)
            elif isinstance(action, ho.Finished):
                self._end(run, action)

    def _send_marker(self, run: _Run, dp: Any, cookie: int, hard_timeout: int, *,
                     add: bool) -> None:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        match = parser.OFPMatch(eth_type=ho.MARKER_ETH_TYPE)
        if add:
            mod = parser.OFPFlowMod(datapath=dp, cookie=cookie, table_id=ho.MARKER_TABLE,
                                    command=ofp.OFPFC_ADD, hard_timeout=hard_timeout,
                                    priority=ho.MARKER_PRIORITY, flags=ofp.OFPFF_SEND_FLOW_REM,
                                    match=match, instructions=[])
        else:
            mod = parser.OFPFlowMod(datapath=dp, cookie=cookie, cookie_mask=2**64 - 1,
                                    table_id=ho.MARKER_TABLE, command=ofp.OFPFC_DELETE_STRICT,
                                    priority=ho.MARKER_PRIORITY, out_port=ofp.OFPP_ANY,
                                    out_group=ofp.OFPG_ANY, match=match)
        xid = self._next_xid()
        mod.set_xid(xid)
        run.marker_xids.add(xid)
        dp.send_msg(mod)

    def _start_drain(self, run: _Run) -> None:
        """Past the cut: wait for every packet-in app to finish what came before it."""
        names = [n for n in self.tap.consumers(ofp_event.EventOFPPacketIn) if n != self.app.name]
        run.draining = set()
        for name in names:
            brick = app_manager.lookup_service_brick(name)
            if brick is None:
                continue
            if name not in self._drain_apps:
                brick.register_handler(DrainRequest, self._drain_handler(name))
                self._drain_apps.add(name)
            run.draining.add(name)
            self.app.send_event(name, DrainRequest(run.record.dpid, run.record.id))
        if not run.draining:
            self._drained(run)

    def _drain_handler(self, name: str) -> Callable[[DrainRequest], None]:
        def answer(ev: DrainRequest) -> None:  # on app `name`'s own loop
            self.app._post(Drained(ev.dpid, ev.move_id, name))
        return answer

    def _drained(self, run: _Run) -> None:
        run.draining = None
        self._held.add(run.record.dpid)
        barrier = run.barrier
        if barrier is None:
            return
        dp = run.datapath
        req = dp.ofproto_parser.OFPBarrierRequest(dp)
        req.set_xid(barrier.xid)
        dp.send_msg(req)
        self._log_step(run, "barrier", "self")

    def _end(self, run: _Run, done: ho.Finished) -> None:
        dpid = run.record.dpid
        if self._runs.get(dpid) is not run:
            return
        del self._runs[dpid]
        self.tap.close(dpid)
        self._held.discard(dpid)
        LOG.info("HANDOVER_DONE dpid=%016x member=%s move=%d role=%s outcome=%s delivered=%d "
                 "dropped=%d took=%.3fs t=%.6f reason=%r", dpid, self.member_id, run.record.id,
                 run.role, done.outcome.value, run.delivered, done.dropped,
                 time.time() - run.started, time.time(), done.reason)
        if isinstance(run.machine, ho.HandoverTarget) and done.outcome is ho.Outcome.ABORTED:
            self._on_worker(self._restore_priority, dpid)
            fsm = self.app._fsms.get(dpid)
            desired = fsm.desired() if fsm is not None else None
            if desired is not None and desired[0] is Role.SLAVE:
                # our EQUAL replaced the SLAVE role the mastership machine had confirmed
                xid = self._next_xid()
                self._reasserts.add((dpid, xid))
                self.app._send_role_request(SendRoleRequest(
                    dpid, Role.SLAVE, desired[1], xid, "handover aborted: back to slave"))
        if self.on_finished is not None:
            self.on_finished(dpid, done.outcome)

    def _log_step(self, run: _Run, step: str, by: str) -> None:
        LOG.info("HANDOVER dpid=%016x member=%s move=%d role=%s step=%s by=%s t=%.6f",
                 run.record.dpid, self.member_id, run.record.id, run.role, step, by, time.time())

    # ---- store work (the moves thread, or the app's store worker) ------------------------------

    def _submit(self, func: Callable[..., None], *args: Any) -> None:
        if self._store is not None and self.app._running:
            self._store.submit(func, *args)

    def _on_worker(self, func: Callable[..., None], *args: Any) -> None:
        """Election changes go through the app's store worker, in order with its campaigns
        and resigns (a resign queued for a disconnected switch must stay last)."""
        if self.app._worker is not None and self.app._running:
            self.app._worker.submit(func, *args)

    def _cas(self, dpid: int, move_id: int, step: str, expect: frozenset[str]) -> None:
        assert self.app.coord is not None
        try:
            ok = moves.advance(self.app.coord, dpid, move_id, step, expect, self.member_id)
        except coordination.CoordinationError as exc:
            LOG.warning("mastership: move %d of %016x: writing %s failed: %s", move_id, dpid,
                        step, exc)
            return  # the machine's step timeout decides
        self.app._post(MovePublished(dpid, move_id, step, ok))

    def _publish_abort(self, record: Move, why: str) -> None:
        LOG.info("HANDOVER dpid=%016x member=%s move=%d step=refused t=%.6f reason=%r",
                 record.dpid, self.member_id, record.id, time.time(), why)
        self._submit(self._cas, record.dpid, record.id, "aborted",
                     frozenset({"requested", "ready", "released"}))

    def _raise_priority(self, dpid: int) -> None:
        """Above every candidate's, so the store elects us under a new term."""
        assert self.app.coord is not None
        election = self.app.coord.election(election_name(dpid))
        try:
            top = max((c.priority for c in election.candidates()), default=0)
            election.change_priority(min(MAX_PRIORITY, top + 1))
        except coordination.CoordinationError as exc:
            LOG.warning("mastership: raising our priority for %016x failed: %s", dpid, exc)

    def _restore_priority(self, dpid: int) -> None:
        assert self.app.coord is not None
        election = self.app.coord.election(election_name(dpid))
        try:
            if election.campaigning:
                election.change_priority(self.app.settings.priority)
        except coordination.CoordinationError as exc:
            LOG.warning("mastership: restoring our priority for %016x failed: %s", dpid, exc)

    def _check_leader(self, dpid: int, move_id: int) -> None:
        assert self.app.coord is not None
        name = election_name(dpid)
        try:
            lead = self.app.coord.read_leaders([name]).get(name)
        except coordination.CoordinationError as exc:
            LOG.info("mastership: move %d of %016x: leader read failed: %s", move_id, dpid, exc)
            return  # asked again at the next deadline
        self.app._post(LeadershipChecked(dpid, move_id,
                                         lead is not None and lead.member_id == self.member_id))

    def _check_peer(self, dpid: int, move_id: int, peer: str) -> None:
        assert self.app.coord is not None
        try:
            alive = peer in self.app.coord.members()
        except coordination.CoordinationError:
            alive = True  # unknown: ask again later
        self.app._post(PeerChecked(dpid, move_id, alive))


def _dpid_of(key: str) -> int | None:
    try:
        return int(key, 16)
    except (TypeError, ValueError):
        return None

