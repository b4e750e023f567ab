"""The peer failure detector over real loopback sockets: detectors in this process, and one in
a child process for a real kill -9."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordination.detector import DetectorSettings, FailureDetector, parse_endpoint
from coordination.detector_policy import (
    CLOSED,
    RESET,
    SILENCE,
    Damping,
    ResetBurst,
    SilenceBound,
    evidence_of,
    may_evict,
)
from coordination.types import MemberInfo
from tests.requirements import missing

ROOT = Path(__file__).resolve().parents[2]
WAIT = 10.0  # generous: the machine is shared
#: a 0.5 s bound: short, yet a busy shared machine does not starve a peer that long
SETTINGS = DetectorSettings(interval=0.1, misses=5, damping_window=30.0, damping_backoff=60.0)
#: a bound no test reaches: a verdict can only come from a closed connection
PATIENT = DetectorSettings(interval=0.2, misses=50)

CHILD = r"""
import sys, threading
from coordination.detector import DetectorSettings, FailureDetector
from coordination.types import MemberInfo
import json
d = FailureDetector(sys.argv[1], DetectorSettings(interval=0.05), lambda *a: None).start()
print(json.dumps(d.advertised()), flush=True)
for line in sys.stdin:
    members = {k: MemberInfo(k, metadata=v) for k, v in json.loads(line).items()}
    d.update_members(members)
    print("ok", flush=True)
threading.Event().wait()
"""


class Evictions:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def __call__(self, member_id: str, incarnation: str) -> None:
        with self.cond:
            self.calls.append((member_id, incarnation))
            self.cond.notify_all()

    def wait(self, count: int) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.calls) >= count, WAIT)


@pytest.fixture
def make() -> Iterator:
    made: list[FailureDetector] = []

    def build(member_id: str, settings: DetectorSettings = SETTINGS
              ) -> tuple[FailureDetector, Evictions]:
        evictions = Evictions()
        detector = FailureDetector(member_id, settings, evictions).start()
        made.append(detector)
        return detector, evictions

    yield build
    for detector in made:
        detector.stop()


def records(*detectors: FailureDetector, extra: dict | None = None) -> dict[str, MemberInfo]:
    out = {d.member_id: MemberInfo(d.member_id, metadata=d.advertised()) for d in detectors}
    for member_id, metadata in (extra or {}).items():
        out[member_id] = MemberInfo(member_id, metadata=metadata)
    return out


def connect_all(*detectors: FailureDetector, extra: dict | None = None) -> None:
    members = records(*detectors, extra=extra)
    for detector in detectors:
        detector.update_members(members)
    everyone = set(members)
    for detector in detectors:
        others = everyone - {detector.member_id}
        assert detector.wait_until(lambda d=detector, o=others: d.connected_peers() >= o, WAIT), \
            (detector.member_id, detector.connected_peers())


def declared(detector: FailureDetector, member_id: str) -> list[str]:
    return [reason for _, who, reason in detector.declarations if who == member_id]


def test_endpoint_parsing() -> None:
    assert parse_endpoint("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_endpoint("[::1]:80") == ("::1", 80)
    for bad in ("", "host", "host:0", "host:99999", "a b:1", 7, None, "h:1x", "x" * 400):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_killed_process_is_declared_dead_at_once_and_evicted_once(make) -> None:
    a, a_evicts = make("a", PATIENT)
    b, b_evicts = make("b", PATIENT)
    child = subprocess.Popen([sys.executable, "-c", CHILD, "c"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        c_meta = json.loads(child.stdout.readline())
        members = {"a": a.advertised(), "b": b.advertised(), "c": c_meta}
        child.stdin.write(json.dumps(members) + "\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "ok"
        connect_all(a, b, extra={"c": c_meta})
        os.kill(child.pid, signal.SIGKILL)
        child.wait(WAIT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(WAIT)
    assert a_evicts.wait(1)
    assert a_evicts.calls == [("c", c_meta["liveness_id"])]
    # the kernel closed its sockets: declared for that, not for silence
    assert b.wait_until(lambda: bool(declared(b, "c")) and not b._pending, WAIT)
    for detector in (a, b):
        assert declared(detector, "c")[0].startswith(("connection closed", "connection reset"))
    assert b_evicts.calls == []  # a, the lowest survivor, evicts; b leaves it to a


def test_silent_peer_is_declared_dead_after_missed_heartbeats(make) -> None:
    a, a_evicts = make("a")
    b, b_evicts = make("b")
    c, c_evicts = make("c")
    connect_all(a, b, c)
    c.pause()  # keeps its sockets open: like SIGSTOP or a partition
    assert a_evicts.wait(1)
    assert a_evicts.calls[0][0] == "c"
    assert declared(a, "c")[0].startswith("missed heartbeats")
    assert b.wait_until(lambda: bool(declared(b, "c")) and not b._pending, WAIT)
    assert b_evicts.calls == [] and c_evicts.calls == []
    # resumed, c hears it was declared dead, takes nobody else for dead (its own loop was
    # the one that stood still) and dials back in: the others hear from it again
    c.pause(False)
    for detector in (a, b):
        assert detector.wait_until(lambda d=detector: "c" in d.connected_peers(), WAIT)
    assert c.wait_until(lambda: c.connected_peers() == {"a", "b"}, WAIT)
    assert c.declarations == [] and c_evicts.calls == []


def test_graceful_stop_is_not_a_death(make) -> None:
    a, a_evicts = make("a")
    b, _ = make("b")
    connect_all(a, b)
    b.stop()
    assert a.wait_until(lambda: not a.connected_peers(), WAIT)
    assert a.declarations == [] and a_evicts.calls == []


def test_a_flapping_member_is_evicted_once_then_damped(make) -> None:
    a, a_evicts = make("a")
    b, _ = make("b")
    c, _ = make("c")  # a hears c too: a majority (silence alone needs one)
    connect_all(a, b, c)
    b.pause()
    assert a_evicts.wait(1)
    b.pause(False)  # it was only stopped: it dials a again and proves alive
    assert a.wait_until(lambda: a.connected_peers() == {"b", "c"}, WAIT)
    b.pause()
    assert a.wait_until(lambda: len(declared(a, "b")) == 2, WAIT)
    assert a_evicts.calls == [("b", b.incarnation)]  # the second declaration is damped
    assert "b" not in a.suspected()


def cut(detector: FailureDetector, peer: str | None = None) -> None:
    """The link drops: shut down `detector`'s connections (with `peer`, or all) so both ends
    see them close, and neither end's notice gets through."""
    for conn in list(detector._conns):
        if peer is None or conn.peer == peer:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:  # the loop closed it meanwhile
                pass


