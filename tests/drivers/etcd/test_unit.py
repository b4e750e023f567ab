"""Unit tests of the etcd driver's server-free parts: key ordering, the election cache and the
settling step, txns in batches, error classification, failover, watch resume bookkeeping, both
transports' encodings (nested txns included), options and transport choice."""

from __future__ import annotations

import importlib.util
import sys
import types
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from backends.etcd import EtcdCoordinator, choose_transport
from backends.etcd import client as C
from backends.etcd.cache import ElectionCache, rank_candidates
from backends.etcd.election import EtcdElection
from coordination import CampaignRequest, ConfigurationError, Leadership, SessionState, parse_url
from coordination.options import COMMON_OPTIONS, resolve_options
from tests.requirements import missing

# ---- keys and ordering --------------------------------------------------------------------


def test_prefix_end() -> None:
    assert C.prefix_end(b"/a/") == b"/a0"
    assert C.prefix_end(b"a\xff") == b"b"
    assert C.prefix_end(b"\xff\xff") == b"\x00"


def test_candidates_rank_by_priority_then_create_revision() -> None:
    prefix = b"/p/elections/e/candidates/"

    def kv(rank: int, lease: str, revision: int) -> C.KeyValue:
        return C.KeyValue(prefix + f"{rank:06d}/{lease}".encode(), b"{}", revision, revision)

    kvs = (kv(999990, "aa", 5), kv(999999, "01", 3), kv(999990, "ff", 4),
           C.KeyValue(prefix + b"garbage", b"", 1, 1))
    ranked = rank_candidates(prefix, kvs)
    # rank 999990 (priority 9) first, oldest first inside it; the foreign key is ignored
    assert [(r.priority, r.kv.create_revision) for r in ranked] == [(9, 4), (9, 5), (0, 3)]


# ---- the election cache ---------------------------------------------------------------------

ROOT = b"/p/elections/"


def _cand(name: str, rank: int, lease: str, revision: int, member: str = "m") -> C.KeyValue:
    key = ROOT + f"{name}/candidates/{rank:06d}/{lease}".encode()
    value = f'{{"member_id": "{member}", "priority": {999999 - rank}}}'.encode()
    return C.KeyValue(key, value, revision, revision)


def _leader(name: str, candidate: C.KeyValue, revision: int, member: str = "m") -> C.KeyValue:
    value = (f'{{"member_id": "{member}", "candidate": "{candidate.key.decode()}", '
             f'"create_revision": {candidate.create_revision}}}').encode()
    return C.KeyValue(ROOT + f"{name}/leader".encode(), value, 2, revision)


def test_cache_loads_applies_events_and_reports_leaders() -> None:
    cache = ElectionCache(ROOT)
    a, b = _cand("e", 999999, "aa", 3, "a"), _cand("e", 999999, "bb", 4, "b")
    touched = cache.load([a, b, _leader("e", a, 5, "a"), C.KeyValue(ROOT + b"junk", b"")], 6)
    assert touched == {"e"} and cache.revision == 6
    view = cache.view("e")
    assert view is not None and [r.kv.key for r in view.ranked()] == [a.key, b.key]
    assert view.leadership() == Leadership("a", 5) and view.names(a.key, 3)
    # a resigns: its key goes, the leader key still names it, so nobody leads
    assert cache.apply([C.WatchEvent("delete", C.KeyValue(a.key, b"", 0, 7))]) == {"e"}
    assert view.leadership() is None and cache.revision == 7
    # b takes over; an event for another prefix or a foreign key changes nothing
    cache.apply([C.WatchEvent("put", _leader("e", b, 8, "b")),
                 C.WatchEvent("put", C.KeyValue(ROOT + b"e/other", b"", 9, 9))])
    assert view.leadership() == Leadership("b", 8) and cache.revision == 9


def test_cache_keeps_our_own_leader_write_against_older_events() -> None:
    cache = ElectionCache(ROOT)
    a = _cand("e", 999999, "aa", 3)
    cache.load([a], 3)
    cache.note_leader("e", _leader("e", a, 10))  # our txn at 10, before its event arrives
    cache.apply([C.WatchEvent("delete", C.KeyValue(ROOT + b"e/leader", b"", 0, 9))])
    view = cache.view("e")
    assert view is not None and view.leadership() == Leadership("m", 10)


