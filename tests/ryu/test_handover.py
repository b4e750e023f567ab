"""Planned handover (ryu_integration/mastership/handover.py) driven against the switch model.

Two controllers, each a `MastershipFSM` plus a handover machine, talk to one `FakeSwitch` over
per-channel FIFO queues (one TCP connection each way) and to an emulated store (election with
priorities and terms, the move record with compare-and-set, per-controller notification queues
in store order). A random scheduler interleaves every delivery with a stream of packets reaching
the switch, so the packet-ins, FLOW_REMOVED messages, replies and store notifications arrive in
every order the real system allows. What is asserted is what the switch and the controllers did:
each packet-in handled exactly once, the split at the marker, no write accepted from a controller
that was not master under the newest generation_id, one master at the end. The glue code here
(`Net.perform`) is the model of what the Ryu app has to do (docs/balancing.md).
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ryu_integration.mastership import fsm as mfsm
from ryu_integration.mastership import handover as ho
from ryu_integration.testing.fake_switch import (
    OFPFF_SEND_FLOW_REM,
    AsyncConfig,
    FakeSwitch,
    FlowMod,
    FlowModCommand,
    FlowRemoved,
    Kind,
    PacketIn,
    PacketInReason,
    PortReason,
    Refusal,
    RemovedReason,
    Role,
    match,
)

DPID = 1
A, B = "A", "B"
HID = 7
STEP = 0.001  # the clock advances this much per scheduler step: no timeout fires by accident

# ---- the switch model's flow table and asynchronous messages ---------------------------------


def two_channel_switch() -> FakeSwitch:
    sw = FakeSwitch(DPID)
    sw.connect(A, 0.0)
    sw.connect(B, 0.0)
    return sw


def test_packet_in_reaches_master_and_equal_not_slave():
    sw = two_channel_switch()
    sw.connect("C", 0.0)
    sw.role_request(A, Role.MASTER, 5, 1.0)
    sw.role_request("C", Role.SLAVE, 5, 1.0)
    msgs = sw.packet_in(2.0)
    assert sorted(m.channel for m in msgs) == [A, B]  # B is still EQUAL
    assert {m.message.seq for m in msgs} == {1}
    assert sw.packet_in(2.0, PacketInReason.INVALID_TTL) == ()  # not in the default mask
    sw.role_request(B, Role.SLAVE, 5, 3.0)
    assert [m.channel for m in sw.packet_in(3.0)] == [A]


def test_flow_removed_only_with_send_flow_rem_and_only_to_master_and_equal():
    sw = two_channel_switch()
    sw.connect("C", 0.0)
    sw.role_request(A, Role.MASTER, 5, 1.0)
    sw.role_request("C", Role.SLAVE, 5, 1.0)
    quiet = FlowMod(FlowModCommand.ADD, match(eth_type=0x800), cookie=1)
    loud = FlowMod(FlowModCommand.ADD, match(eth_type=0x806), cookie=2, flags=OFPFF_SEND_FLOW_REM)
    assert sw.flow_mod(A, quiet, 1.0).messages == ()
    assert sw.flow_mod(A, loud, 1.0).messages == ()
    out = sw.flow_mod(A, FlowMod(FlowModCommand.DELETE), 2.0)  # empty match: deletes all
    assert sw.flows() == []
    assert sorted(m.channel for m in out.messages) == [A, B]
    assert {(m.message.cookie, m.message.reason) for m in out.messages} == {
        (2, RemovedReason.DELETE)}


def test_delete_strict_and_cookie_mask_select_one_entry():
    sw = two_channel_switch()
    sw.role_request(A, Role.MASTER, 5, 1.0)
    m = match(eth_type=0x88B6)
    sw.flow_mod(A, FlowMod(FlowModCommand.ADD, m, priority=0, cookie=0xAA), 1.0)
    sw.flow_mod(A, FlowMod(FlowModCommand.ADD, m, priority=9, cookie=0xBB), 1.0)
    sw.flow_mod(A, FlowMod(FlowModCommand.ADD, match(eth_type=0x88B6, in_port=1), cookie=0xAA),
                1.0)
    wrong_cookie = FlowMod(FlowModCommand.DELETE_STRICT, m, priority=0, cookie=0xBB,
                           cookie_mask=2**64 - 1)
    sw.flow_mod(A, wrong_cookie, 2.0)
    assert len(sw.flows()) == 3
    strict = FlowMod(FlowModCommand.DELETE_STRICT, m, priority=0, cookie=0xAA,
                     cookie_mask=2**64 - 1)
    sw.flow_mod(A, strict, 2.0)
    assert sorted(f.priority for f in sw.flows()) == [9, 0x8000]
    # Non-strict: the given match is included in both remaining entries; cookie filters one.
    sw.flow_mod(A, FlowMod(FlowModCommand.DELETE, m, cookie=0xBB, cookie_mask=2**64 - 1), 3.0)
    assert [f.cookie for f in sw.flows()] == [0xAA]


def test_add_replaces_same_match_and_priority_silently():
    sw = two_channel_switch()
    sw.role_request(A, Role.MASTER, 5, 1.0)
    m = match(in_port=1)
    sw.flow_mod(A, FlowMod(FlowModCommand.ADD, m, cookie=1, flags=OFPFF_SEND_FLOW_REM), 1.0)
    out = sw.flow_mod(A, FlowMod(FlowModCommand.ADD, m, cookie=2), 2.0)
    assert out.messages == () and [f.cookie for f in sw.flows()] == [2]


def test_hard_and_idle_timeouts_expire_with_their_reason():
    sw = two_channel_switch()
    sw.role_request(A, Role.MASTER, 5, 1.0)
    sw.flow_mod(A, FlowMod(FlowModCommand.ADD, match(a=1), cookie=1, hard_timeout=10,
                           flags=OFPFF_SEND_FLOW_REM), 0.0)
    sw.flow_mod(A, FlowMod(FlowModCommand.ADD, match(a=2), cookie=2, idle_timeout=3,
                           flags=OFPFF_SEND_FLOW_REM), 0.0)
    assert sw.expire(2.9) == ()
    first = sw.expire(3.0)
    assert {(m.channel, m.message.reason) for m in first} == {
        (A, RemovedReason.IDLE_TIMEOUT), (B, RemovedReason.IDLE_TIMEOUT)}
    assert [m.message.reason for m in sw.expire(10.0) if m.channel == A] == [
        RemovedReason.HARD_TIMEOUT]
    assert sw.flows() == []


def test_flow_mod_from_slave_is_refused_and_not_applied():
    sw = two_channel_switch()
    sw.role_request(A, Role.MASTER, 5, 1.0)
    sw.role_request(B, Role.SLAVE, 5, 1.0)
    out = sw.flow_mod(B, FlowMod(FlowModCommand.ADD, match(a=1)), 2.0)
    assert out.refused is Refusal.IS_SLAVE and sw.flows() == []
    # An EQUAL channel may write, but not under the newest generation_id as master: flagged.
    sw.role_request(B, Role.EQUAL, 0, 3.0)
    assert sw.flow_mod(B, FlowMod(FlowModCommand.ADD, match(a=1)), 3.0).violation


def test_port_status_reaches_every_role():
    sw = two_channel_switch()
    sw.role_request(A, Role.MASTER, 5, 1.0)
    sw.role_request(B, Role.SLAVE, 5, 1.0)
    msgs = sw.port_status(3, PortReason.ADD, 2.0)
    assert sorted(m.channel for m in msgs) == [A, B] and msgs[0].message.port_no == 3


def test_set_async_changes_what_a_slave_receives():
    sw = two_channel_switch()
    sw.role_request(A, Role.MASTER, 5, 1.0)
    sw.role_request(B, Role.SLAVE, 5, 1.0)
    assert sw.async_config(B) == AsyncConfig()
    sw.set_async(B, AsyncConfig(packet_in=(0b11, 0b1)))
    assert sorted(m.channel for m in sw.packet_in(2.0)) == [A, B]


# ---- the emulated store ------------------------------------------------------------------


class Store:
    """Elections by (priority, arrival), a term counter, the move record (CAS), and per-member
    notification queues delivered in store order."""

    def __init__(self, net: Net) -> None:
        self.net = net
        self.term = 0
        self.leader: str | None = None
        self.candidates: dict[str, tuple[int, int]] = {}
        self._order = itertools.count()
        self.record: ho.Step | None = None

    def campaign(self, member: str, priority: int = 0) -> None:
        self.candidates[member] = (priority, next(self._order))
        self._elect()

    def set_priority(self, member: str, priority: int) -> None:
        """Change a candidacy's priority in place (keeps its arrival order)."""
        if member in self.candidates:
            self.candidates[member] = (priority, self.candidates[member][1])
            self._elect()

    def resign(self, member: str) -> None:
        self.candidates.pop(member, None)
        self._elect()

    def _elect(self) -> None:
        best = max(self.candidates, key=lambda m: (self.candidates[m][0], -self.candidates[m][1]),
                   default=None)
        if best == self.leader:
            return
        old, old_term = self.leader, self.term
        self.leader = best
        if best is not None:
            self.term += 1
        for ctl in self.net.live():
            if ctl.name == old:
                ctl.notes.append(("revoked", old_term))
            if ctl.name == best:
                ctl.notes.append(("elected", self.term))
            ctl.notes.append(("leader", best, self.term if best else None))

    def publish(self, ctl: Ctl, action: ho.Publish) -> None:
        ok = self.record in action.expect
        if ok:
            self.record = action.step
            for other in self.net.live():
                if other is not ctl:
                    other.notes.append(("step", action.step))
        ctl.notes.append(("published", action.step, ok))


