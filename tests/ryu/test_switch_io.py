"""The shared switch I/O loop (`ryu_integration.switch_io`) against a real `coord-manager
--framework os-ken` process on loopback.

What: one controller per module on an embedded store; switches emulated by the fleet
(`python -m ryu_integration.testing.fleet`, a subprocess that re-dials like Open vSwitch) and by
`RawSwitch` below: a blocking socket served by one thread, speaking OpenFlow 1.3 through the
framework's own parser (`fleet.wire()`), so that a test can also send what no switch should
(hand-made bytes only where the point is a malformed message). Covered: many switches mastered
by few threads, hostile or broken switches (one log line each, no traceback, the others keep
working), abrupt disconnects, silent connections, a slow reader, a reader that never reads, os-ken's
echo keepalive run by the loop, and the `COORD_SWITCH_IO=threads` opt-out.
Why: the loop replaces os-ken's two threads per switch for every connection of the process;
one switch must never be able to stall, crash or flood the log for all the others.
Waits: the controller's log lines (pushed per line through `LOG_EVENTS`) and socket reads, each
with a timeout; nothing sleeps.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ryu_integration.manager import SWITCH_IO_ENV
from ryu_integration.switch_io import MAX_PENDING
from ryu_integration.testing.fake_switch import PacketInReason, Role
from ryu_integration.testing.fleet import wire
from tests.integration.ryu_helpers import LOG_EVENTS, Controller, require_framework, wait_until
from tests.servers._process import LOOPBACK, ManagedProcess, free_port

#: Seconds for any one wait: generous, the machine has two cores shared with other jobs.
TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parents[2]
_dpids = itertools.count(0x5100)
_xids = itertools.count(0x1000)


# ---- the controller and the fleet ------------------------------------------------------------


@contextlib.contextmanager
def running_controller(workdir: Path, switch_io: str | None,
                       defaults: dict[str, Any] | None = None) -> Iterator[Controller]:
    """One `coord-manager --framework os-ken` on an embedded store in `workdir`, READY;
    `switch_io` is `COORD_SWITCH_IO` (None: unset, the shared loop); `defaults`: os-ken options
    for ryu.conf's [DEFAULT]. Killed by PID at the end."""
    require_framework("os-ken")
    with pytest.MonkeyPatch.context() as env:  # the process copies os.environ when it starts
        if switch_io is None:
            env.delenv(SWITCH_IO_ENV, raising=False)
        else:
            env.setenv(SWITCH_IO_ENV, switch_io)
        conf = {"DEFAULT": defaults or {},
                "coordination": {"backend_url": f"embedded://{workdir}/store"}}
        controller = Controller("c1", "os-ken", free_port(), workdir, conf)
        controller.start()
    try:
        controller.wait_ready(TIMEOUT)
        yield controller
    finally:
        controller.close()


def listening_line(controller: Controller) -> str:
    return f"serving switches on {LOOPBACK}:{controller.port} from one I/O thread"


def wait_line(controller: Controller, predicate: Callable[[str], bool], what: str,
              timeout: float = TIMEOUT) -> str:
    """The first output line of `controller` satisfying `predicate`; waits for it."""
    return wait_until(lambda: next((x for x in controller.lines if predicate(x)), None),
                      timeout, what, [controller])


def lines_about(controller: Controller, who: str) -> list[str]:
    """The controller's output lines that name `who` (a connection's address)."""
    with LOG_EVENTS:
        return [x for x in controller.lines if who in x]


def wait_mastered(controller: Controller, dpids: set[int], timeout: float = TIMEOUT) -> None:
    """Until the controller logged a confirmed MASTER (may_program=true) for every dpid."""
    seen: set[int] = set()
    scanned = 0

    def check() -> bool:
        nonlocal scanned
        for record in controller.records[scanned:]:
            if record.kind == "MASTERSHIP" and record.get("may_program") == "true":
                seen.add(record.dpid)
        scanned = len(controller.records)
        return dpids <= seen

    wait_until(check, timeout, f"{len(dpids)} switches mastered ({len(seen & dpids)} seen)",
               [controller])


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def assert_no_traceback(controller: Controller, since: int = 0) -> None:
    """No traceback in the controller's output (from line `since` on)."""
    with LOG_EVENTS:
        found = [x for x in controller.lines[since:] if "Traceback" in x]
    assert not found, controller.log_tail(60)


