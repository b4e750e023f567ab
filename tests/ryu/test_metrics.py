"""A controller's Prometheus metrics: what the apps report and what a scrape shows."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import coordination
from coordination.records import Switch
from ryu_integration.metrics import ControllerMetrics, ControllerState


@pytest.fixture
def metrics() -> Iterator[ControllerMetrics]:
    m = ControllerMetrics("c1", "memory")
    yield m
    m.close()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_scrape_shows_state_counters_and_store_operations(metrics: ControllerMetrics) -> None:
    state = ControllerState(switches={"master": 3, "slave": 2}, elections_led=3,
                            session="connected", topology_records={"switch": 5, "link": 4})
    metrics.set_state_source(lambda: state)
    url = metrics.serve("127.0.0.1", 0)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

    metrics.role_reply(0.004)
    metrics.role_changed("master", "elected")
    metrics.refused("stale")
    metrics.published([0.02, 0.03])
    with coordination.connect(f"memory://metrics-{uuid.uuid4().hex[:8]}", "c1") as coord:
        coord.topology.put(Switch(owner="c1", term=1, dpid=1))
        coord.topology.list()

    got = scrape(url)
    assert got[("coord_switches", (("role", "master"),))] == 3
    assert got[("coord_switches", (("role", "unconfirmed"),))] == 0
    assert got[("coord_elections_led", ())] == 3
    assert got[("coord_session_state", (("state", "connected"),))] == 1
    assert got[("coord_session_state", (("state", "lost"),))] == 0
    assert got[("coord_topology_records", (("kind", "link"),))] == 4
    assert got[("coord_member_info", (("backend", "memory"), ("member_id", "c1")))] == 1
    assert got[("coord_role_request_seconds_count", ())] == 1
    assert got[("coord_role_changes_total", (("reason", "elected"), ("role", "master")))] == 1
    assert got[("coord_role_refusals_total", (("error", "stale"),))] == 1
    assert got[("coord_topology_publish_lag_seconds_count", ())] == 2
    assert got[("coord_store_operation_seconds_count",
                (("backend", "memory"), ("operation", "topology_put")))] == 1
    assert got[("coord_store_operation_seconds_count",
                (("backend", "memory"), ("operation", "topology_list")))] == 1

    # a later change is visible at the next scrape: gauges are read when scraped
    state.switches["master"] = 0
    assert scrape(url)[("coord_switches", (("role", "master"),))] == 0


def test_failed_store_operations_are_counted_by_error(metrics: ControllerMetrics) -> None:
    url = metrics.serve("127.0.0.1", 0)
    with coordination.connect(f"memory://metrics-{uuid.uuid4().hex[:8]}", "c1") as coord:
        coord.topology.put(Switch(owner="c1", term=5, dpid=1))
        with pytest.raises(coordination.StaleTermError):
            coord.topology.put(Switch(owner="c2", term=4, dpid=1))
        # the topology sync writes in batches: a fenced op in one counts as that op's refusal
        outcomes = coord.topology.apply([coordination.PutRecord(Switch(owner="c2", term=3,
                                                                       dpid=1)),
                                         coordination.PutRecord(Switch(owner="c1", term=5,
                                                                       dpid=2))])
        assert isinstance(outcomes[0], coordination.StaleTermError) and outcomes[1] is True
    got = scrape(url)
    key = ("coord_store_errors_total", (("backend", "memory"), ("error", "StaleTermError"),
                                        ("operation", "topology_put")))
    assert got[key] == 2
    assert got[("coord_store_operation_seconds_count",
                (("backend", "memory"), ("operation", "topology_apply")))] == 1
    assert got[("coord_store_operation_seconds_count",
                (("backend", "memory"), ("operation", "topology_put")))] == 2  # singles only


def test_a_failing_state_source_still_serves_the_rest(metrics: ControllerMetrics,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> ControllerState:
        raise RuntimeError("app gone")

    metrics.set_state_source(broken)
    url = metrics.serve("127.0.0.1", 0)
    metrics.refused("is_slave")
    got = scrape(url)
    assert got[("coord_role_refusals_total", (("error", "is_slave"),))] == 1
    assert ("coord_switches", (("role", "master"),)) not in got
    assert "reading the controller's state failed" in caplog.text


def test_close_stops_serving_and_observing(metrics: ControllerMetrics) -> None:
    url = metrics.serve("127.0.0.1", 0)
    metrics.close()
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5)
    metrics.close()  # idempotent


def test_the_dashboard_queries_only_metrics_that_exist(metrics: ControllerMetrics) -> None:
    """The Grafana dashboard shipped in etc/ queries only names a controller exports."""
    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "etc/grafana/coordination-dashboard.json").read_text())
    used = {name for panel in dashboard["panels"] for target in panel["targets"]
            for name in re.findall(r"\bcoord_[a-z_]+", target["expr"])}
    assert used, "the dashboard queries nothing"
    metrics.set_state_source(lambda: ControllerState(topology_records={"switch": 1}))
    metrics.role_reply(0.001)
    metrics.role_changed("master", "elected")
    metrics.refused("stale")
    metrics.published([0.01])
    metrics._store_operation("memory", "topology_put", 0.001, "StaleTermError")
    exported = set(scrape(metrics.serve("127.0.0.1", 0)))
    names = {name for name, _ in exported}
    assert used <= names, f"not exported: {sorted(used - names)}"
