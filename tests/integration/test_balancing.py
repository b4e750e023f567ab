"""Planned handover end to end: real Open vSwitch, three real `coord-manager` processes running
the mastership app and the unmodified learning switch, a real coordination store.

How packets are counted: host 1 of each bridge sends numbered frames (tests/chaos/hosts.py) to
host 2's MAC, which the learning switch never learns (host 2 never sends), so *every* frame
is a packet-in to the master, which floods it back out with a PACKET_OUT: host 2 receives a
frame once per time a controller handled its packet-in. So a handover under this traffic that
loses no packet-in and handles none twice shows as every number received exactly once.
Who masters a switch, and under which generation_id, is read from the controllers' own logs.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

from tests.chaos.hosts import HostPair
from tests.servers._process import free_ports

from .packet_in_proxy import PacketInProxy
from .ryu_helpers import Controller, require_framework, settled, wait_settled, wait_until
from .test_mastership import SELECTED, _make_backend

pytestmark = pytest.mark.integration

SETTLE_TIMEOUT = 45.0
#: Seconds between two frames of the traffic (a rate, not a synchronisation).
INTERVAL = 0.004
APPS = ("ryu_integration.mastership", "ryu_integration.apps.learning_switch")
FRAMEWORK = os.environ.get("BALANCING_FRAMEWORK", "os-ken")


@pytest.fixture(params=SELECTED)
def backend(request: pytest.FixtureRequest) -> Any:
    return _make_backend(request)


@pytest.fixture
def controllers(tmp_path: Path) -> Iterator[Callable[..., Controller]]:
    """Factory for controllers; every process is killed by PID at teardown."""
    made: list[Controller] = []

    def make(name: str, url: str, *, apps: tuple[str, ...] = APPS, port: int | None = None,
             **options: Any) -> Controller:
        sections: dict[str, dict[str, Any]] = {"coordination": {
            "backend_url": url, "session_timeout": 2.0, "role_request_timeout": 2.0,
            "reassert_interval": 10.0, **options}}
        controller = Controller(name, FRAMEWORK, port or free_ports(1)[0],
                                tmp_path / "controllers", sections, apps)
        made.append(controller)
        return controller

    require_framework(FRAMEWORK)
    try:
        yield make
    finally:
        for controller in made:
            controller.close()


class Deliveries:
    """Host-side counts: the `monitor` HostPair reports each received frame to."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.counts: dict[int, collections.Counter[int]] = collections.defaultdict(
            collections.Counter)

    def packet_delivered(self, bridge: int, seq: int) -> None:
        with self.cond:
            self.counts[bridge][seq] += 1
            self.cond.notify_all()

    def wait_for(self, bridge: int, seq: int, timeout: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: seq in self.counts[bridge], timeout):
                raise AssertionError(f"frame #{seq} of br{bridge} not delivered within "
                                     f"{timeout} s")


class Sender:
    """Host 1 of every bridge sends frame 1, 2, 3, ... every INTERVAL seconds until stopped."""

    def __init__(self, pairs: list[HostPair]) -> None:
        self.pairs = pairs
        self.seq = 0
        #: seq -> wall clock when sent, to place a missing frame among the controllers' events
        self.sent_at: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="balancing-traffic", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL):
            self.seq += 1
            self.sent_at[self.seq] = time.time()
            for pair in self.pairs:
                assert pair.send(1, self.seq)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(5)
        return self.seq


