"""Elections at scale through the public API: 3 member processes x N elections per backend.

Each member process connects, then on "go" campaigns in all N elections (`campaign_many`, or one
`campaign()` after another with `--one-by-one`, the pre-batching way) and reports every elected /
revoked callback with its CLOCK_MONOTONIC time (comparable across processes). Measured:
  all led      from "go" until every election has a leader (from the elected callbacks)
  failover     kill -9 of the member leading the most elections -> every one of them led again
               by a survivor (bounded below by the session timeout: the store must expire it)

Usage: python benchmarks/elections.py [--switches 1000,5000] [--backends zookeeper,etcd3,embedded]
       [--session-timeout 2] [--one-by-one] [--timeout 120]
Private servers are started (Debian packages zookeeper, etcd-server) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def member(url: str, member_id: str, count: int, one_by_one: bool) -> None:
    """Child process: connect, print 'ready'; on 'go' campaign in `count` elections."""
    import coordination

    out = sys.stdout
    lock = threading.Lock()

    def report(word: str, index: int) -> None:
        with lock:
            out.write(f"{word} {index} {time.monotonic():.6f}\n")
            out.flush()

    coord = coordination.connect(url, member_id)
    print("ready", flush=True)
    sys.stdin.readline()
    requests = [coordination.CampaignRequest(
        f"bench-{i}", 0,
        on_elected=lambda _lead, i=i: report("e", i),
        on_revoked=lambda _lead, i=i: report("r", i)) for i in range(count)]
    if one_by_one:
        for r in requests:
            coord.election(r.election).campaign(r.priority, r.on_elected, r.on_revoked)
    else:
        coord.campaign_many(requests)
    print("joined", flush=True)
    sys.stdin.readline()  # parent says stop (or kills us)
    coord.close()


class Run:
    """Three members on one backend: who leads what, from their callbacks."""

    def __init__(self, url: str, count: int, one_by_one: bool, timeout: float) -> None:
        self.count = count
        self.timeout = timeout
        self.lines: queue.Queue[tuple[int, str]] = queue.Queue()
        self.leader: dict[int, int] = {}  # election -> member index
        self.procs: list[subprocess.Popen[str]] = []
        for i in range(3):
            proc = subprocess.Popen(
                [sys.executable, __file__, "--member", url, f"m{i}", str(count),
                 "1" if one_by_one else "0"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            self.procs.append(proc)
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"member m{i} did not start on {url}")
            threading.Thread(target=self._pump, args=(i, proc), daemon=True).start()

    def _pump(self, index: int, proc: subprocess.Popen[str]) -> None:
        for text in proc.stdout:
            self.lines.put((index, text))

    def _apply(self, deadline: float, done: Callable[[], bool]) -> float | None:
        """Apply reported lines until `done()`; the time of the line that made it true."""
        self.first: float | None = None
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                index, text = self.lines.get(timeout=left)
            except queue.Empty:
                return None
            parts = text.split()
            if len(parts) != 3:
                continue
            word, election, stamp = parts[0], int(parts[1]), float(parts[2])
            if word == "e":
                self.leader[election] = index
                self.first = self.first or stamp
            elif word == "r" and self.leader.get(election) == index:
                del self.leader[election]
            if done():
                return stamp
        return time.monotonic()

    def start(self) -> float | None:
        t0 = time.monotonic()
        for proc in self.procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        end = self._apply(t0 + self.timeout, lambda: len(self.leader) == self.count)
        return None if end is None else end - t0

    def failover(self) -> tuple[float | None, float | None, int]:
        victim, led = Counter(self.leader.values()).most_common(1)[0]
        orphaned = {e for e, m in self.leader.items() if m == victim}
        t0 = time.monotonic()
        os.kill(self.procs[victim].pid, signal.SIGKILL)
        for e in orphaned:
            del self.leader[e]
        end = self._apply(t0 + self.timeout,
                          lambda: all(self.leader.get(e, victim) != victim for e in orphaned))
        first = None if self.first is None else self.first - t0
        return (None if end is None else end - t0), first, led

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.stdin.write("stop\n")
                    proc.stdin.flush()
                except OSError:
                    pass
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--switches", default="1000,5000", help="comma-separated N")
    parser.add_argument("--backends", default="zookeeper,etcd3,embedded")
    parser.add_argument("--session-timeout", type=float, default=2.0)
    parser.add_argument("--one-by-one", action="store_true",
                        help="campaign() per election instead of campaign_many()")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per phase")
    args = parser.parse_args()
    counts = [int(n) for n in args.switches.split(",")]
    st = args.session_timeout
    print(f"3 member processes x N elections, {os.cpu_count()} cores, session {st:g} s; "
          f"{'campaign() one by one' if args.one_by_one else 'campaign_many()'}; times from "
          "'go' to the last elected callback, and from kill -9 of the member leading most "
          "to the last of its elections led again (CLOCK_MONOTONIC across processes).")
    rows = []
    with ExitStack() as stack:
        urls = {}
        for backend in args.backends.split(","):
            if backend == "zookeeper":
                from tests.servers.zookeeper import ZooKeeperServer

                server = stack.enter_context(ZooKeeperServer())
                server.start()
                urls[backend] = f"zookeeper://{server.hosts}/bench-%s?session_timeout={st}"
            elif backend == "etcd3":
                from tests.servers.etcd import EtcdServer

                etcd = stack.enter_context(EtcdServer())
                etcd.start()
                urls[backend] = f"etcd3://{etcd.endpoint}/bench-%s?lease_ttl={st}"
            elif backend == "embedded":
                tmp = stack.enter_context(tempfile.TemporaryDirectory())
                urls[backend] = f"embedded://{tmp}/%s"
            else:
                parser.error(f"unknown backend {backend!r}")
        for backend, template in urls.items():
            for count in counts:
                run = Run(template % count, count, args.one_by_one, args.timeout)
                try:
                    led = run.start()
                    failover, first, moved = (run.failover() if led is not None
                                              else (None, None, 0))
                finally:
                    run.close()
                rows.append((backend, count, led, first, failover, moved))
                print(f"  {backend:<10} N={count:<6} all led {fmt(led, args.timeout)}  "
                      f"failover of {moved} {fmt(failover, args.timeout)}", flush=True)
    print(f"\n{'backend':<10} {'N':>6} {'all led s':>10} {'moved':>6} {'first back s':>13} "
          f"{'all back s':>11}")
    for backend, count, led, first, failover, moved in rows:
        print(f"{backend:<10} {count:>6} {fmt(led, args.timeout):>10} {moved:>6} "
              f"{fmt(first, args.timeout):>13} {fmt(failover, args.timeout):>11}")


def fmt(value: float | None, timeout: float) -> str:
    return f"{value:.2f}" if value is not None else f">{timeout:g}"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--member":
        member(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
    else:
        main()
