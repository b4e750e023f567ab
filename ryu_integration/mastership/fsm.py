"""The mastership state machine of one datapath: pure logic, no Ryu, no I/O, no clock.

Shaped like Faucet's `valve.py`: the Ryu app (`mastership/app.py`) feeds it inputs (the OpenFlow
channel going up or down, election results, session state, role replies and errors, timer ticks,
each with the current monotonic time) and performs the actions it returns (send a role request,
report a mastership change, campaign, resign, re-read the leader). Unit tests drive it directly.

The rules, and the incident each one answers (issues reported against ONOS, kazoo and Ryu):
- A datapath counts as mastered only once the ROLE_REPLY whose xid matches our MASTER request
  confirms MASTER under our current term (ONOS-2885: writes between "elected" and the reply fail).
- The generation_id is always a term read from the store: our own term when elected, the newest
  leader term we know of otherwise (a SLAVE request is checked for staleness too). It is never
  guessed; with no known term we send nothing and ask the store again.
- Revoked, session LOST, a newer leader observed, IS_SLAVE, STALE or ROLE_STATUS (OpenFlow 1.4+:
  another controller became master) while master: stop acting as master at once (`may_program`
  drops in the same step), then claim SLAVE. When the *switch* said so (IS_SLAVE, STALE,
  ROLE_STATUS), MASTER is not claimed again until a fresh read of the store has answered: the
  store, not a retry, decides whether we still lead.
- Unfenced switches (OpenFlow 1.0 with the Nicira role extension: no generation_id, so the
  switch cannot refuse a stale master): a newly elected leader claims MASTER only once the
  previous master is known to have stopped (`CheckPredecessor` -> `predecessor_gone()`), or
  after `predecessor_timeout`; and a suspended session always holds (the switch cannot fence us).
- Session SUSPENDED: hold. `may_program` is false and nothing is sent, but no state is dropped;
  if the session survives (CONNECTED again) the roles are re-read and re-asserted. With
  `hold_on_suspend=False` (Curator's "session" error policy) a master keeps its role through a
  suspension and relies on the switch to fence it once a successor claims a newer term.
- STALE: re-read the leader from the store and retry with exponential backoff.
- A role request without a reply within `role_request_timeout` is re-sent under a fresh xid and
  the leader is re-read (SDFAB-821/977: switches sometimes never answer).
- Roles are re-asserted after every reconnect of the session and on every sign that the switch
  thinks otherwise (STALE, IS_SLAVE, ROLE_STATUS, an unanswered request); periodically too if
  `reassert_interval` > 0 (off by default: a periodic re-assert is one message per switch per
  interval, work that grows with the number of switches and that every pushed trigger covers).
- A connected switch is never left EQUAL once the election has an answer: while no role is
  confirmed and none can be chosen, the leader is re-read with backoff.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

#: OpenFlow generation_ids are unsigned 64-bit integers; xids 32-bit.
MAX_GENERATION_ID = 2**64 - 1
MAX_XID = 2**32 - 1
#: Outstanding (or timed-out) role requests remembered per datapath, to match late replies.
_MAX_TRACKED_REQUESTS = 16
#: STALE refusals in a row (no role confirmed in between) after which `stale_hint` explains them.
STALE_HINT_AFTER = 5
STALE_HINT = ("the switch refuses every role request as STALE: it has seen a larger generation_id "
              "than this store's terms for it, so it was mastered through another coordination "
              "store, or this store was reset. Reset the switch's role state: Open vSwitch keeps "
              "it across controller reconnects and set-controller, but forgets it when the "
              "bridge is deleted and re-added or ovs-vswitchd restarts")


#: What a `MastershipChanged.reason` says, in a few words fit for a metric label: the first
#: rule whose text the reason contains (they follow the reasons this module writes).
_REASON_CATEGORIES = (
    ("switch confirmed", "confirmed"),
    ("switch disconnected", "switch_down"),
    ("IS_SLAVE", "switch_demoted"),
    ("ROLE_STATUS", "switch_demoted"),
    ("refused", "refused"),
    ("asked ", "switch_disagrees"),
    ("leadership revoked", "revoked"),
    ("leads under newer term", "newer_leader"),
    ("fenced by the store", "fenced"),
    ("session", "session"),
)


def reason_category(reason: str) -> str:
    """A bounded name for a change's free-text reason (e.g. `revoked`, `session`)."""
    for text, category in _REASON_CATEGORIES:
        if text in reason:
            return category
    return "other"


