"""The small etcd v3 client interface the etcd driver is written against, and what it shares.

What: value types (`KeyValue`, `Compare`, `Get`/`Put`/`Delete`/`Txn`, `TxnResult`,
`WatchEvent`), the client's own exceptions, and `EtcdClient`: range, txn (nested txns included,
etcd >= 3.3), lease grant/keep-alive/revoke and a resumable watch, over a list of endpoints with
failover. Two transports implement it: `grpc_transport.GrpcClient` (python-etcd3's generated
gRPC stubs) and `gateway_transport.GatewayClient` (etcd's grpc-gateway JSON API over
`requests`).

Why: the driver logic (elections, terms, topology) is written once; the transports differ only
in how bytes reach etcd. gRPC streams hang in an eventlet-patched process (ryu-manager), while
plain HTTP works there, so the transport is chosen at connect time, not baked into the logic.

Contract every transport keeps:
- only `EtcdClientError` subclasses escape (never grpc, requests or protobuf exceptions);
- an operation tries endpoints in turn until one answers or its timeout runs out;
- a watch survives a broken stream or a dead endpoint: it reconnects (with backoff, to the next
  endpoint) and resumes at the revision after the last one it delivered, so nothing is lost or
  repeated; if that revision was compacted it calls `on_compacted` once and ends, never
  skipping silently;
- watch callbacks run on the transport's reader thread and must not block.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from coordination.errors import BackendConnectionError, CoordinationError

LOG = logging.getLogger(__name__)
T = TypeVar("T")

#: gRPC status codes (numbers, as the gateway reports them too).
CODE_CANCELLED = 1
CODE_UNKNOWN = 2
CODE_INVALID_ARGUMENT = 3
CODE_DEADLINE_EXCEEDED = 4
CODE_NOT_FOUND = 5
CODE_PERMISSION_DENIED = 7
CODE_RESOURCE_EXHAUSTED = 8
CODE_FAILED_PRECONDITION = 9
CODE_ABORTED = 10
CODE_OUT_OF_RANGE = 11
CODE_INTERNAL = 13
CODE_UNAVAILABLE = 14
CODE_UNAUTHENTICATED = 16

#: etcd 3.4's default --max-txn-ops: operations per txn (a nested txn counts as one in its outer
#: txn, and its own compares / branches count against what the outer one leaves)
MAX_TXN_OPS = 128

_TRANSIENT_CODES = frozenset({CODE_DEADLINE_EXCEEDED, CODE_UNAVAILABLE, CODE_RESOURCE_EXHAUSTED,
                              CODE_ABORTED, CODE_CANCELLED})


# ---- errors ----------------------------------------------------------------------------------


class EtcdClientError(CoordinationError):
    """Any failure of an etcd call (the only exceptions the transports let out)."""


class EtcdUnavailable(EtcdClientError, BackendConnectionError):
    """No endpoint answered in time (dead, unreachable, without quorum): transient."""


class EtcdAuthFailed(EtcdClientError, BackendConnectionError):
    """The credentials were refused (wrong user or password, or auth needed but none given)."""


class EtcdPermissionDenied(EtcdClientError):
    """The user lacks a permission on the keys used."""


class EtcdCompacted(EtcdClientError):
    """A revision that was asked for has been compacted away."""

    def __init__(self, message: str, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class EtcdLeaseNotFound(EtcdClientError):
    """The lease does not exist (expired or revoked)."""


class EtcdTokenExpired(EtcdClientError):
    """The auth token was refused; transports re-authenticate once and retry."""


class EtcdTooManyOps(EtcdClientError):
    """A txn had more operations than the server's --max-txn-ops allows."""


