"""Mastership at scale: time until every switch has a confirmed master, failover after a crash,
and what it costs the controllers and the store, for N emulated switches and 3 controllers.

For each backend (--backends) and each N (--switches): three `coord-manager --framework os-ken|ryu
... ryu_integration.mastership` processes on one coordination service (private ZooKeeper and
etcd servers started here, sessions / leases of 2 s; or the embedded store in a temp dir), then
`python -m ryu_integration.testing.fleet` with N switches, each connected to all three.
  (a) all mastered: from the fleet's `fleet_start` record to the last switch's first ROLE_REPLY
      granting MASTER, both timestamps taken by the fleet (its events file);
  (a') all roles: from `fleet_start` until every switch's three connections each have a
      granted role (MASTER or SLAVE): the standbys are through their switches too;
  (b) failover: kill -9 of the controller mastering the most switches, once (a') holds (from
      rest; `--kill-at mastered`: as soon as (a) holds, while standbys may still be claiming
      SLAVE); from the signal to the last of its switches granting MASTER to another
      controller with a newer generation_id;
  (c) controller RSS (mean of the three, after (a)) and its growth per 1,000 switches; CPU
      seconds of the three controllers during (a) per 1,000 switches (/proc/PID/status, stat);
  (d) store operations per switch during (a): ZooKeeper `mntr` zk_packets_received, etcd
      /metrics grpc_server_msg_received_total (and mvcc puts); none for the embedded store.
Each phase is bounded by --timeout: a backend that does not converge is reported so.
`--ovs 100` also measures (a) with 100 real Open vSwitch bridges, from the controllers' own
MASTERSHIP log lines (their ROLE_REPLY-confirmed master), and the fleet at the same N the same
way, to show the emulation tells the truth. Every process started here is stopped by PID.
`--topology` also runs `ryu_integration.topology_sync` (with --observe-links) in the controllers
and joins the fleet's switches in a line (`--links line`: N-1 links, 2(N-1) directed), and
measures from the controllers' `TOPOLOGY member=... links=... owners=... t=...` log lines:
  (e) all links: from `fleet_start` to the first moment every controller's view holds all
      2(N-1) directed links;
  (f) topology failover: after the kill -9 of (b), until every survivor's view again holds all
      links and no record is owned by the dead controller (each re-published by a survivor);
      also the fewest links a survivor's view showed meanwhile.
  `--link-timeout S` sets Ryu's link timeout (10 s) and topology_reconcile_window to S: one
  LLDP round walks every port a controller knows (2N) at 50 ms each, so beyond ~200 ports the
  default timeout drops links before their next LLDP and (e) never holds.

Usage: .venv/bin/python benchmarks/scale.py [--quick] [--backends zookeeper,etcd,embedded]
       [--switches 100,1000,5000] [--timeout 120] [--ovs 100] [--topology [--link-timeout S]]
       [--kill-at settled|mastered] [--json out.json] [--plot out.png]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ryu_integration.testing.fake_switch import is_newer
from ryu_integration.testing.fleet import raise_nofile_limit
from tests.integration.ryu_helpers import coord_manager_argv, parse_line, write_conf
from tests.servers._process import LOOPBACK, ManagedProcess, free_ports

BACKENDS = ("zookeeper", "etcd", "embedded")
SESSION_TIMEOUT = 2  # seconds, ZooKeeper session / etcd lease
CONTROLLERS = 3
POLL = 0.05  # seconds between reads of growing log / events files (timestamps come from them)
CUT_TIMEOUT = 30.0  # seconds for one link cut to reach every view
CUTS = 20  # links cut one by one with --topology (link change -> every view, p50/p90/p99)
#: Seconds each fresh store server is exercised before anything is timed (--warm-up)
WARM_UP = 20.0
#: The cuts start once the 3 controllers together use less CPU than this (cores, over
#: QUIET_WINDOW): a link change is timed in a settled network, not in the start-up's wake.
QUIET_CORES = 1.0
QUIET_WINDOW = 0.5
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- reading what the processes write ------------------------------------------------------


#: What the controllers run (--framework).
FRAMEWORK = "os-ken"


class Follower:
    """Reads a file that another process appends to, one complete line at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._offset)
                data = fh.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete]


