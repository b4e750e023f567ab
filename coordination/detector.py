"""A peer failure detector, much faster than the store's session timeout.

Each member runs a small TCP liveness endpoint and advertises it in its member record
(`metadata["liveness"] = "host:port"`, `metadata["liveness_id"]` = this detector's incarnation).
Every member dials every other member it knows once (so a pair shares two connections, one
dialed by each side) and sends a tiny heartbeat frame every `interval` on the connection it
dialed. A peer is declared dead when

* a connection with it closes without a goodbye (the kernel closed the sockets of a process
  that died: seen at once), or
* nothing arrived from it for `interval * misses` seconds (a stopped process, a partition);
  for a peer whose recent heartbeats came late (alive but busy), twice its longest recent gap,
  at most the session timeout (`detector_policy.SilenceBound`).

Safety never rests on this: the new master's ROLE_REQUEST carries a larger generation_id, so a
false positive costs one needless handover. Who acts on a declaration: the lowest member id
among the survivors that declared the peer dead. Each heartbeat carries the sender's current
suspicions; the lowest live member acts at once, a higher one waits two detection bounds for a
lower one to report the same suspicion and acts only if none does.

Quorum: a declaration from silence (or from resets of several peers' connections within one
bound: a link problem here) leads to an eviction only if this member hears from a strict
majority of the member list, itself included; otherwise it says so and leaves the peer to the
session timeout. So a member cut off from its peers (but not from the store), which hears
nobody, cannot evict them all. A lone closed or reset connection (a process that died) acts at
once whatever the cluster's size.

Damping: a member declared dead again within `damping_window` seconds of a previous declaration
is not evicted again for `damping_backoff` seconds (its session timeout decides meanwhile), so a
flapping link between controllers cannot cause a storm of handovers.

One thread per detector runs a `selectors` loop; its periodic work is one frame per connected
peer, O(peers), and never depends on the number of elections. Frames are JSON lines of at most
`MAX_FRAME` bytes: {"t": "hello", "id", "inc", "ep"}, {"t": "hb", "s": [suspects]},
{"t": "bye"} (leaving), {"t": "dead"} (the sender declared you dead and hangs up).
"""

from __future__ import annotations

import errno
import json
import logging
import secrets
import selectors
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .detector_policy import (
    CLOSED,
    RESET,
    SILENCE,
    Damping,
    DetectorSettings,
    ResetBurst,
    SilenceBound,
    evidence_of,
    may_evict,
)
from .detector_wire import (
    MAX_FRAME,
    encode,
    format_endpoint,
    parse_bind_address,
    parse_endpoint,
    peer_of,
)
from .names import member_id_problem, printable, shown

LOG = logging.getLogger(__name__)

#: Bytes queued for a peer that does not read (stopped) before new heartbeats are dropped.
MAX_BACKLOG = 4 * MAX_FRAME
#: Longest wait between two attempts to dial a peer that refused.
MAX_DIAL_DELAY = 1.0

EvictCallback = Callable[[str, str], None]
__all__ = ["DetectorSettings", "FailureDetector", "format_endpoint", "parse_bind_address",
           "parse_endpoint", "peer_of"]


#: Linux's TCP_CLOSE_WAIT: the peer's FIN arrived (`_fin_received`)
_TCP_CLOSE_WAIT = 8
#: frames a peer sends before hanging up on purpose
_NOTICES = ({"t": "dead"}, {"t": "bye"})