def error_from_status(code: int, message: str, where: str) -> EtcdClientError:
    """Classify an etcd error (a gRPC status code and message) into our exceptions."""
    text = f"{where}: {message} (grpc code {code})"
    lowered = message.lower()
    if "invalid auth token" in lowered or (code == CODE_UNAUTHENTICATED and "token" in lowered):
        return EtcdTokenExpired(text)
    if "authentication failed" in lowered or "user name is empty" in lowered \
            or "user name not found" in lowered or code == CODE_UNAUTHENTICATED:
        return EtcdAuthFailed(text)
    if code == CODE_PERMISSION_DENIED or "permission denied" in lowered:
        return EtcdPermissionDenied(text)
    if "compacted" in lowered:
        return EtcdCompacted(text)
    if "lease not found" in lowered:
        return EtcdLeaseNotFound(text)
    if "too many operations" in lowered:
        return EtcdTooManyOps(text)
    if code in _TRANSIENT_CODES or "no leader" in lowered or "leader changed" in lowered \
            or "timed out" in lowered or "too many requests" in lowered:
        return EtcdUnavailable(text)
    return EtcdClientError(text)


# ---- value types -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


CompareTarget = Literal["create", "mod", "version", "value", "lease"]
CompareOp = Literal["==", "!=", ">", "<"]


@dataclass(frozen=True, slots=True)
class Compare:
    """`target(key) op value`; with `range_end`, it must hold for every key in the range (an
    empty range compares as one absent key: revisions and version 0)."""

    key: bytes
    target: CompareTarget
    op: CompareOp
    value: int | bytes
    range_end: bytes | None = None

    @classmethod
    def create(cls, key: bytes, op: CompareOp, revision: int, range_end: bytes | None = None
               ) -> Compare:
        return cls(key, "create", op, revision, range_end)

    @classmethod
    def mod(cls, key: bytes, op: CompareOp, revision: int) -> Compare:
        return cls(key, "mod", op, revision)


@dataclass(frozen=True, slots=True)
class Get:
    key: bytes
    range_end: bytes | None = None
    keys_only: bool = False


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    lease: int = 0
    #: ask for the key's previous version (`PutResult.prev`): tells a create from an overwrite
    prev_kv: bool = False


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes
    range_end: bytes | None = None


@dataclass(frozen=True, slots=True)
class Txn:
    """A transaction nested in another one's branch (etcd >= 3.3). Its compares are checked
    against the state before the outer txn; all its writes get the outer txn's revision."""

    compares: tuple[Compare, ...]
    success: tuple[Op, ...]
    failure: tuple[Op, ...] = ()

    def size(self) -> int:
        """What etcd counts against --max-txn-ops for it (besides its slot in the outer txn)."""
        return max(len(self.compares), len(self.success), len(self.failure))


Op = Get | Put | Delete | Txn


@dataclass(frozen=True, slots=True)
class RangeResult:
    """Keys read, and the store revision the read was served at."""

    kvs: tuple[KeyValue, ...]
    revision: int


@dataclass(frozen=True, slots=True)
class DeleteResult:
    deleted: int


@dataclass(frozen=True, slots=True)
class PutResult:
    #: the key as it was before the put (asked for with `Put.prev_kv`; None: it did not exist)
    prev: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class TxnResult:
    """`succeeded` says which branch ran; `revision` is the store revision after the txn (the
    revision of its writes if it wrote anything; a nested txn reports its outer txn's)."""

    succeeded: bool
    revision: int
    responses: tuple[OpResult, ...] = ()

    def range(self, index: int) -> RangeResult:
        result = self.responses[index]
        assert isinstance(result, RangeResult)
        return result

    def txn(self, index: int) -> TxnResult:
        result = self.responses[index]
        assert isinstance(result, TxnResult)
        return result