@dataclass
class FleetView:
    """Who masters which switch, replayed from the fleet's events file."""

    switches: int
    started: float | None = None
    masters: dict[int, tuple[str, int]] = field(default_factory=dict)
    first_master: dict[int, float] = field(default_factory=dict)
    all_mastered_at: float | None = None
    grants: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    packets: dict[str, Any] = field(default_factory=dict)  # the last `packet_in` counters line
    #: each connection's role at its switch: "equal" until a ROLE_REQUEST is granted
    roles: dict[tuple[int, str], str] = field(default_factory=dict)
    #: connections whose role is neither master nor slave yet
    unsettled: set[tuple[int, str]] = field(default_factory=set)
    #: the first moment every switch had all its connections up and each a granted role
    settled_at: float | None = None
    #: when the fleet cut each link it was told to (`link_cut` lines), in order
    cuts: list[float] = field(default_factory=list)

    def apply(self, rec: dict[str, Any]) -> None:
        kind = rec.get("kind")
        if kind == "fleet_start":
            self.started = rec["t"]
            return
        if kind == "packet_in":
            self.packets = rec
            return
        if kind == "link_cut":
            self.cuts.append(rec["t"])
            return
        dpid, ctl = rec.get("dpid"), rec.get("controller")
        current = self.masters.get(dpid)
        self.connections += {"connect": 1, "disconnect": -1}.get(kind or "", 0)
        if kind == "disconnect":
            self.roles.pop((dpid, ctl), None)
            self.unsettled.discard((dpid, ctl))
        elif kind in ("connect", "role", "demoted"):
            role = "slave" if kind == "demoted" else rec.get("role") or "equal"
            self.roles[(dpid, ctl)] = role
            if role in ("master", "slave"):
                self.unsettled.discard((dpid, ctl))
            else:
                self.unsettled.add((dpid, ctl))
            if (self.settled_at is None and not self.unsettled
                    and len(self.roles) == CONTROLLERS * self.switches):
                self.settled_at = rec["t"]
        if kind == "role" and rec["role"] == "master":
            self.masters[dpid] = (ctl, rec["generation_id"])
            self.first_master.setdefault(dpid, rec["t"])
            self.grants.append(rec)
            if self.all_mastered_at is None and len(self.first_master) == self.switches:
                self.all_mastered_at = rec["t"]
        elif kind in ("role", "demoted", "disconnect") and current and current[0] == ctl:
            del self.masters[dpid]

    def quiet(self) -> bool:
        """Every connection has its role granted (master or slave): no controller is still
        working through its switches, so a failover measured from here starts from rest."""
        return not self.unsettled

    def by_controller(self) -> dict[str, list[int]]:
        out: dict[str, list[int]] = {}
        for dpid, (ctl, _) in self.masters.items():
            out.setdefault(ctl, []).append(dpid)
        return out


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def wait_until(check: Callable[[], Any], timeout: float, alive: Callable[[], str | None]) -> Any:
    """Re-check (after reading new lines) until truthy or `timeout`; None on timeout. `alive`
    returns why we cannot go on (a process died), which is raised."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        problem = alive()
        if problem:
            raise RuntimeError(problem)
        if time.monotonic() >= deadline:
            return None
        time.sleep(POLL)


def stop_process(proc: ManagedProcess, grace: float = 15.0, bound: float = 120.0) -> None:
    """SIGTERM, then SIGKILL until the PID is reaped; bounded, never raises on a slow exit (a
    process closing thousands of sockets on a loaded machine can take longer than one wait)."""
    try:
        proc.stop(grace)
        return
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + bound
    while proc.running and time.monotonic() < deadline:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.kill()
    if proc.running:
        print(f"warning: {proc.name} (pid {proc.pid}) still exiting after {bound:g} s",
              file=sys.stderr)


# ---- process metrics -----------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def wait_quiet(pids: list[int], timeout: float) -> float | None:
    """Measure the processes' CPU over consecutive QUIET_WINDOWs until one shows less than
    QUIET_CORES in all; the seconds that took, None if no window did within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(QUIET_WINDOW)  # the measurement window itself
        if sum(cpu_seconds(pid) for pid in pids) - before < QUIET_CORES * QUIET_WINDOW:
            return time.monotonic() - started
    return None


def read_counter(backend: Any) -> dict[str, float] | None:
    """The store's request counters, or None if it has none or is too busy to answer (an
    overloaded server is a result to report, not a reason to stop)."""
    if not backend.counter:
        return None
    try:
        return backend.counter()
    except (OSError, ValueError) as exc:
        print(f"  (store counters unavailable: {exc})", flush=True)
        return None


def zookeeper_counter(server: Any) -> dict[str, float]:
    from tests.servers.zookeeper import four_letter

    values = {}
    for line in four_letter(server.host, server.port, "mntr").splitlines():
        key, _, value = line.partition("\t")
        if key in ("zk_packets_received", "zk_packets_sent"):
            values[key] = float(value)
    return values


_METRIC = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? ([-+.\deE]+|NaN)$")


def etcd_counter(server: Any) -> dict[str, float]:
    with urllib.request.urlopen(f"{server.client_url}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    wanted = ("grpc_server_msg_received_total", "etcd_debugging_mvcc_put_total",
              "etcd_debugging_mvcc_txn_total", "etcd_debugging_mvcc_range_total")
    values: dict[str, float] = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match and match.group(1) in values:
            values[match.group(1)] += float(match.group(3))
    return values


# ---- the pieces of one run -----------------------------------------------------------------


@dataclass
class Backend:
    name: str
    url: Callable[[], str]  # a fresh namespace per run
    counter: Callable[[], dict[str, float]] | None
    headline: str | None  # which counter is "store ops"
    options: dict[str, Any]


def warm_up(backend: Backend, seconds: float) -> int:
    """Exercise a fresh store through the public API for `seconds` before anything is timed:
    campaigns and resignations in batches, batches of topology writes and deletes, and a
    watch that receives them. A fresh ZooKeeper server is slower in its first minute, while
    its JVM is still compiling; a store that runs for days is measured warm. Returns the
    rounds made."""
    import coordination
    from coordination.records import Link

    elections = [f"warm-up-{i}" for i in range(200)]
    links = [Link(owner="warm-up", term=1, src_dpid=i, src_port=1, dst_dpid=i + 1, dst_port=1)
             for i in range(1, 101)]
    rounds = 0
    with coordination.connect(backend.url(), "warm-up", **backend.options) as coord:
        watch = coord.topology.watch(lambda event: None, kinds=["link"])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            coord.campaign_many(coordination.CampaignRequest(name) for name in elections)
            coord.resign_many(elections)
            coord.topology.apply([coordination.PutRecord(link) for link in links])
            coord.topology.apply([coordination.DeleteRecord("link", link.key, term=1,
                                                           domain=link.domain)
                                  for link in links])
            rounds += 1
        watch.cancel()
    return rounds