def test_a_pair_that_declared_each_other_dead_reconnects(make) -> None:
    """A link cut both ways at once (no "dead" notice gets through): each side declares the
    other dead and buries it. Both are alive, so they must reconnect and monitor each other
    again, although neither heard from the other first."""
    a, _ = make("a")
    b, _ = make("b")
    connect_all(a, b)
    cut(a)
    assert a.wait_until(lambda: declared(a, "b"), WAIT)
    assert b.wait_until(lambda: declared(b, "a"), WAIT)
    assert a.wait_until(lambda: a.connected_peers() == {"b"}, WAIT), a.connected_peers()
    assert b.wait_until(lambda: b.connected_peers() == {"a"}, WAIT), b.connected_peers()
    assert len(declared(a, "b")) == 1 and len(declared(b, "a")) == 1


def test_a_pair_reconnects_even_if_each_read_the_list_without_the_other(make) -> None:
    """After evicting each other, each may read the member list while the other's record is
    gone (re-registering). They must still find each other again."""
    a, _ = make("a")
    b, _ = make("b")
    connect_all(a, b)
    cut(a)
    assert a.wait_until(lambda: declared(a, "b"), WAIT)
    assert b.wait_until(lambda: declared(b, "a"), WAIT)
    a.update_members(records(a))  # the other's record is gone
    b.update_members(records(b))
    assert a.wait_until(lambda: a.connected_peers() == {"b"}, WAIT), a.connected_peers()
    assert b.wait_until(lambda: b.connected_peers() == {"a"}, WAIT), b.connected_peers()


