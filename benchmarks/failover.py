"""Failover after kill -9 of a leader, with the peer failure detector on and off, side by side.

Two survivor processes (s1, s2) campaign in N elections and stay up for every trial. In each
trial a fresh victim process (a new member id each time, so damping never applies) campaigns in
the same N elections with a higher priority, takes them all over, and its detector connects to
both survivors; then it gets SIGKILL. Measured per trial: from just before the kill to the last
of the N elections led again, as the survivors' on_elected callbacks report it
(CLOCK_MONOTONIC, comparable across processes). Victims are started one trial ahead, so a
trial does not wait for Python to start. Without the detector a trial is bounded below by the
session timeout (the store must expire the victim), so those rows default to fewer trials.

Usage: python benchmarks/failover.py [--quick] [--trials 100] [--off-trials 20]
       [--elections 1,10,100] [--sessions 2,10] [--backends zookeeper,etcd3] [--json FILE]
       [--verbose]
Private servers are started (Debian packages zookeeper, etcd-server) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
#: --verbose: the member processes' log lines (declarations, evictions) go to stderr
VERBOSE = False


def member(url: str, member_id: str, count: int, priority: int, detector: bool,
           session: float) -> None:
    """Child process: on 'go', connect and campaign in `count` elections; report every
    elected callback ('e <index> <time>'), 'led' once it leads all of them (victims), and
    'peers' once its detector hears the two survivors."""
    import coordination

    lock = threading.Lock()
    led: set[int] = set()

    def report(text: str) -> None:
        with lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    def elected(index: int) -> None:
        report(f"e {index} {time.monotonic():.6f}")
        led.add(index)
        if priority and len(led) == count:
            report("led")

    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    coord = coordination.connect(url, member_id, session_timeout=session, detector=detector)
    coord.campaign_many([coordination.CampaignRequest(
        f"f{i:04d}", priority, on_elected=lambda _lead, i=i: elected(i)) for i in range(count)])
    report("joined")
    if priority and detector and coord.failure_detector is not None:
        fd = coord.failure_detector
        fd.wait_until(lambda: len(fd.connected_peers()) >= 2, 30)
        report("peers")
    sys.stdin.readline()  # parent says stop (or kills us)
    coord.close()


class Proc:
    """A member process and its reported lines."""

    def __init__(self, url: str, member_id: str, count: int, priority: int, detector: bool,
                 session: float, lines: queue.Queue[str] | None = None) -> None:
        self.lines: queue.Queue[str] = queue.Queue() if lines is None else lines
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--member", url, member_id, str(count), str(priority),
             "1" if detector else "0", str(session)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            stderr=None if VERBOSE else subprocess.DEVNULL)
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            self.lines.put(text.strip())

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def expect(self, *words: str, timeout: float) -> None:
        """Wait for a line starting with each of `words`, in any order (others are dropped);
        queue.Empty after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        missing = set(words)
        while missing:
            line = self.lines.get(timeout=max(0.001, deadline - time.monotonic()))
            missing.discard(line.split()[0] if line else "")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("stop")
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.proc.wait(10)


