"""The chaos rig: a store cluster, three controllers, bridges with hosts, taps and proxies.

What: wires together, all on loopback,
- a 3-member store (ZooKeeper ensemble or etcd cluster), each controller reaching every member
  through its own :class:`~tests.servers.proxy.TcpProxy` (so one controller can be cut off from
  the store while the others are not);
- three ``coord-manager`` processes (os-ken by default, or Ryu) running the mastership app,
  the unmodified learning switch and the topology sync app, started and stopped by PID
  (``tests/integration/ryu_helpers.Controller``);
- ``bridges`` Open vSwitch bridges (dummy datapath), each dialling every controller through that
  controller's :class:`~tests.chaos.tap.OpenFlowTap`, each with two hosts sending numbered packets;
- the :class:`~tests.chaos.monitor.Monitor` fed by the taps, the hosts and an observer of the
  topology store's switch records.
Why: the faults need handles on every process and every link, owned by one object that closes
everything it made, even when the run fails.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.ryu_helpers import Controller
from tests.servers._process import LOOPBACK, ServerGroup, free_ports
from tests.servers.ovs import OvsInstance
from tests.servers.proxy import TcpProxy

from .hosts import HostPair, TrafficSender
from .monitor import Monitor
from .tap import OpenFlowTap
from .topology_watch import SwitchRecords

APPS = ("ryu_integration.mastership", "ryu_integration.apps.learning_switch")
TOPOLOGY_APP = "ryu_integration.topology_sync"
#: How long after recovery every bridge's switch record may take to be (re)published.
TOPOLOGY_BOUND = 15.0


def _env(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


@dataclass(frozen=True)
class Timing:
    """The controllers' timeouts, and what the bounds of the faults are made of.

    ``CHAOS_SESSION_TIMEOUT``, ``CHAOS_ROLE_REQUEST_TIMEOUT`` and ``CHAOS_REASSERT_INTERVAL``
    override the first three (to see how a bound moves with them).
    """

    session_timeout: float = field(default_factory=lambda: _env("CHAOS_SESSION_TIMEOUT", 2.0))
    role_request_timeout: float = field(
        default_factory=lambda: _env("CHAOS_ROLE_REQUEST_TIMEOUT", 1.0))
    reassert_interval: float = field(
        default_factory=lambda: _env("CHAOS_REASSERT_INTERVAL", 2.0))
    #: Detection + election + role round trip on a loaded 2-core machine, on top of a timeout.
    margin: float = 4.0
    #: Longest wait for the rig to settle again after a fault (bounded, pushed).
    recover_timeout: float = 45.0


class ChaosRig:
    """Everything one chaos run uses; ``close()`` stops all of it."""

    def __init__(self, backend: str, store: ServerGroup, ovs: OvsInstance, workdir: Path,
                 *, bridges: int = 3, timing: Timing | None = None,
                 framework: str = "os-ken", topology: bool = True) -> None:
        self.backend = backend
        self.framework = framework
        self.topology = topology
        self.switch_records: SwitchRecords | None = None
        self.store = store
        self.ovs = ovs
        self.workdir = workdir
        self.timing = timing or Timing()
        self.monitor = Monitor()
        self.dpids = list(range(1, bridges + 1))
        self.controllers: list[Controller] = []
        self.taps: dict[str, OpenFlowTap] = {}
        self.store_proxies: dict[str, list[TcpProxy]] = {}
        self.hosts: list[HostPair] = []
        self.traffic: TrafficSender | None = None
        self._namespace = f"/chaos-{uuid.uuid4().hex[:8]}"

    # -- building ----------------------------------------------------------------------------
    def store_ports(self) -> list[int]:
        return [m.port for m in self.store.members]

    def url(self, ports: list[int]) -> str:
        hosts = ",".join(f"{LOOPBACK}:{p}" for p in ports)
        scheme = "zookeeper" if self.backend == "zookeeper" else "etcd3"
        return f"{scheme}://{hosts}{self._namespace}"

    def start(self) -> None:
        t = self.timing
        for i, port in enumerate(free_ports(3)):
            name = f"c{i}"
            proxies = [TcpProxy(LOOPBACK, p) for p in self.store_ports()]
            self.store_proxies[name] = proxies
            conf: dict[str, dict[str, Any]] = {
                "coordination": {
                    "backend_url": self.url([p.port for p in proxies]),
                    "session_timeout": t.session_timeout,
                    "role_request_timeout": t.role_request_timeout,
                    "reassert_interval": t.reassert_interval,
                },
            }
            apps = (*APPS, TOPOLOGY_APP) if self.topology else APPS
            c = Controller(name, self.framework, port, self.workdir / "controllers", conf, apps)
            self.controllers.append(c)
            self.taps[name] = OpenFlowTap(name, port, self.monitor)
        for c in self.controllers:
            c.start()
        for c in self.controllers:
            c.wait_ready(60)
        if self.topology:
            self.switch_records = SwitchRecords(self.url(self.store_ports()), self.monitor)
        for dpid in self.dpids:
            self.add_bridge(dpid)
        self.traffic = TrafficSender(self.hosts)
        self.traffic.start()
        self.wait_settled()

    def add_bridge(self, dpid: int) -> None:
        """(Re)create bridge ``br<dpid>`` dialling every tap, with its two hosts."""
        self.ovs.add_bridge(f"br{dpid}", dpid, [tap.port for tap in self.taps.values()])
        pair = next((h for h in self.hosts if h.number == dpid), None)
        if pair is None:
            pair = HostPair(self.ovs, dpid, self.monitor)
            self.hosts.append(pair)
        pair.add_ports()

    # -- waits (pushed: the monitor's condition) ----------------------------------------------
    def running_members(self) -> list[str]:
        return [c.name for c in self.controllers if c.running]

    def wait_settled(self, timeout: float | None = None) -> dict[int, str]:
        """Every bridge: one confirmed master, every other running controller a slave, and a
        packet sent after that delivered (the learning switch answers). Returns the masters."""
        timeout = timeout or self.timing.recover_timeout
        members = self.running_members()
        m = self.monitor
        try:
            m.wait_for(lambda: m.settled(self.dpids, members), timeout,
                       f"one master + slaves on every bridge for {members}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.describe_elections()}") from None
        assert self.traffic is not None
        after = self.traffic.seq
        m.wait_for(lambda: all(m.last_seq.get(d, -1) > after for d in self.dpids), timeout,
                   f"a packet after #{after} delivered on every bridge")
        if self.topology:
            m.check_topology(self.dpids, TOPOLOGY_BOUND)
        with m.cond:
            return {d: m.master_of(d) for d in self.dpids}  # type: ignore[misc]

    def describe_elections(self) -> str:
        """What the store holds for the switches' elections (ZooKeeper): each candidacy with
        the session that owns it, the leader record, and the members' sessions. For a failure
        message: a wedged election shows here, not in the switches."""
        if self.backend != "zookeeper":
            return ""
        from kazoo.client import KazooClient

        zk = KazooClient(hosts=",".join(f"{LOOPBACK}:{p}" for p in self.store_ports()),
                         timeout=5.0)
        lines = []
        try:
            zk.start(timeout=10)
            base = self._namespace
            for name in sorted(zk.get_children(f"{base}/members")):
                _, stat = zk.get(f"{base}/members/{name}")
                lines.append(f"  member {name} session={stat.ephemeralOwner:#x}")
            for dpid in self.dpids:
                election = f"{base}/elections/dpid-{dpid:016x}"
                cands = sorted(zk.get_children(f"{election}/candidates"))
                owners = [f"{c}@{zk.get(f'{election}/candidates/{c}')[1].ephemeralOwner:#x}"
                          for c in cands]
                leader = zk.get(f"{election}/leader")[0].decode() if zk.exists(
                    f"{election}/leader") else "-"
                lines.append(f"  dpid {dpid:016x}: candidates {owners} leader {leader}")
        except Exception as exc:  # noqa: BLE001 -- a diagnosis only: never hide the failure
            lines.append(f"  (store not readable: {type(exc).__name__}: {exc})")
        finally:
            zk.stop()
            zk.close()
        return "store:\n" + "\n".join(lines)

    def controller(self, name: str) -> Controller:
        return next(c for c in self.controllers if c.name == name)

    # -- teardown ----------------------------------------------------------------------------
    def close(self) -> None:
        if self.traffic is not None:
            self.traffic.stop()
        if self.switch_records is not None:
            self.switch_records.close()
        for c in self.controllers:
            c.close()
        for tap in self.taps.values():
            tap.close()
        for proxies in self.store_proxies.values():
            for p in proxies:
                p.close()
        for pair in self.hosts:
            pair.close()
