"""Graceful leader handover latency, side by side, between real processes.

For each contender, three candidate processes join one election; in every trial the leader
resigns and we time from just before its resign call to the successor's elected callback
(CLOCK_MONOTONIC, comparable across processes); each trial starts 50 ms after the previous
handover, so it measures a handover from a settled election, not a queue of writes; the first
WARMUP handovers of each contender are not counted. Contenders:
  ours/<backend>   this project's driver (memory is in-process only, so it is skipped here)
  kazoo-recipe     kazoo's own Election recipe (raw kazoo, the figure to beat)
  kazoo+our-select the same recipe on the driver's kazoo handler (backends/zookeeper/
                   handlers.py): how much of ours' figure that handler accounts for
  tooz-zookeeper   tooz's coordinator on the same ZooKeeper (polls run_watchers())

Usage: python benchmarks/handover.py [--trials 30] [--zookeeper HOST:PORT] [--etcd HOST:PORT]
       [--embedded DIR]. Without --zookeeper / --etcd, private servers are started (Debian
       packages zookeeper, etcd-server) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---- candidate process ---------------------------------------------------------------------

def candidate(kind: str, target: str, name: str, member: str) -> None:
    """Runs in a child: campaign; print 'elected <t>' when elected; on a 'resign' line print
    'resigning <t>' and resign; on 'rejoin' campaign again (at the back of the line)."""
    import threading

    elected = threading.Event()

    def report(word: str) -> None:
        print(f"{word} {time.perf_counter():.9f}", flush=True)

    if kind == "ours":
        import coordination

        coord = coordination.connect(target, member, session_timeout=4)
        election = coord.election(name)

        def on_elected(_lead: object) -> None:
            report("elected")
        print("ready", flush=True)
        election.campaign(on_elected=on_elected)
        for line in sys.stdin:
            if line.strip() == "resign":
                report("resigning")
                election.resign()
            elif line.strip() == "rejoin":
                election.campaign(on_elected=on_elected)
        coord.close()
    elif kind in ("kazoo-recipe", "kazoo-recipe-poll"):
        from kazoo.client import KazooClient

        handler = None
        if kind == "kazoo-recipe-poll":
            from backends.zookeeper.handlers import PollingThreadingHandler

            handler = PollingThreadingHandler()
        client = KazooClient(hosts=target, timeout=4, handler=handler)
        client.start()
        go, rejoin = threading.Event(), threading.Event()
        rejoin.set()

        def lead() -> None:
            report("elected")
            go.wait()
            go.clear()
            report("resigning")

        def loop() -> None:
            while rejoin.wait():
                rejoin.clear()
                client.Election(f"/bench-kazoo/{name}", member).run(lead)
        print("ready", flush=True)
        threading.Thread(target=loop, daemon=True).start()
        for line in sys.stdin:
            if line.strip() == "resign":
                go.set()
            elif line.strip() == "rejoin":
                rejoin.set()
        elected.set()
    elif kind == "tooz-zookeeper":
        from tooz import coordination as tooz_coordination

        coord = tooz_coordination.get_coordinator(f"kazoo://{target}?timeout=4", member.encode())
        coord.start(start_heart=True)
        group = name.encode()
        try:
            coord.create_group(group).get()
        except tooz_coordination.GroupAlreadyExist:
            pass
        coord.join_group(group).get()
        resign, rejoin = threading.Event(), threading.Event()

        def on_elected(_event: object) -> None:
            report("elected")
        print("ready", flush=True)
        coord.watch_elected_as_leader(group, on_elected)

        def reader() -> None:
            for line in sys.stdin:
                if line.strip() == "resign":
                    resign.set()
                elif line.strip() == "rejoin":
                    rejoin.set()
        threading.Thread(target=reader, daemon=True).start()
        while True:
            coord.run_watchers()  # tooz delivers callbacks only here: it polls
            if resign.is_set():
                resign.clear()
                report("resigning")
                coord.unwatch_elected_as_leader(group, on_elected)
                coord.stand_down_group_leader(group)
            if rejoin.is_set():
                rejoin.clear()
                coord.watch_elected_as_leader(group, on_elected)
            time.sleep(0.01)


# ---- orchestration -----------------------------------------------------------------------

#: Seconds between a handover and the next trial (see run_contender).
SETTLE = 0.05
#: Handovers run before the counted trials, per contender.
WARMUP = 10


def run_contender(kind: str, target: str, trials: int) -> list[float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    procs = []
    try:
        for i in range(3):
            proc = subprocess.Popen(
                [sys.executable, __file__, "--candidate", kind, target, name, f"m{i}"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            )
            procs.append(proc)
            assert proc.stdout.readline().strip() == "ready", f"{kind}: candidate failed"
        lines: queue.Queue[tuple[subprocess.Popen, str]] = queue.Queue()

        def pump(proc: subprocess.Popen) -> None:
            for text in proc.stdout:
                lines.put((proc, text.strip()))
        for proc in procs:
            threading.Thread(target=pump, args=(proc,), daemon=True).start()

        def next_line(timeout: float = 15.0) -> tuple[subprocess.Popen, str]:
            try:
                return lines.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"{kind}: no candidate reported within {timeout} s") from None

        leader, line = next_line()
        assert line.startswith("elected"), line
        samples = []
        # the first handovers of a process (and of a freshly started server's JVM) are slow
        # for reasons no contender controls: they are run, not counted
        for trial in range(WARMUP + trials):
            leader.stdin.write("resign\n")
            leader.stdin.flush()
            start = end = None
            successor = None
            while start is None or end is None:
                proc, line = next_line()
                word, stamp = line.split()
                if word == "resigning":
                    start = float(stamp)
                elif word == "elected" and proc is not leader:
                    end, successor = float(stamp), proc
            if trial >= WARMUP:
                samples.append((end - start) * 1000)
            leader.stdin.write("rejoin\n")
            leader.stdin.flush()
            leader = successor
            # a settled election, not a queue: the new leader's own writes (a published
            # leader record, the rejoined candidacy) are done before it is asked to resign
            time.sleep(SETTLE)
        return samples
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(10)


def warm_up(hosts: str, rounds: int = 3000) -> None:
    """Put a freshly started ZooKeeper through the requests a handover makes (create, list,
    watch, delete) until its JVM has compiled them: on a cold server every contender's first
    figures measure the JIT, and the first contender pays for the others."""
    from kazoo.client import KazooClient

    client = KazooClient(hosts=hosts, timeout=10)
    client.start(timeout=30)
    try:
        client.ensure_path("/warm-up")
        for _ in range(rounds // 100):
            created = [client.create_async("/warm-up/n-", b"", ephemeral=True, sequence=True)
                       for _ in range(100)]
            paths = [result.get(timeout=10) for result in created]
            client.get_children_async("/warm-up", watch=lambda _event: None).get(timeout=10)
            for result in [client.delete_async(path) for path in paths]:
                result.get(timeout=10)
    finally:
        client.stop()
        client.close()


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--zookeeper", help="HOST:PORT of a running ZooKeeper")
    parser.add_argument("--etcd", help="HOST:PORT of a running etcd (adds ours/etcd3)")
    parser.add_argument("--embedded", help="directory for the embedded driver (adds ours/embedded)")
    parser.add_argument("--only", help="comma-separated contender labels to run "
                        "(default: all; kazoo-recipe is always run, it is the baseline)")
    args = parser.parse_args()
    with ExitStack() as stack:
        zk = args.zookeeper
        if not zk:
            from tests.servers.zookeeper import ZooKeeperServer

            server = stack.enter_context(ZooKeeperServer())
            server.start()
            zk = server.hosts
            warm_up(zk)
        contenders = [("ours", f"zookeeper://{zk}/bench", "ours/zookeeper"),
                      ("kazoo-recipe", zk, "kazoo-recipe"),
                      ("kazoo-recipe-poll", zk, "kazoo+our-select")]
        etcd = args.etcd
        if not etcd and shutil.which("etcd"):
            from tests.servers.etcd import EtcdServer

            etcd_server = stack.enter_context(EtcdServer())
            etcd_server.start()
            etcd = etcd_server.endpoint
        if etcd:
            contenders.append(("ours", f"etcd3://{etcd}/bench", "ours/etcd3"))
        embedded = args.embedded or stack.enter_context(tempfile.TemporaryDirectory())
        import coordination

        if "embedded" in coordination.installed_backends():
            contenders.append(("ours", f"embedded://{embedded}", "ours/embedded"))
        try:
            import tooz  # noqa: F401

            contenders.append(("tooz-zookeeper", zk, "tooz-zookeeper"))
        except ImportError:
            print("(tooz not installed: pip install tooz to compare with it)")
        if args.only:
            wanted = set(args.only.split(",")) | {"kazoo-recipe"}
            contenders = [c for c in contenders if c[2] in wanted]
        results = {}
        for kind, target, label in contenders:
            results[label] = run_contender(kind, target, args.trials)
    base = statistics.median(results["kazoo-recipe"])
    print(f"\nGraceful handover, {args.trials} trials, 3 candidate processes, "
          f"{os.cpu_count()} cores; time from the leader's resign call to the successor's "
          "elected callback (CLOCK_MONOTONIC across processes).")
    print(f"{'contender':<18} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'p50 / kazoo':>12}")
    for label, samples in results.items():
        p50 = statistics.median(samples)
        print(f"{label:<18} {p50:8.2f} {percentile(samples, 95):8.2f} {max(samples):8.2f} "
              f"{p50 / base:12.2f}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--candidate":
        candidate(*sys.argv[2:6])
    else:
        main()