def run_config(url: str, count: int, session: float, detector: bool, trials: int,
               timeout: float) -> list[float]:
    """Failover times (seconds) of `trials` kills; a trial that did not recover within
    `timeout` counts as `timeout` (and is reported)."""
    reports: queue.Queue[str] = queue.Queue()  # what both survivors report, in order
    survivors = [Proc(url, f"s{i}", count, 0, detector, session, reports) for i in (1, 2)]
    times: list[float] = []
    spawned: list[Proc] = []  # victims, killed at the end whatever happened
    try:
        for s in survivors:  # (they share one queue: one expect per survivor)
            s.expect("ready", timeout=60)
        for s in survivors:
            s.send("go")
        for s in survivors:
            s.expect("joined", timeout=60)
        nxt = Proc(url, "v0000", count, 10, detector, session)
        spawned.append(nxt)
        for trial in range(trials):
            victim = nxt
            nxt = Proc(url, f"v{trial + 1:04d}", count, 10, detector, session)
            spawned.append(nxt)
            try:
                victim.expect("ready", timeout=60)
                victim.send("go")
                victim.expect("led", *(["peers"] if detector else []), timeout=timeout)
            except queue.Empty:  # the store or the machine stalled: no trial to measure
                print(f"    trial {trial}: the victim did not take over within {timeout:g} s; "
                      "skipped", flush=True)
                victim.proc.kill()
                victim.proc.wait(10)
                continue
            while not reports.empty():  # forget what came before the takeover
                reports.get_nowait()
            t0 = time.monotonic()
            os.kill(victim.proc.pid, signal.SIGKILL)
            back: dict[int, float] = {}
            deadline = t0 + timeout
            while len(back) < count:
                try:
                    parts = reports.get(timeout=max(0.001, deadline - time.monotonic())).split()
                except queue.Empty:
                    break
                if len(parts) == 3 and parts[0] == "e":
                    back[int(parts[1])] = float(parts[2])
            victim.proc.wait(10)
            took = max(back.values()) - t0 if len(back) == count else timeout
            if len(back) < count:
                print(f"    trial {trial}: {count - len(back)} elections not back within "
                      f"{timeout:g} s", flush=True)
            times.append(took)
    finally:
        for proc in spawned:
            if proc.proc.poll() is None:
                proc.proc.kill()
            proc.proc.wait(10)
        for s in survivors:
            s.stop()
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 trials (3 without detector)")
    parser.add_argument("--trials", type=int, default=100, help="trials with the detector on")
    parser.add_argument("--off-trials", type=int, default=20,
                        help="trials with the detector off (each costs a session timeout)")
    parser.add_argument("--elections", default="1,10,100")
    parser.add_argument("--sessions", default="2,10")
    parser.add_argument("--backends", default="zookeeper,etcd3")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--verbose", action="store_true", help="show the members' log lines")
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    if args.quick:
        args.trials, args.off_trials = 10, 3
    counts = [int(n) for n in args.elections.split(",")]
    sessions = [float(s) for s in args.sessions.split(",")]
    print(f"kill -9 of the leader of N elections -> the last of them led again by one of 2 "
          f"survivors (their on_elected callbacks, CLOCK_MONOTONIC); {os.cpu_count()} cores; "
          f"{args.trials} trials with the detector (defaults: 0.1 s x 3 heartbeats), "
          f"{args.off_trials} without.", flush=True)
    results: list[dict[str, Any]] = []
    with ExitStack() as stack:
        urls = {}
        for backend in args.backends.split(","):
            if backend == "zookeeper":
                from tests.servers.zookeeper import ZooKeeperServer

                server = stack.enter_context(ZooKeeperServer())
                server.start()
                urls[backend] = f"zookeeper://{server.hosts}/fo-%s"
            elif backend in ("etcd", "etcd3"):
                from tests.servers.etcd import EtcdServer

                etcd = stack.enter_context(EtcdServer())
                etcd.start()
                urls["etcd3"] = f"etcd3://{etcd.endpoint}/fo-%s"
            else:
                parser.error(f"unknown backend {backend!r}")
        for backend, template in urls.items():
            for session in sessions:
                for count in counts:
                    for detector in (True, False):
                        trials = args.trials if detector else args.off_trials
                        ns = f"{count}-{session:g}-{int(detector)}-{time.monotonic_ns()}"
                        if not trials:
                            continue
                        times = run_config(template % ns, count, session, detector, trials,
                                           timeout=session * 3 + 10)
                        if not times:
                            print(f"  {backend} N={count} session {session:g} s: no trial "
                                  "measured", flush=True)
                            continue
                        row = {"backend": backend, "elections": count, "session_s": session,
                               "detector": detector, "trials": len(times),
                               "p50_s": pct(times, 0.5), "p99_s": pct(times, 0.99),
                               "max_s": max(times)}
                        results.append(row)
                        print(f"  {backend:<9} N={count:<4} session {session:g} s detector "
                              f"{'on ' if detector else 'off'}: p50 {row['p50_s']:.3f} s  "
                              f"p99 {row['p99_s']:.3f} s  ({len(times)} trials)", flush=True)
    print(f"\n{'backend':<10} {'N':>4} {'session':>8} | {'detector on: p50':>16} {'p99':>7} "
          f"{'trials':>6} | {'off: p50':>8} {'p99':>7} {'trials':>6}")
    for on in (r for r in results if r["detector"]):
        off = next((r for r in results if not r["detector"] and all(
            r[k] == on[k] for k in ("backend", "elections", "session_s"))), None)
        if off is None or not on["trials"] or not off["trials"]:
            continue
        print(f"{on['backend']:<10} {on['elections']:>4} {on['session_s']:>7g}s | "
              f"{on['p50_s']:>16.3f} {on['p99_s']:>7.3f} {on['trials']:>6} | "
              f"{off['p50_s']:>8.3f} {off['p99_s']:>7.3f} {off['trials']:>6}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results}, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--member":
        member(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
               sys.argv[6] == "1", float(sys.argv[7]))
    else:
        main()
