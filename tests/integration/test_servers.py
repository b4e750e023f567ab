"""Self-tests of the real-server fixtures: each one starts, serves and survives its faults.

Fast checks only: ZooKeeper (single + ensemble failover), etcd (gateway put/get, cluster
failover, TLS + auth), the fault proxy (cut / blackhole / restore; a real ZooKeeper session
expiring behind a blackhole) and a private Open vSwitch whose bridge dials a controller.
"""

from __future__ import annotations

import base64
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from tests.servers.etcd import EtcdCluster, EtcdServer
from tests.servers.ovs import OvsInstance
from tests.servers.proxy import TcpProxy
from tests.servers.zookeeper import ZooKeeperEnsemble, ZooKeeperServer, four_letter

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- ZooKeeper --------------------------------------------------------------------------------
def test_zookeeper_single_answers_ruok_and_srvr(zookeeper: ZooKeeperServer) -> None:
    assert four_letter("127.0.0.1", zookeeper.port, "ruok") == "imok"
    assert zookeeper.mode() == "standalone"
    assert zookeeper.hosts == f"127.0.0.1:{zookeeper.port}"


def test_zookeeper_grants_one_second_sessions(zookeeper: ZooKeeperServer) -> None:
    kazoo_client = pytest.importorskip("kazoo.client")
    client = kazoo_client.KazooClient(hosts=zookeeper.hosts, timeout=1.0)
    client.start(timeout=10)
    try:
        assert client._session_timeout == 1000  # negotiated: min session = 2 * tickTime
        client.create("/fixture-selftest", b"x", ephemeral=True)
        assert client.get("/fixture-selftest")[0] == b"x"
    finally:
        client.stop()
        client.close()


def test_zookeeper_restart_keeps_port_and_data(zookeeper_factory) -> None:
    server = zookeeper_factory()
    kazoo_client = pytest.importorskip("kazoo.client")
    client = kazoo_client.KazooClient(hosts=server.hosts)
    client.start(timeout=10)
    try:
        client.create("/kept", b"1")
    finally:
        client.stop()
        client.close()
    port, old_pid = server.port, server.pid
    server.kill()
    assert not server.running
    server.restart()
    assert server.port == port and server.pid != old_pid
    client = kazoo_client.KazooClient(hosts=server.hosts)
    client.start(timeout=10)
    try:
        assert client.get("/kept")[0] == b"1"
    finally:
        client.stop()
        client.close()


def test_zookeeper_ensemble_survives_leader_stop(zookeeper_ensemble: ZooKeeperEnsemble) -> None:
    ens = zookeeper_ensemble
    assert len(ens.members) == 3 and len(ens.hosts.split(",")) == 3
    leader = ens.wait_leader(timeout=30)
    ens.stop_member(leader)
    ens.wait_serving(timeout=30)
    new_leader = ens.leader_index()
    assert new_leader is not None and new_leader != leader
    for i, member in enumerate(ens.members):
        if i != leader:
            assert member.mode() in ("leader", "follower")
    ens.start_member(leader, timeout=30)
    ens.wait_serving(timeout=30)
    assert ens.members[leader].mode() == "follower"


# -- etcd -------------------------------------------------------------------------------------
def test_etcd_put_get_over_http_gateway(etcd: EtcdServer) -> None:
    reply = etcd.http("/v3/kv/put", {"key": _b64("fixture/key"), "value": _b64("value-1")})
    assert int(reply["header"]["revision"]) >= 2
    got = etcd.http("/v3/kv/range", {"key": _b64("fixture/key")})
    assert base64.b64decode(got["kvs"][0]["value"]) == b"value-1"
    assert etcd.get("fixture/key") == "value-1"
    assert etcd.client_url == f"http://{etcd.endpoints}"


def test_etcd_cluster_survives_leader_stop(etcd_cluster: EtcdCluster) -> None:
    cluster = etcd_cluster
    assert len(cluster.endpoints.split(",")) == 3
    leader = cluster.wait_leader(timeout=30)
    old_pid = cluster.members[leader].pid
    cluster.stop_member(leader)
    cluster.wait_serving(timeout=30)
    new_leader = cluster.leader_index()
    assert new_leader is not None and new_leader != leader
    cluster.members[new_leader].put("after-failover", "ok")
    cluster.start_member(leader, timeout=30)
    assert cluster.members[leader].pid != old_pid
    cluster.wait_serving(timeout=30)
    assert cluster.members[leader].get("after-failover") == "ok"


def test_etcd_tls_and_auth(etcd_factory) -> None:
    server: EtcdServer = etcd_factory(tls=True, auth=("alice", "secret"))
    assert server.client_url.startswith("https://")
    assert server.ca_file and server.ca_file.exists()
    with pytest.raises(Exception, match="user name is empty"):
        server.put("k", "v")  # no token: refused
    token = server.auth_token()
    server.put("k", "v", token)
    assert server.get("k", token) == "v"
    out = server.etcdctl("get", "k", "--print-value-only", user="alice", password="secret").stdout
    assert out.strip() == "v"


