"""What this controller's own Ryu discovery knows, read once and then followed, never polled.

The switches app raises an event for every switch, port, link and host it finds or loses, and
the sync app follows those. Two things are not covered by events:
- what the switches app learnt before the sync app subscribed (an app that starts later, or
  restarts in the same process): one *scan* of its state covers that;
- a host's addresses: Ryu learns them from ARP and IP packet-ins (`HostState.update_ip`) and
  raises no event. `report_addresses` makes the host table report each new address.

Both run on the switches app's own thread (`LocalScanRequest`, handled there), the only thread
that changes its tables. A scan there sees every change made before it, and every change after
it reaches the sync app as an event queued after the scan's result: nothing is read mid-change
and no later event can be undone by an older scan. Re-scanning every few seconds (the option
`topology_scan_interval`, off by default) costs a read of the whole table per interval, which
grows with the network; it is only a safety net.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..compat import EventBase
from .publisher import LocalHost, LocalSwitch
from .ryu_objects import address_of, is_reserved, link_id, port_record
from .view import LinkId

LOG = logging.getLogger("ryu_integration.topology")

#: Receives one scan: switches (with their ports), links and hosts, as the switches app holds them
ScanSink = Callable[[dict[int, LocalSwitch], set[LinkId], list[LocalHost]], None]


class LocalScanRequest(EventBase):
    """For the switches app's thread: read its tables and hand them to the sync app."""


def scan(sw: Any) -> tuple[dict[int, LocalSwitch], set[LinkId], list[LocalHost]]:
    """The switches app's state now: every connected switch with its ports (reserved ports
    left out), every link it discovered, every host with its addresses. Call it on the
    switches app's thread."""
    switches = {}
    for dpid, dp in list(sw.dps.items()):
        ports = {no: port_record(p) for no, p in list(sw.port_state.get(dpid, {}).items())
                 if not is_reserved(no)}
        switches[dpid] = LocalSwitch(address_of(dp), ports)
    links = {link_id(link) for link in list(sw.links.keys())}
    hosts = [host_of(h) for h in list(sw.hosts.values())]
    return switches, links, hosts


def host_of(host: Any) -> LocalHost:
    """A `LocalHost` from a `switches.Host`."""
    return LocalHost(host.mac, host.port.dpid, host.port.port_no,
                     tuple(host.ipv4) + tuple(host.ipv6))


def install(sw: Any, sink: ScanSink, on_address: Callable[[LocalHost], None]) -> None:
    """Handle `LocalScanRequest` on the switches app's thread: scan and give `sink` the result.
    The first request also makes the host table report new addresses to `on_address` (first,
    so an address is either in that scan or reported after it)."""
    hooked = False

    def handle(ev: LocalScanRequest) -> None:
        nonlocal hooked
        if not hooked:
            hooked = True
            report_addresses(sw, on_address)
        try:
            result = scan(sw)
        except (RuntimeError, KeyError, AttributeError) as exc:  # a table of another shape
            LOG.warning("topology: reading the switches app's state failed: %s: %s",
                        type(exc).__name__, exc)
            return
        sink(*result)

    sw.register_handler(LocalScanRequest, handle)


def report_addresses(sw: Any, on_address: Callable[[LocalHost], None]) -> bool:
    """Make the switches app's host table call `on_address(host)` whenever `update_ip` gives
    a known host an address it did not have (on the switches app's thread, where Ryu calls
    it). Every packet-in from a host calls `update_ip`; one that only repeats an address costs
    two length comparisons. False if the table is not the one this version knows."""
    table = sw.hosts
    base = type(table)
    if getattr(base, "reports_addresses", False):  # installed already: the app restarted in
        table.on_address = on_address              # this process, report to the new one
        return True
    if not (isinstance(table, dict) and hasattr(table, "update_ip")):
        LOG.warning("topology: the switches app's host table is not the one this version "
                    "knows; host addresses are not published")
        return False

    class AddressReportingHostState(base):  # type: ignore[misc, valid-type]
        """`HostState` that reports the addresses it learns."""

        reports_addresses = True
        on_address: Callable[[LocalHost], None]

        def update_ip(self, host: Any, ip_v4: Any = None, ip_v6: Any = None) -> None:
            known = self.get(host.mac)
            before = (len(known.ipv4), len(known.ipv6)) if known is not None else None
            super().update_ip(host, ip_v4=ip_v4, ip_v6=ip_v6)
            known = self.get(host.mac)
            if known is None or (len(known.ipv4), len(known.ipv6)) == before:
                return
            try:
                self.on_address(host_of(known))
            except Exception:  # the switches app's thread must go on whatever we do
                LOG.exception("topology: reporting the addresses of host %s failed", host.mac)

    replacement = AddressReportingHostState()
    replacement.on_address = on_address
    replacement.update(table)
    sw.hosts = replacement
    return True
