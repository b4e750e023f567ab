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

All along, `coordctl serve` shows it live in a browser: the URL is printed first
(`--listen host:port`, default a free loopback port; `--linger N` keeps everything up N seconds
after the summary so the page can be looked at; `--screenshots DIR` saves the page before and after
the failover, with the system chromium).

    python scripts/demo.py [--switches 4] [--url embedded:///dir | zookeeper://...]
"""

from __future__ import annotations

import argparse
import contextlib
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
from ryu_integration.cli import table

MEMBERS = ("c1", "c2", "c3")
APPS = ("ryu_integration.mastership", "ryu_integration.topology_sync",
        "ryu_integration.apps.learning_switch")


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


def start_controller(member: str, port: int, url: str, workdir: Path,
                     metrics_port: int) -> subprocess.Popen:
    conf = workdir / f"{member}.conf"
    conf.write_text(
        f"[DEFAULT]\nofp_tcp_listen_port = {port}\nobserve_links = true\n"
        f"[coordination]\nbackend_url = {url}\nmember_id = {member}\nsession_timeout = 3\n"
        f"metrics_port = {metrics_port}\n"
    )
    manager = shutil.which("coord-manager", path=str(Path(sys.executable).parent)) \
        or "coord-manager"
    log = open(workdir / f"{member}.log", "wb")  # noqa: SIM115 - owned by the process
    return subprocess.Popen([manager, "--config-file", str(conf), *APPS],
                            stdout=log, stderr=subprocess.STDOUT, cwd=workdir)


def start_webview(url: str, listen: str, workdir: Path) -> tuple[subprocess.Popen, str]:
    """`coordctl serve` on the demo's backend; returns the process and the page URL."""
    import selectors

    coordctl = shutil.which("coordctl", path=str(Path(sys.executable).parent)) or "coordctl"
    log = open(workdir / "webview.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen([coordctl, "--url", url, "serve", "--listen", listen],
                            stdout=subprocess.PIPE, stderr=log, text=True)
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline() if sel.select(30) else ""
    if not line.startswith("coordctl: serving "):
        proc.kill()
        proc.wait(10)
        err = (workdir / "webview.log").read_text(errors="replace").strip()
        raise SystemExit(f"demo: coordctl serve did not start: {err or line!r}")
    return proc, line.split()[2]


class Camera:
    """The live page in headless chromium (selenium), for screenshots taken when the page shows
    a given state: `when` is pushed by the page itself (window.coordView.when)."""

    def __init__(self, page: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,820"):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(
            options=options, service=Service(shutil.which("chromedriver") or "chromedriver"))
        self.driver.set_script_timeout(60)
        self.driver.get(page)

    def shot(self, path: Path, masters: dict[int, str]) -> None:
        """Save the page once it shows every switch of `masters`, confirmed, with links."""
        want = {f"{dpid:016x}": owner for dpid, owner in masters.items()}
        self.driver.execute_async_script(
            "const want = arguments[0], done = arguments[arguments.length - 1];"
            "window.coordView.when((m) => m.links.length > 0 && Object.entries(want).every("
            "([d, o]) => m.masters[d] && m.masters[d].leader === o && m.masters[d].confirmed),"
            " done);", want)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
        print(f"screenshot of the live page: {path}")

    def close(self) -> None:
        self.driver.quit()


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
    parser.add_argument("--listen", default="127.0.0.1:0",
                        help="where the live page listens (default: a free loopback port)")
    parser.add_argument("--linger", type=float, default=os.environ.get("DEMO_LINGER", "0"),
                        help="keep everything running N seconds after the summary "
                             "(or $DEMO_LINGER; Ctrl-C ends it sooner)")
    parser.add_argument("--screenshots", type=Path, metavar="DIR",
                        help="save the live page into DIR: webview.png (every switch mastered), "
                             "webview-failover.png (after the kill)")
    args = parser.parse_args()
    if shutil.which("ovs-vswitchd") is None:
        print("demo: Open vSwitch is not installed (Debian package openvswitch-switch; "
              "`make setup` installs it). Nothing to run against.", file=sys.stderr)
        return 1
    from tests.servers.ovs import OvsInstance

    workdir = Path(tempfile.mkdtemp(prefix="sdn-demo-"))
    url = args.url or f"embedded://{workdir}/store"
    ports = free_ports(len(MEMBERS))
    metrics_ports = free_ports(len(MEMBERS))
    port_to_member = dict(zip(ports, MEMBERS, strict=True))
    procs: dict[str, subprocess.Popen] = {}
    ovs = OvsInstance(workdir / "ovs")
    observer = None
    webview = camera = None
    try:
        print(f"backend: {url}\ncontrollers: " + ", ".join(
            f"{m} on 127.0.0.1:{p}" for p, m in port_to_member.items()))
        webview, page = start_webview(url, args.listen, workdir)
        print(f"live page: {page}  (coordctl serve; JSON at {page}api/masters)", flush=True)
        if args.screenshots:
            camera = Camera(page)
        ovs.start()
        observer = coordination.connect(url, "demo-observer", detector=False)
        log = MastershipLog()
        observer.topology.watch(log, kinds=["mastership"])
        for member, port, mport in zip(MEMBERS, ports, metrics_ports, strict=True):
            procs[member] = start_controller(member, port, url, workdir, mport)
        for member, port in zip(MEMBERS, ports, strict=True):
            wait_listening(procs[member], member, port, workdir)
        print("metrics (Prometheus): " + ", ".join(
            f"{m} http://127.0.0.1:{p}/metrics" for m, p in zip(MEMBERS, metrics_ports,
                                                                 strict=True)), flush=True)
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
        if camera is not None:
            camera.shot(args.screenshots / "webview.png",
                        {d: log.current[d].owner for _, d in bridges})

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
        if camera is not None:
            camera.shot(args.screenshots / "webview-failover.png",
                        {d: log.current[d].owner for _, d in bridges})
        if args.linger > 0:
            print(f"\nstill running for {args.linger:.0f} s: live page {page} (Ctrl-C stops)",
                  flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait(args.linger)
        return 0
    finally:
        if camera is not None:
            camera.close()
        if webview is not None and webview.poll() is None:
            webview.terminate()
            try:
                webview.wait(10)
            except subprocess.TimeoutExpired:
                webview.kill()
                webview.wait(5)
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
