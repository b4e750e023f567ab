"""LLDP only out of the switches this controller masters, at the cost of those switches alone.

Ryu's switches app sends LLDP out of every port it knows, one port every `LLDP_SEND_GUARD`
(50 ms), and a controller knows every port of every switch connected to it, slave or not. A
slave's packet-outs are refused by the switch, so skipping the send is not enough: the loop still
waits 50 ms per port, and with N switches of two ports each a round takes 2N x 50 ms (100 s at
N = 1,000), ten times Ryu's own 10 s link timeout: links age out and flap.

So the ports of switches we do not master are *parked*: kept aside from the LLDP schedule (the
switches app's `PortDataState`), with their state (up/down) still tracked, and put back, first in
line, when we become the switch's master. The LLDP round then walks our own share of ports. Park
and unpark run on the switches app's own thread (`ParkingRequest` events), as every other change
of its port table does.

A share can still be large (667 ports each for 3 controllers and 2,000 ports): the pause
between two sends is shortened so that a round over the table fits in a quarter of Ryu's link
timeout (`LINK_TIMEOUT`), never longer than Ryu's own 50 ms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..compat import EventBase

LOG = logging.getLogger("ryu_integration.topology")
#: A round of LLDP over the port table must fit in this fraction of the link timeout.
ROUND_SHARE = 0.25


class ParkingRequest(EventBase):
    """For the switches app's thread: park (`mastered` False) or unpark a switch's ports."""

    def __init__(self, dpid: int, mastered: bool) -> None:
        super().__init__()
        self.dpid = dpid
        self.mastered = mastered


def pace(sw: Any, ports: int) -> None:
    """Set the switches app's pause between two LLDP sends for a table of `ports` ports."""
    default = type(sw).__dict__.get("LLDP_SEND_GUARD", getattr(sw, "LLDP_SEND_GUARD", 0.05))
    budget = ROUND_SHARE * float(getattr(sw, "LINK_TIMEOUT", 10.0))
    sw.LLDP_SEND_GUARD = min(default, budget / max(1, ports))


def install(sw: Any, is_master: Callable[[int], bool]) -> None:
    """Replace the switches app's port table with one that parks the ports of switches
    `is_master` denies, and handle `ParkingRequest` events on the switches app's thread."""
    base = type(sw.ports)
    if getattr(base, "parks_ports", False):
        return  # installed already (the app restarted in this process)
    if not all(hasattr(sw.ports, name) for name in ("add_port", "del_port", "set_down")):
        LOG.warning("topology: the switches app's port table is not the one this version "
                    "knows; LLDP goes out of every switch's ports")
        return

    class ParkingPortData(base):  # type: ignore[misc, valid-type]
        """`PortDataState` that keeps the ports of switches we do not master out of the LLDP
        schedule (`parked`) while answering for them as before."""

        parks_ports = True

        def __init__(self) -> None:
            super().__init__()
            self.parked: dict[Any, Any] = {}  # port -> lldp_data

        def add_port(self, port: Any, lldp_data: Any) -> None:
            if not is_master(port.dpid) and port not in self:
                self.parked[port] = lldp_data
                return
            super().add_port(port, lldp_data)
            pace(sw, len(self))

        def del_port(self, port: Any) -> None:
            if self.parked.pop(port, None) is None:
                super().del_port(port)
                pace(sw, len(self))

        def set_down(self, port: Any) -> bool:
            if port in self.parked:
                return bool(port.is_down())
            return bool(super().set_down(port))

        def lldp_sent(self, port: Any) -> Any:
            if port in self.parked:
                raise KeyError(port)  # as for a port the table does not hold: nothing sent
            return super().lldp_sent(port)

        def park(self, dpid: int) -> int:
            ports = [p for p in self if p.dpid == dpid]
            for port in ports:
                self.parked[port] = self[port].lldp_data
                super().del_port(port)
            return len(ports)

        def unpark(self, dpid: int) -> int:
            ports = [p for p in self.parked if p.dpid == dpid]
            for port in ports:
                super().add_port(port, self.parked.pop(port))  # no timestamp: sent first
            return len(ports)

    table = ParkingPortData()
    for port in list(sw.ports):
        table.add_port(port, sw.ports[port].lldp_data)
    sw.ports = table

    def handle(ev: ParkingRequest) -> None:
        moved = table.unpark(ev.dpid) if ev.mastered else table.park(ev.dpid)
        pace(sw, len(table))
        if moved:
            LOG.debug("topology: LLDP %s %d ports of %016x", "resumed on" if ev.mastered
                      else "parked", moved, ev.dpid)
            sw.lldp_event.set()

    sw.register_handler(ParkingRequest, handle)
