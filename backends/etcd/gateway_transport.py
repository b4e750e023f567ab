"""The grpc-gateway transport of the etcd driver: etcd's JSON API over HTTP, for eventlet.

What: `GatewayClient` implements `client.EtcdClient` with plain `requests` calls to the
gateway etcd serves on its client port under `/v3/` (etcd >= 3.4; keys and values base64).
Each watch is one streaming POST to `/v3/watch`, read by a thread of its own (a green thread
under eventlet), which reconnects and resumes on its own. The driver holds few of them: one for
all elections of a member, one per topology watch.

Why: in an eventlet-monkey-patched process (ryu-manager) gRPC's C core runs its own threads
and streaming calls hang, while `requests` sockets are green and cooperate. Why not etcd3gw,
which wraps the same API: its watcher silently ignores the server's cancel / compaction notices
and the end of the stream (a topology watch would go stale without anyone knowing), it has no
authentication, one timeout for every call and one endpoint; what it would add over `requests`
is base64 and a POST.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
from collections.abc import Sequence
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection

from .client import (
    Backoff,
    ClientConfig,
    CompactedCallback,
    Compare,
    CreatedCallback,
    Delete,
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
API_PATH = "/v3/"

_TARGETS = {"create": "CREATE", "mod": "MOD", "version": "VERSION", "value": "VALUE",
            "lease": "LEASE"}
_FIELDS = {"create": "create_revision", "mod": "mod_revision", "version": "version",
           "value": "value", "lease": "lease"}
_RESULTS = {"==": "EQUAL", "!=": "NOT_EQUAL", ">": "GREATER", "<": "LESS"}

#: TCP keep-alive on watch connections, so a silent peer (no RST) is noticed in ~25 s even when
#: no event flows; unary calls are bounded by their own timeouts.
_KEEPALIVE_OPTIONS = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *([(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10)] if hasattr(socket, "TCP_KEEPIDLE") else []),
    *([(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5)] if hasattr(socket, "TCP_KEEPINTVL") else []),
    *([(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)] if hasattr(socket, "TCP_KEEPCNT") else []),
]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _kv(doc: dict[str, Any]) -> KeyValue:
    return KeyValue(
        _unb64(doc.get("key")), _unb64(doc.get("value")), int(doc.get("create_revision", 0)),
        int(doc.get("mod_revision", 0)), int(doc.get("version", 0)), int(doc.get("lease", 0)),
    )


def _compare(c: Compare) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": _b64(c.key), "target": _TARGETS[c.target],
                           "result": _RESULTS[c.op]}
    if c.range_end is not None:
        doc["range_end"] = _b64(c.range_end)
    value = c.value
    doc[_FIELDS[c.target]] = _b64(value) if isinstance(value, bytes) else str(value)
    return doc


def _range_doc(get: Get) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": _b64(get.key)}
    if get.range_end is not None:
        doc["range_end"] = _b64(get.range_end)
    if get.keys_only:
        doc["keys_only"] = True
    return doc


def _txn_doc(compares: Sequence[Compare], success: Sequence[Op],
             failure: Sequence[Op]) -> dict[str, Any]:
    return {"compare": [_compare(c) for c in compares],
            "success": [_request_op(op) for op in success],
            "failure": [_request_op(op) for op in failure]}


def _request_op(op: Op) -> dict[str, Any]:
    if isinstance(op, Get):
        return {"request_range": _range_doc(op)}
    if isinstance(op, Put):
        put: dict[str, Any] = {"key": _b64(op.key), "value": _b64(op.value)}
        if op.lease:
            put["lease"] = str(op.lease)
        if op.prev_kv:
            put["prev_kv"] = True
        return {"request_put": put}
    if isinstance(op, Txn):
        return {"request_txn": _txn_doc(op.compares, op.success, op.failure)}
    assert isinstance(op, Delete)
    delete: dict[str, Any] = {"key": _b64(op.key)}
    if op.range_end is not None:
        delete["range_end"] = _b64(op.range_end)
    return {"request_delete_range": delete}


def _txn_result(doc: dict[str, Any], revision: int) -> TxnResult:
    """A txn reply (outer or nested: a nested one reports its outer txn's `revision`; the
    gateway leaves out `succeeded` when it is false)."""
    return TxnResult(bool(doc.get("succeeded", False)), revision,
                     tuple(_op_result(r, revision) for r in doc.get("responses") or []))


def _op_result(doc: dict[str, Any], revision: int) -> OpResult:
    if "response_range" in doc:
        kvs = doc["response_range"].get("kvs") or []
        return RangeResult(tuple(_kv(kv) for kv in kvs), revision)
    if "response_delete_range" in doc:
        return DeleteResult(int(doc["response_delete_range"].get("deleted", 0)))
    if "response_txn" in doc:
        return _txn_result(doc["response_txn"] or {}, revision)
    prev = (doc.get("response_put") or {}).get("prev_kv")
    return PutResult(_kv(prev) if prev else None)


def _revision(doc: dict[str, Any]) -> int:
    return int((doc.get("header") or {}).get("revision", 0))


class _KeepAliveAdapter(HTTPAdapter):
    """An adapter whose connections have TCP keep-alive on (for long-lived watch streams)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = HTTPConnection.default_socket_options + _KEEPALIVE_OPTIONS
        super().init_poolmanager(*args, **kwargs)


