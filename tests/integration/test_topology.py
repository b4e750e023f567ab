"""Topology sync end to end: real Open vSwitch bridges, three real `coord-manager` processes, a
real coordination server; parametrized over framework and backend.

The network is a ring of 4 bridges and a tree of 4, joined by patch ports, with one host port
each. What each controller believes is read from two places and compared with what OVS says
(`ovs-vsctl` for patch peers, `ovs-ofctl dump-ports-desc` for ports):
- the view dump file of the sync app (`[coordination] topology_dump_file`), written after every
  batch of view changes, right before the app logs a `TOPOLOGY ...` line;
- a probe app (written below, loaded next to the sync app) that knows nothing of coordination:
  it builds its own picture from `ryu.topology` events only, and also asks
  `ryu.topology.api.get_link()`; it logs `PROBE ...` after each event.
Waits are bounded and event-driven (re-checked on every log line of any controller, see
`ryu_helpers.wait_until`). Times are measured from the controllers' own timestamps and printed.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import coordination
from tests.servers._process import free_ports
from tests.servers.ovs import _atom

from .ryu_helpers import (
    FRAMEWORKS,
    Controller,
    print_measurements,
    require_framework,
    wait_settled,
    wait_until,
)

pytestmark = pytest.mark.integration

SESSION_TIMEOUT = 2.0
RECONCILE_WINDOW = 8.0  # only waited out if something is never confirmed
GRACE_PERIOD = 5.0
CONVERGE = 40.0  # first discovery of everything, on a loaded 2-core machine
QUICK = 15.0  # any later change
HOST_PORT = 10
RING = {"s1": 1, "s2": 2, "s3": 3, "s4": 4}
TREE = {"t1": 11, "t2": 12, "t3": 13, "t4": 14}
BRIDGES = {**RING, **TREE}
# (bridge a, its port, bridge b, its port): one patch link each, both directions
PATCHES = [("s1", 1, "s2", 2), ("s2", 1, "s3", 2), ("s3", 1, "s4", 2), ("s4", 1, "s1", 2),
           ("t1", 1, "t2", 1), ("t1", 2, "t3", 1), ("t2", 2, "t4", 1)]
MEASURED: list[tuple[str, float]] = []

LinkId = tuple[int, int, int, int]

# A Ryu app that knows only ryu.topology: its picture must equal the truth on every controller.
PROBE_APP = '''
import json, logging, os, time
from ryu_integration.compat import RyuApp, framework_module, set_ev_cls

tevent = framework_module("topology.event")
api = framework_module("topology.api")
LOG = logging.getLogger("topology_probe")


class TopologyProbe(RyuApp):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.links, self.switches, self.hosts, self.seen = set(), {}, {}, 0

    def _lid(self, link):
        return (link.src.dpid, link.src.port_no, link.dst.dpid, link.dst.port_no)

    def _report(self):
        self.seen += 1
        api_links = sorted(self._lid(l) for l in api.get_link(self))
        path = self.CONF.coordination.topology_dump_file + ".probe"
        body = {"links": sorted(self.links), "api_links": api_links,
                "switches": {str(d): sorted(p) for d, p in self.switches.items()},
                "hosts": self.hosts}
        with open(path + ".tmp", "w") as fh:
            json.dump(body, fh)
        os.replace(path + ".tmp", path)
        LOG.info("PROBE links=%d api_links=%d switches=%d hosts=%d seen=%d t=%.6f",
                 len(self.links), len(api_links), len(self.switches), len(self.hosts),
                 self.seen, time.time())

    @set_ev_cls(tevent.EventSwitchEnter)
    def _enter(self, ev):
        self.switches[ev.switch.dp.id] = {p.port_no for p in ev.switch.ports}
        self._report()

    @set_ev_cls(tevent.EventSwitchLeave)
    def _leave(self, ev):
        self.switches.pop(ev.switch.dp.id, None)
        self._report()

    @set_ev_cls(tevent.EventPortAdd)
    def _port_add(self, ev):
        self.switches.setdefault(ev.port.dpid, set()).add(ev.port.port_no)
        self._report()

    @set_ev_cls(tevent.EventPortDelete)
    def _port_delete(self, ev):
        self.switches.get(ev.port.dpid, set()).discard(ev.port.port_no)
        self._report()

    @set_ev_cls(tevent.EventLinkAdd)
    def _link_add(self, ev):
        self.links.add(self._lid(ev.link))
        self._report()

    @set_ev_cls(tevent.EventLinkDelete)
    def _link_delete(self, ev):
        self.links.discard(self._lid(ev.link))
        self._report()

    @set_ev_cls(tevent.EventHostAdd)
    def _host_add(self, ev):
        self.hosts[ev.host.mac] = [ev.host.port.dpid, ev.host.port.port_no]
        self._report()

    @set_ev_cls(tevent.EventHostMove)
    def _host_move(self, ev):
        self.hosts[ev.dst.mac] = [ev.dst.port.dpid, ev.dst.port.port_no]
        self._report()

    @set_ev_cls(tevent.EventHostDelete)
    def _host_delete(self, ev):
        self.hosts.pop(ev.host.mac, None)
        self._report()
'''


# ---- backends ---------------------------------------------------------------------------------


def _zookeeper(request: pytest.FixtureRequest, tmp: Path) -> str:
    server = request.getfixturevalue("zookeeper")
    return f"zookeeper://{server.hosts}/topology-{uuid.uuid4().hex[:8]}"


def _etcd(request: pytest.FixtureRequest, tmp: Path) -> str:
    server = request.getfixturevalue("etcd")
    return f"etcd3://{server.endpoint}/topology-{uuid.uuid4().hex[:8]}"


def _embedded(request: pytest.FixtureRequest, tmp: Path) -> str:
    return f"embedded://{tmp / 'store'}"


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "zookeeper": _zookeeper,
    "etcd": _etcd,
    "embedded": _embedded,
}
#: Every framework on every backend (about 20 s each on 2 cores).
COMBINATIONS = [(f, b) for b in BACKENDS for f in ("ryu", "os-ken")]


@pytest.fixture(params=COMBINATIONS, ids=[f"{f}-{b}" for f, b in COMBINATIONS])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    framework, backend = request.param
    assert framework in FRAMEWORKS
    require_framework(framework)
    return framework, BACKENDS[backend](request, tmp_path)


@pytest.fixture
def controllers(tmp_path: Path) -> Iterator[Callable[..., Controller]]:
    """Factory for controllers running mastership + topology sync + the probe; every process
    is killed by PID at teardown."""
    made: list[Controller] = []
    probe = tmp_path / "topology_probe.py"
    probe.write_text(PROBE_APP)

    def make(name: str, framework: str, url: str) -> Controller:
        port = free_ports(1)[0]
        sections: dict[str, dict[str, Any]] = {
            "DEFAULT": {"observe_links": True},
            "coordination": {
                "backend_url": url, "session_timeout": SESSION_TIMEOUT,
                "role_request_timeout": 2.0, "reassert_interval": 10.0,
                "topology_reconcile_window": RECONCILE_WINDOW,
                "topology_grace_period": GRACE_PERIOD,
                "topology_dump_file": str(tmp_path / f"{name}.view.json"),
            }}
        controller = Controller(name, framework, port, tmp_path / "controllers", sections,
                                ("ryu_integration.topology_sync", str(probe)))
        made.append(controller)
        return controller

    try:
        yield make
    finally:
        for controller in made:
            controller.close()


@pytest.fixture(scope="module", autouse=True)
def _print_measurements(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print every time measured in this module, after its last test."""
    yield
    print_measurements(request.config, "topology sync times (from the controllers' logs)", MEASURED)


