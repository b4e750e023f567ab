"""The main job: three controllers run a network of real Open vSwitch bridges together.

What it does, on the embedded default backend (no server to install):
  1. starts a private Open vSwitch (userspace datapath, no kernel module) with N bridges in a
     ring, each bridge connected to all three controllers;
  2. starts three `coord-manager` controller processes (mastership + learning switch apps);
  3. waits until every switch has exactly one master confirmed by the switch, and prints who
     masters which switch (from the store and from the switch itself, OVSDB);
  4. kills -9 the master of one switch and measures the failover: kill -> new master
     confirmed by the switch's ROLE_REPLY, with the new generation_id;
  5. stops everything it started.

    python scripts/demo.py [--switches 4] [--url embedded:///dir | zookeeper://...]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import coordination
from coordination import Change, Mastership, Snapshot
from coordination.cli import table

MEMBERS = ("c1", "c2", "c3")
APPS = ("ryu_integration.mastership", "ryu_integration.apps.learning_switch")


class MastershipLog:
    """Mastership records as the store pushes them, with arrival times."""

    def __init__(self) -> None:
        self.current: dict[int, Mastership] = {}
        self.arrivals: list[tuple[float, Mastership]] = []
        self._cond = threading.Condition()

    def __call__(self, event: object) -> None:
        now = time.perf_counter()
        with self._cond:
            if isinstance(event, Snapshot):
                self.current = {r.dpid: r for r in event.records}
            elif isinstance(event, Change) and event.record is not None:
                self.current[event.record.dpid] = event.record
                self.arrivals.append((now, event.record))
            self._cond.notify_all()

    def wait(self, predicate, timeout: float, what: str) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.current), timeout):
                raise SystemExit(f"demo: {what} did not happen within {timeout:.0f} s")


def free_ports(count: int) -> list[int]:
    from tests.servers._process import free_ports as pick

    return pick(count)


def start_controller(member: str, port: int, url: str, workdir: Path) -> subprocess.Popen:
    conf = workdir / f"{member}.conf"
    conf.write_text(
        f"[DEFAULT]\nofp_tcp_listen_port = {port}\n"
        f"[coordination]\nbackend_url = {url}\nmember_id = {member}\nsession_timeout = 3\n"
    )
    manager = shutil.which("coord-manager", path=str(Path(sys.executable).parent)) \
        or "coord-manager"
    log = open(workdir / f"{member}.log", "wb")  # noqa: SIM115 - owned by the process
    return subprocess.Popen([manager, "--config-file", str(conf), *APPS],
                            stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


def wait_listening(proc: subprocess.Popen, member: str, port: int, workdir: Path,
                   timeout: float = 30.0) -> None:
    """Wait until a controller accepts OpenFlow connections (startup: a bounded probe)."""
    from tests.servers._process import port_open, wait_until

    def ready() -> bool:
        if proc.poll() is not None:
            log = (workdir / f"{member}.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"demo: controller {member} exited at start:\n{log}")
        return port_open("127.0.0.1", port)

    wait_until(ready, timeout, what=f"controller {member} listening on {port}")


def ovs_roles(ovs, bridge: str, port_to_member: dict[int, str]) -> str:
    roles = []
    for ctl in ovs.controllers(bridge):
        port = int(str(ctl["target"]).rsplit(":", 1)[1])
        role = ctl.get("role") if ctl.get("is_connected") else "down"
        roles.append(f"{port_to_member.get(port, port)}={role or '?'}")
    return " ".join(sorted(roles))


def show(title: str, log: MastershipLog, observer, ovs, bridges, port_to_member) -> None:
    rows = []
    for name, dpid in bridges:
        record = log.current.get(dpid)
        candidates = observer.election(f"dpid-{dpid:016x}").candidates()
        rows.append([name, f"{dpid:016x}", record.owner if record else None,
                     record.term if record else None,
                     ",".join(c.member_id for c in candidates),
                     ovs_roles(ovs, name, port_to_member)])
    print(f"\n{title}")
    print(table(rows, ["switch", "dpid", "master", "generation_id (term)", "candidates",
                       "roles seen by the switch (OVSDB)"]))


def wait_ovs_master(ovs, bridge: str, port: int, timeout: float = 15.0) -> None:
    """Block until OVSDB shows the controller on `port` as master of `bridge` (OVSDB refreshes
    its role column every few seconds; ovs-vsctl wait-until is pushed, not polled)."""
    for ctl in ovs.controllers(bridge):
        if str(ctl["target"]).endswith(f":{port}"):
            ovs.vsctl(f"--timeout={int(timeout)}", "wait-until", "controller", ctl["uuid"],
                      "role=master")
            return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", type=int, default=4)
    parser.add_argument("--url", help="backend URL (default: embedded store in a temp dir)")
    args = parser.parse_args()
    if shutil.which("ovs-vswitchd") is None:
        print("demo: Open vSwitch is not installed (Debian package openvswitch-switch; "
              "`make setup` installs it). Nothing to run against.", file=sys.stderr)
        return 1
    from tests.servers.ovs import OvsInstance

    workdir = Path(tempfile.mkdtemp(prefix="sdn-demo-"))
    url = args.url or f"embedded://{workdir}/store"
    ports = free_ports(len(MEMBERS))
    port_to_member = dict(zip(ports, MEMBERS, strict=True))
    procs: dict[str, subprocess.Popen] = {}
    ovs = OvsInstance(workdir / "ovs")
    observer = None
    try:
        print(f"backend: {url}\ncontrollers: " + ", ".join(
            f"{m} on 127.0.0.1:{p}" for p, m in port_to_member.items()))
        ovs.start()
        observer = coordination.connect(url, "demo-observer")
        log = MastershipLog()
        observer.topology.watch(log, kinds=["mastership"])
        for member, port in zip(MEMBERS, ports, strict=True):
            procs[member] = start_controller(member, port, url, workdir)
        for member, port in zip(MEMBERS, ports, strict=True):
            wait_listening(procs[member], member, port, workdir)
        start = time.perf_counter()
        bridges = [(f"s{i}", i) for i in range(1, args.switches + 1)]
        ovs.add_bridges([{"name": n, "dpid": d, "controller_ports": ports} for n, d in bridges])
        for i, (name, _) in enumerate(bridges):
            peer = bridges[(i + 1) % len(bridges)][0]
            if len(bridges) > 1 and (len(bridges) > 2 or i == 0):
                ovs.add_patch_link(name, 10, peer, 11)
        dpids = {d for _, d in bridges}
        log.wait(lambda cur: dpids <= set(cur), 60, "a confirmed master for every switch")
        print(f"every switch has a master confirmed by its ROLE_REPLY after "
              f"{time.perf_counter() - start:.2f} s")
        for name, dpid in bridges:
            wait_ovs_master(ovs, name, ports[MEMBERS.index(log.current[dpid].owner)])
        show("Who masters which switch:", log, observer, ovs, bridges, port_to_member)

        name, dpid = bridges[0]
        victim = log.current[dpid].owner
        old_term = log.current[dpid].term
        print(f"\nkill -9 {victim} (pid {procs[victim].pid}), master of {name} ...")
        killed_at = time.perf_counter()
        procs[victim].send_signal(signal.SIGKILL)
        log.wait(lambda cur: cur[dpid].owner != victim, 30, f"failover of {name}")
        new = log.current[dpid]
        confirmed_at = next(t for t, r in log.arrivals if r.dpid == dpid and r.owner != victim)
        failover_ms = (confirmed_at - killed_at) * 1000
        print(f"failover of {name}: {victim} -> {new.owner}, generation_id {old_term} -> "
              f"{new.term}, confirmed by the switch {failover_ms:.1f} ms after the kill")
        procs[victim].wait(10)
        orphaned = [d for d, r in log.current.items() if r.owner == victim]
        log.wait(lambda cur: all(cur[d].owner != victim for d in orphaned), 30,
                 "failover of every switch the killed controller mastered")
        for bname, bdpid in bridges:
            wait_ovs_master(ovs, bname, ports[MEMBERS.index(log.current[bdpid].owner)])
        show(f"After the failover ({victim} is gone):", log, observer, ovs, bridges,
             port_to_member)
        print(f"\nsummary: {len(bridges)} switches, 3 controllers on {url.split(':')[0]}; "
              f"kill -9 failover {failover_ms:.1f} ms; generation_id grew {old_term} -> "
              f"{new.term}")
        return 0
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if observer is not None:
            observer.close()
        ovs.close()
        if os.environ.get("DEMO_KEEP") != "1":
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"(logs kept in {workdir})")


if __name__ == "__main__":
    sys.exit(main())
