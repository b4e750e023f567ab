"""The conformance suite on real ZooKeeper: a single server and a 3-node ensemble.

Faults are real: a TCP proxy between each coordinator and the server cuts the connection
(SUSPENDED, session alive), and a second client that attaches to the same session and closes
it makes the server expire the session (LOST) on demand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient

from coordination import Coordinator
from coordination.testing import ConformanceSuite
from coordination.testing.backend import Backend
from tests.servers.proxy import TcpProxy
from tests.servers.zookeeper import ZooKeeperEnsemble, ZooKeeperServer

OPTIONS = {"session_timeout": 4, "connect_timeout": 10}


class ZooKeeperProxyBackend(Backend):
    """Each coordinator reaches the server through its own `TcpProxy`."""

    supports_faults = True

    def __init__(self, hosts: str, proxied_port: int) -> None:
        super().__init__(f"zookeeper://{hosts}/conformance", **OPTIONS)
        self.hosts = hosts
        self.proxied_port = proxied_port
        self.proxies: dict[int, TcpProxy] = {}

    def connect(self, namespace: str, member_id: str, **options: Any) -> Coordinator:
        proxy = TcpProxy("127.0.0.1", self.proxied_port)
        url = self.url_for(namespace).replace(self.hosts, proxy.address)
        from coordination import connect

        try:
            coordinator = connect(url, member_id, **{**self.options, **options})
        except BaseException:
            proxy.close()
            raise
        self.proxies[id(coordinator)] = proxy
        return coordinator

    def suspend(self, coordinator: Coordinator) -> None:
        self.proxies[id(coordinator)].cut()

    def resume(self, coordinator: Coordinator) -> None:
        self.proxies[id(coordinator)].restore()

    def expire(self, coordinator: Coordinator) -> None:
        session_id, password = coordinator.client.client_id  # type: ignore[attr-defined]
        twin = KazooClient(hosts=self.hosts, client_id=(session_id, password))
        twin.start(timeout=10)
        twin.stop()  # closing the twin closes the shared session on the server
        twin.close()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()


class TestZooKeeper(ConformanceSuite):
    @pytest.fixture
    def backend(self, zookeeper: ZooKeeperServer) -> Iterator[Backend]:
        backend = ZooKeeperProxyBackend(zookeeper.hosts, zookeeper.port)
        yield backend
        backend.close()


class TestZooKeeperEnsemble(ConformanceSuite):
    @pytest.fixture
    def backend(self, zookeeper_ensemble: ZooKeeperEnsemble) -> Iterator[Backend]:
        backend = ZooKeeperProxyBackend(zookeeper_ensemble.hosts, zookeeper_ensemble.ports[0])
        yield backend
        backend.close()
