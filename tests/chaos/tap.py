"""An OpenFlow tap: a TCP proxy between the switches and one controller that reads the stream.

What: listens on a free loopback port (the bridges dial it as that controller) and forwards each
connection to the controller's real port, decoding every message in both directions with
os-ken's own OpenFlow 1.3 parser. It reports to a :class:`~tests.chaos.monitor.Monitor` the
datapath id (FEATURES_REPLY), role requests / replies / errors, and every state-changing write
(FLOW_MOD, PACKET_OUT, GROUP_MOD, ...). After each write it appends its own BARRIER_REQUEST and
swallows the reply, so the monitor learns whether the switch accepted the write (barrier reply
without an error for that xid) or refused it.
Faults: ``cut()`` resets every connection and refuses new ones (controller cut off from its
switches); ``hold_replies()`` delays everything the switches send to the controller (a slow
switch: role replies arrive late) until ``release()``.
Why: invariant (b) needs the switch's own answers, matched by xid, and a partition point
between a controller and its switches.
"""

from __future__ import annotations

import itertools
import queue
import selectors
import socket
import struct
import threading
from typing import TYPE_CHECKING, Any

from os_ken.ofproto import ofproto_parser, ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as ofp

from tests.servers._process import LOOPBACK

if TYPE_CHECKING:
    from .monitor import Monitor

#: Controller -> switch messages that change the switch (refused IS_SLAVE from a slave).
WRITES = {
    ofp.OFPT_FLOW_MOD: "FLOW_MOD",
    ofp.OFPT_PACKET_OUT: "PACKET_OUT",
    ofp.OFPT_GROUP_MOD: "GROUP_MOD",
    ofp.OFPT_METER_MOD: "METER_MOD",
    ofp.OFPT_PORT_MOD: "PORT_MOD",
    ofp.OFPT_TABLE_MOD: "TABLE_MOD",
}
ROLE_NAMES = {
    ofp.OFPCR_ROLE_NOCHANGE: "nochange",
    ofp.OFPCR_ROLE_EQUAL: "equal",
    ofp.OFPCR_ROLE_MASTER: "master",
    ofp.OFPCR_ROLE_SLAVE: "slave",
}
_HEADER = ofp.OFP_HEADER_SIZE
#: The tap's own barrier xids: high bits no os-ken / Ryu datapath uses for its counter.
_TAP_XID_BASE = 0xC4A05000
_DESC = ofproto_protocol.ProtocolDesc(ofp.OFP_VERSION)


def split_messages(buf: bytearray) -> list[bytes]:
    """Remove and return every complete OpenFlow message at the front of ``buf``."""
    out: list[bytes] = []
    while len(buf) >= _HEADER:
        length = struct.unpack_from("!H", buf, 2)[0]
        if length < _HEADER:
            raise ValueError(f"bad OpenFlow length {length}")
        if len(buf) < length:
            break
        out.append(bytes(buf[:length]))
        del buf[:length]
    return out


def barrier_request(xid: int) -> bytes:
    """An OpenFlow 1.3 BARRIER_REQUEST with ``xid``."""
    return struct.pack("!BBHI", ofp.OFP_VERSION, ofp.OFPT_BARRIER_REQUEST, _HEADER, xid)


def parse_from_switch(raw: bytes) -> Any | None:
    """os-ken's parsed message for a switch -> controller message (None if not OF1.3)."""
    version, msg_type, length, xid = ofproto_parser.header(raw)
    if version != ofp.OFP_VERSION:
        return None
    return ofproto_parser.msg(_DESC, version, msg_type, length, xid, raw)


