"""Prometheus metrics of real controllers: scraped before and after a kill -9 failover on real
Open vSwitch bridges and ZooKeeper, the counters and gauges move as the failover did."""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.servers._process import free_ports

from .ryu_helpers import FRAMEWORKS, Controller, require_framework, wait_settled

pytestmark = pytest.mark.integration

DPIDS = (1, 2)
SETTLE_TIMEOUT = 30.0

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lbls), v in samples.items() if n == name and want <= set(lbls))


@pytest.fixture(params=FRAMEWORKS)
def cluster(request: pytest.FixtureRequest, tmp_path: Path, zookeeper,
            ovs) -> Iterator[list[Controller]]:
    framework = request.param
    require_framework(framework)
    url = f"zookeeper://{zookeeper.hosts}/metrics-{uuid.uuid4().hex[:8]}"
    made = []
    for i, port in enumerate(free_ports(3)):
        made.append(Controller(f"c{i}", framework, port, tmp_path / "controllers", {
            "coordination": {"backend_url": url, "session_timeout": 2.0,
                             "role_request_timeout": 2.0, "metrics_port": 0}}))
    try:
        for c in made:
            c.start()
        for c in made:
            c.wait_ready()
        ovs.add_bridges([(f"br{d}", d, [c.port for c in made]) for d in DPIDS])
        yield made
    finally:
        for c in made:
            c.close()


def metrics_url(c: Controller) -> str:
    return c.wait_for(lambda r: r.kind == "METRICS", 20.0, what="metrics endpoint")["url"]


def test_metrics_follow_a_failover(cluster: list[Controller]) -> None:
    urls = {c.name: metrics_url(c) for c in cluster}
    masters = wait_settled(cluster, DPIDS, SETTLE_TIMEOUT)
    before = {name: scrape(url) for name, url in urls.items()}
    assert sum(total(s, "coord_switches", role="master") for s in before.values()) == len(DPIDS)
    assert sum(total(s, "coord_switches", role="slave") for s in before.values()) == \
        len(DPIDS) * (len(cluster) - 1)
    for c in cluster:
        s = before[c.name]
        assert total(s, "coord_member_info", member_id=c.member_id, backend="zookeeper") == 1
        assert total(s, "coord_session_state", state="connected") == 1
        assert total(s, "coord_role_request_seconds_count") >= len(DPIDS)  # one per switch
        assert total(s, "coord_store_operation_seconds_count", backend="zookeeper") > 0

    victim = masters[1]
    victim.kill()
    survivors = [c for c in cluster if c is not victim]
    after_masters = wait_settled(survivors, DPIDS, SETTLE_TIMEOUT)
    heir = after_masters[1]
    after = {c.name: scrape(urls[c.name]) for c in survivors}
    assert sum(total(s, "coord_switches", role="master") for s in after.values()) == len(DPIDS)
    gained = (total(after[heir.name], "coord_role_changes_total", role="master")
              - total(before[heir.name], "coord_role_changes_total", role="master"))
    assert gained >= 1, "the heir's 'became master' counter did not move"
    assert (total(after[heir.name], "coord_role_request_seconds_count")
            > total(before[heir.name], "coord_role_request_seconds_count"))
    assert total(after[heir.name], "coord_elections_led") >= 1
