"""The conformance suite on real etcd: one member (with faults) and a 3-member cluster, over
both transports (gRPC and the grpc-gateway) in a threaded process. (The driver in an
eventlet-patched process: tests/drivers/etcd/test_eventlet.py.)

Faults are real: each coordinator reaches etcd through its own `TcpProxy`; cutting it makes
keep-alives fail (SUSPENDED, lease alive), and revoking the coordinator's lease from another
client is what an expiry looks like to it (LOST, then a new lease and a new candidacy).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from coordination import Coordinator, connect
from coordination.testing import ConformanceSuite
from coordination.testing.backend import Backend
from tests.servers.etcd import EtcdCluster, EtcdServer
from tests.servers.proxy import TcpProxy

OPTIONS: dict[str, Any] = {"lease_ttl": 3, "connect_timeout": 10, "operation_timeout": 10}


class EtcdProxyBackend(Backend):
    """Each coordinator reaches every member through proxies of its own (for fault tests)."""

    supports_faults = True

    def __init__(self, servers: list[EtcdServer], transport: str) -> None:
        endpoints = ",".join(s.endpoint for s in servers)
        super().__init__(f"etcd3://{endpoints}/conformance", transport=transport, **OPTIONS)
        self.servers = servers
        self.endpoints = endpoints
        self.proxies: dict[int, list[TcpProxy]] = {}

    def connect(self, namespace: str, member_id: str, **options: Any) -> Coordinator:
        proxies = [TcpProxy(s.host, s.port) for s in self.servers]
        hosts = ",".join(p.address for p in proxies)
        url = self.url_for(namespace).replace(self.endpoints, hosts)
        try:
            coordinator = connect(url, member_id, **{**self.options, **options})
        except BaseException:
            for proxy in proxies:
                proxy.close()
            raise
        self.proxies[id(coordinator)] = proxies
        return coordinator

    def suspend(self, coordinator: Coordinator) -> None:
        for proxy in self.proxies[id(coordinator)]:
            proxy.cut()

    def resume(self, coordinator: Coordinator) -> None:
        for proxy in self.proxies[id(coordinator)]:
            proxy.restore()

    def expire(self, coordinator: Coordinator) -> None:
        lease = coordinator.lease_id  # type: ignore[attr-defined]
        live = next(s for s in self.servers if s.running)
        live.http("/v3/lease/revoke", {"ID": str(lease)})

    def close(self) -> None:
        for proxies in self.proxies.values():
            for proxy in proxies:
                proxy.close()


class TestEtcdGrpc(ConformanceSuite):
    @pytest.fixture
    def backend(self, etcd: EtcdServer) -> Iterator[Backend]:
        backend = EtcdProxyBackend([etcd], "grpc")
        yield backend
        backend.close()


class TestEtcdGateway(ConformanceSuite):
    @pytest.fixture
    def backend(self, etcd: EtcdServer) -> Iterator[Backend]:
        backend = EtcdProxyBackend([etcd], "gateway")
        yield backend
        backend.close()


class TestEtcdClusterGrpc(ConformanceSuite):
    @pytest.fixture
    def backend(self, etcd_cluster: EtcdCluster) -> Iterator[Backend]:
        backend = EtcdProxyBackend(etcd_cluster.members, "grpc")
        yield backend
        backend.close()


class TestEtcdClusterGateway(ConformanceSuite):
    @pytest.fixture
    def backend(self, etcd_cluster: EtcdCluster) -> Iterator[Backend]:
        backend = EtcdProxyBackend(etcd_cluster.members, "gateway")
        yield backend
        backend.close()