def _record(what: str, seconds: float) -> None:
    MEASURED.append((what, seconds))
    print(f"\nMEASURED {what}: {seconds * 1000:.1f} ms")


# ---- the real network, as OVS says -------------------------------------------------------------


@dataclass(frozen=True)
class Truth:
    ports: dict[int, set[int]]  # dpid -> OpenFlow port numbers (LOCAL excluded)
    links: set[LinkId]


_PORT_LINE = re.compile(r"^\s*(\d+)\(([^)]*)\):", re.MULTILINE)


def build(ovs: Any, controller_ports: list[int]) -> None:
    ovs.add_bridges([(name, dpid, controller_ports) for name, dpid in BRIDGES.items()])
    for a, pa, b, pb in PATCHES:
        ovs.add_patch_link(a, pa, b, pb)
    for name in BRIDGES:
        ovs.add_host_port(name, f"{name}-h", HOST_PORT)
        # table-miss to the controller (service connection), so hosts' packets reach the master
        ovs.ofctl("add-flow", name, "priority=0,actions=CONTROLLER:65535")


def real_topology(ovs: Any) -> Truth:
    """Ports from `ovs-ofctl dump-ports-desc`, links from the patch peers in OVSDB."""
    bridges = {b for b in ovs.vsctl("list-br").split()}
    ports: dict[int, set[int]] = {}
    where: dict[str, tuple[int, int]] = {}  # interface name -> (dpid, ofport)
    for name in bridges:
        dpid = BRIDGES[name]
        found = {int(no): iface for no, iface in _PORT_LINE.findall(ovs.ofctl("dump-ports-desc",
                                                                                name))}
        ports[dpid] = set(found)
        for no, iface in found.items():
            where[iface] = (dpid, no)
    table = json.loads(ovs.vsctl("--format=json", "--columns=name,type,options", "list",
                                 "Interface"))
    links: set[LinkId] = set()
    for row in table["data"]:
        name, kind, options = (_atom(v) for v in row)
        peer = (options or {}).get("peer") if kind == "patch" else None
        if name in where and peer in where:
            links.add((*where[name], *where[peer]))  # type: ignore[arg-type]
    return Truth(ports, links)


