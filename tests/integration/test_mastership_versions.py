"""Mastership over every OpenFlow version Open vSwitch offers for roles: 1.0 (Nicira roles, no
generation_id), 1.4 and 1.5 (ROLE_STATUS tells a demoted master at once), plus the STALE hint.

Real Open vSwitch bridges (one per version), real `coord-manager` processes, real ZooKeeper and
etcd; parametrized over framework (os-ken, ryu) and backend like tests/integration/
test_mastership.py, whose helpers this module reuses. Who is master is read from the
controllers' own timestamped logs and checked against OVSDB's `role` column.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import coordination
from ryu_integration.cli import main as coordctl
from tests.servers._process import free_ports

from .ryu_helpers import (
    FRAMEWORKS,
    Controller,
    RoleProbe,
    require_framework,
    settled,
    wait_settled,
    wait_until,
)
from .test_mastership import (
    BACKENDS,
    FAILOVER_SLACK,
    OVSDB_TIMEOUT,
    SELECTED,
    SESSION_TIMEOUT,
    SETTLE_TIMEOUT,
    Backend,
)

pytestmark = pytest.mark.integration

#: (bridge, dpid, OVS protocols, fenced by generation_id)
BRIDGES = (("br10", 0x10, "OpenFlow10", False),
           ("br14", 0x14, "OpenFlow14", True),
           ("br15", 0x15, "OpenFlow15", True))
DPIDS = [dpid for _, dpid, _, _ in BRIDGES]
FENCED = {dpid: fenced for _, dpid, _, fenced in BRIDGES}
NETWORKED = [b for b in SELECTED if b in ("zookeeper", "etcd")]


@pytest.fixture(params=NETWORKED)
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param](request)


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    require_framework(request.param)
    return request.param


@pytest.fixture
def controllers(tmp_path: Path) -> Iterator[Callable[..., Controller]]:
    """Make `coord-manager` controllers (mastership app only); all killed at teardown."""
    made: list[Controller] = []

    def make(name: str, framework: str, url: str, **options: Any) -> Controller:
        sections = {"coordination": {"backend_url": url, "session_timeout": SESSION_TIMEOUT,
                                     "role_request_timeout": 2.0, "reassert_interval": 10.0,
                                     **options}}
        controller = Controller(name, framework, free_ports(1)[0], tmp_path / "controllers",
                                sections)
        made.append(controller)
        return controller

    try:
        yield make
    finally:
        for controller in made:
            controller.close()


def _start(controllers: list[Controller]) -> None:
    for c in controllers:
        c.start()
    for c in controllers:
        c.wait_ready()


def _ovsdb_agrees(ovs: Any, bridge: str, master: Controller) -> None:
    """The switch's own word: `master` holds the master role (also for Nicira roles)."""
    uuids = {c["target"]: c["uuid"] for c in ovs.controllers(bridge)}
    ovs.vsctl("wait-until", "controller", uuids[master.target], "role=master",
              timeout=OVSDB_TIMEOUT)
    roles = [c["role"] for c in ovs.controllers(bridge) if c["is_connected"]]
    assert roles.count("master") == 1, roles


def _confirmed(c: Controller, dpid: int, since: int) -> Any:
    return c.wait_for(lambda r: r.matches("MASTERSHIP", dpid=dpid, may_program="true"),
                      SETTLE_TIMEOUT, since=since, what=f"mastership of {dpid:016x}")


def _wait_record(url: str, check: Callable[[coordination.Mastership], bool], what: str,
                 timeout: float = SETTLE_TIMEOUT) -> coordination.Mastership:
    """Wait, on a topology watch (pushed), for a Mastership record satisfying `check`."""
    found: list[coordination.Mastership] = []
    done = threading.Event()

    def on_event(event: Any) -> None:
        records = (event.records if isinstance(event, coordination.Snapshot)
                   else [event.record] if event.record is not None else [])
        for record in records:
            if isinstance(record, coordination.Mastership) and check(record):
                found.append(record)
                done.set()

    with coordination.connect(url, "versions-test") as coord:
        watch = coord.topology.watch(on_event, kinds=["mastership"])
        try:
            assert done.wait(timeout), f"no {what} within {timeout} s"
        finally:
            watch.cancel()
    return found[0]


def _first_master_claim(c: Controller, dpid: int, since: int) -> Any:
    return c.find("ROLE_REQUEST", since=since, dpid=dpid, role="master")[0]