def test_a_member_that_proves_alive_is_not_evicted_by_a_waiting_verdict(make) -> None:
    """b declares c dead but waits for the lower a (which still hears c) to say so; before
    that wait ends, c calls back and proves alive: b must drop its verdict, not evict c."""
    slow = DetectorSettings(interval=0.1, misses=20)  # a verdict waits 2 x 2 s for a lower one
    a, a_evicts = make("a", slow)
    b, b_evicts = make("b", slow)
    c, c_evicts = make("c", SETTINGS)  # redials 0.5 s after declaring
    connect_all(a, b, c)
    cut(b, "c")  # only b <-> c drops
    assert b.wait_until(lambda: declared(b, "c"), WAIT)
    assert c.wait_until(lambda: declared(c, "b"), WAIT)
    assert b.wait_until(lambda: "c" in b.connected_peers(), WAIT)
    assert c.wait_until(lambda: "b" in c.connected_peers(), WAIT)
    assert "c" not in b._pending and "b" not in c._pending
    assert a_evicts.calls == b_evicts.calls == c_evicts.calls == []


def test_a_dead_member_whose_record_is_gone_is_forgotten(make) -> None:
    """A declared member is called once more; if that call is refused and its record is gone,
    it is forgotten (no endless dialing of the dead)."""
    a, _ = make("a")
    b, _ = make("b")
    connect_all(a, b)
    b.stop()  # says bye: not a death; then a fake record of a member that is not there
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: calls are refused
        ghost = {"liveness": f"127.0.0.1:{unused.getsockname()[1]}",
                 "liveness_id": "0123456789abcdef"}
        a.update_members(records(a, extra={"g": ghost}))
        a._command(lambda: a._redial_later(a._peers["g"], 0.0))  # as if declared long ago
        a.update_members(records(a))  # and its record is gone
        assert a.wait_until(lambda: "g" not in a._peers, WAIT)


def test_hostile_records_and_frames_are_skipped(make, caplog) -> None:
    a, a_evicts = make("a")
    b, _ = make("b")
    c, _ = make("c")  # so that a, hearing c, is on the majority side when b falls silent
    caplog.set_level(logging.WARNING, "coordination.detector")
    hostile = {"x": {"liveness": "no port"}, "y": {"liveness": "h:1", "liveness_id": "../.."},
               "z\n": {"liveness": "h:1", "liveness_id": "ab"}, "w": {"liveness": ["h", 1]}}
    connect_all(a, b, c)
    a.update_members({**records(a, b, c, extra=hostile), "v": MemberInfo("v", metadata=None)})
    assert a.wait_until(lambda: len([r for r in caplog.records
                                     if "skipping member record" in r.getMessage()]) >= 5, WAIT)
    host, port = parse_endpoint(a.endpoint)
    impostor = json.dumps({"t": "hello", "id": "b", "inc": "0123456789abcdef",
                           "ep": "127.0.0.1:9"}).encode() + b"\n"
    for garbage in (b"\xff\xfe\n", b"[1,2]\n", b"{\"t\":\"hb\"}\n", b"x" * 10000,
                    b"[" * 4000 + b"\n", impostor):
        with socket.create_connection((host, port), timeout=WAIT) as sock:
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(WAIT)
            assert sock.recv(100) == b""  # a hung up on it
    assert a.connected_peers() == {"b", "c"}
    assert a.declarations == [] and a_evicts.calls == []
    b.pause()  # and a still judges: its loop survived all that
    assert a_evicts.wait(1) and a_evicts.calls[0][0] == "b"


def test_damping_rule() -> None:
    damping = Damping(window=10.0, backoff=60.0)
    assert damping.declare("x", 0.0) == ("act", 0.0)
    assert damping.declare("y", 1.0) == ("act", 0.0)  # per member
    assert damping.declare("x", 5.0) == ("flapping", 60.0)  # again within the window
    assert damping.declare("x", 30.0) == ("damped", 35.0)  # backing off
    assert damping.declare("x", 200.0) == ("act", 0.0)  # long after: acted on again
    assert damping.declare("y", 20.0) == ("act", 0.0)  # outside its window



def test_a_busy_peer_gets_twice_its_longest_recent_gap_up_to_the_ceiling() -> None:
    silence = SilenceBound(floor=1.0, ceiling=2.0, window=30.0)
    for i in range(50):  # regular heartbeats: the floor
        silence.heard(i * 0.1)
    assert silence.bound(5.0) == 1.0
    silence.heard(5.7)  # 0.8 s late: busy, not stopped
    assert silence.bound(5.8) == pytest.approx(1.6)
    silence.heard(7.3)  # 1.6 s: at most the ceiling (the session decides beyond it)
    assert silence.bound(7.4) == 2.0
    for i in range(1, 400):  # regular again for longer than the window: back to the floor
        silence.heard(7.3 + i * 0.1)
    assert silence.bound(47.3) == 1.0
    assert SilenceBound(floor=1.0, ceiling=None).bound(0.0) == 1.0