# ---- settling one election ----------------------------------------------------------------


def _election(co: EtcdCoordinator, priority: int = 0) -> EtcdElection:
    co._state = SessionState.CONNECTED
    co.lease_id = 0xAA
    election = co.election("e")
    assert isinstance(election, EtcdElection)
    election._begin_campaign(CampaignRequest("e", priority))
    key = election.candidate_key(priority, 0xAA)
    election.key, election.key_rev, election.key_lease, election.joined_at = key, 3, 0xAA, 3
    return election


def _kv(election: EtcdElection, revision: int, lease: str = "00000000000000aa") -> C.KeyValue:
    return C.KeyValue(election.band(0) + lease.encode(), b"{}", revision, revision)


def test_first_candidate_writes_the_leader_key_under_compares() -> None:
    for co in _coordinator("etcd3://h1/p"):
        election = _election(co)
        cache = ElectionCache(b"/p/elections/")
        cache.load([_kv(election, 3)], 3)
        txn = election.settle(cache.view("e"), cache.revision, co.lease_id, True)
        assert isinstance(txn, C.Txn) and txn.size() == 4
        assert [(c.target, c.op, c.value) for c in txn.compares] == [
            ("create", "==", 3), ("create", "==", 0), ("create", ">", 2), ("mod", "==", 0)]
        assert election.settle(cache.view("e"), 3, co.lease_id, False) is None  # suspended


def test_leader_key_naming_us_is_adopted_once_and_never_reused() -> None:
    for co in _coordinator("etcd3://h1/p"):
        election = _election(co)
        mine = _kv(election, 3)
        cache = ElectionCache(b"/p/elections/")
        cache.load([mine, _leader("e", mine, 9, "m1")], 9)
        # our write whose reply was lost: its revision is our term
        assert election.settle(cache.view("e"), 9, co.lease_id, True) is None
        assert election.leadership == Leadership("m1", 9)
        # preempted, then back first while the leader key still names us: a new term is due
        election._revoked()
        txn = election.settle(cache.view("e"), 9, co.lease_id, True)
        assert isinstance(txn, C.Txn) and txn.compares[3].value == 9


def test_behind_an_older_candidate_and_a_vanished_key() -> None:
    for co in _coordinator("etcd3://h1/p"):
        election = _election(co)
        cache = ElectionCache(b"/p/elections/")
        cache.load([_kv(election, 2, "00000000000000bb"), _kv(election, 3)], 3)
        assert election.settle(cache.view("e"), 3, co.lease_id, True) is None
        election.joined_at = 5
        cache.load([_kv(election, 2, "00000000000000bb")], 4)
        # our create (at 5) has not come through the watch yet: wait for it
        assert election.settle(cache.view("e"), 4, co.lease_id, True) is None
        cache.load([_kv(election, 2, "00000000000000bb")], 6)
        assert election.settle(cache.view("e"), 6, co.lease_id, True) == "rejoin"
        assert election.key is None


# ---- txns in batches ------------------------------------------------------------------------


class LimitedServer:
    """A txn endpoint that refuses txns over 16 operations (nested compares included)."""

    def __init__(self) -> None:
        self.sent: list[int] = []

    def txn(self, compares: Any, success: Sequence[C.Op], failure: Any = ()) -> C.TxnResult:
        nested = max((op.size() for op in success if isinstance(op, C.Txn)), default=0)
        if len(success) + nested > 16:
            raise C.EtcdTooManyOps("too many operations in txn request")
        self.sent.append(len(success))
        return C.TxnResult(True, 100 + len(self.sent), tuple(C.DeleteResult(1) for _ in success))