# ---- what the controllers believe --------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def view_of(c: Controller) -> dict[str, Any] | None:
    return read_json(c.workdir.parent / f"{c.name}.view.json")


def probe_of(c: Controller) -> dict[str, Any] | None:
    return read_json(c.workdir.parent / f"{c.name}.view.json.probe")


def view_links(view: dict[str, Any]) -> set[LinkId]:
    return {(lk["src_dpid"], lk["src_port"], lk["dst_dpid"], lk["dst_port"])
            for lk in view["links"]}


def matches(c: Controller, truth: Truth, hosts: dict[str, tuple[int, int]] | None = None,
            live: set[str] | None = None) -> bool:
    """The controller's view, its probe's event-built picture and the topology API all equal
    the truth (and, with `live`, every record is owned by a live controller)."""
    view, probe = view_of(c), probe_of(c)
    if view is None or probe is None:
        return False
    ports = {s["dpid"]: {p["port_no"] for p in s["ports"]} for s in view["switches"]}
    if view_links(view) != truth.links or ports != truth.ports or view["hidden_links"]:
        return False
    if {tuple(lk) for lk in probe["links"]} != truth.links:
        return False
    if {tuple(lk) for lk in probe["api_links"]} != truth.links:
        return False
    if {int(d): set(p) for d, p in probe["switches"].items()} != truth.ports:
        return False
    if hosts is not None:
        seen = {h["mac"]: (h["dpid"], h["port_no"]) for h in view["hosts"]}
        if seen != hosts or {m: tuple(v) for m, v in probe["hosts"].items()} != hosts:
            return False
    if live is not None:
        owners = {s["owner"] for s in view["switches"]} | {lk["owner"] for lk in view["links"]}
        owners |= {h["owner"] for h in view["hosts"]} | {m["owner"] for m in view["masters"]}
        if not owners <= live or {m["dpid"] for m in view["masters"]} != set(truth.ports):
            return False
    return True


def wait_views(cs: list[Controller], truth: Truth, timeout: float, what: str,
               **kwargs: Any) -> None:
    def check() -> bool:
        return all(matches(c, truth, **kwargs) for c in cs)

    try:
        wait_until(check, timeout, what, cs)
    except AssertionError:
        for c in cs:
            print(f"---- {c.name} view: {json.dumps(view_of(c))[:3000]}")
            print(f"---- {c.name} probe: {json.dumps(probe_of(c))[:1500]}")
        print(f"---- truth: {truth}")
        raise


