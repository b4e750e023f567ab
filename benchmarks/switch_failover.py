"""Failover as a switch sees it: kill -9 of a master -> a new master confirmed by ROLE_REPLY.

For each backend (--backends), session timeout (--sessions), failure-detector setting
(--detector on,off) and switch count (--switches): three `coord-manager ... ryu_integration.
mastership` controllers on one private ZooKeeper / etcd server and the emulated fleet
(`ryu_integration.testing.fleet`) with N switches connected to all three. Each trial kills -9
the controller mastering the most switches and times, with the fleet's own timestamps, from the
signal to the last of its switches granting MASTER to another controller under a newer
generation_id (the switch has fenced the dead master). The victim is then restarted with the
same member_id and the next trial starts once every switch is mastered and every connection is
back. p50 / p99 / max over --trials trials, every configuration side by side in one table.

Usage: .venv/bin/python benchmarks/switch_failover.py [--quick] [--trials 100] [--off-trials 20]
       [--backends zookeeper,etcd] [--sessions 2,10] [--detector on,off] [--switches 1,10,100]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scale import (
    Controllers,
    FleetView,
    Follower,
    kill_busiest,
    percentile,
    stop_process,
    wait_until,
)
from ryu_integration.testing.fleet import raise_nofile_limit
from tests.servers._process import ManagedProcess

#: ryu.conf `[coordination]` options that turn the peer failure detector on and off.
DETECTOR = {"on": {"detector": True}, "off": {"detector": False}}
#: Bound on each wait (seconds): a failover, a restart, the first convergence.
TIMEOUT = 60.0


@dataclass
class Config:
    backend: str
    session: float
    detector: str
    switches: int

    @property
    def label(self) -> str:
        return (f"{self.backend:<9} session {self.session:>4g} s  detector {self.detector:<3}  "
                f"{self.switches:>4} switches")


class Store:
    """A private ZooKeeper or etcd server; each configuration gets its own namespace."""

    def __init__(self, name: str, stack: ExitStack, tmp: Path) -> None:
        self.name = name
        if name == "zookeeper":
            from tests.servers.zookeeper import ZooKeeperServer

            server: Any = ZooKeeperServer(tmp / "zookeeper")
            self._base = lambda: f"zookeeper://{server.hosts}"
        elif name == "etcd":
            from tests.servers.etcd import EtcdServer

            server = EtcdServer(tmp / "etcd")
            self._base = lambda: f"etcd3://{server.endpoint}"
        else:
            raise SystemExit(f"unknown backend {name!r}: zookeeper or etcd")
        stack.callback(server.close)
        server.start()

    def url(self) -> str:
        return f"{self._base()}/failover-{uuid.uuid4().hex[:8]}"


class _Backend:
    """What `benchmarks.scale.Controllers` reads: a URL factory and the ryu.conf options."""

    def __init__(self, store: Store, config: Config) -> None:
        self.name = store.name
        self.url = store.url
        self.options = {"session_timeout": config.session, **DETECTOR[config.detector]}


def kill_one(controllers: Controllers, view: FleetView, replay: Callable[[], None],
             alive: Callable[[], str | None], trial: int) -> float:
    """Kill -9 the busiest master, then restart it; seconds from the kill to the last of its
    switches granting MASTER to another controller under a newer generation_id."""
    failover = kill_busiest(controllers, view, replay, alive, TIMEOUT)
    if not failover.done:
        raise RuntimeError(f"trial {trial}: {len(failover.old) - len(failover.taken)} switches "
                           f"without a new master {TIMEOUT:g} s after the kill")
    controllers.procs[failover.victim].start()  # the same member_id, port and config
    return max(failover.taken.values())


def run(store: Store, config: Config, trials: int, workdir: Path) -> dict[str, Any]:
    """Trials of one configuration; the failover times (seconds) or an error."""
    result: dict[str, Any] = {**config.__dict__, "failovers_s": []}
    controllers = Controllers(workdir, _Backend(store, config))  # type: ignore[arg-type]
    fleet: ManagedProcess | None = None
    try:
        controllers.start(TIMEOUT)
        events = workdir / "fleet-events.jsonl"
        argv = [sys.executable, "-m", "ryu_integration.testing.fleet", "--switches",
                str(config.switches), "--events", str(events), "--max-backoff", "0.2"]
        for target in controllers.targets:
            argv += ["--controller", target]
        fleet = ManagedProcess("fleet", argv, cwd=ROOT, log_path=workdir / "fleet.log",
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
        fleet.start()
        view, follower = FleetView(config.switches), Follower(events)
        everyone = config.switches * len(controllers.targets)

        def alive() -> str | None:
            if fleet is not None and not fleet.running:
                return f"the fleet exited ({fleet.returncode}): {fleet.log_tail(10)}"
            return controllers.dead()

        def replay() -> None:
            for line in follower.lines():
                if line:
                    view.apply(json.loads(line))

        def settled() -> bool:
            replay()
            return (len(view.masters) == config.switches and view.connections == everyone
                    and view.quiet())

        for trial in range(trials):
            if not wait_until(settled, TIMEOUT, alive):
                raise RuntimeError(f"trial {trial}: not every switch mastered and connected "
                                   f"after {TIMEOUT:g} s")
            result["failovers_s"].append(kill_one(controllers, view, replay, alive, trial))
        return result
    except RuntimeError as exc:
        result["error"] = str(exc).splitlines()[0][:300]
        return result
    finally:
        if fleet is not None:
            stop_process(fleet)
        controllers.stop()


HOW = """\
Failover as the switches see it, on {cores} cores: 3 coord-manager (os-ken,
ryu_integration.mastership) on a private server, N emulated switches connected to all three.
  failover = kill -9 of the controller mastering the most switches -> the last of its switches
             granting MASTER to another controller under a newer generation_id (the fleet's
             timestamps: ROLE_REPLY sent); the victim then restarts with the same member_id.
  detector = the peer failure detector (docs/failure-detector.md) on or off."""


def table(results: list[dict[str, Any]]) -> str:
    head = (f"{'backend':<10} {'session':>7} {'detector':>8} {'switches':>8} {'trials':>6} "
            f"{'p50':>8} {'p99':>8} {'max':>8}")
    rows = [head, "-" * len(head)]
    for r in results:
        times = r["failovers_s"]
        cells = (f"{percentile(times, 50):7.3f}s {percentile(times, 99):7.3f}s "
                 f"{max(times):7.3f}s" if times else f"{'-':>8} {'-':>8} {'-':>8}")
        rows.append(f"{r['backend']:<10} {r['session']:>6g}s {r['detector']:>8} "
                    f"{r['switches']:>8} {len(times):>6} {cells}"
                    + (f"  ERROR {r['error']}" if "error" in r else ""))
    return "\n".join(rows)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", type=_csv, default=["zookeeper", "etcd"])
    p.add_argument("--sessions", type=lambda s: [float(x) for x in _csv(s)], default=[2.0, 10.0])
    p.add_argument("--detector", type=_csv, default=["on", "off"])
    p.add_argument("--switches", type=lambda s: [int(x) for x in _csv(s)], default=[1, 10, 100])
    p.add_argument("--trials", type=int, default=100, help="trials per configuration (100)")
    p.add_argument("--off-trials", type=int, default=20,
                   help="trials with the detector off: each waits out a session (20)")
    p.add_argument("--quick", action="store_true",
                   help="CI form: 3 trials, 10 switches, 2 s sessions")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    args = p.parse_args(argv)
    if set(args.detector) - set(DETECTOR):
        p.error("--detector takes on and/or off")
    if args.trials < 1 or args.off_trials < 1:
        p.error("--trials and --off-trials must be >= 1")
    if args.quick:
        args.trials, args.off_trials, args.switches, args.sessions = 3, 1, [10], [2.0]
    print(HOW.format(cores=os.cpu_count()))
    raise_nofile_limit()
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="failover-")))
        for backend in args.backends:
            store = Store(backend, stack, tmp)
            for session in args.sessions:
                for detector in args.detector:
                    for n in args.switches:
                        config = Config(backend, session, detector, n)
                        started = time.monotonic()
                        trials = args.trials if detector == "on" else args.off_trials
                        r = run(store, config, trials,
                                tmp / f"{backend}-{session:g}-{detector}-{n}")
                        results.append(r)
                        times = r["failovers_s"]
                        summary = (f"p50 {statistics.median(times):.3f} s" if times else "-")
                        print(f"  {config.label}: {summary}"
                              f"{'  ERROR ' + r['error'] if 'error' in r else ''} "
                              f"[{time.monotonic() - started:.0f} s]", flush=True)
    print()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
