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

For a planned handover (`ryu_integration/mastership/handover.py`) the model also has a flow table and the
asynchronous messages, per the OpenFlow 1.3.5 specification (flow table modification and
removal, barrier, asynchronous configuration and messages) and OVS:
- `flow_mod`: ADD (an entry with the same table, priority and match is replaced, silently),
  DELETE (non-strict: every entry whose match includes the given one) and DELETE_STRICT (same
  priority and match), both filtered by `cookie` / `cookie_mask`; `expire` applies idle and hard
  timeouts (there is no datapath, so no entry is ever hit: idle time counts from installation).
  Only an entry added with OFPFF_SEND_FLOW_REM produces a FLOW_REMOVED when it goes.
- Who receives what follows each channel's async config: by default (OVS
  `ofputil_async_cfg_default()` for OpenFlow 1.3, and OFPT_GET_ASYNC on OVS 3.1: docs/ryu.md)
  MASTER and EQUAL channels get packet-ins for NO_MATCH and ACTION (not INVALID_TTL), every
  FLOW_REMOVED reason and every port-status; SLAVE channels get port-status only. `set_async`
  changes it per channel, as OFPT_SET_ASYNC does.
- `packet_in` is the datapath sending one packet to the controllers: it returns one message per
  channel that wants it, all carrying the same sequence number, so a test can check that each
  packet was handled exactly once across controllers.
- `barrier`: the model applies each call before returning, so a barrier reply means everything
  the channel sent before it has been applied. Callers keep each channel's messages in order
  (one TCP connection each way); across channels the order is the caller's to choose.
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


# ---- flow table and asynchronous messages ---------------------------------------------------

MAX_COOKIE = 2**64 - 1
#: ofp_flow_mod_flags: send FLOW_REMOVED when the entry goes.
OFPFF_SEND_FLOW_REM = 1 << 0
#: OFP_DEFAULT_PRIORITY.
DEFAULT_PRIORITY = 0x8000
#: A flow's match: (field, value) pairs, e.g. `match(eth_type=0x88B5)`; empty matches everything.
Match = frozenset


def match(**fields: object) -> Match:
    """A match from OXM field names (`in_port=1, eth_dst="..."`)."""
    return frozenset(fields.items())


class FlowModCommand(enum.Enum):
    """The ofp_flow_mod_command values this model applies."""

    ADD = 0
    DELETE = 3
    DELETE_STRICT = 4


class PacketInReason(enum.Enum):
    """ofp_packet_in_reason (the value is the async-config bit)."""

    NO_MATCH = 0
    ACTION = 1
    INVALID_TTL = 2


class PortReason(enum.Enum):
    """ofp_port_reason (the value is the async-config bit)."""

    ADD = 0
    DELETE = 1
    MODIFY = 2


class RemovedReason(enum.Enum):
    """ofp_flow_removed_reason (the value is the async-config bit)."""

    IDLE_TIMEOUT = 0
    HARD_TIMEOUT = 1
    DELETE = 2
    GROUP_DELETE = 3


@dataclass(frozen=True)
class AsyncConfig:
    """One channel's async config: (master/equal mask, slave mask) per message, bit = reason.
    The default is Open vSwitch's for OpenFlow 1.3 (`ofputil_async_cfg_default`), as OFPT_GET_ASYNC
    reports it on OVS 3.1."""

    packet_in: tuple[int, int] = (0b011, 0)
    port_status: tuple[int, int] = (0b111, 0b111)
    flow_removed: tuple[int, int] = (0b1111, 0)


@dataclass(frozen=True)
class FlowMod:
    """OFPT_FLOW_MOD, reduced to what the model applies."""

    command: FlowModCommand
    match: Match = frozenset()
    priority: int = DEFAULT_PRIORITY
    table_id: int = 0
    cookie: int = 0
    #: DELETE / DELETE_STRICT: only entries with `cookie & cookie_mask == self.cookie &
    #: cookie_mask` (0: any cookie).
    cookie_mask: int = 0
    flags: int = 0
    idle_timeout: int = 0
    hard_timeout: int = 0


@dataclass(frozen=True)
class Flow:
    """An entry of the flow table."""

    table_id: int
    priority: int
    match: Match
    cookie: int
    flags: int
    idle_timeout: int
    hard_timeout: int
    installed_at: float
    used_at: float

    def expired(self, now: float) -> RemovedReason | None:
        """Which timeout removes the entry at `now` (hard first), if any."""
        if self.hard_timeout and now >= self.installed_at + self.hard_timeout:
            return RemovedReason.HARD_TIMEOUT
        if self.idle_timeout and now >= self.used_at + self.idle_timeout:
            return RemovedReason.IDLE_TIMEOUT
        return None


@dataclass(frozen=True)
class PacketIn:
    """OFPT_PACKET_IN; `seq` identifies the packet (the same in every channel's copy)."""

    seq: int
    reason: PacketInReason
    table_id: int
    cookie: int
    data: bytes
    t: float


@dataclass(frozen=True)
class FlowRemoved:
    """OFPT_FLOW_REMOVED."""

    cookie: int
    priority: int
    reason: RemovedReason
    table_id: int
    match: Match
    idle_timeout: int
    hard_timeout: int
    t: float


@dataclass(frozen=True)
class PortStatus:
    """OFPT_PORT_STATUS."""

    port_no: int
    reason: PortReason
    t: float


@dataclass(frozen=True)
class AsyncMessage:
    """An asynchronous message the switch sends on `channel`."""

    channel: ChannelId
    message: PacketIn | FlowRemoved | PortStatus