def _link_timeout_app(workdir: Path, seconds: float) -> Path:
    """A one-line app that sets Ryu's link timeout (class attribute `Switches.LINK_TIMEOUT`, 10 s;
    no option exists). The sync app paces each controller's LLDP round to a quarter of it; on
    a machine too busy to keep that pace, a longer timeout keeps links from ageing out."""
    path = workdir / "link_timeout.py"
    path.write_text(
        '"""Benchmark helper: Ryu\'s link timeout, longer than one LLDP round."""\n'
        "from ryu_integration.compat import RyuApp, framework_module\n\n"
        f'framework_module("topology.switches").Switches.LINK_TIMEOUT = {float(seconds)!r}\n\n\n'
        "class LinkTimeout(RyuApp):\n"
        '    """Nothing to run: importing the module set the timeout."""\n')
    return path


class Controllers:
    """Three coord-manager processes on one store; stopped by PID. With `topology`, they run
    the topology sync app too and discover links (--observe-links)."""

    def __init__(self, workdir: Path, backend: Backend, topology: bool = False,
                 link_timeout: float | None = None) -> None:
        self.workdir = workdir
        self.ports = free_ports(CONTROLLERS)
        self.procs: dict[str, ManagedProcess] = {}
        self.logs: dict[str, Path] = {}
        self.members: dict[str, str] = {}  # target -> member id
        url = backend.url()
        workdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        apps = ["ryu_integration.mastership"]
        options = dict(backend.options)
        if topology:
            apps.append("ryu_integration.topology_sync")
            if link_timeout is not None:
                apps.append(str(_link_timeout_app(workdir, link_timeout)))
                options["topology_reconcile_window"] = link_timeout
        for i, port in enumerate(self.ports):
            target = f"tcp:{LOOPBACK}:{port}"
            self.members[target] = f"c{i}:{port}"
            conf = write_conf(workdir / f"c{i}.conf", {"coordination": {
                "backend_url": url, "member_id": self.members[target], **options}})
            argv = [*coord_manager_argv(), "--framework", FRAMEWORK, "--config-file", str(conf),
                    "--ofp-listen-host", LOOPBACK, "--ofp-tcp-listen-port", str(port),
                    *(["--observe-links"] if topology else []), *apps]
            self.logs[target] = workdir / f"c{i}.log"
            self.procs[target] = ManagedProcess(f"c{i}", argv, cwd=workdir,
                                                log_path=self.logs[target], env=env)

    @property
    def targets(self) -> list[str]:
        return list(self.procs)

    def start(self, timeout: float) -> None:
        for proc in self.procs.values():
            proc.start()
        followers = {t: Follower(p) for t, p in self.logs.items()}
        ready: set[str] = set()

        def all_ready() -> bool:
            for target, follower in followers.items():
                if any(line.startswith("READY ") for line in follower.lines()):
                    ready.add(target)
            return len(ready) == len(followers)

        if not wait_until(all_ready, timeout, self.dead):
            raise RuntimeError(f"controllers not READY after {timeout} s")

    def dead(self) -> str | None:
        for target, proc in self.procs.items():
            if not proc.running and proc.returncode not in (None, -signal.SIGKILL):
                return f"controller {target} exited ({proc.returncode}): {proc.log_tail(15)}"
        return None

    def running_pids(self) -> list[int]:
        return [p.pid for p in self.procs.values() if p.running and p.pid]

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.request_stop()
        for proc in self.procs.values():
            stop_process(proc)

    def confirmed_masters(self) -> dict[int, float]:
        """{dpid: first t a controller logged MASTERSHIP may_program=true} from all the logs."""
        first: dict[int, float] = {}
        for path in self.logs.values():
            for seq, line in enumerate(Follower(path).lines()):
                rec = parse_line(line, seq)
                if rec and rec.kind == "MASTERSHIP" and rec.get("may_program") == "true":
                    first[rec.dpid] = min(first.get(rec.dpid, rec.t), rec.t)
        return first


@dataclass
class TopologyViews:
    """Every controller's view, replayed from their `TOPOLOGY ... links=... owners=... t=...`
    log lines (one per batch the sync app delivers)."""

    followers: dict[str, Follower]  # member id -> its log
    links: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)  # the most links each view ever held
    owners: dict[str, set[str]] = field(default_factory=dict)

    def replay(self) -> Iterator[float]:
        """Apply the new lines of every log in time order; yields each line's t once it is
        applied, so a caller can test every state the views went through."""
        records = []
        for member, follower in self.followers.items():
            for seq, line in enumerate(follower.lines()):
                rec = parse_line(line, seq)
                if rec and rec.kind == "TOPOLOGY" and rec.get("member") == member:
                    owners = set(rec.get("owners", "-").split(",")) - {"-"}
                    records.append((rec.t, member, int(rec["links"]), owners))
        records.sort(key=lambda r: r[0])
        for t, member, links, owners in records:
            self.links[member], self.owners[member] = links, owners
            self.peak[member] = max(self.peak.get(member, 0), links)
            yield t


@dataclass
class Failover:
    """One kill -9 of a master, as the fleet saw it."""

    victim: str  # the controller's target
    kill_at: float
    #: dpid -> generation_id the victim mastered it under
    old: dict[int, int]
    #: dpid -> seconds from the kill to another controller's MASTER under a newer generation_id
    taken: dict[int, float]
    done: bool  # every switch of the victim was taken within the timeout


