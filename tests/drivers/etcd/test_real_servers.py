"""etcd-specific behaviour against real servers, on both transports: TLS, authentication,
unreachable endpoints, a cluster member dying under a leader, lease loss by silence,
compaction under a watch, no library exception crossing the API, and elections in batches
(few txns, one watch per member, a server with a lower --max-txn-ops)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from coordination import (
    BackendConnectionError,
    CampaignRequest,
    CoordinationError,
    Coordinator,
    SessionState,
    Snapshot,
    Switch,
    connect,
)
from coordination.testing import Recorder
from tests.servers.etcd import EtcdCluster, EtcdServer
from tests.servers.proxy import TcpProxy

pytestmark = pytest.mark.integration
WAIT = 15.0
TRANSPORTS = ["grpc", "gateway"]
Factory = Callable[..., EtcdServer]


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def opened() -> Iterator[list[Coordinator]]:
    """Coordinators a test opens; closed at teardown whatever happened."""
    coordinators: list[Coordinator] = []
    yield coordinators
    for coordinator in reversed(coordinators):
        coordinator.close()


def _namespace() -> str:
    return f"driver-{uuid.uuid4().hex[:10]}"


def _revision(server: EtcdServer) -> int:
    return int(server.http("/v3/kv/range", {"key": "AA=="})["header"]["revision"])


def _exercise(coordinator: Coordinator) -> None:
    """Elect, write and read back: proves a session works end to end."""
    elected = Recorder("elected")
    coordinator.election("dp-1").campaign(on_elected=elected)
    lead = elected.wait_count(1, WAIT)[0]
    coordinator.topology.put(Switch(dpid=1, owner=coordinator.member_id, term=lead.term))
    assert coordinator.topology.get("switch", Switch(dpid=1).key).term == lead.term
    assert set(coordinator.members()) == {coordinator.member_id}


# ---- TLS ------------------------------------------------------------------------------------


def test_tls_with_client_certificates(etcd_factory: Factory, transport: str,
                                      opened: list[Coordinator]) -> None:
    server = etcd_factory(tls=True, client_cert_auth=True)
    url = f"etcd3://{server.endpoint}/{_namespace()}"
    tls = {"ca_cert": str(server.ca_file), "cert_cert": str(server.cert_file),
           "cert_key": str(server.key_file)}
    opened.append(connect(url, "a", transport=transport, **tls))
    _exercise(opened[-1])
    # no client certificate: the server refuses the handshake
    with pytest.raises(BackendConnectionError, match=server.endpoint):
        connect(url, "b", transport=transport, ca_cert=str(server.ca_file), connect_timeout=2)
    # plain text against a TLS port
    with pytest.raises(BackendConnectionError, match=server.endpoint):
        connect(url, "c", transport=transport, connect_timeout=2)


# ---- authentication -------------------------------------------------------------------------


def test_auth_with_url_credentials_and_options(etcd_factory: Factory, transport: str,
                                               opened: list[Coordinator]) -> None:
    server = etcd_factory(auth=("sdn", "s3cret"))
    namespace = _namespace()
    opened.append(connect(f"etcd3://sdn:s3cret@{server.endpoint}/{namespace}", "a",
                          transport=transport))
    _exercise(opened[-1])
    opened.append(connect(f"etcd3://{server.endpoint}/{namespace}", "b", transport=transport,
                          user="sdn", password="s3cret"))
    assert set(opened[-1].members()) == {"a", "b"}


def test_auth_failures_are_clear(etcd_factory: Factory, transport: str) -> None:
    server = etcd_factory(auth=("sdn", "s3cret"))
    with pytest.raises(BackendConnectionError, match="sdn") as info:
        connect(f"etcd3://sdn:wrong@{server.endpoint}/x", "a", transport=transport,
                connect_timeout=3)
    assert "wrong" not in str(info.value)  # never show a password
    with pytest.raises(BackendConnectionError, match="requires authentication"):
        connect(f"etcd3://{server.endpoint}/x", "a", transport=transport, connect_timeout=3)


def test_expired_auth_token_is_renewed(etcd_factory: Factory, transport: str,
                                       opened: list[Coordinator]) -> None:
    server = etcd_factory(auth=("sdn", "s3cret"))
    coordinator = connect(f"etcd3://sdn:s3cret@{server.endpoint}/{_namespace()}", "a",
                          transport=transport)
    opened.append(coordinator)
    coordinator.client._token = "not-a-token"  # type: ignore[attr-defined]
    assert set(coordinator.members()) == {"a"}
    _exercise(coordinator)  # watches too (a fresh stream authenticates again)


# ---- unreachable endpoints ------------------------------------------------------------------


def test_unreachable_endpoints_are_named_within_connect_timeout(
        transport: str, tcp_proxy: Callable[[str, int], TcpProxy]) -> None:
    from tests.servers._process import free_ports

    refused = free_ports(2)
    silent = tcp_proxy("127.0.0.1", refused[0])
    silent.blackhole()  # accepts, then never answers: no RST to fail fast on
    endpoints = [f"127.0.0.1:{refused[0]}", f"127.0.0.1:{refused[1]}", silent.address]
    started = time.monotonic()
    with pytest.raises(BackendConnectionError) as info:
        connect(f"etcd3://{','.join(endpoints)}/x", "a", transport=transport,
                connect_timeout=1.5)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5 + 2.0, f"took {elapsed:.1f} s"
    for endpoint in endpoints:
        assert endpoint in str(info.value)


def test_errors_after_connect_are_the_projects_own(etcd: EtcdServer, transport: str,
                                                    opened: list[Coordinator],
                                                    tcp_proxy: Callable[[str, int], TcpProxy]
                                                    ) -> None:
    proxy = tcp_proxy(etcd.host, etcd.port)
    coordinator = connect(f"etcd3://{proxy.address}/{_namespace()}", "a", transport=transport,
                          lease_ttl=3, operation_timeout=1.5, retry_attempts=2)
    opened.append(coordinator)
    proxy.cut()
    started = time.monotonic()
    for call in (coordinator.members, coordinator.elections,
                 lambda: coordinator.topology.list(), lambda: coordinator.election("e").leader()):
        with pytest.raises(CoordinationError) as info:
            call()
        assert type(info.value).__module__.startswith(("coordination", "backends"))
    assert time.monotonic() - started < 4 * (1.5 + 2.0)
    proxy.restore()


# ---- a member of a 3-member cluster dies ----------------------------------------------------


@pytest.mark.parametrize("victim", ["current", "raft-leader"])
def test_cluster_member_killed_leadership_kept(etcd_cluster: EtcdCluster, transport: str,
                                               victim: str, opened: list[Coordinator]) -> None:
    """The member a leader talks to (or the raft leader) is killed: the driver fails over to
    another endpoint and, as the lease survives, keeps its leadership and its term."""
    namespace = _namespace()
    url = f"etcd3://{etcd_cluster.endpoints}/{namespace}"
    a = connect(url, "a", transport=transport, lease_ttl=5)
    b = connect(url, "b", transport=transport, lease_ttl=5)
    opened.extend([a, b])
    states, elected, revoked = Recorder("states"), Recorder("elected"), Recorder("revoked")
    a.add_session_listener(states)
    a.election("dp-1").campaign(on_elected=elected, on_revoked=revoked)
    first = elected.wait_count(1, WAIT)[0]
    b.election("dp-1").campaign()
    topology = Recorder("topology")
    b.topology.watch(topology)
    topology.wait_count(1, WAIT)
    if victim == "current":
        index = a.client.current_endpoint  # type: ignore[attr-defined]
    else:
        index = etcd_cluster.wait_leader()
    etcd_cluster.kill_member(index)
    # writes go through another member as soon as the cluster serves again
    deadline = time.monotonic() + WAIT
    while True:
        try:
            a.topology.put(Switch(dpid=7, owner="a", term=first.term))
            break
        except CoordinationError:
            if time.monotonic() > deadline:
                raise
    topology.wait_for(lambda items: any(getattr(x, "key", None) == Switch(dpid=7).key
                                        for x in items), WAIT)
    assert a.client.current_endpoint != index  # type: ignore[attr-defined]
    assert a.election("dp-1").leadership == first and not revoked.items
    assert SessionState.LOST not in states.items
    assert b.election("dp-1").leader() == first
    b.election("dp-1").resign()
    a.election("dp-1").resign()  # a hand-over still works on the surviving members
    assert revoked.wait_count(1, WAIT)[0] == first


# ---- the lease lost by silence --------------------------------------------------------------


def test_silence_longer_than_the_lease_is_lost_then_recovered(
        etcd: EtcdServer, transport: str, opened: list[Coordinator],
        tcp_proxy: Callable[[str, int], TcpProxy]) -> None:
    proxy = tcp_proxy(etcd.host, etcd.port)
    namespace = _namespace()
    a = connect(f"etcd3://{proxy.address}/{namespace}", "a", transport=transport, lease_ttl=2)
    b = connect(f"etcd3://{etcd.endpoint}/{namespace}", "b", transport=transport, lease_ttl=2)
    opened.extend([a, b])
    states, a_elected, a_revoked, b_elected = (Recorder("states"), Recorder("a elected"),
                                               Recorder("a revoked"), Recorder("b elected"))
    a.add_session_listener(states)
    a.election("e").campaign(on_elected=a_elected, on_revoked=a_revoked)
    first = a_elected.wait_count(1, WAIT)[0]
    b.election("e").campaign(on_elected=b_elected)
    proxy.blackhole()  # a network partition: no RST, just silence
    states.wait_for(lambda items: SessionState.SUSPENDED in items, WAIT)
    assert a_revoked.wait_count(1, WAIT)[0] == first  # LOST after the TTL: leadership dropped
    assert SessionState.LOST in states.items
    second = b_elected.wait_count(1, WAIT)[0]  # the server expired a's lease
    assert second.term > first.term
    proxy.restore()
    states.wait_for(lambda items: items[-1] is SessionState.CONNECTED, WAIT)
    b.election("e").resign()
    assert a_elected.wait_count(2, WAIT)[1].term > second.term


# ---- compaction -----------------------------------------------------------------------------


def test_compaction_under_a_watch_resyncs(etcd: EtcdServer, transport: str,
                                          opened: list[Coordinator],
                                          tcp_proxy: Callable[[str, int], TcpProxy]) -> None:
    """A watcher cut off while history it has not seen is compacted gets a resync snapshot
    with the current content (never a silent gap), and a follower's election watch recovers."""
    proxy = tcp_proxy(etcd.host, etcd.port)
    namespace = _namespace()
    options: dict[str, Any] = {"transport": transport, "lease_ttl": 10}
    writer = connect(f"etcd3://{etcd.endpoint}/{namespace}", "writer", **options)
    reader = connect(f"etcd3://{proxy.address}/{namespace}", "reader", **options)
    opened.extend([writer, reader])
    writer.topology.put(Switch(dpid=1, owner="writer", term=1))
    events = Recorder("topology")
    reader.topology.watch(events)
    assert [r.dpid for r in events.wait_count(1, WAIT)[0].records] == [1]
    w_elected, r_elected = Recorder("writer elected"), Recorder("reader elected")
    writer.election("e").campaign(on_elected=w_elected)
    w_elected.wait_count(1, WAIT)
    reader.election("e").campaign(on_elected=r_elected)
    assert [c.member_id for c in writer.election("e").candidates()] == ["writer", "reader"]
    proxy.blackhole()  # streams stall; the reader's lease (10 s) outlives this test step
    writer.topology.put(Switch(dpid=2, owner="writer", term=1))
    writer.topology.delete("switch", Switch(dpid=1).key)
    writer.election("e").resign()
    etcd.http("/v3/kv/compaction", {"revision": str(_revision(etcd)), "physical": True})
    proxy.cut()  # drop the stalled connections; the client reconnects once restored
    proxy.restore()
    resync = events.wait_for(lambda items: any(isinstance(x, Snapshot) and x.resync
                                               for x in items), WAIT)
    snapshot = next(x for x in resync if isinstance(x, Snapshot) and x.resync)
    assert [r.dpid for r in snapshot.records] == [2]
    lead = r_elected.wait_count(1, WAIT)[0]
    assert lead.member_id == "reader" and lead.term > w_elected.items[0].term