@dataclass(frozen=True)
class FlowModOutcome:
    """The switch's answer to a FLOW_MOD, and the FLOW_REMOVED messages a delete produced."""

    refused: Refusal | None = None
    violation: bool = False
    messages: tuple[AsyncMessage, ...] = ()

    @property
    def accepted(self) -> bool:
        return self.refused is None


def _deletes(mod: FlowMod, flow: Flow, strict: bool) -> bool:
    if mod.table_id != flow.table_id:  # OFPTT_ALL is not modelled
        return False
    if (flow.cookie ^ mod.cookie) & mod.cookie_mask:
        return False
    if strict:
        return flow.priority == mod.priority and flow.match == mod.match
    return mod.match <= flow.match


@dataclass
class _Channel:
    role: Role = Role.EQUAL
    #: The generation_id the current role was granted under (None: EQUAL since connect).
    granted: int | None = None
    async_config: AsyncConfig = AsyncConfig()


class FakeSwitch:
    """The controller-role state of one switch (one bridge) and the record of what it did."""

    def __init__(self, dpid: int) -> None:
        self.dpid = dpid
        #: The newest generation_id seen (None until the first MASTER/SLAVE request).
        self.generation_id: int | None = None
        self.events: list[Event] = []
        self._channels: dict[ChannelId, _Channel] = {}
        self._master: ChannelId | None = None
        self._flows: dict[tuple[int, int, Match], Flow] = {}
        #: Sequence number of the last packet sent to the controllers.
        self.packet_seq = 0

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

    def flow_mod(self, channel: ChannelId, mod: FlowMod, now: float) -> FlowModOutcome:
        """OFPT_FLOW_MOD from `channel`: refused IS_SLAVE from a SLAVE (as `write`), otherwise
        applied to the flow table. Returns the FLOW_REMOVED messages a delete produced."""
        outcome = self.write(channel, Write.FLOW_MOD, now)
        if not outcome.accepted:
            return FlowModOutcome(outcome.refused, outcome.violation)
        removed: list[Flow] = []
        if mod.command is FlowModCommand.ADD:
            key = (mod.table_id, mod.priority, mod.match)
            self._flows[key] = Flow(mod.table_id, mod.priority, mod.match, mod.cookie,
                                    mod.flags, mod.idle_timeout, mod.hard_timeout, now, now)
        else:
            strict = mod.command is FlowModCommand.DELETE_STRICT
            for key, flow in list(self._flows.items()):
                if _deletes(mod, flow, strict):
                    del self._flows[key]
                    removed.append(flow)
        messages = self._removed(removed, RemovedReason.DELETE, now)
        return FlowModOutcome(None, outcome.violation, messages)

    def barrier(self, channel: ChannelId, xid: int, now: float) -> int:
        """OFPT_BARRIER_REQUEST: everything `channel` sent before is applied; returns the xid of
        the BARRIER_REPLY."""
        self._state(channel)
        return xid

    def expire(self, now: float) -> tuple[AsyncMessage, ...]:
        """Remove the entries whose hard or idle timeout has passed at `now`."""
        out: list[AsyncMessage] = []
        for key, flow in list(self._flows.items()):
            reason = flow.expired(now)
            if reason is not None:
                del self._flows[key]
                out += self._removed([flow], reason, now)
        return tuple(out)

    def packet_in(
        self, now: float, reason: PacketInReason = PacketInReason.NO_MATCH, data: bytes = b"",
        *, table_id: int = 0, cookie: int = MAX_COOKIE,
    ) -> tuple[AsyncMessage, ...]:
        """The datapath sends a packet to the controllers: one PACKET_IN per channel whose role
        and async config want `reason`, all with the same new `seq`."""
        self.packet_seq += 1
        msg = PacketIn(self.packet_seq, reason, table_id, cookie, data, now)
        return tuple(AsyncMessage(c, msg) for c in self._receivers("packet_in", reason.value))

    def port_status(
        self, port_no: int, reason: PortReason, now: float
    ) -> tuple[AsyncMessage, ...]:
        """A port was added, deleted or changed: one PORT_STATUS per channel that wants it."""
        msg = PortStatus(port_no, reason, now)
        return tuple(AsyncMessage(c, msg) for c in self._receivers("port_status", reason.value))

    def set_async(self, channel: ChannelId, config: AsyncConfig) -> None:
        """OFPT_SET_ASYNC from `channel` (allowed in every role)."""
        self._state(channel).async_config = config

    def async_config(self, channel: ChannelId) -> AsyncConfig:
        """The channel's async config (OFPT_GET_ASYNC)."""
        return self._state(channel).async_config

    def flows(self, table_id: int | None = None) -> list[Flow]:
        """The flow table's entries (of one table), in insertion order."""
        return [f for f in self._flows.values() if table_id is None or f.table_id == table_id]

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

    def _receivers(self, kind: str, reason: int) -> list[ChannelId]:
        out = []
        for cid, state in self._channels.items():
            masks = getattr(state.async_config, kind)
            mask = masks[1] if state.role is Role.SLAVE else masks[0]
            if mask & (1 << reason):
                out.append(cid)
        return out

    def _removed(
        self, flows: list[Flow], reason: RemovedReason, now: float
    ) -> tuple[AsyncMessage, ...]:
        out: list[AsyncMessage] = []
        for flow in flows:
            if not flow.flags & OFPFF_SEND_FLOW_REM:
                continue
            msg = FlowRemoved(flow.cookie, flow.priority, reason, flow.table_id, flow.match,
                              flow.idle_timeout, flow.hard_timeout, now)
            out += [AsyncMessage(c, msg) for c in self._receivers("flow_removed", reason.value)]
        return tuple(out)

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