def _fin_received(sock: socket.socket) -> bool:
    """Whether the peer's kernel closed its side of `sock` (a FIN arrived) with no goodbye
    before it: the TCP state (Linux's TCP_INFO) where there is one, so that heartbeats not
    read yet do not hide the FIN, and no notice (a peer that declared us dead hangs up
    too) among the bytes not read yet; elsewhere, a FIN with nothing before it."""
    tcp_info = getattr(socket, "TCP_INFO", None)
    try:
        if tcp_info is None:
            return sock.recv(1, socket.MSG_PEEK) == b""
        if sock.getsockopt(socket.IPPROTO_TCP, tcp_info, 1)[0] != _TCP_CLOSE_WAIT:
            return False
        try:
            unread = sock.recv(MAX_BACKLOG, socket.MSG_PEEK)
        except BlockingIOError:
            unread = b""
        return not any(encode(notice).strip() in unread for notice in _NOTICES)
    except OSError:  # nothing to read yet (BlockingIOError), or reset too
        return False


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    outbound: bool
    peer: str | None = None  # member id, once known (dialed for it, or said hello)
    connected: bool = False
    opened_at: float = 0.0
    rbuf: bytearray = field(default_factory=bytearray)
    wbuf: bytearray = field(default_factory=bytearray)
    #: the peer said bye or declared us dead: its closing is no death
    noticed: bool = False


@dataclass(eq=False)
class _Peer:
    member_id: str
    incarnation: str
    endpoint: tuple[str, int] | None
    listed: bool = False  # in the store's member list
    last_heard: float = 0.0
    out: _Conn | None = None
    ins: set[_Conn] = field(default_factory=set)
    suspects: frozenset[str] = frozenset()  # what it last told us it suspects
    next_dial: float = 0.0
    dial_failures: int = 0
    #: declared dead, not heard from since: called once more (`_redial_later`), not judged
    declared: bool = False
    #: its silence bound, grown while it is busy (`SilenceBound`; made on first use)
    silence: SilenceBound | None = None

    @property
    def monitored(self) -> bool:
        """Heartbeats flow from it to us, so its silence means something."""
        return any(c.connected for c in list(self.ins))  # (read by other threads too)