@contextlib.contextmanager
def fleet(controller: Controller, switches: int, dpid_base: int, workdir: Path) -> Iterator[None]:
    """`python -m ryu_integration.testing.fleet` against `controller`; stopped by PID."""
    argv = [sys.executable, "-m", "ryu_integration.testing.fleet", "--switches", str(switches),
            "--controller", controller.target, "--dpid-base", hex(dpid_base)]
    proc = ManagedProcess(f"fleet-{dpid_base:x}", argv, cwd=ROOT,
                          log_path=workdir / f"fleet-{dpid_base:x}.log",
                          env=dict(os.environ, COORD_FRAMEWORK="os-ken"))
    proc.start()
    try:
        yield
    finally:
        proc.stop(30)


def report(config: pytest.Config, line: str) -> None:
    """One measured figure on the terminal, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(f"\n[switch_io] {line}")


# ---- a switch on a plain socket --------------------------------------------------------------


class RawSwitch:
    """One OpenFlow 1.3 switch on a blocking loopback socket.

    A thread reads the controller, answers what a controller needs (features with `dpid`,
    PORT_DESC / DESC, roles, barriers, echo; nothing for features without a dpid) and records
    every message, so tests wait on a condition. `send()` sends any bytes: the tests use it for
    the malformed ones.
    """

    def __init__(self, port: int, dpid: int | None = None, hello: bool = True,
                 answer_echo: bool = True) -> None:
        self.wire = wire()
        self.answer_echo = answer_echo
        self.ofp = self.wire.ofp
        self.dpid = dpid
        self.sock = socket.create_connection((LOOPBACK, port), timeout=TIMEOUT)
        self.sock.settimeout(None)  # the reader blocks; close() / abort() end it
        #: How the controller names this connection in its log: `('127.0.0.1', 54321)`.
        self.address = str(self.sock.getsockname())
        self.received: list[tuple[int, int, bytes]] = []  # (type, xid, whole message)
        self.closed = False  # the controller closed (or reset) the connection
        self._role, self._generation = Role.EQUAL, 0
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name=f"raw-switch-{self.address}")
        self._reader.start()
        if hello:
            self.send(self.wire.hello())

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def echo(self, payload: bytes) -> bytes:
        """Send ECHO_REQUEST, wait for its ECHO_REPLY (by xid); the reply's data."""
        xid = next(_xids)
        self.send(self.wire.encode(self.wire.parser.OFPEchoRequest(self.wire.dp, payload), xid))
        _, _, msg = self.wait(lambda kind, x: kind == self.ofp.OFPT_ECHO_REPLY and x == xid,
                              f"ECHO_REPLY xid {xid:#x}")
        return bytes(self.wire.parse(msg).data)

    def wait(self, predicate: Callable[[int, int], bool], what: str,
             timeout: float = TIMEOUT) -> tuple[int, int, bytes]:
        """The first received message whose (type, xid) satisfies `predicate`; waits for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for item in self.received:
                    if predicate(item[0], item[1]):
                        return item
                if self.closed:
                    raise AssertionError(f"{self.address}: connection closed before {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.address}: no {what} within {timeout} s")
                self._cond.wait(left)

    def wait_count(self, kind: int, count: int, timeout: float = TIMEOUT) -> None:
        """Until `count` messages of type `kind` have arrived."""
        with self._cond:
            if not self._cond.wait_for(
                    lambda: sum(k == kind for k, _, _ in self.received) >= count, timeout):
                raise AssertionError(f"{self.address}: fewer than {count} messages of type "
                                     f"{kind} within {timeout} s")

    def wait_closed(self, timeout: float = TIMEOUT) -> None:
        """Until the controller closes the connection (EOF or reset)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.closed, timeout):
                raise AssertionError(f"{self.address}: still open after {timeout} s")

    def shutdown_write(self) -> None:
        """Half-close: the controller reads EOF; we still read what it sends."""
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Orderly close (FIN)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._reader.join(TIMEOUT)
        self.sock.close()

    def abort(self) -> None:
        """Abrupt close: a TCP reset, as when a switch's process dies mid-connection."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)  # wakes our reader without sending anything
        self._reader.join(TIMEOUT)
        self.sock.close()

    def _read(self) -> None:
        buf = bytearray()
        try:
            while data := self.sock.recv(65536):
                buf += data
                while len(buf) >= self.ofp.OFP_HEADER_SIZE:
                    _, kind, length, xid = self.wire.header(buf)
                    if len(buf) < length:
                        break
                    msg = bytes(buf[:length])
                    del buf[:length]
                    self._answer(kind, xid, msg)
                    with self._cond:
                        self.received.append((kind, xid, msg))
                        self._cond.notify_all()
        except OSError:
            pass  # reset by the controller, or our own close
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    def _answer(self, kind: int, xid: int, msg: bytes) -> None:
        w, ofp = self.wire, self.ofp
        if kind == ofp.OFPT_ECHO_REQUEST:
            if self.answer_echo:
                self.send(w.echo_reply(xid, msg[ofp.OFP_HEADER_SIZE:]))
        elif self.dpid is None:
            return  # never identifies itself: stays in the handshake
        elif kind == ofp.OFPT_FEATURES_REQUEST:
            self.send(w.features_reply(xid, self.dpid))
        elif kind == ofp.OFPT_MULTIPART_REQUEST:
            mp_type, _flags = w.unpack(ofp.OFP_MULTIPART_REQUEST_PACK_STR, msg)
            if mp_type == ofp.OFPMP_PORT_DESC:
                self.send(w.port_desc_reply(xid, self.dpid))
            elif mp_type == ofp.OFPMP_DESC:
                self.send(w.desc_reply(xid, self.dpid))
        elif kind == ofp.OFPT_ROLE_REQUEST:
            code, generation_id = w.unpack(ofp.OFP_ROLE_REQUEST_PACK_STR, msg)
            if w.roles[code] is not Role.NOCHANGE:
                self._role, self._generation = w.roles[code], generation_id
            self.send(w.role_reply(xid, self._role, self._generation))
        elif kind == ofp.OFPT_BARRIER_REQUEST:
            self.send(w.barrier_reply(xid))


def header(version: int, kind: int, length: int, xid: int) -> bytes:
    """A hand-made OpenFlow header: only for messages that are malformed on purpose."""
    return struct.pack("!BBHI", version, kind, length, xid)


# ---- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def controller(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Controller]:
    """The module's controller, on the shared loop, listening."""
    with running_controller(tmp_path_factory.mktemp("switch-io"), None) as running:
        wait_line(running, lambda x: listening_line(running) in x, "the listening line")
        yield running


