"""An emulated fleet of OpenFlow 1.3 switches in one asyncio process, for tests and benchmarks.

What: N switches (dpids `dpid_base` .. `dpid_base + N - 1`), each with one OpenFlow 1.3 TCP
connection to every configured controller, like `ovs-vsctl set-controller br tcp:... tcp:...`:
handshake, echo, barrier, config, DESC / PORT_DESC, and the controller-role rules of
`fake_switch.FakeSwitch` (ROLE_REQUEST, STALE, silent demotion, IS_SLAVE). There is no datapath,
but accepted FLOW_MODs (ADD, DELETE, DELETE_STRICT) go through the model's flow table: an entry
added with OFPFF_SEND_FLOW_REM that a delete or its hard / idle timeout removes produces an
OFPT_FLOW_REMOVED on every channel whose async config wants it (by default MASTER and EQUAL), sent
before the switch reads that channel's next message, so a later BARRIER_REPLY follows it (what
a planned handover's marker flow needs). MODIFY and undecodable FLOW_MODs are only recorded.
With `links` ("line" or "ring") switches are joined port to port, and an accepted PACKET_OUT on
a linked port arrives at the peer switch as a PACKET_IN for the channels that get packet-ins
(MASTER and EQUAL), so LLDP discovery finds the links; `cut_link` (SIGUSR1 to the CLI: the next
linked port) unplugs one: no frame crosses it and both ends send PORT_STATUS (link down). A
dropped or refused connection is re-dialled with a doubling backoff (0.1 s to `max_backoff`),
as OVS does.
Why: enough switches to load a controller cluster (5,000 x 3 controllers = 15,000 connections on
2 cores) where one Open vSwitch with thousands of bridges is too slow to even create.

OpenFlow goes only through the framework's own classes (`compat.ofproto_v1_3_parser`): headers
are decoded with `ofproto_parser.header`, request fields with the library's `*_PACK_STR` layouts,
and every reply is a parser message class's `serialize()`. The parser serializes the controller's
side and parses the switch's, so the replies it cannot serialize are tiny subclasses: ROLE_REPLY,
GET_CONFIG_REPLY and GET_ASYNC_REPLY reuse the identical layouts of ROLE_REQUEST, SET_CONFIG and
SET_ASYNC; FEATURES_REPLY, PORT_STATUS and the two multipart replies pack the library's
structs. The tests decode all of them with the same framework's parser.

`compat` picks the framework; the CLI sets `COORD_FRAMEWORK=os-ken` unless it is set (Ryu would
bring eventlet along). `ControllerEnd` is the other side, for tests: a listening port that
answers switches and sends requests through the same parser.

CLI (one status line per second while something changes; events as JSON lines):
    python -m ryu_integration.testing.fleet --switches 5000 \
        --controller tcp:127.0.0.1:6653 --controller tcp:127.0.0.1:6654 [--dpid-base 1] \
        [--events events.jsonl] [--max-backoff 2] [--connect-burst 32] [--links none|line|ring]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import itertools
import json
import os
import random
import resource
import signal
import struct
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TextIO

from ..frameworks import ENV_VAR, OS_KEN
from .fake_switch import (
    AsyncConfig,
    AsyncMessage,
    Event,
    FakeSwitch,
    FlowMod,
    FlowModCommand,
    FlowRemoved,
    Kind,
    PacketInReason,
    Refusal,
    Role,
    RoleOutcome,
    Write,
    WriteOutcome,
)

#: Dial backoff (seconds): first retry, doubling up to the maximum (OVS: 1 s to 8 s).
INITIAL_BACKOFF = 0.1
MAX_BACKOFF = 2.0
#: Connections per controller dialled but not yet answered by the controller. os-ken and Ryu
#: listen with a backlog of 50; more than that at once overflows it and the kernel drops SYNs.
CONNECT_BURST = 32
#: A controller that accepted but is silent this long frees its dial slot anyway.
SLOT_TIMEOUT = 5.0
#: OVS puts up to this many bytes of the offending request in an error message.
ERROR_DATA_LEN = 64
PORTS_PER_SWITCH = 2
MISS_SEND_LEN = 128
#: Link layouts: none; a line joins switch i port 1 to switch i+1 port 2; a ring also joins the
#: last switch's port 1 to the first one's port 2.
LINKS = ("none", "line", "ring")
#: Seconds over which PACKET_OUTs and delivered / suppressed PACKET_INs are summed into one
#: events-file line.
PACKET_IN_REPORT_PERIOD = 1.0


@dataclass(frozen=True)
class ControllerAddress:
    """Where a switch dials: `tcp:host:port` (the form OVS's controller target takes)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ControllerAddress:
        kind, _, rest = text.partition(":")
        host, _, port = rest.rpartition(":")
        if kind != "tcp" or not host or not port.isdigit():
            raise ValueError(f"controller must look like tcp:HOST:PORT, got {text!r}")
        return cls(host, int(port))

    @property
    def target(self) -> str:
        return f"tcp:{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.target


def raise_nofile_limit() -> int:
    """Raise this process's open-file limit to its hard limit; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= hard:
        return soft if soft != resource.RLIM_INFINITY else hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


#: A switch port: (dpid, port_no).
PortId = tuple[int, int]


def link_layout(kind: str, dpids: Sequence[int]) -> dict[PortId, PortId]:
    """Both directions of every link of a `kind` layout over `dpids` (in order): switch i's
    port 1 to switch i+1's port 2; a ring also closes the loop (it needs 3 switches or more)."""
    if kind not in LINKS:
        raise ValueError(f"links must be one of {', '.join(LINKS)}, got {kind!r}")
    if kind == "ring" and len(dpids) < 3:
        raise ValueError("a ring needs at least 3 switches")
    pairs = list(itertools.pairwise(dpids)) if kind != "none" else []
    if kind == "ring":
        pairs.append((dpids[-1], dpids[0]))
    peers: dict[PortId, PortId] = {}
    for a, b in pairs:
        peers[(a, 1)] = (b, 2)
        peers[(b, 2)] = (a, 1)
    # Every linked port is one the switch advertises in PORT_DESC.
    assert all(1 <= port <= PORTS_PER_SWITCH for _, port in peers)
    return peers


# ---- the wire: the framework's parser and serializer ---------------------------------------


class _Datapath:
    """What the parser's message classes need from a datapath: its protocol modules."""

    def __init__(self, ofproto: Any, ofproto_parser: Any) -> None:
        self.ofproto = ofproto
        self.ofproto_parser = ofproto_parser


class Wire:
    """OpenFlow 1.3 through the chosen framework's parser (built once, on first use)."""

    def __init__(self) -> None:
        from .. import compat  # here, not at import: the CLI picks the framework first

        self.framework = compat.FRAMEWORK
        self.ofp = ofp = compat.ofproto_v1_3
        self.parser = parser = compat.ofproto_v1_3_parser
        self.common = compat.framework_module("ofproto.ofproto_parser")
        #: The parser's error for a message shorter than its lengths say.
        self.truncated = compat.framework_module("exception").OFPTruncatedMessage
        self.dp = _Datapath(ofp, parser)
        pack = parser.msg_pack_into
        self.role_codes = {
            Role.NOCHANGE: ofp.OFPCR_ROLE_NOCHANGE,
            Role.EQUAL: ofp.OFPCR_ROLE_EQUAL,
            Role.MASTER: ofp.OFPCR_ROLE_MASTER,
            Role.SLAVE: ofp.OFPCR_ROLE_SLAVE,
        }
        self.roles = {code: role for role, code in self.role_codes.items()}
        self.writes = {
            ofp.OFPT_FLOW_MOD: Write.FLOW_MOD,
            ofp.OFPT_PACKET_OUT: Write.PACKET_OUT,
            ofp.OFPT_GROUP_MOD: Write.GROUP_MOD,
            ofp.OFPT_PORT_MOD: Write.PORT_MOD,
            ofp.OFPT_TABLE_MOD: Write.TABLE_MOD,
            ofp.OFPT_METER_MOD: Write.METER_MOD,
        }

        # Replies the parser parses but does not serialize. Same body layout as a request the
        # parser does serialize: only the message type differs.
        class RoleReply(parser.OFPRoleRequest):
            cls_msg_type = ofp.OFPT_ROLE_REPLY

        class GetConfigReply(parser.OFPSetConfig):
            cls_msg_type = ofp.OFPT_GET_CONFIG_REPLY

        class GetAsyncReply(parser.OFPSetAsync):
            cls_msg_type = ofp.OFPT_GET_ASYNC_REPLY

        class FeaturesReply(parser.OFPSwitchFeatures):
            def _serialize_body(self) -> None:
                pack(ofp.OFP_SWITCH_FEATURES_PACK_STR, self.buf, ofp.OFP_HEADER_SIZE,
                     self.datapath_id, self.n_buffers, self.n_tables, self.auxiliary_id,
                     self.capabilities, 0)

        class DescReply(parser.OFPDescStatsReply):
            def _serialize_body(self) -> None:
                pack(ofp.OFP_MULTIPART_REPLY_PACK_STR, self.buf, ofp.OFP_HEADER_SIZE,
                     ofp.OFPMP_DESC, self.flags)
                pack(ofp.OFP_DESC_PACK_STR, self.buf, ofp.OFP_MULTIPART_REPLY_SIZE, *self.body)

        class PortDescReply(parser.OFPPortDescStatsReply):
            def _serialize_body(self) -> None:
                pack(ofp.OFP_MULTIPART_REPLY_PACK_STR, self.buf, ofp.OFP_HEADER_SIZE,
                     ofp.OFPMP_PORT_DESC, self.flags)
                for i, port in enumerate(self.body):
                    pack(ofp.OFP_PORT_PACK_STR, self.buf,
                         ofp.OFP_MULTIPART_REPLY_SIZE + i * ofp.OFP_PORT_SIZE, *port)

        class PacketIn(parser.OFPPacketIn):
            # The parser's own layout, in the order its `parser()` reads it back.
            def _serialize_body(self) -> None:
                pack(ofp.OFP_PACKET_IN_PACK_STR, self.buf, ofp.OFP_HEADER_SIZE, self.buffer_id,
                     self.total_len, self.reason, self.table_id, self.cookie)
                self.match.serialize(self.buf, ofp.OFP_PACKET_IN_SIZE - ofp.OFP_MATCH_SIZE)
                self.buf += bytes(2) + self.data  # two bytes of padding, then the frame

        class FlowRemovedMsg(parser.OFPFlowRemoved):
            # The parser's layout, in the order its `parser()` reads it back.
            def _serialize_body(self) -> None:
                pack(ofp.OFP_FLOW_REMOVED_PACK_STR0, self.buf, ofp.OFP_HEADER_SIZE,
                     self.cookie, self.priority, self.reason, self.table_id,
                     self.duration_sec, self.duration_nsec, self.idle_timeout,
                     self.hard_timeout, self.packet_count, self.byte_count)
                self.match.serialize(self.buf, ofp.OFP_FLOW_REMOVED_SIZE - ofp.OFP_MATCH_SIZE)

        class PortStatus(parser.OFPPortStatus):
            def _serialize_body(self) -> None:
                pack(ofp.OFP_PORT_STATUS_PACK_STR, self.buf, ofp.OFP_HEADER_SIZE, self.reason,
                     *self.desc)

        self._flow_removed = FlowRemovedMsg
        self._port_status = PortStatus
        self.flow_mod_commands = {c.value: c for c in FlowModCommand}
        self._packet_in = PacketIn
        self._role_reply = RoleReply
        self._get_config_reply = GetConfigReply
        self._get_async_reply = GetAsyncReply
        self._features_reply = FeaturesReply
        self._desc_reply = DescReply
        self._port_desc_reply = PortDescReply

    # -- encode ------------------------------------------------------------------------------

    @staticmethod
    def encode(msg: Any, xid: int = 0) -> bytes:
        """`msg.serialize()` with this xid; the bytes to send."""
        msg.set_xid(xid)
        msg.serialize()
        return bytes(msg.buf)

    def hello(self) -> bytes:
        return self.encode(self.parser.OFPHello(self.dp))

    def error(self, xid: int, type_: int, code: int, request: bytes) -> bytes:
        data = bytes(request[:ERROR_DATA_LEN])
        return self.encode(self.parser.OFPErrorMsg(self.dp, type_, code, data), xid)

    def echo_reply(self, xid: int, data: bytes) -> bytes:
        return self.encode(self.parser.OFPEchoReply(self.dp, bytes(data)), xid)

    def barrier_reply(self, xid: int) -> bytes:
        return self.encode(self.parser.OFPBarrierReply(self.dp), xid)

    def role_reply(self, xid: int, role: Role, generation_id: int) -> bytes:
        return self.encode(self._role_reply(self.dp, self.role_codes[role], generation_id), xid)

    def features_reply(self, xid: int, dpid: int) -> bytes:
        ofp = self.ofp
        caps = (ofp.OFPC_FLOW_STATS | ofp.OFPC_TABLE_STATS | ofp.OFPC_PORT_STATS
                | ofp.OFPC_GROUP_STATS | ofp.OFPC_QUEUE_STATS)  # what OVS 3.1 reports
        msg = self._features_reply(self.dp, datapath_id=dpid, n_buffers=0, n_tables=254,
                                   auxiliary_id=0, capabilities=caps)
        return self.encode(msg, xid)

    def get_config_reply(self, xid: int, miss_send_len: int) -> bytes:
        msg = self._get_config_reply(self.dp, self.ofp.OFPC_FRAG_NORMAL, miss_send_len)
        return self.encode(msg, xid)

    def get_async_reply(self, xid: int, config: AsyncConfig) -> bytes:
        """The channel's async config, [master/equal, slave] masks per message (the model's
        default is OVS's, measured: docs/ryu.md)."""
        msg = self._get_async_reply(self.dp, list(config.packet_in), list(config.port_status),
                                    list(config.flow_removed))
        return self.encode(msg, xid)

    def desc_reply(self, xid: int, dpid: int) -> bytes:
        body = self.parser.OFPDescStats(
            b"sdn-coordination", b"emulated OpenFlow 1.3 switch",
            b"ryu_integration.testing.fleet", b"None", f"fleet dpid {dpid:016x}".encode())
        return self.encode(self._desc_reply(self.dp, body=body, flags=0), xid)

    def port_desc_reply(self, xid: int, dpid: int) -> bytes:
        ports = [self._port(dpid, no) for no in (*range(1, PORTS_PER_SWITCH + 1),
                                                 self.ofp.OFPP_LOCAL)]
        return self.encode(self._port_desc_reply(self.dp, body=ports, flags=0), xid)

    def port_down(self, dpid: int, port: int) -> bytes:
        """PORT_STATUS (MODIFY): the port's link went down, as OVS reports a cut cable."""
        return self.encode(self._port_status(self.dp, reason=self.ofp.OFPPR_MODIFY,
                                             desc=self._port(dpid, port, up=False)))

    def _port(self, dpid: int, no: int, up: bool = True) -> Any:
        ofp = self.ofp
        feats = ofp.OFPPF_10GB_FD | ofp.OFPPF_COPPER
        mac = ((0x02 << 40) | ((dpid & 0xFFFFFF) << 16) | (no & 0xFFFF)).to_bytes(6, "big")
        name = f"br{dpid}" if no == ofp.OFPP_LOCAL else f"s{dpid}-eth{no}"
        # hw_addr and name as the struct holds them (the parser turns them into text).
        return self.parser.OFPPort(no, mac, name.encode()[:15], 0,
                                   ofp.OFPPS_LIVE if up else ofp.OFPPS_LINK_DOWN,
                                   feats, 0, 0, 0, 10_000_000, 10_000_000)

    def packet_in(self, in_port: int, data: bytes, reason: PacketInReason,
                  table_id: int = 0, cookie: int = 0) -> bytes:
        """An unbuffered PACKET_IN of the whole frame (xid 0, as OVS sends them)."""
        ofp = self.ofp
        msg = self._packet_in(self.dp, buffer_id=ofp.OFP_NO_BUFFER, total_len=len(data),
                              reason=reason.value, table_id=table_id, cookie=cookie,
                              match=self.parser.OFPMatch(in_port=in_port), data=bytes(data))
        return self.encode(msg, 0)

    def flow_removed(self, msg: FlowRemoved, duration: float) -> bytes:
        """OFPT_FLOW_REMOVED of the model's message (xid 0; no datapath, so no packets);
        `duration`: seconds the entry was installed."""
        removed = self._flow_removed(
            self.dp, cookie=msg.cookie, priority=msg.priority, reason=msg.reason.value,
            table_id=msg.table_id, duration_sec=int(duration),
            duration_nsec=int(duration % 1 * 1e9), idle_timeout=msg.idle_timeout,
            hard_timeout=msg.hard_timeout, packet_count=0, byte_count=0,
            match=self.parser.OFPMatch(**dict(msg.match)))
        return self.encode(removed, 0)

    # -- decode ------------------------------------------------------------------------------

    def flow_mod(self, msg: bytes) -> FlowMod | None:
        """A FLOW_MOD as the model's `FlowMod` (decoded by the parser's `OFPFlowMod.parser`),
        or None for a command the model does not apply (MODIFY) or a message the parser
        cannot read."""
        version, msg_type, msg_len, xid = self.header(msg)
        try:
            mod = self.parser.OFPFlowMod.parser(self.dp, version, msg_type, msg_len, xid, msg)
        except (AssertionError, KeyError, ValueError, struct.error, self.truncated):
            return None
        command = self.flow_mod_commands.get(mod.command)
        if command is None:
            return None
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in mod.match.items()}
        return FlowMod(command, frozenset(fields.items()), mod.priority, mod.table_id,
                       mod.cookie, mod.cookie_mask, mod.flags, mod.idle_timeout,
                       mod.hard_timeout)

    def packet_out(self, msg: bytes) -> tuple[int, list[int], bytes] | None:
        """A PACKET_OUT's (in_port, output ports, frame), its actions decoded by the parser's
        action classes; None if it carries no frame (a buffer_id) or an action the parser
        does not know."""
        ofp = self.ofp
        buffer_id, in_port, actions_len = self.unpack(ofp.OFP_PACKET_OUT_PACK_STR, msg)
        end = ofp.OFP_PACKET_OUT_SIZE + actions_len
        if buffer_id != ofp.OFP_NO_BUFFER or end > len(msg):
            return None
        ports, offset = [], ofp.OFP_PACKET_OUT_SIZE
        try:
            while offset < end:
                action = self.parser.OFPAction.parser(msg, offset)
                if action.len < ofp.OFP_ACTION_HEADER_SIZE:
                    return None
                if isinstance(action, self.parser.OFPActionOutput):
                    ports.append(action.port)
                offset += action.len
        except (AssertionError, KeyError, struct.error):  # the parser's ways of saying "unknown"
            return None
        return in_port, ports, msg[end:]

    def header(self, buf: bytes | bytearray) -> tuple[int, int, int, int]:
        """(version, msg_type, msg_len, xid) of the message at the start of `buf`."""
        return self.common.header(buf[: self.ofp.OFP_HEADER_SIZE])

    def unpack(self, layout: str, msg: bytes, offset: int | None = None) -> tuple[Any, ...]:
        """A request's fields by the library's struct layout (default: right after the header)."""
        at = self.ofp.OFP_HEADER_SIZE if offset is None else offset
        return struct.unpack_from(layout, msg, at)

    def parse(self, msg: bytes) -> Any:
        """A switch-to-controller message as the parser's object (what a controller sees)."""
        version, msg_type, msg_len, xid = self.header(msg)
        return self.common.msg(self.dp, version, msg_type, msg_len, xid, msg)


