"""The failure detector proven on real Open vSwitch, ZooKeeper and etcd (issue 13).

Three `coord-manager` controllers (os-ken, `ryu_integration.mastership`) with a 10 s session
master three OVS bridges; every bridge dials every controller through an OpenFlow tap
(tests/chaos/tap.py), so who is master, under which generation_id, and which writes the switch
refused are read from the wire, as the switch answered them (tests/chaos/monitor.py).
The session is long on purpose: only the detector can make these failovers fast, so each one
must end well before it ("< session timeout", never a performance target).

- kill -9 of the controller mastering most bridges: each of its bridges gets a new master
  confirmed by the switch under a larger generation_id;
- SIGSTOP of such a controller beyond the detector's heartbeat bound: replaced before the
  session timeout; resumed, its stale MASTER claim is refused STALE by the switch, and it
  campaigns again and ends as a confirmed slave;
- a flapping detector link: every connection to one controller's liveness endpoint is reset
  again and again (`ss -K`, socket destroy), so it and its peers declare each other dead each
  time; the cut-off controller evicts nobody (every peer reset at once is a link problem on its
  side, and it hears no majority), damping keeps the handovers bounded and every bridge has
  one confirmed master.

Waits are pushed: on the monitor's condition (the switch's answers) or on the controllers' log
lines; the detector logs at DEBUG here, so "<peer> said hello" tells when a detector link is
up (again).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import coordination
from ryu_integration.mastership.guard import election_name
from tests.chaos.monitor import Monitor
from tests.chaos.tap import OpenFlowTap, TapLink
from tests.requirements import missing, require_tool
from tests.servers._process import LOOPBACK, free_ports
from tests.servers.ovs import OvsInstance
from tests.servers.proxy import TcpProxy

from .ryu_helpers import LOG_EVENTS, Controller, print_measurements, require_framework, wait_until

pytestmark = pytest.mark.integration

FRAMEWORK = "os-ken"
#: The store's session: what a failover costs without the detector. Only "< SESSION" is asserted.
SESSION = 10.0
#: The detector's thresholds, set in ryu.conf: declared dead after 10 x 0.1 s of silence.
HEARTBEAT_INTERVAL, HEARTBEAT_MISSES = 0.1, 10
BOUND = HEARTBEAT_INTERVAL * HEARTBEAT_MISSES
#: Damping, short enough for a test: a second declaration within 20 s is flapping, and the
#: member is then not evicted for 60 s (longer than the whole test).
DAMPING_WINDOW, DAMPING_BACKOFF = 20.0, 60.0
#: Re-assert every role this often, well within a stop (>= one detection bound): a resumed
#: master's overdue re-assert is the first thing it sends.
REASSERT = 0.5
DPIDS = (1, 2, 3)
SETTLE = 60.0
#: Flapping: this many cuts of the link, each once the last one was declared and the link
#: was up again (a detector redials a member it declared dead after one bound). More flaps
#: than members: without damping each flap would move the bridges again.
FLAPS = 5
#: The controllers' logging: as usual (INFO, bare messages), plus the detector's DEBUG lines,
#: whose "<peer> said hello" says when a peer's heartbeats reach a controller (again).
LOG_CONFIG = """\
[loggers]
keys = root, detector
[handlers]
keys = stderr
[formatters]
keys = bare
[logger_root]
level = INFO
handlers = stderr
[logger_detector]
level = DEBUG
handlers =
qualname = coordination.detector
[handler_stderr]
class = StreamHandler
args = (sys.stderr,)
formatter = bare
[formatter_bare]
format = %(message)s
"""
MEASURED: list[tuple[str, float]] = []


@dataclass(frozen=True)
class Confirmed:
    """A MASTER claim the switch confirmed (ROLE_REPLY), as seen on the wire."""

    t: float
    dpid: int
    member: str
    generation_id: int


class SwitchRoles(Monitor):
    """The chaos monitor, also keeping every confirmed MASTER claim in order (handovers)."""

    def __init__(self) -> None:
        super().__init__()
        self.confirmed: list[Confirmed] = []

    def role_reply(self, link: TapLink, xid: int, role: str, generation_id: int) -> None:
        super().role_reply(link, xid, role, generation_id)
        if role == "master" and link.dpid is not None:
            with self.cond:
                self.confirmed.append(Confirmed(time.monotonic(), link.dpid, link.member,
                                                generation_id))
                self.cond.notify_all()

    def master(self, dpid: int) -> tuple[str, int] | None:
        """(member, generation_id) the switch confirmed as its master, if any (cond held)."""
        sw = self.switches.get(dpid)
        for link in sw.links.values() if sw else ():
            if link.role == "master" and link.member not in self.paused:
                return link.member, link.generation_id or 0
        return None

    def handovers(self, since: float) -> int:
        """Confirmed MASTER claims after `since` that changed a bridge's master."""
        with self.cond:
            last: dict[int, str] = {}
            count = 0
            for c in self.confirmed:
                if c.t > since and last.get(c.dpid, c.member) != c.member:
                    count += 1
                last[c.dpid] = c.member
            return count