@pytest.fixture
def start(controller: Controller) -> int:
    """Where this test's share of the module controller's output begins."""
    return len(controller.lines)


@pytest.fixture
def good(controller: Controller) -> Iterator[RawSwitch]:
    """A well-behaved switch, mastered by the controller."""
    switch = RawSwitch(controller.port, dpid=next(_dpids))
    try:
        assert switch.dpid is not None
        wait_mastered(controller, {switch.dpid})
        yield switch
    finally:
        switch.close()


def still_serving(controller: Controller, switch: RawSwitch) -> None:
    """The loop still serves `switch`: an echo round trip with a payload comes back intact."""
    payload = b"still there %d" % next(_xids)
    assert switch.echo(payload) == payload
    assert controller.running


# ---- 1. many switches, few threads ---------------------------------------------------------


def test_200_switches_are_mastered_by_a_process_with_few_threads(
        start: int, controller: Controller, tmp_path: Path, request: pytest.FixtureRequest):
    switches, base = 200, 0x10000
    started = time.monotonic()
    with fleet(controller, switches, base, tmp_path):
        wait_mastered(controller, set(range(base, base + switches)), timeout=180)
        elapsed = time.monotonic() - started
        assert controller.pid is not None
        threads = thread_count(controller.pid)
        assert threads < switches / 2, f"{threads} threads for {switches} switches"
    report(request.config, f"{switches} fleet switches mastered in {elapsed:.1f} s; "
                           f"controller threads {threads}")
    assert_no_traceback(controller, start)