class TapLink:
    """One switch <-> controller connection through the tap (two pump threads)."""

    _ids = itertools.count(1)

    def __init__(self, tap: OpenFlowTap, switch: socket.socket, controller: socket.socket) -> None:
        self.id = next(self._ids)
        self.tap = tap
        self.member = tap.member
        self.switch = switch
        self.controller = controller
        self.dpid: int | None = None
        self._barriers = itertools.count(1)
        self._closed = False
        self._s2c_out: queue.Queue[bytes | None] = queue.Queue()
        self.threads = [
            threading.Thread(target=self._pump_c2s, name=f"tap-{self.member}-c2s", daemon=True),
            threading.Thread(target=self._pump_s2c, name=f"tap-{self.member}-s2c", daemon=True),
            threading.Thread(target=self._forward_s2c, name=f"tap-{self.member}-fwd",
                             daemon=True),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    # -- pumps -------------------------------------------------------------------------------
    def _pump_c2s(self) -> None:
        buf = bytearray()
        try:
            while True:
                data = self.controller.recv(65536)
                if not data:
                    break
                buf += data
                out = bytearray()
                for raw in split_messages(buf):
                    out += raw
                    out += self._from_controller(raw)
                self.switch.sendall(out)
        except (OSError, ValueError):
            pass
        finally:
            self.close()

    def _pump_s2c(self) -> None:
        buf = bytearray()
        try:
            while True:
                data = self.switch.recv(65536)
                if not data:
                    break
                buf += data
                out = bytearray()
                replies = 0
                for raw in split_messages(buf):
                    if self._from_switch(raw):
                        out += raw
                        replies += raw[1] == ofp.OFPT_ROLE_REPLY
                if replies:
                    self.tap.note_role_replies(replies)
                if out:
                    self._s2c_out.put(bytes(out))
        except (OSError, ValueError):
            pass
        finally:
            self._s2c_out.put(None)
            self.close()

    def _forward_s2c(self) -> None:
        # Separate from the reader, so a held link is still read (and judged) as the switch
        # answers; only the delivery to the controller waits.
        try:
            while (data := self._s2c_out.get()) is not None:
                if not self.tap.wait_forwarding():
                    break
                self.controller.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    # -- decoding ----------------------------------------------------------------------------
    def _from_controller(self, raw: bytes) -> bytes:
        """Report ``raw`` to the monitor; return what to send after it (a barrier or b'')."""
        version, msg_type, _length, xid = ofproto_parser.header(raw)
        monitor = self.tap.monitor
        if version != ofp.OFP_VERSION:
            return b""
        if msg_type == ofp.OFPT_ROLE_REQUEST:
            role, generation_id = struct.unpack_from(ofp.OFP_ROLE_REQUEST_PACK_STR, raw, _HEADER)
            monitor.role_request(self, xid, ROLE_NAMES.get(role, str(role)), generation_id)
        elif msg_type in WRITES:
            barrier = (_TAP_XID_BASE + next(self._barriers)) & 0xFFFFFFFF
            monitor.write_sent(self, WRITES[msg_type], xid, barrier)
            return barrier_request(barrier)
        return b""

    def _from_switch(self, raw: bytes) -> bool:
        """Report ``raw`` to the monitor; False if it is the reply to the tap's own barrier."""
        msg = parse_from_switch(raw)
        if msg is None:
            return True
        monitor = self.tap.monitor
        if msg.msg_type == ofp.OFPT_FEATURES_REPLY:
            self.dpid = msg.datapath_id
            monitor.link_up(self)
        elif msg.msg_type == ofp.OFPT_ROLE_REPLY:
            monitor.role_reply(self, msg.xid, ROLE_NAMES.get(msg.role, str(msg.role)),
                               msg.generation_id)
        elif msg.msg_type == ofp.OFPT_ERROR:
            monitor.error(self, msg.xid, msg.type, msg.code)
        elif msg.msg_type == ofp.OFPT_BARRIER_REPLY:
            return not monitor.barrier_reply(self, msg.xid)
        return True

    # -- teardown ----------------------------------------------------------------------------
    def abort(self) -> None:
        for s in (self.switch, self.controller):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.close()

    def close(self) -> None:
        with self.tap._cond:
            if self._closed:
                return
            self._closed = True
            self.tap._links.discard(self)
        self._s2c_out.put(None)
        for s in (self.switch, self.controller):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.tap.monitor.link_down(self)


class OpenFlowTap:
    """Forward ``127.0.0.1:port`` to a controller's OpenFlow port, reporting to ``monitor``."""

    def __init__(self, member: str, target_port: int, monitor: Monitor) -> None:
        self.member = member
        self.target_port = target_port
        self.monitor = monitor
        self._cond = threading.Condition()
        self._links: set[TapLink] = set()
        self._cut = False
        self._held = False
        self._closed = False
        #: ROLE_REPLY messages that reached the tap while replies were held (delivered late).
        self.held_role_replies = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"tap-accept-{member}")
        self._acceptor.start()

    @property
    def target(self) -> str:
        """The controller target OVS dials: ``tcp:127.0.0.1:<tap port>``."""
        return f"tcp:{LOOPBACK}:{self.port}"

    # -- faults ------------------------------------------------------------------------------
    def cut(self) -> None:
        """Reset every connection and refuse new ones until ``restore()``."""
        with self._cond:
            self._cut = True
            links = list(self._links)
        for link in links:
            link.abort()

    def restore(self) -> None:
        """Accept connections again (after ``cut()``)."""
        with self._cond:
            self._cut = False

    def hold_replies(self) -> None:
        """Delay everything the switches send to this controller until ``release()``."""
        with self._cond:
            self._held = True

    def release(self) -> None:
        """Deliver what ``hold_replies()`` delayed, in order, and forward normally again."""
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def note_role_replies(self, count: int) -> None:
        with self._cond:
            if self._held:
                self.held_role_replies += count

    def wait_forwarding(self) -> bool:
        """Block while held; False once the tap is closed."""
        with self._cond:
            self._cond.wait_for(lambda: not self._held or self._closed)
            return not self._closed

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Stop listening, reset every connection, join the threads (bounded)."""
        with self._cond:
            self._closed = True
            self._held = False
            links = list(self._links)
            self._cond.notify_all()
        self._wake_w.send(b"x")
        self._acceptor.join(5)
        for link in links:
            link.abort()
            for t in link.threads:
                t.join(5)
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()

    def _accept_loop(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self._listener, selectors.EVENT_READ, "listen")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    try:
                        client, _ = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    client.setblocking(True)
                    self._handle(client)
        except OSError:
            return
        finally:
            sel.close()

    def _handle(self, client: socket.socket) -> None:
        with self._cond:
            refuse = self._cut or self._closed
        upstream = None
        if not refuse:
            try:
                upstream = socket.create_connection((LOOPBACK, self.target_port), timeout=2.0)
                upstream.settimeout(None)
            except OSError:
                upstream = None
        if upstream is None:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = TapLink(self, client, upstream)
        with self._cond:
            self._links.add(link)
        link.start()

    def __repr__(self) -> str:
        return f"<OpenFlowTap {self.member} :{self.port} -> :{self.target_port}>"
