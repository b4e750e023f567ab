"""Prometheus metrics of one controller, served over HTTP on a port from ryu.conf.

Counters and histograms are updated as things happen (a role reply, a refusal, a store
operation); gauges (switches per role, elections led, session state, topology records) are read
from the apps' own state when Prometheus scrapes, so nothing runs between scrapes and the cost
never grows with the number of switches while nobody looks. Names follow Prometheus
conventions: a `coord_` prefix, base units (seconds), `_total` on counters. The reference is in
docs/operations.md ("Metrics").
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordination import instrument

LOG = logging.getLogger(__name__)

#: Role request round trips: a loopback switch answers in about a millisecond, a loaded one or
#: a slow link in tens to hundreds.
RTT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Store operations: from a local SQLite read to a ZooKeeper multi over a WAN.
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                 5.0, 10.0)
#: From an observation of the network to its record written: the batch delay plus the store.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SESSION_STATES = ("connected", "suspended", "lost")
ROLES = ("master", "slave", "unconfirmed")


@dataclass
class ControllerState:
    """What the gauges show, read from the apps when Prometheus scrapes."""

    #: switches connected to this controller, by role: master (confirmed by the switch), slave,
    #: unconfirmed (a role request in flight or refused)
    switches: dict[str, int] = field(default_factory=dict)
    elections_led: int = 0
    session: str = "lost"
    #: topology records in this controller's view, by kind (switch, link, host, mastership)
    topology_records: dict[str, int] = field(default_factory=dict)


StateSource = Callable[[], ControllerState]


class _StateCollector(Collector):
    """The gauges, computed from `ControllerState` at scrape time."""

    def __init__(self, member_id: str, backend: str, source: StateSource) -> None:
        self._member_id = member_id
        self._backend = backend
        self._source = source

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("coord_member_info", "This controller: member id and backend "
                                 "(always 1).", labels=["member_id", "backend"])
        info.add_metric([self._member_id, self._backend], 1)
        yield info
        try:
            state = self._source()
        except Exception:
            LOG.exception("metrics: reading the controller's state failed")
            return
        switches = GaugeMetricFamily("coord_switches", "Switches connected to this controller, "
                                     "by OpenFlow role.", labels=["role"])
        for role in ROLES:
            switches.add_metric([role], state.switches.get(role, 0))
        yield switches
        yield GaugeMetricFamily("coord_elections_led", "Elections this controller leads.",
                                value=state.elections_led)
        session = GaugeMetricFamily("coord_session_state", "The backend session's state (1 for "
                                    "the current one).", labels=["state"])
        for name in SESSION_STATES:
            session.add_metric([name], 1 if state.session == name else 0)
        yield session
        records = GaugeMetricFamily("coord_topology_records", "Topology records in this "
                                    "controller's view, by kind.", labels=["kind"])
        for kind, count in sorted(state.topology_records.items()):
            records.add_metric([kind], count)
        yield records


class ControllerMetrics:
    """The metrics of one controller process; `serve()` exposes them over HTTP."""

    def __init__(self, member_id: str, backend: str) -> None:
        self.member_id = member_id
        self.backend = backend
        self.registry = CollectorRegistry()
        self.role_request_seconds = Histogram(
            "coord_role_request_seconds", "Time from a ROLE_REQUEST to the switch's reply.",
            buckets=RTT_BUCKETS, registry=self.registry)
        self.role_changes = Counter(
            "coord_role_changes", "Changes of this controller's role for a switch, by the new "
            "role and the reason (e.g. elected, revoked, session, switch).",
            ["role", "reason"], registry=self.registry)
        self.role_refusals = Counter(
            "coord_role_refusals", "Role requests and writes a switch refused, by OpenFlow "
            "error: stale (a newer generation_id is known), is_slave (a write from a slave), "
            "other.", ["error"], registry=self.registry)
        self.store_seconds = Histogram(
            "coord_store_operation_seconds", "Store operations, by backend and operation.",
            ["backend", "operation"], buckets=STORE_BUCKETS, registry=self.registry)
        self.store_errors = Counter(
            "coord_store_errors", "Store operations that failed, by backend, operation and "
            "error class.", ["backend", "operation", "error"], registry=self.registry)
        self.publish_lag_seconds = Histogram(
            "coord_topology_publish_lag_seconds", "From an observation of the network to the "
            "store write that publishes it.", buckets=LAG_BUCKETS, registry=self.registry)
        self._collector: _StateCollector | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        instrument.add_observer(self._store_operation)

    # ---- what the apps report -----------------------------------------------------------------

    def set_state_source(self, source: StateSource) -> None:
        """Where the gauges come from (read at every scrape)."""
        if self._collector is not None:
            self.registry.unregister(self._collector)
        self._collector = _StateCollector(self.member_id, self.backend, source)
        self.registry.register(self._collector)

    def role_reply(self, seconds: float) -> None:
        self.role_request_seconds.observe(seconds)

    def role_changed(self, role: str, reason: str) -> None:
        self.role_changes.labels(role=role, reason=reason or "unknown").inc()

    def refused(self, error: str) -> None:
        self.role_refusals.labels(error=error).inc()

    def published(self, lags: Iterable[float]) -> None:
        for lag in lags:
            self.publish_lag_seconds.observe(lag)

    def _store_operation(self, backend: str, operation: str, seconds: float | None,
                         error: str | None) -> None:
        if seconds is not None:  # None: one op of a timed batch, refused on its own
            self.store_seconds.labels(backend=backend, operation=operation).observe(seconds)
        if error is not None:
            self.store_errors.labels(backend=backend, operation=operation, error=error).inc()

    # ---- HTTP ---------------------------------------------------------------------------------

    def serve(self, address: str, port: int) -> str:
        """Serve /metrics on `address:port` (port 0: any free port); returns the URL."""
        self._server, self._thread = start_http_server(port, addr=address,
                                                       registry=self.registry)
        host, bound = self._server.server_address[:2]
        url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}/metrics"
        LOG.info("metrics: serving %s", url)
        return url

    def close(self) -> None:
        """Stop serving and stop observing store operations. Idempotent."""
        instrument.remove_observer(self._store_operation)
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