# ---- 2. malformed and hostile messages -------------------------------------------------------


def assert_dropped_alone(controller: Controller, hostile: RawSwitch, good: RawSwitch,
                         start: int, error: str) -> None:
    """`hostile` was dropped with one line naming `error`, no traceback; `good` still served."""
    hostile.wait_closed()
    line = wait_line(controller, lambda x: hostile.address in x, "the drop's log line")
    assert error in line and "dropping its connection" in line
    still_serving(controller, good)
    assert lines_about(controller, hostile.address) == [line]
    assert_no_traceback(controller, start)

def test_an_unknown_openflow_version_drops_only_that_switch(
        start: int, controller: Controller, good: RawSwitch):
    hostile = RawSwitch(controller.port, hello=False)
    try:
        hostile.send(header(0x7F, 0, 8, 1))  # HELLO of OpenFlow "0x7f"
        assert_dropped_alone(controller, hostile, good, start, "OFPUnknownVersion")
    finally:
        hostile.close()


def test_a_length_below_the_header_is_read_as_a_bare_header_as_os_ken_does(
        start: int, controller: Controller, good: RawSwitch):
    """os-ken reads such a message as its 8-byte header: an ECHO_REQUEST with length 0 is
    answered. One warning per connection however often the switch does it."""
    odd = RawSwitch(controller.port)
    try:
        ofp = odd.ofp
        for xid in (0x51, 0x52):
            odd.send(header(ofp.OFP_VERSION, ofp.OFPT_ECHO_REQUEST, 0, xid))
            odd.wait(lambda kind, x, xid=xid: kind == ofp.OFPT_ECHO_REPLY and x == xid,
                     f"ECHO_REPLY {xid:#x}")
        still_serving(controller, odd)
        still_serving(controller, good)
        [line] = lines_about(controller, odd.address)
        assert "length field of 0" in line and "bare header" in line
        assert_no_traceback(controller, start)
    finally:
        odd.close()


def test_an_undecodable_message_is_skipped_with_one_line_and_no_traceback(
        start: int, controller: Controller, good: RawSwitch):
    """os-ken's parser logs a traceback and a hex dump of every message it cannot decode; the
    loop says it in one line per connection and, like os-ken, goes on with the next message."""
    odd = RawSwitch(controller.port)
    try:
        ofp = odd.ofp
        odd.send(header(ofp.OFP_VERSION, 0xC8, 8, 0x61))  # no such message type
        odd.send(header(ofp.OFP_VERSION, ofp.OFPT_FEATURES_REPLY, 16, 0x62) + bytes(8))  # short
        still_serving(controller, odd)
        still_serving(controller, good)
        [line] = lines_about(controller, odd.address)
        assert "cannot decode" in line and "type 200" in line and "skipped" in line
        assert_no_traceback(controller, start)
    finally:
        odd.close()


def test_a_message_truncated_inside_its_body_drops_only_that_switch(
        start: int, controller: Controller, good: RawSwitch):
    """A PACKET_IN whose length ends inside its match: the parser raises OFPTruncatedMessage
    (os-ken's threads end); the loop drops that switch with one line."""
    hostile = RawSwitch(controller.port)
    try:
        w = hostile.wire
        packet_in = bytearray(w.packet_in(1, bytes(60), PacketInReason.NO_MATCH))
        cut = 30  # the header, the fixed part, and 6 bytes of the match
        struct.pack_into("!H", packet_in, 2, cut)
        hostile.send(bytes(packet_in[:cut]))
        assert_dropped_alone(controller, hostile, good, start, "OFPTruncatedMessage")
    finally:
        hostile.close()