# ---- one controller ----------------------------------------------------------------------


@dataclass
class Ctl:
    name: str
    fsm: mfsm.MastershipFSM
    machine: ho.HandoverSource | ho.HandoverTarget | None = None
    alive: bool = True
    notes: deque = field(default_factory=deque)
    finished: list[ho.Finished] = field(default_factory=list)
    stalled_until: float = 0.0

    def may_program(self) -> bool:
        m = self.machine
        source_ok = not isinstance(m, ho.HandoverSource) or m.may_program
        return self.fsm.may_program and source_ok


class Net:
    """The switch, two controllers, the store, the queues between them, and the scheduler."""

    def __init__(self, rng: random.Random, *, refuse_equal: bool = False) -> None:
        self.rng = rng
        self.now = 0.0
        self.sw = FakeSwitch(DPID)
        self.store = Store(self)
        xids = itertools.count(0x1000)
        self.ctls = {n: Ctl(n, mfsm.MastershipFSM(DPID, n, next_xid=lambda: next(xids)))
                     for n in (A, B)}
        self.down: dict[str, deque] = {n: deque() for n in self.ctls}  # controller -> switch
        self.up: dict[str, deque] = {n: deque() for n in self.ctls}  # switch -> controller
        self.handled: dict[int, list[str]] = defaultdict(list)
        self.cut_seq: int | None = None
        self.refuse_equal = refuse_equal
        self.packets_left = 0
        self.faults: list[tuple[int, str]] = []  # (step, what)
        self.steps = 0

    def live(self) -> list[Ctl]:
        return [c for c in self.ctls.values() if c.alive]

    # ---- setup -----------------------------------------------------------------------------

    def start(self) -> None:
        """Both channels up, A first: A is master under term 1, B slave."""
        for name in (A, B):
            self.sw.connect(name, self.now)
            self.perform(self.ctls[name], self.ctls[name].fsm.switch_up(self.now))
            self.settle()
        assert self.sw.master == A and self.sw.role_of(B) is Role.SLAVE

    def begin_handover(self, timing: ho.HandoverTiming | None = None) -> None:
        self.store.record = ho.Step.REQUESTED
        xids = itertools.count(0x5000)
        src = ho.HandoverSource(DPID, HID, timing, next_xid=lambda: next(xids))
        dst = ho.HandoverTarget(DPID, HID, timing, next_xid=lambda: next(xids))
        self.start_term = self.store.term
        self.ctls[A].machine, self.ctls[B].machine = src, dst
        self.perform(self.ctls[A], src.start(self.now))
        self.perform(self.ctls[B], dst.start(self.now))

    # ---- the glue: performing actions -------------------------------------------------------

    def perform(self, ctl: Ctl, actions: list[Any]) -> None:
        for a in actions:
            if not ctl.alive:
                return
            if isinstance(a, mfsm.Campaign):
                self.store.campaign(ctl.name)
            elif isinstance(a, mfsm.Resign):
                self.store.resign(ctl.name)
            elif isinstance(a, mfsm.ReadLeader):
                ctl.notes.append(("leader", self.store.leader,
                                  self.store.term if self.store.leader else None))
            elif isinstance(a, mfsm.SendRoleRequest):
                self.down[ctl.name].append(("role", a.role, a.generation_id, a.xid))
            elif isinstance(a, mfsm.MastershipChanged):
                m = ctl.machine
                if isinstance(m, ho.HandoverTarget) and a.may_program:
                    self.perform(ctl, m.master_confirmed(a.term, self.now))
            elif isinstance(a, ho.Publish):
                self.store.publish(ctl, a)
            elif isinstance(a, ho.AddMarker):
                self.down[ctl.name].append(("flow_mod", FlowMod(
                    FlowModCommand.ADD, match(eth_type=ho.MARKER_ETH_TYPE),
                    ho.MARKER_PRIORITY, ho.MARKER_TABLE, a.cookie, flags=OFPFF_SEND_FLOW_REM,
                    hard_timeout=a.hard_timeout)))
            elif isinstance(a, ho.DeleteMarker):
                self.down[ctl.name].append(("flow_mod", FlowMod(
                    FlowModCommand.DELETE_STRICT, match(eth_type=ho.MARKER_ETH_TYPE),
                    ho.MARKER_PRIORITY, ho.MARKER_TABLE, a.cookie, cookie_mask=2**64 - 1)))
            elif isinstance(a, ho.SendBarrier):
                self.down[ctl.name].append(("barrier", a.xid))
            elif isinstance(a, ho.StopProgramming):
                assert not ctl.may_program()
            elif isinstance(a, ho.TakeLeadership):
                self.store.set_priority(ctl.name, 1)
            elif isinstance(a, ho.CheckLeadership):
                ctl.notes.append(("checked", self.store.leader == ctl.name))
            elif isinstance(a, ho.Deliver):
                for packet in a.packets:
                    self.handle(ctl, packet)
            elif isinstance(a, ho.Finished):
                ctl.finished.append(a)
                if isinstance(ctl.machine, ho.HandoverTarget) and a.outcome is ho.Outcome.ABORTED:
                    # Back to normal: normal priority, and the role the mastership machine
                    # wants re-asserted (our EQUAL replaced its confirmed SLAVE at the switch).
                    self.store.set_priority(ctl.name, 0)
                    desired = ctl.fsm.desired()
                    if desired is not None and desired[0] is mfsm.Role.SLAVE:
                        self.down[ctl.name].append(("role", *desired, 0xFFFF))
            else:  # pragma: no cover - a new action type the glue does not know
                pytest.fail(f"unhandled action {a!r}")

    def handle(self, ctl: Ctl, packet: PacketIn) -> None:
        """The app handles a packet-in: it installs a flow for it (cookie = the packet's seq)."""
        assert ctl.may_program(), f"{ctl.name} handled {packet.seq} without being master"
        self.handled[packet.seq].append(ctl.name)
        self.down[ctl.name].append(("flow_mod", FlowMod(
            FlowModCommand.ADD, match(pkt=packet.seq), cookie=packet.seq)))

    # ---- delivery ---------------------------------------------------------------------------

    def to_switch(self, name: str) -> None:
        msg = self.down[name].popleft()
        if msg[0] == "role":
            _, role, gen, xid = msg
            if self.refuse_equal and role is mfsm.Role.EQUAL:
                self.up[name].append(("role_error", xid, False))
                return
            out = self.sw.role_request(name, Role(role.value), gen, self.now)
            if out.accepted:
                self.up[name].append(("role_reply", xid, out.role, out.generation_id))
            else:
                self.up[name].append(("role_error", xid, out.refused is Refusal.STALE))
        elif msg[0] == "flow_mod":
            mod = msg[1]
            out = self.sw.flow_mod(name, mod, self.now)
            if out.refused is Refusal.IS_SLAVE:
                self.up[name].append(("is_slave",))
            if mod.command is FlowModCommand.DELETE_STRICT and out.messages:
                self.cut_seq = self.sw.packet_seq
            for m in out.messages:
                self.up[m.channel].append(("async", m.message))
        elif msg[0] == "barrier":
            self.up[name].append(("barrier_reply", self.sw.barrier(name, msg[1], self.now)))

    def to_controller(self, ctl: Ctl) -> None:
        msg = self.up[ctl.name].popleft()
        m, now = ctl.machine, self.now
        active = m is not None and not m.finished
        if msg[0] == "role_reply":
            _, xid, role, gen = msg
            if isinstance(m, ho.HandoverTarget) and m.owns_xid(xid):
                self.perform(ctl, m.role_reply(xid, mfsm.Role(role.value), now))
            else:
                self.perform(ctl, ctl.fsm.role_reply(xid, mfsm.Role(role.value), gen, now))
        elif msg[0] == "role_error":
            _, xid, stale = msg
            if isinstance(m, ho.HandoverTarget) and m.owns_xid(xid):
                self.perform(ctl, m.role_error(xid, now))
            else:
                self.perform(ctl, ctl.fsm.role_error(xid, stale, now))
        elif msg[0] == "is_slave":
            self.perform(ctl, ctl.fsm.not_master_error(now))
        elif msg[0] == "barrier_reply":
            if isinstance(m, ho.HandoverSource):
                self.perform(ctl, m.barrier_reply(msg[1], now))
        elif isinstance(msg[1], FlowRemoved):
            if m is not None:
                self.perform(ctl, m.flow_removed(msg[1].cookie, now))
        else:
            packet = msg[1]
            verdict = m.packet_in(packet) if active else ho.Verdict.GUARD
            if verdict is ho.Verdict.GUARD and ctl.may_program():
                self.handle(ctl, packet)

    def note(self, ctl: Ctl) -> None:
        """One store notification, as the glue routes it."""
        n = ctl.notes.popleft()
        m, now = ctl.machine, self.now
        if n[0] == "elected":
            self.perform(ctl, ctl.fsm.elected(n[1], now))
            if isinstance(m, ho.HandoverTarget):
                self.perform(ctl, m.elected(n[1], now))
        elif n[0] == "revoked":
            self.perform(ctl, ctl.fsm.revoked(n[1], now))
            if isinstance(m, ho.HandoverSource):
                self.perform(ctl, m.leadership_lost(now))
        elif n[0] == "leader":
            _, leader, term = n
            self.perform(ctl, ctl.fsm.leader_seen(leader, term, now))
            if isinstance(m, ho.HandoverTarget) and leader not in (None, A, B):
                self.perform(ctl, m.leadership_lost(now))
        elif n[0] == "step":
            if m is not None:
                self.perform(ctl, m.peer_step(n[1], now))
        elif n[0] == "published":
            if m is not None:
                self.perform(ctl, m.published(n[1], n[2], now))
        elif n[0] == "checked" and isinstance(m, ho.HandoverTarget):
            self.perform(ctl, m.leadership_checked(n[1], now))
        elif n[0] == "peer_lost" and m is not None:
            self.perform(ctl, m.peer_lost(now))

    def tick(self) -> None:
        for ctl in self.live():
            if ctl.stalled_until > self.now:
                continue
            self.perform(ctl, ctl.fsm.tick(self.now))
            if ctl.machine is not None:
                self.perform(ctl, ctl.machine.tick(self.now))
        for m in self.sw.expire(self.now):
            self.up[m.channel].append(("async", m.message))

    # ---- faults ------------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """The controller crashes: its channel drops, its session expires, peers are told."""
        ctl = self.ctls[name]
        ctl.alive = False
        self.faults.append((self.steps, f"kill {name}"))
        self.sw.disconnect(name, self.now)
        self.down[name].clear()
        self.up[name].clear()
        ctl.notes.clear()
        self.store.resign(name)
        for other in self.live():
            other.notes.append(("peer_lost",))

    def stall(self, name: str, seconds: float) -> None:
        """The controller stops processing (GC pause, overload) for `seconds`."""
        self.faults.append((self.steps, f"stall {name}"))
        self.ctls[name].stalled_until = self.now + seconds

    # ---- the scheduler ----------------------------------------------------------------------

    def choices(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for ctl in self.live():
            if self.down[ctl.name]:
                out.append(("down", ctl.name))
            if ctl.stalled_until > self.now:
                continue
            if self.up[ctl.name]:
                out.append(("up", ctl))
            if ctl.notes:
                out.append(("note", ctl))
        if self.packets_left > 0:
            out.append(("packet", None))
        return out

    def step(self, kind: str, what: Any) -> None:
        self.steps += 1
        if kind == "down":
            self.to_switch(what)
        elif kind == "up":
            self.to_controller(what)
        elif kind == "note":
            self.note(what)
        else:
            self.packets_left = max(0, self.packets_left - 1)
            for m in self.sw.packet_in(self.now):
                self.up[m.channel].append(("async", m.message))

    def next_deadline(self) -> float | None:
        times = []
        for ctl in self.live():
            if ctl.stalled_until > self.now:
                times.append(ctl.stalled_until)
            for t in (ctl.fsm.next_deadline(),
                      ctl.machine.next_deadline() if ctl.machine else None):
                if t is not None:
                    times.append(max(t, self.now))
        return min(times, default=None)

    def run(self, faults: dict[int, Any] | None = None, max_steps: int = 20_000) -> None:
        """Deliver in random order until nothing is left to deliver and no machine waits for
        a deadline (then jump the clock to it, as a real timer would fire). `faults`: step
        (counted from now) -> what to do to the net then."""
        due = {self.steps + k: fault for k, fault in (faults or {}).items()}  # steps from now
        for _ in range(max_steps):
            if self.steps in due:
                due.pop(self.steps)(self)
            options = self.choices()
            if options:
                self.step(*self.rng.choice(options))
                self.now += STEP
                self.tick()
                continue
            if due:  # a fault scheduled after everything settled: apply it now
                due.pop(min(due))(self)
                continue
            if self.busy():
                deadline = self.next_deadline()
                assert deadline is not None, "a machine waits for nothing"
                self.now = max(self.now + STEP, deadline)
                self.tick()
                continue
            return
        raise AssertionError(f"no quiescence after {max_steps} steps")

    def busy(self) -> bool:
        return any(c.machine is not None and not c.machine.finished for c in self.live()) or (
            any(c.stalled_until > self.now for c in self.live()))

    def settle(self) -> None:
        self.run()

    # ---- what happened ----------------------------------------------------------------------

    def twice(self) -> dict[int, list[str]]:
        return {seq: who for seq, who in self.handled.items() if len(who) > 1}

    def unhandled(self) -> list[int]:
        return [seq for seq in range(1, self.sw.packet_seq + 1) if seq not in self.handled]

    def check_switch(self) -> None:
        """No write accepted from a non-master (or under an old generation_id), none refused."""
        assert self.sw.fencing_violations() == []
        assert self.sw.history(Kind.IS_SLAVE) == []
        leader = self.store.leader
        assert self.sw.master == leader, (self.sw.master, leader)
        assert self.sw.master_generation == self.store.term
        for ctl in self.live():
            assert ctl.fsm.may_program == (ctl.name == leader), ctl.name


def new_net(seed: int, packets: int, **kw: Any) -> Net:
    net = Net(random.Random(seed), **kw)
    net.start()
    net.packets_left = packets
    return net


# ---- the happy path under every interleaving ----------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), packets=st.integers(0, 40), lead=st.integers(0, 40))
def test_handover_handles_every_packet_in_exactly_once_split_at_the_marker(seed, packets, lead):
    net = new_net(seed, packets)
    # Some packets reach the switch before the handover starts, the rest during and after it.
    net.run(faults={lead: lambda n: n.begin_handover()})
    if net.ctls[A].machine is None:
        net.begin_handover()
        net.run()

    assert net.twice() == {}
    assert net.unhandled() == []
    assert net.cut_seq is not None
    for seq, (who,) in net.handled.items():
        assert who == (A if seq <= net.cut_seq else B), (seq, who, net.cut_seq)
    net.check_switch()
    assert net.store.leader == B and net.store.term == net.start_term + 1
    assert net.sw.role_of(A) is Role.SLAVE
    assert [f.outcome for f in net.ctls[A].finished] == [ho.Outcome.COMPLETED]
    assert [(f.outcome, f.dropped) for f in net.ctls[B].finished] == [(ho.Outcome.COMPLETED, 0)]
    assert net.store.record is ho.Step.TAKEN
    # The marker is gone (deleted, not left to its hard timeout).
    assert net.sw.flows() == [] or all(f.cookie != ho.marker_cookie(HID) for f in net.sw.flows())


def test_packets_after_the_cut_wait_in_the_target_until_it_is_master():
    """A deterministic walk through the sequence, step by step."""
    net = new_net(0, 0)
    a, b = net.ctls[A], net.ctls[B]
    net.begin_handover()
    net.to_switch(B)  # EQUAL
    net.to_controller(b)  # EQUAL confirmed -> publish READY
    assert net.store.record is ho.Step.READY
    net.note(a)  # A reads READY -> marker add + delete
    assert [m[0] for m in net.down[A]] == ["flow_mod", "flow_mod"]
    net.to_switch(A)
    net.to_switch(A)  # the cut
    for _ in range(3):
        net.step("packet", None)
    # B sees the marker first and then the packets: it buffers them (it is only EQUAL).
    net.to_controller(b)
    assert b.machine.state is ho.TargetState.CUT
    for _ in range(3):
        net.to_controller(b)
    assert net.handled == {}
    # A sees the marker: stops programming, barrier; the packets after it are not A's.
    net.to_controller(a)
    assert not a.may_program() and a.fsm.may_program
    for _ in range(3):
        net.to_controller(a)
    assert net.handled == {}
    net.run()
    assert {seq: who for seq, who in net.handled.items()} == {1: [B], 2: [B], 3: [B]}
    net.check_switch()


# ---- aborts and failures ------------------------------------------------------------------


def test_switch_refusing_equal_aborts_and_the_source_keeps_everything():
    net = new_net(1, 20, refuse_equal=True)
    net.run(faults={5: lambda n: n.begin_handover()})
    assert net.twice() == {} and net.unhandled() == []
    assert {who for (who,) in net.handled.values()} == {A}
    assert net.ctls[B].finished[0].outcome is ho.Outcome.ABORTED
    assert net.ctls[A].finished[0].outcome is ho.Outcome.ABORTED
    assert net.store.record is ho.Step.ABORTED
    net.check_switch()
    assert net.store.leader == A and net.store.term == net.start_term  # no new term


def _fault_run(seed: int, packets: int, when: int, fault: Any) -> Net:
    net = new_net(seed, packets)
    net.begin_handover(ho.HandoverTiming(step_timeout=1.0))
    net.run(faults={when: fault})
    return net


FAULTS = {
    "kill target": lambda n: n.kill(B),
    "kill source": lambda n: n.kill(A),
    "stall target": lambda n: n.stall(B, 3.0),
    "stall source": lambda n: n.stall(A, 3.0),
}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), packets=st.integers(0, 30), when=st.integers(0, 60),
       fault=st.sampled_from(sorted(FAULTS)))
