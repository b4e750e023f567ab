"""The ZooKeeper coordinator: one kazoo session, its state policy, membership, and the hooks
that route election and topology work to `election` and `store`.

Threads: elections run on `worker` (in batches, see `election.ElectionEngine`), topology watches
on `watch_worker`, session state on `session_worker`, so a state change is never queued behind a
call waiting out an outage (a leader must hear SUSPENDED at once, to hold). Nothing blocking ever
runs on kazoo's own callback thread (kazoo #381/#426).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from kazoo.client import KazooClient
from kazoo.exceptions import (
    AuthFailedError,
    BadVersionError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry
from kazoo.security import make_digest_acl

from coordination.api import Coordinator
from coordination.dispatch import SerialExecutor
from coordination.driver_support import decode_members
from coordination.election import Election
from coordination.errors import (
    BackendConnectionError,
    ConfigurationError,
    CoordinationError,
    OperationTimeoutError,
    SessionLostError,
)
from coordination.names import election_name_problem
from coordination.options import Option
from coordination.store import RecordStoreDriver
from coordination.types import Leadership, MemberInfo, SessionState
from coordination.urls import BackendURL

from .client import MULTI_SIZE, TRANSIENT, BoundedClient, KazooLog, make_handler
from .election import ElectionEngine, ZooKeeperElection
from .eviction import evict_member
from .store import ZooKeeperRecordStore

LOG = logging.getLogger(__name__)
DEFAULT_PORT = 2181
DEFAULT_PREFIX = "/coordination"


class ZooKeeperCoordinator(Coordinator):
    """A member's kazoo session. See the module docstring for the znode layout."""

    EVICTS: ClassVar[bool] = True
    # elections run on `worker`, topology watches on `watch_worker`, and session state on
    # `session_worker`, so a state change is never queued behind a call waiting out an
    # outage (a leader must hear SUSPENDED at once, to hold)
    EXECUTORS: ClassVar[dict[str, str]] = {
        "session_worker": "zk-session", "worker": "zk-driver", "watch_worker": "zk-watches"}
    LIBRARY_ERRORS: ClassVar[tuple[type[BaseException], ...]] = (KazooException,)
    #: a call that hit its deadline is not retried: it waited enough
    RETRIED: ClassVar[tuple[type[BaseException], ...]] = (ConnectionLoss,)
    session_worker: SerialExecutor
    worker: SerialExecutor
    watch_worker: SerialExecutor
    OPTIONS: ClassVar[dict[str, Option]] = {
        "auth": Option(str, "", "digest credentials 'user:password' (or 'digest:user:password'); "
                       "znodes created get an ACL for that identity only"),
        "handler": Option(str, "auto", "kazoo handler: auto (eventlet when monkey-patched), "
                          "threading or eventlet"),
    }

    def __init__(self, url: BackendURL, member_id: str, options: dict[str, Any]) -> None:
        super().__init__(url, member_id, options)
        if not url.hosts:
            raise ConfigurationError(f"{url}: a zookeeper URL needs at least one host")
        self.prefix = url.path or DEFAULT_PREFIX
        self.hosts = url.host_string(DEFAULT_PORT)
        self.op_timeout = float(options["operation_timeout"])
        self.session_timeout = float(options["session_timeout"])
        auth = options.get("auth") or (
            f"{url.username}:{url.password or ''}" if url.username else ""
        )
        auth = auth.removeprefix("digest:")
        if auth and ":" not in auth:
            raise ConfigurationError("option auth must be 'user:password'")
        self._auth = auth
        self._session_id: int | None = None
        self._suspended_at: int = 0
        self._records: ZooKeeperRecordStore | None = None
        self._member_callbacks: list[Callable[[], None]] = []
        acl = None
        if auth:
            user, _, password = auth.partition(":")
            acl = [make_digest_acl(user, password, all=True)]
        handler = make_handler(options["handler"])
        self._kazoo_log = KazooLog()
        self.client = KazooClient(
            hosts=self.hosts,
            logger=self._kazoo_log,
            timeout=self.session_timeout,
            handler=handler,
            auth_data=[("digest", auth)] if auth else None,
            default_acl=acl,
            # reconnect fast and forever (the session policy, not kazoo, decides what a long
            # outage means); commands are retried by our own bounded tenacity policy
            connection_retry=KazooRetry(max_tries=-1, delay=0.05, backoff=2,
                                        max_delay=max(0.2, min(1.0, self.session_timeout / 4)),
                                        sleep_func=handler.sleep_func),
            command_retry=KazooRetry(max_tries=0, sleep_func=handler.sleep_func),
        )
        self.zk = BoundedClient(self.client, self.op_timeout)
        self.engine = ElectionEngine(self)

    # ---- errors ---------------------------------------------------------------------------

    def _driver_translate_error(self, exc: BaseException, what: str = "") -> BaseException:
        """The project's own error for a kazoo error (others are returned unchanged)."""
        if isinstance(exc, CoordinationError):
            return exc
        if isinstance(exc, SessionExpiredError):
            return SessionLostError(f"zookeeper session expired: {exc}")
        if isinstance(exc, (NoAuthError, AuthFailedError)):
            return CoordinationError(
                f"zookeeper refused access under {self.prefix} ({type(exc).__name__}): "
                "check the auth option and the znodes' ACLs")
        if isinstance(exc, TRANSIENT):
            return OperationTimeoutError(f"zookeeper at {self.hosts}: {exc!r}")
        if isinstance(exc, KazooException):
            return CoordinationError(f"zookeeper error: {exc!r}")
        return exc

    # ---- lifecycle ------------------------------------------------------------------------

    def _driver_start(self) -> None:
        timeout_error = self.client.handler.timeout_exception  # differs per kazoo handler
        try:
            self.client.start(timeout=float(self.options["connect_timeout"]))
        except (timeout_error, KazooTimeoutError, KazooException, OSError, ValueError) as exc:
            cause = self._kazoo_log.last_problem or str(exc) or type(exc).__name__
            raise BackendConnectionError(
                f"could not connect to zookeeper at {self.hosts} within "
                f"{self.options['connect_timeout']:g} s: {cause}") from None
        self.client.add_listener(self._on_kazoo_state)
        self.session_worker.call(self.translate(self._new_session, "register"),
                                 timeout=self.op_timeout * 3)

    def _driver_disconnect(self) -> None:
        try:
            self.client.stop()
            self.client.close()
        except Exception:
            LOG.debug("stopping the kazoo client failed", exc_info=True)

    def _driver_stop(self) -> None:
        for watch in list(self._records.watches if self._records else ()):
            watch.cancel()
        try:
            self.worker.call(self._unregister, timeout=self.op_timeout)
        except Exception:
            LOG.debug("removing membership on close failed", exc_info=True)

    # ---- session policy -------------------------------------------------------------------

    def _on_kazoo_state(self, state: str) -> None:
        # kazoo's thread: never block here (kazoo #381/#426); hand over to our own thread.
        self.session_worker.submit(self._apply_state, state)

    def _apply_state(self, state: str) -> None:
        if state == KazooState.SUSPENDED:
            self._suspended_at += 1
            self._set_session_state(SessionState.SUSPENDED)
            timer = threading.Timer(self.session_timeout, self.session_worker.submit,
                                    (self._suspension_expired, self._suspended_at))
            timer.daemon = True
            timer.start()
        elif state == KazooState.LOST:
            self._session_id = None
            self._set_session_state(SessionState.LOST)
        elif state == KazooState.CONNECTED:
            session = (self.client.client_id or (None,))[0]
            if session is not None and session == self._session_id \
                    and self.session_state is SessionState.SUSPENDED:
                self._set_session_state(SessionState.CONNECTED)
                self._catch_up()
            else:
                if self.session_state is not SessionState.LOST:
                    self._set_session_state(SessionState.LOST)
                self.guarded(self._new_session, "re-registering after reconnect (retried at "
                             "the next connection event or watchdog tick)")()

    def _suspension_expired(self, generation: int) -> None:
        """Suspended for a whole session timeout: the server has expired us, so act as LOST
        now rather than when the connection returns (Curator's rule)."""
        if generation == self._suspended_at and self.session_state is SessionState.SUSPENDED:
            LOG.warning("member %s: suspended for %.1f s, treating the session as lost",
                        self.member_id, self.session_timeout)
            self._session_id = None
            self._set_session_state(SessionState.LOST)

    def _new_session(self) -> None:
        self.engine.forget_directories()
        self._register()
        client_id = self.client.client_id
        if client_id is None:  # the session expired while we registered: the next one retries
            raise ConnectionLoss("the session ended while registering")
        self._session_id = client_id[0]
        self._set_session_state(SessionState.CONNECTED)
        self._catch_up()

    def _catch_up(self) -> None:
        """After a reconnect: the candidacy deletes still owed, and the record watches re-read
        what they may have missed."""
        self.engine.retry_deletes()
        if self._records is not None:
            for watch in list(self._records.watches):
                watch.submit(watch.resync, True)

    def _member_path(self) -> str:
        return f"{self.prefix}/members/{quote(self.member_id, safe='')}"

    def _register(self) -> None:
        """Create our ephemeral member znode, replacing one a dead predecessor left."""
        data = json.dumps(self.info.to_dict()).encode()
        path = self._member_path()
        self.zk.ensure_path(f"{self.prefix}/members")
        for _ in range(3):
            try:
                self.zk.create(path, data, ephemeral=True)
                self._watch_registration()
                return
            except NodeExistsError:
                try:
                    _, stat = self.zk.get(path)
                    if stat.ephemeralOwner == (self.client.client_id or (None,))[0]:
                        self._watch_registration()
                        return
                    LOG.warning("member id %r was registered by another session; taking it over",
                                self.member_id)
                    self.zk.delete(path, stat.version)
                except (NoNodeError, BadVersionError):
                    continue
        raise CoordinationError(f"could not register member {self.member_id!r}")

    def _watch_registration(self) -> None:
        """Watch our own member znode (and the member list, for the failure detector)."""
        self.zk.exists(self._member_path(), watch=self._on_member_event)
        if self._member_callbacks:
            self.client.get_children_async(f"{self.prefix}/members",
                                           watch=self._on_members_changed)

    def _on_member_event(self, _event: Any) -> None:
        # kazoo's thread: queue only
        self.session_worker.submit(self._check_registration)

    def _check_registration(self) -> None:
        """Our member znode changed. Deleted while our session lives means a peer's failure
        detector declared us dead and evicted us (our candidacies are gone too): act as if
        the session was lost (revoking every leadership through the listeners) and start
        over, re-campaigning everywhere."""
        if self.closed or self.session_state is not SessionState.CONNECTED:
            return
        try:
            stat = self.zk.exists(self._member_path(), watch=self._on_member_event)
        except KazooException as exc:
            LOG.debug("member %s: checking our registration failed: %s", self.member_id, exc)
            return
        if stat is not None:
            if stat.ephemeralOwner != (self.client.client_id or (None,))[0]:
                LOG.error("member %s: our member record was taken over by another session: two "
                          "controllers with the same member id?", self.member_id)
            return
        LOG.warning("member %s: our member record was removed while our session lives: a "
                    "peer declared us dead; giving up every leadership and re-campaigning",
                    self.member_id)
        self._set_session_state(SessionState.LOST)
        self._start_over()

    def _start_over(self) -> None:
        """Register and re-campaign on the session we still have; if the store does not let
        us now, try again shortly (no connection event will come to retry it for us)."""
        if self.closed or self.session_state is not SessionState.LOST \
                or self.client.state != KazooState.CONNECTED:
            return
        try:
            self._new_session()
        except (KazooException, CoordinationError) as exc:
            LOG.warning("member %s: re-registering failed (%s); trying again", self.member_id,
                        self._driver_translate_error(exc))
            timer = threading.Timer(min(1.0, self.session_timeout / 4),
                                    self.session_worker.submit, (self._start_over,))
            timer.daemon = True
            timer.start()

    def _on_members_changed(self, _event: Any) -> None:
        # kazoo's thread: re-arm (asynchronously) and tell the detector; never block here
        if self.closed:
            return
        self.client.get_children_async(f"{self.prefix}/members", watch=self._on_members_changed)
        for callback in list(self._member_callbacks):
            callback()

    def _unregister(self) -> None:
        try:
            _, stat = self.zk.get(self._member_path())
            if stat.ephemeralOwner == (self.client.client_id or (None,))[0]:
                self.zk.delete(self._member_path(), stat.version)
        except KazooException:
            pass

    # ---- hooks ----------------------------------------------------------------------------

    def _driver_members(self) -> dict[str, MemberInfo]:
        def op() -> dict[str, MemberInfo]:
            base = f"{self.prefix}/members"
            try:
                self.zk.sync(base)
                names = self.zk.get_children(base)
            except NoNodeError:
                return {}
            fetches = {n: self.zk.get_async(f"{base}/{n}") for n in names}
            records = []
            for name, fetch in sorted(fetches.items()):
                try:
                    records.append((unquote(name), fetch.get()[0]))
                except NoNodeError:
                    continue
            return decode_members(records)

        return self.call(op, "list members")

    def _driver_election(self, name: str) -> Election:
        return ZooKeeperElection(self, name)

    def _driver_watch_members(self, callback: Callable[[], None]) -> Callable[[], None] | None:
        self._member_callbacks.append(callback)
        self.client.get_children_async(f"{self.prefix}/members", watch=self._on_members_changed)
        return lambda: self._member_callbacks.remove(callback)

    def _driver_evict_member(self, member_id: str, incarnation: str | None = None) -> None:
        self.call(lambda: evict_member(self, member_id, incarnation), "evict member")

    def _driver_join_many(self, joins: list[tuple[Election, int]]) -> None:
        own = [(e, p) for e, p in joins if isinstance(e, ZooKeeperElection)]
        on_driver_thread = self.session_worker.in_executor() or self.worker.in_executor()
        future = self.engine.join(own, wait=not on_driver_thread)
        if future is None:
            return  # the session policy re-joining: the batch runs on its own
        # each batch of MULTI_SIZE costs a few round trips, each bounded by the op timeout
        timeout = self.op_timeout * 3 * max(1, math.ceil(len(own) / MULTI_SIZE))
        try:
            future.result(timeout)
        except TimeoutError:
            raise OperationTimeoutError(
                f"zookeeper at {self.hosts}: {len(own)} candidacies not created within "
                f"{timeout:.0f} s") from None

    def _driver_leave_many(self, elections: list[Election]) -> None:
        own = [e for e in elections if isinstance(e, ZooKeeperElection)]
        self.translate(self.engine.leave, "resign")(own)

    def _driver_read_leaders(self, elections: list[Election]) -> dict[str, Leadership | None]:
        own = [e for e in elections if isinstance(e, ZooKeeperElection)]
        return self.translate(self.engine.read_leaders, "read leaders")(own)

    def _driver_election_names(self) -> list[str]:
        def op() -> list[str]:
            try:
                names = self.zk.get_children(f"{self.prefix}/elections")
            except NoNodeError:
                return []
            return sorted(n for n in names if election_name_problem(n) is None)

        return self.call(op, "list elections")

    def _driver_record_store(self) -> RecordStoreDriver:
        if self._records is None:
            self._records = ZooKeeperRecordStore(self)
        return self._records