@functools.cache
def wire() -> Wire:
    """The process's `Wire` (imports the framework on first call)."""
    return Wire()


# ---- one switch's connection to one controller ---------------------------------------------


class _Connection(asyncio.Protocol):
    """One switch's OpenFlow channel to one controller: frames messages, answers, and feeds
    role requests and writes to the switch's model."""

    def __init__(self, fleet: Fleet, switch: FakeSwitch, controller: str,
                 slot: asyncio.Semaphore) -> None:
        self.fleet = fleet
        self.switch = switch
        self.controller = controller
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.answered = False  # the controller sent something: it has accepted us
        self._slot: asyncio.Semaphore | None = slot
        self._slot_timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._miss_send_len = MISS_SEND_LEN

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._slot_timer = asyncio.get_running_loop().call_later(SLOT_TIMEOUT, self._free_slot)
        self.fleet._channel_up(self)
        transport.write(self.fleet.wire.hello())

    def data_received(self, data: bytes) -> None:
        if not self.answered:
            self.answered = True
            self._free_slot()
        buf = self._buf
        buf += data
        wire = self.fleet.wire
        header_size = wire.ofp.OFP_HEADER_SIZE
        start = 0
        handle = self.fleet._handlers
        while len(buf) - start >= header_size:
            version, msg_type, msg_len, xid = wire.header(buf[start:start + header_size])
            if msg_len < header_size:
                self.close()
                return
            if len(buf) - start < msg_len:
                break
            msg = bytes(buf[start:start + msg_len])
            start += msg_len
            handler = handle.get(msg_type)
            if handler is None:
                self._error(xid, msg, "OFPET_BAD_REQUEST", "OFPBRC_BAD_TYPE")
            elif version != wire.ofp.OFP_VERSION and msg_type != wire.ofp.OFPT_HELLO:
                self._error(xid, msg, "OFPET_BAD_REQUEST", "OFPBRC_BAD_VERSION")
            else:
                handler(self, xid, msg)
            if self._transport is None:
                return
        del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self._free_slot()
        self._transport = None
        self.fleet._channel_down(self)
        if not self.closed.done():
            self.closed.set_result(None)

    # -- helpers -----------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def _free_slot(self) -> None:
        if self._slot_timer is not None:
            self._slot_timer.cancel()
            self._slot_timer = None
        if self._slot is not None:
            self._slot.release()
            self._slot = None

    def _error(self, xid: int, msg: bytes, type_name: str, code_name: str) -> None:
        ofp = self.fleet.wire.ofp
        self.send(self.fleet.wire.error(xid, getattr(ofp, type_name), getattr(ofp, code_name),
                                        msg))

    # -- message handlers (msg is the whole message, header included) --------------------------

    def on_hello(self, xid: int, msg: bytes) -> None:
        pass  # we sent ours on connect; both sides speak 1.3 or the controller says so

    def on_echo_request(self, xid: int, msg: bytes) -> None:
        self.send(self.fleet.wire.echo_reply(xid, msg[self.fleet.wire.ofp.OFP_HEADER_SIZE:]))

    def on_echo_reply(self, xid: int, msg: bytes) -> None:
        pass

    def on_features_request(self, xid: int, msg: bytes) -> None:
        self.send(self.fleet.wire.features_reply(xid, self.switch.dpid))

    def on_get_config_request(self, xid: int, msg: bytes) -> None:
        self.send(self.fleet.wire.get_config_reply(xid, self._miss_send_len))

    def on_set_config(self, xid: int, msg: bytes) -> None:
        wire = self.fleet.wire
        _flags, self._miss_send_len = wire.unpack(wire.ofp.OFP_SWITCH_CONFIG_PACK_STR, msg)

    def on_barrier_request(self, xid: int, msg: bytes) -> None:
        self.send(self.fleet.wire.barrier_reply(xid))

    def on_multipart_request(self, xid: int, msg: bytes) -> None:
        wire = self.fleet.wire
        mp_type, _flags = wire.unpack(wire.ofp.OFP_MULTIPART_REQUEST_PACK_STR, msg)
        if mp_type == wire.ofp.OFPMP_PORT_DESC:
            self.send(wire.port_desc_reply(xid, self.switch.dpid))
        elif mp_type == wire.ofp.OFPMP_DESC:
            self.send(wire.desc_reply(xid, self.switch.dpid))
        else:
            self._error(xid, msg, "OFPET_BAD_REQUEST", "OFPBRC_BAD_MULTIPART")

    def on_get_async_request(self, xid: int, msg: bytes) -> None:
        config = self.switch.async_config(self.controller)
        self.send(self.fleet.wire.get_async_reply(xid, config))

    def on_set_async(self, xid: int, msg: bytes) -> None:
        """Remembered per channel by the model: it decides who gets the emulated PACKET_INs."""
        wire = self.fleet.wire
        pi_m, pi_s, ps_m, ps_s, fr_m, fr_s = wire.unpack(wire.ofp.OFP_ASYNC_CONFIG_PACK_STR, msg)
        self.switch.set_async(self.controller,
                              AsyncConfig((pi_m, pi_s), (ps_m, ps_s), (fr_m, fr_s)))

    def on_experimenter(self, xid: int, msg: bytes) -> None:
        self._error(xid, msg, "OFPET_BAD_REQUEST", "OFPBRC_BAD_EXPERIMENTER")

    def on_role_request(self, xid: int, msg: bytes) -> None:
        wire = self.fleet.wire
        code, generation_id = wire.unpack(wire.ofp.OFP_ROLE_REQUEST_PACK_STR, msg)
        role = wire.roles.get(code)
        if role is None:
            self._error(xid, msg, "OFPET_ROLE_REQUEST_FAILED", "OFPRRFC_BAD_ROLE")
            return
        outcome = self.fleet._role_request(self, role, generation_id)
        if outcome.refused is Refusal.STALE:
            self._error(xid, msg, "OFPET_ROLE_REQUEST_FAILED", "OFPRRFC_STALE")
        else:
            self.send(wire.role_reply(xid, outcome.role, outcome.generation_id))

    def on_write(self, xid: int, msg: bytes) -> None:
        kind = self.fleet.wire.writes[msg[1]]
        mod = self.fleet.wire.flow_mod(msg) if kind is Write.FLOW_MOD else None
        if mod is not None:
            refused = self.fleet._flow_mod(self, mod)
        else:
            refused = self.fleet._write(self, kind).refused
        if refused is Refusal.IS_SLAVE:
            self._error(xid, msg, "OFPET_BAD_REQUEST", "OFPBRC_IS_SLAVE")
        elif kind is Write.PACKET_OUT and self.fleet.peers:
            self.fleet._packet_out(self, msg)