def store_writes(cs: list[Controller]) -> int:
    """Store writes (puts that changed something, deletes) logged by these controllers."""
    pattern = re.compile(r"^topology: (put|delete) ", re.MULTILINE)
    return sum(len(pattern.findall(c.log_path.read_text(errors="replace"))) for c in cs)


def first_view_with(c: Controller, since: int, links: int, kind: str = "TOPOLOGY") -> float:
    record = c.wait_for(lambda r: r.kind == kind and int(r["links"]) == links, QUICK,
                        since=since, what=f"{kind} with {links} links")
    return record.t


# ---- the test ----------------------------------------------------------------------------------


def test_every_controller_sees_the_whole_network(setup, ovs, controllers) -> None:
    framework, url = setup
    label = f"{framework}/{url.split(':')[0]}"
    cs = [controllers(f"c{i}", framework, url) for i in range(3)]
    build(ovs, [c.port for c in cs])
    truth = real_topology(ovs)
    assert len(truth.links) == 2 * len(PATCHES)
    started = time.time()
    for c in cs:
        c.start()
    for c in cs:
        c.wait_ready()

    # 1. every view equals the real network; standbys know links they could not discover
    wait_views(cs, truth, CONVERGE, "every view equals the real topology")
    _record(f"{label} start -> every view complete", time.time() - started)
    masters = wait_settled(cs, BRIDGES.values(), QUICK)
    standbys = 0
    for c in cs:
        mine = {d for d, m in masters.items() if m is c}
        view = view_of(c)
        assert view is not None
        # links into switches it does not master: it has no packet-ins from them, so it could
        # not discover them; it knows them from the store (owned by their switch's master)
        learned = [lk for lk in view["links"] if lk["dst_dpid"] not in mine]
        assert all(lk["owner"] != c.member_id for lk in learned)
        if len(mine) < len(BRIDGES):
            assert learned, f"{c.name} should know links into switches it does not master"
            standbys += 1
    assert standbys >= 2

    # 2. a malformed record written by hand: skipped with a log line, nothing breaks
    with coordination.connect(url, "tester") as tester:
        tester.topology._driver.create("link/garbage", b"{not json")
    wait_until(lambda: all("skipping malformed topology record" in c.log_path.read_text()
                           for c in cs), QUICK, "the malformed record logged everywhere", cs)

    # 3. a host: ARP from s2's host port reaches s2's master only; every view learns it
    mac = "00:00:00:00:00:02"
    ovs.inject("s2-h", f"eth(src={mac},dst=ff:ff:ff:ff:ff:ff),eth_type(0x0806),"
                       "arp(sip=10.0.0.2,tip=10.0.0.3,op=1,sha=00:00:00:00:00:02,"
                       "tha=00:00:00:00:00:00)")
    hosts = {mac: (RING["s2"], HOST_PORT)}
    wait_views(cs, truth, QUICK, "every view has the host", hosts=hosts)
    wait_until(lambda: all([h["ips"] for h in (view_of(c) or {}).get("hosts", [])]
                           == [["10.0.0.2"]] for c in cs), QUICK,
               "every view has the host's address", cs)

    # 4. a link goes down (del-port on one side of a patch): every view drops both directions
    marks = {c.name: c.mark() for c in cs}
    writes = store_writes(cs)
    cut_at = time.time()
    ovs.del_port("s1", "s1-to-s2")
    truth = real_topology(ovs)
    assert len(truth.links) == 2 * len(PATCHES) - 2
    wait_views(cs, truth, QUICK, "every view without the cut link", hosts=hosts)
    views_at = [first_view_with(c, marks[c.name], len(truth.links)) for c in cs]
    events_at = [first_view_with(c, marks[c.name], len(truth.links), "PROBE") for c in cs]
    _record(f"{label} link down -> last controller's view", max(views_at) - cut_at)
    _record(f"{label} link down -> last controller's ryu.topology event", max(events_at) - cut_at)
    wait_until(lambda: store_writes(cs) - writes >= 3, QUICK, "the cut's store writes", cs)

    # ... and comes back: LLDP finds it again at once (both ends' ports changed)
    print(f"\nstore writes for the cut: {store_writes(cs) - writes} (switch s1, 2 links)")
    marks = {c.name: c.mark() for c in cs}
    writes = store_writes(cs)
    restored_at = time.time()
    ovs.vsctl("add-port", "s1", "s1-to-s2", "--", "set", "interface", "s1-to-s2", "type=patch",
              "options:peer=s2-to-s1", "ofport_request=1")
    truth = real_topology(ovs)
    assert len(truth.links) == 2 * len(PATCHES)
    wait_views(cs, truth, QUICK, "every view with the restored link", hosts=hosts)
    views_at = [first_view_with(c, marks[c.name], len(truth.links)) for c in cs]
    _record(f"{label} link up -> last controller's view", max(views_at) - restored_at)
    print(f"\nstore writes for the restore: {store_writes(cs) - writes}")

    # 5. kill -9 the master of s2 (it published the host); a port appears while s2 has no
    #    master; the views never lose anything; the successor re-publishes all of it
    masters = wait_settled(cs, BRIDGES.values(), QUICK)
    victim = masters[RING["s2"]]
    survivors = [c for c in cs if c is not victim]
    marks = {c.name: c.mark() for c in survivors}
    killed_at = victim.kill()
    ovs.add_host_port("s2", "s2-late", 20)
    truth = real_topology(ovs)
    live = {c.member_id for c in survivors}
    wait_views(survivors, truth, SESSION_TIMEOUT + RECONCILE_WINDOW + QUICK,
               "survivors re-published everything", hosts=hosts, live=live)
    republished = max(c.wait_for(
        lambda r: r.kind == "TOPOLOGY" and victim.member_id not in r["owners"].split(","),
        QUICK, since=marks[c.name], what="no record owned by the dead master").t
        for c in survivors)
    _record(f"{label} kill -9 master -> survivors' views fully re-published",
            republished - killed_at)
    for c in survivors:
        lows = [r for r in c.find("TOPOLOGY", since=marks[c.name])
                if int(r["links"]) != len(truth.links)]
        assert not lows, f"{c.name}'s view lost links during the failover: {lows[:3]}"
        lost = [r for r in c.find("PROBE", since=marks[c.name])
                if int(r["links"]) != len(truth.links)]
        assert not lost, f"{c.name}'s applications saw links vanish during failover: {lost[:3]}"

    # 6. a switch nobody can master any more: its records go after the grace period
    marks = {c.name: c.mark() for c in survivors}
    gone_at = time.time()
    ovs.del_bridge("t4")
    truth = real_topology(ovs)
    wait_views(survivors, truth, GRACE_PERIOD + QUICK, "t4 collected after the grace period",
               hosts=hosts, live=live)
    collected = max(c.wait_for(lambda r: r.kind == "TOPOLOGY" and int(r["switches"]) == len(
        truth.ports), QUICK, since=marks[c.name]).t for c in survivors)
    _record(f"{label} switch gone -> records collected (grace {GRACE_PERIOD:.0f} s)",
            collected - gone_at)
    assert collected - gone_at >= GRACE_PERIOD * 0.9, "collected before the grace period ended"

    # 7. restart every controller: the view comes back from the store at once; a link cut
    #    while they start (between their snapshot and their stream, or on either side) is seen
    for c in survivors:
        c.terminate()
    before = real_topology(ovs)
    marks = {c.name: c.mark() for c in cs}
    for c in cs:
        c.start()
    ovs.del_port("t1", "t1-to-t3")
    truth = real_topology(ovs)
    assert len(truth.links) == len(before.links) - 2
    for c in cs:
        first = c.wait_for(lambda r: r.kind == "TOPOLOGY", CONVERGE, since=marks[c.name],
                           what="first view after restart")
        assert int(first["links"]) >= len(truth.links), (
            f"{c.name}'s first view after a restart should come whole from the store: {first}")
        assert int(first["switches"]) == len(truth.ports)
    live = {c.member_id for c in cs}
    wait_views(cs, truth, CONVERGE, "views after a restart of every controller", hosts=hosts,
               live=live)
    assert all(c.running for c in cs)