class Role(enum.Enum):
    """A controller's role on one switch connection, as the switch last confirmed it."""

    NONE = "none"  # no OpenFlow channel
    EQUAL = "equal"  # connected, no role confirmed yet (the switch's default)
    MASTER = "master"
    SLAVE = "slave"


class Session(enum.Enum):
    """Coordination session state (mirrors `coordination.SessionState`, kept import-free)."""

    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


@dataclass(frozen=True)
class Timing:
    """Knobs of the state machine; seconds unless noted (see `config`)."""

    role_request_timeout: float = 3.0
    retry_initial: float = 0.2
    retry_max: float = 5.0
    reassert_interval: float = 0.0  # 0: no periodic re-assert
    hold_on_suspend: bool = True
    #: Unfenced switches only: longest wait for the previous master to stop before claiming.
    predecessor_timeout: float = 10.0

    def __post_init__(self) -> None:
        for name in ("role_request_timeout", "retry_initial", "retry_max",
                     "predecessor_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.reassert_interval < 0:
            raise ValueError(f"reassert_interval must be >= 0 (0: off), got "
                             f"{self.reassert_interval!r}")
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must be >= retry_initial")


# ---- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Campaign:
    """Join the datapath's election (the OpenFlow channel is up: onos-config#962)."""

    dpid: int


@dataclass(frozen=True)
class Resign:
    """Leave the datapath's election (channel gone, or elected without a channel)."""

    dpid: int


@dataclass(frozen=True)
class ReadLeader:
    """Read the election's leader from the store and feed it back with `leader_read()` (or
    `leader_read_failed()` if the store cannot be reached). `fresh`: ask the store itself, not
    what its watches last pushed (the switch has just contradicted what we believed)."""

    dpid: int
    fresh: bool = False


@dataclass(frozen=True)
class CheckPredecessor:
    """Unfenced switches: find out whether the switch's previous master has stopped (its session
    is gone, or it withdrew its Mastership record) and feed `predecessor_gone(term)` when so."""

    dpid: int
    term: int


@dataclass(frozen=True)
class SendRoleRequest:
    """Send OFPT_ROLE_REQUEST(role, generation_id) with exactly this xid."""

    dpid: int
    role: Role
    generation_id: int
    xid: int
    reason: str = ""


@dataclass(frozen=True)
class MastershipChanged:
    """What other apps see: the confirmed role, its term, and whether to program the switch."""

    dpid: int
    role: Role
    term: int
    may_program: bool
    reason: str = ""


Action = Campaign | Resign | ReadLeader | CheckPredecessor | SendRoleRequest | MastershipChanged


@dataclass
class _Request:
    role: Role
    generation_id: int
    sent_at: float
    timed_out: bool = False


def xid_counter(start: int = 0xC0000000) -> Callable[[], int]:
    """A 32-bit xid source. The default range keeps clear of the small xids a datapath's own
    counter tends to hand out; role replies are matched by type *and* xid anyway."""
    counter: Iterator[int] = itertools.count(start)
    return lambda: next(counter) & MAX_XID


def _check_generation_id(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_GENERATION_ID:
        raise ValueError(f"generation_id must be an unsigned 64-bit integer, got {value!r}")
    return value


class MastershipFSM:
    """Mastership of one datapath over one OpenFlow connection (create a new one per connection).

    Every input method takes `now` (a monotonic time in seconds) and returns the actions to
    perform, in order. `epoch` is opaque to the machine: the app uses it to drop election
    callbacks that belong to an earlier connection of the same datapath. `fenced`: the switch
    checks generation_ids (OpenFlow 1.2+); False for OpenFlow 1.0's Nicira roles.
    """

    def __init__(
        self,
        dpid: int,
        member_id: str,
        timing: Timing | None = None,
        *,
        session: Session = Session.CONNECTED,
        next_xid: Callable[[], int] | None = None,
        epoch: int = 0,
        fenced: bool = True,
    ) -> None:
        self.dpid = dpid
        self.member_id = member_id
        self.timing = timing or Timing()
        self.epoch = epoch
        self.fenced = fenced
        self._next_xid = next_xid or xid_counter()
        self.session = session
        self.connected = False
        #: Our leadership term per the store, or None.
        self.elected_term: int | None = None
        #: The newest term (any leader's) the store has shown us; 0 = none yet.
        self.known_term = 0
        #: Role and generation_id as the switch last confirmed them.
        self.role = Role.NONE
        self.role_generation_id: int | None = None
        self._requests: dict[int, _Request] = {}
        self._confirmed_at: float | None = None
        self._retry_at: float | None = None
        self._backoff = self.timing.retry_initial
        self._read_at: float | None = None
        self._read_backoff = self.timing.retry_initial
        self._reassert = False
        self._awaiting_confirmation = False
        self._reported: tuple[Role, int, bool] | None = None
        self.stale_refusals = 0
        #: STALE refusals since the switch last confirmed a role (a run that does not end means
        #: the switch holds a newer generation_id than this store's terms)
        self.stale_streak = 0
        self.timeouts = 0
        #: the switch contradicted us (IS_SLAVE, STALE, ROLE_STATUS): no MASTER claim until the
        #: store has answered a read
        self._verifying = False
        #: unfenced switches: the term for which the previous master is known to have stopped,
        #: and until when we wait for that
        self._cleared_term: int | None = None
        self._gate_until: float | None = None
        #: the last other member the store showed leading this switch's election
        self.previous_leader: str | None = None

    # ---- derived state ----------------------------------------------------------------------

    @property
    def may_program(self) -> bool:
        """True only while the switch has confirmed us MASTER under the term we hold now, the
        channel is up and the session is not suspended (unless `hold_on_suspend` is off)."""
        return (
            self.connected
            and not self._awaiting_confirmation
            and self.elected_term is not None
            and self.role is Role.MASTER
            and self.role_generation_id == self.elected_term
            and self._session_allows_master()
        )

    @property
    def stale_hint(self) -> str | None:
        """Why a STALE streak does not end and what to do, once it is long enough to say."""
        return STALE_HINT if self.stale_streak >= STALE_HINT_AFTER else None

    @property
    def term(self) -> int:
        """The term to report: ours while we may program, else the one the role was confirmed
        under, else the newest known."""
        if self.may_program and self.elected_term is not None:
            return self.elected_term
        return self.role_generation_id if self.role_generation_id is not None else self.known_term

    def desired(self) -> tuple[Role, int] | None:
        """The (role, generation_id) we want the switch to hold now; None: send nothing."""
        if not self.connected:
            return None
        if self.session is Session.SUSPENDED and self._holds():
            return None
        if self.elected_term is not None and self.session is not Session.LOST:
            if self._verifying or not self._predecessor_cleared():
                return None  # wait for the store's answer / the previous master to stop
            return Role.MASTER, self.elected_term
        if self.known_term > 0:
            return Role.SLAVE, self.known_term
        return None

    def _holds(self) -> bool:
        """Hold while suspended: as configured, and always on an unfenced switch (it could not
        refuse us once a successor claims)."""
        return self.timing.hold_on_suspend or not self.fenced

    def _session_allows_master(self) -> bool:
        if self.session is Session.CONNECTED:
            return True
        return self.session is Session.SUSPENDED and not self._holds()

    def _predecessor_cleared(self) -> bool:
        return self.fenced or (self._cleared_term is not None
                               and self._cleared_term == self.elected_term)

    def next_deadline(self) -> float | None:
        """The earliest time `tick()` has something to do, so an app ticks only the machines
        that are due (None: nothing until another input; 0.0: at the next tick)."""
        if not self.connected:
            return None
        if self._unclaimed():
            return 0.0
        times = [r.sent_at + self.timing.role_request_timeout
                 for r in self._requests.values() if not r.timed_out]
        for t in (self._retry_at, self._read_at, self._gate_until):
            if t is not None:
                times.append(t)
        if self._confirmed_at is not None and self.timing.reassert_interval > 0:
            times.append(self._confirmed_at + self.timing.reassert_interval)
        return min(times) if times else None

    # ---- inputs: OpenFlow channel -----------------------------------------------------------

    def switch_up(self, now: float) -> list[Action]:
        """The OpenFlow channel reached MAIN_DISPATCHER: become a candidate, learn the leader."""
        if self.connected:
            return []
        self.connected = True
        self.role = Role.EQUAL
        out: list[Action] = [Campaign(self.dpid), ReadLeader(self.dpid)]
        return out + self._sync(now, "switch connected")

    def switch_down(self, now: float) -> list[Action]:
        """The channel is gone (DEAD_DISPATCHER): resign so another controller takes over now."""
        if not self.connected:
            return []
        self.connected = False
        self.role = Role.NONE
        self.role_generation_id = None
        self._requests.clear()
        self._retry_at = self._read_at = self._confirmed_at = self._gate_until = None
        self._verifying = False
        out: list[Action] = [Resign(self.dpid)]
        return out + self._report("switch disconnected")

    # ---- inputs: election and session --------------------------------------------------------

    def elected(self, term: int, now: float) -> list[Action]:
        """The store made us leader under `term` (the generation_id to claim MASTER with)."""
        _check_generation_id(term)
        if not self.connected:
            return [Resign(self.dpid)]
        if self.elected_term == term:
            return []
        self.elected_term = term
        self.known_term = max(self.known_term, term)
        self._verifying = False
        self._reset_backoff()
        if self._predecessor_cleared():
            return self._sync(now, f"elected, term {term}")
        self._gate_until = now + self.timing.predecessor_timeout
        return [CheckPredecessor(self.dpid, term)] + self._sync(
            now, f"elected, term {term}: waiting for the previous master to stop")

    def predecessor_gone(self, term: int, now: float) -> list[Action]:
        """Unfenced switches: the previous master has stopped (its session is gone, or it
        withdrew its Mastership record), so claiming MASTER under `term` cannot overlap it."""
        if term != self.elected_term or self._predecessor_cleared():
            return []
        self._cleared_term, self._gate_until = term, None
        return self._sync(now, f"previous master stopped, claiming under term {term}")

    def revoked(self, term: int | None, now: float) -> list[Action]:
        """Our leadership ended (resign, preemption, lost session): stop mastering at once."""
        if self.elected_term is None or (term is not None and term != self.elected_term):
            return []
        self.elected_term = None
        self._reset_backoff()
        return self._demoted(now, f"leadership revoked, term {term}")

    def leader_seen(self, member_id: str | None, term: int | None, now: float) -> list[Action]:
        """A leader observation (listener, or the answer to `ReadLeader`). None: no leader."""
        self._read_at = None
        self._verifying = False
        if member_id is None or term is None:
            return self._sync(now, "no leader")
        _check_generation_id(term)
        self._read_backoff = self.timing.retry_initial
        if member_id != self.member_id:
            self.previous_leader = member_id
        if term > self.known_term:
            # Fresh information: a retry held back by a refusal may go out now. A role still
            # to claim is claimed under the newest term; a confirmed SLAVE stays as it is.
            self.known_term = term
            self._reset_backoff()
        elected = self.elected_term
        if elected is not None and member_id != self.member_id and term > elected:
            # Someone else leads under a newer term; our revoke callback may still be on its way.
            self.elected_term = None
            return self._demoted(now, f"{member_id} leads under newer term {term}")
        return self._sync(now, f"leader {member_id}, term {term}")

    leader_read = leader_seen

    def deposed(self, term: int, now: float) -> list[Action]:
        """The store fenced a write made under `term` (a newer term exists): we were deposed,
        whatever our own callbacks say yet. Stop mastering and re-read the leader."""
        if self.elected_term is None or term != self.elected_term:
            return []
        self.elected_term = None
        return self._demoted(now, f"fenced by the store: a term newer than {term} exists") + [
            ReadLeader(self.dpid)]

    def leader_read_failed(self, now: float) -> list[Action]:
        """`ReadLeader` could not reach the store: ask again after a backoff."""
        self._read_at = now + self._read_backoff
        self._read_backoff = min(self._read_backoff * 2, self.timing.retry_max)
        return []

    def session_changed(self, state: Session, now: float) -> list[Action]:
        """Coordination session state change (Curator semantics, see module docstring)."""
        previous, self.session = self.session, state
        if previous is state:
            return []
        if state is Session.SUSPENDED:
            if self.timing.hold_on_suspend:
                return self._report("session suspended: holding")
            return self._report("session suspended: keeping the role (hold_on_suspend off)")
        if state is Session.LOST:
            self.elected_term = None
            self._reset_backoff()
            return self._demoted(now, "session lost")
        # CONNECTED: after a suspension the session survived; after LOST it is a new one (the
        # coordinator re-campaigns by itself). Either way re-read and re-assert.
        self._reassert = True
        self._awaiting_confirmation = self.role is Role.MASTER
        self._reset_backoff()
        out: list[Action] = [ReadLeader(self.dpid)] if self.connected else []
        return out + self._sync(now, f"session {previous.value} -> connected")

    # ---- inputs: switch answers --------------------------------------------------------------

    def role_reply(self, xid: int, role: Role, generation_id: int, now: float) -> list[Action]:
        """OFPT_ROLE_REPLY. Only replies to our own requests (by xid) are believed."""
        request = self._requests.pop(xid, None)
        if request is None or not self.connected:
            return []
        if role is not request.role:
            # The switch answered with another role than asked: not a confirmation. Believe
            # what it says we are, and retry after a backoff.
            self.role, self.role_generation_id = role, generation_id
            why = f"asked {request.role.value}, switch says {role.value}"
            return self._schedule_retry(now, why)
        self.role = role
        self.role_generation_id = request.generation_id
        self.stale_streak = 0
        if _meets(role, request.generation_id, self.desired()):
            self._confirmed_at = now
            self._awaiting_confirmation = False
            self._reset_backoff()
        why = f"switch confirmed {role.value}, generation_id {request.generation_id}"
        return self._sync(now, why)

    def role_error(self, xid: int, stale: bool, now: float) -> list[Action]:
        """OFPET_ROLE_REQUEST_FAILED for one of our requests (`stale`: code OFPRRFC_STALE)."""
        request = self._requests.pop(xid, None)
        if request is None or not self.connected:
            return []
        why = (f"{request.role.value} with generation_id {request.generation_id} refused "
               f"{'STALE' if stale else 'by the switch'}")
        out: list[Action] = []
        if stale:
            # A newer generation_id reached the switch, so it has (or will soon have) another
            # master: stop now; claim MASTER again only once the store says we still lead,
            # and only after a backoff.
            self.stale_refusals += 1
            self.stale_streak += 1
            self._verifying = self.elected_term is not None
            if self.role is Role.MASTER:
                self.role = Role.SLAVE
                out += self._report(why)
        out.append(ReadLeader(self.dpid, fresh=stale))
        return out + self._schedule_retry(now, why)

    def not_master_error(self, now: float) -> list[Action]:
        """OFPET_BAD_REQUEST/OFPBRC_IS_SLAVE: the switch treats us as slave. Over OpenFlow 1.3
        this is how a demoted master learns it was demoted."""
        return self._switch_demoted(now, "switch says we are slave (IS_SLAVE)")

    def role_status(self, role: Role, generation_id: int, now: float) -> list[Action]:
        """OFPT_ROLE_STATUS (OpenFlow 1.4+): the switch changed our role by itself, e.g. to
        SLAVE because another controller claimed MASTER with `generation_id`. Only a demotion
        is acted on; a promotion counts only as the reply to our own request."""
        if role is Role.MASTER:
            return []
        return self._switch_demoted(
            now, f"switch says we are {role.value} (ROLE_STATUS, generation_id {generation_id})")

    # ---- inputs: time ------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        """Timers: role request timeouts, backoff retries, leader re-reads, periodic re-assert."""
        if not self.connected:
            return []
        out: list[Action] = []
        for xid, request in list(self._requests.items()):
            if not request.timed_out and now - request.sent_at >= self.timing.role_request_timeout:
                request.timed_out = True
                self.timeouts += 1
                out.append(ReadLeader(self.dpid))
                self._reassert = True
                reason = (f"no reply to role request xid {xid:#x} in "
                          f"{self.timing.role_request_timeout} s")
                out += self._sync(now, reason)
        if self._read_at is not None and now >= self._read_at:
            self._read_at = None
            out.append(ReadLeader(self.dpid))
        if self._gate_until is not None and now >= self._gate_until:
            self._gate_until = None
            if self.elected_term is not None and not self._predecessor_cleared():
                self._cleared_term = self.elected_term
                out += self._sync(now, f"previous master not confirmed stopped within "
                                       f"{self.timing.predecessor_timeout} s: claiming anyway")
        if (self._confirmed_at is not None and self.timing.reassert_interval > 0
                and now - self._confirmed_at >= self.timing.reassert_interval):
            self._confirmed_at = now
            self._reassert = True
            out += self._sync(now, "periodic re-assert")
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._reassert = True
            out += self._sync(now, "retry after backoff")
        if self._unclaimed():
            # Nothing to claim yet: keep asking the store (never leave the switch EQUAL).
            self.leader_read_failed(now)
        return out

    def _unclaimed(self) -> bool:
        """Connected, EQUAL, nothing to claim and nothing scheduled to find out."""
        return (self.desired() is None and self.role is Role.EQUAL and self._read_at is None
                and not self._requests and self.session is Session.CONNECTED
                and self.elected_term is None)

    # ---- internals ---------------------------------------------------------------------------

    def _switch_demoted(self, now: float, why: str) -> list[Action]:
        """The switch no longer treats us as master: stop at once, ask the store who leads, and
        claim MASTER again only if its answer says we still do."""
        if self.role is not Role.MASTER or not self.connected:
            return []
        self.role = Role.SLAVE
        self._reassert = True
        self._verifying = self.elected_term is not None
        return self._report(why) + [ReadLeader(self.dpid, fresh=True)] + self._sync(now, why)

    def _demoted(self, now: float, why: str) -> list[Action]:
        """Stop acting as master immediately, then claim SLAVE (with a term from the store)."""
        out = self._report(why)
        if self.role is Role.MASTER:
            self._reassert = True
        return out + self._sync(now, why)

    def _reset_backoff(self) -> None:
        self._retry_at = None
        self._backoff = self.timing.retry_initial

    def _schedule_retry(self, now: float, why: str) -> list[Action]:
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, self.timing.retry_max)
        return self._report(why)

    def _sync(self, now: float, why: str) -> list[Action]:
        """Send a role request if the desired role is neither confirmed nor in flight."""
        out = self._report(why)
        desired = self.desired()
        if desired is None:
            return out
        if self._retry_at is not None and now < self._retry_at:
            return out  # backing off after a refusal
        in_flight = any(_meets(r.role, r.generation_id, desired) and not r.timed_out
                        for r in self._requests.values())
        confirmed = _meets(self.role, self.role_generation_id, desired)
        if in_flight or (confirmed and not self._reassert):
            return out
        self._reassert = False
        role, generation_id = desired
        xid = self._next_xid() & MAX_XID
        self._requests[xid] = _Request(role, _check_generation_id(generation_id), now)
        while len(self._requests) > _MAX_TRACKED_REQUESTS:
            del self._requests[next(iter(self._requests))]
        return out + [SendRoleRequest(self.dpid, role, generation_id, xid, why)]

    def _report(self, why: str) -> list[Action]:
        state = (self.role, self.term, self.may_program)
        if state == self._reported:
            return []
        self._reported = state
        return [MastershipChanged(self.dpid, self.role, self.term, self.may_program, why)]


def _meets(role: Role, generation_id: int | None, desired: tuple[Role, int] | None) -> bool:
    """Whether holding (or asking for) `role` under `generation_id` gives what `desired` asks.

    A SLAVE role held under an older term still does: claiming SLAVE again under a newer term
    demotes nobody (only the new master's own claim does) and would cost every standby one
    role request per switch that changes hands, which is half the OpenFlow work of a failover.
    """
    if desired is None or role is not desired[0]:
        return False
    return role is Role.SLAVE or generation_id == desired[1]