def test_a_failure_at_any_point_leaves_one_master_and_no_packet_handled_twice(
        seed, packets, when, fault):
    net = _fault_run(seed, packets, when, FAULTS[fault])
    assert net.twice() == {}
    net.check_switch()
    assert net.store.leader is not None
    for ctl in net.live():
        assert ctl.machine.finished and len(ctl.finished) == 1
    lost = net.unhandled()
    if fault != "kill source":
        # The source lived: every packet before the cut was handled (by it). Packets after the
        # cut are lost only when a stall or death aborted the handover or killed their handler.
        assert not lost or (net.cut_seq is not None and min(lost) > net.cut_seq), lost
    if fault.startswith("stall"):
        # Nobody died: whether the stall aborted the handover or only delayed it, every
        # packet-in was handled (an aborting source handles its copies since the cut).
        assert lost == []


@pytest.mark.parametrize("seed", range(40))
def test_stalled_target_aborts_and_the_source_keeps_the_switch_losing_nothing(seed):
    """The target stalls (5 s, step timeout 1 s) early in the handover: the source aborts when
    the target's next step does not come and resumes under its unchanged term, handling its
    copies of the packet-ins since its cut; the stalled target drops its buffer on waking."""
    net = new_net(seed, 30)
    net.begin_handover(ho.HandoverTiming(step_timeout=1.0))
    net.run(faults={6: lambda n: n.stall(B, 5.0)})
    assert net.twice() == {} and net.unhandled() == []
    assert {who for (who,) in net.handled.values()} == {A}
    assert [f.outcome for f in net.ctls[A].finished] == [ho.Outcome.ABORTED]
    assert net.store.record is ho.Step.ABORTED
    assert net.store.leader == A and net.store.term == net.start_term
    net.check_switch()


