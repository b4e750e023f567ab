"""One OpenFlow 1.3 switch's controller-role rules, as Open vSwitch enforces them: pure model.

No Ryu, no I/O, no clock (callers pass `now`). Shaped like Faucet's fakeoftable: tests and
benchmarks ask what the switch *did* (who is master, under which generation_id, which writes it
accepted) rather than which messages went by. `fleet.py` translates OpenFlow to and from it.

The rules (OpenFlow 1.3.5 section 6.3.6; OVS `ofproto/connmgr.c`, checked against OVS 3.1 by
tests/integration/test_fleet_vs_ovs.py):
- a channel starts EQUAL;
- ROLE_REQUEST(NOCHANGE) only reports; EQUAL is granted with no generation check;
- MASTER / SLAVE carry a generation_id. Once one has been seen, a request whose id is older than
  the newest seen, compared as `(int64)(gen - newest) < 0` (64-bit wrap-around), is refused STALE
  and changes nothing. Otherwise the id is remembered (it is the newest now) and the role set; a
  new MASTER demotes every other MASTER channel to SLAVE (silently over OpenFlow 1.3; the
  demotions are returned so an OpenFlow 1.4 fleet could send ROLE_STATUS);
- a ROLE_REPLY carries the channel's role and the newest generation_id (2**64-1 before any);
- FLOW_MOD, PACKET_OUT, GROUP_MOD, PORT_MOD, TABLE_MOD and METER_MOD from a SLAVE are refused
  IS_SLAVE; from MASTER or EQUAL they are accepted;
- a disconnect forgets the channel's role, not the newest generation_id (OVS keeps it for the
  bridge's lifetime).

Everything is recorded as `Event`s (timestamp, channel, role, generation_id), so a caller can ask
who is master, since when, under which generation_id, and whether any write was accepted from a
channel that was not master under the newest generation_id (a fencing violation).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

#: generation_ids are unsigned 64-bit; a ROLE_REPLY says this one before any was set (OVS).
MAX_GENERATION_ID = 2**64 - 1
_SIGN_BIT = 2**63

#: A controller channel's identity (the fleet uses the controller's target, `tcp:host:port`).
ChannelId = Hashable


class Role(enum.Enum):
    """A channel's role; NOCHANGE only appears in requests (`OFPCR_ROLE_*`)."""

    NOCHANGE = "nochange"
    EQUAL = "equal"
    MASTER = "master"
    SLAVE = "slave"


class Write(enum.Enum):
    """The state-changing messages a SLAVE may not send."""

    FLOW_MOD = "flow_mod"
    PACKET_OUT = "packet_out"
    GROUP_MOD = "group_mod"
    PORT_MOD = "port_mod"
    TABLE_MOD = "table_mod"
    METER_MOD = "meter_mod"


class Refusal(enum.Enum):
    """Why the switch refused: OFPRRFC_STALE or OFPBRC_IS_SLAVE."""

    STALE = "stale"
    IS_SLAVE = "is_slave"


class Kind(enum.Enum):
    """What an `Event` records."""

    CONNECT = "connect"  # channel up, role EQUAL
    DISCONNECT = "disconnect"  # channel gone (role = the role it had)
    ROLE = "role"  # a role request was granted (also a re-grant of the same role)
    DEMOTED = "demoted"  # MASTER -> SLAVE because another channel became MASTER
    STALE = "stale"  # MASTER/SLAVE refused (role = the role requested)
    WRITE = "write"  # a state-changing message was accepted
    IS_SLAVE = "is_slave"  # a state-changing message was refused


@dataclass(frozen=True)
class Event:
    """One recorded fact. `generation_id`: for ROLE / STALE the request's, for DEMOTED the new
    master's, for WRITE / IS_SLAVE the one the channel's role was granted under (None: never
    granted one). `detail`: the write's kind, or the new master's channel for DEMOTED.
    `violation` (WRITE only): the writer was not MASTER under the switch's newest generation_id."""

    t: float
    dpid: int
    kind: Kind
    channel: ChannelId
    role: Role
    generation_id: int | None = None
    detail: str = ""
    violation: bool = False