def kill_busiest(controllers: Controllers, view: FleetView, replay: Callable[[], None],
                 alive: Callable[[], str | None], timeout: float) -> Failover:
    """Kill -9 the controller mastering the most switches and wait (bounded) until each of
    its switches grants MASTER to another controller under a newer generation_id (the fleet's
    timestamps). `replay` feeds `view` the fleet's new events."""
    owned = view.by_controller()
    victim = max(owned, key=lambda t: len(owned[t]))
    old = {dpid: view.masters[dpid][1] for dpid in owned[victim]}
    seen = len(view.grants)
    kill_at = time.time()
    controllers.procs[victim].kill()
    taken: dict[int, float] = {}

    def failed_over() -> bool:
        nonlocal seen
        replay()
        for rec in view.grants[seen:]:
            dpid = rec["dpid"]
            if (dpid in old and dpid not in taken and rec["controller"] != victim
                    and is_newer(rec["generation_id"], old[dpid])):
                taken[dpid] = rec["t"] - kill_at
        seen = len(view.grants)
        return len(taken) == len(old)

    done = bool(wait_until(failed_over, timeout, alive))
    return Failover(victim, kill_at, old, taken, done)


def _rate(per_second: float | None) -> str:
    return "-" if per_second is None else f"{per_second:.0f}/s"


def _fmt(seconds: float | None, timeout: float) -> str:
    return f"not converged after {timeout:g} s" if seconds is None else f"{seconds:.2f} s"


def measure_cuts(fleet: ManagedProcess, view: FleetView, topo: TopologyViews,
                 members: list[str], links: int, cuts: int, replay: Callable[[], None],
                 alive: Callable[[], str | None], timeout: float) -> list[float]:
    """(e') cut `cuts` links one after the other (SIGUSR1: the fleet unplugs its next linked
    port and both ends send PORT_STATUS link-down); for each, seconds from the fleet's cut to
    the last controller's view without it (both directions gone). Returns what was measured
    before a cut timed out."""
    seconds: list[float] = []
    for _ in range(cuts):
        before, links = len(view.cuts), links - 2
        assert fleet.pid is not None
        os.kill(fleet.pid, signal.SIGUSR1)
        wait_until(lambda before=before: (replay(), len(view.cuts) > before)[1], timeout, alive)
        if len(view.cuts) <= before:
            break
        reached: dict[str, float] = {}
        cut_at = view.cuts[before]

        def every_view(links: int = links, reached: dict[str, float] = reached,
                       cut_at: float = cut_at) -> bool:
            for t in topo.replay():
                if t < cut_at:
                    continue  # a view that lost links before the cut has not seen the cut
                for member in members:
                    if member not in reached and topo.links.get(member, links + 2) <= links:
                        reached[member] = t
            return len(reached) == len(members)

        wait_until(every_view, timeout, alive)
        if len(reached) < len(members):
            break
        seconds.append(max(reached.values()) - cut_at)
    return seconds