def test_target_dies_after_the_cut_the_source_resumes_under_its_term():
    net = new_net(3, 0)
    a, b = net.ctls[A], net.ctls[B]
    net.begin_handover()
    net.to_switch(B)
    net.to_controller(b)
    net.note(a)
    net.to_switch(A)
    net.to_switch(A)  # the cut
    net.to_controller(a)  # A past the cut: stops programming, barrier queued
    assert not a.may_program()
    for _ in range(3):
        net.step("packet", None)  # after the cut: B's, but B is about to die
    net.kill(B)
    for _ in range(3):
        net.to_controller(a)  # A keeps copies
    assert net.handled == {}
    net.packets_left = 5
    net.run()
    assert a.finished[0].outcome is ho.Outcome.ABORTED and a.may_program()
    assert net.store.leader == A and net.store.term == net.start_term
    # A handled its copies when it learned B died, and every packet after.
    assert net.twice() == {} and net.unhandled() == []
    assert {who for (who,) in net.handled.values()} == {A}
    net.check_switch()


def test_source_dies_after_the_cut_the_target_takes_over_with_its_buffer():
    net = new_net(4, 0)
    a, b = net.ctls[A], net.ctls[B]
    net.begin_handover()
    net.to_switch(B)
    net.to_controller(b)
    net.note(a)
    net.to_switch(A)
    net.to_switch(A)  # the cut
    for _ in range(4):
        net.step("packet", None)
    net.to_controller(b)  # B: the cut
    for _ in range(4):
        net.to_controller(b)  # buffered
    net.kill(A)
    net.run()
    assert b.finished[0].outcome is ho.Outcome.COMPLETED
    assert {seq: who for seq, who in net.handled.items()} == {s: [B] for s in range(1, 5)}
    net.check_switch()
    assert net.store.leader == B and net.sw.master == B