# ---- the fleet -----------------------------------------------------------------------------


class Fleet:
    """N emulated switches, each connected to every controller; see the module docstring.

    Use from a running asyncio loop: `await start()`, then `masters()`, `switch(dpid)`,
    `await wait_all_mastered(timeout)` / `await wait_for(predicate, timeout)`, `await stop()`.
    `links` ("none", "line", "ring"; `link_layout`) joins the switches for LLDP discovery.
    """

    def __init__(
        self,
        switches: int,
        controllers: Sequence[ControllerAddress | str],
        *,
        dpid_base: int = 1,
        events: TextIO | None = None,
        max_backoff: float = MAX_BACKOFF,
        connect_burst: int = CONNECT_BURST,
        links: str = "none",
    ) -> None:
        if switches < 1 or not controllers:
            raise ValueError("a fleet needs at least one switch and one controller")
        #: (dpid, port) -> (peer dpid, peer port), both directions (`link_layout`).
        self.links = links
        self.peers = link_layout(links, range(dpid_base, dpid_base + switches))
        self.wire = wire()
        self.controllers = [c if isinstance(c, ControllerAddress) else ControllerAddress.parse(c)
                            for c in controllers]
        self.switches = {d: FakeSwitch(d) for d in range(dpid_base, dpid_base + switches)}
        self.max_backoff = max(max_backoff, INITIAL_BACKOFF)
        self.connect_burst = connect_burst
        self.started_at: float | None = None
        self._events = events
        self._emitted = dict.fromkeys(self.switches, 0)
        self._mastered: set[int] = set()
        self._up = 0
        self.changes = 0  # grows on every recorded event
        self._connections: set[_Connection] = set()
        #: dpid -> {controller target: its connection now}: where a switch's PACKET_INs go.
        self._channels: dict[int, dict[str, _Connection]] = {d: {} for d in self.switches}
        #: PACKET_INs sent to controllers / withheld from connected SLAVE channels, so far.
        self.packet_ins_delivered = 0
        self.packet_ins_suppressed = 0
        #: Accepted PACKET_OUTs from the newest MASTER (counted, not a line each: LLDP).
        self.packet_outs = 0
        #: FLOW_REMOVED messages sent to controllers, so far.
        self.flow_removed_sent = 0
        self._reported = (0, 0, 0)  # the counters at the last events-file line
        self._report: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._changed: asyncio.Event | None = None
        self._all_mastered: asyncio.Event | None = None
        self._handlers = self._handler_table()

    def _handler_table(self) -> dict[int, Callable[[_Connection, int, bytes], None]]:
        ofp, c = self.wire.ofp, _Connection
        table: dict[int, Callable[[_Connection, int, bytes], None]] = {
            ofp.OFPT_HELLO: c.on_hello,
            ofp.OFPT_ECHO_REQUEST: c.on_echo_request,
            ofp.OFPT_ECHO_REPLY: c.on_echo_reply,
            ofp.OFPT_EXPERIMENTER: c.on_experimenter,
            ofp.OFPT_FEATURES_REQUEST: c.on_features_request,
            ofp.OFPT_GET_CONFIG_REQUEST: c.on_get_config_request,
            ofp.OFPT_SET_CONFIG: c.on_set_config,
            ofp.OFPT_BARRIER_REQUEST: c.on_barrier_request,
            ofp.OFPT_MULTIPART_REQUEST: c.on_multipart_request,
            ofp.OFPT_ROLE_REQUEST: c.on_role_request,
            ofp.OFPT_GET_ASYNC_REQUEST: c.on_get_async_request,
            ofp.OFPT_SET_ASYNC: c.on_set_async,
        }
        table.update(dict.fromkeys(self.wire.writes, c.on_write))
        return table

    # ---- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start dialling every controller from every switch (returns at once)."""
        if self._tasks:
            return
        self._changed = asyncio.Event()
        self._all_mastered = asyncio.Event()
        self.started_at = time.time()
        self._write_line({"t": self.started_at, "kind": "fleet_start",
                          "switches": len(self.switches), "dpid_base": min(self.switches),
                          "controllers": [c.target for c in self.controllers],
                          "framework": self.wire.framework, "pid": os.getpid(),
                          "links": self.links, "linked_ports": len(self.peers)})
        slots = {c: asyncio.Semaphore(self.connect_burst) for c in self.controllers}
        # Interleaved (switch 1 to every controller, then switch 2 ...), like a booting network.
        for dpid, controller in itertools.product(self.switches, self.controllers):
            task = asyncio.create_task(
                self._dial_forever(self.switches[dpid], controller, slots[controller]),
                name=f"fleet-{dpid:x}-{controller.port}")
            self._tasks.append(task)

    async def stop(self) -> None:
        """Close every connection, stop re-dialling, flush the events file."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._report is not None:
            self._report.cancel()
            self._report_packet_ins()
        for conn in list(self._connections):
            conn.close()
        # Transports close on the next loop iterations; their connection_lost records DISCONNECT.
        pending = [c.closed for c in self._connections]
        if pending:
            await asyncio.wait(pending, timeout=5)
        self._write_line({"t": time.time(), "kind": "fleet_stop"})
        if self._events is not None:
            self._events.flush()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _dial_forever(self, switch: FakeSwitch, controller: ControllerAddress,
                            slot: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        delay = INITIAL_BACKOFF
        target = controller.target
        while not self._stopping:
            await slot.acquire()
            conn = _Connection(self, switch, target, slot)
            try:
                await loop.create_connection(lambda c=conn: c, controller.host, controller.port)
            except OSError:
                slot.release()
            else:
                await conn.closed
                if conn.answered:
                    delay = INITIAL_BACKOFF
            if self._stopping:
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.max_backoff)

    # ---- model bookkeeping (called by connections) -------------------------------------------

    def _channel_up(self, conn: _Connection) -> None:
        self._connections.add(conn)
        self._channels[conn.switch.dpid][conn.controller] = conn
        self._up += 1
        conn.switch.connect(conn.controller, time.time())
        self._recorded(conn.switch)

    def _channel_down(self, conn: _Connection) -> None:
        if conn in self._connections:
            self._connections.discard(conn)
            channels = self._channels[conn.switch.dpid]
            if channels.get(conn.controller) is conn:
                del channels[conn.controller]
            self._up -= 1
            conn.switch.disconnect(conn.controller, time.time())
            self._recorded(conn.switch)

    def _role_request(self, conn: _Connection, role: Role, generation_id: int) -> RoleOutcome:
        outcome = conn.switch.role_request(conn.controller, role, generation_id, time.time())
        self._recorded(conn.switch)
        return outcome

    def _write(self, conn: _Connection, kind: Write) -> WriteOutcome:
        outcome = conn.switch.write(conn.controller, kind, time.time())
        self._recorded(conn.switch)
        return outcome

    def _flow_mod(self, conn: _Connection, mod: FlowMod) -> Refusal | None:
        """A FLOW_MOD through the switch's flow table; sends the FLOW_REMOVEDs a delete
        produced and arms the timeout of an added entry. Returns the refusal, if any."""
        switch = conn.switch
        outcome = switch.flow_mod(conn.controller, mod, time.time())
        self._recorded(switch)
        if outcome.accepted:
            self._send_async(switch, outcome.messages)
            timeout = min((t for t in (mod.hard_timeout, mod.idle_timeout) if t), default=0)
            if mod.command is FlowModCommand.ADD and timeout:
                asyncio.get_running_loop().call_later(timeout, self._expire, switch)
        return outcome.refused

    def _expire(self, switch: FakeSwitch) -> None:
        """A timer armed by an ADD with a timeout: remove what has expired by now."""
        if not self._stopping:
            self._send_async(switch, switch.expire(time.time()))

    def _send_async(self, switch: FakeSwitch, messages: Sequence[AsyncMessage]) -> None:
        """Send the model's FLOW_REMOVEDs on the channels they are for (one events-file line
        per removed entry, naming the channels)."""
        sent: dict[FlowRemoved, list[str]] = {}
        connections = self._channels[switch.dpid]
        for message in messages:
            removed = message.message
            if not isinstance(removed, FlowRemoved):
                continue
            target = connections.get(str(message.channel))
            channels = sent.setdefault(removed, [])
            if target is not None:
                target.send(self.wire.flow_removed(removed, 0.0))
                channels.append(str(message.channel))
        for removed, channels in sent.items():
            self.flow_removed_sent += len(channels)
            self._write_line({"t": removed.t, "kind": "flow_removed", "dpid": switch.dpid,
                              "cookie": removed.cookie, "priority": removed.priority,
                              "table_id": removed.table_id, "reason": removed.reason.name.lower(),
                              "channels": channels})
        if sent:
            self._wake()

    def _packet_out(self, conn: _Connection, msg: bytes) -> None:
        """An accepted PACKET_OUT: each output on a linked port arrives at the peer port."""
        wire = self.wire
        decoded = wire.packet_out(msg)
        if decoded is None:
            return
        in_port, outputs, data = decoded
        dpid = conn.switch.dpid
        flood = (wire.ofp.OFPP_FLOOD, wire.ofp.OFPP_ALL)
        for out in outputs:
            ports = range(1, PORTS_PER_SWITCH + 1) if out in flood else (out,)
            for port in ports:
                peer = self.peers.get((dpid, port))
                if peer is not None and port != in_port:
                    self._deliver(*peer, data)

    def cut_link(self, dpid: int, port: int) -> tuple[int, int] | None:
        """Cut the link on (dpid, port), as unplugging its cable: no frame crosses it any more,
        and both ends report PORT_STATUS (link down) on every channel (OpenFlow 1.3 sends port
        status to slaves too). One events-file line; returns the peer end, None if unlinked."""
        peer = self.peers.pop((dpid, port), None)
        if peer is None:
            return None
        self.peers.pop(peer, None)
        now = time.time()
        for end_dpid, end_port in ((dpid, port), peer):
            message = self.wire.port_down(end_dpid, end_port)
            for conn in self._channels[end_dpid].values():
                conn.send(message)
        self._write_line({"t": now, "kind": "link_cut", "dpid": dpid, "port": port,
                          "peer_dpid": peer[0], "peer_port": peer[1]})
        self._wake()
        return peer

    def cut_next_link(self) -> tuple[int, int] | None:
        """Cut the linked port with the lowest (dpid, port) still linked (SIGUSR1 of the CLI);
        returns it, None when no link is left."""
        end = min(self.peers, default=None)
        if end is not None:
            self.cut_link(*end)
        return end

    def _deliver(self, dpid: int, port: int, data: bytes) -> None:
        """The frame arrives on `port` of `dpid`, where it matches the controller's LLDP flow
        (output:CONTROLLER): a PACKET_IN with reason ACTION to every channel the switch's model
        says gets one (MASTER and EQUAL under the default async config), none to the others."""
        switch = self.switches[dpid]
        reason = PacketInReason.ACTION
        receivers = switch.packet_in(time.time(), reason, data, table_id=0, cookie=0)
        connections = self._channels[dpid]
        sent = 0
        if receivers:
            encoded = self.wire.packet_in(port, data, reason)
            for message in receivers:
                target = connections.get(str(message.channel))
                if target is not None:
                    target.send(encoded)
                    sent += 1
        self.packet_ins_delivered += sent
        self.packet_ins_suppressed += len(connections) - sent
        self._schedule_report()
        self._wake()

    def _schedule_report(self) -> None:
        if self._report is None and self._events is not None:
            self._report = asyncio.get_running_loop().call_later(
                PACKET_IN_REPORT_PERIOD, self._report_packet_ins)

    def _report_packet_ins(self) -> None:
        """One events-file line with the packets of the last period (not one per LLDP)."""
        self._report = None
        now = (self.packet_outs, self.packet_ins_delivered, self.packet_ins_suppressed)
        if now != self._reported:
            outs, delivered, suppressed = (a - b for a, b in zip(now, self._reported,
                                                                 strict=True))
            self._write_line({"t": time.time(), "kind": "packet_in", "packet_outs": outs,
                              "delivered": delivered, "suppressed": suppressed,
                              "packet_outs_total": now[0], "delivered_total": now[1],
                              "suppressed_total": now[2]})
            self._reported = now

    def _wake(self) -> None:
        """Wake `wait_for` callers to re-check their predicate."""
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def _recorded(self, switch: FakeSwitch) -> None:
        """Emit the switch's new events, update the mastered set, wake waiters."""
        start = self._emitted[switch.dpid]
        new = switch.events[start:]
        if not new:
            return
        self._emitted[switch.dpid] = len(switch.events)
        self.changes += len(new)
        for event in new:
            if (event.kind is Kind.WRITE and event.detail == Write.PACKET_OUT.value
                    and not event.violation):
                self.packet_outs += 1  # LLDP, every second per port: summed per period
                self._schedule_report()
            elif self._events is not None:
                self._write_line(event_json(event))
        if switch.master is None:
            self._mastered.discard(switch.dpid)
        else:
            self._mastered.add(switch.dpid)
        if self._all_mastered is not None:
            if len(self._mastered) == len(self.switches):
                self._all_mastered.set()
            else:
                self._all_mastered.clear()
        self._wake()

    def _write_line(self, record: dict[str, Any]) -> None:
        if self._events is not None:
            self._events.write(json.dumps(record, separators=(",", ":")) + "\n")

    # ---- questions ---------------------------------------------------------------------------

    def switch(self, dpid: int) -> FakeSwitch:
        """The model of one switch (roles, generation_id, its recorded events)."""
        return self.switches[dpid]

    def masters(self) -> dict[int, tuple[str, int]]:
        """{dpid: (controller target, generation_id it was granted MASTER under)} now."""
        out = {}
        for dpid in self._mastered:
            switch = self.switches[dpid]
            generation = switch.master_generation
            out[dpid] = (str(switch.master), 0 if generation is None else generation)
        return out

    @property
    def connections_up(self) -> int:
        return self._up

    @property
    def connections_total(self) -> int:
        return len(self.switches) * len(self.controllers)

    @property
    def mastered(self) -> int:
        """How many switches have a MASTER channel now."""
        return len(self._mastered)

    def status(self) -> str:
        """One line: mastered switches, connections up, events so far (and, with links, the
        PACKET_INs delivered and withheld from SLAVE channels)."""
        age = time.time() - self.started_at if self.started_at else 0.0
        line = (f"fleet t={age:.1f}s mastered={self.mastered}/{len(self.switches)} "
                f"connections={self._up}/{self.connections_total} events={self.changes}")
        if self.peers:
            line += (f" packet_ins={self.packet_ins_delivered}"
                     f" suppressed={self.packet_ins_suppressed}")
        return line

    async def wait_all_mastered(self, timeout: float) -> None:
        """Until every switch has a MASTER (raises TimeoutError)."""
        if self._all_mastered is None:
            raise RuntimeError("the fleet is not started")
        async with asyncio.timeout(timeout):
            await self._all_mastered.wait()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float) -> Any:
        """Until `predicate()` is truthy, re-checked on every recorded event; returns its value
        (raises TimeoutError)."""
        async with asyncio.timeout(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                assert self._changed is not None, "the fleet is not started"
                await self._changed.wait()


def event_json(event: Event) -> dict[str, Any]:
    """An event as one JSON-able dict (the events file's line)."""
    record: dict[str, Any] = {
        "t": event.t,
        "kind": event.kind.value,
        "dpid": event.dpid,
        "controller": str(event.channel),
        "role": event.role.value,
        "generation_id": event.generation_id,
    }
    if event.detail:
        record["detail"] = event.detail
    if event.violation:
        record["violation"] = True
    return record


# ---- the controller end, for tests ---------------------------------------------------------


@dataclass(frozen=True)
class RoleAnswer:
    """A switch's answer to a role request: ROLE_REPLY(role, generation_id) or a refusal."""

    role: Role | None
    generation_id: int | None
    refused: Refusal | None = None


class ControllerChannel(asyncio.Protocol):
    """One switch's connection to a `ControllerEnd`: handshake, echo, requests by xid."""

    def __init__(self, end: ControllerEnd) -> None:
        self.end = end
        self.wire = end.wire
        self.dpid: int | None = None
        self.features: Any = None
        self.closed = asyncio.get_running_loop().create_future()
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._xids = itertools.count(0x100)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        #: PACKET_INs the switch sent on this channel, oldest first (parsed).
        self.packet_ins: asyncio.Queue[Any] = asyncio.Queue()
        #: FLOW_REMOVEDs the switch sent on this channel, oldest first (parsed).
        self.flow_removeds: asyncio.Queue[Any] = asyncio.Queue()
        #: PORT_STATUSes the switch sent on this channel, oldest first (parsed).
        self.port_statuses: asyncio.Queue[Any] = asyncio.Queue()
        #: The type of every message received, in arrival order (to check ordering).
        self.arrivals: list[int] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.send(self.wire.parser.OFPHello(self.wire.dp))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        while len(self._buf) >= self.wire.ofp.OFP_HEADER_SIZE:
            msg_len = self.wire.header(self._buf)[2]
            if len(self._buf) < msg_len:
                return
            raw, self._buf = bytes(self._buf[:msg_len]), self._buf[msg_len:]
            self._received(self.wire.parse(raw))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("switch closed the channel"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _received(self, msg: Any) -> None:
        ofp = self.wire.ofp
        if msg is None:
            return
        self.arrivals.append(msg.msg_type)
        if msg.msg_type == ofp.OFPT_HELLO:
            self.send(self.wire.parser.OFPFeaturesRequest(self.wire.dp), 1)
        elif msg.msg_type == ofp.OFPT_ECHO_REQUEST:
            self.send(self.wire.parser.OFPEchoReply(self.wire.dp, msg.data), msg.xid)
        elif msg.msg_type == ofp.OFPT_FEATURES_REPLY and self.dpid is None:
            self.dpid, self.features = msg.datapath_id, msg
            self.end._identified(self)
        elif msg.msg_type == ofp.OFPT_PACKET_IN:
            self.packet_ins.put_nowait(msg)
            return
        elif msg.msg_type == ofp.OFPT_FLOW_REMOVED:
            self.flow_removeds.put_nowait(msg)
            return
        elif msg.msg_type == ofp.OFPT_PORT_STATUS:
            self.port_statuses.put_nowait(msg)
            return
        future = self._pending.pop(msg.xid, None)
        if future is not None and not future.done():
            future.set_result(msg)

    def send(self, msg: Any, xid: int | None = None) -> int:
        """Serialize and send; returns the xid used."""
        xid = next(self._xids) if xid is None else xid
        if self._transport is not None:
            self._transport.write(Wire.encode(msg, xid))
        return xid

    async def request(self, msg: Any, timeout: float = 10.0) -> Any:
        """Send, and wait for the first message back with the same xid (reply or error)."""
        xid = next(self._xids)
        future = self._pending[xid] = asyncio.get_running_loop().create_future()
        self.send(msg, xid)
        async with asyncio.timeout(timeout):
            return await future

    async def role(self, role: Role, generation_id: int, timeout: float = 10.0) -> RoleAnswer:
        """ROLE_REQUEST -> the reply's role and generation_id, or the refusal."""
        ofp = self.wire.ofp
        reply = await self.request(self.wire.parser.OFPRoleRequest(
            self.wire.dp, self.wire.role_codes[role], generation_id), timeout)
        if reply.msg_type == ofp.OFPT_ROLE_REPLY:
            return RoleAnswer(self.wire.roles[reply.role], reply.generation_id)
        return RoleAnswer(None, None, self._refusal(reply))

    async def write(self, msg: Any, timeout: float = 10.0) -> Refusal | None:
        """Send a state-changing message, then a barrier: None if it was accepted (no error
        before the barrier reply), else the refusal."""
        loop = asyncio.get_running_loop()
        xid = next(self._xids)
        error = self._pending[xid] = loop.create_future()
        self.send(msg, xid)
        await self.request(self.wire.parser.OFPBarrierRequest(self.wire.dp), timeout)
        self._pending.pop(xid, None)
        return self._refusal(error.result()) if error.done() else None

    async def packet_in(self, timeout: float = 10.0) -> Any:
        """The next PACKET_IN from the switch (parsed); waits for it."""
        async with asyncio.timeout(timeout):
            return await self.packet_ins.get()

    async def flow_removed(self, timeout: float = 10.0) -> Any:
        """The next FLOW_REMOVED from the switch (parsed); waits for it."""
        async with asyncio.timeout(timeout):
            return await self.flow_removeds.get()

    async def port_status(self, timeout: float = 10.0) -> Any:
        """The next PORT_STATUS from the switch (parsed); waits for it."""
        async with asyncio.timeout(timeout):
            return await self.port_statuses.get()

    def packet_out(self, port: int, data: bytes) -> Any:
        """A PACKET_OUT of `data` on `port`, as Ryu sends LLDP (in_port CONTROLLER)."""
        parser, ofp = self.wire.parser, self.wire.ofp
        return parser.OFPPacketOut(self.wire.dp, buffer_id=ofp.OFP_NO_BUFFER,
                                   in_port=ofp.OFPP_CONTROLLER,
                                   actions=[parser.OFPActionOutput(port, 0)], data=data)

    def flow_mod(self) -> Any:
        """A harmless FLOW_MOD (add a drop rule for one MAC) to test write permission."""
        parser = self.wire.parser
        return parser.OFPFlowMod(self.wire.dp, priority=1,
                                 match=parser.OFPMatch(eth_dst="02:00:00:00:00:01"),
                                 instructions=[])

    def _refusal(self, msg: Any) -> Refusal:
        ofp = self.wire.ofp
        if msg.msg_type == ofp.OFPT_ERROR:
            if (msg.type, msg.code) == (ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE):
                return Refusal.STALE
            if (msg.type, msg.code) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE):
                return Refusal.IS_SLAVE
        raise AssertionError(f"unexpected answer from {self.dpid}: {msg}")

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class ControllerEnd:
    """A listening controller port for tests: switches that connect are handshaken and
    identified by dpid; `await channel(dpid)` hands a test the connection to drive."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.wire = wire()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._channels: dict[int, ControllerChannel] = {}
        self._all: set[ControllerChannel] = set()
        self._arrived = asyncio.Event()

    @property
    def target(self) -> str:
        return f"tcp:{self.host}:{self.port}"

    async def start(self) -> int:
        """Listen on a free port; returns it."""
        self._server = await asyncio.get_running_loop().create_server(
            self._make_channel, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _make_channel(self) -> ControllerChannel:
        channel = ControllerChannel(self)
        self._all.add(channel)
        return channel

    def _identified(self, channel: ControllerChannel) -> None:
        assert channel.dpid is not None
        self._channels[channel.dpid] = channel
        self._arrived.set()
        self._arrived = asyncio.Event()

    async def channel(self, dpid: int, timeout: float = 15.0) -> ControllerChannel:
        """The (newest) handshaken connection from switch `dpid`; waits for it."""
        async with asyncio.timeout(timeout):
            while dpid not in self._channels or self._channels[dpid].closed.done():
                await self._arrived.wait()
        return self._channels[dpid]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for channel in self._all:
            channel.close()
        if self._server is not None:
            await self._server.wait_closed()


# ---- CLI -----------------------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m ryu_integration.testing.fleet",
        description="Emulate N OpenFlow 1.3 switches, each connected to every controller.")
    p.add_argument("--switches", type=int, required=True, help="how many switches")
    p.add_argument("--controller", action="append", required=True, type=ControllerAddress.parse,
                   metavar="tcp:HOST:PORT", help="a controller every switch dials (repeat)")
    p.add_argument("--dpid-base", type=lambda s: int(s, 0), default=1,
                   help="first datapath id (default 1)")
    p.add_argument("--events", metavar="FILE.jsonl",
                   help="write one JSON line per role change, refusal and write")
    p.add_argument("--max-backoff", type=float, default=MAX_BACKOFF,
                   help=f"longest pause between re-dials, seconds (default {MAX_BACKOFF})")
    p.add_argument("--connect-burst", type=int, default=CONNECT_BURST,
                   help=f"unanswered dials per controller at once (default {CONNECT_BURST})")
    p.add_argument("--links", choices=LINKS, default="none",
                   help="join switches port 1 -> port 2 in a line or a ring; PACKET_OUTs on a "
                        "linked port arrive as PACKET_INs at the peer (default none)")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace, events: TextIO | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fleet = Fleet(args.switches, args.controller, dpid_base=args.dpid_base, events=events,
                  max_backoff=args.max_backoff, connect_burst=args.connect_burst,
                  links=args.links)
    loop.add_signal_handler(signal.SIGUSR1, fleet.cut_next_link)  # benchmarks cut links
    # The framework's parser is imported now: keep its ~100,000 objects out of every full
    # collection, whose pause would otherwise count in the times the benchmarks measure.
    gc.collect()
    gc.freeze()
    await fleet.start()
    print(f"fleet: {args.switches} switches x {len(args.controller)} controllers "
          f"({fleet.wire.framework}), dpids {args.dpid_base:#x}.."
          f"{args.dpid_base + args.switches - 1:#x}, links {args.links}, pid {os.getpid()}",
          flush=True)
    shown: tuple[int, ...] = ()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await stop.wait()
        now = (fleet.changes, fleet.packet_ins_delivered, fleet.packet_ins_suppressed)
        if now != shown:
            shown = now
            print(fleet.status(), flush=True)
            if events is not None:
                events.flush()
    await fleet.stop()
    print(fleet.status() + " (stopped)", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: run until SIGTERM / SIGINT."""
    os.environ.setdefault(ENV_VAR, OS_KEN)  # before anything imports the framework
    args = _parse_args(argv)
    if args.switches < 1:
        print("--switches must be >= 1", file=sys.stderr)
        return 2
    if args.links == "ring" and args.switches < 3:
        print("--links ring needs --switches >= 3", file=sys.stderr)
        return 2
    limit = raise_nofile_limit()
    needed = args.switches * len(args.controller) + 64
    if limit < needed:
        print(f"fleet: open-file limit {limit} < {needed} needed; some connections will fail",
              file=sys.stderr, flush=True)
    with contextlib.ExitStack() as stack:
        events = (stack.enter_context(open(args.events, "a", buffering=1 << 16))
                  if args.events else None)
        asyncio.run(_serve(args, events))
    return 0


if __name__ == "__main__":
    sys.exit(main())
