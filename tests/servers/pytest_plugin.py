"""pytest fixtures for real ZooKeeper, etcd, Open vSwitch and a fault-injecting TCP proxy.

What: ``zookeeper`` (session), ``zookeeper_ensemble`` (module), ``etcd`` (session),
``etcd_cluster`` (module), ``ovs`` (function), ``tcp_proxy`` (factory), plus ``zookeeper_factory``
/ ``etcd_factory`` for tests that need a dedicated or specially configured server (TLS, auth).
Shared servers that a test stopped, killed or partly stopped are started again after that test,
so one destructive test cannot break the next. ``require_tool`` skips when a binary is missing,
but fails under ``CI=true`` so a CI matrix never goes silently green on nothing.

Why here: every fixture owns and stops what it started, even when the test failed.

Loaded once for the suite by ``pytest_plugins = ["tests.servers.pytest_plugin"]`` in
tests/conftest.py (pytest accepts ``pytest_plugins`` only in a top-level conftest). Elsewhere,
``from tests.servers.pytest_plugin import *`` in a conftest also works (``__all__`` lists all).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.requirements import require_tool

from .etcd import EtcdCluster, EtcdServer
from .ovs import OVS_TOOLS, SCHEMA_CANDIDATES, OvsInstance
from .proxy import TcpProxy
from .zookeeper import SLF4J_BINDING_JAR, ZOOKEEPER_JAR, ZooKeeperEnsemble, ZooKeeperServer

__all__ = [
    "etcd",
    "etcd_cluster",
    "etcd_factory",
    "heal_shared_servers",
    "ovs",
    "pytest_configure",
    "pytest_terminal_summary",
    "require_tool",
    "tcp_proxy",
    "zookeeper",
    "zookeeper_ensemble",
    "zookeeper_factory",
]

#: (what, seconds) of every server start done by these fixtures, shown in the terminal summary.
STARTUP_TIMES: list[tuple[str, float]] = []


def _require_zookeeper() -> None:
    require_tool("java", "default-jre-headless")
    require_tool(str(ZOOKEEPER_JAR), "zookeeper")
    require_tool(str(SLF4J_BINDING_JAR), "libslf4j-java")


def _require_etcd(auth: bool = False) -> None:
    require_tool("etcd", "etcd-server")
    if auth:
        require_tool("etcdctl", "etcd-client")


def _require_ovs() -> None:
    for tool in OVS_TOOLS:
        require_tool(tool, "openvswitch-switch")
    if not any(p.exists() for p in SCHEMA_CANDIDATES):
        require_tool(str(SCHEMA_CANDIDATES[0]), "openvswitch-switch")


def _timed(what: str, start: Callable[[], float]) -> None:
    STARTUP_TIMES.append((what, start()))


# -- hooks ------------------------------------------------------------------------------------
def pytest_configure(config: pytest.Config) -> None:
    """Register the ``integration`` marker."""
    config.addinivalue_line(
        "markers", "integration: needs real servers (ZooKeeper, etcd, Open vSwitch)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print how long each real server took to become ready."""
    if not STARTUP_TIMES:
        return
    terminalreporter.write_sep("-", "real server startup times")
    for what, seconds in STARTUP_TIMES:
        terminalreporter.write_line(f"{what:<28} {seconds:6.2f} s")



@contextlib.contextmanager
def _running(server: Any, what: str) -> Iterator[Any]:
    """Start `server` (timing it for the summary), and close it whatever happens."""
    try:
        _timed(what, server.start)
        yield server
    finally:
        server.close()

# -- ZooKeeper --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """A standalone ZooKeeper (tickTime 500 ms: sessions down to 1 s) shared by the session."""
    _require_zookeeper()
    with _running(
        ZooKeeperServer(tmp_path_factory.mktemp("zookeeper")), "zookeeper (single)"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def zookeeper_ensemble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperEnsemble]:
    """A 3-node ZooKeeper quorum on loopback, shared by one test module."""
    _require_zookeeper()
    with _running(
        ZooKeeperEnsemble(tmp_path_factory.mktemp("zk-ensemble")), "zookeeper (3-node ensemble)"
    ) as ensemble:
        yield ensemble


@pytest.fixture
def zookeeper_factory(tmp_path: Path) -> Iterator[Callable[..., ZooKeeperServer]]:
    """Make dedicated, started ZooKeeper servers (kwargs go to ZooKeeperServer)."""
    _require_zookeeper()
    made: list[ZooKeeperServer] = []

    def make(**kwargs: Any) -> ZooKeeperServer:
        server = ZooKeeperServer(tmp_path / f"zookeeper-{len(made)}", **kwargs)
        made.append(server)
        _timed("zookeeper (dedicated)", server.start)
        return server

    try:
        yield make
    finally:
        for server in reversed(made):
            server.close()