@given(st.lists(st.floats(0.001, 3.0), min_size=1, max_size=60))
def test_the_silence_bound_is_twice_the_longest_gap_in_the_window(gaps: list[float]) -> None:
    silence, now, heard = SilenceBound(floor=0.5, ceiling=4.0, window=10.0), 0.0, [0.0]
    silence.heard(now)
    for gap in gaps:
        now += gap
        silence.heard(now)
        heard.append(now)
    recent = [b - a for a, b in itertools.pairwise(heard) if now - b <= 10.0]
    expected = min(4.0, max(0.5, 2 * max(recent, default=0.0)))
    assert silence.bound(now) == pytest.approx(expected)


# ---- the majority rule: an isolated member does not evict its peers --------------------------


@given(st.lists(st.integers(0, 4), min_size=1, max_size=9))
def test_only_a_strict_majority_side_evicts_for_silence(sides: list[int]) -> None:
    """Members split into sides (member i is on side sides[i]; each hears only its own side,
    and every other member is silent to it). For silence, only the members of a side holding
    a strict majority may evict, so at most one side evicts and a lone member of a cluster of
    two or more never does; for a death the kernel vouches for, any member may."""
    members = len(sides)
    evicting = {side for side in sides if may_evict(SILENCE, sides.count(side), members)}
    assert len(evicting) <= 1
    for side in evicting:
        assert 2 * sides.count(side) > members
    if members >= 2 and sides.count(sides[0]) == 1:  # member 0 is cut off from every peer
        assert sides[0] not in evicting
    assert all(may_evict(kind, 1, members) for kind in (CLOSED, RESET))


@given(st.lists(st.tuples(st.sampled_from("bcde"), st.floats(0, 10)), min_size=1,
                max_size=12))
def test_resets_of_several_peers_within_a_bound_are_silence(resets: list) -> None:
    burst = ResetBurst(window=1.0)
    for i, (member, at) in enumerate(sorted(resets, key=lambda r: r[1])):
        count = burst.record(member, at)
        recent = {m for m, t in sorted(resets, key=lambda r: r[1])[:i + 1] if at - t <= 1.0}
        assert count == len(recent)
        assert evidence_of(RESET, count) == (RESET if len(recent) == 1 else SILENCE)
    assert evidence_of(CLOSED, 5) == CLOSED and evidence_of(SILENCE, 1) == SILENCE


def minority_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "not evicting" in r.getMessage()
            and "not a majority" in r.getMessage()]


@pytest.mark.parametrize("members", [2, 3, 5])
def test_an_isolated_member_does_not_evict_its_silent_peers(make, caplog, members) -> None:
    """Every peer of a falls silent at once (as when a alone is cut off from them): a
    declares each dead but evicts none, says why once per declaration, and the peers, back,
    are monitored again."""
    caplog.set_level(logging.WARNING, "coordination.detector")
    a, a_evicts = make("a")
    peers = [make(name)[0] for name in "bcde"[:members - 1]]
    connect_all(a, *peers)
    for peer in peers:
        peer.pause()
    names = {p.member_id for p in peers}
    assert a.wait_until(lambda: {m for _, m, _ in a.declarations} == names, WAIT)
    assert a_evicts.calls == [] and a.suspected() == set()
    lines = minority_lines(caplog)
    assert len(lines) == len(peers), lines
    assert all(f"hears from 1 of {members} members (itself)" in line for line in lines), lines
    for peer in peers:
        peer.pause(False)
    assert a.wait_until(lambda: a.connected_peers() == names, WAIT), a.connected_peers()
    assert a_evicts.calls == []


def test_the_majority_side_evicts_its_silent_peers(make, caplog) -> None:
    """Five members, d and e fall silent: a hears b and c, 3 of 5, and evicts both."""
    caplog.set_level(logging.WARNING, "coordination.detector")
    a, a_evicts = make("a")
    others = [make(name) for name in "bcde"]
    connect_all(a, *(d for d, _ in others))
    for d, _ in others[2:]:
        d.pause()
    assert a_evicts.wait(2)
    assert sorted(m for m, _ in a_evicts.calls) == ["d", "e"]
    assert minority_lines(caplog) == []
    assert all(evicts.calls == [] for _, evicts in others)  # b, c leave it to a


