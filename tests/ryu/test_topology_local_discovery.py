"""Reading and following Ryu's own discovery state without polling: the one scan, and the
host table that reports new addresses.

Needs Ryu or os-ken importable (real `switches.HostState`, `Port`, `Link`); skipped otherwise.
"""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace
from typing import Any

import pytest

if not any(importlib.util.find_spec(p) for p in ("ryu", "os_ken")):
    pytest.skip("neither ryu nor os-ken is installed", allow_module_level=True)

from coordination.records import Port
from ryu_integration.topology import local_discovery
from ryu_integration.topology import ryu_objects as tr
from ryu_integration.topology.publisher import LocalHost, LocalSwitch

MAC = "00:00:00:00:00:01"
P1 = Port(1, "s1-eth1", "aa:bb:cc:dd:ee:01")
P2 = Port(1, "s2-eth1", "aa:bb:cc:dd:ee:02")


def switches_app() -> Any:
    """The parts of Ryu's switches app the module reads, with Ryu's own table classes."""
    s1, s2 = tr.ryu_port(1, P1), tr.ryu_port(2, P2)
    local = tr.ryu_port(1, Port(0xFFFFFFFE, "s1"))  # OFPP_LOCAL: reserved, left out
    links = tr.tswitches.LinkState()
    links.update_link(s1, s2)
    hosts = tr.tswitches.HostState()
    hosts.add(tr.tswitches.Host(MAC, s1))
    handlers: dict[type, list[Any]] = {}
    return SimpleNamespace(
        dps={1: SimpleNamespace(address=("127.0.0.1", 5001)),
             2: SimpleNamespace(address=("127.0.0.1", 5002))},
        port_state={1: {1: s1, local.port_no: local}, 2: {1: s2}},
        links=links, hosts=hosts, handlers=handlers,
        register_handler=lambda cls, fn: handlers.setdefault(cls, []).append(fn))


def test_scan_reads_switches_links_and_hosts() -> None:
    switches, links, hosts = local_discovery.scan(switches_app())
    assert switches == {1: LocalSwitch("127.0.0.1:5001", {1: P1}),
                        2: LocalSwitch("127.0.0.1:5002", {1: P2})}
    assert links == {(1, 1, 2, 1)}
    assert hosts == [LocalHost(MAC, 1, 1, ())]


def test_host_table_reports_new_addresses_only() -> None:
    sw = switches_app()
    seen: list[LocalHost] = []
    assert local_discovery.report_addresses(sw, seen.append)
    host = sw.hosts[MAC]
    sw.hosts.update_ip(host, ip_v4="10.0.0.1")
    sw.hosts.update_ip(host, ip_v4="10.0.0.1")  # Ryu calls it on every packet-in
    sw.hosts.update_ip(host, ip_v6="fe80::1")
    sw.hosts.update_ip(tr.tswitches.Host("00:00:00:00:00:99", host.port), ip_v4="10.0.0.9")
    assert [h.ips for h in seen] == [("10.0.0.1",), ("10.0.0.1", "fe80::1")]
    assert {(h.mac, h.dpid, h.port_no) for h in seen} == {(MAC, 1, 1)}
    sw.hosts.add(tr.tswitches.Host("00:00:00:00:00:02", host.port))  # still Ryu's table
    assert set(sw.hosts) == {MAC, "00:00:00:00:00:02"} and sw.hosts.get_by_dpid(1)


def test_installing_again_reports_to_the_new_callback() -> None:
    sw = switches_app()
    first: list[LocalHost] = []
    second: list[LocalHost] = []
    local_discovery.report_addresses(sw, first.append)
    local_discovery.report_addresses(sw, second.append)
    sw.hosts.update_ip(sw.hosts[MAC], ip_v4="10.0.0.1")
    assert (first, [h.ips for h in second]) == ([], [("10.0.0.1",)])


def test_a_failing_callback_never_reaches_the_switches_app() -> None:
    sw = switches_app()

    def broken(host: LocalHost) -> None:
        raise RuntimeError("boom")

    local_discovery.report_addresses(sw, broken)
    sw.hosts.update_ip(sw.hosts[MAC], ip_v4="10.0.0.1")
    assert sw.hosts[MAC].ipv4 == ["10.0.0.1"]


def test_an_unknown_host_table_is_left_alone() -> None:
    sw = SimpleNamespace(hosts=object())
    table = sw.hosts
    assert not local_discovery.report_addresses(sw, print)
    assert sw.hosts is table


def test_scan_request_hooks_the_host_table_first_then_scans() -> None:
    sw = switches_app()
    scans: list[tuple[Any, ...]] = []
    seen: list[LocalHost] = []
    local_discovery.install(sw, lambda *result: scans.append(result), seen.append)
    (handle,) = sw.handlers[local_discovery.LocalScanRequest]
    handle(local_discovery.LocalScanRequest())
    assert len(scans) == 1 and scans[0][2] == [LocalHost(MAC, 1, 1, ())]
    sw.hosts.update_ip(sw.hosts[MAC], ip_v4="10.0.0.1")
    handle(local_discovery.LocalScanRequest())
    assert [h.ips for h in seen] == [("10.0.0.1",)]
    assert scans[1][2] == [LocalHost(MAC, 1, 1, ("10.0.0.1",))]


def test_a_scan_of_a_table_of_another_shape_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    sw = switches_app()
    del sw.port_state
    scans: list[tuple[Any, ...]] = []
    local_discovery.install(sw, lambda *result: scans.append(result), print)
    sw.handlers[local_discovery.LocalScanRequest][0](local_discovery.LocalScanRequest())
    assert scans == [] and "reading the switches app's state failed" in caplog.text
