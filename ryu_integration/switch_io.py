"""One I/O thread for every switch connection, under os-ken's native hub.

Why: os-ken's native hub serves each switch connection with two OS threads (a receive loop and a
send loop). At thousands of switches a controller runs thousands of threads that contend for
the GIL, and everything else in the process (the store's session heartbeats, the failure
detector, the apps) waits in the same line. Measured on 2 cores, 3 controllers x 5,000 emulated
switches on the embedded store: 52.5 s until every switch was mastered and 18.4 CPU-s per 1,000
switches with os-ken's threads; 12.0 s and 3.9 CPU-s under its eventlet hub (green threads).

What: `install()` replaces `OpenFlowController.server_loop` for plain-TCP listeners. The
thread os-ken runs the server loop in becomes a selector loop that accepts every switch, reads
and frames its messages and dispatches them exactly as `Datapath._recv_loop` does (events to the
observing apps, then the ofp_event brick's own handlers). `Datapath.send()` (any thread) writes
to the socket at once without blocking; what the socket does not take waits in the datapath's
buffer and the loop writes it when the socket is writable. Nothing blocks the loop but the
apps' own event queues (as in os-ken). A switch that does not read what it is sent is dropped
once `MAX_PENDING` bytes wait for it, and a connection asked to close is closed once its output
is written or after os-ken's `socket_timeout`, whichever comes first. os-ken's echo keepalive (`maximum_unreplied_echo_requests`,
`echo_request_interval`; off by default) runs on the loop's timers, not a thread per switch.

Bad input is logged in one line, never with a traceback, and what a switch can repeat only once
per connection (then at DEBUG): a message of an unknown OpenFlow version or one the parser finds
truncated drops that switch (as os-ken's threads end); a message the parser cannot decode is
skipped and a length field below the header's 8 bytes is read as a bare header (what os-ken
does, minus its traceback and hex dump of each); a connection that ends in the middle of a
message is noted at INFO. An unexpected error while serving one switch drops that switch (logged
with its traceback: a bug) and the loop goes on serving the others. TLS listeners, active
connections (`ofp_switch_address_list`) and the eventlet hub (Ryu 4.34, os-ken with
`OSKEN_HUB_TYPE=eventlet`) keep the framework's own code.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger("ryu_integration.switch_io")

#: Bytes read from a switch per readiness event (fair to the other switches, few syscalls).
READ_SIZE = 256 * 1024
#: Bytes that may wait to be sent to one switch; beyond, the switch is not reading and is
#: dropped (it reconnects, as after any controller restart).
MAX_PENDING = 64 * 1024 * 1024
#: Connections accepted per readiness event of the listener (then the switches already
#: connected get their turn).
ACCEPT_BATCH = 256
#: Seconds the listener rests after the process ran out of file descriptors.
ACCEPT_BACKOFF = 1.0
_HEADER = struct.Struct("!BBHI")  # version, type, length, xid: every OpenFlow message's header
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def install(controller: Any, hub: Any) -> bool:
    """Serve plain-TCP switch connections from one loop (idempotent; native hub only).

    `controller` is the framework's `controller.controller` module, `hub` its `lib.hub`.
    Returns whether the shared loop is in use.
    """
    if getattr(hub, "HUB_TYPE", "") != "native":
        return False
    server = controller.OpenFlowController
    if getattr(server, "_coord_switch_io", False):
        return True
    threaded = server.server_loop
    datapath_class = _datapath_class(controller)

    def server_loop(self: Any, tcp_port: int, ssl_port: int) -> None:
        conf = controller.CONF
        if conf.ctl_privkey is not None and conf.ctl_cert is not None:
            threaded(self, tcp_port, ssl_port)  # TLS: os-ken's threads
            return
        listener = controller.StreamServer((conf.ofp_listen_host, tcp_port)).server
        LOG.info("serving switches on %s:%d from one I/O thread (switch_io)",
                 conf.ofp_listen_host, tcp_port)
        SwitchLoop(listener, datapath_class, controller).run()

    server.server_loop = server_loop
    server._coord_switch_io = True
    return True


def _datapath_class(controller: Any) -> type:
    """`controller.Datapath` whose sends go through a `SwitchLoop` instead of a send thread."""

    class LoopDatapath(controller.Datapath):
        """A switch connection served by a `SwitchLoop` (see the module docstring)."""

        def __init__(self, sock: socket.socket, address: Any, loop: SwitchLoop) -> None:
            self._loop = loop
            self._out = bytearray()
            self._out_lock = threading.Lock()
            self._closing = False
            self._open = True
            self._inbuf = bytearray()
            self._events = selectors.EVENT_READ  # what the loop's selector watches
            self._warned = False  # one protocol warning per connection, then DEBUG
            self._close_by = False  # a close deadline is set (`SwitchLoop._expire`)
            super().__init__(sock, address)
            sock.setblocking(False)

        def send(self, buf: bytes, close_socket: bool = False) -> bool:
            """Queue `buf` for the switch without blocking; False once the connection ends."""
            overflow = False
            with self._out_lock:
                if not self._open or self._closing:
                    LOG.debug("switch at %s: connection ending; send discarded", self.address)
                    return False
                if buf:
                    if not self._out:
                        try:
                            sent = self.socket.send(buf)
                        except (BlockingIOError, InterruptedError):
                            sent = 0
                        except OSError:
                            sent = len(buf)  # broken: the loop sees it on its next read
                        buf = memoryview(buf)[sent:]
                    self._out += buf
                    overflow = len(self._out) > MAX_PENDING
                    if overflow:
                        self._out.clear()
                        self._closing = True
                self._closing = self._closing or close_socket
                wake = bool(self._out) or self._closing
            if overflow:
                LOG.warning("%s is not reading: more than %d bytes wait for it; dropping its "
                            "connection", _who(self), MAX_PENDING)
            if wake:
                self._loop.request(self)
            return True

        def close(self) -> None:
            """DEAD now; the loop closes the socket after writing what is queued."""
            self.set_state(controller.DEAD_DISPATCHER)
            with self._out_lock:
                self._closing = True
            self._loop.request(self)

    return LoopDatapath


class SwitchLoop:
    """Accept, read, frame, dispatch and flush for every switch of one listener, in one thread."""

    def __init__(self, listener: socket.socket, datapath_class: type, controller: Any) -> None:
        self._listener = listener
        self._datapath_class = datapath_class
        self._controller = controller
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        for sock in (listener, self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, self._accept)
        self._selector.register(self._wake_r, selectors.EVENT_READ, self._woken)
        self._pending: set[Any] = set()
        self._pending_lock = threading.Lock()
        self._signalled = False
        self._resume_accept_at: float | None = None
        #: (when, tie-break, action, datapath): echo requests (`_echo`), close deadlines
        self._timers: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._timer_seq = itertools.count()
        #: Seconds a closing connection may take to drain its output (os-ken's send timeout).
        self._close_timeout = float(getattr(controller.CONF, "socket_timeout", None) or 5.0)
        # What `ofproto_parser.msg` uses, to parse without its traceback (`_parse`).
        common = controller.ofproto_parser
        self._parsers: dict[int, Any] | None = getattr(common, "_MSG_PARSERS", None)
        self._truncated = getattr(getattr(common, "exception", None), "OFPTruncatedMessage", ())

    # ---- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        """Serve forever (os-ken's server loop never returns either)."""
        while True:
            for key, mask in self._selector.select(self._timeout()):
                handler: Callable[..., None] | Any = key.data
                if not callable(handler):
                    self._serve(handler, mask)
                    continue
                try:
                    handler()
                except Exception:  # a bug: must not stop every switch with it
                    LOG.exception("switch I/O: unexpected error in %s; carrying on",
                                  handler.__name__)
            self._run_timers()

    def _timeout(self) -> float | None:
        """Seconds until the loop has something to do besides I/O (None: nothing)."""
        now = time.monotonic()
        if self._resume_accept_at is not None and self._resume_accept_at <= now:
            self._resume_accept_at = None
            self._selector.register(self._listener, selectors.EVENT_READ, self._accept)
        due = [t for t in (self._resume_accept_at, self._timers[0][0] if self._timers else None)
               if t is not None]
        return max(0.0, min(due) - now) if due else None

    def _serve(self, datapath: Any, mask: int) -> None:
        """Flush and/or read one switch; an unexpected error drops that switch only."""
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(datapath)
            if mask & selectors.EVENT_READ:
                self._read(datapath)
        except Exception:  # a bug: must not stop every other switch with it
            LOG.exception("switch I/O: unexpected error serving %s; dropping its connection",
                          _who(datapath))
            self._drop(datapath)

    def _drop(self, datapath: Any) -> None:
        """`_end` after an unexpected error (which may strike again while closing)."""
        try:
            self._end(datapath)
        except Exception:
            LOG.exception("switch I/O: closing %s failed too", _who(datapath))

    def request(self, datapath: Any) -> None:
        """Have the loop look at `datapath`'s queued output or close request (any thread)."""
        with self._pending_lock:
            self._pending.add(datapath)
            if self._signalled:
                return
            self._signalled = True
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass  # a wake-up byte is already waiting

    def _woken(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        with self._pending_lock:
            pending, self._pending = self._pending, set()
            self._signalled = False
        for datapath in pending:
            self._serve(datapath, selectors.EVENT_WRITE)

    # ---- echo requests ---------------------------------------------------------------------

    def _echo(self, datapath: Any) -> None:
        """One round of os-ken's `Datapath._echo_request_loop` (`maximum_unreplied_echo_requests`
        > 0): close a switch that left too many echo requests unanswered, else send one more
        and come back after `echo_request_interval`. On the loop's timers, not a thread per
        switch; replies are acknowledged by os-ken's own handler, on this thread."""
        if not datapath._open:
            return
        if len(datapath.unreplied_echo_requests) > datapath.max_unreplied_echo_requests:
            LOG.info("%s left %d echo requests unanswered; closing its connection",
                     _who(datapath), len(datapath.unreplied_echo_requests))
            datapath.close()
            return
        request = datapath.ofproto_parser.OFPEchoRequest(datapath)
        datapath.unreplied_echo_requests.append(datapath.set_xid(request))
        datapath.send_msg(request)
        self._after(datapath.echo_request_interval, self._echo, datapath)

    def _expire(self, datapath: Any) -> None:
        """A connection asked to close still has output its switch does not take: close it
        anyway (os-ken's send thread gives up after `socket_timeout` too)."""
        if datapath._open:
            LOG.info("%s still had %d bytes queued %g s after its connection was closed; "
                     "closing it now", _who(datapath), len(datapath._out), self._close_timeout)
            self._end(datapath)

    def _after(self, delay: float, action: Callable[[Any], None], datapath: Any) -> None:
        heapq.heappush(self._timers,
                       (time.monotonic() + delay, next(self._timer_seq), action, datapath))

    def _run_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, action, datapath = heapq.heappop(self._timers)
            try:
                action(datapath)
            except Exception:  # a bug: must not stop every other switch with it
                LOG.exception("switch I/O: unexpected error in %s for %s; dropping its "
                              "connection", action.__name__, _who(datapath))
                self._drop(datapath)

    # ---- connections -----------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    LOG.error("cannot accept more switches: %s; retrying in %g s "
                              "(raise the open-file limit, ulimit -n)",
                              exc.strerror, ACCEPT_BACKOFF)
                    self._selector.unregister(self._listener)
                    self._resume_accept_at = time.monotonic() + ACCEPT_BACKOFF
                    return
                LOG.warning("accepting a switch failed: %s", exc)
                continue
            self._start(sock, address)

    def _start(self, sock: socket.socket, address: Any) -> None:
        LOG.debug("connected socket:%s address:%s", sock, address)
        try:
            datapath = self._datapath_class(sock, address, self)
        except OSError as exc:  # the switch left before we set its socket up
            LOG.debug("switch at %s left during set-up: %s", address, exc)
            sock.close()
            return
        except Exception:  # a bug: must not stop the listener with it
            LOG.exception("switch I/O: setting up the switch at %s failed; closing it", address)
            sock.close()
            return
        try:
            self._selector.register(sock, selectors.EVENT_READ, datapath)
            datapath.send_msg(datapath.ofproto_parser.OFPHello(datapath))
            if datapath.max_unreplied_echo_requests:
                self._echo(datapath)
        except Exception:  # a bug: must not stop the listener with it
            LOG.exception("switch I/O: starting %s failed; dropping its connection",
                          _who(datapath))
            self._drop(datapath)

    def _read(self, datapath: Any) -> None:
        if not datapath._open:
            return
        try:
            data = datapath.socket.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if datapath._inbuf:  # os-ken drops these bytes without a word
                LOG.info("%s closed its connection in the middle of a message (%d bytes "
                         "received); discarded", _who(datapath), len(datapath._inbuf))
            self._end(datapath)
            return
        datapath._inbuf += data
        try:
            self._dispatch(datapath)
        except Exception as exc:  # a malformed or hostile message: drop this switch only
            LOG.error("%s sent a message os-ken cannot handle (%s: %s); dropping its "
                      "connection", _who(datapath), type(exc).__name__, exc)
            LOG.debug("the message's error", exc_info=True)
            self._end(datapath)
            return
        if datapath.state == self._controller.DEAD_DISPATCHER:
            self._end(datapath)

    def _dispatch(self, datapath: Any) -> None:
        """Parse every whole message in the buffer and dispatch it as `Datapath._recv_loop`."""
        controller = self._controller
        buf = datapath._inbuf
        brick = datapath.ofp_brick
        offset = 0
        try:
            while len(buf) - offset >= _HEADER.size:
                version, msg_type, msg_len, xid = _HEADER.unpack_from(buf, offset)
                if msg_len < _HEADER.size:  # os-ken's answer: read a bare header
                    self._warn(datapath, "a length field of %d, less than the header's %d "
                               "bytes; read as a bare header", msg_len, _HEADER.size)
                    msg_len = _HEADER.size
                if len(buf) - offset < msg_len:
                    break
                msg = self._parse(datapath, version, msg_type, msg_len, xid,
                                  buf[offset:offset + msg_len])
                offset += msg_len
                if msg and brick is not None:
                    ev = controller.ofp_event.ofp_msg_to_ev(msg)
                    state = datapath.state
                    brick.send_event_to_observers(ev, state)
                    for handler in brick.get_handlers(ev):
                        if state in handler.callers[ev.__class__].dispatchers:
                            handler(ev)
                if datapath.state == controller.DEAD_DISPATCHER:
                    break
        finally:
            del buf[:offset]

    def _parse(self, datapath: Any, version: int, msg_type: int, msg_len: int, xid: int,
               raw: bytearray) -> Any:
        """`ofproto_parser.msg` minus its traceback and hex dump for a message the version's
        parser cannot decode (a switch could fill the log with them): one warning per
        connection, and the message skipped, as os-ken does. An unknown version or a truncated
        message raises, as in os-ken (the caller drops the switch)."""
        parser = None if self._parsers is None else self._parsers.get(version)
        if parser is None:  # the framework's own function (raises on an unknown version)
            return self._controller.ofproto_parser.msg(
                datapath, version, msg_type, msg_len, xid, raw)
        try:
            return parser(datapath, version, msg_type, msg_len, xid, raw)
        except self._truncated:
            raise
        except Exception as exc:
            self._warn(datapath, "a message it cannot decode (version 0x%02x, type %d, %d "
                       "bytes: %s: %s); skipped", version, msg_type, msg_len,
                       type(exc).__name__, exc)
            LOG.debug("the message's error", exc_info=True)
            return None

    @staticmethod
    def _warn(datapath: Any, what: str, *args: Any) -> None:
        """`<switch> sent <what>`: WARNING the first time per connection, then DEBUG."""
        level = logging.DEBUG if datapath._warned else logging.WARNING
        datapath._warned = True
        LOG.log(level, "%s sent " + what + "%s", _who(datapath), *args,
                "" if level == logging.DEBUG else " (any more from it: DEBUG)")

    def _flush(self, datapath: Any) -> None:
        """Write what is queued; close once drained if asked; watch writability otherwise."""
        if not datapath._open:
            return
        with datapath._out_lock:
            out = datapath._out
            try:
                while out:
                    sent = datapath.socket.send(out)
                    del out[:sent]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                out.clear()
                datapath._closing = True
            waiting, closing = bool(out), datapath._closing
        if closing and not waiting:
            self._end(datapath)
            return
        if closing and not datapath._close_by:
            datapath._close_by = True
            self._after(self._close_timeout, self._expire, datapath)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if waiting else 0)
        if events != datapath._events:
            datapath._events = events
            self._selector.modify(datapath.socket, events, datapath)

    def _end(self, datapath: Any) -> None:
        """Close the connection and tell the apps (DEAD), as os-ken does when its loops end."""
        with datapath._out_lock:
            if not datapath._open:
                return
            datapath._open = False
            datapath._out.clear()
        try:
            self._selector.unregister(datapath.socket)
        except (KeyError, ValueError):
            pass
        datapath.socket.close()
        datapath.send_q = None  # what os-ken's echo loop and callers test for "still open"
        datapath.is_active = False
        datapath.set_state(self._controller.DEAD_DISPATCHER)


def _who(datapath: Any) -> str:
    """`switch 0000000000000001 at ('127.0.0.1', 50000)` (no dpid before its features reply)."""
    dpid = "" if datapath.id is None else f" {datapath.id:016x}"
    return f"switch{dpid} at {datapath.address}"