def test_two_members_leave_a_silent_peer_to_the_session(make, caplog) -> None:
    """With two members, each alone is half of the cluster, never a majority: a silent peer
    is declared dead but not evicted (its session timeout decides)."""
    caplog.set_level(logging.WARNING, "coordination.detector")
    a, a_evicts = make("a")
    b, _ = make("b")
    connect_all(a, b)
    b.pause()
    assert a.wait_until(lambda: bool(declared(a, "b")), WAIT)
    assert a_evicts.calls == []
    assert len(minority_lines(caplog)) == 1


def abort(detector: FailureDetector, peer: str) -> None:
    """Reset (RST, not FIN) every connection `detector` has with `peer`, on its loop."""
    done = threading.Event()

    def run() -> None:
        for conn in list(detector._conns):
            if conn.peer == peer:
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                detector._drop(conn)
        done.set()

    detector._command(run)
    assert done.wait(WAIT)


def test_a_lone_reset_is_a_death_even_with_two_members(make) -> None:
    """A reset of one peer's connections (its process died with input unread) is a death the
    kernel vouches for: evicted at once, even where silence would need a majority."""
    a, a_evicts = make("a", PATIENT)
    b, _ = make("b", PATIENT)
    connect_all(a, b)
    a.pause()  # so that a sees b's resets in one pass, as a crash's
    abort(b, "a")
    b.pause()
    a.pause(False)
    assert a_evicts.wait(1)
    assert a_evicts.calls == [("b", b.incarnation)]
    assert declared(a, "b")[0].startswith("connection reset")


def test_resets_of_every_peer_at_once_are_a_link_problem_not_deaths(make, caplog) -> None:
    """Every peer's connections with a are reset at once (a firewall, a conntrack flush,
    `ss -K`): that is a link problem on a's side, judged as silence. a hears nobody, so it
    evicts nobody; it says so for each."""
    caplog.set_level(logging.WARNING, "coordination.detector")
    # a holds a reset one heartbeat interval (1 s here) to see whether others follow
    a, a_evicts = make("a", DetectorSettings(interval=1.0, misses=20))
    peers = [make(name, PATIENT)[0] for name in "bc"]
    connect_all(a, *peers)
    for peer in peers:  # one after the other, a few milliseconds apart
        abort(peer, "a")
        peer.pause()  # (and they do not redial a meanwhile)
    assert a.wait_until(lambda: {m for _, m, _ in a.declarations} == {"b", "c"}, WAIT)
    assert a.wait_until(lambda: len(minority_lines(caplog)) == 2, WAIT), minority_lines(caplog)
    assert a_evicts.calls == []
    assert all("peers reset within" in line for line in minority_lines(caplog))


EVENTLET = r"""
import eventlet; eventlet.monkey_patch()
import time
from coordination.detector import FailureDetector, DetectorSettings
from coordination.types import MemberInfo
evictions = []
settings = DetectorSettings(interval=0.05)
a = FailureDetector("a", settings, lambda *x: evictions.append(x)).start()
b = FailureDetector("b", settings, lambda *x: None).start()
c = FailureDetector("c", settings, lambda *x: None).start()
members = {d.member_id: MemberInfo(d.member_id, metadata=d.advertised()) for d in (a, b, c)}
a.update_members(members); b.update_members(members); c.update_members(members)
assert a.wait_until(lambda: a.connected_peers() == {"b", "c"}, 10)
b.pause()
assert a.wait_until(lambda: bool(evictions), 10)
assert evictions[0][0] == "b"
a.stop(); b.stop(); c.stop()
print("OK")
"""


def test_runs_under_eventlet() -> None:
    """Ryu's processes are monkey-patched: the loop must be green (cooperative) there too."""
    try:
        import eventlet  # noqa: F401
    except ImportError:
        missing("eventlet is not installed; run `make setup`")
    result = subprocess.run([sys.executable, "-c", EVENTLET], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            check=False)
    assert result.stdout.strip().endswith("OK"), result.stdout + result.stderr[-2000:]