def test_a_truncated_message_then_eof_ends_the_switch_with_one_line(
        start: int, controller: Controller, good: RawSwitch):
    hostile = RawSwitch(controller.port, dpid=next(_dpids))
    try:
        assert hostile.dpid is not None
        wait_mastered(controller, {hostile.dpid})
        since = controller.mark()
        ofp = hostile.ofp
        hostile.send(header(ofp.OFP_VERSION, ofp.OFPT_ECHO_REQUEST, 100, 0x71) + bytes(20))
        hostile.shutdown_write()
        controller.wait_for(lambda r: r.matches("SWITCH_DOWN", dpid=hostile.dpid), TIMEOUT,
                            since=since, what="SWITCH_DOWN of the truncating switch")
        hostile.wait_closed()
        still_serving(controller, good)
        [line] = lines_about(controller, hostile.address)
        assert "middle of a message (28 bytes received)" in line
        assert_no_traceback(controller, start)
    finally:
        hostile.close()


def test_a_huge_length_then_silence_waits_without_blocking_others(
        start: int, controller: Controller, good: RawSwitch):
    """As os-ken: the loop waits for the rest of the message; everyone else goes on."""
    hostile = RawSwitch(controller.port)
    try:
        ofp = hostile.ofp
        hostile.wait(lambda kind, _x: kind == ofp.OFPT_FEATURES_REQUEST, "FEATURES_REQUEST")
        hostile.send(header(ofp.OFP_VERSION, ofp.OFPT_ECHO_REQUEST, 0xFFFF, 0x81) + bytes(100))
        for _ in range(3):
            still_serving(controller, good)
        # The hostile bytes were read before the good switch's echoes were answered (one loop).
        assert not hostile.closed
        assert lines_about(controller, hostile.address) == []
    finally:
        hostile.close()
    line = wait_line(controller, lambda x: hostile.address in x, "the EOF line")
    assert "middle of a message (108 bytes received)" in line
    assert_no_traceback(controller, start)


# ---- 3. abrupt disconnects ---------------------------------------------------------------------


@pytest.mark.parametrize("how", ["reset", "close"])
def test_a_switch_that_disconnects_is_seen_dead_promptly(
        start: int, controller: Controller, how: str, request: pytest.FixtureRequest):
    switch = RawSwitch(controller.port, dpid=next(_dpids))
    assert switch.dpid is not None
    try:
        wait_mastered(controller, {switch.dpid})
        since = controller.mark()
        gone = time.time()
        if how == "reset":
            switch.abort()
        else:
            switch.close()
        down = controller.wait_for(lambda r: r.matches("SWITCH_DOWN", dpid=switch.dpid),
                                   TIMEOUT, since=since, what="SWITCH_DOWN")
        controller.wait_for(
            lambda r: r.matches("MASTERSHIP", dpid=switch.dpid, role="none",
                                may_program="false"), TIMEOUT, since=since,
            what="mastership dropped")
    finally:
        switch.close()
    report(request.config, f"disconnect ({how}) -> SWITCH_DOWN logged: "
                           f"{(down.t - gone) * 1000:.1f} ms")
    assert lines_about(controller, switch.address) == []  # an ordinary event: no warning
    assert_no_traceback(controller, start)


# ---- 4. silent connections ---------------------------------------------------------------------


