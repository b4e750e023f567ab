"""The failure detector end to end: member processes on real ZooKeeper and etcd, one killed
(kill -9) or stopped (SIGSTOP), survivors taking its elections well before the 10 s session
timeout; the stopped one, resumed, learns it lost them and campaigns again as a follower."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import coordination
from coordination import ConfigurationError
from coordination.testing import Recorder
from coordination.types import Leadership

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SESSION = 10.0  # the detector must beat this by far; only "< SESSION" is asserted
ELECTIONS = 20
WAIT = 30.0

MEMBER = r"""
import logging, sys, threading
import coordination
from coordination import CampaignRequest
url, member, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                    format="%(asctime)s " + member + " %(name)s %(message)s")
def say(*words):
    print(*words, flush=True)
coord = coordination.connect(url, member, session_timeout=SESSION)
coord.add_session_listener(lambda state: say("session", state.value))
names = [f"e{i:03d}" for i in range(count)]
coord.campaign_many([CampaignRequest(n, 0, on_elected=lambda lead, n=n: say("elected", n),
                                     on_revoked=lambda lead, n=n: say("revoked", n))
                     for n in names])
say("ready")
def peers():
    detector = coord.failure_detector
    detector.wait_until(lambda: len(detector.connected_peers()) >= 2, 60)
    say("peers", *sorted(detector.connected_peers()))
threading.Thread(target=peers, daemon=True).start()
for line in sys.stdin:
    pass
coord.close()
""".replace("SESSION", repr(SESSION))


class Member:
    """One member process; its stdout lines arrive in `lines`."""

    def __init__(self, url: str, member_id: str, log: Path) -> None:
        self.member_id = member_id
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", MEMBER, url, member_id, str(ELECTIONS)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, wanted: str, count: int = 1, timeout: float = WAIT) -> list[str]:
        """The lines read until `count` lines starting with `wanted` came (bounded wait)."""
        seen, got = [], 0
        deadline = time.monotonic() + timeout
        while got < count:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.member_id}: {count} x {wanted!r} not seen within "
                                     f"{timeout} s; saw {seen}") from None
            seen.append(line)
            got += line.startswith(wanted)
        return seen

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(WAIT)
        self.stderr.close()


class Leaders:
    """Who leads each election, as an observer's leader listeners report it."""

    def __init__(self, coord: coordination.Coordinator, names: list[str]) -> None:
        self.now: dict[str, Leadership | None] = {}
        self.cond = threading.Condition()
        for name in names:
            coord.election(name).add_leader_listener(lambda lead, n=name: self._seen(n, lead))

    def _seen(self, name: str, lead: Leadership | None) -> None:
        with self.cond:
            self.now[name] = lead
            self.cond.notify_all()

    def wait_all(self, predicate, timeout: float = WAIT) -> bool:
        with self.cond:
            return self.cond.wait_for(
                lambda: len(self.now) == ELECTIONS and all(
                    lead is not None and predicate(lead) for lead in self.now.values()),
                timeout)


@pytest.fixture(params=["zookeeper", "etcd"])
def url(request: pytest.FixtureRequest) -> str:
    ns = f"det-{uuid.uuid4().hex[:8]}"
    if request.param == "zookeeper":
        server = request.getfixturevalue("zookeeper")
        return f"zookeeper://{server.hosts}/{ns}"
    server = request.getfixturevalue("etcd")
    return f"etcd3://{server.endpoint}/{ns}"


@pytest.fixture
def cluster(url: str, tmp_path: Path) -> Iterator[tuple[list[Member], Leaders, str]]:
    """m1 leading every election, m2 and m3 campaigning behind it, and an observer (no
    detector, so it never takes part in a verdict)."""
    names = [f"e{i:03d}" for i in range(ELECTIONS)]
    members: list[Member] = []
    with coordination.connect(url, "observer", session_timeout=SESSION,
                              detector=False) as observer:
        leaders = Leaders(observer, names)
        try:
            members.append(Member(url, "m1", tmp_path / "m1.log"))
            members[0].expect("elected", ELECTIONS)
            for member_id in ("m2", "m3"):
                members.append(Member(url, member_id, tmp_path / f"{member_id}.log"))
                members[-1].expect("ready")
            assert leaders.wait_all(lambda lead: lead.member_id == "m1")
            for member in members:  # every detector hears the two others
                member.expect("peers")
            yield members, leaders, url
        finally:
            for member in members:
                member.stop()


def test_killed_leader_is_replaced_well_before_the_session_timeout(cluster) -> None:
    members, leaders, _ = cluster
    m1 = members[0]
    killed = time.monotonic()
    os.kill(m1.proc.pid, signal.SIGKILL)
    assert leaders.wait_all(lambda lead: lead.member_id in ("m2", "m3"), SESSION)
    took = time.monotonic() - killed
    assert took < SESSION, took  # without the detector: the whole 10 s session


def test_stopped_leader_is_evicted_then_rejoins_as_a_follower(cluster) -> None:
    members, leaders, _ = cluster
    m1 = members[0]
    os.kill(m1.proc.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    assert leaders.wait_all(lambda lead: lead.member_id in ("m2", "m3"), SESSION)
    assert time.monotonic() - stopped < SESSION
    os.kill(m1.proc.pid, signal.SIGCONT)
    # it learns from the store that it lost everything, through the normal listener path...
    seen = m1.expect("revoked", ELECTIONS)
    seen += m1.expect("session connected")
    assert "session lost" in seen
    # ...and campaigns again on its own, behind the new leaders: a follower now, it leads
    # again only once they leave
    assert leaders.wait_all(lambda lead: lead.member_id in ("m2", "m3"), WAIT)
    for member in members[1:]:
        member.proc.stdin.close()  # a graceful exit: they resign
    assert leaders.wait_all(lambda lead: lead.member_id == "m1", WAIT)
    seen += m1.expect("elected", ELECTIONS)
    assert seen.index("session connected") < seen.index(next(
        line for line in seen if line.startswith("elected")))


def test_eviction_spares_a_new_incarnation_and_the_evicted_member_starts_over(url: str) -> None:
    """`_driver_evict_member` directly: a record carrying another detector incarnation is left
    alone; the right one loses its leadership through on_revoked, and campaigns again."""
    with coordination.connect(url, "a", session_timeout=SESSION) as a, \
            coordination.connect(url, "b", session_timeout=SESSION) as b:
        elected, revoked = Recorder(), Recorder()
        b.election("x").campaign(on_elected=elected, on_revoked=revoked)
        first = elected.wait_count(1, WAIT)[0]
        a_elected = Recorder()
        a.election("x").campaign(on_elected=a_elected)
        a._driver_evict_member("b", "0123456789abcdef")  # not b's incarnation: nothing happens
        assert b.election("x").leader() == first and not revoked.items
        a._driver_evict_member("b", b.failure_detector.incarnation)
        assert revoked.wait_count(1, WAIT)[0] == first
        assert a_elected.wait_count(1, WAIT)[0].term > first.term
        # b learned it from the store, started over and stands behind a again
        a.election("x").resign()
        assert elected.wait_count(2, WAIT)[1].member_id == "b"


def test_an_unusable_liveness_address_is_a_one_line_error(url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match="liveness_address") as info:
            coordination.connect(url, "a", liveness_address=f"127.0.0.1:{port}")
    assert "\n" not in str(info.value)