def test_every_version_one_master_failover_and_takeover(framework, backend, ovs, controllers):
    """Bridges speaking OpenFlow 1.0, 1.4 and 1.5, three controllers: one master each (logs
    and OVSDB), 1.0 warned about once per switch. kill -9 of a master: a successor with a larger
    generation_id (1.4/1.5) or, on 1.0, one that checked the dead master's session was gone (or
    that it was evicted) before claiming. A higher-priority controller then takes every bridge over: the old master
    stops and never programs again; on 1.0 the new master claims only after the old one
    stopped. (The store usually tells the old master first, so it is already SLAVE when the new
    claim arrives and the switch sends no ROLE_STATUS; the partition test below makes sure.)"""
    url = backend.url(backend.hosts)
    cs = [controllers(f"c{i}", framework, url) for i in range(3)]
    ports = [c.port for c in cs]
    ovs.add_bridges([(name, dpid, ports, protocols) for name, dpid, protocols, _ in BRIDGES])
    _start(cs[:1])  # alone at first, so that c0 masters every bridge
    for dpid in DPIDS:
        _confirmed(cs[0], dpid, 0)
    _start(cs[1:])
    masters = wait_settled(cs, DPIDS, SETTLE_TIMEOUT)
    assert set(masters.values()) == {cs[0]}
    for name, dpid, protocols, _ in BRIDGES:
        _ovsdb_agrees(ovs, name, masters[dpid])
        version = protocols.removeprefix("OpenFlow")
        for c in cs:
            up = c.find("SWITCH_UP", dpid=dpid)
            assert up and up[-1]["openflow"] == f"{version[0]}.{version[1]}", up
    for c in cs:
        warnings = c.log_path.read_text().count("speaks OpenFlow 1.0")
        assert warnings == 1, f"{c.name}: {warnings} warnings about the OpenFlow 1.0 switch"
        assert not c.find("SWITCH_UP", dpid=0x14, openflow="1.0")

    # kill -9 c0: every bridge fails over once its session ends (or a detector evicts it).
    victim = cs[0]
    lost = {d: int(victim.role_of(d)["term"]) for d in DPIDS if masters[d] is victim}
    survivors = [c for c in cs if c is not victim]
    marks = {c.name: c.mark() for c in survivors}
    killed_at = victim.kill()
    for dpid, old_term in lost.items():
        new = wait_until(lambda d=dpid: settled(survivors, d), SESSION_TIMEOUT + FAILOVER_SLACK + 5,
                         f"a new master of {dpid:016x}", survivors)
        record = _confirmed(new, dpid, marks[new.name])
        assert int(record["term"]) > old_term, "the term must grow across a failover"
        print(f"\n{framework}/{backend.name} kill -9 failover dpid {dpid:#x}: "
              f"{(record.t - killed_at) * 1000:.0f} ms")
        claim = _first_master_claim(new, dpid, marks[new.name])
        if FENCED[dpid]:
            assert int(claim["generation_id"]) > old_term
        else:
            check = new.find("PREDECESSOR", since=marks[new.name], dpid=dpid, stopped="true")
            assert check and check[0].t <= claim.t, "claimed 1.0 before the check"
            # its session expired, or a failure detector evicted it first
            assert ("session is gone" in check[0]["why"]
                    or "resigned or was evicted" in check[0]["why"]), check[0].fields

    # A priority-10 controller joins: it takes every bridge over.
    masters = wait_settled(survivors, DPIDS, SETTLE_TIMEOUT)
    boss = controllers("c3", framework, url, priority=10)
    for name, _dpid, _protocols, _ in BRIDGES:
        ovs.vsctl("--", "--id=@c", "create", "controller", f'target="{boss.target}"',
                  "max_backoff=1000", "--", "add", "bridge", name, "controller", "@c")
    everyone = [*survivors, boss]
    marks = {c.name: c.mark() for c in everyone}
    _start([boss])
    wait_until(lambda: all(settled(everyone, d) is boss for d in DPIDS), SETTLE_TIMEOUT,
               "the priority controller masters every bridge", everyone)
    for name, dpid, _protocols, fenced in BRIDGES:
        old = masters[dpid]
        new_term = int(_confirmed(boss, dpid, marks[boss.name])["term"])
        stopped = old.wait_for(lambda r, d=dpid: r.matches("MASTERSHIP", dpid=d,
                                                           may_program="false"),
                               SETTLE_TIMEOUT, since=marks[old.name], what="the old master stops")
        claim = _first_master_claim(boss, dpid, marks[boss.name])
        if fenced:
            for status in old.find("ROLE_STATUS", since=marks[old.name], dpid=dpid):
                assert status["reason"] == "master_request", status.fields
                assert int(status["generation_id"]) == new_term, status.fields
        else:
            assert not old.find("ROLE_STATUS", since=marks[old.name], dpid=dpid)
            assert stopped.t <= claim.t, "the 1.0 successor claimed before the old master stopped"
            gate = boss.find("PREDECESSOR", since=marks[boss.name], dpid=dpid, stopped="true")
            assert gate and gate[-1].t <= claim.t
            elected = boss.find("ELECTED", since=marks[boss.name], dpid=dpid)[0]
            print(f"\n{framework}/{backend.name} OpenFlow 1.0 takeover: old master stopped "
                  f"{stopped.t - elected.t:+.3f} s, claim {claim.t - elected.t:+.3f} s after "
                  f"the new one's election ({gate[-1]['why']})")
        assert not old.find("MASTERSHIP", since=stopped.seq, dpid=dpid, may_program="true")
        _ovsdb_agrees(ovs, name, boss)