class DetectorController(Controller):
    """A controller whose detector logs at DEBUG (`LOG_CONFIG`)."""

    def argv(self) -> list[str]:
        log_config = self.workdir / "logging.conf"
        log_config.write_text(LOG_CONFIG)
        argv = super().argv()
        apps = len(self.apps)
        return [*argv[:-apps], "--log-config-file", str(log_config), *argv[-apps:]]

    def hears(self, peer: Controller, since: int = 0) -> bool:
        """Whether `peer`'s heartbeats reached this controller's detector since line `since`."""
        return bool(_lines(self, f"detector {self.member_id}: {peer.member_id} said hello",
                           since))


class Rig:
    """Three controllers behind OpenFlow taps, and bridges dialling every tap."""

    def __init__(self, scheme: str, server: str, ovs: OvsInstance, workdir: Path) -> None:
        self.namespace = f"/detector-ovs-{uuid.uuid4().hex[:8]}"
        self.backend = scheme
        self.server = server
        self.url = f"{scheme}://{server}{self.namespace}"
        self.ovs = ovs
        self.workdir = workdir
        self.monitor = SwitchRoles()
        self.controllers: list[DetectorController] = []
        self.taps: dict[str, OpenFlowTap] = {}
        #: each controller reaches the store through its own proxy (to hold its traffic)
        self.store_proxies: dict[str, TcpProxy] = {}
        self.liveness: dict[str, int] = {}

    def start(self) -> None:
        """Proxies, taps and controllers; then the bridges; until all is settled."""
        scheme, namespace, workdir = self.backend, self.namespace, self.workdir
        host, _, port = self.server.rpartition(":")
        ports = free_ports(6)
        for i in range(3):
            name, of_port, live_port = f"c{i}", ports[i], ports[3 + i]
            proxy = self.store_proxies[name] = TcpProxy(host, int(port))
            conf = {"coordination": {
                "backend_url": f"{scheme}://{proxy.address}{namespace}",
                "session_timeout": SESSION, "role_request_timeout": 2.0,
                "reassert_interval": REASSERT, "heartbeat_interval": HEARTBEAT_INTERVAL,
                "heartbeat_misses": HEARTBEAT_MISSES,
                "liveness_address": f"{LOOPBACK}:{live_port}",
                "damping_window": DAMPING_WINDOW, "damping_backoff": DAMPING_BACKOFF}}
            self.controllers.append(DetectorController(name, FRAMEWORK, of_port, workdir, conf))
            self.taps[name] = OpenFlowTap(name, of_port, self.monitor)
            self.liveness[name] = live_port
        for c in self.controllers:
            c.start()
        for c in self.controllers:
            c.wait_ready(SETTLE)
        self.ovs.add_bridges([(f"br{d}", d, [t.port for t in self.taps.values()])
                              for d in DPIDS])
        self.wait_settled()
        self.wait_detectors({c.name: 0 for c in self.controllers})

    def controller(self, name: str) -> DetectorController:
        return next(c for c in self.controllers if c.name == name)

    def wait_detectors(self, since: dict[str, int], around: Controller | None = None) -> None:
        """Until each controller's detector hears each other one's heartbeats (says so in a
        line after its line `since[name]`), or only those to and from `around`."""
        pairs = [(c, o) for c in self.controllers for o in self.controllers if o is not c
                 and around in (None, c, o)]

        def connected() -> bool:
            return all(c.hears(o, since[c.name]) for c, o in pairs)

        wait_until(connected, SETTLE, "detectors connected " + ", ".join(
            f"{c.name}<-{o.name}" for c, o in pairs), self.controllers)

    def wait_settled(self) -> dict[int, tuple[str, int]]:
        """Every bridge: one confirmed master, every running controller a confirmed slave
        besides. Returns {dpid: (master, generation_id)}."""
        m = self.monitor
        running = [c.name for c in self.controllers if c.running]
        try:
            m.wait_for(lambda: m.settled(DPIDS, running), SETTLE,
                       f"one master and slaves {running} on every bridge")
        except AssertionError as exc:  # say so if a controller exited meanwhile
            gone = [c for c in self.controllers if c.name in running and not c.running]
            raise AssertionError("\n".join([str(exc), *(f"{c.name} exited ({c.returncode}):\n"
                                                       f"{c.log_tail(15)}" for c in gone)])
                                 ) from None
        with m.cond:
            return {d: m.master(d) for d in DPIDS}  # type: ignore[misc]

    def busiest_master(self) -> tuple[DetectorController, dict[int, int]]:
        """The controller mastering most bridges, and {dpid: generation_id} of those, once
        it knows it too (the switch's confirmation reached it)."""
        masters = self.wait_settled()
        name = Counter(member for member, _ in masters.values()).most_common(1)[0][0]
        victim = self.controller(name)
        old = {d: g for d, (who, g) in masters.items() if who == name}
        for dpid, generation in old.items():
            victim.wait_for(lambda r, d=dpid, g=generation: r.matches(
                "MASTERSHIP", dpid=d, may_program="true") and int(r["term"]) == g, SETTLE,
                what=f"its own confirmation as master of {dpid:016x}")
        return victim, old

    def wait_replaced(self, victim: str, old: dict[int, int]) -> float:
        """Until each of `old`'s bridges has a master other than `victim` that the switch
        confirmed under a larger generation_id; returns when (monotonic)."""
        m = self.monitor

        def replaced() -> bool:
            for dpid, generation in old.items():
                now = m.master(dpid)
                if now is None or now[0] == victim or now[1] <= generation:
                    return False
            return True

        m.wait_for(replaced, SESSION + 20, f"new masters of {sorted(old)} instead of {victim}")
        return time.monotonic()

    def check_invariants(self) -> None:
        """No write accepted from a non-master, no generation_id confirmed twice, no bridge
        without a master for longer than a session."""
        assert not self.monitor.violations, "\n".join(map(str, self.monitor.violations))

    def close(self) -> None:
        for c in self.controllers:
            c.close()
        for tap in self.taps.values():
            tap.close()
        for proxy in self.store_proxies.values():
            proxy.close()