# -- proxy ------------------------------------------------------------------------------------
@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    """A threaded loopback echo server."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conns.append(conn)
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()
    finally:
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)
        for conn in conns:
            conn.close()


def _echo(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    data = b""
    while len(data) < len(payload):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _refused(address: tuple[str, int]) -> bool:
    """Connecting fails, or the connection is closed at once (the reset can beat connect())."""
    try:
        sock = socket.create_connection(address, timeout=5)
    except ConnectionError:
        return True
    with sock:
        return _closed_by_peer(sock)


def test_proxy_cut_and_restore(echo_server: tuple[str, int], tcp_proxy) -> None:
    proxy: TcpProxy = tcp_proxy(*echo_server)
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    assert _echo(sock, b"hello") == b"hello"
    assert proxy.live_connections == 1

    proxy.cut()
    assert _closed_by_peer(sock)
    sock.close()
    assert _refused((proxy.host, proxy.port))  # new connections are closed at once while cut

    proxy.restore()
    again = socket.create_connection((proxy.host, proxy.port), timeout=5)
    assert _echo(again, b"back") == b"back"
    again.close()


def test_proxy_blackhole_holds_bytes_until_restore(echo_server: tuple[str, int], tcp_proxy) -> None:
    proxy: TcpProxy = tcp_proxy(*echo_server)
    sock = socket.create_connection((proxy.host, proxy.port), timeout=5)
    assert _echo(sock, b"one") == b"one"
    proxy.blackhole()
    sock.sendall(b"two")
    sock.settimeout(0.3)  # bounded negative check: nothing may come back while black-holed
    with pytest.raises(TimeoutError):
        sock.recv(16)
    proxy.restore()
    sock.settimeout(5)
    assert sock.recv(16) == b"two"  # held, not dropped
    sock.close()


def test_blackhole_expires_a_real_zookeeper_session(zookeeper: ZooKeeperServer, tcp_proxy) -> None:
    kazoo_client = pytest.importorskip("kazoo.client")
    from kazoo.protocol.states import KazooState

    LOST = KazooState.LOST
    proxy: TcpProxy = tcp_proxy("127.0.0.1", zookeeper.port)
    client = kazoo_client.KazooClient(hosts=proxy.address, timeout=1.0)
    states: list[str] = []
    lost = threading.Event()
    suspended = threading.Event()
    reconnected = threading.Event()

    def listener(state: str) -> None:
        states.append(state)
        if state == KazooState.SUSPENDED:
            suspended.set()
        if state == KazooState.LOST:
            lost.set()
        if state == KazooState.CONNECTED and lost.is_set():
            reconnected.set()

    client.add_listener(listener)
    client.start(timeout=10)
    try:
        session_id = client.client_id[0]
        closes = proxy.target_closes
        proxy.blackhole()
        assert suspended.wait(10), states  # client notices silence (no RST)
        # The server expires the silent session (1 s) and closes its end: seen by the proxy,
        # held back from the client. Only then heal the partition.
        assert proxy.wait_target_closes(closes + 1, timeout=10), states
        assert LOST not in states
        proxy.restore()
        assert lost.wait(15), states  # on reconnect the server says: session expired
        assert reconnected.wait(15), states  # kazoo then starts a new session by itself
        client.create("/after-expiry", ephemeral=True)
        assert client.client_id[0] != session_id
    finally:
        client.stop()
        client.close()


# -- Open vSwitch -----------------------------------------------------------------------------
def test_ovs_bridge_dials_controller_with_openflow13_hello(ovs: OvsInstance) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    port = listener.getsockname()[1]
    try:
        ovs.add_bridge("br1", 0x1, [port])
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            header = conn.recv(8)
            version, msg_type, length, _xid = struct.unpack("!BBHI", header)
            assert (version, msg_type) == (0x04, 0)  # OpenFlow 1.3 OFPT_HELLO
            assert length >= 8
            conn.sendall(struct.pack("!BBHI", 4, 0, 8, 1))  # answer HELLO: handshake done
            ctls = ovs.controllers("br1")
            assert [c["target"] for c in ctls] == [f"tcp:127.0.0.1:{port}"]
            assert isinstance(ctls[0]["is_connected"], bool)
            # OVSDB refreshes controller status every ~5 s; wait-until blocks on its monitor.
            ovs.wait_controller("br1", "is_connected=true", timeout=15)
            (ctl,) = ovs.controllers("br1")
            assert ctl["is_connected"] is True and ctl["role"] == "other"
    finally:
        listener.close()


def test_ovs_topology_building_blocks(ovs: OvsInstance) -> None:
    ovs.add_bridges([("s1", 1, []), {"name": "s2", "dpid": 2, "controller_ports": []}])
    ovs.add_patch_link("s1", 1, "s2", 1)
    ovs.add_host_port("s1", "h1", 10)
    ovs.ofctl("add-flow", "s1", "priority=0,actions=CONTROLLER:65535")
    assert "actions=CONTROLLER:65535" in ovs.ofctl("dump-flows", "s1")
    show = ovs.ofctl("show", "s1")
    assert "1(s1-to-s2)" in show and "10(h1)" in show
    assert "dpid:0000000000000002" in ovs.ofctl("show", "s2")
    ovs.inject(
        "h1",
        "eth(src=00:00:00:00:00:01,dst=ff:ff:ff:ff:ff:ff),eth_type(0x0806),"
        "arp(sip=10.0.0.1,tip=10.0.0.2,op=1,sha=00:00:00:00:00:01,tha=00:00:00:00:00:00)",
    )
    ovs.del_port("s1", "s1-to-s2")
    assert "s1-to-s2" not in ovs.ofctl("show", "s1")
    assert ovs.vswitchd_pid is not None and ovs.ctl_path.exists()