def test_txns_fit_the_servers_limit_and_keep_order() -> None:
    server = LimitedServer()
    nested = C.Txn((C.Compare.mod(b"k", "==", 0),) * 4, (C.Put(b"k", b"v"),))
    for co in _coordinator("etcd3://h1/p"):
        co.txn = server.txn  # type: ignore[method-assign]
        results = co.engine.txns(list(range(40)), lambda i: C.Delete(b"%d" % i))
        assert [item for item, _, _ in results] == list(range(40))
        assert co.engine.max_txn_ops == 16 and max(server.sent) == 16
        results = co.engine.txns(list(range(30)), lambda i: nested, nested=nested.size())
        assert len(results) == 30 and server.sent[-1] <= 12


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "message", "kind"), [
    (14, "connection refused", C.EtcdUnavailable),
    (4, "Deadline Exceeded", C.EtcdUnavailable),
    (14, "etcdserver: no leader", C.EtcdUnavailable),
    (2, "etcdserver: request timed out", C.EtcdUnavailable),
    (3, "etcdserver: authentication failed, invalid user ID or password", C.EtcdAuthFailed),
    (3, "etcdserver: user name is empty", C.EtcdAuthFailed),
    (3, "etcdserver: invalid auth token", C.EtcdTokenExpired),
    (7, "etcdserver: permission denied", C.EtcdPermissionDenied),
    (11, "etcdserver: mvcc: required revision has been compacted", C.EtcdCompacted),
    (5, "etcdserver: requested lease not found", C.EtcdLeaseNotFound),
    (3, "etcdserver: duplicate key given in txn request", C.EtcdClientError),
])
def test_errors_are_classified(code: int, message: str, kind: type[Exception]) -> None:
    error = C.error_from_status(code, message, "here")
    assert type(error) is kind
    assert "here" in str(error) and message in str(error)


def test_client_errors_belong_to_the_project_hierarchy() -> None:
    from coordination import BackendConnectionError, CoordinationError

    assert issubclass(C.EtcdUnavailable, BackendConnectionError)
    assert issubclass(C.EtcdAuthFailed, BackendConnectionError)
    assert issubclass(C.EtcdClientError, CoordinationError)


# ---- failover -------------------------------------------------------------------------------


class FakeClient(C.EtcdClient):
    """Endpoints answer from a script: a list of outcomes (exception instances or values)."""

    def __init__(self, outcomes: dict[int, list[Any]], user: str | None = None) -> None:
        super().__init__(C.ClientConfig(endpoints=(("h1", 1), ("h2", 2), ("h3", 3)),
                                        user=user, timeout=1.0))
        self.outcomes = outcomes
        self.calls: list[int] = []
        self.auths: list[int] = []

    def _next(self, index: int) -> Any:
        self.calls.append(index)
        outcome = self.outcomes[index].pop(0) if self.outcomes[index] else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _probe_at(self, index: int, timeout: float) -> None:
        self._next(index)

    def _authenticate(self, index: int, timeout: float) -> None:
        self.auths.append(index)

    def _range_at(self, index: int, get: C.Get, timeout: float) -> C.RangeResult:
        self._next(index)
        return C.RangeResult((), index)

    def _txn_at(self, index: int, compares: Sequence[C.Compare], success: Sequence[C.Op],
                failure: Sequence[C.Op], timeout: float) -> C.TxnResult:
        self._next(index)
        return C.TxnResult(True, index)

    def _lease_grant_at(self, index: int, ttl: int, timeout: float) -> tuple[int, int]:
        return 1, ttl

    def _lease_keepalive_at(self, index: int, lease_id: int, timeout: float) -> int:
        return 1

    def _lease_revoke_at(self, index: int, lease_id: int, timeout: float) -> None:
        self._next(index)

    def watch(self, *args: Any, **kwargs: Any) -> C.StreamHandle:
        raise NotImplementedError

    def watch_count(self) -> int:
        return 0


def test_failover_moves_to_the_next_endpoint_and_stays_there() -> None:
    client = FakeClient({0: [C.EtcdUnavailable("down")], 1: [], 2: []})
    assert client.range(b"k").revision == 1
    assert client.current_endpoint == 1
    assert client.range(b"k").revision == 1  # no retry of the dead one first
    assert client.calls == [0, 1, 1]


