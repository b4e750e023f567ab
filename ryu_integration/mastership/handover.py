"""Planned handover of one switch between two live controllers: pure state machines, no Ryu.

What: the two sides of ElastiCon's migration protocol (Dixit et al., "Towards an Elastic
Distributed SDN Controller", HotSDN 2013), fitted to OpenFlow 1.3 roles and to this project's
fencing (the store's terms are the switch's generation_ids). `HandoverSource` runs on the current
master, `HandoverTarget` on the controller taking the switch over. Like `fsm.py`, the
app feeds them inputs (switch replies, the move record's steps, leadership, time) and performs
the actions they return; unit tests drive them against `testing/fake_switch.py`.
Why: moving a switch by simply changing the election's leader loses the packet-ins in flight
(the old master stops, the new one has not started) and lets the old master's late flow-mods
land after the new one re-synced. The marker gives both controllers the same cut in the
switch's own event order, and the barrier drains the old master's writes before the new term.

The sequence (the move record is one key in the store, written only by compare-and-set, so the
two sides can never both win a race; see docs/balancing.md for the diagram):
1. The record is created at REQUESTED. The target asks the switch for ROLE EQUAL (an EQUAL
   channel receives packet-ins and FLOW_REMOVED like a master, and no generation_id changes),
   and on the reply publishes READY.
2. The source, still MASTER, adds a marker flow (unique cookie, OFPFF_SEND_FLOW_REM, a hard
   timeout as a safety net) and deletes it at once. The switch sends the marker's FLOW_REMOVED
   to the master and to the EQUAL target in the same place of its event stream: the cut.
3. Packet-ins before the cut are the source's; it handles them as usual (they arrive on its
   connection before its FLOW_REMOVED, so its writes for them are sent before step 4). Packet-ins
   after the cut are the target's: the target *buffers* them (it is only EQUAL, so acting on
   them now could race the source's last writes and would not be fenced by a term); the source
   keeps a copy it handles only if the handover aborts. The target ignores the packet-ins before
   its own copy of the marker.
4. At its FLOW_REMOVED the source stops programming and sends a BARRIER; at the reply every
   write it made is applied, and it publishes RELEASED.
5. The target, once it has both seen the cut and read RELEASED, publishes TAKEN and asks the
   store for the leadership (the glue raises its campaign's priority, preempting the source).
   The store elects it under a new, larger term; the mastership machine claims MASTER with that
   generation_id, and the switch demotes the source to SLAVE. Once the switch confirms it, the
   target handles its buffered packet-ins in arrival order, then the new ones as master.

Aborts (timeouts, refusals, a side dying) keep exactly one master, because until the target's
MASTER claim with a new term the source stays MASTER at the switch:
- before RELEASED: whoever gives up publishes ABORTED; the source resumes under its unchanged
  term and handles its copies of the packet-ins since its cut; the target drops what it
  buffered and its role goes back to SLAVE through the mastership machine;
- RELEASED, not TAKEN: the source may publish ABORTED after its timeout and resume; the target's
  TAKEN then fails and it drops its buffer. Exactly one of the two compare-and-sets wins;
- TAKEN: the election decides. The target delivers its buffer only when the switch confirmed it
  MASTER; if the store, asked after the timeout, says it is not the leader, it publishes ABORTED
  itself (from TAKEN, allowed only to the target) and drops the buffer, and the source resumes
  with its copies. Once elected, the mastership machine's own retries get the switch's
  confirmation;
- a side's session lost (the store says it is dead): the survivor resumes (source) or takes
  the leadership through the election (target after the cut; before the cut it drops out).
So the source resumes (and handles its copies) only after an ABORTED record or the target's
death, and the target delivers only after TAKEN (or the source's death or loss of leadership)
and MASTER without having seen ABORTED: a packet-in is never handled twice. Packet-ins are lost
only with a controller that dies holding them, or when a third controller wins the election.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .fsm import Role, SendRoleRequest, xid_counter

#: Cookies of marker flows: this tag in the top byte, the handover id below.
MARKER_COOKIE_TAG = 0xC5 << 56
_ID_MASK = 2**56 - 1
#: The marker's match: an IEEE 802 local experimental ethertype, at priority 0 in table 0, so it
#: never shadows a real flow and never matches real traffic ahead of one.
MARKER_ETH_TYPE = 0x88B6
MARKER_PRIORITY = 0
MARKER_TABLE = 0


def marker_cookie(handover_id: int) -> int:
    """The marker flow's cookie for one handover (both sides derive it from the record)."""
    if isinstance(handover_id, bool) or not isinstance(handover_id, int) or handover_id < 0:
        raise ValueError(f"handover id must be an integer >= 0, got {handover_id!r}")
    return MARKER_COOKIE_TAG | (handover_id & _ID_MASK)


