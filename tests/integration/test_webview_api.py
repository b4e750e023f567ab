"""`coordctl serve` against real backends: the JSON API, the event stream, hostile records, and
one-line errors. The command runs as a subprocess, as an operator runs it (port 0: the port it
picked is read from its first line of output)."""

from __future__ import annotations

import contextlib
import http.client
import json
import selectors
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import coordination
from coordination import Host, Link, Mastership, Port, Switch
from coordination.testing import Recorder

pytestmark = pytest.mark.integration
WAIT = 30.0


# ---- helpers (also used by test_webview_browser.py) --------------------------------------------

def coordctl_exe() -> str:
    exe = shutil.which("coordctl", path=str(Path(sys.executable).parent))
    assert exe, "coordctl is not installed in this environment (pip install -e .)"
    return exe


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next line of `proc`'s stdout, waiting at most `timeout` seconds (pushed by select)."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no output from {proc.args!r} within {timeout} s")
    return proc.stdout.readline()


@contextlib.contextmanager
def serving(url: str, *extra: str) -> Iterator[str]:
    """Run `coordctl --url URL serve --listen 127.0.0.1:0`; yield the page URL; stop it (by
    its pid, SIGTERM then SIGKILL) whatever happens."""
    proc = subprocess.Popen([coordctl_exe(), "--url", url, "serve", "--listen", "127.0.0.1:0",
                             *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = read_line(proc, WAIT)
        if not line.startswith("coordctl: serving "):
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise AssertionError(f"coordctl serve did not start: {line!r} {err!r}")
        yield line.split()[2]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def get(base: str, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(base + path, timeout=WAIT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class EventStream:
    """A client of /api/events: `next()` returns the next event (a blocking read, bounded)."""

    def __init__(self, base: str) -> None:
        host, _, port = base.removeprefix("http://").rstrip("/").rpartition(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=WAIT)
        self.conn.request("GET", "/api/events", headers={"Accept": "text/event-stream"})
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        assert self.response.getheader("Content-Type", "").startswith("text/event-stream")

    def next(self) -> dict[str, Any]:
        data = []
        while True:
            line = self.response.readline().decode()
            if not line:
                raise AssertionError("the event stream ended")
            line = line.rstrip("\n")
            if line.startswith("data: "):
                data.append(line[6:])
            elif not line and data:
                return json.loads("\n".join(data))

    def until(self, predicate: Callable[[dict[str, Any]], bool],
              timeout: float = WAIT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            event = self.next()
            if predicate(event):
                return event
        raise AssertionError(f"no matching event within {timeout} s")

    def close(self) -> None:
        self.conn.close()


def zookeeper_url(request: pytest.FixtureRequest) -> str:
    return f"zookeeper://{request.getfixturevalue('zookeeper').hosts}/web-{uuid.uuid4().hex[:8]}"


def embedded_url(request: pytest.FixtureRequest) -> str:
    return f"embedded://{request.getfixturevalue('tmp_path')}/store"


def etcd_url(request: pytest.FixtureRequest) -> str:
    return f"etcd3://{request.getfixturevalue('etcd').endpoint}/web-{uuid.uuid4().hex[:8]}"


URLS: dict[str, Callable[[pytest.FixtureRequest], str]] = {
    "embedded": embedded_url, "zookeeper": zookeeper_url, "etcd3": etcd_url,
}


@pytest.fixture(params=list(URLS))
def url(request: pytest.FixtureRequest) -> str:
    return URLS[request.param](request)


def elect(coord: coordination.Coordinator, dpid: int, priority: int = 0) -> int:
    """Campaign in the switch's election; the term once elected."""
    elected = Recorder()
    coord.election(f"dpid-{dpid:016x}").campaign(priority=priority, on_elected=elected)
    return elected.wait_count(1, WAIT)[0].term


# ---- tests ----------------------------------------------------------------------------------

def test_api_serves_members_elections_masters_topology_and_streams_changes(url: str) -> None:
    with coordination.connect(url, "c1", address="127.0.0.1:6653") as c1, \
            coordination.connect(url, "c2", address="127.0.0.1:6654") as c2:
        t1, t2 = elect(c1, 1, priority=5), elect(c1, 2)
        c2.election("dpid-0000000000000001").campaign(priority=1)
        c1.topology.put(Switch(dpid=1, owner="c1", term=t1, ports=(Port(1, "s1-eth1"),)))
        c1.topology.put(Switch(dpid=2, owner="c1", term=t2))
        c1.topology.put(Mastership(dpid=1, owner="c1", term=t1))
        c1.topology.put(Link(src_dpid=1, src_port=1, dst_dpid=2, dst_port=1, owner="c1", term=t2))
        c1.topology.put(Host(mac="00:00:00:00:00:0A", ips=("10.0.0.1",), dpid=2, port_no=3,
                             owner="c1", term=t2))

        with serving(url) as base:
            status, members = get(base, "api/members")
            assert status == 200
            assert {m["member_id"]: (m["address"], m["alive"], m["leads"]) for m in members} == {
                "c1": ("127.0.0.1:6653", True, 2), "c2": ("127.0.0.1:6654", True, 0)}

            status, elections = get(base, "api/elections")
            assert status == 200
            assert [(e["election"], e["leader"], e["term"]) for e in elections] == [
                ("dpid-0000000000000001", "c1", t1), ("dpid-0000000000000002", "c1", t2)]

            status, one = get(base, "api/elections/dpid-0000000000000001")
            assert status == 200 and one["leader"] == "c1"
            assert one["candidates"] == [{"member_id": "c1", "priority": 5},
                                         {"member_id": "c2", "priority": 1}]

            status, masters = get(base, "api/masters")
            assert status == 200
            assert [(m["dpid"], m["leader"], m["term"], m["confirmed"]) for m in masters] == [
                ("0000000000000001", "c1", t1, True), ("0000000000000002", "c1", t2, False)]

            status, topo = get(base, "api/topology")
            assert status == 200
            assert [s["key"] for s in topo["switches"]] == ["0000000000000001",
                                                            "0000000000000002"]
            assert topo["switches"][0]["ports"][0]["name"] == "s1-eth1"
            assert [(lk["src"], lk["dst"]) for lk in topo["links"]] == [
                ("0000000000000001", "0000000000000002")]
            assert [(h["mac"], h["switch"], h["ips"]) for h in topo["hosts"]] == [
                ("00:00:00:00:00:0a", "0000000000000002", ["10.0.0.1"])]

            stream = EventStream(base)
            try:
                state = stream.next()
                assert state["type"] == "state" and state["server"]["session"] == "connected"
                assert len(state["topology"]["switches"]) == 2

                # a leader change and a topology change, pushed (no request made)
                c1.election("dpid-0000000000000001").resign()
                first = stream.until(lambda e: e["type"] == "leader"
                                     and e["election"] == "dpid-0000000000000001")
                assert first["previous"] == {"leader": "c1", "term": t1}
                # the store may show "no leader" for a moment before c2 (zookeeper, etcd)
                event = first if first["leader"] == "c2" else stream.until(
                    lambda e: e["type"] == "leader" and e["leader"] == "c2")
                assert event["election"] == "dpid-0000000000000001" and event["term"] > t1
                c2.topology.put(Switch(dpid=3, owner="c2", term=0))
                event = stream.until(lambda e: e["type"] == "topology")
                assert (event["op"], event["kind"], event["key"]) == (
                    "put", "switch", "0000000000000003")
                assert event["record"]["owner"] == "c2"
            finally:
                stream.close()

            status, elections = get(base, "api/elections")
            assert ("dpid-0000000000000001", "c2") in [(e["election"], e["leader"])
                                                      for e in elections]

            status, missing = get(base, "api/elections/dpid-00000000000000ff")
            assert status == 404 and missing == {"error": "no election 'dpid-00000000000000ff'"}
            status, bad = get(base, "api/elections/..")
            assert status == 404 and "error" in bad
            status, nothing = get(base, "api/nothing")
            assert status == 404 and nothing == {"error": "Not Found"}


def test_member_leaving_shows_as_gone(url: str) -> None:
    with coordination.connect(url, "stays") as stays:
        elect(stays, 1, priority=5)
        leaves = coordination.connect(url, "leaves")
        try:
            leaves.election("dpid-0000000000000001").campaign(priority=1)
            with serving(url) as base:
                stream = EventStream(base)
                try:
                    state = stream.next()
                    assert {m["member_id"] for m in state["members"]} == {"stays", "leaves"}
                    leaves.close()
                    # no leader changed and the API has no member watch: the member list is
                    # re-read when asked (GET), and the stream tells every page
                    status, members = get(base, "api/members")
                    assert status == 200 and {m["member_id"]: m["alive"] for m in members} == {
                        "stays": True, "leaves": False}
                    event = stream.until(lambda e: e["type"] == "members")
                    assert {m["member_id"]: m["alive"] for m in event["members"]} == {
                        "stays": True, "leaves": False}
                finally:
                    stream.close()
        finally:
            leaves.close()


def test_hostile_records_are_escaped_cut_or_skipped(request: pytest.FixtureRequest) -> None:
    url = embedded_url(request)
    evil = "<script>alert(1)<\\script>\x1b[31m\u202e"
    with coordination.connect(url, "m<img src=x onerror=alert(1)>") as c1:
        term = elect(c1, 1)
        c1.topology.put(Switch(dpid=1, owner=evil + "x" * 10_000, term=term,
                               ports=(Port(1, "eth\n1"),)))
        c1.topology._driver.create("switch/zz", b"\xff not json")  # what no writer could put
        with serving(url) as base:
            status, topo = get(base, "api/topology")
            assert status == 200
            [switch] = topo["switches"]  # the undecodable record is skipped
            owner = switch["owner"]
            assert len(owner) <= 203 and owner.endswith("...")
            assert "\x1b" not in owner and "\\x1b" in owner and "\u202e" not in owner
            assert switch["ports"][0]["name"] == "eth\\n1"
            status, members = get(base, "api/members")
            assert [m["member_id"] for m in members] == ["m<img src=x onerror=alert(1)>"]


@pytest.mark.parametrize("argv, fragment", [
    (["--url", "nosuch://x", "serve"], "no coordination backend named 'nosuch'"),
    (["--url", "memory://x", "serve", "--listen", "nowhere"], "--listen must be host:port"),
    (["--url", "memory://x", "serve", "--listen", "127.0.0.1:99999"], "--listen must be"),
])
def test_serve_bad_input_is_one_line(argv: list[str], fragment: str) -> None:
    out = subprocess.run([coordctl_exe(), *argv], capture_output=True, text=True, timeout=60,
                         check=False)
    assert out.returncode == 2
    assert out.stderr.startswith("coordctl: error:") and fragment in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_serve_unreachable_backend_and_busy_port_are_one_line(
        request: pytest.FixtureRequest) -> None:
    from tests.servers._process import free_port

    port = free_port()
    out = subprocess.run([coordctl_exe(), "--url", f"zookeeper://127.0.0.1:{port}/x",
                          "--connect-timeout", "1", "serve"], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 2 and f"127.0.0.1:{port}" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr

    url = embedded_url(request)
    with serving(url) as base:
        busy = base.removeprefix("http://").rstrip("/")
        out = subprocess.run([coordctl_exe(), "--url", url, "serve", "--listen", busy],
                             capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert out.stderr.startswith("coordctl: error: cannot listen on") and "Traceback" not in \
        out.stderr
    assert len(out.stderr.strip().splitlines()) == 1

