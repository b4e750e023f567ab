"""A pass-through OpenFlow proxy that notes which numbered frames reached a controller as
packet-ins.

What: listens on a free loopback port (a bridge dials it as the controller) and relays each
connection to the controller's real port byte for byte, both ways, changing nothing. On the
switch -> controller stream it splits OpenFlow messages and, for every PACKET_IN carrying one of
the test frames of tests/chaos/hosts.py, records (bridge, seq) for this controller.
Why: a frame the hosts never see delivered was either never a packet-in at all (the switch
dropped it, e.g. while an app re-synced its flow table) or was a packet-in no controller
handled. Only the second is a planned handover's fault; this tells them apart, from the wire.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import defaultdict

from tests.chaos.hosts import MAGIC, parse
from tests.chaos.tap import split_messages
from tests.servers._process import LOOPBACK

OFPT_PACKET_IN = 10
_TAIL = struct.Struct("!5sBBQ")


class PacketInProxy:
    """One controller's proxy; `seen[bridge]` is the set of seqs it received as packet-ins."""

    def __init__(self, name: str, controller_port: int) -> None:
        self.name = name
        self.controller_port = controller_port
        self.seen: dict[int, set[int]] = defaultdict(set)
        self._lock = threading.Lock()
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._spawn(self._accept_loop, f"proxy-{name}-accept")

    def _spawn(self, target: object, name: str, *args: object) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)  # type: ignore[arg-type]
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                switch, _ = self._listener.accept()
            except OSError:
                return
            try:
                controller = socket.create_connection((LOOPBACK, self.controller_port), 5)
            except OSError:
                switch.close()
                continue
            controller.settimeout(None)
            with self._lock:
                self._socks += [switch, controller]
            self._spawn(self._relay, f"proxy-{self.name}-c2s", controller, switch, False)
            self._spawn(self._relay, f"proxy-{self.name}-s2c", switch, controller, True)

    def _relay(self, src: socket.socket, dst: socket.socket, inspect: bool) -> None:
        buf = bytearray()
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if inspect:
                    buf += data
                    for raw in split_messages(buf):
                        if raw[1] == OFPT_PACKET_IN:
                            self._note(raw)
        except (OSError, ValueError):
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _note(self, raw: bytes) -> None:
        at = raw.find(MAGIC)
        if at < 14:
            return
        got = parse(raw[at - 14:])
        if got is not None:
            bridge, _src, seq = got
            with self._lock:
                self.seen[bridge].add(seq)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        for t in self._threads:
            t.join(5)