# ---- quorum lost, then back -----------------------------------------------------------------


def test_quorum_loss_drops_leadership_and_recovers(etcd_cluster: EtcdCluster, transport: str,
                                                   opened: list[Coordinator]) -> None:
    """Two of three members die: no keep-alive can succeed, so the session goes SUSPENDED,
    then LOST after the TTL (leadership revoked: nobody can vouch for it). With the members
    back, the coordinator gets a new lease and is elected again under a larger term."""
    url = f"etcd3://{etcd_cluster.endpoints}/{_namespace()}"
    a = connect(url, "a", transport=transport, lease_ttl=2, operation_timeout=2)
    opened.append(a)
    states, elected, revoked = Recorder("states"), Recorder("elected"), Recorder("revoked")
    a.add_session_listener(states)
    a.election("dp-1").campaign(on_elected=elected, on_revoked=revoked)
    first = elected.wait_count(1, WAIT)[0]
    etcd_cluster.kill_member(1)
    etcd_cluster.kill_member(2)
    assert revoked.wait_count(1, WAIT)[0] == first
    assert SessionState.SUSPENDED in states.items and SessionState.LOST in states.items
    for index in (1, 2):
        etcd_cluster.start_member(index, wait=False)
    etcd_cluster.wait_serving(WAIT)
    second = elected.wait_count(2, 2 * WAIT)[1]
    assert second.term > first.term and states.items[-1] is SessionState.CONNECTED