def test_source_aborts_on_timeout_before_the_cut_and_target_drops_its_buffer():
    """The source's FLOW_REMOVED is slow: it times out and aborts while the target already
    buffers packets after the cut. The record says ABORTED, so the target never delivers, and
    the source handles every packet (it never passed its own cut)."""
    timing = ho.HandoverTiming(step_timeout=1.0)
    net = new_net(5, 0)
    a, b = net.ctls[A], net.ctls[B]
    net.begin_handover(timing)
    net.to_switch(B)
    net.to_controller(b)
    net.note(a)
    net.to_switch(A)
    net.to_switch(A)  # the cut at the switch
    for _ in range(3):
        net.step("packet", None)
    net.to_controller(b)
    for _ in range(3):
        net.to_controller(b)
    assert b.machine.state is ho.TargetState.CUT
    net.now += 1.5
    net.perform(a, a.machine.tick(net.now))  # A: no FLOW_REMOVED yet -> abort
    assert net.store.record is ho.Step.ABORTED
    net.run()
    assert b.finished[0].outcome is ho.Outcome.ABORTED and b.finished[0].dropped == 3
    assert {seq: who for seq, who in net.handled.items()} == {s: [A] for s in range(1, 4)}
    net.check_switch()
    assert net.store.leader == A


def test_released_then_source_timeout_races_target_taken_exactly_one_wins():
    for first in ("source abort", "target taken"):
        net = new_net(6, 0)
        a, b = net.ctls[A], net.ctls[B]
        net.begin_handover(ho.HandoverTiming(step_timeout=1.0))
        net.to_switch(B)
        net.to_controller(b)
        net.note(a)
        net.to_switch(A)
        net.to_switch(A)
        net.to_controller(a)  # A's cut -> barrier
        net.to_switch(A)
        net.to_controller(a)  # barrier reply -> publish RELEASED
        net.note(a)  # published ok
        assert net.store.record is ho.Step.RELEASED
        net.now += 1.5
        if first == "source abort":
            net.perform(a, a.machine.tick(net.now))
            assert net.store.record is ho.Step.ABORTED
        net.to_controller(b)  # B's cut
        while b.notes:
            net.note(b)  # RELEASED (and maybe ABORTED) -> TAKEN attempt
        net.run()
        net.check_switch()
        assert net.twice() == {}
        winner = A if first == "source abort" else B
        assert net.store.leader == winner, first