class GatewayClient(EtcdClient):
    """`EtcdClient` over the grpc-gateway (see the module docstring)."""

    transport = "gateway"

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        self._scheme = "https" if (config.tls or config.ca_cert) else "http"
        self._sessions = [self._new_session(pool=16) for _ in config.endpoints]
        self._token: str | None = None
        self._watches: set[_GatewayWatch] = set()
        self._watches_lock = threading.Lock()

    # ---- plumbing ---------------------------------------------------------------------------

    def _new_session(self, pool: int = 1, keepalive: bool = False) -> requests.Session:
        session = requests.Session()
        adapter_type = _KeepAliveAdapter if keepalive else HTTPAdapter
        adapter = adapter_type(pool_connections=1, pool_maxsize=pool, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.trust_env = False  # never route etcd traffic through an HTTP proxy from the env
        if self._scheme == "https":
            session.verify = self.config.ca_cert or True
            if self.config.cert_cert and self.config.cert_key:
                session.cert = (self.config.cert_cert, self.config.cert_key)
        return session

    def url(self, index: int, path: str) -> str:
        host, port = self.config.endpoints[index]
        host = f"[{host}]" if ":" in host else host
        return f"{self._scheme}://{host}:{port}{API_PATH}{path}"

    def headers(self, *, require_leader: bool = False, token: bool = True) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if token and self._token:
            headers["Authorization"] = self._token
        if require_leader:
            headers["Grpc-Metadata-hasleader"] = "true"
        return headers

    def _post(self, index: int, path: str, body: dict[str, Any], timeout: float,
              token: bool = True) -> dict[str, Any]:
        where = f"{self.name_of(index)} {path}"
        try:
            response = self._sessions[index].post(
                self.url(index, path), data=json.dumps(body), headers=self.headers(token=token),
                timeout=timeout)
        except requests.Timeout as exc:
            raise EtcdUnavailable(f"{where}: deadline exceeded ({exc})") from None
        except requests.ConnectionError as exc:
            raise EtcdUnavailable(f"{where}: {_short(exc)}") from None
        except (requests.RequestException, OSError, ValueError) as exc:
            raise EtcdClientError(f"{where}: {exc!r}") from None
        return _decode(response, where)

    # ---- primitives -------------------------------------------------------------------------

    def _probe_at(self, index: int, timeout: float) -> None:
        try:
            self._post(index, "maintenance/status", {}, timeout)
        except (EtcdAuthFailed, EtcdPermissionDenied, EtcdTokenExpired):
            pass

    def _authenticate(self, index: int, timeout: float) -> None:
        body = {"name": self.config.user or "", "password": self.config.password or ""}
        try:
            reply = self._post(index, "auth/authenticate", body, timeout, token=False)
        except EtcdUnavailable:
            raise
        except EtcdClientError as exc:
            raise EtcdAuthFailed(f"etcd refused the credentials of user {self.config.user!r}: "
                                 f"{exc}") from None
        self._token = str(reply.get("token") or "") or None

    def _range_at(self, index: int, get: Get, timeout: float) -> RangeResult:
        reply = self._post(index, "kv/range", _range_doc(get), timeout)
        return RangeResult(tuple(_kv(kv) for kv in reply.get("kvs") or []), _revision(reply))

    def _txn_at(self, index: int, compares: Sequence[Compare], success: Sequence[Op],
                failure: Sequence[Op], timeout: float) -> TxnResult:
        reply = self._post(index, "kv/txn", _txn_doc(compares, success, failure), timeout)
        return _txn_result(reply, _revision(reply))

    def _lease_grant_at(self, index: int, ttl: int, timeout: float) -> tuple[int, int]:
        reply = self._post(index, "lease/grant", {"TTL": str(ttl), "ID": "0"}, timeout)
        if reply.get("error"):
            raise EtcdClientError(f"lease grant refused: {reply['error']}")
        return int(reply["ID"]), int(reply.get("TTL", ttl))

    def _lease_keepalive_at(self, index: int, lease_id: int, timeout: float) -> int:
        reply = self._post(index, "lease/keepalive", {"ID": str(lease_id)}, timeout)
        if "error" in reply:
            error = reply["error"] or {}
            raise error_from_status(int(error.get("grpc_code", error.get("code", 2))),
                                    str(error.get("message", error)), self.name_of(index))
        return int((reply.get("result") or {}).get("TTL", 0))

    def _lease_revoke_at(self, index: int, lease_id: int, timeout: float) -> None:
        self._post(index, "lease/revoke", {"ID": str(lease_id)}, timeout)

    # ---- watches ----------------------------------------------------------------------------

    def watch(self, key: bytes, range_end: bytes | None, start_revision: int,
              on_events: WatchEventsCallback, on_compacted: CompactedCallback,
              on_failed: FailedCallback | None = None,
              on_created: CreatedCallback | None = None) -> StreamHandle:
        if self.closed:
            raise EtcdClientError("the etcd client is closed")
        state = WatchState(key, range_end, start_revision, on_events, on_compacted, on_failed,
                           on_created)
        watch = _GatewayWatch(self, state)
        with self._watches_lock:
            self._watches.add(watch)
        watch.start()
        return watch

    def watch_count(self) -> int:
        with self._watches_lock:
            return len(self._watches)

    def forget(self, watch: _GatewayWatch) -> None:
        with self._watches_lock:
            self._watches.discard(watch)

    def _on_endpoint_failed(self, index: int, error: EtcdClientError) -> None:
        if "deadline" in str(error).lower():
            with self._watches_lock:
                watches = list(self._watches)
            for watch in watches:
                watch.restart(index)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        with self._watches_lock:
            watches = list(self._watches)
        for watch in watches:
            watch.cancel()
        for watch in watches:
            watch.join(2.0)
        for session in self._sessions:
            session.close()


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."


def _decode(response: requests.Response, where: str) -> dict[str, Any]:
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if response.status_code == 200 and isinstance(doc, dict):
        return doc
    if isinstance(doc, dict):
        code = int(doc.get("code", 2))
        message = str(doc.get("message") or doc.get("error") or response.reason)
        raise error_from_status(code, message, where)
    if response.status_code in (502, 503, 504):
        raise EtcdUnavailable(f"{where}: HTTP {response.status_code} {response.reason}")
    raise EtcdClientError(f"{where}: HTTP {response.status_code} {response.reason}: "
                          f"{response.text[:200]}")


class _GatewayWatch(StreamHandle):
    """One watch = one streaming POST, re-opened (on the current endpoint) until cancelled."""

    def __init__(self, client: GatewayClient, state: WatchState) -> None:
        self._client = client
        self._state = state
        self._lock = threading.Lock()
        self._response: requests.Response | None = None
        self._endpoint: int | None = None
        self._wake = threading.Event()
        self._refusals = 0
        self._thread = threading.Thread(target=self._run, name="etcd-gateway-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        self._state.cancelled = True
        self._wake.set()
        self._abort()

    def restart(self, endpoint: int) -> None:
        """Drop the stream if it runs on `endpoint`, so it reopens on the current one."""
        if self._endpoint == endpoint:
            self._abort()

    def join(self, timeout: float) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _abort(self) -> None:
        """Wake the reader blocked in recv(): shut the stream's socket down, then close it."""
        with self._lock:
            response = self._response
        if response is None:
            return
        sock = _socket_of(response)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            response.close()
        except Exception:  # closing a half-read response may raise anything urllib3 likes
            LOG.debug("closing a watch response failed", exc_info=True)

    def _run(self) -> None:
        client, state = self._client, self._state
        backoff = Backoff(0.05, 1.0)
        session = client._new_session(keepalive=True)
        try:
            while state.live and not client.closed:
                index = client.current_endpoint
                error = self._stream(session, index)
                if not state.live or client.closed:
                    return
                if error is None:
                    backoff.reset()
                    continue
                if isinstance(error, EtcdTokenExpired) and client.config.user:
                    try:
                        client._authenticate(index, client.config.timeout)
                    except EtcdClientError as exc:
                        LOG.warning("etcd watch: re-authentication failed: %s", exc)
                elif isinstance(error, EtcdUnavailable):
                    client._endpoint_failed(index, error)
                LOG.debug("etcd watch on %r via %s ended: %s", state.key, client.name_of(index),
                          error)
                self._wake.wait(backoff.next())
        finally:
            session.close()
            client.forget(self)

    def _stream(self, session: requests.Session, index: int) -> EtcdClientError | None:
        """Read one watch stream until it ends; None means "reopen at once"."""
        client, state = self._client, self._state
        create: dict[str, Any] = {"key": _b64(state.key), "progress_notify": True}
        if state.next_revision:  # else: from now
            create["start_revision"] = str(state.next_revision)
        if state.range_end is not None:
            create["range_end"] = _b64(state.range_end)
        where = f"{client.name_of(index)} watch"
        try:
            response = session.post(
                client.url(index, "watch"), data=json.dumps({"create_request": create}),
                headers=client.headers(require_leader=True), stream=True,
                timeout=(client.config.timeout, None))
        except requests.RequestException as exc:
            return EtcdUnavailable(f"{where}: {_short(exc)}")
        with self._lock:
            self._response, self._endpoint = response, index
        try:
            if not state.live:
                return None
            if response.status_code != 200:
                try:
                    _decode(response, where)
                except EtcdClientError as exc:
                    return exc
            for line in response.iter_lines(chunk_size=None):
                if not line:
                    continue
                outcome = self._handle(json.loads(line), where)
                if outcome is not None:
                    return outcome if isinstance(outcome, EtcdClientError) else None
            return EtcdUnavailable(f"{where}: stream ended")
        except (requests.RequestException, OSError, ValueError, AttributeError) as exc:
            # AttributeError: urllib3 reading from a response we closed under it
            if not state.live:
                return None
            return EtcdUnavailable(f"{where}: {_short(exc)}")
        finally:
            with self._lock:
                self._response = self._endpoint = None
            response.close()

    def _handle(self, doc: dict[str, Any], where: str) -> EtcdClientError | bool | None:
        """Process one stream message; non-None ends the stream (an error, or True: done)."""
        state = self._state
        if "error" in doc:
            error = doc["error"] or {}
            code = int(error.get("grpc_code", error.get("code", 2)))
            return error_from_status(code, str(error.get("message", error)), where)
        result = doc.get("result") or {}
        if result.get("canceled"):
            compact = int(result.get("compact_revision", 0))
            if compact:
                state.compacted(compact)
                return True
            reason = str(result.get("cancel_reason") or "cancelled by the server")
            self._refusals += 1
            if self._client.config.user and self._refusals < 3:
                return EtcdTokenExpired(f"{where}: {reason}")
            state.failed(EtcdPermissionDenied(f"watch on {state.key!r} refused: {reason}"))
            return True
        if result.get("created"):
            self._refusals = 0
            state.created(_revision(result))
            return None
        events = result.get("events") or []
        if events:
            state.deliver([WatchEvent("delete" if ev.get("type") == "DELETE" else "put",
                                      _kv(ev.get("kv") or {})) for ev in events])
        else:
            state.deliver([], _revision(result))
        return None


def _socket_of(response: requests.Response) -> socket.socket | None:
    """The socket under a streaming response (urllib3 2.x), if it can be found."""
    raw = getattr(response, "raw", None)
    connection = getattr(raw, "_connection", None) or getattr(raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        return sock
    fp = getattr(raw, "_fp", None)
    inner = getattr(getattr(fp, "fp", None), "raw", None)
    return getattr(inner, "_sock", None)
