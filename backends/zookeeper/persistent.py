"""Persistent recursive watches (ZooKeeper 3.6+) for kazoo, which has no API for them.

A one-shot watch must be re-armed by a read after it fires. For a topology watch that costs a
listing of the whole kind (every link name, thousands of them) after each record created or
deleted, and every later change waits for it, to stay in order. A persistent recursive watch on
`topology/<kind>` stays armed and names each record created, changed or deleted under it: a
delete is known at once, a create or change costs one read of that record.

kazoo (2.11) can send any request object and hands every watch notification to its connection's
`_read_watch_event`, which finds one-shot watchers by exact path and drops the rest. So
`PersistentWatches` sends ZooKeeper's `addWatch` request (opcode 106) itself, and wraps that one
method of the client's connection to pass the notifications under a watched path, in the order
they arrived, to kazoo's watch-callback thread, then lets kazoo's own code run unchanged.

The server forgets these watches with the connection, and kazoo does not restore them: the
owner adds them again after every reconnect (the topology watch does, before its new snapshot).
A server older than 3.6 answers `addWatch` with UnimplementedError; `NotSupported` says so, and
the caller keeps to one-shot watches. So does a kazoo release this was not checked against
(`CHECKED_KAZOO`): its private method might have moved without an error, and the watch would
then hear nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from kazoo import version as kazoo_version
from kazoo.exceptions import UnimplementedError
from kazoo.protocol.serialization import Watch, int_struct, write_string
from kazoo.protocol.states import Callback, EventType

LOG = logging.getLogger(__name__)

#: kazoo releases (major, minor) whose connection internals this wraps as they are.
CHECKED_KAZOO = ((2, 9), (2, 10), (2, 11))
#: ZooKeeper's `addWatch` opcode and the recursive mode (AddWatchMode.PERSISTENT_RECURSIVE).
ADD_WATCH = 106
PERSISTENT_RECURSIVE = 1
#: Notification types (kazoo's protocol constants) -> kazoo's EventType names.
_EVENT_TYPES = {1: EventType.CREATED, 2: EventType.DELETED, 3: EventType.CHANGED}

#: Where `for_client` keeps a client's watches.
_ATTRIBUTE = "_coordination_persistent_watches"
#: What a listener is called with: the event type (CREATED, CHANGED or DELETED) and the path
#: below the chroot.
Listener = Callable[[str, str], None]


class NotSupported(Exception):
    """This client or server cannot keep persistent recursive watches."""


class _AddWatch(NamedTuple):
    """ZooKeeper's AddWatchRequest: path, mode; the answer carries no result."""

    path: str
    mode: int

    type = ADD_WATCH

    def serialize(self) -> bytearray:
        out = bytearray(write_string(self.path))
        out.extend(int_struct.pack(self.mode))
        return out

    @classmethod
    def deserialize(cls, buffer: bytes, offset: int) -> bool:
        return True


class PersistentWatches:
    """The persistent recursive watches of one kazoo client and who listens to each (make it
    with `for_client`, which wraps the client's connection once).

    `add(path, listener)` registers `listener` for every change under `path` and asks the
    server for the watch; the returned kazoo async result is set once the server armed it. Each
    notification reaches every listener of the watched paths above it, on kazoo's watch
    thread, in the order the server sent them (with kazoo's own watch callbacks)."""

    def __init__(self, client: Any) -> None:
        release = kazoo_version.__version__
        if tuple(int(part) for part in release.split(".")[:2] if part.isdigit()) \
                not in CHECKED_KAZOO:
            raise NotSupported(f"kazoo {release} is not a release this was checked against "
                               f"(2.9-2.11)")
        self._client = client
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Listener]] = {}  # watched path (chrooted) -> listeners
        try:
            connection = client._connection
            self._original = connection._read_watch_event
            self._dispatch = client.handler.dispatch_callback
            self._call = client._call
            self._chroot = client.chroot or ""
        except AttributeError as exc:  # a kazoo whose internals moved on
            raise NotSupported(f"this kazoo has no {exc.name!r}") from None
        connection._read_watch_event = self._read_watch_event

    def add(self, path: str, listener: Listener) -> Any:
        """Watch everything under `path` (below the chroot) for `listener`; kazoo's async
        result for the server's answer (UnimplementedError: a server older than 3.6)."""
        full = self._chroot + path
        with self._lock:
            listeners = self._listeners.setdefault(full, [])
            if listener not in listeners:
                listeners.append(listener)
        result = self._client.handler.async_result()
        self._call(_AddWatch(full, PERSISTENT_RECURSIVE), result)
        return result

    def discard(self, listener: Listener) -> None:
        """Stop calling `listener` (the server's watch stays: it is cheap, and another listener
        may share it)."""
        with self._lock:
            for listeners in self._listeners.values():
                if listener in listeners:
                    listeners.remove(listener)

    def _read_watch_event(self, buffer: bytes, offset: int) -> Any:
        try:
            watch, _ = Watch.deserialize(buffer, offset)
            kind = _EVENT_TYPES.get(watch.type)
            if kind is not None and watch.path:
                self._notify(kind, watch.path)
        except Exception:  # never let a listener break kazoo's connection loop
            LOG.exception("persistent watch notification dropped")
        return self._original(buffer, offset)

    def _notify(self, kind: str, path: str) -> None:
        with self._lock:
            matched = [listener for watched, listeners in self._listeners.items()
                       if path.startswith(watched + "/") for listener in listeners]
        if not matched:
            return
        relative = path[len(self._chroot):] if self._chroot else path
        for listener in matched:
            self._dispatch(Callback("watch", listener, (kind, relative)))


def for_client(client: Any) -> PersistentWatches:
    """The client's `PersistentWatches` (one per kazoo client: its connection is wrapped once);
    NotSupported if this kazoo's internals are not the ones it wraps."""
    watches = getattr(client, _ATTRIBUTE, None)
    if watches is None:
        watches = PersistentWatches(client)
        setattr(client, _ATTRIBUTE, watches)
    return watches


def check_answer(result: Any) -> None:
    """Wait for `add()`'s answer (`result.get()`, bounded by the caller): NotSupported if the
    server does not know `addWatch`; other errors (the connection went) as kazoo raised them."""
    try:
        result.get()
    except UnimplementedError:
        raise NotSupported("the ZooKeeper server is older than 3.6 (no addWatch)") from None