def test_target_never_confirmed_aborts_from_taken_and_source_resumes():
    """TAKEN, but the store never elects the target (its priority change is lost): the target
    aborts from TAKEN after its timeout, and the source, still the leader, resumes."""
    net = new_net(7, 0)
    a, b = net.ctls[A], net.ctls[B]
    net.store.set_priority = lambda member, priority: None  # the store ignores it
    net.begin_handover(ho.HandoverTiming(step_timeout=1.0))
    net.run()
    assert net.store.record is ho.Step.ABORTED
    assert b.finished[0].outcome is ho.Outcome.ABORTED
    assert a.finished[0].outcome is ho.Outcome.ABORTED and a.may_program()
    net.packets_left = 5
    net.run()
    assert {seq for seq, who in net.handled.items() if who == [A]} == set(range(1, 6))
    net.check_switch()


# ---- the machines alone ------------------------------------------------------------------


def test_marker_cookie_is_tagged_and_unique_per_handover():
    assert ho.is_marker_cookie(ho.marker_cookie(0)) and ho.is_marker_cookie(ho.marker_cookie(5))
    assert ho.marker_cookie(1) != ho.marker_cookie(2)
    assert not ho.is_marker_cookie(0x1234)
    with pytest.raises(ValueError, match="handover id"):
        ho.marker_cookie(-1)