@dataclass(frozen=True)
class RoleOutcome:
    """The switch's answer to a role request: what its ROLE_REPLY (or error) says."""

    role: Role  # the channel's role after the request
    generation_id: int  # the switch's newest generation_id (MAX_GENERATION_ID before any)
    refused: Refusal | None = None
    #: Channels demoted MASTER -> SLAVE by this request.
    demoted: tuple[ChannelId, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.refused is None


@dataclass(frozen=True)
class WriteOutcome:
    """The switch's answer to a state-changing message (accepted: no reply at all)."""

    refused: Refusal | None = None
    violation: bool = False

    @property
    def accepted(self) -> bool:
        return self.refused is None


def is_stale(generation_id: int, newest: int | None) -> bool:
    """OpenFlow's staleness test: `(int64)(generation_id - newest) < 0`; never stale before the
    first generation_id (`newest` None)."""
    if newest is None:
        return False
    return (generation_id - newest) % 2**64 >= _SIGN_BIT


def _check_generation_id(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_GENERATION_ID:
        raise ValueError(f"generation_id must be an unsigned 64-bit integer, got {value!r}")
    return value


@dataclass
class _Channel:
    role: Role = Role.EQUAL
    #: The generation_id the current role was granted under (None: EQUAL since connect).
    granted: int | None = None


class FakeSwitch:
    """The controller-role state of one switch (one bridge) and the record of what it did."""

    def __init__(self, dpid: int) -> None:
        self.dpid = dpid
        #: The newest generation_id seen (None until the first MASTER/SLAVE request).
        self.generation_id: int | None = None
        self.events: list[Event] = []
        self._channels: dict[ChannelId, _Channel] = {}
        self._master: ChannelId | None = None

    # ---- state -------------------------------------------------------------------------------

    @property
    def master(self) -> ChannelId | None:
        """The MASTER channel now (at most one), or None."""
        return self._master

    @property
    def master_generation(self) -> int | None:
        """The generation_id the current master was granted under, or None."""
        return None if self._master is None else self._channels[self._master].granted

    def role_of(self, channel: ChannelId) -> Role | None:
        """The channel's role, or None if it is not connected."""
        state = self._channels.get(channel)
        return None if state is None else state.role

    def channels(self) -> dict[ChannelId, Role]:
        """Every connected channel and its role."""
        return {cid: state.role for cid, state in self._channels.items()}

    # ---- inputs ------------------------------------------------------------------------------

    def connect(self, channel: ChannelId, now: float) -> None:
        """A controller channel came up: role EQUAL."""
        if channel in self._channels:
            raise ValueError(f"channel {channel!r} is already connected to {self.dpid:016x}")
        self._channels[channel] = _Channel()
        self._record(now, Kind.CONNECT, channel, Role.EQUAL)

    def disconnect(self, channel: ChannelId, now: float) -> None:
        """The channel is gone: forget its role, keep the newest generation_id."""
        state = self._channels.pop(channel, None)
        if state is None:
            return
        if self._master == channel:
            self._master = None
        self._record(now, Kind.DISCONNECT, channel, state.role, state.granted)

    def role_request(
        self, channel: ChannelId, role: Role, generation_id: int, now: float
    ) -> RoleOutcome:
        """OFPT_ROLE_REQUEST(role, generation_id) from `channel` (generation_id is ignored for
        NOCHANGE and EQUAL, as in OpenFlow)."""
        state = self._state(channel)
        demoted: tuple[ChannelId, ...] = ()
        if role in (Role.MASTER, Role.SLAVE):
            _check_generation_id(generation_id)
            if is_stale(generation_id, self.generation_id):
                self._record(now, Kind.STALE, channel, role, generation_id)
                return RoleOutcome(state.role, self._reply_generation(), Refusal.STALE)
            self.generation_id = generation_id
        if role is not Role.NOCHANGE:
            if role is Role.MASTER:
                demoted = self._demote_others(channel, generation_id, now)
                self._master = channel
            elif self._master == channel:
                self._master = None
            state.role = role
            state.granted = generation_id if role is not Role.EQUAL else None
            self._record(now, Kind.ROLE, channel, role, state.granted)
        return RoleOutcome(state.role, self._reply_generation(), None, demoted)

    def write(self, channel: ChannelId, kind: Write, now: float) -> WriteOutcome:
        """A state-changing message from `channel`: refused IS_SLAVE from a SLAVE."""
        state = self._state(channel)
        if state.role is Role.SLAVE:
            self._record(now, Kind.IS_SLAVE, channel, state.role, state.granted, kind.value)
            return WriteOutcome(Refusal.IS_SLAVE)
        violation = not (state.role is Role.MASTER and state.granted == self.generation_id)
        self._record(now, Kind.WRITE, channel, state.role, state.granted, kind.value, violation)
        return WriteOutcome(None, violation)

    # ---- questions about the record -----------------------------------------------------------

    def history(
        self,
        kinds: Kind | Iterable[Kind] | None = None,
        *,
        channel: ChannelId | None = None,
        since: float | None = None,
    ) -> list[Event]:
        """Recorded events, oldest first, optionally of some kinds / one channel / from `since`."""
        wanted = {kinds} if isinstance(kinds, Kind) else set(kinds) if kinds is not None else None
        return [
            e
            for e in self.events
            if (wanted is None or e.kind in wanted)
            and (channel is None or e.channel == channel)
            and (since is None or e.t >= since)
        ]

    def first_master(
        self, *, since: float | None = None, newer_than: int | None = None
    ) -> Event | None:
        """The first MASTER grant (from `since`, with a generation_id newer than `newer_than`
        by the wrap-around compare), or None: when a switch was first confirmed master."""
        for event in self.history(Kind.ROLE, since=since):
            if event.role is Role.MASTER and (
                newer_than is None
                or (event.generation_id is not None and is_newer(event.generation_id, newer_than))
            ):
                return event
        return None

    def fencing_violations(self) -> list[Event]:
        """Writes accepted from a channel that was not MASTER under the newest generation_id."""
        return [e for e in self.events if e.kind is Kind.WRITE and e.violation]

    # ---- internals ---------------------------------------------------------------------------

    def _state(self, channel: ChannelId) -> _Channel:
        state = self._channels.get(channel)
        if state is None:
            raise KeyError(f"channel {channel!r} is not connected to {self.dpid:016x}")
        return state

    def _reply_generation(self) -> int:
        return MAX_GENERATION_ID if self.generation_id is None else self.generation_id

    def _demote_others(
        self, channel: ChannelId, generation_id: int, now: float
    ) -> tuple[ChannelId, ...]:
        old = self._master
        if old is None or old == channel:
            return ()
        self._channels[old].role = Role.SLAVE
        self._record(now, Kind.DEMOTED, old, Role.SLAVE, generation_id, str(channel))
        return (old,)

    def _record(
        self,
        now: float,
        kind: Kind,
        channel: ChannelId,
        role: Role,
        generation_id: int | None = None,
        detail: str = "",
        violation: bool = False,
    ) -> None:
        self.events.append(
            Event(now, self.dpid, kind, channel, role, generation_id, detail, violation)
        )

    def __repr__(self) -> str:
        return (
            f"<FakeSwitch {self.dpid:016x} master={self._master!r} "
            f"generation_id={self.generation_id} channels={len(self._channels)}>"
        )


def is_newer(generation_id: int, than: int) -> bool:
    """True if `generation_id` is strictly newer than `than` by the wrap-around compare."""
    return generation_id != than and not is_stale(generation_id, than)