def is_marker_cookie(cookie: int) -> bool:
    """True for any handover's marker cookie (so other apps can ignore its FLOW_REMOVED)."""
    return cookie >> 56 == MARKER_COOKIE_TAG >> 56


class Step(enum.Enum):
    """The move record's state in the store."""

    REQUESTED = "requested"
    READY = "ready"  # the target is EQUAL
    RELEASED = "released"  # the source passed the cut and drained its writes
    TAKEN = "taken"  # the target is taking the leadership
    ABORTED = "aborted"


class Verdict(enum.Enum):
    """What to do with a packet-in while a handover runs."""

    GUARD = "guard"  # not the handover's business: the usual only_master guard decides
    IGNORE = "ignore"  # the other controller handles it
    BUFFERED = "buffered"  # kept; delivered by `Deliver` once the switch confirms us master


class Outcome(enum.Enum):
    COMPLETED = "completed"
    ABORTED = "aborted"


@dataclass(frozen=True)
class HandoverTiming:
    """Knobs (ryu.conf `handover_step_timeout`, `handover_max_buffer`)."""

    #: Longest wait for each step (the peer's next record step, a reply from the switch).
    step_timeout: float = 5.0
    #: The marker's hard timeout (seconds): removes it even if the delete never arrives.
    marker_hard_timeout: int = 10
    #: Packet-ins the target keeps between the cut and its MASTER confirmation; more are dropped
    #: and counted (`Finished.dropped`).
    max_buffer: int = 10_000

    def __post_init__(self) -> None:
        if self.step_timeout <= 0:
            raise ValueError(f"step_timeout must be > 0, got {self.step_timeout!r}")
        if not 1 <= self.marker_hard_timeout <= 65535:
            raise ValueError(f"marker_hard_timeout must be in 1..65535, got "
                             f"{self.marker_hard_timeout!r}")
        if self.max_buffer < 0:
            raise ValueError(f"max_buffer must be >= 0, got {self.max_buffer!r}")


# ---- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Publish:
    """Compare-and-set the move record to `step` if it is now one of `expect`; report the
    result with `published(step, ok)`."""

    dpid: int
    handover_id: int
    step: Step
    expect: frozenset[Step]


@dataclass(frozen=True)
class AddMarker:
    """FLOW_MOD ADD: table MARKER_TABLE, priority MARKER_PRIORITY, match eth_type=MARKER_ETH_TYPE,
    `cookie`, flags OFPFF_SEND_FLOW_REM, `hard_timeout`, no instructions (drop)."""

    dpid: int
    cookie: int
    hard_timeout: int


@dataclass(frozen=True)
class DeleteMarker:
    """FLOW_MOD DELETE_STRICT of the marker (same table, priority, match), cookie_mask all ones."""

    dpid: int
    cookie: int


@dataclass(frozen=True)
class SendBarrier:
    dpid: int
    xid: int


@dataclass(frozen=True)
class StopProgramming:
    """The source passed the cut: from now on it sends nothing state-changing to the switch
    (its `may_program` is false until the handover is finished)."""

    dpid: int


@dataclass(frozen=True)
class TakeLeadership:
    """Make this controller the election's leader (raise its campaign's priority above the
    source's), so the store elects it under a new term."""

    dpid: int


@dataclass(frozen=True)
class CheckLeadership:
    """Read the election's leader from the store and feed `leadership_checked(is_us)`."""

    dpid: int


@dataclass(frozen=True)
class Deliver:
    """Handle these buffered packet-ins now, in this order, as master."""

    dpid: int
    packets: tuple[Any, ...]


@dataclass(frozen=True)
class Finished:
    """The handover is over; the glue drops the machine. After an abort the target's role goes
    back to SLAVE through the mastership machine (re-assert) and its priority back to normal."""

    dpid: int
    outcome: Outcome
    reason: str
    #: Packet-ins this side had buffered and will never handle (aborts, buffer overflow).
    dropped: int = 0