def test_timing_rejects_bad_values():
    with pytest.raises(ValueError, match="step_timeout"):
        ho.HandoverTiming(step_timeout=0)
    with pytest.raises(ValueError, match="marker_hard_timeout"):
        ho.HandoverTiming(marker_hard_timeout=0)


def test_target_buffer_overflow_is_counted_as_dropped():
    t = ho.HandoverTarget(DPID, HID, ho.HandoverTiming(max_buffer=2))
    [req] = t.start(0.0)
    t.role_reply(req.xid, mfsm.Role.EQUAL, 0.0)
    t.published(ho.Step.READY, True, 0.0)
    t.flow_removed(t.cookie, 0.1)
    assert [t.packet_in(i) for i in range(3)] == [ho.Verdict.BUFFERED] * 3
    t.peer_step(ho.Step.RELEASED, 0.2)
    assert t.published(ho.Step.TAKEN, True, 0.2) == [ho.TakeLeadership(DPID)]
    deliver, finished = t.master_confirmed(9, 0.3)
    assert deliver == ho.Deliver(DPID, (0, 1)) and finished.dropped == 1


def test_target_ignores_other_cookies_and_packets_before_its_cut():
    t = ho.HandoverTarget(DPID, HID)
    [req] = t.start(0.0)
    assert t.packet_in("p") is ho.Verdict.IGNORE
    t.role_reply(req.xid, mfsm.Role.EQUAL, 0.0)
    t.published(ho.Step.READY, True, 0.0)
    assert t.flow_removed(ho.marker_cookie(HID + 1), 0.1) == []
    assert t.state is ho.TargetState.READY and t.packet_in("p") is ho.Verdict.IGNORE


