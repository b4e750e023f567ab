"""The main job (for now): two members elect a leader and fail over when it leaves.

Runs on the in-process default backend, so it needs no server; pass a URL to use another:
`python scripts/demo.py zookeeper://127.0.0.1:2181/demo`.
"""

from __future__ import annotations

import sys
import threading
import time

import coordination


def main(url: str = "memory://demo") -> None:
    elected: dict[str, threading.Event] = {"c1": threading.Event(), "c2": threading.Event()}
    times: dict[str, float] = {}

    def on_elected(member: str):
        def callback(lead: coordination.Leadership) -> None:
            times[member] = time.perf_counter()
            print(f"  {member} elected leader of dpid-1, term (generation_id) {lead.term}")
            elected[member].set()
        return callback

    print(f"backend: {url}")
    c1 = coordination.connect(url, member_id="c1")
    c2 = coordination.connect(url, member_id="c2")
    c1.election("dpid-1").campaign(on_elected=on_elected("c1"))
    elected["c1"].wait(10)
    c2.election("dpid-1").campaign(on_elected=on_elected("c2"))
    print(f"  candidates: {[c.member_id for c in c2.election('dpid-1').candidates()]}")
    print("c1 leaves (graceful close) ...")
    start = time.perf_counter()
    c1.close()
    if not elected["c2"].wait(10):
        sys.exit("c2 was not elected within 10 s")
    print(f"failover to c2 took {(times['c2'] - start) * 1000:.2f} ms; "
          f"leader now {c2.election('dpid-1').leader()}")
    c2.close()


if __name__ == "__main__":
    main(*sys.argv[1:2])
