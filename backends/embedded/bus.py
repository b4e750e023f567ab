"""The embedded backend's notification bus: one unix socket per session, one connection per pair.

Every live session listens on `sessions/<token>.sock`. A new session connects to every older
one and introduces itself with one line, `<token>\\n`; the older one answers with a notification
byte. From then on the connection carries single `!` bytes both ways, each meaning "the store
changed, read it": whoever commits a write sends one to every peer. The bytes carry no data, so a
peer whose socket buffer is full already has a wake-up pending and the byte can be dropped.

The connection is also the liveness signal: when a process dies, however it dies, the kernel
closes its sockets and every peer reads EOF at once. EOF only starts the check (the session's
flock decides, see `files`), so a closed connection never condemns a live session.

One thread per session runs the select loop; it never touches the database, it only calls
`on_notify()` and `on_gone(token)`, which hand work to the driver's worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from .files import TOKEN, SessionFiles

LOG = logging.getLogger(__name__)
_NOTIFY = b"!"
_CONNECT_TIMEOUT = 2.0


@dataclass(eq=False)
class _Conn:
    sock: socket.socket
    token: str | None  # None until an accepted connection has said hello
    hello: bytes = field(default=b"")


class Bus:
    """A session's socket, its peer connections and the thread that watches them."""

    def __init__(self, files: SessionFiles, token: str, on_notify: Callable[[], None],
                 on_gone: Callable[[str], None]) -> None:
        self._files = files
        self.token = token
        self._on_notify = on_notify
        self._on_gone = on_gone
        self._lock = threading.Lock()  # guards _conns and every send/close of a connection
        self._conns: list[_Conn] = []
        self._pending: list[_Conn] = []
        self._selector = selectors.DefaultSelector()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"embedded-bus[{token}]",
                                        daemon=True)

    def start(self) -> None:
        """Bind and listen on `<token>.sock`, then start the select loop."""
        self._listener.bind(self._files.socket_address(self.token))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "listen")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()

    def tokens(self) -> set[str]:
        """Sessions this one has a live connection with."""
        with self._lock:
            return {c.token for c in self._conns if c.token}

    def connect(self, token: str) -> bool:
        """Connect to an older session and say hello; False if nobody listens there (dead)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(_CONNECT_TIMEOUT)
            sock.connect(self._files.socket_address(token))
            sock.sendall(self.token.encode() + b"\n")
            sock.setblocking(False)
        except OSError as exc:
            LOG.debug("session %s: cannot connect to %s: %s", self.token, token, exc)
            sock.close()
            return False
        conn = _Conn(sock, token)
        with self._lock:
            if self._closed:
                sock.close()
                return False
            self._conns.append(conn)
            self._pending.append(conn)
        self._wake()
        return True

    def notify(self) -> None:
        """Tell every peer the store changed (never blocks)."""
        with self._lock:
            for conn in self._conns:
                if conn.token:
                    _send(conn.sock)

    def close(self) -> None:
        """Stop the loop and close every socket; peers read EOF."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        with self._lock:
            for conn in self._conns + self._pending:
                conn.sock.close()
            self._conns.clear()
            self._pending.clear()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        with contextlib.suppress(Exception):
            self._selector.close()

    def fds(self) -> list[socket.socket]:
        """Every socket (for closing inherited copies in a forked child)."""
        return [c.sock for c in self._conns] + [self._listener, self._wake_r, self._wake_w]

    # ---- the select loop ------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            _send(self._wake_w)

    def _run(self) -> None:
        while not self._closed:
            try:
                events = self._selector.select()
            except OSError:
                if self._closed:
                    return
                raise
            for key, _ in events:
                try:
                    if key.data == "wake":
                        self._drain_wake()
                    elif key.data == "listen":
                        self._accept()
                    else:
                        self._readable(key.data)
                except Exception:  # one bad connection must not stop the loop
                    LOG.exception("session %s: bus event failed", self.token)

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        with self._lock:
            pending, self._pending = self._pending, []
        for conn in pending:
            self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _accept(self) -> None:
        try:
            sock, _ = self._listener.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        conn = _Conn(sock, None)
        with self._lock:
            self._conns.append(conn)
        self._selector.register(sock, selectors.EVENT_READ, conn)

    def _readable(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            if conn.token:
                self._on_gone(conn.token)
            return
        if conn.token is None:  # an accepted connection: first comes the peer's hello
            conn.hello += data
            line, newline, data = conn.hello.partition(b"\n")
            if not newline:
                if len(conn.hello) > 64:
                    self._drop(conn)
                return
            token = line.decode("ascii", "replace")
            if not TOKEN.match(token):
                LOG.warning("session %s: dropping a connection with a bad hello %r",
                            self.token, line[:40])
                self._drop(conn)
                return
            with self._lock:
                conn.token = token
                _send(conn.sock)  # our answer: the newcomer reads the store from now on
            if not data:
                return
        self._on_notify()

    def _drop(self, conn: _Conn) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
            conn.sock.close()


def _send(sock: socket.socket) -> None:
    try:
        sock.send(_NOTIFY)
    except (BlockingIOError, InterruptedError):
        pass  # the peer has unread notifications already: it will read the store anyway
    except OSError:
        pass  # the peer is gone; its EOF reaches the select loop