Action = Publish | AddMarker | DeleteMarker | SendBarrier | StopProgramming | TakeLeadership | \
    CheckLeadership | Deliver | Finished | SendRoleRequest


@dataclass
class _Buffer:
    limit: int
    packets: list[Any] = field(default_factory=list)
    dropped: int = 0

    def add(self, packet: Any) -> None:
        if len(self.packets) < self.limit:
            self.packets.append(packet)
        else:
            self.dropped += 1

    def take(self) -> tuple[Any, ...]:
        out, self.packets = tuple(self.packets), []
        return out

    def drop(self) -> int:
        n = len(self.packets) + self.dropped
        self.packets, self.dropped = [], 0
        return n


# ---- the old master -----------------------------------------------------------------------


class SourceState(enum.Enum):
    AWAIT_READY = "await_ready"  # waiting for the target to be EQUAL
    MARKING = "marking"  # marker added and deleted, waiting for its FLOW_REMOVED
    FLUSHING = "flushing"  # past the cut, barrier sent
    RELEASING = "releasing"  # publishing RELEASED
    RELEASED = "released"  # waiting for the target to take the leadership
    ABORTING = "aborting"  # publishing ABORTED
    DONE = "done"


class HandoverSource:
    """The current master's side of one handover (one switch, one handover id)."""

    def __init__(
        self,
        dpid: int,
        handover_id: int,
        timing: HandoverTiming | None = None,
        *,
        next_xid: Callable[[], int] | None = None,
    ) -> None:
        self.dpid = dpid
        self.handover_id = handover_id
        self.cookie = marker_cookie(handover_id)
        self.timing = timing or HandoverTiming()
        self._next_xid = next_xid or xid_counter(0xC8000000)
        self.state = SourceState.AWAIT_READY
        self.outcome: Outcome | None = None
        self._barrier_xid: int | None = None
        self._deadline: float | None = None
        self._past_cut = False
        self._abort_reason = ""
        #: Copies of the packet-ins after the cut: handled by us if the handover aborts.
        self._copies = _Buffer(self.timing.max_buffer)

    @property
    def finished(self) -> bool:
        return self.state is SourceState.DONE

    @property
    def may_program(self) -> bool:
        """False from the cut until the handover is over (AND it with the mastership's)."""
        return not self._past_cut or self.finished

    def next_deadline(self) -> float | None:
        return None if self.finished else self._deadline

    def start(self, now: float) -> list[Action]:
        """The move record exists (REQUESTED): wait for the target."""
        self._deadline = now + self.timing.step_timeout
        return []

    def packet_in(self, packet: Any) -> Verdict:
        """Before the cut ours (the guard decides, we are master). After it the target's: we
        keep a copy, handled by us only if the handover aborts (then the target never does)."""
        if self._past_cut and not self.finished:
            self._copies.add(packet)
            return Verdict.BUFFERED
        return Verdict.GUARD

    def peer_step(self, step: Step, now: float) -> list[Action]:
        """The move record changed (written by the target, or read back)."""
        if self.finished:
            return []
        if step is Step.READY and self.state is SourceState.AWAIT_READY:
            self.state = SourceState.MARKING
            self._deadline = now + self.timing.step_timeout
            return [AddMarker(self.dpid, self.cookie, self.timing.marker_hard_timeout),
                    DeleteMarker(self.dpid, self.cookie)]
        if step is Step.ABORTED:
            return self._finish(Outcome.ABORTED, "the target aborted")
        if step is Step.TAKEN:
            self._deadline = None  # the election decides now (see module docstring)
        return []

    def flow_removed(self, cookie: int, now: float) -> list[Action]:
        """A FLOW_REMOVED on our channel; ours is the cut."""
        if cookie != self.cookie or self.state is not SourceState.MARKING:
            return []
        self._past_cut = True
        self.state = SourceState.FLUSHING
        self._barrier_xid = self._next_xid()
        self._deadline = now + self.timing.step_timeout
        return [StopProgramming(self.dpid), SendBarrier(self.dpid, self._barrier_xid)]

    def barrier_reply(self, xid: int, now: float) -> list[Action]:
        if xid != self._barrier_xid or self.state is not SourceState.FLUSHING:
            return []
        self.state = SourceState.RELEASING
        self._deadline = now + self.timing.step_timeout
        return [self._publish(Step.RELEASED, Step.READY)]

    def switch_error(self, now: float) -> list[Action]:
        """The switch refused the marker (any OFPT_ERROR for it): give up before the cut."""
        if self.state in (SourceState.AWAIT_READY, SourceState.MARKING):
            return self._abort(now, "the switch refused the marker")
        return []

    def published(self, step: Step, ok: bool, now: float) -> list[Action]:
        """The result of our `Publish`."""
        if step is Step.RELEASED and self.state is SourceState.RELEASING:
            if ok:
                self.state = SourceState.RELEASED
                self._deadline = now + self.timing.step_timeout
                return []
            return self._finish(Outcome.ABORTED, "the record was aborted before RELEASED")
        if step is Step.ABORTED and self.state is SourceState.ABORTING:
            if ok:
                return self._finish(Outcome.ABORTED, self._abort_reason)
            # The target won the race with TAKEN: it is taking over; the election decides.
            self.state = SourceState.RELEASED
            self._deadline = None
        return []

    def leadership_lost(self, now: float) -> list[Action]:
        """Our leadership of the switch ended (revoked, or a newer leader seen)."""
        if self.finished:
            return []
        if self._past_cut:
            return self._finish(Outcome.COMPLETED, "the target took the leadership")
        return self._finish(Outcome.ABORTED, "lost the leadership before the cut")

    def peer_lost(self, now: float) -> list[Action]:
        """The target's session is gone: it can never be elected, so resume."""
        if self.finished:
            return []
        return self._finish(Outcome.ABORTED, "the target died")

    def tick(self, now: float) -> list[Action]:
        if self.finished or self._deadline is None or now < self._deadline:
            return []
        what = {
            SourceState.AWAIT_READY: "the target never became EQUAL",
            SourceState.MARKING: "the marker's FLOW_REMOVED never came",
            SourceState.FLUSHING: "no barrier reply",
            SourceState.RELEASING: "publishing RELEASED timed out",
            SourceState.RELEASED: "the target never took the leadership",
            SourceState.ABORTING: "publishing ABORTED timed out",
        }[self.state]
        if self.state is SourceState.ABORTING:
            # Unknown outcome: ask again (the record is the only judge).
            self._deadline = now + self.timing.step_timeout
            return [self._publish(Step.ABORTED, *_ABORTABLE_BY_SOURCE)]
        return self._abort(now, what)

    # ---- internals -------------------------------------------------------------------------

    def _abort(self, now: float, why: str) -> list[Action]:
        self._abort_reason = why
        self.state = SourceState.ABORTING
        self._deadline = now + self.timing.step_timeout
        return [self._publish(Step.ABORTED, *_ABORTABLE_BY_SOURCE)]

    def _publish(self, step: Step, *expect: Step) -> Publish:
        return Publish(self.dpid, self.handover_id, step, frozenset(expect))

    def _finish(self, outcome: Outcome, why: str) -> list[Action]:
        self.state = SourceState.DONE
        self.outcome = outcome
        self._deadline = None
        if outcome is Outcome.ABORTED and self._past_cut:
            # ABORTED is final (the target can no longer write TAKEN) or the target is dead, so
            # nobody else will handle the packets since the cut: they are ours again.
            packets, dropped = self._copies.take(), self._copies.drop()
            return [Deliver(self.dpid, packets), Finished(self.dpid, outcome, why, dropped)]
        self._copies.drop()  # the target's (or, if someone else was elected, lost)
        return [Finished(self.dpid, outcome, why)]


