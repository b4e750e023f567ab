"""Real servers for the conformance suite, shared by the test modules of this directory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.requirements import require_binary, require_file
from tests.servers.zookeeper import ZooKeeperEnsemble, ZooKeeperServer


def _need_zookeeper() -> None:
    require_binary("java", "default-jre-headless")
    require_file("/usr/share/java/zookeeper.jar", "zookeeper")


@pytest.fixture(scope="session")
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    _need_zookeeper()
    server = ZooKeeperServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def zookeeper_ensemble() -> Iterator[ZooKeeperEnsemble]:
    _need_zookeeper()
    ensemble = ZooKeeperEnsemble()
    ensemble.start()
    try:
        yield ensemble
    finally:
        ensemble.close()