# ---- many elections: batches, one watch -------------------------------------------------------


class TxnCounter:
    """Counts the txns a coordinator's client sends (wraps `client.txn`)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.count = 0
        client = coordinator.client  # type: ignore[attr-defined]
        self._txn = client.txn
        client.txn = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self._txn(*args, **kwargs)


class WatchStarts:
    """Tells when a coordinator's client has started a watch (wraps `client.watch`)."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.started = threading.Event()
        client = coordinator.client  # type: ignore[attr-defined]
        self._watch = client.watch
        client.watch = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        handle = self._watch(*args, **kwargs)
        self.started.set()
        return handle


def _campaign_all(coordinator: Coordinator, names: list[str], elected: Recorder,
                  revoked: Recorder | None = None) -> None:
    coordinator.campaign_many(CampaignRequest(name, on_elected=lambda lead, n=name: elected((n, lead)),
                                              on_revoked=revoked and (lambda lead, n=name:
                                                                      revoked((n, lead))))
                              for name in names)


def test_many_elections_cost_few_txns_and_one_watch(etcd: EtcdServer, transport: str,
                                                    opened: list[Coordinator]) -> None:
    """400 elections: candidacies and leader keys are written in batches (a handful of txns,
    not one or more per election), each member holds one watch for all of them, and when the
    leader of all of them leaves, the other takes over every one under a larger term."""
    count = 400
    url = f"etcd3://{etcd.endpoint}/{_namespace()}"
    a = connect(url, "a", transport=transport, lease_ttl=5)
    b = connect(url, "b", transport=transport, lease_ttl=5)
    opened.extend([a, b])
    names = [f"dp-{i}" for i in range(count)]
    a_txns, b_txns = TxnCounter(a), TxnCounter(b)
    b_watch = WatchStarts(b)
    a_elected, b_elected = Recorder("a elected"), Recorder("b elected")
    _campaign_all(a, names, a_elected)
    first = dict(a_elected.wait_count(count, WAIT))
    # ceil(400 / 128) txns of puts + ceil(400 / 124) of nested leader writes, give or take
    assert a_txns.count <= 12, a_txns.count
    _campaign_all(b, names, b_elected)
    assert b_watch.started.wait(WAIT), "b started no watch"
    assert b.status()["watches"] == 1  # type: ignore[attr-defined]
    assert a.status()["watches"] == 1  # type: ignore[attr-defined]
    leaders = b.read_leaders(names)
    assert leaders == first
    assert [c.member_id for c in b.election("dp-7").candidates()] == ["a", "b"]
    a.resign_many(names)
    second = dict(b_elected.wait_count(count, WAIT))
    assert all(second[name].term > first[name].term for name in names)
    assert b_txns.count <= 12, b_txns.count
    assert b.read_leaders(names) == second
    assert len(b.read_leaders(names[:10])) == 10  # a few: read key by key, in one txn


def test_server_allowing_fewer_txn_ops(etcd_factory: Factory, transport: str,
                                       opened: list[Coordinator]) -> None:
    """A server started with a lower --max-txn-ops refuses our first batch; the driver halves
    its batches until they fit, and every election is still led."""
    server = etcd_factory(extra_args=["--max-txn-ops", "16"])
    url = f"etcd3://{server.endpoint}/{_namespace()}"
    a = connect(url, "a", transport=transport)
    opened.append(a)
    names = [f"dp-{i}" for i in range(100)]
    elected = Recorder("elected")
    _campaign_all(a, names, elected)
    assert {name for name, _ in elected.wait_count(len(names), WAIT)} == set(names)
    assert a.engine.max_txn_ops <= 16  # type: ignore[attr-defined]
    assert all(lead is not None for lead in a.read_leaders(names).values())