OpResult = RangeResult | DeleteResult | PutResult | TxnResult


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: Literal["put", "delete"]
    kv: KeyValue


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (etcd's range_end)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"
    return stripped[:-1] + bytes([stripped[-1] + 1])


# ---- endpoints and failover ------------------------------------------------------------------


@dataclass(frozen=True)
class ClientConfig:
    """Everything a transport needs to reach the cluster."""

    endpoints: tuple[tuple[str, int], ...]
    tls: bool = False
    ca_cert: str | None = None
    cert_cert: str | None = None
    cert_key: str | None = None
    user: str | None = None
    password: str | None = None
    #: per-call timeout used when a caller gives none
    timeout: float = 5.0
    extra: dict[str, object] = field(default_factory=dict)

    def endpoint_names(self) -> str:
        return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)


WatchEventsCallback = Callable[[list[WatchEvent]], None]
CompactedCallback = Callable[[int], None]
FailedCallback = Callable[[EtcdClientError], None]
CreatedCallback = Callable[[int], None]


class StreamHandle(ABC):
    """A live etcd watch stream (the client's own; the topology store's handle is
    `coordination.store.WatchHandle`); `cancel()` is idempotent and never blocks on the
    network."""

    @abstractmethod
    def cancel(self) -> None: ...


class WatchState:
    """What a transport keeps per watch: what to watch, where to resume, whom to call."""

    def __init__(
        self,
        key: bytes,
        range_end: bytes | None,
        start_revision: int,
        on_events: WatchEventsCallback,
        on_compacted: CompactedCallback,
        on_failed: FailedCallback | None = None,
        on_created: CreatedCallback | None = None,
    ) -> None:
        self.key = key
        self.range_end = range_end
        #: the revision to (re)start from: one past the last revision delivered; 0 = "now"
        self.next_revision = start_revision
        self.on_events = on_events
        self.on_compacted = on_compacted
        self.on_failed = on_failed
        self.on_created = on_created
        self.cancelled = False
        self.finished = False

    def created(self, revision: int) -> None:
        """The server registered the watch at store revision `revision`; it sends the events
        after it. A watch started "now" resumes from there if its stream breaks later; the
        first registration is reported to `on_created`."""
        if self.cancelled or self.finished:
            return
        if self.next_revision == 0:
            self.next_revision = revision + 1
        callback, self.on_created = self.on_created, None
        if callback is not None:
            try:
                callback(revision)
            except Exception:
                LOG.exception("etcd watch creation callback failed")

    def deliver(self, events: list[WatchEvent], progress_revision: int = 0) -> None:
        """Hand events on (in order) and move the resume point past them."""
        if self.cancelled or self.finished:
            return
        if events:
            self.next_revision = max(self.next_revision, events[-1].kv.mod_revision + 1)
            try:
                self.on_events(events)
            except Exception:  # a faulty callback must not kill the reader
                LOG.exception("etcd watch callback failed")
        elif progress_revision:
            self.next_revision = max(self.next_revision, progress_revision + 1)

    def compacted(self, compact_revision: int) -> None:
        """The resume point is gone: say so once and end this watch."""
        if self.cancelled or self.finished:
            return
        self.finished = True
        try:
            self.on_compacted(compact_revision)
        except Exception:
            LOG.exception("etcd watch compaction callback failed")

    def failed(self, error: EtcdClientError) -> None:
        """A permanent failure (e.g. permission denied): say so once and end this watch."""
        if self.cancelled or self.finished:
            return
        self.finished = True
        LOG.error("etcd watch on %r ended: %s", self.key, error)
        if self.on_failed is not None:
            try:
                self.on_failed(error)
            except Exception:
                LOG.exception("etcd watch failure callback failed")

    @property
    def live(self) -> bool:
        return not (self.cancelled or self.finished)


class Backoff:
    """Jittered exponential delay for reconnect loops: bounded per step, reset on success."""

    def __init__(self, first: float = 0.05, maximum: float = 1.0) -> None:
        self.first = first
        self.maximum = maximum
        self._next = first

    def reset(self) -> None:
        self._next = self.first

    def next(self) -> float:
        delay = self._next * (0.5 + random.random() / 2)
        self._next = min(self.maximum, self._next * 2)
        return delay