def run_fleet(backend: Backend, n: int, workdir: Path, timeout: float,
              compare_logs: bool, topology: bool = False,
              link_timeout: float | None = None, kill_at: str = "settled",
              cuts: int = 0) -> dict[str, Any]:
    """One backend x N with the emulated fleet: phases (a) to (d), and (e), (f) with
    `topology`. `kill_at` "settled": (b) kills once every connection has its role (from
    rest); "mastered": as soon as (a) holds, while standbys may still be claiming theirs."""
    result: dict[str, Any] = {"backend": backend.name, "switches": n, "switch": "fleet"}
    controllers = Controllers(workdir, backend, topology, link_timeout)
    topo = TopologyViews({m: Follower(controllers.logs[t])
                          for t, m in controllers.members.items()})
    full = 2 * (n - 1)  # directed links of a line
    if topology:
        result["links_expected"] = full
        result["link_timeout_s"] = link_timeout
    fleet: ManagedProcess | None = None
    try:
        controllers.start(timeout)
        pids = dict(zip(controllers.targets, controllers.running_pids(), strict=True))
        rss0 = {t: rss_mb(p) for t, p in pids.items()}
        cpu0 = {t: cpu_seconds(p) for t, p in pids.items()}
        store0 = read_counter(backend)
        events = workdir / "fleet-events.jsonl"
        argv = [sys.executable, "-m", "ryu_integration.testing.fleet", "--switches", str(n),
                "--events", str(events)]
        for target in controllers.targets:
            argv += ["--controller", target]
        if topology:
            argv += ["--links", "line"]
        fleet = ManagedProcess("fleet", argv, cwd=ROOT, log_path=workdir / "fleet.log",
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
        fleet.start()
        view, follower = FleetView(n), Follower(events)

        def alive() -> str | None:
            if fleet is not None and not fleet.running:
                return f"the fleet exited ({fleet.returncode}): {fleet.log_tail(10)}"
            return controllers.dead()

        def replay() -> None:
            for line in follower.lines():
                if line:
                    view.apply(json.loads(line))

        # (a) every switch mastered
        wait_until(lambda: (replay(), view.all_mastered_at)[1], timeout, alive)
        converged = view.all_mastered_at is not None and view.started is not None
        # (c), (d) at the end of (a), converged or not
        rss1 = {t: rss_mb(p) for t, p in pids.items()}
        cpu1 = {t: cpu_seconds(p) for t, p in pids.items()}
        per_k = n / 1000
        result["controller_rss_mb"] = statistics.mean(rss1.values())
        result["rss_growth_mb_per_1k"] = statistics.mean(
            (rss1[t] - rss0[t]) / per_k for t in pids)
        result["controller_cpu_s_per_1k"] = sum(cpu1[t] - cpu0[t] for t in pids) / per_k
        if fleet.pid:
            result["fleet_cpu_s"] = cpu_seconds(fleet.pid)
        store1 = read_counter(backend) if store0 is not None else None
        if store0 is not None and store1 is not None:
            delta = {k: store1.get(k, 0.0) - v for k, v in store0.items()}
            result["store_counters_per_switch"] = {k: v / n for k, v in delta.items()}
            result["store_ops_per_switch"] = delta.get(backend.headline or "", 0.0) / n
        if not converged or view.started is None or view.all_mastered_at is None:
            result["all_mastered_s"] = None
            result["mastered_at_timeout"] = len(view.first_master)
            result["connections_at_timeout"] = view.connections
            return result
        result["all_mastered_s"] = view.all_mastered_at - view.started
        firsts = sorted(t - view.started for t in view.first_master.values())
        result["first_master_p50_s"] = statistics.median(firsts)
        members = list(controllers.members.values())
        if topology:  # (e) every view holds every link
            links_all_at: float | None = None

            def all_links() -> float | None:
                nonlocal links_all_at
                for t in topo.replay():
                    if links_all_at is None and all(topo.links.get(m, 0) >= full
                                                    for m in members):
                        links_all_at = t
                return links_all_at

            wait_until(all_links, timeout, alive)
            cpu2 = {t: cpu_seconds(p) for t, p in pids.items()}
            result["topology_cpu_s_per_1k"] = sum(cpu2[t] - cpu1[t] for t in pids) / per_k
            if links_all_at is None:
                result["links_all_s"] = None
                result["links_at_timeout"] = sorted(topo.links.values())
                result["links_peak"] = sorted(topo.peak.values())
            else:
                result["links_all_s"] = links_all_at - view.started
            replay()
            if view.packets and view.packets["t"] > view.started:  # LLDP the fleet carried
                result["packet_outs_per_s"] = (view.packets["packet_outs_total"]
                                               / (view.packets["t"] - view.started))
            if links_all_at is not None and cuts:  # (e') link cut -> every view
                # in a settled network: every role granted, the start-up's work done
                wait_until(lambda: (replay(), view.settled_at)[1], timeout, alive)
                result["quiet_wait_s"] = wait_quiet(list(pids.values()), timeout)
                seconds = measure_cuts(fleet, view, topo, members, full, cuts, replay, alive,
                                       min(timeout, CUT_TIMEOUT))
                full -= 2 * len(seconds)
                result["cuts"] = len(seconds)
                result["links_after_cuts"] = full
                if seconds:
                    result["cut_p50_s"] = statistics.median(seconds)
                    result["cut_p90_s"] = percentile(seconds, 90)
                    result["cut_p99_s"] = percentile(seconds, 99)
                    result["cut_max_s"] = max(seconds)
                    result["cut_s"] = [round(s, 6) for s in seconds]
        # (a') every connection with its role granted; (b) from there unless told otherwise
        if kill_at == "settled":
            wait_until(lambda: (replay(), view.settled_at)[1], timeout, alive)
        else:
            replay()
        result["kill_at"] = kill_at
        result["all_roles_s"] = (None if view.settled_at is None
                                 else view.settled_at - view.started)
        # (b) kill -9 the busiest master
        result["masters_per_controller"] = sorted(
            (len(v) for v in view.by_controller().values()), reverse=True)
        failover = kill_busiest(controllers, view, replay, alive, timeout)
        victim, kill_at, taken = failover.victim, failover.kill_at, failover.taken
        result["failover_switches"] = len(failover.old)
        if failover.done:
            result["failover_s"] = max(taken.values())
            result["failover_p50_s"] = statistics.median(taken.values())
        else:
            result["failover_s"] = None
            result["failed_over_at_timeout"] = len(taken)
        if topology and result.get("links_all_s") is not None:  # (f)
            dead = controllers.members[victim]
            survivors = [m for m in members if m != dead]
            fewest = min(topo.links.get(m, 0) for m in survivors)
            whole_at: float | None = None

            def republished() -> float | None:
                nonlocal whole_at, fewest
                for t in topo.replay():
                    if t < kill_at or whole_at is not None:
                        continue
                    fewest = min([fewest, *(topo.links.get(m, 0) for m in survivors)])
                    if all(topo.links.get(m, 0) >= full and dead not in topo.owners.get(m, ())
                           for m in survivors):
                        whole_at = t
                return whole_at

            wait_until(republished, timeout, alive)
            result["topology_failover_s"] = None if whole_at is None else whole_at - kill_at
            result["links_fewest_after_kill"] = fewest
            if whole_at is None:
                result["links_at_timeout"] = sorted(topo.links[m] for m in survivors)
                result["dead_owner_left_in"] = sum(dead in topo.owners.get(m, ())
                                                   for m in survivors)
        if compare_logs:
            first = controllers.confirmed_masters()
            if len(first) >= n:
                result["all_mastered_ctl_logs_s"] = max(first.values()) - view.started
        return result
    except RuntimeError as exc:
        result["error"] = str(exc).splitlines()[0][:300]
        return result
    finally:
        if fleet is not None:
            stop_process(fleet)
        controllers.stop()


def run_ovs(backend: Backend, n: int, workdir: Path, timeout: float, ovs: Any) -> dict[str, Any]:
    """(a) with n real OVS bridges, from the controllers' MASTERSHIP lines."""
    result: dict[str, Any] = {"backend": backend.name, "switches": n, "switch": "ovs"}
    controllers = Controllers(workdir, backend)
    names = [f"sc{i}" for i in range(n)]
    added = False
    try:
        controllers.start(timeout)
        started = time.time()
        ovs.add_bridges([(name, i + 1, controllers.ports) for i, name in enumerate(names)])
        added = True
        followers = {t: Follower(p) for t, p in controllers.logs.items()}
        first: dict[int, float] = {}

        def mastered() -> bool:
            for follower in followers.values():
                for seq, line in enumerate(follower.lines()):
                    rec = parse_line(line, seq)
                    if rec and rec.kind == "MASTERSHIP" and rec.get("may_program") == "true":
                        first[rec.dpid] = min(first.get(rec.dpid, rec.t), rec.t)
            return len(first) >= n

        if wait_until(mastered, timeout, controllers.dead):
            result["all_mastered_ctl_logs_s"] = max(first.values()) - started
        else:
            result["all_mastered_ctl_logs_s"] = None
            result["mastered_at_timeout"] = len(first)
        return result
    except RuntimeError as exc:
        result["error"] = str(exc).splitlines()[0][:300]
        return result
    finally:
        controllers.stop()
        if added:
            args: list[str] = []
            for name in names:
                args += ["--", "--if-exists", "del-br", name]
            ovs.vsctl(*args, timeout=60)


# ---- servers -------------------------------------------------------------------------------


def start_backends(names: list[str], stack: ExitStack, tmp: Path) -> dict[str, Backend]:
    """Start the private servers the selected backends need; closed by `stack`."""
    out: dict[str, Backend] = {}
    timing = {"session_timeout": SESSION_TIMEOUT}
    if "zookeeper" in names:
        from tests.servers.zookeeper import ZooKeeperServer

        zk = ZooKeeperServer(tmp / "zookeeper")
        stack.callback(zk.close)
        zk.start()
        out["zookeeper"] = Backend(
            "zookeeper", lambda: f"zookeeper://{zk.hosts}/scale-{uuid.uuid4().hex[:8]}",
            lambda: zookeeper_counter(zk), "zk_packets_received", timing)
    if "etcd" in names:
        from tests.servers.etcd import EtcdServer

        etcd = EtcdServer(tmp / "etcd")
        stack.callback(etcd.close)
        etcd.start()
        out["etcd"] = Backend(
            "etcd",
            lambda: f"etcd3://{etcd.endpoint}/scale-{uuid.uuid4().hex[:8]}"
                    f"?lease_ttl={SESSION_TIMEOUT}",
            lambda: etcd_counter(etcd), "grpc_server_msg_received_total", timing)
    if "embedded" in names:
        out["embedded"] = Backend(
            "embedded", lambda: f"embedded://{tmp / ('embedded-' + uuid.uuid4().hex[:8])}",
            None, None, {})
    return out


# ---- report --------------------------------------------------------------------------------


HOW = """\
Measuring mastership at scale on {cores} cores: 3 coord-manager ({framework}, ryu_integration.mastership)
per run; ZooKeeper / etcd sessions {session} s; switches emulated by ryu_integration.testing.fleet
(one process, N x 3 OpenFlow 1.3 connections).
  all mastered = fleet start -> last switch's first ROLE_REPLY(MASTER) (fleet's timestamps)
  all roles    = fleet start -> every connection's role granted, master or slave
  failover     = kill -9 of the busiest master -> last of its switches granted MASTER to
                 another controller under a newer generation_id (fleet's timestamps);
                 killed {kill_at}
  RSS / CPU    = the 3 controllers, /proc; CPU during 'all mastered', per 1,000 switches
  store ops    = ZooKeeper zk_packets_received / etcd grpc msgs received during
                 'all mastered', per switch
  ovs rows     = real Open vSwitch bridges; 'all mastered' from the controllers' MASTERSHIP
                 log lines (ROLE_REPLY-confirmed), from the add-br transaction
Per-phase timeout {timeout:g} s. {warm_up}{topology}"""

TOPOLOGY_HOW = """
--topology: the controllers also run ryu_integration.topology_sync (--observe-links), the fleet
joins its switches in a line (N-1 links = 2(N-1) directed, as the views count them).
  all links    = fleet start -> every controller's view holds every link (TOPOLOGY log lines)
  link cut     = {cuts} links cut one after the other (the fleet unplugs the port: no LLDP
                 crosses, both ends send PORT_STATUS link-down) -> the last controller's view
                 without it; p50 / p90 / p99 over the cuts (fleet's and controllers' timestamps);
                 cut in a settled network: every role granted and the controllers using
                 under {quiet:g} core together (over {window:g} s)
  topology failover = the kill -9 above -> every survivor's view holds every link again and
                 no record is owned by the dead controller; min = fewest links a survivor
                 showed meanwhile
  LLDP PACKET_OUTs = the LLDP packet-outs the fleet carried per second, from its start to its
                 last once-a-second report before 'all links' (-: none came before){link_timeout}"""


def _formatter(r: dict[str, Any]) -> Callable[[str, str], str]:
    """A cell: `r[key]` in `fmt` (e.g. "7.1f"), or "-" as wide."""

    def cell(key: str, fmt: str) -> str:
        if r.get(key) is None:
            return "-".rjust(int(fmt.split(".")[0]))
        return format(r[key], fmt)

    return cell


def table(results: list[dict[str, Any]], timeout: float) -> str:
    head = (f"{'backend':<10} {'switch':<6} {'N':>5}  {'all mastered':<26} {'all roles':>9}  "
            f"{'failover (kill -9)':<28} {'RSS MB':>7} {'MB/1k':>6} {'CPU s/1k':>8} "
            f"{'store ops/sw':>12}")
    if any("links_expected" in r for r in results):
        head += (f"  {'all links (every view)':<26} {'link cut p50 / p90 / p99':<27} "
                 f"{'topology failover (min links)':<36}")
    rows = [head, "-" * len(head)]
    for r in results:
        if "error" in r:
            rows.append(f"{r['backend']:<10} {r['switch']:<6} {r['switches']:>5}  "
                        f"error: {r['error']}")
            continue
        if r["switch"] == "ovs":
            a = _fmt(r.get("all_mastered_ctl_logs_s"), timeout)
        else:
            a = _fmt(r.get("all_mastered_s"), timeout)
            if r.get("all_mastered_ctl_logs_s") is not None:
                a += f" ({r['all_mastered_ctl_logs_s']:.2f} logs)"
        note = ""
        if "mastered_at_timeout" in r:
            note = f"{r['mastered_at_timeout']}/{r['switches']} mastered"
            if "connections_at_timeout" in r:
                note += f", {r['connections_at_timeout']}/{CONTROLLERS * r['switches']} channels up"
        b = ""
        if "failover_switches" in r:
            b = _fmt(r.get("failover_s"), timeout) + f" ({r['failover_switches']} sw)"
            if r.get("failover_s") is None:
                b += f" {r.get('failed_over_at_timeout', 0)} done"
        num = _formatter(r)
        topo = ""
        if "links_expected" in r:
            links = _fmt(r.get("links_all_s"), timeout) if "links_all_s" in r else "-"
            again = "-"
            if "topology_failover_s" in r:
                again = _fmt(r["topology_failover_s"], timeout)
                whole = r.get("links_after_cuts", r["links_expected"])
                again += f" (min {r['links_fewest_after_kill']}/{whole})"
            cut = "-"
            if r.get("cut_p50_s") is not None:
                cut = (f"{r['cut_p50_s'] * 1000:.1f} / {r['cut_p90_s'] * 1000:.1f} / "
                       f"{r['cut_p99_s'] * 1000:.1f} ms ({r['cuts']})")
            topo = f"  {links:<26} {cut:<27} {again:<36}"

        roles = "-" if r.get("all_roles_s") is None else f"{r['all_roles_s']:.2f} s"
        rows.append(f"{r['backend']:<10} {r['switch']:<6} {r['switches']:>5}  {a:<26} {roles:>9}  "
                    f"{b:<28} "
                    f"{num('controller_rss_mb', '7.0f')} {num('rss_growth_mb_per_1k', '6.1f')} "
                    f"{num('controller_cpu_s_per_1k', '8.2f')} "
                    f"{num('store_ops_per_switch', '12.1f')}{topo}")
        if "quiet_wait_s" in r and r["quiet_wait_s"] is None:
            rows.append(f"{'':<24}^ the controllers never used under {QUIET_CORES:g} core "
                        f"together: the links were cut anyway")
        if "links_at_timeout" in r:
            peak = f" (most ever: {r['links_peak']})" if "links_peak" in r else ""
            rows.append(f"{'':<24}^ links in the views at the timeout: "
                        f"{r['links_at_timeout']}{peak} of {r['links_expected']}")
        if note:
            rows.append(f"{'':<24}^ at the timeout: {note}")
    return "\n".join(rows)


def plot(results: list[dict[str, Any]], path: str, timeout: float) -> None:
    """Both times against N per backend (log x); a run that did not converge is an x at the
    timeout."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("--plot: matplotlib is not installed (pip install matplotlib); no plot drawn")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key, title in ((axes[0], "all_mastered_s", "every switch mastered"),
                           (axes[1], "failover_s", "failover after kill -9")):
        for backend in BACKENDS:
            points = sorted((r["switches"], r[key]) for r in results
                            if r["backend"] == backend and r["switch"] == "fleet"
                            and r.get(key) is not None)
            line = None
            if points:
                (line,) = ax.plot(*zip(*points, strict=True), marker="o", label=backend)
            stuck = sorted(r["switches"] for r in results
                           if r["backend"] == backend and r["switch"] == "fleet"
                           and key in r and r[key] is None)
            if stuck:
                ax.plot(stuck, [timeout] * len(stuck), linestyle="none", marker="x",
                        color=line.get_color() if line else None,
                        label=f"{backend}: not converged after {timeout:g} s")
        ax.set_xscale("log")
        ax.set_xlabel("switches (3 controllers)")
        ax.set_ylabel("seconds")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    print(f"plot written to {path}")


# ---- main ----------------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", type=_csv, default=list(BACKENDS),
                   help="comma-separated: zookeeper,etcd,embedded (default all)")
    p.add_argument("--switches", type=lambda s: [int(x) for x in _csv(s)],
                   default=[100, 1000, 5000], help="comma-separated N (default 100,1000,5000)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per phase (120)")
    p.add_argument("--ovs", type=int, default=0, metavar="N",
                   help="also measure 'all mastered' with N real OVS bridges")
    p.add_argument("--topology", action="store_true",
                   help="also run ryu_integration.topology_sync, link the fleet in a line and "
                        "measure link discovery and its failover")
    p.add_argument("--link-timeout", type=float, metavar="S",
                   help="with --topology: set Ryu's link timeout (default 10 s) and "
                        "topology_reconcile_window to S, to measure past Ryu's LLDP pacing")
    p.add_argument("--cuts", type=int, default=CUTS, metavar="K",
                   help=f"with --topology: links cut one by one to time a link change reaching "
                        f"every view (default {CUTS}; 0: none)")
    p.add_argument("--warm-up", type=float, default=WARM_UP, metavar="S",
                   help=f"seconds each fresh store is exercised before anything is timed "
                        f"(default {WARM_UP:g}; --quick: at most 1; 0: none)")
    p.add_argument("--quick", action="store_true",
                   help="CI form: 100 switches, 30 s phases (backends as given)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--keep", metavar="DIR",
                   help="keep every log, config and events file under DIR (default: a temp dir, "
                        "removed)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the results (needs matplotlib)")
    p.add_argument("--kill-at", choices=("settled", "mastered"), default="settled",
                   help="when the failover's kill -9 comes: once every connection has its role "
                        "(settled, default: from rest), or as soon as every switch has a "
                        "master (mastered: while standbys may still be claiming SLAVE)")
    p.add_argument("--framework", choices=("os-ken", "ryu"), default="os-ken",
                   help="what the controllers run (default os-ken; ryu runs Ryu 4.34 on eventlet)")
    args = p.parse_args(argv)
    global FRAMEWORK
    FRAMEWORK = args.framework
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        p.error(f"unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}")
    if args.link_timeout is not None and not args.topology:
        p.error("--link-timeout needs --topology")
    if args.cuts < 0:
        p.error("--cuts must be 0 or more")
    if not 0 <= args.warm_up <= 600:
        p.error("--warm-up must be between 0 and 600 seconds")
    if args.quick:
        args.switches, args.timeout = [100], min(args.timeout, 30.0)
        args.warm_up = min(args.warm_up, 1.0)
    return args


@contextlib.contextmanager
def _ovs_instance(n: int) -> Iterator[Any]:
    if not n:
        yield None
        return
    from tests.servers.ovs import OvsInstance

    ovs = OvsInstance(tempfile.mkdtemp(prefix="ovs-", dir="/tmp"))  # short unix socket paths
    try:
        ovs.start()
        yield ovs
    finally:
        ovs.close()
        shutil.rmtree(ovs.dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warmed = (f"Each store server is warmed up first ({args.warm_up:g} s of campaigns and "
              f"topology writes, untimed):\na fresh ZooKeeper's JVM is still compiling in its "
              f"first minute." if args.warm_up else "No warm-up (--warm-up 0).")
    print(HOW.format(cores=os.cpu_count(), session=SESSION_TIMEOUT, timeout=args.timeout,
                     warm_up=warmed,
                     framework=FRAMEWORK, kill_at={
                         "settled": "once every role is granted (from rest)",
                         "mastered": "as soon as every switch has a master"}[args.kill_at],
                     topology=TOPOLOGY_HOW.format(
                         cuts=args.cuts, quiet=QUIET_CORES, window=QUIET_WINDOW, link_timeout=(
                         f"\n  --link-timeout {args.link_timeout:g}: Ryu's link timeout and "
                         f"topology_reconcile_window set to {args.link_timeout:g} s"
                         if args.link_timeout is not None else
                         "\n  Ryu's link timeout 10 s: each controller paces its LLDP so that a "
                         "round over the ports it masters takes a quarter of it"))
                     if args.topology else ""))
    results: list[dict[str, Any]] = []
    raise_nofile_limit()  # inherited by the controllers and the fleet
    with ExitStack() as stack:
        if args.keep:
            tmp = Path(args.keep).resolve()
            tmp.mkdir(parents=True, exist_ok=True)
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scale-")))
        backends = start_backends(args.backends, stack, tmp)
        if args.warm_up > 0:
            for name in args.backends:
                rounds = warm_up(backends[name], args.warm_up)
                print(f"  {name}: warmed up for {args.warm_up:g} s ({rounds} rounds of 200 "
                      f"campaigns and resignations, 100 link writes and deletes)", flush=True)
        ovs = stack.enter_context(_ovs_instance(args.ovs))
        for name in args.backends:
            backend = backends[name]
            for n in args.switches:
                t0 = time.monotonic()
                r = run_fleet(backend, n, tmp / f"{name}-{n}", args.timeout,
                              compare_logs=n == args.ovs, topology=args.topology,
                              link_timeout=args.link_timeout, kill_at=args.kill_at,
                              cuts=args.cuts if args.topology else 0)
                results.append(r)
                links = ""
                if args.topology:
                    cut = ("-" if r.get("cut_p50_s") is None else
                           f"{r['cut_p50_s'] * 1000:.1f}/{r['cut_p90_s'] * 1000:.1f}/"
                           f"{r['cut_p99_s'] * 1000:.1f} ms")
                    links = (f", all links {_fmt(r.get('links_all_s'), args.timeout)}, "
                             f"link cut p50/p90/p99 {cut}, "
                             f"topology failover "
                             f"{_fmt(r.get('topology_failover_s'), args.timeout)}, "
                             f"LLDP PACKET_OUTs {_rate(r.get('packet_outs_per_s'))}")
                print(f"  {name} fleet N={n}: all mastered "
                      f"{_fmt(r.get('all_mastered_s'), args.timeout)}, "
                      f"all roles {_fmt(r.get('all_roles_s'), args.timeout)}, "
                      f"failover {_fmt(r.get('failover_s'), args.timeout)}{links}"
                      f"{'  ERROR ' + r['error'] if 'error' in r else ''} "
                      f"[{time.monotonic() - t0:.0f} s]", flush=True)
            if ovs is not None:
                r = run_ovs(backend, args.ovs, tmp / f"{name}-ovs", args.timeout, ovs)
                results.append(r)
                print(f"  {name} ovs N={args.ovs}: all mastered "
                      f"{_fmt(r.get('all_mastered_ctl_logs_s'), args.timeout)}", flush=True)
    print()
    print(table(results, args.timeout))
    if args.json:
        Path(args.json).write_text(json.dumps({"timeout_s": args.timeout, "results": results},
                                              indent=2))
        print(f"results written to {args.json}")
    if args.plot:
        plot(results, args.plot, args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
