"""Rebalancing and planned handover, measured on real Open vSwitch bridges or the emulated fleet.

For each backend (--backends): N bridges (--bridges, default 100) in one private Open vSwitch
(userspace datapath), each dialling four `coord-manager` processes (os-ken, the mastership app
and the unmodified learning switch, `balance_policy = balanced`, `balance_settle` and
`balance_min_interval` 3 s and 1 s: the settle time covers OVS's 1 s reconnect backoff). Three start first.
  (a) balanced: from the last of the three READY lines to the first moment every switch has one
      confirmed master and two confirmed slaves and the masters are within +-1 of N/3 (the
      controllers' own MASTERSHIP log lines);
  (b) 4th joins: from its READY line to every switch settled and within +-1 of N/4;
  (c) lost under load: bridge 1 also has two hosts; host 1 sends a numbered frame every 4 ms
      that the learning switch floods as a packet-in (tests/integration/test_balancing.py
      explains why), a pass-through proxy in front of each controller notes which frames reached
      it as packet-ins, and bridge 1 is moved --moves times round the four controllers with
      `coordctl move`. Reported: frames sent, packet-ins, packet-ins never handled (must be 0),
      handled twice (must be 0), and frames the switch dropped itself while a new master's
      learning switch re-synced (not a handover's doing: it deletes every flow on promotion).
Waits are on the controllers' log lines (pushed); each phase is bounded by --timeout.

With --fleet N: N emulated switches (`ryu_integration.testing.fleet`, one process, which
applies the marker FLOW_MODs and sends FLOW_REMOVED like OVS) and four `coord-manager` processes
running only the mastership app, same options. Reported: (a) from the fleet's start to every
switch mastered within +-1 of N/3 (the fleet's events file: the switches' view), (b) from the
4th's READY line to within +-1 of N/4, and the planned moves that completed / aborted (the
targets' HANDOVER_DONE lines). The balancer plans when membership changes and, damped, when
switch connections change (a fleet that connects after its first plan, the 4th's connections
coming up after its join), so it balances by itself. As a fallback that shows a regression,
if (a) is not reached NUDGE_AFTER s after every switch is mastered, or (b) NUDGE_AFTER s after
the 4th is connected to every switch, the benchmark runs `coordctl balance` once and says so
("nudged": yes); the times then include that wait. No packets: the fleet has no datapath; loss
is the OVS rows'.

Usage: .venv/bin/python benchmarks/rebalance.py [--backends embedded,zookeeper,etcd]
       [--bridges 100] [--moves 8] [--timeout 120]
       .venv/bin/python benchmarks/rebalance.py --fleet 1000 [--backends ...] [--timeout 300]
(REBALANCE_KEEP=1 keeps the controllers' logs in /tmp/rebalance-*.)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scale import (
    FRAMEWORK,
    Backend,
    FleetView,
    Follower,
    start_backends,
    stop_process,
)
from benchmarks.scale import wait_until as wait_pushed
from tests.chaos.hosts import HostPair
from tests.integration.packet_in_proxy import PacketInProxy
from tests.integration.ryu_helpers import (
    Controller,
    coord_manager_argv,
    settled,
    wait_until,
    write_conf,
)
from tests.integration.test_balancing import Deliveries, Sender
from tests.servers._process import LOOPBACK, ManagedProcess, free_ports

APPS = ("ryu_integration.mastership", "ryu_integration.apps.learning_switch")
BALANCE = {"balance_policy": "balanced", "balance_settle": 3.0, "balance_min_interval": 1.0}
#: Seconds after every switch is mastered (3 controllers) / the 4th is connected to all before
#: `coordctl balance` is run: covers the connection trigger (quiet `balance_settle`, at most
#: twice that) and its handovers, so a nudge means the balancer did not balance by itself.
NUDGE_AFTER = 20.0
_DONE = re.compile(r"HANDOVER_DONE .*\brole=target\b.*\boutcome=(\w+)")


def _coordctl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("coordctl", path=str(Path(sys.executable).parent)) or "coordctl"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120,
                          check=False)


def _balanced(cs: list[Controller], dpids: list[int]) -> dict[str, int] | None:
    running = [c for c in cs if c.running]
    load = dict.fromkeys((c.name for c in running), 0)
    for dpid in dpids:
        master = settled(running, dpid)
        if master is None:
            return None
        load[master.name] += 1
    low, high = len(dpids) // len(running), -(-len(dpids) // len(running))
    return load if all(low <= n <= high for n in load.values()) else None


def run(name: str, url: str, ovs: Any, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"backend": name, "bridges": args.bridges}
    ports = free_ports(4)
    options = {"backend_url": url, "session_timeout": 2.0, "balance_policy": "balanced",
               "balance_settle": 3.0, "balance_min_interval": 1.0}
    cs = [Controller(f"c{i}", "os-ken", port, workdir, {"coordination": options}, APPS)
          for i, port in enumerate(ports)]
    proxies = [PacketInProxy(c.name, c.port) for c in cs]
    deliveries = Deliveries()
    pair = HostPair(ovs, 1, deliveries)
    dpids = list(range(1, args.bridges + 1))
    try:
        ovs.add_bridges([(f"br{d}", d, [p.port for p in proxies] if d == 1 else ports)
                         for d in dpids])
        pair.add_ports()
        for c in cs[:3]:
            c.start()
        ready = max(c.wait_ready(60).t for c in cs[:3])
        wait_until(lambda: _balanced(cs, dpids), args.timeout, "3 controllers balanced", cs)
        out["balanced_3_s"] = time.time() - ready
        cs[3].start()
        joined = cs[3].wait_ready(60).t
        load = wait_until(lambda: _balanced(cs, dpids), args.timeout, "4th got its share", cs)
        out["balanced_4_s"] = time.time() - joined
        out["load_4"] = load
        out["moves"] = sum(len(c.find("HANDOVER_DONE", role="target")) for c in cs)
        with Sender([pair]) as sender:
            deliveries.wait_for(1, 50, 30.0)
            for i in range(args.moves):
                master = settled(cs, 1)
                assert master is not None
                target = cs[(cs.index(master) + 1) % 4]  # round the four controllers
                moved = _coordctl("--url", url, "move", "1", target.member_id, "--wait", "30")
                if moved.returncode != 0:
                    raise RuntimeError(f"move {i + 1}: {moved.stderr.strip()}")
                wait_until(lambda t=target: settled(cs, 1) is t, args.timeout,
                           "the target settled", cs)
                deliveries.wait_for(1, sender.seq + 25, 30.0)
        last = sender.seq
        deliveries.wait_for(1, last, 10.0)
        counts = deliveries.counts[1]
        packet_ins = set().union(*(p.seen[1] for p in proxies))
        out.update(frames=last, packet_ins=len(packet_ins),
                   lost=sum(1 for s in packet_ins if counts[s] == 0 and s <= last),
                   duplicated=sum(1 for n in counts.values() if n > 1),
                   dropped_by_switch=sum(1 for s in range(1, last + 1) if s not in packet_ins))
        return out
    finally:
        pair.close()
        for c in cs:
            c.close()
        for p in proxies:
            p.close()


# ---- --fleet N: the emulated fleet ----------------------------------------------------------


def _fleet_balanced(view: FleetView, targets: list[str], n: int) -> dict[str, int] | None:
    """Masters per controller if every switch has one and each of `targets` is within +-1."""
    if len(view.masters) < n:
        return None
    load = {t: len(view.by_controller().get(t, [])) for t in targets}
    low, high = n // len(targets), -(-n // len(targets))
    return load if sum(load.values()) == n and all(
        low <= c <= high for c in load.values()) else None


def _moves(logs: list[Path]) -> dict[str, int]:
    out: dict[str, int] = {}
    for path in logs:
        for line in Follower(path).lines():
            m = _DONE.search(line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


def run_fleet(backend: Backend, n: int, workdir: Path, timeout: float) -> dict[str, Any]:
    """3 then 4 controllers (mastership app only) against an emulated fleet of `n` switches."""
    out: dict[str, Any] = {"backend": backend.name, "switches": n}
    workdir.mkdir(parents=True, exist_ok=True)
    url, env = backend.url(), dict(os.environ, PYTHONUNBUFFERED="1")
    ports = free_ports(4)
    targets = [f"tcp:{LOOPBACK}:{port}" for port in ports]
    procs = []
    for i, port in enumerate(ports):
        conf = write_conf(workdir / f"c{i}.conf", {"coordination": {
            "backend_url": url, "member_id": f"c{i}:{port}", **backend.options, **BALANCE}})
        argv = [*coord_manager_argv(), "--framework", FRAMEWORK, "--config-file", str(conf),
                "--ofp-listen-host", LOOPBACK, "--ofp-tcp-listen-port", str(port),
                "ryu_integration.mastership"]
        procs.append(ManagedProcess(f"c{i}", argv, cwd=workdir, log_path=workdir / f"c{i}.log",
                                    env=env))
    events = workdir / "fleet-events.jsonl"
    argv = [sys.executable, "-m", "ryu_integration.testing.fleet", "--switches", str(n),
            "--events", str(events)]
    for target in targets:
        argv += ["--controller", target]
    fleet = ManagedProcess("fleet", argv, cwd=ROOT, log_path=workdir / "fleet.log", env=env)
    view, follower = FleetView(n), Follower(events)
    logs = [workdir / f"c{i}.log" for i in range(4)]
    ready = [Follower(path) for path in logs]

    def replay() -> None:
        for line in follower.lines():
            if line:
                view.apply(json.loads(line))

    def alive() -> str | None:
        for proc in [*procs, fleet]:
            if proc.pid and not proc.running:
                return f"{proc.name} exited ({proc.returncode}): {proc.log_tail(10)}"
        return None

    def is_ready(i: int) -> bool:
        return any(line.startswith("READY ") for line in ready[i].lines())

    try:
        for proc in procs[:3]:
            proc.start()
        for i in range(3):
            if not wait_pushed(lambda i=i: is_ready(i), 120, alive):
                raise RuntimeError(f"c{i} not READY after 120 s")
        fleet.start()

        def balanced_3() -> dict[str, int] | None:
            replay()
            return _fleet_balanced(view, targets[:3], n)

        if not wait_pushed(lambda: (replay(), len(view.masters) >= n)[1], timeout, alive):
            raise RuntimeError(f"not every switch mastered after {timeout:g} s "
                               f"({len(view.masters)}/{n})")
        # The balancer plans by itself when switches connect after its plan; if it did not
        # (a regression), ask once and report it.
        load = wait_pushed(balanced_3, NUDGE_AFTER, alive)
        out["nudged"] = load is None
        if load is None:
            asked = _coordctl("--url", url, "balance")
            if asked.returncode != 0:
                raise RuntimeError(f"coordctl balance: {asked.stderr.strip()}")
            load = wait_pushed(balanced_3, timeout, alive)
        if load is None or view.started is None:
            raise RuntimeError(f"3 controllers not balanced after {timeout:g} s "
                               f"({len(view.masters)}/{n} mastered)")
        out["balanced_3_s"] = time.time() - view.started
        out["load_3"] = sorted(load.values())
        before = _moves(logs)
        procs[3].start()
        if not wait_pushed(lambda: is_ready(3), 120, alive):
            raise RuntimeError("c3 not READY after 120 s")
        joined = time.time()

        def balanced_4() -> dict[str, int] | None:
            replay()
            return _fleet_balanced(view, targets, n)

        # Same for the 4th: its connections that come up after its join are planned for too.
        load = None
        if wait_pushed(lambda: balanced_4() or view.connections >= 4 * n, timeout, alive):
            load = wait_pushed(balanced_4, NUDGE_AFTER, alive)
        out["nudged_4"] = load is None
        if load is None:
            asked = _coordctl("--url", url, "balance")
            if asked.returncode != 0:
                raise RuntimeError(f"coordctl balance: {asked.stderr.strip()}")
            load = wait_pushed(balanced_4, timeout, alive)
        after = _moves(logs)
        moves = {k: after.get(k, 0) - before.get(k, 0) for k in after}  # the 4th's phase only
        out.update(moves_completed=moves.get("completed", 0),
                   moves_aborted=sum(v for k, v in moves.items() if k != "completed"),
                   moves_before_join=sum(before.values()))
        if load is None:
            mine = len(view.by_controller().get(targets[3], []))
            raise RuntimeError(f"the 4th has {mine} of {n} after {timeout:g} s "
                               f"(moves {moves})")
        out["balanced_4_s"] = time.time() - joined
        out["load_4"] = sorted(load.values())
        return out
    finally:
        if fleet.pid:
            stop_process(fleet)
        for proc in procs:
            if proc.pid:
                proc.request_stop()
        for proc in procs:
            if proc.pid:
                stop_process(proc)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def main_fleet(args: argparse.Namespace, names: list[str]) -> int:
    print(f"Rebalancing {args.fleet} emulated switches (ryu_integration.testing.fleet) on "
          f"{os.cpu_count()} cores: 3 then 4 coord-manager (os-ken, mastership only, "
          "balance_policy=balanced, settle 3 s, min interval 1 s).\n"
          "  balanced 3 = fleet start -> every switch mastered within +-1 of N/3 (the fleet's "
          "view)\n  4th joins = its READY -> within +-1 of N/4; moves = planned handovers "
          "completed / aborted after the 4th joined, and all moves before it (HANDOVER_DONE)\n"
          f"  nudged 3/4 = not balanced {NUDGE_AFTER:g} s after all mastered / the 4th connected "
          "to all, so `coordctl balance` was run once (no: the balancer balanced by itself)\n"
          "  packet loss is not measured here (no datapath): see the Open vSwitch mode "
          "(without --fleet)")
    results = []
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="rebalance-fleet-", dir="/tmp"))
        if not os.environ.get("REBALANCE_KEEP"):
            stack.callback(shutil.rmtree, tmp, True)
        backends = start_backends(names, stack, tmp)
        for name in names:
            try:
                results.append(run_fleet(backends[name], args.fleet, tmp / name, args.timeout))
            except (RuntimeError, AssertionError) as exc:
                results.append({"backend": name, "error": str(exc).splitlines()[0]})
    print(f"\n{'backend':<10} {'switches':>8} {'balanced 3':>10} {'4th joins':>9} "
          f"{'completed':>9} {'aborted':>7} {'before join':>11} {'nudged':>9}  load with 4")
    for r in results:
        if "error" in r:
            print(f"{r['backend']:<10} error: {r['error']}")
            continue
        print(f"{r['backend']:<10} {r['switches']:>8} {r['balanced_3_s']:>9.1f}s "
              f"{r['balanced_4_s']:>8.1f}s {r['moves_completed']:>9} {r['moves_aborted']:>7} "
              f"{r['moves_before_join']:>11} {_yes(r['nudged']) + '/' + _yes(r['nudged_4']):>9}  "
              f"{r['load_4']}")
    return 1 if any("error" in r for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fleet", type=int, metavar="N",
                   help="N emulated switches instead of Open vSwitch bridges (no packets)")
    p.add_argument("--backends", default="embedded,zookeeper,etcd")
    p.add_argument("--bridges", type=int, default=100)
    p.add_argument("--moves", type=int, default=8)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.fleet is not None:
        if args.fleet < 1:
            print("--fleet must be >= 1", file=sys.stderr)
            return 2
        return main_fleet(args, names)
    print(f"Rebalancing {args.bridges} Open vSwitch bridges on {os.cpu_count()} cores: 3 then 4 "
          f"coord-manager (os-ken, mastership + learning switch, balance_policy=balanced, "
          f"settle 3 s); then {args.moves} planned handovers of bridge 1 under 250 frames/s.\n"
          "  balanced 3 = last READY -> all switches settled within +-1 of N/3 (controllers' "
          "logs)\n  4th joins = its READY -> all settled within +-1 of N/4\n"
          "  lost / duplicated = packet-ins (seen on the wire) handled 0 / 2+ times (must be 0)"
          "\n  dropped by switch = frames that never became packet-ins (the learning switch's "
          "delete-all re-sync on promotion)")
    from tests.servers.ovs import OvsInstance

    results = []
    with ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="rebalance-", dir="/tmp"))
        if not os.environ.get("REBALANCE_KEEP"):
            stack.callback(shutil.rmtree, tmp, True)
        backends = start_backends(names, stack, tmp)
        for name in names:
            ovs = OvsInstance(tempfile.mkdtemp(prefix="ovs-", dir="/tmp"))
            try:
                ovs.start()
                results.append(run(name, backends[name].url(), ovs, tmp / name, args))
            except (RuntimeError, AssertionError) as exc:
                results.append({"backend": name, "error": str(exc).splitlines()[0]})
            finally:
                ovs.close()
                shutil.rmtree(ovs.dir, ignore_errors=True)
    print(f"\n{'backend':<10} {'bridges':>7} {'balanced 3':>10} {'4th joins':>9} {'moves':>5} "
          f"{'frames':>6} {'pkt-ins':>7} {'lost':>4} {'dup':>3} {'dropped by switch':>17}")
    for r in results:
        if "error" in r:
            print(f"{r['backend']:<10} error: {r['error']}")
            continue
        print(f"{r['backend']:<10} {r['bridges']:>7} {r['balanced_3_s']:>9.1f}s "
              f"{r['balanced_4_s']:>8.1f}s {r['moves']:>5} {r['frames']:>6} "
              f"{r['packet_ins']:>7} {r['lost']:>4} {r['duplicated']:>3} "
              f"{r['dropped_by_switch']:>17}")
    return 1 if any("error" in r or r["lost"] or r["duplicated"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