def coordctl(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("coordctl", path=str(Path(sys.executable).parent))
    assert exe, "coordctl is not installed in this environment (pip install -e .)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


@pytest.fixture
def hosts(ovs: Any) -> Iterator[list[HostPair]]:
    made: list[HostPair] = []
    yield made
    for pair in made:
        pair.close()


def _resynced(c: Controller, dpid: int, since: int = 0) -> Any:
    return c.wait_for(lambda r: r.matches("LEARNING_SWITCH", dpid=dpid), SETTLE_TIMEOUT,
                      since=since, what=f"learning switch resync of {dpid:016x}")


@dataclass
class TrafficRig:
    """Three controllers (mastership + learning switch) and one bridge with traffic."""

    cs: list[Controller]
    url: str
    proxies: list[PacketInProxy]
    pair: HostPair
    deliveries: Deliveries
    dpid: int = 1

    def master(self) -> Controller:
        return wait_settled([c for c in self.cs if c.running], [self.dpid],
                            SETTLE_TIMEOUT)[self.dpid]

    def promoted(self, target: Controller, since: int) -> int:
        """Wait for `target`'s confirmed mastership (after log index `since`) and its learning
        switch's re-sync; returns the new term."""
        confirmed = target.wait_for(
            lambda r: r.matches("MASTERSHIP", dpid=self.dpid, may_program="true"),
            SETTLE_TIMEOUT, since=since, what="the target's confirmed mastership")
        _resynced(target, self.dpid, since)
        return int(confirmed["term"])

    def check_frames(self, sender: Sender, what: str) -> str:
        """Every frame became a packet-in (the switch dropped none: the learning switch's
        re-sync keeps its table-miss entry throughout) and was handled exactly once. Returns
        a summary."""
        last = sender.seq
        self.deliveries.wait_for(self.dpid, last, 10.0)
        counts = self.deliveries.counts[self.dpid]
        packet_ins = set().union(*(p.seen[self.dpid] for p in self.proxies))
        dropped = [seq for seq in range(1, last + 1) if seq not in packet_ins]
        lost = [seq for seq in range(1, last + 1) if counts[seq] == 0 and seq in packet_ins]
        twice = {seq: n for seq, n in counts.items() if n > 1}
        assert not lost, f"{len(lost)} of {last} packet-ins never handled: {lost[:20]}\n" + \
            _around(self.cs, [sender.sent_at[seq] for seq in lost[:5]])
        assert not twice, f"frames handled more than once: {dict(list(twice.items())[:20])}"
        assert not dropped, f"the switch dropped {len(dropped)} frames before any packet-in: " \
                            f"{dropped[:20]}\n" + \
            _around(self.cs, [sender.sent_at[seq] for seq in dropped[:5]])
        return (f"{what} under traffic ({FRAMEWORK}): {last} frames, {len(packet_ins)} "
                f"packet-ins, 0 lost, 0 duplicated, 0 dropped by the switch")


@pytest.fixture
def rig(backend, ovs, controllers, hosts, request) -> TrafficRig:
    url = backend.url(backend.hosts)
    cs = [controllers(f"c{i}", url) for i in range(3)]
    for c in cs:
        c.start()
    for c in cs:
        c.wait_ready(60)
    proxies = [PacketInProxy(c.name, c.port) for c in cs]
    request.addfinalizer(lambda: [p.close() for p in proxies])
    ovs.add_bridge("br1", 1, [p.port for p in proxies])
    deliveries = Deliveries()
    pair = HostPair(ovs, 1, deliveries)
    hosts.append(pair)
    pair.add_ports()
    out = TrafficRig(cs, url, proxies, pair, deliveries)
    _resynced(out.master(), out.dpid)
    return out


def test_move_under_traffic_loses_and_duplicates_no_packet_in(rig: TrafficRig, backend):
    """3 controllers, one bridge with continuous packet-ins: `coordctl move` to each other
    controller in turn and back -> each target is master under a larger generation_id, both
    sides log the handover completed, and every packet-in was handled exactly once."""
    cs, dpid = rig.cs, rig.dpid
    source = rig.master()
    others = [c for c in cs if c is not source]
    path = [(source, others[0]), (others[0], others[1]), (others[1], source)]
    terms = [int(source.role_of(dpid)["term"])]

    with Sender([rig.pair]) as sender:
        rig.deliveries.wait_for(dpid, 50, 30.0)  # traffic flows through the first master
        for src, target in path:
            marks = {c.name: c.mark() for c in cs}
            moved = coordctl("--url", rig.url, "move", f"{dpid:016x}", target.member_id,
                             "--wait", "30")
            assert moved.returncode == 0, moved.stderr
            assert "taken" in moved.stdout, moved.stdout
            terms.append(rig.promoted(target, marks[target.name]))
            for side in (src, target):
                done = side.wait_for(lambda r: r.kind == "HANDOVER_DONE", SETTLE_TIMEOUT,
                                     since=marks[side.name], what="the handover's end")
                assert done["outcome"] == "completed", done.fields
            assert rig.master() is target
            after = sender.seq
            rig.deliveries.wait_for(dpid, after + 50, 30.0)  # traffic flows through the target
    assert terms == sorted(set(terms)), f"generation_ids must grow: {terms}"
    summary = rig.check_frames(sender, f"{len(path)} moves")
    print(f"\nMEASURED {summary} ({backend.name}), terms {terms}")


def test_sigterm_hands_every_switch_over_first(rig: TrafficRig, backend):
    """SIGTERM to the master under traffic: it hands the switch over (planned handover,
    logged) before it resigns and exits; the successor's term is larger, no packet-in lost."""
    cs, dpid = rig.cs, rig.dpid
    with Sender([rig.pair]) as sender:
        rig.deliveries.wait_for(dpid, 50, 30.0)
        source = rig.master()
        term = int(source.role_of(dpid)["term"])
        marks = {c.name: c.mark() for c in cs}
        source.terminate(timeout=15)
        stop = source.find("HANDOVER_ON_STOP", since=marks[source.name])
        assert stop and stop[0]["requested"] == "1" and stop[0]["unfinished"] == "0", stop
        done = source.find("HANDOVER_DONE", since=marks[source.name])
        assert done and done[0]["outcome"] == "completed", done
        successor = rig.master()  # the target may log its side after the source exited
        successor.wait_for(lambda r: r.matches("HANDOVER_DONE", role="target",
                                               outcome="completed"),
                           SETTLE_TIMEOUT, since=marks[successor.name],
                           what="the target's completed handover")
        new_term = rig.promoted(successor, marks[successor.name])
        assert new_term > term
        after = sender.seq
        rig.deliveries.wait_for(dpid, after + 50, 30.0)
    summary = rig.check_frames(sender, "SIGTERM handover")
    print(f"\nMEASURED {summary} ({backend.name}), terms {term} -> {new_term}")


def _around(cs: list[Controller], times: list[float], window: float = 0.05) -> str:
    """The controllers' log records within `window` s of each of `times` (for a failure)."""
    lines = []
    for t in times:
        lines.append(f"-- sent at {t:.6f}")
        for c in cs:
            lines += [f"{c.name}: {r.kind} {r.fields}" for r in c.records
                      if "t" in r.fields and abs(r.t - t) <= window]
    return "\n".join(lines)


def test_coordctl_move_rejects_bad_requests(backend, ovs, controllers):
    """Bad DPID, unknown member, member not connected to the switch: one-line errors."""
    url = backend.url(backend.hosts)
    cs = [controllers(f"c{i}", url, apps=APPS[:1]) for i in range(2)]
    for c in cs:
        c.start()
    for c in cs:
        c.wait_ready(60)
    ovs.add_bridge("br1", 1, [cs[0].port])  # only c0 is connected to it
    wait_settled(cs[:1], [1], SETTLE_TIMEOUT)
    for args, expect in [
        (("zz", cs[0].member_id), "bad DPID"),
        (("0000000000000001", "nobody:1"), "is not live"),
        (("0000000000000001", cs[1].member_id), "is not connected"),
        (("0000000000000001", cs[0].member_id), "already masters"),
    ]:
        out = coordctl("--url", url, "move", *args)
        assert out.returncode == 2, out
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and expect in lines[0], out.stderr
        assert "Traceback" not in out.stderr


# ---- balancing ------------------------------------------------------------------------------

BRIDGES = int(os.environ.get("BALANCING_BRIDGES", "30"))
BALANCE_TIMEOUT = 90.0
#: fast damping, so the test sees rebalances in seconds; the settle time still covers Open
#: vSwitch's reconnect backoff (1 s here), so a new controller is connected to every switch
#: (a candidate) when the plan is made
FAST = {"balance_settle": 3.0, "balance_min_interval": 1.0}


def _load(cs: list[Controller], dpids: list[int]) -> dict[str, int] | None:
    """Controller -> switches it masters, once every switch is settled (one master, slaves)."""
    running = [c for c in cs if c.running]
    out = dict.fromkeys((c.name for c in running), 0)
    for dpid in dpids:
        master = settled(running, dpid)
        if master is None:
            return None
        out[master.name] += 1
    return out


def _wait_balanced(cs: list[Controller], dpids: list[int], what: str,
                   shares: dict[str, tuple[int, int]] | None = None) -> dict[str, int]:
    """Wait until the load is within [low, high] for every running controller (default: the
    floor and ceiling of an equal share)."""
    running = [c.name for c in cs if c.running]
    even = (len(dpids) // len(running), -(-len(dpids) // len(running)))
    bounds = shares or dict.fromkeys(running, even)

    def check() -> dict[str, int] | None:
        load = _load(cs, dpids)
        if load is None or any(not lo <= load.get(n, 0) <= hi for n, (lo, hi) in bounds.items()):
            return None
        return load

    return wait_until(check, BALANCE_TIMEOUT, what, cs)


def test_balanced_join_and_leave(backend, ovs, controllers):
    """30 bridges, 3 controllers with `balance_policy = balanced`: each masters 10 +-1 (the
    first to connect would master nearly all); a 4th joins -> it gets its share (7-8), the
    others keep 7-8; it stops (SIGTERM) -> its switches spread over the rest (10 +-1)."""
    url = backend.url(backend.hosts)
    cs = [controllers(f"c{i}", url, apps=APPS[:1], balance_policy="balanced", **FAST)
          for i in range(4)]
    dpids = list(range(1, BRIDGES + 1))
    ovs.add_bridges([(f"br{d}", d, [c.port for c in cs]) for d in dpids])
    for c in cs[:3]:
        c.start()
    for c in cs[:3]:
        c.wait_ready(60)
    started = time.monotonic()
    three = _wait_balanced(cs, dpids, "3 controllers balanced")
    took_three = time.monotonic() - started
    cs[3].start()
    cs[3].wait_ready(60)
    started = time.monotonic()
    four = _wait_balanced(cs, dpids, "a 4th controller got its share")
    took_four = time.monotonic() - started
    cs[3].terminate(timeout=15)
    started = time.monotonic()
    after = _wait_balanced(cs, dpids, "the 4th one's switches spread over the rest")
    took_leave = time.monotonic() - started
    print(f"\nMEASURED balancing {len(dpids)} switches ({backend.name}): 3 controllers {three} "
          f"in {took_three:.1f} s; 4th joined {four} in {took_four:.1f} s; 4th left {after} "
          f"in {took_leave:.1f} s")


def test_preferred_lists_are_honoured_while_the_preferred_controller_lives(
        backend, ovs, controllers):
    """`preferred`: the switches of group `edge` (the first 6 of 12) go to c2 while it lives,
    the others are balanced over all three (2 each); c2 stops -> everything is spread over the
    other two (6 each)."""
    url = backend.url(backend.hosts)
    dpids = list(range(1, min(BRIDGES, 12) + 1))
    edge = dpids[:6]
    ports = free_ports(3)
    members = [f"c{i}:{port}" for i, port in enumerate(ports)]
    group = ",".join(f"{d:016x}" for d in edge)
    cs = [controllers(f"c{i}", url, apps=APPS[:1], balance_policy="preferred",
                      balance_group=f"edge={group}", balance_preferred=f"@edge={members[2]}",
                      port=ports[i], **FAST) for i in range(3)]
    ovs.add_bridges([(f"br{d}", d, [c.port for c in cs]) for d in dpids])
    for c in cs:
        c.start()
    for c in cs:
        c.wait_ready(60)

    others = [d for d in dpids if d not in edge]
    share = len(others) // 3

    def honoured() -> bool:
        load = _load(cs, others)
        return load is not None and all(settled(cs, d) is cs[2] for d in edge) \
            and all(n == share for n in load.values())

    wait_until(honoured, BALANCE_TIMEOUT, "the edge group mastered by c2, the rest balanced "
               "over all three", cs)
    cs[2].terminate(timeout=15)
    rest = len(dpids) // 2
    _wait_balanced(cs, dpids, "c2's group spread over the others",
                   {c.name: (rest, rest) for c in cs[:2]})


def _balancer_idle(cs: list[Controller]) -> bool:
    """No follow-up round is pending: the balancer's last round planned no moves, or its
    follow-up was skipped (the load already balanced)."""
    leaders = [(r.t, c) for c in cs for r in c.find("BALANCER", leading="true")]
    if not leaders:
        return False
    leader = max(leaders, key=lambda item: item[0])[1]
    said = [r for r in leader.records
            if (r.kind == "BALANCE" and "moves" in r.fields) or
            (r.kind == "BALANCE_SKIPPED" and r["reason"].startswith("follow-up"))]
    return bool(said) and (said[-1].kind == "BALANCE_SKIPPED" or said[-1]["moves"] == "0")


def test_switches_connecting_after_the_plan_are_balanced_without_coordctl(
        backend, ovs, controllers):
    """3 controllers, `balanced`: a first wave of bridges is balanced (the membership plan and
    its follow-up, until the balancer has nothing left to do); then a second wave connects ->
    balanced again (10 each of 30) by the balancer's connection trigger alone: no `coordctl
    balance`, no membership change, no follow-up round pending."""
    url = backend.url(backend.hosts)
    cs = [controllers(f"c{i}", url, apps=APPS[:1], balance_policy="balanced", **FAST)
          for i in range(3)]
    first = list(range(1, 13))
    second = list(range(13, max(BRIDGES, 30) + 1))
    for c in cs:
        c.start()
    for c in cs:
        c.wait_ready(60)
    ovs.add_bridges([(f"br{d}", d, [c.port for c in cs]) for d in first])
    _wait_balanced(cs, first, "the first wave balanced")
    wait_until(lambda: _balancer_idle(cs), BALANCE_TIMEOUT, "the balancer idle", cs)
    marks = {c.name: c.mark() for c in cs}
    started = time.monotonic()
    ovs.add_bridges([(f"br{d}", d, [c.port for c in cs]) for d in second])
    load = _wait_balanced(cs, first + second, "the second wave balanced without coordctl")
    took = time.monotonic() - started
    plans = [r for c in cs for r in c.find("BALANCE", since=marks[c.name])]
    assert plans, "no plan after the second wave"
    reasons = [r["reason"] for r in plans]
    assert "switch connections changed" in reasons, reasons
    assert not [r for r in reasons if r.startswith("asked")], reasons
    print(f"\nMEASURED {len(second)} switches connecting after the plan ({backend.name}): "
          f"{load} in {took:.1f} s; plans {reasons}")