class EtcdClient(ABC):
    """The operations the driver uses, against a list of endpoints with failover.

    Subclasses implement the per-endpoint `_*_at` calls; this class picks the endpoint, moves on
    to the next one when an endpoint is unavailable (bounded by the call's timeout), and
    re-authenticates once when the auth token has expired.
    """

    def __init__(self, config: ClientConfig) -> None:
        if not config.endpoints:
            raise ValueError("no etcd endpoints")
        self.config = config
        self._current = 0
        self._lock = threading.Lock()
        self._closed = False

    # ---- endpoint selection ---------------------------------------------------------------

    @property
    def current_endpoint(self) -> int:
        return self._current

    def _endpoint_failed(self, index: int, error: EtcdClientError) -> None:
        """Move away from endpoint `index` (only if it is still the current one)."""
        with self._lock:
            if self._current == index and len(self.config.endpoints) > 1:
                self._current = (index + 1) % len(self.config.endpoints)
                LOG.info("etcd endpoint %s failed (%s); switching to %s",
                         self.name_of(index), error, self.name_of(self._current))
        self._on_endpoint_failed(index, error)

    def _on_endpoint_failed(self, index: int, error: EtcdClientError) -> None:
        """Hook: a transport may reset its connection to `index` here."""
        LOG.debug("etcd endpoint %s marked failed: %s", self.name_of(index), error)

    def name_of(self, index: int) -> str:
        host, port = self.config.endpoints[index]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def _failover(self, call: Callable[[int, float], T], timeout: float | None, what: str) -> T:
        """Run `call(endpoint_index, attempt_timeout)` on the current endpoint, then the others,
        until one succeeds or every endpoint failed once / the timeout ran out."""
        if self._closed:
            raise EtcdClientError(f"{what}: the etcd client is closed")
        total = self.config.timeout if timeout is None else timeout
        deadline = time.monotonic() + total
        count = len(self.config.endpoints)
        errors: list[str] = []
        reauthenticated = False
        start = self._current
        tried = 0
        while tried < count:
            index = (start + tried) % count
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            attempt_timeout = max(remaining / (count - tried), min(remaining, 0.2))
            try:
                return call(index, attempt_timeout)
            except EtcdTokenExpired as exc:
                if reauthenticated or not self.config.user:
                    raise EtcdAuthFailed(str(exc)) from None
                reauthenticated = True
                try:
                    self._authenticate(index, attempt_timeout)
                except EtcdUnavailable as again:
                    errors.append(f"{self.name_of(index)}: {again}")
                    self._endpoint_failed(index, again)
                    tried += 1
                continue  # the same endpoint again, with a fresh token
            except EtcdUnavailable as exc:
                errors.append(f"{self.name_of(index)}: {exc}")
                self._endpoint_failed(index, exc)
                tried += 1
        detail = "; ".join(errors) or f"no attempt fitted in {total:.2f} s"
        raise EtcdUnavailable(
            f"{what}: no etcd endpoint answered within {total:.2f} s "
            f"(endpoints {self.config.endpoint_names()}): {detail}")

    # ---- public operations ----------------------------------------------------------------

    def connect(self, timeout: float) -> None:
        """Reach some endpoint (and authenticate) within `timeout`, retrying the whole list.

        Raises `EtcdUnavailable` naming every endpoint and its last error, or `EtcdAuthFailed`.
        """
        deadline = time.monotonic() + timeout
        backoff = Backoff(0.05, 0.5)
        last: dict[str, str] = {}
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for index in range(len(self.config.endpoints)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    self._probe_at(index, remaining)
                    if self.config.user:
                        self._authenticate(index, max(0.1, deadline - time.monotonic()))
                    with self._lock:
                        self._current = index
                    return
                except EtcdUnavailable as exc:
                    last[self.name_of(index)] = str(exc)
            time.sleep(min(backoff.next(), max(0.0, deadline - time.monotonic())))
        detail = "; ".join(f"{name}: {err}" for name, err in last.items()) or "no attempt made"
        raise EtcdUnavailable(
            f"could not reach etcd at {self.config.endpoint_names()} within {timeout:.1f} s "
            f"({detail})")

    def range(self, key: bytes, range_end: bytes | None = None, *, keys_only: bool = False,
              timeout: float | None = None) -> RangeResult:
        """Read a key or a range (linearizable)."""
        return self._failover(lambda i, t: self._range_at(i, Get(key, range_end, keys_only), t),
                              timeout, "range")

    def txn(self, compares: Sequence[Compare], success: Sequence[Op],
            failure: Sequence[Op] = (), timeout: float | None = None) -> TxnResult:
        """One atomic transaction; its `revision` is the store revision after it ran."""
        return self._failover(lambda i, t: self._txn_at(i, compares, success, failure, t),
                              timeout, "txn")

    def lease_grant(self, ttl: int, timeout: float | None = None) -> tuple[int, int]:
        """A new lease: (id, granted ttl in seconds)."""
        return self._failover(lambda i, t: self._lease_grant_at(i, ttl, t), timeout, "lease grant")

    def lease_keepalive(self, lease_id: int, timeout: float | None = None) -> int:
        """Refresh a lease once; returns its remaining TTL, 0 if it no longer exists."""
        return self._failover(lambda i, t: self._lease_keepalive_at(i, lease_id, t), timeout,
                              "lease keep-alive")

    def lease_revoke(self, lease_id: int, timeout: float | None = None) -> None:
        """Revoke a lease (deleting its keys); an unknown lease is not an error."""
        def call(index: int, attempt: float) -> None:
            try:
                self._lease_revoke_at(index, lease_id, attempt)
            except EtcdLeaseNotFound:
                pass

        self._failover(call, timeout, "lease revoke")

    @abstractmethod
    def watch(self, key: bytes, range_end: bytes | None, start_revision: int,
              on_events: WatchEventsCallback, on_compacted: CompactedCallback,
              on_failed: FailedCallback | None = None,
              on_created: CreatedCallback | None = None) -> StreamHandle:
        """Watch `key` (or [key, range_end)) from `start_revision` on (0: from now); see the
        module docstring for the delivery contract. Returns at once; the watch is set up in the
        background and `on_created(revision)` tells when and at which revision.

        Why "from now" exists: etcd serves a watch that starts at or before the current
        revision from its "unsynced" group, which it catches up only every 100 ms, so the
        first events can come up to 100 ms late. A watch from now is synced at once; the
        caller re-checks whatever changed between its read and `on_created`'s revision.
        """

    @abstractmethod
    def watch_count(self) -> int:
        """How many watches are live (diagnostics: the gateway holds a connection for each)."""

    def close(self) -> None:
        """Stop every watch and release connections (idempotent, bounded)."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    # ---- per-endpoint primitives (transports implement) ------------------------------------

    @abstractmethod
    def _probe_at(self, index: int, timeout: float) -> None:
        """Check that endpoint `index` answers (raises EtcdUnavailable if not)."""

    @abstractmethod
    def _authenticate(self, index: int, timeout: float) -> None:
        """Get a fresh auth token from endpoint `index` with the configured credentials."""

    @abstractmethod
    def _range_at(self, index: int, get: Get, timeout: float) -> RangeResult: ...

    @abstractmethod
    def _txn_at(self, index: int, compares: Sequence[Compare], success: Sequence[Op],
                failure: Sequence[Op], timeout: float) -> TxnResult: ...

    @abstractmethod
    def _lease_grant_at(self, index: int, ttl: int, timeout: float) -> tuple[int, int]: ...

    @abstractmethod
    def _lease_keepalive_at(self, index: int, lease_id: int, timeout: float) -> int: ...

    @abstractmethod
    def _lease_revoke_at(self, index: int, lease_id: int, timeout: float) -> None: ...
