"""The etcd coordinator: one lease-backed session, its state policy, membership, and the hooks
that route election and topology work to `election` and `store`.

Session: one lease per coordinator, kept alive by a thread of ours every TTL/3. A keep-alive
that fails (every endpoint tried) makes the session SUSPENDED; a TTL without any answered
keep-alive, or etcd saying the lease is gone, makes it LOST: we revoke the old lease if we can,
grant a new one, re-register and report CONNECTED, and the core re-campaigns. Session changes
are applied on that keep-alive thread at once (never on a transport thread, and never queued
behind an election step that may be waiting for etcd); the election work they trigger is
queued on the driver's worker thread, where `election.ElectionEngine` runs it in batches.

Threads: elections on `worker` (whose batches send their txns through a pool of 4), topology
watches on `watch_worker`, the session on the keep-alive thread; transports' reader threads only
queue work.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from coordination.api import Coordinator
from coordination.dispatch import SerialExecutor
from coordination.driver_support import decode_members
from coordination.election import Election
from coordination.errors import (
    BackendConnectionError,
    ConfigurationError,
    CoordinationError,
    OperationTimeoutError,
)
from coordination.eventloop import eventlet_patched
from coordination.options import Option
from coordination.retry import retrying
from coordination.store import RecordStoreDriver
from coordination.types import Leadership, MemberInfo, SessionState
from coordination.urls import BackendURL

from .client import (
    ClientConfig,
    Compare,
    EtcdAuthFailed,
    EtcdClient,
    EtcdClientError,
    EtcdUnavailable,
    Op,
    Put,
    RangeResult,
    TxnResult,
    prefix_end,
)
from .election import ElectionEngine, EtcdElection
from .eviction import evict_member
from .store import EtcdRecordStore

LOG = logging.getLogger(__name__)
DEFAULT_PORT = 2379
DEFAULT_PREFIX = "/coordination"
TRANSPORTS = ("auto", "grpc", "gateway")


def choose_transport(requested: str) -> str:
    """The transport to use: as requested, or for `auto` the one that works in this process."""
    if requested not in TRANSPORTS:
        raise ConfigurationError(
            f"option transport={requested!r}: use one of {', '.join(TRANSPORTS)}")
    if requested == "auto":
        return "gateway" if eventlet_patched() else "grpc"
    if requested == "grpc" and eventlet_patched():
        LOG.warning("transport=grpc in an eventlet-patched process: gRPC streams (watches, "
                    "keep-alive) are known to hang there; prefer transport=gateway")
    return requested


def make_client(transport: str, config: ClientConfig) -> EtcdClient:
    """Build the client for `transport` ("grpc" or "gateway")."""
    if transport == "grpc":
        try:
            from .grpc_transport import GrpcClient
        except ImportError as exc:
            raise ConfigurationError(
                f"the etcd gRPC transport needs python3-etcd3 and grpcio ({exc}); install "
                "sdn-coordination[etcd], or use ?transport=gateway") from None
        return GrpcClient(config)
    try:
        from .gateway_transport import GatewayClient
    except ImportError as exc:
        raise ConfigurationError(
            f"the etcd gateway transport needs requests ({exc}); install sdn-coordination[etcd]"
        ) from None
    return GatewayClient(config)


class EtcdCoordinator(Coordinator):
    """A member's lease-backed session with etcd. See the module docstring and the package's
    for the key layout."""

    EVICTS: ClassVar[bool] = True
    EXECUTORS: ClassVar[dict[str, str]] = {"worker": "etcd-driver",
                                           "watch_worker": "etcd-watches"}
    #: every error of a transport (a bug included) leaves as a CoordinationError
    LIBRARY_ERRORS: ClassVar[tuple[type[BaseException], ...]] = (Exception,)
    worker: SerialExecutor
    watch_worker: SerialExecutor
    OPTIONS: ClassVar[dict[str, Option]] = {
        "lease_ttl": Option(float, None, "seconds the member's lease outlives its last "
                            "keep-alive (default: session_timeout); rounded up to whole seconds",
                            1.0),
        "transport": Option(str, "auto", "auto (gateway when eventlet-patched, else grpc), "
                            "grpc or gateway"),
        "tls": Option(bool, False, "talk TLS to etcd (implied by ca_cert)"),
        "ca_cert": Option(str, "", "CA bundle that signed the etcd server certificates"),
        "cert_cert": Option(str, "", "client certificate (for --client-cert-auth)"),
        "cert_key": Option(str, "", "client certificate's private key"),
        "user": Option(str, "", "etcd user (also from the URL: etcd3://user:pw@host)"),
        "password": Option(str, "", "etcd password"),
    }

    def __init__(self, url: BackendURL, member_id: str, options: dict[str, Any]) -> None:
        super().__init__(url, member_id, options)
        if not url.hosts:
            raise ConfigurationError(f"{url}: an etcd3 URL needs at least one host")
        if bool(options["cert_cert"]) != bool(options["cert_key"]):
            raise ConfigurationError("options cert_cert and cert_key go together")
        for name in ("ca_cert", "cert_cert", "cert_key"):
            if options[name] and not os.access(options[name], os.R_OK):
                raise ConfigurationError(f"option {name}={options[name]!r}: no readable file there")
        self.prefix = url.path or DEFAULT_PREFIX
        self.op_timeout = float(options["operation_timeout"])
        self.ttl = max(1, math.ceil(options["lease_ttl"] or options["session_timeout"]))
        self.transport = choose_transport(str(options["transport"]).lower())
        attempts = int(options["retry_attempts"])
        #: each try of an operation gets a share of operation_timeout, so that the retries of
        #: one call stay bounded by roughly operation_timeout in all
        self.attempt_timeout = max(0.5, self.op_timeout / attempts)
        self.config = ClientConfig(
            endpoints=tuple((host, port or DEFAULT_PORT) for host, port in url.hosts),
            tls=bool(options["tls"]),
            ca_cert=options["ca_cert"] or None,
            cert_cert=options["cert_cert"] or None,
            cert_key=options["cert_key"] or None,
            user=options["user"] or url.username or None,
            password=options["password"] or url.password or None,
            timeout=self.attempt_timeout,
        )
        self.client: EtcdClient = make_client(self.transport, self.config)
        self._retry = retrying(attempts, options["retry_max_delay"], (EtcdUnavailable,),
                               "etcd operation")
        self.lease_id: int | None = None
        self.granted_ttl = self.ttl
        self._last_ok = 0.0
        self._stop = threading.Event()
        #: set to make the keep-alive thread check the lease now (we may have been evicted)
        self._wake = threading.Event()
        self._keepalive: threading.Thread | None = None
        self._records: EtcdRecordStore | None = None
        #: held while the lease changes hands and while the worker reports leaderships, so
        #: none is reported for a session already declared lost
        self.session_lock = threading.RLock()
        self.engine = ElectionEngine(self)

    # ---- store access (worker thread or callers' threads) -----------------------------------

    def _driver_translate_error(self, exc: BaseException, what: str) -> BaseException:
        """The transports raise the project's errors; anything else is a bug, logged with its
        traceback, that must still not leak a library type."""
        LOG.error("unexpected failure in the etcd driver (%s)", what, exc_info=exc)
        return CoordinationError(f"{what}: etcd driver failure: {exc!r}")

    def txn(self, compares: Sequence[Compare], success: Sequence[Op],
            failure: Sequence[Op] = ()) -> TxnResult:
        """A txn with bounded retries of transient failures (all our txns are safe to repeat:
        conditional, or idempotent)."""
        return self._retry(self.client.txn)(compares, success, failure, self.attempt_timeout)

    def range(self, key: bytes, range_end: bytes | None = None, keys_only: bool = False
              ) -> RangeResult:
        """A linearizable read with bounded retries."""
        return self._retry(lambda: self.client.range(key, range_end, keys_only=keys_only,
                                                      timeout=self.attempt_timeout))()

    # ---- lifecycle ------------------------------------------------------------------------

    def _driver_start(self) -> None:
        try:
            self.client.connect(float(self.options["connect_timeout"]))
            self.translate(self._new_session, "register")()
        except BaseException as exc:  # the core stops the executors and disconnects
            if isinstance(exc, EtcdAuthFailed):
                who = (f"refused user {self.config.user!r}" if self.config.user else
                       "requires authentication: give user and password (options or URL)")
                raise BackendConnectionError(
                    f"etcd at {self.config.endpoint_names()} {who}: {exc}") from None
            if isinstance(exc, EtcdClientError):
                raise BackendConnectionError(
                    f"could not connect to etcd at {self.config.endpoint_names()} "
                    f"({self.transport} transport): {exc}") from None
            raise
        self._keepalive = threading.Thread(target=self._keepalive_loop,
                                           name=f"etcd-keepalive[{self.member_id}]", daemon=True)
        self._keepalive.start()

    def _driver_stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._keepalive is not None and self._keepalive is not threading.current_thread():
            self._keepalive.join(self.op_timeout)
        for watch in list(self._records.watches if self._records else ()):
            watch.cancel()
        self.engine.close()
        lease, self.lease_id = self.lease_id, None
        if lease is not None:
            try:  # deletes our member key (and any candidate key left) at once
                self.client.lease_revoke(lease, timeout=self.op_timeout)
            except EtcdClientError as exc:
                LOG.info("member %s: lease revoke on close failed (%s); it expires in %d s",
                         self.member_id, exc, self.granted_ttl)

    def _driver_disconnect(self) -> None:
        self._stop.set()
        self.engine.close()
        self.client.close()

    # ---- session --------------------------------------------------------------------------

    def _member_key(self) -> bytes:
        return f"{self.prefix}/members/{quote(self.member_id, safe='')}".encode()

    def _new_session(self) -> None:
        """Grant a lease, register on it, report CONNECTED (at start, or on the keep-alive
        thread after a loss)."""
        sent = time.monotonic()
        lease, granted = self._retry(self.client.lease_grant)(self.ttl, self.attempt_timeout)
        try:
            if self._stop.is_set():
                raise CoordinationError("the coordinator is closing")
            data = json.dumps(self.info.to_dict()).encode()
            self.txn([], [Put(self._member_key(), data, lease)])
        except BaseException:
            self._revoke_quietly(lease)
            raise
        self.lease_id, self.granted_ttl, self._last_ok = lease, granted, sent
        LOG.info("member %s: etcd lease %x (ttl %d s) via %s", self.member_id, lease, granted,
                 self.transport)
        self._set_session_state(SessionState.CONNECTED)

    def _revoke_quietly(self, lease: int) -> None:
        try:
            self.client.lease_revoke(lease, timeout=self.attempt_timeout)
        except EtcdClientError as exc:
            LOG.debug("revoking lease %x failed: %s", lease, exc)

    def _keepalive_loop(self) -> None:
        """Keep the lease alive; decide SUSPENDED / LOST / CONNECTED from the answers.

        The lease cannot expire on the server before (last answered keep-alive's send time +
        TTL), so that instant is our deadline: we declare LOST there, not later (no keep-alive
        call is allowed to run past it), so a partitioned leader stops leading before etcd
        can elect its successor.
        """
        while not self._stop.is_set():
            lease = self.lease_id
            if lease is None:
                if self._stop.wait(min(0.25, self.granted_ttl / 8)):
                    return
                self._renew()
                continue
            deadline = self._last_ok + self.granted_ttl
            healthy = self.session_state is SessionState.CONNECTED
            interval = self.granted_ttl / 3 if healthy else min(0.25, self.granted_ttl / 8)
            self._wake.wait(max(0.0, min(interval, deadline - time.monotonic())))
            self._wake.clear()
            if self._stop.is_set():
                return
            if time.monotonic() >= deadline:
                self._lose(lease, f"no keep-alive answered for {self.granted_ttl} s")
                continue
            sent = time.monotonic()
            budget = min(self.granted_ttl / 3, self.op_timeout, deadline - sent)
            try:
                remaining = self.client.lease_keepalive(lease, timeout=max(0.05, budget))
            except EtcdClientError as exc:
                if time.monotonic() < deadline:
                    if self.session_state is SessionState.CONNECTED:
                        LOG.warning("member %s: lease keep-alive failed (%s)", self.member_id, exc)
                    self._report(lease, SessionState.SUSPENDED)
                continue  # at the deadline, the next pass declares LOST
            if remaining <= 0:
                self._lose(lease, "etcd says the lease has expired or was revoked")
                continue
            self._last_ok = sent
            if self.session_state is not SessionState.CONNECTED:
                self._report(lease, SessionState.CONNECTED)

    def _report(self, lease: int, state: SessionState) -> None:
        """Report a state of lease `lease` (keep-alive thread); stale reports are dropped."""
        if lease == self.lease_id and not self._stop.is_set():
            self._set_session_state(state)

    def _lose(self, lease: int, why: str) -> None:
        """The lease is gone (or can no longer be vouched for): LOST, then a new session."""
        LOG.warning("member %s: session lost: %s", self.member_id, why)
        with self.session_lock:
            self.lease_id = None
            if not self._stop.is_set():
                self._set_session_state(SessionState.LOST)
        self._revoke_quietly(lease)  # if it still lives, its stale keys go now
        self._renew()

    def _renew(self) -> None:
        if self._stop.is_set():
            return
        try:
            self.translate(self._new_session, "new session")()
        except CoordinationError as exc:
            LOG.warning("member %s: no new etcd session yet (%s); retrying", self.member_id, exc)

    def check_lease_soon(self) -> None:
        """Something suggests our lease is gone (our candidate keys vanished: a peer's
        failure detector may have revoked it): refresh it now rather than at the next
        keep-alive, so a lost session is noticed at once."""
        self._wake.set()

    def on_session_thread(self) -> bool:
        """True on the keep-alive thread, which applies session changes (never blocks on the
        worker: election steps it triggers are queued there)."""
        return threading.current_thread() is self._keepalive

    # ---- hooks ----------------------------------------------------------------------------

    def _driver_members(self) -> dict[str, MemberInfo]:
        def op() -> dict[str, MemberInfo]:
            base = f"{self.prefix}/members/".encode()
            return decode_members(
                (unquote(kv.key[len(base):].decode("utf-8", "replace")), kv.value)
                for kv in self.range(base, prefix_end(base)).kvs)

        return self.call(op, "list members")

    def _driver_election(self, name: str) -> Election:
        return EtcdElection(self, name)

    def _driver_evict_member(self, member_id: str, incarnation: str | None = None) -> None:
        self.call(lambda: evict_member(self, member_id, incarnation), "evict member")

    # no `_driver_watch_members`: a member holds one watch in all (the election cache's); the
    # detector learns newcomers from their own connections, and re-reads members per session

    def _driver_join_many(self, joins: list[tuple[Election, int]]) -> None:
        own = [(e, p) for e, p in joins if isinstance(e, EtcdElection)]
        # the session policy re-joining (keep-alive thread) must never wait on the worker
        on_driver_thread = self.on_session_thread() or self.worker.in_executor()
        future = self.engine.join(own, wait=not on_driver_thread)
        if future is None:
            return
        # each txn of puts is bounded by the operation timeout
        timeout = self.op_timeout * (2 + math.ceil(len(own) / self.engine.max_txn_ops))
        try:
            future.result(timeout)
        except TimeoutError:
            raise OperationTimeoutError(
                f"etcd at {self.config.endpoint_names()}: {len(own)} candidacies not created "
                f"within {timeout:.0f} s") from None

    def _driver_leave_many(self, elections: list[Election]) -> None:
        own = [e for e in elections if isinstance(e, EtcdElection)]
        self.call(lambda: self.engine.leave(own), "resign")

    def _driver_read_leaders(self, elections: list[Election]) -> dict[str, Leadership | None]:
        own = [e for e in elections if isinstance(e, EtcdElection)]
        return self.call(lambda: self.engine.read_leaders(own), "read leaders")

    def _driver_election_names(self) -> list[str]:
        def op() -> list[str]:
            base = f"{self.prefix}/elections/".encode()
            names = set()
            for kv in self.range(base, prefix_end(base), keys_only=True).kvs:
                names.add(kv.key[len(base):].split(b"/", 1)[0].decode("utf-8", "replace"))
            return sorted(names)

        return self.call(op, "list elections")

    def _driver_record_store(self) -> RecordStoreDriver:
        if self._records is None:
            self._records = EtcdRecordStore(self)
        return self._records

    # ---- for tests and operators ----------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Transport, current endpoint, lease id and TTL, live watches (diagnostics)."""
        return {"transport": self.transport,
                "endpoint": self.client.name_of(self.client.current_endpoint),
                "lease_id": self.lease_id, "lease_ttl": self.granted_ttl,
                "session": self.session_state.value, "watches": self.client.watch_count()}