#: The source may abort until the target has written TAKEN.
_ABORTABLE_BY_SOURCE = (Step.REQUESTED, Step.READY, Step.RELEASED)
#: The target may abort from any live step, TAKEN included (only it writes TAKEN).
_ABORTABLE_BY_TARGET = (Step.REQUESTED, Step.READY, Step.RELEASED, Step.TAKEN)


# ---- the new master -----------------------------------------------------------------------


class TargetState(enum.Enum):
    EQUAL_REQUESTED = "equal_requested"
    READYING = "readying"  # EQUAL confirmed, publishing READY
    READY = "ready"  # waiting for the marker
    CUT = "cut"  # past the cut, buffering, waiting for RELEASED
    TAKING = "taking"  # publishing TAKEN
    CLAIMING = "claiming"  # TAKEN; waiting for the election and the switch's confirmation
    ABORTING = "aborting"
    DONE = "done"


class HandoverTarget:
    """The new master's side of one handover (one switch, one handover id)."""

    def __init__(
        self,
        dpid: int,
        handover_id: int,
        timing: HandoverTiming | None = None,
        *,
        next_xid: Callable[[], int] | None = None,
    ) -> None:
        self.dpid = dpid
        self.handover_id = handover_id
        self.cookie = marker_cookie(handover_id)
        self.timing = timing or HandoverTiming()
        self._next_xid = next_xid or xid_counter(0xC8000000)
        self.state = TargetState.EQUAL_REQUESTED
        self.outcome: Outcome | None = None
        self.released = False
        self._equal_xid: int | None = None
        self._deadline: float | None = None
        self._buffer = _Buffer(self.timing.max_buffer)
        self._abort_reason = ""

    @property
    def finished(self) -> bool:
        return self.state is TargetState.DONE

    @property
    def past_cut(self) -> bool:
        return self.state in (TargetState.CUT, TargetState.TAKING, TargetState.CLAIMING)

    def next_deadline(self) -> float | None:
        return None if self.finished else self._deadline

    def start(self, now: float) -> list[Action]:
        """The move record exists (REQUESTED): ask the switch for EQUAL."""
        self._equal_xid = self._next_xid()
        self._deadline = now + self.timing.step_timeout
        return [SendRoleRequest(self.dpid, Role.EQUAL, 0, self._equal_xid,
                                f"handover {self.handover_id}: become EQUAL")]

    def owns_xid(self, xid: int) -> bool:
        """Route a ROLE_REPLY / role error to this machine rather than the mastership one."""
        return xid == self._equal_xid

    def packet_in(self, packet: Any) -> Verdict:
        """Before our copy of the marker the source's; after it ours, kept until we are master."""
        if self.finished:
            return Verdict.GUARD
        if self.past_cut:
            self._buffer.add(packet)
            return Verdict.BUFFERED
        return Verdict.IGNORE

    def role_reply(self, xid: int, role: Role, now: float) -> list[Action]:
        if xid != self._equal_xid or self.state is not TargetState.EQUAL_REQUESTED:
            return []
        if role is not Role.EQUAL:
            return self._abort(now, f"asked EQUAL, the switch says {role.value}")
        self.state = TargetState.READYING
        self._deadline = now + self.timing.step_timeout
        return [self._publish(Step.READY, Step.REQUESTED)]

    def role_error(self, xid: int, now: float) -> list[Action]:
        if xid != self._equal_xid or self.state is not TargetState.EQUAL_REQUESTED:
            return []
        return self._abort(now, "the switch refused EQUAL")

    def published(self, step: Step, ok: bool, now: float) -> list[Action]:
        if step is Step.READY and self.state is TargetState.READYING:
            if not ok:
                return self._finish(Outcome.ABORTED, "the record was aborted before READY")
            self.state = TargetState.READY
            self._deadline = now + self.timing.step_timeout
            return []
        if step is Step.TAKEN and self.state is TargetState.TAKING:
            if not ok:
                return self._finish(Outcome.ABORTED, "the source aborted before TAKEN")
            self.state = TargetState.CLAIMING
            self._deadline = now + self.timing.step_timeout
            return [TakeLeadership(self.dpid)]
        if step is Step.ABORTED and self.state is TargetState.ABORTING:
            return self._finish(Outcome.ABORTED, self._abort_reason)
        return []

    def flow_removed(self, cookie: int, now: float) -> list[Action]:
        """A FLOW_REMOVED on our channel; the marker's is the cut. It may come before the
        result of our READY (the source reacts to the record, not to us)."""
        if cookie != self.cookie or self.state not in (TargetState.READYING, TargetState.READY):
            return []
        self.state = TargetState.CUT
        self._deadline = now + self.timing.step_timeout
        return self._take(now) if self.released else []

    def peer_step(self, step: Step, now: float) -> list[Action]:
        if self.finished:
            return []
        if step is Step.RELEASED:
            self.released = True
            if self.state is TargetState.CUT:
                return self._take(now)
            return []
        if step is Step.ABORTED and self.state is not TargetState.ABORTING:
            return self._finish(Outcome.ABORTED, "the source aborted")
        return []

    def elected(self, term: int, now: float) -> list[Action]:
        """The store made us leader. While claiming, the rest is the mastership machine's job
        (it retries the MASTER request until the switch answers): no more handover timeout."""
        if self.state is TargetState.CLAIMING:
            self._deadline = None
        return []

    def master_confirmed(self, term: int, now: float) -> list[Action]:
        """The switch confirmed us MASTER under our new term (the mastership machine's
        `may_program` became true)."""
        if self.finished:
            return []
        if self.past_cut:
            # Past the cut and no ABORTED seen: the source has not handled these packets and
            # will not (it passed its own cut, died, or lost the leadership, which the store
            # reports after any ABORTED it wrote: the glue feeds store events in order).
            packets = self._buffer.take()
            dropped = self._buffer.drop()
            return [Deliver(self.dpid, packets)] + self._finish(
                Outcome.COMPLETED, f"master under term {term}", dropped)
        # Elected by the normal path before the cut (the source died early): nothing buffered.
        return self._finish(Outcome.ABORTED, f"became master by election, term {term}")

    def leadership_lost(self, now: float) -> list[Action]:
        """Another controller leads under a newer term: the election chose someone else."""
        if self.finished:
            return []
        return self._finish(Outcome.ABORTED, "another controller was elected")

    def peer_lost(self, now: float) -> list[Action]:
        """The source's session is gone. Past the cut the packets are ours: take the switch."""
        if self.finished:
            return []
        if self.state is TargetState.CUT:
            self.state = TargetState.CLAIMING
            self._deadline = now + self.timing.step_timeout
            return [TakeLeadership(self.dpid)]
        if self.state in (TargetState.TAKING, TargetState.CLAIMING):
            return []
        return self._finish(Outcome.ABORTED, "the source died before the cut")

    def tick(self, now: float) -> list[Action]:
        if self.finished or self._deadline is None or now < self._deadline:
            return []
        what = {
            TargetState.EQUAL_REQUESTED: "no reply to the EQUAL request",
            TargetState.READYING: "publishing READY timed out",
            TargetState.READY: "the marker's FLOW_REMOVED never came",
            TargetState.CUT: "the source never released",
            TargetState.TAKING: "publishing TAKEN timed out",
            TargetState.CLAIMING: "the switch never confirmed us master",
            TargetState.ABORTING: "publishing ABORTED timed out",
        }[self.state]
        if self.state is TargetState.ABORTING:
            self._deadline = now + self.timing.step_timeout
            return [self._publish(Step.ABORTED, *_ABORTABLE_BY_TARGET)]
        if self.state is TargetState.CLAIMING:
            # The source may have handed over already (it drops its copies once deposed): ask
            # the store before giving up, never abort on a stale view (e.g. after a pause).
            self._deadline = now + self.timing.step_timeout
            return [CheckLeadership(self.dpid)]
        return self._abort(now, what)

    def leadership_checked(self, is_leader: bool, now: float) -> list[Action]:
        """The answer to `CheckLeadership`: not elected after TAKEN and a timeout: give up."""
        if self.state is not TargetState.CLAIMING:
            return []
        if is_leader:
            self._deadline = None  # elected: the mastership machine gets the confirmation
            return []
        return self._abort(now, "the store did not elect us after TAKEN")

    # ---- internals -------------------------------------------------------------------------

    def _take(self, now: float) -> list[Action]:
        self.state = TargetState.TAKING
        self._deadline = now + self.timing.step_timeout
        return [self._publish(Step.TAKEN, Step.RELEASED)]

    def _abort(self, now: float, why: str) -> list[Action]:
        self._abort_reason = why
        self.state = TargetState.ABORTING
        self._deadline = now + self.timing.step_timeout
        return [self._publish(Step.ABORTED, *_ABORTABLE_BY_TARGET)]

    def _publish(self, step: Step, *expect: Step) -> Publish:
        return Publish(self.dpid, self.handover_id, step, frozenset(expect))

    def _finish(self, outcome: Outcome, why: str, dropped: int = 0) -> list[Action]:
        self.state = TargetState.DONE
        self.outcome = outcome
        self._deadline = None
        dropped += self._buffer.drop()
        return [Finished(self.dpid, outcome, why, dropped)]