class FailureDetector:
    """The liveness endpoint, the connections to peers and the verdicts of one member.

    `start()` binds and starts the loop thread; `advertised()` is what goes in the member
    record; `update_members()` feeds it the store's member list; `on_evict(member_id,
    incarnation)` is called (on the caller-supplied `run` executor's thread, never on the loop)
    when this member is the one that must tell the store a peer is dead.
    """

    def __init__(self, member_id: str, settings: DetectorSettings, on_evict: EvictCallback,
                 run: Callable[..., Any] | None = None) -> None:
        self.member_id = member_id
        self.settings = settings
        self.incarnation = secrets.token_hex(8)
        self._on_evict = on_evict
        self._run = run or (lambda func, *args: func(*args))
        self._selector = selectors.DefaultSelector()
        self._listener: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._commands: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        #: cleared while paused (tests): the loop stands still, like a stopped process
        self._running = threading.Event()
        self._running.set()
        self._peers: dict[str, _Peer] = {}
        self._conns: set[_Conn] = set()
        #: incarnations declared dead or gone (and when): not dialed again until they prove
        #: alive on a connection opened after that
        self._buried: dict[str, tuple[str, float]] = {}
        self._damping = Damping(settings.damping_window, settings.damping_backoff)
        self._suspects: dict[str, float] = {}
        #: verdicts waiting for a lower member: {member: (incarnation, deadline, evidence)}
        self._pending: dict[str, tuple[str, float, str]] = {}
        self._resets = ResetBurst(settings.bound)
        #: declarations on a reset, not judged yet (`_judge_held`): {member: (incarnation,
        #: reason, seconds silent, when, its other connections, kept open till then)}
        self._held: dict[str, tuple[str, str, float, float, list[_Conn]]] = {}
        self._endpoint = ""
        #: (time, member, reason) of every declaration, for tests and diagnostics
        self.declarations: list[tuple[float, str, str]] = []
        #: notified after a loop pass that changed a peer's state (`wait_until`)
        self._changed = threading.Condition()
        self._dirty = False

    # ---- any thread -----------------------------------------------------------------------

    def start(self) -> FailureDetector:
        """Bind the endpoint and start the loop (raises OSError if the address is unusable)."""
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.settings.host, self.settings.port))
            listener.listen(64)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        host = self.settings.host
        if host in ("0.0.0.0", "::"):  # listening on every interface: advertise our name
            host = socket.gethostname()
        self._endpoint = format_endpoint(host, listener.getsockname()[1])
        self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"coord-detector[{self.member_id}]")
        self._thread.start()
        return self

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def advertised(self) -> dict[str, str]:
        """What the member record carries in its metadata."""
        return {"liveness": self._endpoint, "liveness_id": self.incarnation}

    def update_members(self, members: Mapping[str, Any]) -> None:
        """The store's member list ({id: MemberInfo}); peers to dial are learned from it."""
        listed = {}
        for member_id, info in members.items():
            if member_id == self.member_id:
                continue
            try:
                if member_id_problem(member_id) is not None:
                    raise ValueError(f"member id {shown(member_id)} is not valid")
                metadata = getattr(info, "metadata", None)
                if not isinstance(metadata, Mapping):
                    raise TypeError("metadata is not an object")
                peer = peer_of(member_id, metadata)
            except (TypeError, ValueError) as exc:
                LOG.warning("detector %s: skipping member record %s: %s", self.member_id,
                            printable(str(member_id), 80), exc)
                continue
            if peer is not None:
                listed[member_id] = peer
        self._command(lambda: self._apply_members(listed))

    def stop(self, timeout: float = 2.0) -> None:
        """Say goodbye to every peer, close everything and stop the loop (idempotent)."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._thread is None or not self._thread.is_alive():
            self._selector.close()
            for sock in (self._wake_r, self._wake_w):
                sock.close()

    def pause(self, paused: bool = True) -> None:
        """Freeze (or resume) the loop, keeping every connection open: a stand-in for a
        stopped process (SIGSTOP), for tests."""
        if paused:
            self._running.clear()
        else:
            self._running.set()
        self._wake()

    def suspected(self) -> set[str]:
        """Members this detector currently reports as dead."""
        return set(self._suspects)

    def connected_peers(self) -> set[str]:
        """Members whose heartbeats reach us now."""
        return {p.member_id for p in list(self._peers.values()) if p.monitored}

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (pushed by the loop, bounded by `timeout`) until `predicate()` holds."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def _command(self, func: Callable[[], None]) -> None:
        with self._lock:
            self._commands.append(func)
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    # ---- loop thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        interval = self.settings.interval
        last_tick = time.monotonic()
        next_tick = last_tick
        try:
            while not self._stopping:
                wake_at = min([next_tick, *(h[3] + interval for h in self._held.values())])
                events = self._selector.select(max(0.0, wake_at - time.monotonic()))
                while not self._running.wait(0.5) and not self._stopping:
                    pass
                for key, mask in events:
                    self._on_event(key, mask)
                with self._lock:
                    commands, self._commands = self._commands, []
                for command in commands:
                    command()
                now = time.monotonic()
                if now >= next_tick:
                    if now - last_tick > self.settings.bound:
                        # our own loop was stopped or starved: we cannot judge anyone's silence
                        LOG.warning("detector %s: loop paused for %.2f s; not judging peers "
                                    "this round", self.member_id, now - last_tick)
                        for peer in self._peers.values():
                            peer.last_heard = now
                    self._tick(now)
                    last_tick = now
                    next_tick = now + interval
                if self._held:
                    self._judge_held()
                if self._dirty:
                    self._dirty = False
                    with self._changed:
                        self._changed.notify_all()
        except Exception:
            LOG.exception("detector %s: loop failed; peer failures now wait for the session "
                          "timeout", self.member_id)
        finally:
            self._shutdown()
            with self._changed:
                self._changed.notify_all()

    def _shutdown(self) -> None:
        for conn in list(self._conns):
            self._close(conn, {"t": "bye"})
        if self._listener is not None:
            self._listener.close()

    def _on_event(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data == "wake":
            try:
                while self._wake_r.recv(4096):
                    pass
            except OSError:
                pass
        elif key.data == "accept":
            self._accept()
        else:
            conn: _Conn = key.data
            if conn not in self._conns:
                return
            if not conn.connected and mask & selectors.EVENT_WRITE:
                self._finish_connect(conn)
            elif mask & selectors.EVENT_READ:
                self._read(conn)

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(64):
            try:
                sock, _addr = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                LOG.warning("detector %s: accept failed: %s", self.member_id, exc)
                return
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(sock, outbound=False, connected=True, opened_at=time.monotonic())
            self._conns.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _dial(self, peer: _Peer, now: float) -> None:
        assert peer.endpoint is not None
        host, port = peer.endpoint
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as exc:
            LOG.warning("detector %s: no socket for %s: %s", self.member_id, peer.member_id, exc)
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock, outbound=True, peer=peer.member_id, opened_at=now)
        code = sock.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK):
            sock.close()
            self._dial_failed(peer, now)
            return
        peer.out = conn
        self._conns.add(conn)
        self._selector.register(sock, selectors.EVENT_WRITE, conn)
        LOG.debug("detector %s: dialing %s at %s:%d", self.member_id, peer.member_id, host, port)

    def _dial_failed(self, peer: _Peer, now: float) -> None:
        peer.out = None
        if peer.declared and not peer.listed and not peer.ins:
            if self._peers.get(peer.member_id) is peer:  # dead, its record gone: forget it
                del self._peers[peer.member_id]
            return
        peer.dial_failures += 1
        delay = min(MAX_DIAL_DELAY, self.settings.interval * 2 ** min(peer.dial_failures, 8))
        peer.next_dial = now + delay

    def _finish_connect(self, conn: _Conn) -> None:
        peer = self._peers.get(conn.peer or "")
        if conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0 or peer is None \
                or peer.out is not conn:
            dialed = peer is not None and peer.out is conn  # (`_drop` clears peer.out)
            self._drop(conn)
            if dialed and peer is not None:
                self._dial_failed(peer, time.monotonic())
            return
        conn.connected = True
        peer.dial_failures = 0
        self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        self._send(conn, {"t": "hello", "id": self.member_id, "inc": self.incarnation,
                          "ep": self._endpoint})
        self._send(conn, self._heartbeat())

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(conn, f"connection reset ({exc.strerror or exc})", RESET)
            return
        if not data:
            self._lost(conn, "connection closed", CLOSED)
            return
        conn.rbuf += data
        while conn in self._conns:
            line, sep, rest = conn.rbuf.partition(b"\n")
            if not sep:
                if len(conn.rbuf) > MAX_FRAME:
                    self._reject(conn, "frame too long")
                return
            conn.rbuf = bytearray(rest)
            if len(line) > MAX_FRAME:
                self._reject(conn, "frame too long")
                return
            self._frame(conn, bytes(line))

    def _frame(self, conn: _Conn, line: bytes) -> None:
        try:
            frame = json.loads(line)
        except (ValueError, RecursionError):  # (a hostile line may nest deeply)
            self._reject(conn, "not JSON")
            return
        kind = frame.get("t") if isinstance(frame, dict) else None
        if conn.peer is None:
            if kind != "hello":
                self._reject(conn, "no hello first")
                return
            self._hello(conn, frame)
            return
        peer = self._peers.get(conn.peer)
        if kind == "bye":
            conn.noticed = True
            if peer is not None:
                LOG.info("detector %s: %s is leaving", self.member_id, peer.member_id)
                self._buried[peer.member_id] = (peer.incarnation, time.monotonic())
                self._forget(peer)
            else:
                self._drop(conn)
        elif kind == "dead":
            conn.noticed = True
            LOG.warning("detector %s: %s declared us dead (were we stopped?)", self.member_id,
                        conn.peer)
            self._drop(conn)
            if peer is not None and peer.out is conn:
                peer.out = None
                peer.next_dial = time.monotonic() + self.settings.interval
        elif kind == "hb":
            if peer is None or conn not in peer.ins:
                return  # a heartbeat from an outbound peer's side is not expected; ignore
            peer.last_heard = time.monotonic()
            self._silence(peer).heard(peer.last_heard)
            suspects = frame.get("s", [])
            if isinstance(suspects, list) and len(suspects) <= 1000:
                peer.suspects = frozenset(s for s in suspects if isinstance(s, str))
                if peer.member_id < self.member_id:
                    for member_id in [m for m in self._pending if m in peer.suspects]:
                        del self._pending[member_id]  # a lower survivor acts: not us
                        LOG.info("detector %s: %s evicts %s", self.member_id, peer.member_id,
                                 member_id)
                        self._dirty = True
        elif kind != "hello":
            self._reject(conn, f"unknown frame type {shown(kind)}")

    def _hello(self, conn: _Conn, frame: dict[str, Any]) -> None:
        member_id, incarnation, endpoint = frame.get("id"), frame.get("inc"), frame.get("ep")
        try:
            if member_id_problem(member_id) is not None:
                raise ValueError(f"member id {shown(member_id)} is not valid")
            parsed = peer_of(str(member_id), {"liveness": endpoint, "liveness_id": incarnation})
            assert parsed is not None
        except ValueError as exc:
            self._reject(conn, f"bad hello: {exc}")
            return
        if member_id == self.member_id:
            self._reject(conn, "it claims our own member id")
            return
        known = self._peers.get(str(member_id))
        if known is not None and known.incarnation != parsed[1] and known.monitored:
            # the member we hear from claims to be someone else: keep the one we know
            self._reject(conn, f"it claims to be {printable(str(member_id), 80)}, which is "
                               "connected under another incarnation")
            return
        buried = self._buried.get(str(member_id))
        if buried is not None and buried[0] == parsed[1] and conn.opened_at <= buried[1]:
            self._drop(conn)  # opened before we declared it dead: no proof of life
            return
        peer = self._peer(str(member_id), parsed[1], parsed[0])
        self._buried.pop(peer.member_id, None)  # it proved alive
        self._suspects.pop(peer.member_id, None)
        self._pending.pop(peer.member_id, None)  # (a verdict waiting for a lower member)
        peer.declared = False
        conn.peer = peer.member_id
        peer.ins.add(conn)
        LOG.debug("detector %s: %s said hello", self.member_id, peer.member_id)
        peer.last_heard = time.monotonic()
        self._dirty = True
        if peer.out is None:
            peer.next_dial = 0.0  # dial back now

    def _silence(self, peer: _Peer) -> SilenceBound:
        if peer.silence is None:
            peer.silence = SilenceBound(self.settings.bound, self.settings.ceiling,
                                        window=self.settings.damping_window)
        return peer.silence

    def _peer(self, member_id: str, incarnation: str, endpoint: tuple[str, int]) -> _Peer:
        """The peer record for this incarnation (a new incarnation replaces the old one)."""
        peer = self._peers.get(member_id)
        if peer is not None and peer.incarnation != incarnation:
            self._forget(peer)
            peer = None
        if peer is None:
            peer = self._peers[member_id] = _Peer(member_id, incarnation, endpoint)
        peer.endpoint = endpoint
        return peer

    def _apply_members(self, listed: dict[str, tuple[tuple[str, int], str]]) -> None:
        LOG.debug("detector %s: members %s", self.member_id, sorted(listed))
        for member_id, (endpoint, incarnation) in listed.items():
            if self._buried.get(member_id, ("",))[0] == incarnation:
                continue  # declared dead or gone: it must dial us to prove otherwise
            self._buried.pop(member_id, None)
            self._peer(member_id, incarnation, endpoint).listed = True
        for peer in list(self._peers.values()):
            if peer.member_id not in listed:
                peer.listed = False
                if peer.out is None and not peer.ins and not peer.declared:
                    del self._peers[peer.member_id]
        for member_id in [m for m in self._buried if m not in listed]:
            del self._buried[member_id]  # its record is gone: nothing left to skip

    def _tick(self, now: float) -> None:
        bound = self.settings.bound
        for member_id, since in list(self._suspects.items()):
            if now - since > max(1.0, 4 * bound):
                del self._suspects[member_id]
        beat = self._heartbeat()
        for peer in list(self._peers.values()):
            out = peer.out
            if out is not None and out.connected:
                self._send(out, beat)
            elif out is not None and not out.connected and now - out.opened_at > bound:
                self._drop(out)  # a dial that hangs (unreachable host): try again later
                self._dial_failed(peer, now)
            allowed = self._silence(peer).bound(now)
            if peer.monitored and now - peer.last_heard > allowed:
                self._declare(peer, f"missed heartbeats ({self.settings.misses} x "
                                    f"{self.settings.interval:g} s" + (
                                        f", {allowed:.2f} s for this busy peer"
                                        if allowed > bound else "") + ")", now, SILENCE)
            elif out is None and peer.endpoint is not None and now >= peer.next_dial \
                    and (peer.listed or peer.ins or peer.declared):
                self._dial(peer, now)
        for member_id, (incarnation, deadline, evidence) in list(self._pending.items()):
            if now >= deadline:
                del self._pending[member_id]
                self._dirty = True
                self._decide(member_id, incarnation, evidence, final=True)

    def _heartbeat(self) -> dict[str, Any]:
        return {"t": "hb", "s": sorted(self._suspects)} if self._suspects else {"t": "hb"}

    def _send(self, conn: _Conn, frame: dict[str, Any]) -> None:
        if len(conn.wbuf) < MAX_BACKLOG:
            conn.wbuf += encode(frame)
        try:
            sent = conn.sock.send(conn.wbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(conn, f"send failed ({exc.strerror or exc})", RESET)
            return
        del conn.wbuf[:sent]

    def _lost(self, conn: _Conn, reason: str, kind: str) -> None:
        """A connection ended. Without a goodbye, its peer is dead (the kernel closed it):
        `kind` is CLOSED (a FIN) or RESET (see `detector_policy`)."""
        held = self._held.get(conn.peer or "")
        if held is not None and conn in held[4]:  # a held reset's other connection
            self._drop(conn)
            held[4].remove(conn)
            if kind == CLOSED and not conn.noticed:  # a FIN: its process died
                del self._held[conn.peer or ""]
                incarnation, first, silent, _at, others = held
                for other in others:
                    self._close(other, {"t": "dead"})
                self._judge(conn.peer or "", incarnation, f"{first}, another closed", silent,
                            CLOSED, time.monotonic())
            return
        peer = self._peers.get(conn.peer or "")
        if peer is None or conn.noticed or not conn.connected or peer.declared \
                or (conn is not peer.out and conn not in peer.ins):
            dialed = peer is not None and peer.out is conn  # (`_drop` clears peer.out)
            self._drop(conn)
            if dialed and peer is not None:
                self._dial_failed(peer, time.monotonic())
            return
        self._drop(conn)  # (its error is read: `_closed_too` must not take it for a FIN)
        self._declare(peer, reason, time.monotonic(), kind)

    def _reject(self, conn: _Conn, why: str) -> None:
        LOG.warning("detector %s: dropping a connection from %s: %s", self.member_id,
                    printable(conn.peer or "an unknown peer", 80), why)
        peer = self._peers.get(conn.peer or "")
        dialed = peer is not None and peer.out is conn  # (`_drop` clears peer.out)
        self._drop(conn)
        if peer is not None:
            peer.ins.discard(conn)
            if dialed:
                self._dial_failed(peer, time.monotonic())

    def _drop(self, conn: _Conn) -> None:
        if conn not in self._conns:
            return
        self._dirty = True
        self._conns.discard(conn)
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        peer = self._peers.get(conn.peer or "")
        if peer is not None:
            peer.ins.discard(conn)
            if peer.out is conn:
                peer.out = None

    def _close(self, conn: _Conn, notice: dict[str, Any]) -> None:
        """Tell the peer why, then hang up without a reset (unread input is drained first)."""
        if conn.connected:
            try:
                while conn.sock.recv(65536):
                    pass
            except OSError:
                pass
            try:
                conn.sock.send(encode(notice))
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        self._drop(conn)

    def _forget(self, peer: _Peer, notice: dict[str, Any] | None = None) -> None:
        for conn in [c for c in (peer.out, *peer.ins) if c is not None]:
            self._close(conn, notice) if notice else self._drop(conn)
        if self._peers.get(peer.member_id) is peer:
            del self._peers[peer.member_id]

    # ---- verdicts -------------------------------------------------------------------------

    def _declare(self, peer: _Peer, reason: str, now: float, kind: str) -> None:
        """Declare `peer` dead for `reason` (`kind`: CLOSED, RESET or SILENCE): hang up on it,
        bury its incarnation, then judge whether to evict. A reset with no FIN on the peer's
        other connection is judged a little later (`_judge_held`), once it is known whether
        other peers' resets came with it."""
        member_id = peer.member_id
        silent = now - peer.last_heard if peer.last_heard else float("nan")
        if kind == RESET and self._closed_too(peer):
            kind = CLOSED  # it reset one connection and closed another: its process died
            reason = f"{reason}, another closed"
        others: list[_Conn] = []
        if kind == RESET:  # its other connections may yet bring a FIN: kept open till judged
            others = [c for c in (peer.out, *peer.ins) if c is not None and c.connected]
            peer.out = None
            peer.ins.clear()
        self._forget(peer, {"t": "dead"})
        self._buried[member_id] = (peer.incarnation, now)
        self._redial_later(peer, now)
        self.declarations.append((now, member_id, reason))
        if kind == RESET:
            self._resets.record(member_id, now)
            self._held[member_id] = (peer.incarnation, reason, silent, now, others)
            return
        self._held.pop(member_id, None)
        self._judge(member_id, peer.incarnation, reason, silent, kind, now)

    def _closed_too(self, peer: _Peer) -> bool:
        """Whether another connection with `peer` was closed by its kernel (a FIN arrived,
        perhaps behind unread heartbeats): a process that died resets the connections it had
        unread input on and closes the others, while a link problem (a firewall, `ss -K`)
        only resets."""
        for conn in (peer.out, *peer.ins):
            if conn is not None and conn.connected and _fin_received(conn.sock):
                return True
        return False

    def _judge_held(self) -> None:
        """Judge the declarations on a reset that are due, and hang up the other connections
        kept open for them. Resets of several peers within one bound are a link problem here:
        judged as silence (the majority rule) as soon as the second one is seen. A lone reset
        is a death (a process that died with input unread), judged one heartbeat interval
        after it. That wait costs a crash nothing as a rule: a process that dies closes (FIN)
        the connections it had no unread input on, and a FIN on the other connection, there
        already (`_closed_too`) or arriving during the wait (`_lost`), is a death at once."""
        now = time.monotonic()
        burst = self._resets.peers(now)
        for member_id, held in list(self._held.items()):
            incarnation, reason, silent, at, _others = held
            if burst < 2 and now - at < self.settings.interval:
                continue
            if self._held.pop(member_id, None) is None:
                continue  # (judging another sent heartbeats, and it was declared again)
            others = held[4]
            closed = any(_fin_received(c.sock) for c in others if c in self._conns)
            for conn in others:
                self._close(conn, {"t": "dead"})
            if self._buried.get(member_id, ("",))[0] != incarnation:
                continue  # it proved alive meanwhile (a new connection said hello)
            evidence = CLOSED if closed else evidence_of(RESET, burst)
            if evidence == CLOSED:
                reason = f"{reason}, another closed"
            elif evidence == SILENCE:
                reason = (f"{reason}; one of {burst} peers reset within "
                          f"{self.settings.bound:g} s: judged as silence")
            self._judge(member_id, incarnation, reason, silent, evidence, now)

    def _hearing(self, now: float) -> tuple[list[str], int]:
        """(peers we hear from, members in all, us included). Heard: a heartbeat within the
        last half bound, not the whole bound, as peers cut off with the one just declared
        went silent within a heartbeat of it and are about to be declared too (so a member
        cut off from all its peers counts none of them). Members: us, every listed peer, and
        every peer we hear from or declared dead."""
        recent = max(self.settings.interval, self.settings.bound / 2)
        peers = list(self._peers.values())
        heard = sorted(p.member_id for p in peers
                       if p.monitored and now - p.last_heard <= recent)
        return heard, 1 + sum(1 for p in peers if p.listed or p.monitored or p.declared)

    def _quorum_problem(self, evidence: str, now: float) -> str | None:
        """Why a declaration resting on `evidence` must not lead to an eviction now (we are
        in a minority: see `detector_policy.may_evict`), or None."""
        heard, members = self._hearing(now)
        if may_evict(evidence, len(heard) + 1, members):
            return None
        return (f"this member hears from {len(heard) + 1} of {members} members (itself"
                f"{', ' if heard else ''}{', '.join(heard)}), not a majority")

    def _judge(self, member_id: str, incarnation: str, reason: str, silent: float,
               evidence: str, now: float) -> None:
        problem = self._quorum_problem(evidence, now)
        if problem is not None:
            LOG.warning("detector %s: member %s declared dead (%s, last heard %.3f s ago); "
                        "not evicting: %s, so it may be the one cut off (its session timeout "
                        "decides)", self.member_id, member_id, reason, silent, problem)
            return
        verdict, backoff = self._damping.declare(member_id, now)
        if verdict == "damped":
            LOG.warning("detector %s: member %s declared dead (%s, last heard %.3f s ago); "
                        "damped, not evicting: it flaps (back-off %.0f s more)", self.member_id,
                        member_id, reason, silent, backoff)
            return
        if verdict == "flapping":
            LOG.warning("detector %s: member %s declared dead (%s, last heard %.3f s ago) for "
                        "the second time within %g s; damped: not evicting it for %g s (its "
                        "session timeout decides)", self.member_id, member_id, reason, silent,
                        self.settings.damping_window, self.settings.damping_backoff)
            return
        LOG.warning("detector %s: member %s declared dead (%s, last heard %.3f s ago) t=%.6f",
                    self.member_id, member_id, reason, silent, time.time())
        self._suspects[member_id] = now
        beat = self._heartbeat()  # tell the others now: the lowest survivor acts
        for other in list(self._peers.values()):
            if other.out is not None and other.out.connected:
                self._send(other.out, beat)
        self._decide(member_id, incarnation, evidence, final=False)

    def _redial_later(self, peer: _Peer, now: float) -> None:
        """Call a member declared dead once more, one detection bound later. If it is alive
        (a cut link) and declared us dead too, with neither "dead" notice delivered, each side
        would wait for the other's call, and after evicting each other each may read the
        member list while the other's record is gone: the pair would stay unmonitored for
        good. Our call proves nothing about it (only its own call, opened after the
        declaration, does: see `_hello`), but it tells it we are alive, so it calls back. A
        call that fails forgets a member whose record is gone; a listed one is called again
        (with back-off) as any listed peer."""
        if peer.endpoint is not None:
            self._peers[peer.member_id] = _Peer(
                peer.member_id, peer.incarnation, peer.endpoint, listed=peer.listed,
                declared=True, next_dial=now + self.settings.bound)

    def _decide(self, member_id: str, incarnation: str, evidence: str, final: bool) -> None:
        """Evict if we are the lowest live member that declared it dead; a higher member
        waits two detection bounds for a lower one to say so (and then checks again that it
        still hears a majority, if the verdict rests on silence)."""
        lower = [p for p in self._peers.values() if p.monitored and p.member_id < self.member_id]
        LOG.debug("detector %s: deciding on %s: lower live members %s", self.member_id,
                  member_id, {p.member_id: sorted(p.suspects) for p in lower})
        if any(member_id in p.suspects for p in lower):
            LOG.info("detector %s: %s evicts %s", self.member_id,
                     min(p.member_id for p in lower if member_id in p.suspects), member_id)
            return
        if lower and not final:
            self._pending[member_id] = (incarnation, time.monotonic() + 2 * self.settings.bound,
                                        evidence)
            return
        problem = self._quorum_problem(evidence, time.monotonic()) if final else None
        if problem is not None:
            LOG.warning("detector %s: not evicting member %s after all: %s now (its session "
                        "timeout decides)", self.member_id, member_id, problem)
            return
        LOG.warning("detector %s: evicting member %s", self.member_id, member_id)
        self._run(self._on_evict, member_id, incarnation)