@pytest.fixture(params=["zookeeper", "etcd"])
def store(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(URL scheme, host:port) of the session's shared ZooKeeper or etcd."""
    if request.param == "zookeeper":
        return "zookeeper", request.getfixturevalue("zookeeper").hosts
    return "etcd3", request.getfixturevalue("etcd").endpoint


@pytest.fixture
def rig(store: tuple[str, str], ovs: OvsInstance, tmp_path: Path) -> Iterator[Rig]:
    require_framework(FRAMEWORK)
    made = Rig(*store, ovs, tmp_path / "controllers")
    try:
        made.start()
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module", autouse=True)
def _print_measurements(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    print_measurements(request.config, "detector on OVS (10 s session)", MEASURED)


def _record(what: str, seconds: float) -> None:
    MEASURED.append((what, seconds))


# ---- kill -9 -------------------------------------------------------------------------------


def test_killed_master_is_replaced_on_every_bridge_before_the_session(rig: Rig) -> None:
    victim, old = rig.busiest_master()
    rig.monitor.begin_fault("kill -9", SESSION)
    killed = time.monotonic()
    victim.kill()
    took = rig.wait_replaced(victim.name, old) - killed
    _record(f"{rig.backend}: kill -9 -> {len(old)} bridge(s) confirmed to a new master", took)
    assert took < SESSION, f"replaced after {took:.2f} s: the detector did not act"
    survivors = [c for c in rig.controllers if c is not victim]
    for dpid, generation in old.items():  # the successor's own log agrees with the switch
        member, confirmed = rig.monitor.master(dpid)  # type: ignore[misc]
        successor = rig.controller(member)
        record = successor.wait_for(
            lambda r, d=dpid, g=confirmed: r.matches("MASTERSHIP", dpid=d, may_program="true")
            and int(r["term"]) == g, SETTLE, what=f"mastership of {dpid:016x}")
        assert int(record["term"]) > generation
    assert rig.wait_settled()
    assert any(f"member {victim.member_id} declared dead (connection" in line
               for c in survivors for line in c.lines), "not declared dead for its closed sockets"
    rig.check_invariants()


# ---- SIGSTOP / SIGCONT -----------------------------------------------------------------------


def test_stopped_master_is_replaced_then_fenced_and_rejoins_as_slave(rig: Rig) -> None:
    """SIGSTOP beyond the heartbeat bound: its peers declare it dead for its silence and its
    bridges get new masters before the session timeout. Its store connection is held from the
    stop until the switch has refused it, so that, resumed, it acts before it hears from the
    store (the case fencing exists for; without the hold that order is a race): its overdue
    re-assert of MASTER under its old term is refused STALE by every switch it claims. Then it
    learns it was evicted, campaigns again and ends as a confirmed slave."""
    victim, old = rig.busiest_master()
    pid = victim.pid
    assert pid is not None
    mark = victim.mark()
    m = rig.monitor
    m.begin_fault("SIGSTOP", SESSION)
    stopped = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    m.set_paused(victim.name, True)
    rig.store_proxies[victim.name].blackhole()
    try:
        took = rig.wait_replaced(victim.name, old) - stopped
        resumed = time.time()
    finally:
        os.kill(pid, signal.SIGCONT)
        m.set_paused(victim.name, False)
    _record(f"{rig.backend}: SIGSTOP -> {len(old)} bridge(s) confirmed to a new master", took)
    assert took < SESSION, f"replaced after {took:.2f} s: the detector did not act"
    survivors = [c for c in rig.controllers if c is not victim]
    assert any(f"member {victim.member_id} declared dead (missed heartbeats" in line
               for c in survivors for line in c.lines), "not declared dead for its silence"
    with m.cond:
        new = {d: m.master(d)[1] for d in old}  # type: ignore[index]

    # Resumed, it still believes it is master and re-asserts: the switch refuses it STALE.
    try:
        for dpid, generation in old.items():
            refused = victim.wait_for(
                lambda r, d=dpid: r.matches("ROLE_REFUSED", dpid=d, code="STALE"), SETTLE,
                since=mark, what=f"a refused claim on {dpid:016x}")
            claim = victim.find("ROLE_REQUEST", since=mark, dpid=dpid, xid=refused["xid"])
            assert claim and claim[0]["role"] == "master", claim
            assert int(claim[0]["generation_id"]) == generation and claim[0].t >= resumed
    finally:
        rig.store_proxies[victim.name].restore()
    late = {(r["dpid"], r["xid"]) for r in victim.find("ROLE_REQUEST", since=mark, role="master")
            if r.t >= resumed}
    assert not [r for r in victim.find("ROLE_REPLY", since=mark, role="master")
                if (r["dpid"], r["xid"]) in late], "the switch took it back as master"

    # It learns from the store that it was evicted and ends as a confirmed slave of every
    # bridge, under the new terms, a candidate in each election once more.
    rig.wait_settled()
    for dpid, generation in new.items():
        victim.wait_for(lambda r, d=dpid, g=generation: r.matches(
            "MASTERSHIP", dpid=d, role="slave", may_program="false") and int(r["term"]) >= g,
            SETTLE, since=mark, what=f"slave of {dpid:016x} under term >= {generation}")
    victim.wait_for(lambda r: r.matches("SESSION", state="lost"), SETTLE, since=mark,
                    what="the news of its eviction (session lost)")
    assert not victim.find("MASTERSHIP", since=mark, may_program="true")
    with coordination.connect(rig.url, "observer", session_timeout=SESSION,
                              detector=False) as observer:
        def candidate_everywhere() -> bool:
            return all(any(c.member_id == victim.member_id
                           for c in observer.election(election_name(d)).candidates())
                       for d in DPIDS)
        wait_until(candidate_everywhere, SETTLE, "the resumed controller campaigns again",
                   rig.controllers)
    rig.check_invariants()


# ---- a flapping detector link ------------------------------------------------------------------


def _ss() -> str:
    """`ss`, if this machine can destroy sockets with it (root, CONFIG_INET_DIAG_DESTROY)."""
    ss = require_tool("ss", "iproute2")
    with socket.create_server((LOOPBACK, 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection((LOOPBACK, port), timeout=5) as client:
            accepted, _ = server.accept()
            with accepted:
                subprocess.run([ss, "-K", "-t", "-n", "dst", f"{LOOPBACK}:{port}"],
                               capture_output=True, timeout=10, check=False)
                client.settimeout(5)
                try:
                    alive = client.recv(1) != b""
                except OSError:
                    alive = False
    if alive:
        missing("`ss -K` cannot destroy sockets here (needs root and a kernel with "
                "CONFIG_INET_DIAG_DESTROY)")
    return ss


def _cut(ss: str, port: int) -> int:
    """Reset every TCP connection to or from `port` on loopback; how many sockets it reset."""
    result = subprocess.run(
        [ss, "-K", "-t", "-n", "state", "established", f"( sport = :{port} or dport = :{port} )"],
        capture_output=True, text=True, timeout=10, check=False)
    return sum(f":{port}" in line for line in result.stdout.splitlines())


def _lines(c: Controller, text: str, since: int = 0) -> list[str]:
    with LOG_EVENTS:
        return [line for line in c.lines[since:] if text in line]


def test_a_flapping_detector_link_causes_no_storm_of_handovers(rig: Rig) -> None:
    """The link between the busiest master's liveness endpoint and its peers goes down (every
    connection reset) and comes back, FLAPS times. Each cut is a declaration both ways. The
    isolated side sees every peer's connections reset at once: a link problem on its side,
    judged as silence, and it hears none of its peers, a minority, so it evicts nobody (the
    quorum rule) and says so. The lowest peer evicts it on the first cut, and every later
    declaration of it is damped. So each member is evicted at most once however often the link
    flaps, the isolated one evicts no peer, the handovers are bounded by those evictions, and
    every bridge keeps one confirmed master."""
    ss = _ss()
    victim, _ = rig.busiest_master()
    port = rig.liveness[victim.name]
    first = marks = {c.name: len(c.lines) for c in rig.controllers}
    m = rig.monitor
    m.begin_fault("flapping detector link", SESSION)
    began = time.monotonic()
    reset = []
    for flap in range(FLAPS):
        if flap:  # the link is up again (both ways, with each peer): cut it again
            rig.wait_detectors(marks, around=victim)
        marks = {c.name: len(c.lines) for c in rig.controllers}
        before = len(_lines(victim, "declared dead", marks[victim.name]))
        reset.append(_cut(ss, port))
        if reset[-1]:
            wait_until(lambda b=before, s=marks[victim.name]: len(
                _lines(victim, "declared dead", s)) > b,
                SETTLE, f"flap {flap}: declarations", rig.controllers)
    rig.wait_detectors(marks, around=victim)  # and up again
    masters = rig.wait_settled()
    m.end_fault()
    handovers = m.handovers(began)
    declared = {c.name: _lines(c, "declared dead", first[c.name]) for c in rig.controllers}
    evicted = Counter(line.rsplit(" ", 1)[1] for c in rig.controllers
                      for line in _lines(c, f"detector {c.member_id}: evicting member ",
                                         first[c.name]))
    by_victim = _lines(victim, f"detector {victim.member_id}: evicting member ",
                       first[victim.name])
    in_minority = [line for line in declared[victim.name] if "not a majority" in line]
    with m.cond:
        longest = m.stats["flapping detector link"].longest_masterless
    _record(f"{rig.backend}: {FLAPS} flaps, {handovers} handovers, {sum(evicted.values())} "
            "evictions; longest masterless", longest)
    with m.cond:
        sequence = {d: [c.member for c in m.confirmed if c.t > began and c.dpid == d]
                    for d in DPIDS}
    summary = (f"resets per cut {reset}; handovers {handovers}; masters {masters}; "
               f"confirmed masters in order {sequence}; "
               f"declarations { {k: len(v) for k, v in declared.items()} }; "
               f"evicted {dict(evicted)}; evicted by the isolated one {by_victim}")
    print("\n" + summary)
    # the link really flapped: every cut found connections to reset, and was declared
    assert all(reset), summary
    assert len(declared[victim.name]) >= FLAPS, summary
    # quorum: the isolated one evicts none of its peers, and says why for each declaration
    assert by_victim == [], summary
    assert len(in_minority) == len(declared[victim.name]), declared[victim.name]
    # damping: nobody is evicted twice however often the link flaps; a bridge changes master
    # only when its master's candidacy is deleted, at most twice per eviction (the ZooKeeper
    # driver deletes in two steps, and a live member re-campaigns in between)
    assert all(n == 1 for n in evicted.values()), summary
    assert handovers <= 2 * sum(evicted.values()) * len(DPIDS), summary
    rig.check_invariants()