def test_silent_and_stalled_connections_do_not_block_others(start: int, controller: Controller):
    """Sockets that connect and send nothing (not even HELLO), or stop inside a header, do not
    hold up a switch that connects after them, and are not dropped (os-ken waits too)."""
    silent = [socket.create_connection((LOOPBACK, controller.port), timeout=TIMEOUT)
              for _ in range(5)]
    stalled = RawSwitch(controller.port, hello=False)
    late = None
    try:
        stalled.send(header(4, 0, 8, 1)[:3])
        late = RawSwitch(controller.port, dpid=next(_dpids))
        assert late.dpid is not None
        wait_mastered(controller, {late.dpid})
        still_serving(controller, late)
        hello = wire().hello()
        for sock in silent:  # each got the controller's HELLO and is still open
            got = b""
            while len(got) < len(hello):
                data = sock.recv(len(hello) - len(got))
                assert data, "the controller closed a silent connection"
                got += data
            assert wire().header(got)[1] == wire().ofp.OFPT_HELLO
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(1)
        assert not stalled.closed
    finally:
        for sock in silent:
            sock.close()
        stalled.close()
        if late is not None:
            late.close()
    assert_no_traceback(controller, start)


# ---- 5. large output and slow readers --------------------------------------------------------


def _echo_requests(count: int, size: int, distinct: bool = True
                   ) -> tuple[list[int], list[bytes], bytes]:
    """(xids, payloads, the ECHO_REQUESTs' bytes); distinct payloads reveal any mix-up."""
    w = wire()
    xids = [0x2000_0000 + i for i in range(count)]
    payloads = [i.to_bytes(4, "big") * (size // 4) if distinct else bytes(size)
                for i in range(count)]
    wire_bytes = b"".join(w.encode(w.parser.OFPEchoRequest(w.dp, p), x)
                          for x, p in zip(xids, payloads, strict=True))
    return xids, payloads, wire_bytes


def stuck_switch(port: int, count: int, size: int) -> socket.socket:
    """A socket that says HELLO, sends `count` ECHO_REQUESTs of `size` bytes and reads nothing
    (a tiny receive buffer): the replies wait in the controller."""
    _, _, requests = _echo_requests(count, size, distinct=False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect((LOOPBACK, port))
        sock.sendall(wire().hello() + requests)
    except BaseException:
        sock.close()
        raise
    return sock


def _slow_reader(controller: Controller) -> socket.socket:
    """A switch-side socket with a 4 kB receive buffer, connected to the controller."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect((LOOPBACK, controller.port))
    except OSError:
        sock.close()
        raise
    return sock

def test_a_slow_reader_gets_every_reply_in_order(
        start: int, controller: Controller, good: RawSwitch):
    """200 ECHO_REQUESTs of 60 kB sent before reading anything (12 MB of replies wait in the
    controller), then read 4 kB at a time through a small receive buffer: every reply, in
    order, intact; meanwhile another switch is served."""
    count, size = 200, 60_000
    xids, payloads, requests = _echo_requests(count, size)
    w = wire()
    sock = _slow_reader(controller)
    try:
        sock.sendall(w.hello() + requests)
        still_serving(controller, good)  # while the replies wait for the slow reader
        buf, replies = bytearray(), []
        while len(replies) < count:
            data = sock.recv(4096)
            assert data, f"closed after {len(replies)} replies"
            buf += data
            while len(buf) >= 8 and len(buf) >= (length := w.header(buf)[2]):
                msg = bytes(buf[:length])
                del buf[:length]
                if msg[1] == w.ofp.OFPT_ECHO_REPLY:
                    replies.append(msg)
        assert [w.header(m)[3] for m in replies] == xids
        assert all(m[8:] == p for m, p in zip(replies, payloads, strict=True))
    finally:
        sock.close()
    assert_no_traceback(controller, start)


def test_a_switch_that_reads_nothing_is_dropped_at_max_pending(
        start: int, controller: Controller, good: RawSwitch):
    """Replies pile up for a switch that never reads; past `MAX_PENDING` bytes it is dropped
    with one warning, and the others are served throughout."""
    size = 65_000
    count = MAX_PENDING // size + 200  # beyond what the socket buffers can also hold
    _, _, requests = _echo_requests(count, size, distinct=False)
    w = wire()
    sock = _slow_reader(controller)
    try:
        who = str(sock.getsockname())
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(w.hello() + requests)  # the controller may drop us before the end
        line = wait_line(controller, lambda x: who in x, "the drop's warning")
        assert f"is not reading: more than {MAX_PENDING} bytes wait for it" in line
        still_serving(controller, good)
        assert lines_about(controller, who) == [line]
    finally:
        sock.close()
    assert_no_traceback(controller, start)


# ---- echo keepalive -----------------------------------------------------------------------------


def test_echo_keepalive_runs_on_the_loop_and_closes_a_mute_switch(
        tmp_path: Path, request: pytest.FixtureRequest):
    """os-ken's `maximum_unreplied_echo_requests`: switches that answer stay, one that does
    not is closed after that many unanswered requests, and no thread is spawned per switch.
    A mute switch that does not read either, with replies queued for it, is closed
    `socket_timeout` after that close even though its output never drains."""
    interval, most = 1.0, 3  # an answering switch would have to stall for 3 s to be dropped
    switches, base = 60, 0x30000
    defaults = {"echo_request_interval": interval, "maximum_unreplied_echo_requests": most,
                "socket_timeout": 1.0}
    with running_controller(tmp_path / "echo", None, defaults) as echoing:
        wait_line(echoing, lambda x: listening_line(echoing) in x, "the listening line")
        with fleet(echoing, switches, base, tmp_path):
            wait_mastered(echoing, set(range(base, base + switches)))
            with contextlib.closing(RawSwitch(echoing.port, dpid=next(_dpids))) as answering, \
                    contextlib.closing(RawSwitch(echoing.port, dpid=next(_dpids),
                                                 answer_echo=False)) as mute:
                assert answering.dpid is not None and mute.dpid is not None
                wait_mastered(echoing, {answering.dpid})  # the mute one may be gone by then
                # 18 MB of replies, unread: more than the kernel's socket buffers can hold
                stuck = stuck_switch(echoing.port, 300, 60_000)
                mute.wait_closed()
                echoing.wait_for(lambda r: r.matches("SWITCH_DOWN", dpid=mute.dpid), TIMEOUT,
                                 what="SWITCH_DOWN of the mute switch")
                [line] = lines_about(echoing, mute.address)
                assert f"left {most + 1} echo requests unanswered" in line
                answering.wait_count(answering.ofp.OFPT_ECHO_REQUEST, most + 2)
                assert not answering.closed
                assert not echoing.find("SWITCH_DOWN", dpid=answering.dpid)
                assert echoing.pid is not None
                threads = thread_count(echoing.pid)
                assert threads < switches / 2, f"{threads} threads for {switches} switches"
                with contextlib.closing(stuck):
                    who = str(stuck.getsockname())
                    wait_line(echoing, lambda x: who in x and "closing it now" in x,
                              "the stuck switch closed")
                    [mute_line, stuck_line] = lines_about(echoing, who)
                    assert "echo requests unanswered" in mute_line
                    assert "bytes queued 1 s after its connection was closed" in stuck_line
        assert_no_traceback(echoing)
    report(request.config, f"echo keepalive: {switches + 2} switches; controller threads "
                           f"{threads}")


# ---- 6. the opt-out ------------------------------------------------------------------------------


def test_coord_switch_io_threads_keeps_os_kens_threads(tmp_path: Path,
                                                       request: pytest.FixtureRequest):
    """`COORD_SWITCH_IO=threads`: switches are mastered, two threads per connection (os-ken's
    receive and send loops), and no shared loop."""
    switches, base = 20, 0x20000
    with running_controller(tmp_path / "threads", "threads") as threaded:
        with fleet(threaded, switches, base, tmp_path):
            wait_mastered(threaded, set(range(base, base + switches)))
            assert threaded.pid is not None
            threads = thread_count(threaded.pid)
            assert threads >= 2 * switches, f"{threads} threads for {switches} switches"
        report(request.config, f"COORD_SWITCH_IO=threads: {switches} switches mastered; "
                               f"controller threads {threads}")
        assert not [x for x in threaded.lines if listening_line(threaded) in x]
        assert_no_traceback(threaded)