# -- etcd -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A single-member etcd (plain http, no auth) shared by the session."""
    _require_etcd()
    with _running(EtcdServer(tmp_path_factory.mktemp("etcd")), "etcd (single)") as server:
        yield server


@pytest.fixture(scope="module")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A 3-member etcd cluster (heartbeat 100 ms, election timeout 1 s), shared by one module."""
    _require_etcd()
    with _running(
        EtcdCluster(tmp_path_factory.mktemp("etcd-cluster")), "etcd (3-member cluster)"
    ) as cluster:
        yield cluster


@pytest.fixture
def etcd_factory(tmp_path: Path) -> Iterator[Callable[..., EtcdServer]]:
    """Make dedicated, started etcd servers, e.g. ``etcd_factory(tls=True, auth=("u", "p"))``."""
    _require_etcd()
    made: list[EtcdServer] = []

    def make(**kwargs: Any) -> EtcdServer:
        if kwargs.get("auth"):
            _require_etcd(auth=True)
        server = EtcdServer(tmp_path / f"etcd-{len(made)}", **kwargs)
        made.append(server)
        _timed("etcd (dedicated)", server.start)
        return server

    try:
        yield make
    finally:
        for server in reversed(made):
            server.close()


# -- Open vSwitch -----------------------------------------------------------------------------
@pytest.fixture
def ovs(tmp_path: Path) -> Iterator[OvsInstance]:
    """A private, started ovsdb-server + ovs-vswitchd (dummy datapath) for one test."""
    _require_ovs()
    ovs_dir = tmp_path / "ovs"
    owned: str | None = None
    # unix socket paths are limited to 107 bytes: fall back to a short dir for deep tmp paths.
    if (
        len(str(ovs_dir / "ovs-vswitchd.4194304.ctl")) > 100
        or len(str(ovs_dir / ("x" * 16 + ".mgmt"))) > 100
    ):
        owned = tempfile.mkdtemp(prefix="ovs-")
        ovs_dir = Path(owned)
    instance = OvsInstance(ovs_dir)
    try:
        _timed("open vswitch instance", instance.start)
        yield instance
    finally:
        instance.stop()
        if owned:
            shutil.rmtree(owned, ignore_errors=True)


# -- TCP proxy --------------------------------------------------------------------------------
@pytest.fixture
def tcp_proxy() -> Iterator[Callable[[str, int], TcpProxy]]:
    """Factory: ``tcp_proxy(host, port)`` -> a started :class:`TcpProxy`; all closed at teardown."""
    made: list[TcpProxy] = []

    def make(target_host: str, target_port: int) -> TcpProxy:
        proxy = TcpProxy(target_host, target_port)
        made.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in made:
            proxy.close()


# -- keep shared servers usable after destructive tests ----------------------------------------
def _heal(request: pytest.FixtureRequest) -> None:
    names = request.fixturenames
    if "zookeeper" in names:
        zk: ZooKeeperServer = request.getfixturevalue("zookeeper")
        if not zk.running:
            _timed("zookeeper (healed)", zk.restart)
    if "etcd" in names:
        server: EtcdServer = request.getfixturevalue("etcd")
        if not server.running:
            _timed("etcd (healed)", server.restart)
    if "zookeeper_ensemble" in names:
        ens: ZooKeeperEnsemble = request.getfixturevalue("zookeeper_ensemble")
        stopped = [i for i, m in enumerate(ens.members) if not m.running]
        if stopped:
            t0 = time.monotonic()
            for i in stopped:
                ens.start_member(i, wait=False)
            ens.wait_serving()
            STARTUP_TIMES.append(("zookeeper ensemble (healed)", time.monotonic() - t0))
    if "etcd_cluster" in names:
        cluster: EtcdCluster = request.getfixturevalue("etcd_cluster")
        stopped = [i for i, m in enumerate(cluster.members) if not m.running]
        if stopped:
            t0 = time.monotonic()
            for i in stopped:
                cluster.start_member(i, wait=False)
            cluster.wait_serving()
            STARTUP_TIMES.append(("etcd cluster (healed)", time.monotonic() - t0))


@pytest.fixture(autouse=True)
def heal_shared_servers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Restart shared servers (or ensemble members) a test left stopped, before and after it."""
    _heal(request)
    yield
    _heal(request)
