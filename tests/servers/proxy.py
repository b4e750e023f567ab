"""A loopback TCP proxy that can cut or black-hole traffic between a real client and server.

What: listens on a free 127.0.0.1 port and forwards every accepted connection to a target,
one thread per direction. ``cut()`` closes every live connection and refuses new ones;
``blackhole()`` keeps connections open but holds every byte (both ways) until ``restore()``,
which is what a network partition looks like to a client: no RST, just silence. That lets a
ZooKeeper session expire on the server while the client still believes it is connected.
Why: connection loss and session expiry must be caused for real clients, deterministically.
"""

from __future__ import annotations

import enum
import selectors
import socket
import struct
import threading
from typing import Self

from ._process import LOOPBACK


class ProxyState(enum.Enum):
    """Forwarding state of a :class:`TcpProxy`."""

    FORWARDING = "forwarding"
    CUT = "cut"
    BLACKHOLE = "blackhole"
    CLOSED = "closed"


def _abort(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0) so the peer sees the loss at once."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Link:
    """One proxied connection: client socket, upstream socket, two pump threads."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self._open_dirs = 2
        self._lock = threading.Lock()
        self._ending = False  # we are tearing it down, or the client closed first
        self.threads = [
            threading.Thread(
                target=self._pump, args=(client, upstream), name="proxy-c2s", daemon=True
            ),
            threading.Thread(
                target=self._pump, args=(upstream, client), name="proxy-s2c", daemon=True
            ),
        ]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        from_target = src is self.upstream
        try:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    if from_target and not self._ending:
                        self.proxy._note_target_close()
                    raise
                if not data:
                    if from_target and not self._ending:
                        self.proxy._note_target_close()
                    elif not from_target:
                        self._ending = (
                            True  # the client hung up: what follows is not the target's doing
                        )
                # A partition holds data rather than dropping it: TCP would retransmit it later.
                if not self.proxy._wait_forwarding():
                    return
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    break
                dst.sendall(data)
        except OSError:
            self.abort()
            return
        finally:
            with self._lock:
                self._open_dirs -= 1
                done = self._open_dirs == 0
            if done:
                self.close()

    def close(self) -> None:
        for s in (self.client, self.upstream):
            try:
                s.close()
            except OSError:
                pass
        self.proxy._forget(self)

    def abort(self) -> None:
        self._ending = True
        _abort(self.client)
        _abort(self.upstream)
        self.proxy._forget(self)


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port`` with injectable faults.

    ``host``/``port``/``address`` give the listening side (point clients there). Thread-safe;
    all threads are daemons and ``close()`` joins them (bounded).
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_port: int = 0,
        connect_timeout: float = 2.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.connect_timeout = connect_timeout
        self.host = LOOPBACK
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((self.host, listen_port))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._cond = threading.Condition()
        self._state = ProxyState.FORWARDING
        self._links: set[_Link] = set()
        self.accepted = 0  #: connections accepted in total (including refused ones)
        self._target_closes = 0
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"proxy-accept-{self.port}", daemon=True
        )
        self._acceptor.start()

    # -- public API --------------------------------------------------------------------------
    @property
    def address(self) -> str:
        """``127.0.0.1:PORT`` of the listening side."""
        return f"{self.host}:{self.port}"

    @property
    def hosts(self) -> str:
        """Alias of :attr:`address` (ZooKeeper-style connection string)."""
        return self.address

    @property
    def state(self) -> ProxyState:
        """Current forwarding state."""
        with self._cond:
            return self._state

    @property
    def live_connections(self) -> int:
        """Number of proxied connections currently open."""
        with self._cond:
            return len(self._links)

    @property
    def target_closes(self) -> int:
        """How many proxied connections the *target* closed or reset on its own so far.

        Counted when the proxy reads the EOF/RST, even while black-holed (the close is then
        held back from the client), so a test can see e.g. ZooKeeper expiring a session.
        Closes caused by the client hanging up first, by ``cut()`` or ``close()`` do not count.
        """
        with self._cond:
            return self._target_closes

    def wait_target_closes(self, count: int, timeout: float) -> bool:
        """Block until :attr:`target_closes` reaches ``count`` (no polling); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._target_closes >= count, timeout)

    def cut(self) -> None:
        """Reset every live connection and refuse (accept + reset) new ones until ``restore()``."""
        with self._cond:
            if self._state is ProxyState.CLOSED:
                return
            self._state = ProxyState.CUT
            links = list(self._links)
            self._cond.notify_all()
        for link in links:
            link.abort()

    def blackhole(self) -> None:
        """Keep connections open but forward nothing (either way) until ``restore()``.

        New connections are accepted and held the same way. Data already received is kept and
        delivered in order on ``restore()``, as TCP retransmission would after a healed partition.
        """
        with self._cond:
            if self._state is ProxyState.CLOSED:
                return
            self._state = ProxyState.BLACKHOLE

    def restore(self) -> None:
        """Resume normal forwarding."""
        with self._cond:
            if self._state is ProxyState.CLOSED:
                return
            self._state = ProxyState.FORWARDING
            self._cond.notify_all()

    def close(self, timeout: float = 5.0) -> None:
        """Stop listening, reset every connection, join threads (bounded)."""
        with self._cond:
            if self._state is ProxyState.CLOSED:
                return
            self._state = ProxyState.CLOSED
            links = list(self._links)
            self._cond.notify_all()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._acceptor.join(timeout)
        for link in links:
            link.abort()
        for link in links:
            for t in link.threads:
                t.join(timeout)
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<TcpProxy {self.address} -> {self.target_host}:{self.target_port} {self.state.value}>"
        )

    # -- internals ---------------------------------------------------------------------------
    def _wait_forwarding(self) -> bool:
        """Block while black-holed; False if the link must end (cut/closed)."""
        with self._cond:
            while self._state is ProxyState.BLACKHOLE:
                self._cond.wait()
            return self._state is ProxyState.FORWARDING

    def _note_target_close(self) -> None:
        with self._cond:
            if self._state is not ProxyState.CUT and self._state is not ProxyState.CLOSED:
                self._target_closes += 1
            self._cond.notify_all()

    def _forget(self, link: _Link) -> None:
        with self._cond:
            self._links.discard(link)

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
                        client, _addr = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        return
                    client.setblocking(True)
                    self._handle(client)
        finally:
            sel.close()

    def _handle(self, client: socket.socket) -> None:
        with self._cond:
            self.accepted += 1
            state = self._state
        if state is not ProxyState.FORWARDING and state is not ProxyState.BLACKHOLE:
            _abort(client)
            return
        try:
            upstream = socket.create_connection(
                (self.target_host, self.target_port), timeout=self.connect_timeout
            )
            upstream.settimeout(None)
        except OSError:
            _abort(client)
            return
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(self, client, upstream)
        with self._cond:
            if self._state is ProxyState.CUT or self._state is ProxyState.CLOSED:
                link.abort()
                return
            self._links.add(link)
        link.start()