def test_every_endpoint_down_names_them_all() -> None:
    down = {i: [C.EtcdUnavailable(f"down {i}")] for i in range(3)}
    client = FakeClient(down)
    with pytest.raises(C.EtcdUnavailable) as info:
        client.txn([], [])
    for name in ("h1:1", "h2:2", "h3:3", "down 0", "down 2"):
        assert name in str(info.value)


def test_expired_token_is_renewed_once() -> None:
    client = FakeClient({0: [C.EtcdTokenExpired("stale")], 1: [], 2: []}, user="u")
    assert client.range(b"k").revision == 0
    assert client.auths == [0] and client.calls == [0, 0]
    client = FakeClient({0: [C.EtcdTokenExpired("a"), C.EtcdTokenExpired("b")], 1: [], 2: []},
                        user="u")
    with pytest.raises(C.EtcdAuthFailed):
        client.range(b"k")


def test_connect_names_unreachable_endpoints() -> None:
    client = FakeClient({i: [C.EtcdUnavailable(f"refused {i}")] * 1000 for i in range(3)})
    with pytest.raises(C.EtcdUnavailable, match=r"h1:1,h2:2,h3:3.*refused 0.*refused 2"):
        client.connect(0.3)


def test_revoking_an_unknown_lease_is_not_an_error() -> None:
    client = FakeClient({0: [C.EtcdLeaseNotFound("gone")], 1: [], 2: []})
    client.lease_revoke(7)


# ---- watch bookkeeping ----------------------------------------------------------------------


def _event(revision: int, kind: str = "put") -> C.WatchEvent:
    return C.WatchEvent(kind, C.KeyValue(b"k", b"v", 1, revision))  # type: ignore[arg-type]


def test_watch_state_resumes_after_what_it_delivered() -> None:
    got: list[Any] = []
    state = C.WatchState(b"k", None, 10, got.append, lambda r: got.append(("compacted", r)))
    state.deliver([_event(12), _event(15)])
    assert state.next_revision == 16
    state.deliver([], progress_revision=20)  # a progress notice moves the resume point too
    assert state.next_revision == 21
    state.compacted(30)
    state.compacted(31)
    state.deliver([_event(40)])
    assert got[-1] == ("compacted", 30) and len(got) == 2  # once, then nothing


def test_watch_state_from_now_learns_its_start_at_creation() -> None:
    created: list[int] = []
    state = C.WatchState(b"k", None, 0, lambda e: None, lambda r: None, on_created=created.append)
    state.created(41)
    state.created(57)  # a re-created stream resumes where the first one started
    assert state.next_revision == 42 and created == [41]


def test_a_failing_callback_does_not_break_delivery() -> None:
    def boom(events: list[C.WatchEvent]) -> None:
        raise RuntimeError("callback bug")

    state = C.WatchState(b"k", None, 1, boom, lambda r: None)
    state.deliver([_event(5)])
    assert state.next_revision == 6


# ---- encodings ------------------------------------------------------------------------------


def test_gateway_encoding() -> None:
    from backends.etcd import gateway_transport as G

    doc = G._compare(C.Compare.create(b"/a", ">", 4, b"/b"))
    assert doc == {"key": "L2E=", "target": "CREATE", "result": "GREATER",
                   "create_revision": "4", "range_end": "L2I="}
    put = G._request_op(C.Put(b"k", b"v", lease=255))
    assert put == {"request_put": {"key": "aw==", "value": "dg==", "lease": "255"}}
    kv = G._kv({"key": "aw==", "create_revision": "3", "mod_revision": "9", "version": "2"})
    assert kv == C.KeyValue(b"k", b"", 3, 9, 2, 0)
    result = G._op_result({"response_delete_range": {"deleted": "2"}}, 5)
    assert result == C.DeleteResult(2)
    nested = G._request_op(C.Txn((C.Compare.mod(b"k", "==", 0),), (C.Put(b"k", b"v", 0, True),)))
    assert nested == {"request_txn": {
        "compare": [{"key": "aw==", "target": "MOD", "result": "EQUAL", "mod_revision": "0"}],
        "success": [{"request_put": {"key": "aw==", "value": "dg==", "prev_kv": True}}],
        "failure": []}}
    # the gateway leaves out false and empty fields: a failed nested txn has no "succeeded"
    reply = G._txn_result({"succeeded": True, "responses": [
        {"response_txn": {"responses": []}},
        {"response_put": {"prev_kv": {"key": "aw==", "create_revision": "4"}}}]}, 9)
    assert reply == C.TxnResult(True, 9, (C.TxnResult(False, 9, ()),
                                          C.PutResult(C.KeyValue(b"k", b"", 4))))


