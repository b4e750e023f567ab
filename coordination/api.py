"""The coordinator: a session with the backend, its elections, members and topology store.

`Coordinator` holds everything backend-neutral (session policy, listeners, the election
registry, the watchdog, user-callback delivery); a driver subclasses it and implements the
`_driver_*` hooks.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Self

from .dispatch import SerialExecutor
from .election import Election
from .errors import ClosedError
from .options import Option
from .store import RecordStoreDriver
from .topology import TopologyStore
from .types import MemberInfo, SessionState
from .urls import BackendURL

LOG = logging.getLogger(__name__)
SessionListener = Callable[[SessionState], None]


class Coordinator(ABC):
    """A member's session with a coordination backend. Use `coordination.connect()`."""

    #: Options this driver understands beyond `coordination.options.COMMON_OPTIONS`.
    OPTIONS: ClassVar[dict[str, Option]] = {}

    def __init__(self, url: BackendURL, member_id: str, options: dict[str, Any]) -> None:
        self.url = url
        self.member_id = member_id
        self.options = options
        self.info = MemberInfo(
            member_id=member_id,
            address=options.get("address") or socket.gethostname(),
            capacity=options.get("capacity", 0),
            started_at=time.time(),
        )
        self._state = SessionState.LOST
        self._state_lock = threading.Lock()
        self._session_listeners: list[SessionListener] = []
        self._elections: dict[str, Election] = {}
        self._elections_lock = threading.Lock()
        self._topology: TopologyStore | None = None
        self._closed = False
        self._callbacks = SerialExecutor(f"coord-callbacks[{member_id}]")
        self._watchdog_stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Coordinator:
        """Connect, register this member and start the watchdog; raises on failure."""
        try:
            self._driver_start()
        except BaseException:
            self._callbacks.stop(0)
            raise
        interval = float(self.options.get("watchdog_interval") or 0)
        if interval > 0:
            self._watchdog = threading.Thread(
                target=self._watchdog_loop, args=(interval,), name="coord-watchdog", daemon=True
            )
            self._watchdog.start()
        return self

    def close(self) -> None:
        """Resign every election, drop membership and disconnect (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._watchdog_stop.set()
        for election in list(self._elections.values()):
            try:
                election.resign()
            except Exception:  # closing must finish even if the store is unreachable
                LOG.warning("resigning %s on close failed", election.name, exc_info=True)
        try:
            self._driver_stop()
        finally:
            self._callbacks.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"coordinator {self.member_id!r} is closed")

    # ---- session --------------------------------------------------------------------------

    @property
    def session_state(self) -> SessionState:
        return self._state

    def add_session_listener(self, listener: SessionListener) -> None:
        """Call `listener(state)` on every session state change, on the callback thread."""
        self._session_listeners.append(listener)

    def remove_session_listener(self, listener: SessionListener) -> None:
        self._session_listeners.remove(listener)

    def _set_session_state(self, state: SessionState) -> None:
        """Drivers report state changes here, from their own worker thread (never from inside a
        client library callback): it applies the session policy to every election."""
        with self._state_lock:
            previous, self._state = self._state, state
        if previous == state:
            return
        LOG.info("member %s: session %s -> %s", self.member_id, previous.value, state.value)
        elections = list(self._elections.values())
        if state is SessionState.LOST:
            for election in elections:
                election._on_session_lost()
        elif state is SessionState.CONNECTED and previous is SessionState.SUSPENDED:
            for election in elections:
                election._on_resumed()
        elif state is SessionState.CONNECTED:
            for election in elections:
                election._on_new_session()
        for listener in list(self._session_listeners):
            self._callbacks.submit(listener, state)

    def _watchdog_loop(self, interval: float) -> None:
        while not self._watchdog_stop.wait(interval):
            if self._state is not SessionState.CONNECTED:
                continue
            for election in list(self._elections.values()):
                try:
                    election._on_watchdog()
                except Exception:
                    LOG.warning("watchdog check of %s failed", election.name, exc_info=True)

    # ---- members, elections, topology ----------------------------------------------------

    def members(self) -> dict[str, MemberInfo]:
        """Every member whose session is alive, by member id."""
        self._check_open()
        return self._driver_members()

    def election(self, name: str) -> Election:
        """The election called `name` (one object per name and coordinator)."""
        self._check_open()
        with self._elections_lock:
            election = self._elections.get(name)
            if election is None:
                election = self._elections[name] = self._driver_election(name)
            return election

    def elections(self) -> list[str]:
        """Names of every election that has or had candidates in this namespace."""
        self._check_open()
        return self._driver_election_names()

    @property
    def topology(self) -> TopologyStore:
        """The shared topology store of this namespace."""
        self._check_open()
        if self._topology is None:
            self._topology = TopologyStore(self._driver_record_store(), self._callbacks)
        return self._topology

    # ---- driver hooks ---------------------------------------------------------------------

    @abstractmethod
    def _driver_start(self) -> None:
        """Connect (bounded by connect_timeout), register `self.info`, set CONNECTED."""

    @abstractmethod
    def _driver_stop(self) -> None:
        """Remove membership and disconnect."""

    @abstractmethod
    def _driver_members(self) -> dict[str, MemberInfo]: ...

    @abstractmethod
    def _driver_election(self, name: str) -> Election: ...

    @abstractmethod
    def _driver_election_names(self) -> list[str]: ...

    @abstractmethod
    def _driver_record_store(self) -> RecordStoreDriver: ...
