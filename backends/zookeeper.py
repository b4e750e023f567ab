"""ZooKeeper driver (kazoo): `zookeeper://h1:2181,h2:2181/prefix?session_timeout=4`.

Layout under the prefix (default `/coordination`):
    members/<member>                          ephemeral, JSON MemberInfo
    elections/<name>/candidates/c-<rank>-<member>-<seq>   ephemeral sequential
    elections/<name>/leader                   persistent, JSON {member_id, candidate, term}
    topology/<kind>/<key>                     persistent, JSON record

The term of a leadership is the pzxid of the candidates directory in the state where the
candidate is first (the zxid of the create/delete that made it first): unique, strictly increasing
across leaders whatever the priorities, and free (no write on the handover path). See
`ZooKeeperElection`. A candidate watches only its predecessor; only the leader watches the
candidate list (for preemption by a higher-priority newcomer). All store work runs on the
driver's own thread, never inside kazoo's callback thread.
"""

from __future__ import annotations

import json
import logging
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
from kazoo.exceptions import (
    OperationTimeoutError as KazooOperationTimeout,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState
from kazoo.retry import KazooRetry
from kazoo.security import make_digest_acl

from coordination.api import Coordinator
from coordination.dispatch import SerialExecutor
from coordination.election import MAX_PRIORITY, Election
from coordination.errors import (
    BackendConnectionError,
    ConfigurationError,
    CoordinationError,
    OperationTimeoutError,
    SessionLostError,
)
from coordination.options import Option
from coordination.retry import retrying
from coordination.runtime import eventlet_patched
from coordination.store import (
    RawChange,
    RawEvent,
    RawSnapshot,
    RecordExistsError,
    RecordStoreDriver,
    Versioned,
    VersionMismatchError,
    WatchHandle,
)
from coordination.types import Candidate, Leadership, MemberInfo, SessionState
from coordination.urls import BackendURL

LOG = logging.getLogger(__name__)
DEFAULT_PORT = 2181
DEFAULT_PREFIX = "/coordination"
_TRANSIENT = (ConnectionLoss, KazooOperationTimeout)
_RETRIED = (ConnectionLoss,)  # a call that hit its deadline is not retried: it waited enough
_RANK_DIGITS = len(str(MAX_PRIORITY))


def _make_handler(kind: str) -> Any:
    if kind == "auto":
        kind = "eventlet" if eventlet_patched() else "threading"
    if kind == "eventlet":
        from kazoo.handlers.eventlet import SequentialEventletHandler

        return SequentialEventletHandler()
    if kind == "threading":
        from kazoo.handlers.threading import SequentialThreadingHandler

        return SequentialThreadingHandler()
    raise ConfigurationError(f"option handler={kind!r}: use auto, threading or eventlet")


class _BoundedResult:
    def __init__(self, result: Any, timeout: float, timeout_error: type[BaseException]) -> None:
        self._result = result
        self._timeout = timeout
        self._timeout_error = timeout_error

    def get(self) -> Any:
        try:
            return self._result.get(timeout=self._timeout)
        except self._timeout_error:
            raise KazooOperationTimeout(f"no answer within {self._timeout} s") from None


class BoundedClient:
    """kazoo with a deadline on every call.

    kazoo queues requests while it reconnects and its blocking methods wait without limit, so a
    plain `client.get()` during an outage hangs whoever called it (an app asking `leader()`,
    the driver's worker). Here every call gives up after `operation_timeout` with kazoo's
    OperationTimeoutError, which the driver reports as `coordination.OperationTimeoutError`.
    """

    _CALLS = frozenset({"get", "get_children", "exists", "create", "set", "delete", "sync",
                        "ensure_path"})

    def __init__(self, client: KazooClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    def __getattr__(self, name: str) -> Any:
        if name in self._CALLS:
            start = getattr(self.client, f"{name}_async")
            return lambda *args, **kwargs: self._bounded(start(*args, **kwargs)).get()
        if name.endswith("_async") and name[:-6] in self._CALLS:
            start = getattr(self.client, name)
            return lambda *args, **kwargs: self._bounded(start(*args, **kwargs))
        return getattr(self.client, name)

    def _bounded(self, result: Any) -> _BoundedResult:
        return _BoundedResult(result, self.timeout, self.client.handler.timeout_exception)


def candidate_prefix(member_id: str, priority: int) -> str:
    """Name prefix of a candidate node; ZooKeeper appends a 10-digit sequence number."""
    return f"c-{MAX_PRIORITY - priority:0{_RANK_DIGITS}d}-{quote(member_id, safe='')}-"


def parse_candidate(name: str) -> tuple[tuple[int, int], str, int] | None:
    """(sort key, member_id, priority) of a candidate node name, or None if it is not one."""
    try:
        rank = int(name[2:2 + _RANK_DIGITS])
        seq = int(name[-10:])
        member = unquote(name[3 + _RANK_DIGITS:-11])
    except ValueError:
        return None
    if not name.startswith("c-") or not member:
        return None
    return (rank, seq), member, MAX_PRIORITY - rank


class ZooKeeperElection(Election):
    """An election as ephemeral sequential znodes, ranked by (priority, sequence).

    Term: the candidates directory's pzxid in the state where this candidate is first, i.e. the
    zxid of the create or delete that made it first. The store assigns it, each state of the
    candidate list has exactly one first candidate, and every change of leader is a later state,
    so terms are unique and strictly increasing across leaders -- including when an older
    candidate returns after a high-priority one preempted it and left. It costs no write: a
    graceful handover is one watch notification and one read. The leader then publishes
    {member, candidate, term} in the `leader` znode (CAS-guarded, never lowering the term) for
    `leader()` and listeners.
    """

    coordinator: ZooKeeperCoordinator

    def __init__(self, coordinator: ZooKeeperCoordinator, name: str) -> None:
        super().__init__(coordinator, name)
        self._base = f"{coordinator.prefix}/elections/{name}"
        self._cands = f"{self._base}/candidates"
        self._leader_path = f"{self._base}/leader"
        self._node: str | None = None  # our candidate node's name
        self._stale_node: str | None = None  # left by a session we declared lost ourselves
        self._predecessor: str | None = None
        self._prepared = False

    @property
    def _zk(self) -> BoundedClient:
        return self.coordinator.zk

    def _run(self, func: Callable[..., Any], *args: Any) -> Any:
        return self.coordinator.worker.call(func, *args, timeout=self.coordinator.op_timeout * 3)

    def _submit(self, func: Callable[..., Any], *args: Any) -> None:
        self.coordinator.worker.submit(func, *args)

    def _prepare(self) -> None:
        if not self._prepared:
            self._zk.ensure_path(self._cands)
            try:
                self._zk.create(self._leader_path, b"")
            except NodeExistsError:
                pass
            self._prepared = True

    # ---- hooks ----------------------------------------------------------------------------

    def _driver_join(self, priority: int) -> None:
        self._run(self.coordinator.translate(self._join), priority)

    def _driver_leave(self) -> None:
        # on the caller's thread, not the worker's: the successor's wait starts with this
        # delete, so it is worth not queueing it (kazoo calls are thread-safe)
        self.coordinator.translate(self._leave)()

    def _driver_forget(self) -> None:
        self._stale_node, self._node = self._node, None

    def _driver_reevaluate(self) -> None:
        self._submit(self._guarded, self._evaluate)
        if self._listeners:
            self._submit(self._guarded, self._observe)

    def _driver_observe(self) -> None:
        self._submit(self._guarded, self._observe)

    def _driver_read_leader(self) -> Leadership | None:
        return self.coordinator.translate(self._read_leader_settled)()

    def _driver_read_candidates(self) -> list[Candidate]:
        def read() -> list[Candidate]:
            self._prepare()
            self._zk.sync(self._cands)  # another member may be served by a lagging follower
            return [Candidate(m, p) for _, _, m, p in self._ranked()]

        return self.coordinator.translate(read)()

    # ---- worker-thread logic ----------------------------------------------------------------

    def _guarded(self, func: Callable[..., None], *args: Any) -> None:
        """Run a watch-triggered step; a connection error just waits for the reconnect."""
        try:
            func(*args)
        except (ConnectionLoss, SessionExpiredError, KazooOperationTimeout) as exc:
            LOG.debug("election %s: %s deferred until reconnect (%s)", self.name, func.__name__, exc)

    def _ranked(self, children: list[str] | None = None) -> list[tuple[Any, str, str, int]]:
        """(sort key, node, member, priority) for each candidate, best first."""
        if children is None:
            self._prepare()
            children = self._zk.get_children(self._cands)
        out = []
        for name in children:
            parsed = parse_candidate(name)
            if parsed is not None:
                out.append((parsed[0], name, parsed[1], parsed[2]))
        return sorted(out)

    def _join(self, priority: int) -> None:
        if self._campaign is None:
            return
        self._prepare()
        if self._stale_node:
            self._delete_quietly(self._stale_node)
            self._stale_node = None
        if self._node is None:
            path = self._zk.create(
                f"{self._cands}/{candidate_prefix(self.coordinator.member_id, priority)}",
                ephemeral=True, sequence=True,
            )
            self._node = path.rsplit("/", 1)[1]
        self._evaluate()

    def _leave(self) -> None:
        node, self._node = self._node, None
        if node:
            self._delete_quietly(node)

    def _delete_quietly(self, node: str) -> None:
        try:
            self._zk.delete(f"{self._cands}/{node}")
        except NoNodeError:
            pass

    def _evaluate(self, watch_list: bool = False) -> None:
        """Read the candidate list and act on our rank. Bounded: each pass either settles or
        saw the list move under it."""
        for _ in range(20):
            if self._campaign is None or self._node is None:
                connected = self.coordinator.session_state is SessionState.CONNECTED
                if self._campaign is not None and connected:
                    self._join(self._campaign.priority)
                return
            self._prepare()
            watch = self._on_list_watch if watch_list or self.is_leader else None
            children, stat = self._zk.get_children(self._cands, watch=watch, include_data=True)
            names = [node for _, node, _, _ in self._ranked(children)]
            if self._node not in names:  # our node vanished (deleted by hand, or session gone)
                self._revoked()
                self._node = None
                continue
            index = names.index(self._node)
            if index == 0:
                if not self.is_leader:
                    self._elected(stat.pzxid)
                    self._publish(stat.pzxid)
                if watch is not None:
                    return
                watch_list = True  # as leader, watch the list to notice preemption
                continue
            self._revoked()
            self._predecessor = names[index - 1]
            if self._zk.exists(f"{self._cands}/{self._predecessor}", watch=self._on_pred_watch):
                return
        LOG.warning("election %s did not settle; the watchdog will retry", self.name)

    def _publish(self, term: int) -> None:
        """Record our leadership in the `leader` znode, unless a newer term is already there."""
        payload = json.dumps(
            {"member_id": self.coordinator.member_id, "candidate": self._node, "term": term}
        ).encode()
        for _ in range(5):
            data, stat = self._zk.get(self._leader_path)
            if _leader_doc(data).get("term", -1) >= term:
                return
            try:
                self._zk.set(self._leader_path, payload, stat.version)
                return
            except BadVersionError:
                continue

    def _on_list_watch(self, _event: Any) -> None:
        self._submit(self._guarded, self._evaluate)

    def _on_pred_watch(self, _event: Any) -> None:
        # the next in line is likely to lead: read the list with a watch in the same round trip
        self._submit(self._guarded, self._evaluate, True)

    def _read_leader(self, watch: Callable[..., None] | None = None) -> Leadership | None:
        """The published leader, if its candidacy is still first in line."""
        self._prepare()
        leader_async = self._zk.get_async(self._leader_path, watch=watch)
        ranked = self._ranked(self._zk.get_children(self._cands, watch=watch))
        doc = _leader_doc(leader_async.get()[0])
        if ranked and doc.get("candidate") == ranked[0][1]:
            return Leadership(str(doc["member_id"]), int(doc["term"]))
        return None

    def _read_leader_settled(self) -> Leadership | None:
        """`leader()` for callers: if a first candidate exists but has not published yet (the
        moment after a handover), wait for its write (pushed by a watch, bounded)."""
        self._prepare()
        self._zk.sync(self._base)
        changed = threading.Event()
        deadline = self.coordinator.op_timeout
        for _ in range(3):
            changed.clear()
            leader = self._read_leader(watch=lambda _event: changed.set())
            if leader is not None or not self._ranked():
                return leader
            if not changed.wait(deadline):
                break
        return None

    def _observe(self) -> None:
        self._leader_seen(self._read_leader(watch=self._on_leader_watch))

    def _on_leader_watch(self, _event: Any) -> None:
        self._submit(self._guarded, self._observe)


def _leader_doc(data: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(data) if data else {}
        return doc if isinstance(doc, dict) and isinstance(doc.get("term"), int) else {}
    except ValueError:
        return {}


class _ZooKeeperWatch(WatchHandle):
    """Children watches per kind plus a data watch per record; dedup by mzxid; resync on
    reconnect (kazoo does not restore watches reliably: #29, #151)."""

    def __init__(self, store: ZooKeeperRecordStore, sink: Callable[[RawEvent], None]) -> None:
        self._store = store
        self._sink = sink
        self._known: dict[str, int] = {}
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self._store.watches.discard(self)

    def submit(self, func: Callable[..., None], *args: Any) -> None:
        if not self.cancelled:
            self._store.coordinator.watch_worker.submit(self._guarded, func, *args)

    def _guarded(self, func: Callable[..., None], *args: Any) -> None:
        if self.cancelled:
            return
        try:
            func(*args)
        except (ConnectionLoss, SessionExpiredError, KazooOperationTimeout) as exc:
            LOG.debug("topology watch deferred until reconnect (%s)", exc)

    def resync(self, resync: bool) -> None:
        zk, items, known = self._store.client, {}, {}
        for kind, children in self._store.children_by_kind(self._on_children).items():
            fetches = {c: zk.get_async(self._store.path(f"{kind}/{c}"), watch=self._on_data)
                       for c in children}
            for child, fetch in fetches.items():
                try:
                    data, stat = fetch.get()
                except NoNodeError:
                    continue
                items[f"{kind}/{child}"] = data
                known[f"{kind}/{child}"] = stat.mzxid
        self._known = known
        self._sink(RawSnapshot(items, resync=resync))

    def _on_children(self, event: Any) -> None:
        self.submit(self._refresh_kind, event.path.rsplit("/", 1)[1])

    def _on_data(self, event: Any) -> None:
        self.submit(self._refresh_path, self._store.relative(event.path))

    def _refresh_kind(self, kind: str) -> None:
        zk = self._store.client
        children = set(zk.get_children(self._store.path(kind), watch=self._on_children))
        present = {p for p in self._known if p.startswith(kind + "/")}
        for path in sorted(present - {f"{kind}/{c}" for c in children}):
            del self._known[path]
            self._sink(RawChange(path, None))
        for child in sorted(children):
            if f"{kind}/{child}" not in self._known:
                self._refresh_path(f"{kind}/{child}")

    def _refresh_path(self, path: str) -> None:
        try:
            data, stat = self._store.client.get(self._store.path(path), watch=self._on_data)
        except NoNodeError:
            if self._known.pop(path, None) is not None:
                self._sink(RawChange(path, None))
            return
        if stat.mzxid > self._known.get(path, -1):
            self._known[path] = stat.mzxid
            self._sink(RawChange(path, data))


class ZooKeeperRecordStore(RecordStoreDriver):
    """Topology records as persistent znodes `topology/<kind>/<key>` holding JSON."""

    def __init__(self, coordinator: ZooKeeperCoordinator) -> None:
        from coordination.records import KINDS

        self.coordinator = coordinator
        self.root = f"{coordinator.prefix}/topology"
        self.kinds = KINDS
        self.watches: set[_ZooKeeperWatch] = set()
        self._ready = False

    @property
    def client(self) -> BoundedClient:
        return self.coordinator.zk

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def relative(self, path: str) -> str:
        return path[len(self.root) + 1:]

    def _prepare(self) -> None:
        if not self._ready:
            for kind in self.kinds:
                self.client.ensure_path(self.path(kind))
            self._ready = True

    def children_by_kind(self, watch: Callable[..., None] | None = None) -> dict[str, list[str]]:
        self._prepare()
        fetches = {k: self.client.get_children_async(self.path(k), watch=watch) for k in self.kinds}
        return {kind: fetch.get() for kind, fetch in fetches.items()}

    def get(self, path: str) -> Versioned | None:
        def op() -> Versioned | None:
            try:
                data, stat = self.client.get(self.path(path))
            except NoNodeError:
                return None
            return Versioned(data, stat.version)

        return self.coordinator.call(op, f"get {path}")

    def create(self, path: str, value: bytes) -> None:
        def op() -> None:
            self._prepare()
            try:
                self.client.create(self.path(path), value)
            except NodeExistsError:
                raise RecordExistsError(path) from None

        self.coordinator.call(op, f"create {path}")

    def update(self, path: str, value: bytes, version: int) -> None:
        def op() -> None:
            try:
                self.client.set(self.path(path), value, version)
            except (BadVersionError, NoNodeError):
                raise VersionMismatchError(path) from None

        self.coordinator.call(op, f"update {path}")

    def remove(self, path: str, version: int | None = None) -> bool:
        def op() -> bool:
            try:
                self.client.delete(self.path(path), -1 if version is None else version)
            except NoNodeError:
                return False
            except BadVersionError:
                raise VersionMismatchError(path) from None
            return True

        return self.coordinator.call(op, f"delete {path}")

    def list(self, prefix: str = "") -> dict[str, Versioned]:
        def op() -> dict[str, Versioned]:
            self._prepare()
            self.client.sync(self.root)
            fetches = {}
            for kind, children in self.children_by_kind().items():
                for child in children:
                    if f"{kind}/{child}".startswith(prefix):
                        fetches[f"{kind}/{child}"] = self.client.get_async(self.path(f"{kind}/{child}"))
            out = {}
            for path, fetch in fetches.items():
                try:
                    data, stat = fetch.get()
                except NoNodeError:
                    continue
                out[path] = Versioned(data, stat.version)
            return out

        return self.coordinator.call(op, "list topology")

    def watch(self, sink: Callable[[RawEvent], None]) -> WatchHandle:
        watch = _ZooKeeperWatch(self, sink)
        self.watches.add(watch)
        watch.submit(watch.resync, False)
        return watch


class ZooKeeperCoordinator(Coordinator):
    """A member's kazoo session. See the module docstring for the znode layout."""

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
        # elections run on `worker`, topology watches on `watch_worker`, and session state on
        # `session_worker`, so a state change is never queued behind a call waiting out an
        # outage (a leader must hear SUSPENDED at once, to hold)
        self.worker = SerialExecutor(f"zk-driver[{member_id}]")
        self.watch_worker = SerialExecutor(f"zk-watches[{member_id}]")
        self.session_worker = SerialExecutor(f"zk-session[{member_id}]")
        self._session_id: int | None = None
        self._suspended_at: int = 0
        self._records: ZooKeeperRecordStore | None = None
        self._retry = retrying(options["retry_attempts"], options["retry_max_delay"], _RETRIED,
                               "zookeeper operation")
        acl = None
        if auth:
            user, _, password = auth.partition(":")
            acl = [make_digest_acl(user, password, all=True)]
        handler = _make_handler(options["handler"])
        self.client = KazooClient(
            hosts=self.hosts,
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

    # ---- helpers --------------------------------------------------------------------------

    def translate(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap `func` so kazoo errors surface as the project's own."""

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except CoordinationError:
                raise
            except SessionExpiredError as exc:
                raise SessionLostError(f"zookeeper session expired: {exc}") from exc
            except (NoAuthError, AuthFailedError) as exc:
                raise CoordinationError(
                    f"zookeeper refused access under {self.prefix} ({type(exc).__name__}): "
                    "check the auth option and the znodes' ACLs") from exc
            except _TRANSIENT as exc:
                raise OperationTimeoutError(f"zookeeper at {self.hosts}: {exc!r}") from exc
            except KazooException as exc:
                raise CoordinationError(f"zookeeper error: {exc!r}") from exc

        return wrapper

    def call(self, func: Callable[[], Any], what: str) -> Any:
        """Run a store operation with bounded retries for transient errors."""
        return self.translate(self._retry(func))()

    # ---- lifecycle ------------------------------------------------------------------------

    def _driver_start(self) -> None:
        try:
            self.client.start(timeout=float(self.options["connect_timeout"]))
        except (KazooTimeoutError, KazooException, OSError, ValueError) as exc:
            self._shutdown_client()
            for executor in (self.worker, self.watch_worker, self.session_worker):
                executor.stop(0)
            raise BackendConnectionError(
                f"could not connect to zookeeper at {self.hosts} within "
                f"{self.options['connect_timeout']} s: {exc}") from None
        self.client.add_listener(self._on_kazoo_state)
        try:
            self.session_worker.call(self.translate(self._new_session),
                                     timeout=self.op_timeout * 3)
        except BaseException:
            self._shutdown_client()
            raise

    def _shutdown_client(self) -> None:
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
        for executor in (self.session_worker, self.worker, self.watch_worker):
            executor.stop()
        self._shutdown_client()

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
            session = self.client.client_id[0] if self.client.client_id else None
            if session is not None and session == self._session_id \
                    and self.session_state is SessionState.SUSPENDED:
                self._set_session_state(SessionState.CONNECTED)
                self._resync_watches()
            else:
                if self.session_state is not SessionState.LOST:
                    self._set_session_state(SessionState.LOST)
                self._guarded_new_session()

    def _suspension_expired(self, generation: int) -> None:
        """Suspended for a whole session timeout: the server has expired us, so act as LOST
        now rather than when the connection returns (Curator's rule)."""
        if generation == self._suspended_at and self.session_state is SessionState.SUSPENDED:
            LOG.warning("member %s: suspended for %.1f s, treating the session as lost",
                        self.member_id, self.session_timeout)
            self._session_id = None
            self._set_session_state(SessionState.LOST)

    def _guarded_new_session(self) -> None:
        try:
            self._new_session()
        except KazooException as exc:
            LOG.warning("member %s: re-registering after reconnect failed (%s); retrying "
                        "at the next connection event or watchdog tick", self.member_id, exc)

    def _new_session(self) -> None:
        self._register()
        self._session_id = self.client.client_id[0]
        self._set_session_state(SessionState.CONNECTED)
        self._resync_watches()

    def _resync_watches(self) -> None:
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
                return
            except NodeExistsError:
                try:
                    _, stat = self.zk.get(path)
                    if stat.ephemeralOwner == self.client.client_id[0]:
                        return
                    LOG.warning("member id %r was registered by another session; taking it over",
                                self.member_id)
                    self.zk.delete(path, stat.version)
                except (NoNodeError, BadVersionError):
                    continue
        raise CoordinationError(f"could not register member {self.member_id!r}")

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
            out = {}
            for name, fetch in sorted(fetches.items()):
                try:
                    info = MemberInfo.from_dict(json.loads(fetch.get()[0]))
                except NoNodeError:
                    continue
                except (ValueError, KeyError, TypeError) as exc:
                    LOG.error("skipping malformed member record %s: %s", name, exc)
                    continue
                out[info.member_id] = info
            return out

        return self.call(op, "list members")

    def _driver_election(self, name: str) -> Election:
        return ZooKeeperElection(self, name)

    def _driver_election_names(self) -> list[str]:
        def op() -> list[str]:
            try:
                return sorted(self.zk.get_children(f"{self.prefix}/elections"))
            except NoNodeError:
                return []

        return self.call(op, "list elections")

    def _driver_record_store(self) -> RecordStoreDriver:
        if self._records is None:
            self._records = ZooKeeperRecordStore(self)
        return self._records
