"""The coordinator: a session with the backend, its elections, members and topology store.

`Coordinator` holds everything backend-neutral (session policy, listeners, the election
registry, the watchdog, user-callback delivery, work on many elections at once); a driver
subclasses it and implements the `_driver_*` hooks. The batch hooks (`_driver_join_many`,
`_driver_leave_many`, `_driver_read_leaders`) default to one election at a time; a driver whose
store can batch or pipeline overrides them, so a controller with thousands of switches pays one
round trip per batch, not per switch.

What every driver needs besides is here too (helpers in `coordination.driver_support`): the
executors a driver names in `EXECUTORS`, created by `start()` and stopped by `close()`; error
translation (`LIBRARY_ERRORS`, `_driver_translate_error`, `translate`, `call`, `guarded`); and
optional capabilities (`UNSUPPORTED`), whose calls raise `NotSupportedError`.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Self, TypeVar

from . import instrument
from .detector import FailureDetector
from .detector_link import DetectorLink
from .dispatch import SerialExecutor
from .driver_support import (
    NotSupportedError,
    check_capabilities,
    guarded,
    not_supported,
    translating,
)
from .election import CampaignRequest, Election, check_priority
from .errors import ClosedError, ConfigurationError, CoordinationError
from .options import Option
from .retry import retrying
from .store import RecordStoreDriver
from .topology import TopologyStore
from .types import Leadership, MemberInfo, SessionState
from .urls import BackendURL

LOG = logging.getLogger(__name__)
SessionListener = Callable[[SessionState], None]
T = TypeVar("T")


class Coordinator(ABC):
    """A member's session with a coordination backend. Use `coordination.connect()`."""

    #: Options this driver understands beyond `coordination.options.COMMON_OPTIONS`.
    OPTIONS: ClassVar[dict[str, Option]] = {}
    #: True if `_driver_evict_member` works: only then does the failure detector run.
    EVICTS: ClassVar[bool] = False
    #: The serial executors the driver runs its work on, {attribute: thread name}: `start()`
    #: creates them (before `_driver_start`), `close()` stops them in this order after
    #: `_driver_stop` (so does a failed start), then calls `_driver_disconnect`. A constructor
    #: therefore starts no thread, and a driver never stops one by hand.
    EXECUTORS: ClassVar[dict[str, str]] = {}
    #: Capabilities this driver lacks, {name: why} (`coordination.driver_support.CAPABILITIES`):
    #: their calls raise `NotSupportedError` and the conformance suite skips their tests.
    UNSUPPORTED: ClassVar[dict[str, str]] = {}
    #: The client library's exception types: `translate` raises them as
    #: `_driver_translate_error(exc, what)`, so none ever reaches a caller.
    LIBRARY_ERRORS: ClassVar[tuple[type[BaseException], ...]] = ()
    #: Transient errors `call` retries (bounded by the retry_attempts and retry_max_delay
    #: options); none by default.
    RETRIED: ClassVar[tuple[type[BaseException], ...]] = ()

    _callbacks: SerialExecutor

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_capabilities(cls.__name__, cls.UNSUPPORTED)

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
        self._executors: list[SerialExecutor] = []
        self._call_retry = retrying(int(options.get("retry_attempts", 5)),
                               float(options.get("retry_max_delay", 2.0)), self.RETRIED,
                               f"{url.scheme} operation") if self.RETRIED else None
        self._watchdog_stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        #: elections a driver step could not settle; the watchdog looks at these only
        self._unsettled_names: set[str] = set()
        self._unsettled_lock = threading.Lock()
        self._detector: DetectorLink | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> Coordinator:
        """Connect, register this member and start the watchdog; raises on failure."""
        self._start_executors()
        try:
            self._detector = DetectorLink.create(self)
            if self._detector is not None:
                self._detector.listen()  # before registering: the record advertises it
            self._driver_start()
        except BaseException:
            if self._detector is not None:
                self._detector.stop()
            self._stop_executors(0)
            raise
        if self._detector is not None:
            self._detector.attach()
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
        if self._detector is not None:  # goodbye first: peers must not take us for dead
            self._detector.stop()
        try:
            self._resign(list(self._elections.values()))
        except Exception:  # closing must finish even if the store is unreachable
            LOG.warning("resigning on close failed", exc_info=True)
        try:
            self._driver_stop()
        finally:
            self._stop_executors()

    def _start_executors(self) -> None:
        """The driver's executors (`EXECUTORS`) and the core's callback thread."""
        for attribute, name in self.EXECUTORS.items():
            executor = SerialExecutor(f"{name}[{self.member_id}]")
            setattr(self, attribute, executor)
            self._executors.append(executor)
        self._callbacks = SerialExecutor(f"coord-callbacks[{self.member_id}]")

    def _stop_executors(self, timeout: float = 5.0) -> None:
        """Stop the driver's executors (finishing what is queued, each bounded by `timeout`),
        disconnect the driver, then stop the callback thread."""
        try:
            for executor in self._executors:
                executor.stop(timeout)
            self._driver_disconnect()
        finally:
            if hasattr(self, "_callbacks"):
                self._callbacks.stop(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failure_detector(self) -> FailureDetector | None:
        """This member's peer failure detector, if it runs (docs/failure-detector.md)."""
        return self._detector.detector if self._detector is not None else None

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"coordinator {self.member_id!r} is closed")

    def _check_supported(self, capability: str) -> None:
        """`NotSupportedError` if this driver declared `capability` unsupported."""
        if capability in self.UNSUPPORTED:
            raise self._unsupported(capability)

    def _unsupported(self, capability: str) -> NotSupportedError:
        """The error for a call of `capability`, with the driver's reason."""
        return not_supported(self.url.scheme, capability,
                             self.UNSUPPORTED.get(capability, "not implemented"))

    # ---- for drivers: errors --------------------------------------------------------------

    def translate(self, func: Callable[..., T], what: str = "operation") -> Callable[..., T]:
        """`func`, raising the client library's errors (`LIBRARY_ERRORS`) as the project's own
        (`_driver_translate_error`); `what` names the operation in messages."""
        return translating(func, self.LIBRARY_ERRORS,
                           lambda exc: self._driver_translate_error(exc, what))

    def call(self, func: Callable[[], T], what: str = "operation") -> T:
        """Run a store operation now: transient errors (`RETRIED`) retried within the retry
        options, library errors translated."""
        if self._call_retry is not None:
            func = self._call_retry(func)
        return self.translate(func, what)()

    def guarded(self, func: Callable[..., Any], what: str,
                quiet: tuple[type[BaseException], ...] = ()) -> Callable[..., None]:
        """`func` for a driver's own thread (a timer, a queued step): library and coordination
        errors are logged (`quiet` ones at DEBUG), never raised, so the thread goes on."""
        return guarded(self.translate(func, what), f"member {self.member_id}: {what}",
                       (CoordinationError,), quiet, LOG)

    def _driver_translate_error(self, exc: BaseException, what: str) -> BaseException:
        """The project's error (a `CoordinationError`) for a library error raised by `what`.
        Override to map the library's errors precisely (session expiry to `SessionLostError`,
        time-outs to `OperationTimeoutError`, ...)."""
        return CoordinationError(f"{self.url.scheme}: {what} failed: {exc!r}")

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
            self._on_new_session(elections)
        for listener in list(self._session_listeners):
            self._callbacks.submit(listener, state)

    def _on_new_session(self, elections: list[Election]) -> None:
        """Re-enter every campaign (in batches) and re-observe the rest."""
        joins = [(e, e._campaign.priority) for e in elections if e._campaign is not None]
        if joins:
            try:
                self._driver_join_many(joins)
            except CoordinationError as exc:  # the watchdog tries again
                LOG.warning("member %s: re-campaigning after a new session failed: %s",
                            self.member_id, exc)
                for election, _ in joins:
                    election._unsettled()
        for election in elections:
            if election._campaign is None and election._listeners:
                election._driver_observe()

    # ---- watchdog -------------------------------------------------------------------------

    def _mark_unsettled(self, name: str) -> None:
        with self._unsettled_lock:
            self._unsettled_names.add(name)

    def _watchdog_loop(self, interval: float) -> None:
        while not self._watchdog_stop.wait(interval):
            if self._state is not SessionState.CONNECTED:
                continue
            try:
                self._driver_watchdog()
            except Exception:
                LOG.warning("watchdog pass failed", exc_info=True)

    def _driver_watchdog(self) -> None:
        """One watchdog pass: re-evaluate the elections a driver step left unsettled (none in
        the steady state, so the pass costs nothing however many elections there are). A driver
        with a cheap whole-store check of its own may extend it."""
        with self._unsettled_lock:
            names, self._unsettled_names = self._unsettled_names, set()
        for name in names:
            election = self._elections.get(name)
            if election is not None:
                election._on_watchdog()

    # ---- members, elections, topology ----------------------------------------------------

    def members(self) -> dict[str, MemberInfo]:
        """Every member whose session is alive, by member id."""
        self._check_open()
        self._check_supported("members")
        with instrument.timed(self.url.scheme, "members"):
            return self._driver_members()

    def watch_members(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call `callback()` (on a driver thread: keep it short) whenever the member list may
        have changed, where the driver can push that; returns a function that stops it, or
        None if it cannot (then re-read `members()` on other events, e.g. leader changes)."""
        self._check_open()
        return self._driver_watch_members(callback)

    def election(self, name: str) -> Election:
        """The election called `name` (one object per name and coordinator)."""
        self._check_open()
        with self._elections_lock:
            election = self._elections.get(name)
            if election is None:
                election = self._elections[name] = self._driver_election(name)
            return election

    def campaign_many(self, requests: Iterable[CampaignRequest]) -> None:
        """Campaign in many elections at once: `Election.campaign` for each request, with the
        candidacies created in batches (one store round trip per batch where the driver can).

        Every request is checked before anything changes (a bad priority, a duplicate, an
        election already campaigned in: ConfigurationError, nothing joined). Returns once every
        candidacy is in the store. A store error is raised after the campaigns are recorded:
        as with `campaign`, they are re-entered when a new session is up.
        """
        self._check_open()
        requests = list(requests)
        seen: set[str] = set()
        for request in requests:
            check_priority(request.priority)
            if request.election in seen:
                raise ConfigurationError(f"election {request.election!r} requested twice")
            seen.add(request.election)
        elections = [self.election(r.election) for r in requests]
        busy = [e.name for e in elections if e._campaign is not None]
        if busy:
            raise ConfigurationError(f"already campaigning in {busy[0]!r}; resign first")
        for election, request in zip(elections, requests, strict=True):
            election._begin_campaign(request)
        if elections:
            with instrument.timed(self.url.scheme, "campaign"):
                self._driver_join_many([(e, r.priority) for e, r in zip(elections, requests,
                                                                        strict=True)])

    def resign_many(self, names: Iterable[str]) -> None:
        """Leave many elections at once (as `Election.resign` for each; unknown names and
        elections not campaigned in are ignored). Successors take over at once."""
        with self._elections_lock:
            elections = [self._elections[n] for n in names if n in self._elections]
        self._resign(elections)

    def _resign(self, elections: list[Election]) -> None:
        leaving = [e for e in elections if e._end_campaign()]
        if leaving:
            with instrument.timed(self.url.scheme, "resign"):
                self._driver_leave_many(leaving)

    def read_leaders(self, names: Iterable[str]) -> dict[str, Leadership | None]:
        """The leader of each named election, as the store says now (`Election.leader` for
        each, read in batches where the driver can)."""
        self._check_open()
        elections = [self.election(n) for n in dict.fromkeys(names)]
        if not elections:
            return {}
        with instrument.timed(self.url.scheme, "read_leaders"):
            return self._driver_read_leaders(elections)

    def elections(self) -> list[str]:
        """Names of every election that has or had candidates in this namespace."""
        self._check_open()
        self._check_supported("election_names")
        return self._driver_election_names()

    @property
    def topology(self) -> TopologyStore:
        """The shared topology store of this namespace."""
        self._check_open()
        self._check_supported("topology")
        if self._topology is None:
            self._topology = TopologyStore(self._driver_record_store(), self._callbacks,
                                           backend=self.url.scheme)
        return self._topology

    # ---- for drivers: the elections this member has opened ---------------------------------

    def existing_election(self, name: str) -> Election | None:
        """The election object called `name` if this member has opened it (never creates one:
        for drivers that hear about every election in the store)."""
        return self._elections.get(name)

    def existing_elections(self) -> list[Election]:
        """Every election object this member has opened, campaigning or observing (a copy)."""
        with self._elections_lock:
            return list(self._elections.values())

    # ---- driver hooks ---------------------------------------------------------------------

    @abstractmethod
    def _driver_start(self) -> None:
        """Connect (bounded by connect_timeout), register `self.info`, set CONNECTED."""

    @abstractmethod
    def _driver_stop(self) -> None:
        """Remove membership and stop the driver's watches (its executors still run)."""

    def _driver_disconnect(self) -> None:
        """Close the client connection, once the executors have stopped (after `_driver_stop`,
        or after a failed `_driver_start`); must tolerate a connection never opened."""
        return  # default: nothing to close

    @abstractmethod
    def _driver_election(self, name: str) -> Election: ...

    # ---- optional capabilities (list the ones left out in UNSUPPORTED) ---------------------

    def _driver_members(self) -> dict[str, MemberInfo]:
        """Every member whose session is alive (capability "members")."""
        raise self._unsupported("members")

    def _driver_election_names(self) -> list[str]:
        """Names of the elections with candidates (capability "election_names")."""
        raise self._unsupported("election_names")

    def _driver_record_store(self) -> RecordStoreDriver:
        """The raw store behind `topology` (capability "topology"); called once."""
        raise self._unsupported("topology")

    # ---- batch hooks: override to batch or pipeline -----------------------------------------

    def _driver_join_many(self, joins: list[tuple[Election, int]]) -> None:
        """Create a candidacy for each (election, priority); as `Election._driver_join`."""
        for election, priority in joins:
            election._driver_join(priority)

    def _driver_leave_many(self, elections: list[Election]) -> None:
        """Remove this member's candidacy from each election; as `Election._driver_leave`."""
        errors = []
        for election in elections:
            try:
                election._driver_leave()
            except CoordinationError as exc:  # leave the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]

    def _driver_read_leaders(self, elections: list[Election]) -> dict[str, Leadership | None]:
        """The leader of each election; as `Election._driver_read_leader`."""
        return {e.name: e._driver_read_leader() for e in elections}

    # ---- failure detector hooks -------------------------------------------------------------

    def _driver_evict_member(self, member_id: str, incarnation: str | None = None) -> None:
        """Tell the store that `member_id` is dead, so every election it led moves on now
        (not when its session expires). With `incarnation`, only if its record still carries
        that detector incarnation (a restarted member is left alone). A driver that can do
        this sets `EVICTS`; the default does nothing."""
        LOG.debug("member %s: this driver cannot evict %s; its session timeout decides",
                  self.member_id, member_id)

    def _driver_watch_members(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        """Call `callback()` (from any thread, without blocking) whenever the member list may
        have changed, for as long as the coordinator lives; returns a function that stops it,
        or None if the driver has no such watch (the detector then re-reads the list at every
        new session, and learns peers from their own connections): capability
        "watch_members"."""
        return None