def test_role_status_stops_a_master_the_store_cannot_reach(framework, backend, ovs,
                                                           controllers, tcp_proxy):
    """A planned leader change the old master cannot hear about from the store: c0 masters an
    OpenFlow 1.4 bridge, then its store connection is black-holed (`hold_on_suspend = false`
    and re-assert every 60 s, so neither a hold nor a refused re-assert can stop it) and c1
    joins with a higher priority. c1 takes over under a newer term at once; the switch sends
    c0 ROLE_STATUS(slave, master request, c1's term) and c0 stops programming in that step,
    long before its session could expire."""
    proxy = tcp_proxy(*backend.address)
    zombie = controllers("c0", framework, backend.url(proxy.address), hold_on_suspend=False,
                         reassert_interval=60.0)
    boss = controllers("c1", framework, backend.url(backend.hosts), priority=10)
    ovs.add_bridge("br1", 1, [zombie.port], "OpenFlow14")
    _start([zombie, boss])  # c1 is no candidate until the switch connects to it
    old_term = int(_confirmed(zombie, 1, 0)["term"])

    mark = zombie.mark()
    proxy.blackhole()
    ovs.vsctl("--", "--id=@c", "create", "controller", f'target="{boss.target}"',
              "--", "add", "bridge", "br1", "controller", "@c")
    succ = _confirmed(boss, 1, 0)
    new_term = int(succ["term"])
    assert new_term > old_term
    status = zombie.wait_for(lambda r: r.matches("ROLE_STATUS", dpid=1, role="slave"),
                             SETTLE_TIMEOUT, since=mark, what="ROLE_STATUS at c0")
    assert int(status["generation_id"]) == new_term and status["reason"] == "master_request"
    stopped = zombie.wait_for(lambda r: r.matches("MASTERSHIP", dpid=1, may_program="false"),
                              SETTLE_TIMEOUT, since=mark, what="c0 stops programming")
    print(f"\n{framework}/{backend.name}: c0 stopped {stopped.t - succ.t:+.3f} s from c1's "
          f"confirmation, because: {stopped['reason']}")
    assert "ROLE_STATUS" in stopped["reason"], (
        f"c0 stopped for another reason first: {stopped['reason']}")
    assert stopped.seq == status.seq + 1, "ROLE_STATUS must stop programming in the same step"
    assert not zombie.find("MASTERSHIP", since=stopped.seq, may_program="true")
    proxy.restore()
    wait_settled([zombie, boss], [1], SETTLE_TIMEOUT)
    _ovsdb_agrees(ovs, "br1", boss)


def test_stale_hint_in_coordctl_and_what_clears_it(backend, ovs, controllers, capsys):
    """A bridge that has seen a generation_id far above the store's terms (as after a move from
    another store) refuses every claim STALE: the leader says why in its log and in its
    Mastership record, `coordctl masters` shows the hint; re-adding the bridge (which resets
    Open vSwitch's role state, unlike set-controller) lets it be mastered, and the hint goes."""
    framework = "os-ken"
    require_framework(framework)
    url = backend.url(backend.hosts)
    probe = RoleProbe()
    try:
        ovs.add_bridge("br1", 1, [probe.port], "OpenFlow13")
        probe.accept()
        assert probe.claim("master", 2**63) == ("reply", 2**63)
    finally:
        probe.close()
    c0 = controllers("c0", framework, url, retry_max=0.5)
    ovs.vsctl("set-controller", "br1", c0.target)  # keeps the switch's generation_id
    _start([c0])
    hint = c0.wait_for(lambda r: r.matches("STALE_HINT", dpid=1), SETTLE_TIMEOUT,
                       what="the STALE hint")
    assert "another coordination store" in hint["hint"], hint.fields
    assert not c0.find("MASTERSHIP", may_program="true")

    def masters_rows() -> list[dict[str, Any]]:
        capsys.readouterr()
        assert coordctl(["--url", url, "--json", "masters"]) == 0
        return json.loads(capsys.readouterr().out)

    record = _wait_record(url, lambda r: bool(r.hint), "Mastership record with a hint")
    assert record.owner == c0.member_id and record.hint == hint["hint"]
    (row,) = masters_rows()
    assert row["master"] == c0.member_id and not row["confirmed"], row
    assert "STALE" in row["hint"] and "re-added" in row["hint"], row
    capsys.readouterr()
    assert coordctl(["--url", url, "masters"]) == 0
    assert "hint" in capsys.readouterr().out.splitlines()[0]

    mark = c0.mark()
    ovs.vsctl("del-br", "br1")
    ovs.add_bridge("br1", 1, [c0.port], "OpenFlow13")
    term = int(_confirmed(c0, 1, mark)["term"])
    _wait_record(url, lambda r: r.term == term and not r.hint, "the confirmed record")
    (row,) = masters_rows()
    assert row["confirmed"] and row["hint"] == "", row