def test_grpc_encoding() -> None:
    require_module("etcd3")
    from backends.etcd import grpc_transport as G

    pb = G._compare(C.Compare.mod(b"/a", "==", 0))
    assert pb.WhichOneof("target_union") == "mod_revision" and pb.mod_revision == 0
    pb = G._compare(C.Compare.create(b"/a", ">", 4, b"/b"))
    assert (pb.create_revision, pb.range_end) == (4, b"/b")
    op = G._request_op(C.Delete(b"/a", b"/b"))
    assert op.request_delete_range.range_end == b"/b"
    op = G._request_op(C.Txn((C.Compare.mod(b"k", "==", 0),), (C.Put(b"k", b"v", 7, True),)))
    assert op.request_txn.success[0].request_put.prev_kv and op.request_txn.compare[0].key == b"k"
    pb = G.etcdrpc.TxnResponse(succeeded=True, responses=[
        G.etcdrpc.ResponseOp(response_txn=G.etcdrpc.TxnResponse(succeeded=False)),
        G.etcdrpc.ResponseOp(response_put=G.etcdrpc.PutResponse(
            prev_kv=G.kv_pb2.KeyValue(key=b"k", create_revision=4)))])
    assert G._txn_result(pb, 9) == C.TxnResult(True, 9, (C.TxnResult(False, 9, ()),
                                                         C.PutResult(C.KeyValue(b"k", b"", 4))))


# ---- options and transports -----------------------------------------------------------------


def _coordinator(url: str, **options: Any) -> Iterator[EtcdCoordinator]:
    parsed = parse_url(url)
    resolved = resolve_options({**COMMON_OPTIONS, **EtcdCoordinator.OPTIONS}, parsed.options,
                               options)
    coordinator = EtcdCoordinator(parsed, "m1", resolved)
    try:
        yield coordinator
    finally:
        coordinator._driver_disconnect()  # never started: no executor runs


def test_options_from_the_url() -> None:
    url = "etcd3://sdn:pw@h1:2379,h2/sdn?lease_ttl=2.5&transport=gateway&ca_cert=/dev/null"
    for co in _coordinator(url):
        assert co.prefix == "/sdn" and co.ttl == 3 and co.transport == "gateway"
        assert co.config.endpoints == (("h1", 2379), ("h2", 2379))
        assert (co.config.user, co.config.password, co.config.ca_cert) == ("sdn", "pw",
                                                                            "/dev/null")
    for co in _coordinator("etcd3://h1", session_timeout=4):
        assert co.prefix == "/coordination" and co.ttl == 4


@pytest.mark.parametrize(("url", "options", "message"), [
    ("etcd3:///x", {}, "at least one host"),
    ("etcd3://h1?cert_cert=/c.pem", {}, "cert_cert and cert_key"),
    ("etcd3://h1?transport=quic", {}, "transport"),
    ("etcd3://h1?ca_cert=/nonexistent/ca.pem", {}, "ca_cert"),
])
def test_bad_configuration_is_refused(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        for _ in _coordinator(url, **options):
            pass


def test_transport_follows_eventlet(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_transport("auto") == "grpc" or "eventlet" in sys.modules
    fake = types.ModuleType("eventlet")
    fake.patcher = types.SimpleNamespace(is_monkey_patched=lambda name: name == "thread")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "eventlet", fake)
    assert choose_transport("auto") == "gateway"
    assert choose_transport("grpc") == "grpc"  # forcing is allowed (with a warning)
    assert choose_transport("gateway") == "gateway"


def require_module(name: str) -> None:
    """Check that `name` is installed (without importing it here), or skip the test (fail
    under CI=true, like every missing requirement)."""
    if importlib.util.find_spec(name) is None:
        missing(f"python module {name!r} is not installed; run `make setup`")
