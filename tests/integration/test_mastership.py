"""Mastership end to end: real Open vSwitch bridges, three real `coord-manager` processes each,
a real coordination server. Parametrized over framework (os-ken, ryu) and backend.

Who is master is read from the controllers' own logs (their ROLE_REPLY-confirmed transitions,
timestamped) and checked against the switch's own word (OVSDB `list controller`). Failover times
are measured from those timestamps and printed (run with -s to see them).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers._process import free_ports

from .ryu_helpers import (
    FRAMEWORKS,
    Controller,
    print_measurements,
    require_framework,
    settled,
    wait_settled,
    wait_until,
)

pytestmark = pytest.mark.integration

#: ZooKeeper's tickTime in the fixture is 500 ms, so 2 s sessions are allowed.
SESSION_TIMEOUT = 2.0
#: Allowance on top of the session timeout for a crash failover (detection + election +
#: role round trip) on a loaded 2-core CI machine.
FAILOVER_SLACK = 2.5
#: A graceful stop resigns before the connections drop: the successor should be master fast.
HANDOVER_BOUND = 1.5
SETTLE_TIMEOUT = 30.0
#: OVSDB's role column lags the OpenFlow state by up to ~5 s.
OVSDB_TIMEOUT = 15.0
MEASURED: list[tuple[str, float]] = []


# ---- backends: one list; etcd / embedded are appended here when their fixtures exist ---------


@dataclass(frozen=True)
class Backend:
    """How to reach one coordination server: `url(hosts)` for a hosts string (the server's
    own, or a proxy's address in front of it)."""

    name: str
    hosts: str
    url: Callable[[str], str]

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the (first) server, for a proxy to forward to."""
        host, _, port = self.hosts.split(",")[0].rpartition(":")
        return host, int(port)


def _zookeeper(request: pytest.FixtureRequest) -> Backend:
    server = request.getfixturevalue("zookeeper")
    namespace = f"/mastership-{uuid.uuid4().hex[:8]}"
    return Backend("zookeeper", server.hosts, lambda hosts: f"zookeeper://{hosts}{namespace}")


def _etcd(request: pytest.FixtureRequest) -> Backend:
    server = request.getfixturevalue("etcd")
    namespace = f"/mastership-{uuid.uuid4().hex[:8]}"
    return Backend("etcd", server.endpoint, lambda hosts: f"etcd3://{hosts}{namespace}")


def _embedded(request: pytest.FixtureRequest) -> Backend:
    store = request.getfixturevalue("tmp_path") / "embedded-store"
    return Backend("embedded", "", lambda _hosts: f"embedded://{store}")


#: Every backend the tests know; `MASTERSHIP_BACKENDS` (comma-separated) picks which run.
BACKENDS: dict[str, Callable[[pytest.FixtureRequest], Backend]] = {
    "zookeeper": _zookeeper,
    "etcd": _etcd,
    "embedded": _embedded,
}
SELECTED = [b.strip() for b in os.environ.get("MASTERSHIP_BACKENDS", ",".join(BACKENDS))
            .split(",") if b.strip()]
#: Backends reached over a network connection, which a proxy can partition.
PARTITIONABLE = [b for b in SELECTED if b != "embedded"]


def _make_backend(request: pytest.FixtureRequest) -> Backend:
    if request.param not in BACKENDS:
        pytest.fail(f"MASTERSHIP_BACKENDS names unknown backend {request.param!r}; "
                    f"known: {', '.join(BACKENDS)}")
    return BACKENDS[request.param](request)


@pytest.fixture(params=SELECTED)
def backend(request: pytest.FixtureRequest) -> Backend:
    return _make_backend(request)


@pytest.fixture(params=PARTITIONABLE)
def networked_backend(request: pytest.FixtureRequest) -> Backend:
    return _make_backend(request)


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    require_framework(request.param)
    return request.param


@pytest.fixture
def controllers(tmp_path: Path) -> Iterator[Callable[..., Controller]]:
    """Factory for controllers; every process is killed by PID at teardown."""
    made: list[Controller] = []

    def make(name: str, framework: str, url: str, *,
             apps: tuple[str, ...] = ("ryu_integration.mastership",),
             learning_switch: dict[str, Any] | None = None, **options: Any) -> Controller:
        port = free_ports(1)[0]
        sections: dict[str, dict[str, Any]] = {"coordination": {
            "backend_url": url, "session_timeout": SESSION_TIMEOUT,
            "role_request_timeout": 2.0, "reassert_interval": 10.0, **options}}
        if learning_switch:
            sections["learning_switch"] = learning_switch
        controller = Controller(name, framework, port, tmp_path / "controllers", sections, apps)
        made.append(controller)
        return controller

    try:
        yield make
    finally:
        for controller in made:
            controller.close()


def _start_all(controllers: list[Controller]) -> None:
    for c in controllers:
        c.start()
    for c in controllers:
        c.wait_ready()


def _ovsdb_agrees(ovs: Any, bridge: str, master: Controller, others: list[Controller]) -> None:
    """The switch's own word: `master` is master and every other connected controller slave."""
    uuids = {c["target"]: c["uuid"] for c in ovs.controllers(bridge)}
    ovs.vsctl("wait-until", "controller", uuids[master.target], "role=master",
              timeout=OVSDB_TIMEOUT)
    for other in others:
        ovs.vsctl("wait-until", "controller", uuids[other.target], "role=slave",
                  timeout=OVSDB_TIMEOUT)
    roles = sorted((c["role"], c["target"]) for c in ovs.controllers(bridge) if c["is_connected"])
    assert [r for r, _ in roles].count("master") == 1, roles


def _record(what: str, seconds: float) -> None:
    MEASURED.append((what, seconds))
    print(f"\nMEASURED {what}: {seconds * 1000:.1f} ms")


@pytest.fixture(scope="module", autouse=True)
def _print_measurements(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print every time measured in this module, after its last test."""
    yield
    print_measurements(request.config, "mastership failover times (from the controllers' logs)", MEASURED)


def _master_record(c: Controller, dpid: int, since: int = 0) -> Any:
    return c.wait_for(lambda r: r.matches("MASTERSHIP", dpid=dpid, may_program="true"),
                      SETTLE_TIMEOUT, since=since, what=f"mastership of {dpid:016x}")


# ---- tests ---------------------------------------------------------------------------------

DPIDS = (1, 2, 3)


def test_one_master_per_switch_failover_and_return(framework, backend, ovs, controllers):
    """3 bridges x 3 controllers: one master and two slaves per bridge (logs and OVSDB);
    kill -9 of a master -> a successor within the session timeout + slack, with a larger
    generation_id; the killed controller restarts and comes back as slave everywhere; SIGTERM of
    a master hands over at once."""
    url = backend.url(backend.hosts)
    cs = [controllers(f"c{i}", framework, url) for i in range(3)]
    ovs.add_bridges([(f"br{d}", d, [c.port for c in cs]) for d in DPIDS])
    _start_all(cs)
    masters = wait_settled(cs, DPIDS, SETTLE_TIMEOUT)
    for d in DPIDS:
        _ovsdb_agrees(ovs, f"br{d}", masters[d], [c for c in cs if c is not masters[d]])

    # kill -9 the master of br1: every switch it mastered fails over after its session expires.
    victim = masters[1]
    old_terms = {d: int(victim.role_of(d)["term"]) for d in DPIDS if masters[d] is victim}
    survivors = [c for c in cs if c is not victim]
    marks = {c.name: c.mark() for c in survivors}
    killed_at = victim.kill()
    for d, old_term in old_terms.items():
        new = wait_until(lambda d=d: settled(survivors, d), SESSION_TIMEOUT + FAILOVER_SLACK + 5,
                         f"a new master of {d:016x}", survivors)
        record = _master_record(new, d, marks[new.name])
        took = record.t - killed_at
        _record(f"{framework}/{backend.name} kill -9 failover dpid {d}", took)
        assert int(record["term"]) > old_term, "generation_id must grow across a failover"
        assert took < SESSION_TIMEOUT + FAILOVER_SLACK, f"failover took {took:.2f} s"

    # The killed controller returns (same port, same member id): slave of every bridge.
    mark = victim.mark()
    victim.start()
    victim.wait_ready()
    for d in DPIDS:
        victim.wait_for(lambda r, d=d: r.matches("MASTERSHIP", dpid=d, role="slave"),
                        SETTLE_TIMEOUT, since=mark, what=f"slave of {d:016x} after restart")
    masters = wait_settled(cs, DPIDS, SETTLE_TIMEOUT)
    assert victim not in masters.values(), "a returning controller must not take over"
    assert not victim.find("MASTERSHIP", since=mark, may_program="true")
    for d in DPIDS:
        _ovsdb_agrees(ovs, f"br{d}", masters[d], [c for c in cs if c is not masters[d]])

    # SIGTERM of the master of br2: resigns first, so a successor claims at once.
    leaving = masters[2]
    handed = [d for d in DPIDS if masters[d] is leaving]
    stayers = [c for c in cs if c is not leaving]
    marks = {c.name: c.mark() for c in stayers}
    terms = {d: int(leaving.role_of(d)["term"]) for d in handed}
    sent_at = leaving.terminate()
    assert leaving.returncode == 0, leaving.log_tail()
    assert leaving.find("SHUTDOWN"), "graceful stop must log its resignation"
    for d in handed:
        new = wait_until(lambda d=d: settled(stayers, d), SETTLE_TIMEOUT,
                         f"a new master of {d:016x}", stayers)
        record = _master_record(new, d, marks[new.name])
        took = record.t - sent_at
        _record(f"{framework}/{backend.name} SIGTERM handover dpid {d}", took)
        assert int(record["term"]) > terms[d]
        assert took < HANDOVER_BOUND, f"graceful handover took {took:.2f} s"


@pytest.mark.parametrize("hold_on_suspend", [False, True], ids=["zombie", "hold"])
def test_stale_master_is_fenced_by_the_switch(framework, networked_backend, ovs, controllers,
                                              tcp_proxy, hold_on_suspend):
    """c0 masters br1 but reaches the store through a proxy that is then black-holed: its
    session expires while its OpenFlow connection stays up, and c1 or c2 takes over under a
    newer term. Whatever c0 believes meanwhile, the switch fences it:

    - every MASTER claim c0 makes carries its old term (never an invented one), and each one
      made after the successor was confirmed is refused STALE; the switch never again confirms
      c0 as master;
    - c0 stops programming (at once on STALE, on LOST, or on SUSPENDED when it holds), and then
      claims SLAVE; its claim with the old term is refused STALE, it re-reads the leader and
      ends as a slave under the new term once the proxy heals.

    zombie (`hold_on_suspend = false`, Curator's "session" policy): c0 keeps re-asserting MASTER
    through the partition, so the refusal comes from the switch. hold (the default): c0 stops as
    soon as its backend reports the connection SUSPENDED, which must happen before the successor
    is confirmed (a client notices after ~2/3 of the session timeout, the server expires the
    session after all of it); a backend that reports it late makes this variant xfail, naming
    the figures, after everything else was checked.
    """
    backend = networked_backend
    proxy = tcp_proxy(*backend.address)
    zombie = controllers("c0", framework, backend.url(proxy.address),
                         hold_on_suspend=hold_on_suspend, reassert_interval=0.5)
    others = [controllers(f"c{i}", framework, backend.url(backend.hosts)) for i in (1, 2)]
    ovs.add_bridge("br1", 1, [c.port for c in (zombie, *others)])
    zombie.start()  # alone at first, so it becomes the master
    old_term = int(_master_record(zombie, 1)["term"])
    _start_all(others)
    wait_settled([zombie, *others], [1], SETTLE_TIMEOUT)

    mark = zombie.mark()
    cut_at = time.time()
    proxy.blackhole()
    new_master = wait_until(lambda: next((c for c in others if (r := c.role_of(1)) is not None
                                          and r["may_program"] == "true"), None),
                            SESSION_TIMEOUT + FAILOVER_SLACK + 5, "a successor", [zombie, *others])
    succ = _master_record(new_master, 1)
    new_term = int(succ["term"])
    assert new_term > old_term
    _record(f"{framework}/{backend.name} partitioned master -> successor confirmed",
            succ.t - cut_at)
    stopped = zombie.wait_for(lambda r: r.matches("MASTERSHIP", dpid=1, may_program="false"),
                              SESSION_TIMEOUT + FAILOVER_SLACK + 5, since=mark,
                              what="the partitioned master to stop programming")
    if not hold_on_suspend:
        # It re-asserts every 0.5 s, so the switch refuses it within about that.
        assert stopped.t - succ.t < 0.5 + FAILOVER_SLACK, stopped.fields
    _record(f"{framework}/{backend.name} partitioned master stopped, relative to successor",
            stopped.t - succ.t)

    # Heal: c0 learns its session is gone and settles as a slave under the new term.
    mark2 = zombie.mark()
    proxy.restore()
    zombie.wait_for(lambda r: r.matches("SESSION", state="lost"), SETTLE_TIMEOUT, since=mark,
                    what="session lost")
    zombie.wait_for(lambda r: r.matches("MASTERSHIP", dpid=1, role="slave")
                    and int(r["term"]) >= new_term, SETTLE_TIMEOUT, since=mark2,
                    what="slave under the new term")
    wait_settled([zombie, *others], [1], SETTLE_TIMEOUT)
    _ovsdb_agrees(ovs, "br1", new_master, [c for c in (zombie, *others) if c is not new_master])

    # The fencing argument, from c0's own log.
    claims = zombie.find("ROLE_REQUEST", since=mark, role="master")
    assert all(int(r["generation_id"]) == old_term for r in claims), "a term was invented"
    refused = {r["xid"] for r in zombie.find("ROLE_REFUSED", since=mark, code="STALE")}
    if stopped.t >= succ.t:
        # still acting as master when the successor took over: only the switch can stop it
        assert refused, "the switch never refused the old term STALE"
    late = [r for r in claims if r.t > succ.t]
    assert all(r["xid"] in refused for r in late), "a MASTER claim after the successor passed"
    assert not zombie.find("ROLE_REPLY", since=mark, role="master",
                           t=lambda t: float(t) > succ.t), "the switch took c0 back as master"
    assert not zombie.find("MASTERSHIP", since=stopped.seq, may_program="true")
    print(f"\n{framework}/{backend.name}: c0 stopped because: {stopped['reason']}; "
          f"{len(late)} MASTER claim(s) after the successor, all refused STALE")

    if hold_on_suspend and stopped.t >= succ.t:
        # Checked last so that everything above is still verified.
        suspended = zombie.find("SESSION", since=mark, state="suspended")
        when = f"{suspended[0].t - cut_at:.2f} s" if suspended else "never"
        pytest.xfail(
            f"{backend.name} driver ({framework}): SUSPENDED reported {when} after the partition "
            f"(successor confirmed at {succ.t - cut_at:.2f} s), so the hold came too late; the "
            f"switch fenced the old master instead ({stopped['reason']})")


LS_APPS = ("ryu_integration.apps.learning_switch",)
ARP_BCAST = ("eth(src=00:00:00:00:00:01,dst=ff:ff:ff:ff:ff:ff),eth_type(0x0806),"
             "arp(sip=10.0.0.1,tip=10.0.0.2,op=1,sha=00:00:00:00:00:01,tha=00:00:00:00:00:00)")
ARP_REPLY = ("eth(src=00:00:00:00:00:02,dst=00:00:00:00:00:01),eth_type(0x0806),"
             "arp(sip=10.0.0.2,tip=10.0.0.1,op=2,sha=00:00:00:00:00:02,tha=00:00:00:00:00:01)")
#: The asynchronous configuration Open vSwitch reports for a fresh OF1.3 connection, as
#: [master/equal, slave] bitmasks: packet-in NO_MATCH|ACTION / none (INVALID_TTL is off),
#: port-status ADD|DELETE|MODIFY / the same, flow-removed all four reasons / none.
OF13_ASYNC_DEFAULT = {"packet_in_mask": "0x3,0x0", "port_status_mask": "0x7,0x7",
                      "flow_removed_mask": "0xf,0x0"}


def test_learning_switch_only_the_master_acts(framework, backend, ovs, controllers):
    """simple_switch_13 on the guard, 3 controllers: the switch reports OF1.3's default async
    config to each; only the master gets packet-ins and flow-removed, every controller gets
    port-status; only the master installs flows; after a SIGTERM the successor re-syncs and
    answers."""
    url = backend.url(backend.hosts)
    cs = [controllers(f"c{i}", framework, url, apps=LS_APPS,
                      learning_switch={"trace": True, "flow_idle_timeout": 1}) for i in range(3)]
    ovs.add_bridge("br1", 1, [c.port for c in cs])
    ovs.add_host_port("br1", "h1", 1)
    ovs.add_host_port("br1", "h2", 2)
    _start_all(cs)
    master = wait_settled(cs, [1], SETTLE_TIMEOUT)[1]
    slaves = [c for c in cs if c is not master]
    master.wait_for(lambda r: r.kind == "LEARNING_SWITCH", SETTLE_TIMEOUT, what="resync")

    # The switch's own account of the async config of each connection (OFPT_GET_ASYNC).
    for c in cs:
        reply = c.wait_for(lambda r: r.kind == "ASYNC_CONFIG", SETTLE_TIMEOUT, what="async config")
        assert {k: reply[k] for k in OF13_ASYNC_DEFAULT} == OF13_ASYNC_DEFAULT, reply.fields

    marks = {c.name: c.mark() for c in cs}
    ovs.inject("h1", ARP_BCAST)
    master.wait_for(lambda r: r.kind == "PACKET_IN", SETTLE_TIMEOUT, since=marks[master.name],
                    what="packet-in at the master")
    ovs.inject("h2", ARP_REPLY)  # dst known now: the master installs h2->h1 with idle_timeout 1
    master.wait_for(lambda r: r.kind == "FLOW_REMOVED", SETTLE_TIMEOUT, since=marks[master.name],
                    what="flow-removed at the master")
    # A barrier: port-status goes to every connection, after anything the switch sent before.
    ovs.add_host_port("br1", "h3", 3)
    for c in cs:
        c.wait_for(lambda r: r.kind == "PORT_STATUS", SETTLE_TIMEOUT, since=marks[c.name],
                   what="port-status (every role gets it)")
    for s in slaves:
        assert not s.find("PACKET_IN", since=marks[s.name]), "a slave got a packet-in"
        assert not s.find("FLOW_REMOVED", since=marks[s.name]), "a slave got flow-removed"
    for c in cs:
        assert not c.find("IS_SLAVE"), f"{c.name} tried to program the switch while slave"
    flows = ovs.ofctl("dump-flows", "br1")
    assert "actions=CONTROLLER:65535" in flows, flows

    # Graceful stop of the master: the successor re-syncs the switch and answers packet-ins.
    marks = {c.name: c.mark() for c in slaves}
    master.terminate()
    successor = wait_until(lambda: settled(slaves, 1), SETTLE_TIMEOUT, "successor", slaves)
    successor.wait_for(lambda r: r.kind == "LEARNING_SWITCH", SETTLE_TIMEOUT,
                       since=marks[successor.name], what="resync by the successor")
    ovs.inject("h1", ARP_BCAST)
    successor.wait_for(lambda r: r.kind == "PACKET_IN", SETTLE_TIMEOUT,
                       since=marks[successor.name], what="packet-in at the successor")
