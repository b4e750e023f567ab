"""The gRPC transport of the etcd driver: etcd's own protocol, for normal threaded processes.

What: `GrpcClient` implements `client.EtcdClient` with the generated etcd v3 stubs that
python-etcd3 ships (`etcd3.etcdrpc`; the `python3-etcd3` fork, which imports as `etcd3` and runs
on current protobuf). One channel per endpoint; all watches share one bidirectional Watch stream
(multiplexed by watch id, as etcd's Go client does) read by one thread of ours.

Why not python-etcd3's high-level client: its `transaction()` drops the response header, so the
revision a txn wrote at (our election term) is lost; it cannot build range compares; its watcher
never re-authenticates, does not ask for a leader (`hasleader`), and does not resume after a
broken stream; its Lock is broken with tenacity >= 7. The stubs are the stable part.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import grpc
from etcd3 import etcdrpc
from etcd3.etcdrpc import kv_pb2
from google.protobuf.message import Error as ProtobufError

from .client import (
    Backoff,
    ClientConfig,
    CompactedCallback,
    Compare,
    CreatedCallback,
    DeleteResult,
    EtcdAuthFailed,
    EtcdClient,
    EtcdClientError,
    EtcdPermissionDenied,
    EtcdTokenExpired,
    EtcdUnavailable,
    FailedCallback,
    Get,
    KeyValue,
    Op,
    OpResult,
    Put,
    PutResult,
    RangeResult,
    StreamHandle,
    Txn,
    TxnResult,
    WatchEvent,
    WatchEventsCallback,
    WatchState,
    error_from_status,
)

LOG = logging.getLogger(__name__)
#: What grpc / protobuf raise besides RpcError (closed channel, bad field values).
_LIBRARY_ERRORS = (ValueError, TypeError, RuntimeError, ProtobufError)

_TARGETS = {"create": etcdrpc.Compare.CREATE, "mod": etcdrpc.Compare.MOD,
            "version": etcdrpc.Compare.VERSION, "value": etcdrpc.Compare.VALUE,
            "lease": etcdrpc.Compare.LEASE}
_FIELDS = {"create": "create_revision", "mod": "mod_revision", "version": "version",
           "value": "value", "lease": "lease"}
_RESULTS = {"==": etcdrpc.Compare.EQUAL, "!=": etcdrpc.Compare.NOT_EQUAL,
            ">": etcdrpc.Compare.GREATER, "<": etcdrpc.Compare.LESS}

#: Channel options: reconnect quickly after an endpoint comes back, detect dead peers on idle
#: streams (etcd refuses pings more often than every 5 s), allow large range replies, and leave
#: retries to us (we fail over between endpoints instead).
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),
    ("grpc.enable_retries", 0),
]


def _convert(exc: grpc.RpcError, where: str) -> EtcdClientError:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    number = code.value[0] if code is not None else 2
    return error_from_status(number, details or str(code), where)


def _kv(pb: Any) -> KeyValue:
    return KeyValue(pb.key, pb.value, pb.create_revision, pb.mod_revision, pb.version, pb.lease)


def _compare(c: Compare) -> Any:
    pb = etcdrpc.Compare(key=c.key, target=_TARGETS[c.target], result=_RESULTS[c.op])
    if c.range_end is not None:
        pb.range_end = c.range_end
    setattr(pb, _FIELDS[c.target], c.value)
    return pb


def _range_request(get: Get) -> Any:
    pb = etcdrpc.RangeRequest(key=get.key, keys_only=get.keys_only)
    if get.range_end is not None:
        pb.range_end = get.range_end
    return pb


def _txn_request(compares: Sequence[Compare], success: Sequence[Op],
                 failure: Sequence[Op]) -> Any:
    return etcdrpc.TxnRequest(compare=[_compare(c) for c in compares],
                              success=[_request_op(op) for op in success],
                              failure=[_request_op(op) for op in failure])


def _request_op(op: Op) -> Any:
    if isinstance(op, Get):
        return etcdrpc.RequestOp(request_range=_range_request(op))
    if isinstance(op, Put):
        return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(
            key=op.key, value=op.value, lease=op.lease, prev_kv=op.prev_kv))
    if isinstance(op, Txn):
        return etcdrpc.RequestOp(request_txn=_txn_request(op.compares, op.success, op.failure))
    pb = etcdrpc.DeleteRangeRequest(key=op.key)
    if op.range_end is not None:
        pb.range_end = op.range_end
    return etcdrpc.RequestOp(request_delete_range=pb)


def _txn_result(pb: Any, revision: int) -> TxnResult:
    """A txn reply (outer or nested: a nested one reports its outer txn's `revision`)."""
    return TxnResult(pb.succeeded, revision, tuple(_op_result(r, revision) for r in pb.responses))


def _op_result(pb: Any, revision: int) -> OpResult:
    kind = pb.WhichOneof("response")
    if kind == "response_range":
        return RangeResult(tuple(_kv(kv) for kv in pb.response_range.kvs), revision)
    if kind == "response_delete_range":
        return DeleteResult(pb.response_delete_range.deleted)
    if kind == "response_txn":
        return _txn_result(pb.response_txn, revision)
    put = pb.response_put
    return PutResult(_kv(put.prev_kv) if put.HasField("prev_kv") else None)


class _Endpoint:
    """One endpoint's channel and stubs (re-creatable when the endpoint misbehaves)."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None) -> None:
        self.target = target
        self.credentials = credentials
        self.lock = threading.Lock()
        self._channel: grpc.Channel | None = None
        self.kv: Any = None
        self.lease: Any = None
        self.watch: Any = None
        self.auth: Any = None
        self.maintenance: Any = None

    def stubs(self) -> _Endpoint:
        with self.lock:
            if self._channel is None:
                if self.credentials is not None:
                    channel = grpc.secure_channel(self.target, self.credentials, _CHANNEL_OPTIONS)
                else:
                    channel = grpc.insecure_channel(self.target, _CHANNEL_OPTIONS)
                self._channel = channel
                self.kv = etcdrpc.KVStub(channel)
                self.lease = etcdrpc.LeaseStub(channel)
                self.watch = etcdrpc.WatchStub(channel)
                self.auth = etcdrpc.AuthStub(channel)
                self.maintenance = etcdrpc.MaintenanceStub(channel)
        return self

    def reset(self) -> None:
        """Close the channel (aborting its streams); the next call opens a new one."""
        with self.lock:
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()


def _read_file(path: str | None) -> bytes | None:
    if not path:
        return None
    with open(path, "rb") as handle:
        return handle.read()


class GrpcClient(EtcdClient):
    """`EtcdClient` over gRPC (see the module docstring)."""

    transport = "grpc"

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        credentials = None
        if config.tls or config.ca_cert:
            try:
                credentials = grpc.ssl_channel_credentials(
                    root_certificates=_read_file(config.ca_cert),
                    private_key=_read_file(config.cert_key),
                    certificate_chain=_read_file(config.cert_cert),
                )
            except OSError as exc:
                raise EtcdClientError(f"cannot read a TLS file: {exc}") from None
        self._endpoints = [
            _Endpoint(f"[{h}]:{p}" if ":" in h else f"{h}:{p}", credentials)
            for h, p in config.endpoints
        ]
        self._token: str | None = None
        self._watches = _WatchStream(self)

    # ---- plumbing ---------------------------------------------------------------------------

    def metadata(self, *extra: tuple[str, str]) -> list[tuple[str, str]]:
        md = [("token", self._token)] if self._token else []
        return md + list(extra)

    def _unary(self, index: int, method: str, request: Any, timeout: float) -> Any:
        endpoint = self._endpoints[index].stubs()
        service, name = method.split(".")
        stub = getattr(endpoint, service)
        try:
            return getattr(stub, name)(request, timeout=timeout, metadata=self.metadata())
        except grpc.RpcError as exc:
            raise _convert(exc, f"{self.name_of(index)} {name}") from None
        except _LIBRARY_ERRORS as exc:  # whatever else grpc or protobuf raise stays inside
            raise EtcdClientError(f"{self.name_of(index)} {name}: {exc!r}") from None

    def _on_endpoint_failed(self, index: int, error: EtcdClientError) -> None:
        if "deadline" in str(error).lower():
            # a silent endpoint (no RST): drop its connection so streams on it move elsewhere
            self._endpoints[index].reset()
            self._watches.restart(index)

    # ---- primitives -------------------------------------------------------------------------

    def _probe_at(self, index: int, timeout: float) -> None:
        try:
            self._unary(index, "maintenance.Status", etcdrpc.StatusRequest(), timeout)
        except (EtcdAuthFailed, EtcdPermissionDenied, EtcdTokenExpired):
            pass  # it answered; credentials are checked separately

    def _authenticate(self, index: int, timeout: float) -> None:
        endpoint = self._endpoints[index].stubs()
        request = etcdrpc.AuthenticateRequest(name=self.config.user or "",
                                              password=self.config.password or "")
        try:
            reply = endpoint.auth.Authenticate(request, timeout=timeout)
        except grpc.RpcError as exc:
            error = _convert(exc, f"{self.name_of(index)} Authenticate")
            if isinstance(error, EtcdUnavailable):
                raise error from None
            raise EtcdAuthFailed(f"etcd refused the credentials of user {self.config.user!r}: "
                                 f"{error}") from None
        self._token = reply.token

    def _range_at(self, index: int, get: Get, timeout: float) -> RangeResult:
        reply = self._unary(index, "kv.Range", _range_request(get), timeout)
        return RangeResult(tuple(_kv(kv) for kv in reply.kvs), reply.header.revision)

    def _txn_at(self, index: int, compares: Sequence[Compare], success: Sequence[Op],
                failure: Sequence[Op], timeout: float) -> TxnResult:
        reply = self._unary(index, "kv.Txn", _txn_request(compares, success, failure), timeout)
        return _txn_result(reply, reply.header.revision)

    def _lease_grant_at(self, index: int, ttl: int, timeout: float) -> tuple[int, int]:
        reply = self._unary(index, "lease.LeaseGrant", etcdrpc.LeaseGrantRequest(TTL=ttl),
                            timeout)
        if reply.error:
            raise EtcdClientError(f"lease grant refused: {reply.error}")
        return reply.ID, reply.TTL

    def _lease_keepalive_at(self, index: int, lease_id: int, timeout: float) -> int:
        # LeaseKeepAlive is a stream; one request and one reply keep the call bounded.
        endpoint = self._endpoints[index].stubs()
        try:
            replies = endpoint.lease.LeaseKeepAlive(
                iter([etcdrpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout=timeout,
                metadata=self.metadata())
            try:
                reply = next(replies, None)
            finally:
                replies.cancel()
        except grpc.RpcError as exc:
            raise _convert(exc, f"{self.name_of(index)} LeaseKeepAlive") from None
        except _LIBRARY_ERRORS as exc:
            raise EtcdClientError(f"{self.name_of(index)} LeaseKeepAlive: {exc!r}") from None
        if reply is None:
            raise EtcdUnavailable(f"{self.name_of(index)} LeaseKeepAlive: no reply")
        return int(reply.TTL)

    def _lease_revoke_at(self, index: int, lease_id: int, timeout: float) -> None:
        self._unary(index, "lease.LeaseRevoke", etcdrpc.LeaseRevokeRequest(ID=lease_id), timeout)

    # ---- watches ----------------------------------------------------------------------------

    def watch(self, key: bytes, range_end: bytes | None, start_revision: int,
              on_events: WatchEventsCallback, on_compacted: CompactedCallback,
              on_failed: FailedCallback | None = None,
              on_created: CreatedCallback | None = None) -> StreamHandle:
        state = WatchState(key, range_end, start_revision, on_events, on_compacted, on_failed,
                           on_created)
        return self._watches.add(state)

    def watch_count(self) -> int:
        return self._watches.count()

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._watches.close()
        for endpoint in self._endpoints:
            endpoint.reset()


class _Handle(StreamHandle):
    def __init__(self, stream: _WatchStream, state: WatchState) -> None:
        self._stream = stream
        self._state = state

    def cancel(self) -> None:
        self._stream.cancel(self._state)


_STOP = object()


class _WatchStream:
    """Every watch of one client on one bidirectional Watch stream, read by one thread.

    etcd answers create requests in the order they were sent, so creations are matched to
    replies through a FIFO. When the stream breaks, every live watch is re-created on the next
    stream from its own resume revision.
    """

    def __init__(self, client: GrpcClient) -> None:
        self._client = client
        self._cond = threading.Condition()
        self._states: dict[int, WatchState] = {}  # by id(state), in creation order
        self._server_ids: dict[int, int] = {}  # id(state) -> etcd watch id
        self._by_server_id: dict[int, WatchState] = {}
        self._pending: collections.deque[WatchState] = collections.deque()
        self._requests: queue.Queue[Any] | None = None
        self._call: Any = None
        self._endpoint: int | None = None
        self._refusals: dict[int, int] = {}
        self._reauth = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    # ---- API --------------------------------------------------------------------------------

    def add(self, state: WatchState) -> StreamHandle:
        with self._cond:
            if self._closed:
                raise EtcdClientError("the etcd client is closed")
            self._states[id(state)] = state
            if self._requests is not None:
                self._send_create(state)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="etcd-grpc-watch",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()
        return _Handle(self, state)

    def count(self) -> int:
        with self._cond:
            return len(self._states)

    def cancel(self, state: WatchState) -> None:
        with self._cond:
            state.cancelled = True
            self._states.pop(id(state), None)
            server_id = self._server_ids.pop(id(state), None)
            if server_id is not None:
                self._by_server_id.pop(server_id, None)
                self._send(etcdrpc.WatchRequest(
                    cancel_request=etcdrpc.WatchCancelRequest(watch_id=server_id)))

    def restart(self, endpoint: int | None = None) -> None:
        """Abort the stream (if it runs on `endpoint`, or whichever) so it reopens elsewhere."""
        with self._cond:
            call = self._call
            if call is not None and (endpoint is None or endpoint == self._endpoint):
                call.cancel()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            call = self._call
            self._cond.notify_all()
        self._wake.set()
        if call is not None:
            call.cancel()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    # ---- stream loop ------------------------------------------------------------------------

    def _send(self, request: Any) -> None:
        if self._requests is not None:
            self._requests.put(request)

    def _send_create(self, state: WatchState) -> None:
        create = etcdrpc.WatchCreateRequest(key=state.key, start_revision=state.next_revision,
                                            progress_notify=True)  # 0: from now
        if state.range_end is not None:
            create.range_end = state.range_end
        self._pending.append(state)
        self._send(etcdrpc.WatchRequest(create_request=create))

    def _request_iterator(self, requests: queue.Queue[Any]) -> Iterator[Any]:
        while True:
            item = requests.get()
            if item is _STOP:
                return
            yield item

    def _run(self) -> None:
        backoff = Backoff(0.05, 1.0)
        client = self._client
        while True:
            with self._cond:
                while not self._closed and not self._states:
                    self._cond.wait(1.0)
                if self._closed:
                    return
            if self._reauth and client.config.user:
                self._reauth = False
                try:
                    client._authenticate(client.current_endpoint, client.config.timeout)
                except EtcdClientError as exc:
                    LOG.warning("etcd watch stream: re-authentication failed: %s", exc)
            index = client.current_endpoint
            requests: queue.Queue[Any] = queue.Queue()
            try:
                stub = client._endpoints[index].stubs().watch
                call = stub.Watch(self._request_iterator(requests),
                                  metadata=client.metadata(("hasleader", "true")))
            except _LIBRARY_ERRORS as exc:
                LOG.debug("etcd watch stream could not open on %s: %r", client.name_of(index), exc)
                call = None
            if call is not None:
                with self._cond:
                    self._requests, self._call, self._endpoint = requests, call, index
                    self._pending.clear()
                    for state in list(self._states.values()):
                        self._send_create(state)
                error = self._read(call, index)
                with self._cond:
                    requests.put(_STOP)
                    self._requests = self._call = self._endpoint = None
                    self._pending.clear()
                    self._server_ids.clear()
                    self._by_server_id.clear()
                    closed = self._closed
                if closed:
                    return
                if error is None:
                    backoff.reset()
                elif isinstance(error, EtcdTokenExpired):
                    self._reauth = True
                elif isinstance(error, EtcdUnavailable):
                    client._endpoint_failed(index, error)
                LOG.debug("etcd watch stream on %s ended: %s", client.name_of(index), error)
            self._wake.wait(backoff.next())
            self._wake.clear()

    def _read(self, call: Any, index: int) -> EtcdClientError | None:
        try:
            for response in call:
                self._handle(response)
        except grpc.RpcError as exc:
            if self._closed:
                return None
            return _convert(exc, f"{self._client.name_of(index)} Watch")
        except Exception as exc:  # the reader must survive anything; say what it was
            LOG.warning("etcd watch stream failed", exc_info=True)
            return EtcdClientError(f"watch stream failed: {exc!r}")
        return EtcdUnavailable("the watch stream ended")

    def _handle(self, response: Any) -> None:
        deliver: list[tuple[WatchState, list[WatchEvent], int]] = []
        ended: list[tuple[WatchState, int, str]] = []
        created: WatchState | None = None
        with self._cond:
            state: WatchState | None
            if response.created:
                state = self._pending.popleft() if self._pending else None
                if state is None:
                    LOG.warning("etcd watch: unexpected creation reply %s", response.watch_id)
                    return
                if not response.canceled:
                    if not state.live or id(state) not in self._states:
                        self._send(etcdrpc.WatchRequest(
                            cancel_request=etcdrpc.WatchCancelRequest(watch_id=response.watch_id)))
                        return
                    self._server_ids[id(state)] = response.watch_id
                    self._by_server_id[response.watch_id] = state
                    self._refusals.pop(id(state), None)
                    created = state
            else:
                state = self._by_server_id.get(response.watch_id)
                if state is None:
                    return
            if response.canceled:
                self._by_server_id.pop(response.watch_id, None)
                self._server_ids.pop(id(state), None)
                if response.compact_revision:
                    self._states.pop(id(state), None)
                    ended.append((state, response.compact_revision, ""))
                elif state.live:
                    reason = response.cancel_reason or "cancelled by the server"
                    refusals = self._refusals.get(id(state), 0) + 1
                    self._refusals[id(state)] = refusals
                    if self._client.config.user and refusals < 3:
                        # an expired token shows up as "permission denied" on new watches:
                        # re-authenticate and reopen the stream
                        self._reauth = True
                        if self._call is not None:
                            self._call.cancel()
                    else:
                        self._states.pop(id(state), None)
                        ended.append((state, 0, reason))
            elif response.events or not response.created:
                events = [
                    WatchEvent("put" if ev.type == kv_pb2.Event.PUT else "delete", _kv(ev.kv))
                    for ev in response.events
                ]
                deliver.append((state, events, response.header.revision))
        if created is not None:
            created.created(response.header.revision)
        for state, events, revision in deliver:
            state.deliver(events, 0 if events else revision)
        for state, compact_revision, reason in ended:
            if compact_revision:
                state.compacted(compact_revision)
            else:
                state.failed(EtcdPermissionDenied(f"watch on {state.key!r} refused: {reason}"))