def test_source_times_out_waiting_for_ready_and_keeps_programming():
    s = ho.HandoverSource(DPID, HID, ho.HandoverTiming(step_timeout=2.0))
    s.start(0.0)
    assert s.tick(1.9) == [] and s.next_deadline() == 2.0
    [publish] = s.tick(2.0)
    assert publish.step is ho.Step.ABORTED and ho.Step.TAKEN not in publish.expect
    [finished] = s.published(ho.Step.ABORTED, True, 2.1)
    assert finished.outcome is ho.Outcome.ABORTED and s.may_program
    assert s.packet_in("p") is ho.Verdict.GUARD


def test_late_marker_after_source_abort_is_ignored():
    s = ho.HandoverSource(DPID, HID, ho.HandoverTiming(step_timeout=1.0))
    s.start(0.0)
    s.peer_step(ho.Step.READY, 0.1)
    s.tick(1.2)
    s.published(ho.Step.ABORTED, True, 1.3)
    assert s.flow_removed(s.cookie, 1.4) == [] and s.may_program


def test_source_gives_up_when_the_switch_refuses_the_marker():
    s = ho.HandoverSource(DPID, HID)
    s.start(0.0)
    add, delete = s.peer_step(ho.Step.READY, 0.1)
    assert isinstance(add, ho.AddMarker) and isinstance(delete, ho.DeleteMarker)
    assert add.cookie == delete.cookie == ho.marker_cookie(HID)
    [publish] = s.switch_error(0.2)
    assert publish.step is ho.Step.ABORTED
    [finished] = s.published(ho.Step.ABORTED, True, 0.3)
    assert finished.outcome is ho.Outcome.ABORTED and s.may_program


def test_once_elected_the_target_waits_for_the_switch_without_a_handover_timeout():
    t = ho.HandoverTarget(DPID, HID, ho.HandoverTiming(step_timeout=1.0))
    [req] = t.start(0.0)
    t.role_reply(req.xid, mfsm.Role.EQUAL, 0.0)
    t.published(ho.Step.READY, True, 0.0)
    t.flow_removed(t.cookie, 0.1)
    t.peer_step(ho.Step.RELEASED, 0.1)
    t.published(ho.Step.TAKEN, True, 0.2)
    assert t.next_deadline() == 1.2
    assert t.tick(1.2) == [ho.CheckLeadership(DPID)]  # timed out: ask before giving up
    assert t.leadership_checked(True, 1.3) == [] and t.next_deadline() is None
    t.elected(9, 1.4)
    assert t.tick(100.0) == []
    assert isinstance(t.master_confirmed(9, 100.0)[0], ho.Deliver)


def test_source_loses_the_race_to_taken_and_waits_for_the_election():
    s = ho.HandoverSource(DPID, HID, ho.HandoverTiming(step_timeout=1.0))
    s.start(0.0)
    s.peer_step(ho.Step.READY, 0.0)
    [_, barrier] = s.flow_removed(s.cookie, 0.1)
    [released] = s.barrier_reply(barrier.xid, 0.2)
    assert released.step is ho.Step.RELEASED and released.expect == {ho.Step.READY}
    s.published(ho.Step.RELEASED, True, 0.3)
    [abort] = s.tick(1.3)
    assert abort.step is ho.Step.ABORTED and ho.Step.TAKEN not in abort.expect
    assert s.published(ho.Step.ABORTED, False, 1.4) == []  # the target wrote TAKEN first
    assert not s.may_program and s.next_deadline() is None
    assert s.packet_in("p") is ho.Verdict.BUFFERED  # a copy, in case the target aborts
    [done] = s.leadership_lost(2.0)  # the target was elected: the copy was its packet
    assert done.outcome is ho.Outcome.COMPLETED


def test_target_not_elected_after_taken_gives_up_when_the_store_says_so():
    t = ho.HandoverTarget(DPID, HID, ho.HandoverTiming(step_timeout=1.0))
    [req] = t.start(0.0)
    t.role_reply(req.xid, mfsm.Role.EQUAL, 0.0)
    t.published(ho.Step.READY, True, 0.0)
    t.flow_removed(t.cookie, 0.1)
    t.packet_in("p")
    t.peer_step(ho.Step.RELEASED, 0.1)
    t.published(ho.Step.TAKEN, True, 0.2)
    assert t.tick(1.2) == [ho.CheckLeadership(DPID)]
    [publish] = t.leadership_checked(False, 1.3)
    assert publish.step is ho.Step.ABORTED and ho.Step.TAKEN in publish.expect
    [finished] = t.published(ho.Step.ABORTED, True, 1.4)
    assert finished.outcome is ho.Outcome.ABORTED and finished.dropped == 1
