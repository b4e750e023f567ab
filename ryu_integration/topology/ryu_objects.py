"""Between topology records and `ryu.topology` objects and events (Ryu 4.34 and os-ken alike).

Applications written against `ryu.topology` get the objects they know: `switches.Switch` with a
datapath and `switches.Port`s, `switches.Link`, `switches.Host`, inside the usual
`EventSwitchEnter` / `EventPortAdd` / `EventLinkAdd` / `EventHostAdd` ... events. On a standby,
or for a switch this controller has no connection to, `Switch.dp` is a `RemoteDatapath`: it has
`id`, `address`, `ofproto` and `ofproto_parser`, and refuses to send.

Ryu's Port keeps OpenFlow's `config`/`state` bits; a record keeps only `up`. A port that is not
up comes back as OFPPS_LINK_DOWN (so `is_live()` is right, the cause is not kept).
"""

from __future__ import annotations

import logging
from typing import Any

from coordination.records import Host, Link, Port, Switch

from ..compat import (
    EventBase,
    framework_module,
    ofproto_v1_3,
    ofproto_v1_3_parser,
    register_service,
)
from .view import (
    HostAdded,
    HostMoved,
    HostRemoved,
    LinkAdded,
    LinkRemoved,
    PortAdded,
    PortModified,
    PortRemoved,
    SwitchAdded,
    SwitchRemoved,
    ViewChange,
)

LOG = logging.getLogger("ryu_integration.topology")
register_service("ryu_integration.topology_sync")

tevent: Any = framework_module("topology.event")
tswitches: Any = framework_module("topology.switches")

#: The `ryu.topology` events the sync app raises (and takes over from the switches app).
TOPOLOGY_EVENTS: tuple[type, ...] = (
    tevent.EventSwitchEnter, tevent.EventSwitchLeave, tevent.EventSwitchReconnected,
    tevent.EventPortAdd, tevent.EventPortDelete, tevent.EventPortModify,
    tevent.EventLinkAdd, tevent.EventLinkDelete,
    tevent.EventHostAdd, tevent.EventHostDelete, tevent.EventHostMove,
)
#: Attribute set on every event the sync app raises, so it never mistakes one for a discovery.
MARK = "coordinated"
_NO_MAC = "00:00:00:00:00:00"


class EventTopologyChanged(EventBase):
    """One batch of changes of the global view (every kind, masters included).

    `changes`: `view.ViewChange` values in order; `resync`: the batch is the difference
    after a resynchronisation from a snapshot, not a stream of individual changes.
    """

    def __init__(self, changes: list[ViewChange], resync: bool = False) -> None:
        super().__init__()
        self.changes = changes
        self.resync = resync

    def __repr__(self) -> str:
        return f"EventTopologyChanged({len(self.changes)} changes, resync={self.resync})"


class RemoteDatapath:
    """Stands in for the datapath of a switch this controller is not connected to."""

    def __init__(self, dpid: int, address: str = "") -> None:
        self.id = dpid
        self.address = address
        self.ofproto = ofproto_v1_3
        self.ofproto_parser = ofproto_v1_3_parser
        self.is_active = False

    def send_msg(self, msg: Any) -> bool:
        LOG.warning("topology: not sending %s to %016x: no connection to it from this "
                    "controller", type(msg).__name__, self.id)
        return False

    def __repr__(self) -> str:
        return f"RemoteDatapath({self.id:016x})"


# ---- Ryu -> records ------------------------------------------------------------------------


def port_record(port: Any) -> Port:
    """A record Port from a `switches.Port` or an OFPPort (`up`: link up and not disabled)."""
    name = port.name
    if isinstance(name, bytes):
        name = name.decode("utf-8", errors="replace")
    name = name.rstrip("\x00")
    if hasattr(port, "is_live"):
        up = bool(port.is_live())
    else:
        up = not (port.state & ofproto_v1_3.OFPPS_LINK_DOWN
                  or port.config & ofproto_v1_3.OFPPC_PORT_DOWN)
    return Port(port_no=port.port_no, name=name, hw_addr=port.hw_addr or "", up=up)


def address_of(dp: Any) -> str:
    address = getattr(dp, "address", None)
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "")


def is_reserved(port_no: int) -> bool:
    return port_no > ofproto_v1_3.OFPP_MAX


def link_id(link: Any) -> tuple[int, int, int, int]:
    return (link.src.dpid, link.src.port_no, link.dst.dpid, link.dst.port_no)


# ---- records -> Ryu ------------------------------------------------------------------------


def ryu_port(dpid: int, port: Port | None, port_no: int | None = None) -> Any:
    """A `switches.Port`; `port` None gives a bare one (number only) for a port not known."""
    if port is None:
        port = Port(port_no or 0)
    ofpport = ofproto_v1_3_parser.OFPPort(
        port_no=port.port_no, hw_addr=port.hw_addr or _NO_MAC, name=port.name.encode(),
        config=0, state=0 if port.up else ofproto_v1_3.OFPPS_LINK_DOWN, curr=0, advertised=0,
        supported=0, peer=0, curr_speed=0, max_speed=0)
    return tswitches.Port(dpid, ofproto_v1_3, ofpport)


def ryu_switch(record: Switch, dp: Any | None) -> Any:
    switch = tswitches.Switch(dp if dp is not None else RemoteDatapath(record.dpid,
                                                                       record.address))
    for port in record.ports:
        if not is_reserved(port.port_no):
            switch.ports.append(ryu_port(record.dpid, port))
    return switch


def ryu_link(link: Link, port_of: Any) -> Any:
    """`port_of(dpid, port_no) -> Port | None` looks ports up in the view."""
    src = ryu_port(link.src_dpid, port_of(link.src_dpid, link.src_port), link.src_port)
    dst = ryu_port(link.dst_dpid, port_of(link.dst_dpid, link.dst_port), link.dst_port)
    return tswitches.Link(src, dst)


def ryu_host(host: Host, port_of: Any) -> Any:
    out = tswitches.Host(host.mac, ryu_port(host.dpid, port_of(host.dpid, host.port_no),
                                            host.port_no))
    out.ipv4 = [ip for ip in host.ips if ":" not in ip]
    out.ipv6 = [ip for ip in host.ips if ":" in ip]
    return out


def events_for(change: ViewChange, datapath_of: Any, port_of: Any) -> list[Any]:
    """The `ryu.topology` events for one view change (none for changes Ryu has no event for:
    address updates, host address updates, mastership; `EventTopologyChanged` carries those).
    `datapath_of(dpid)` gives this controller's Datapath or None."""
    ev: Any
    if isinstance(change, SwitchAdded | SwitchRemoved):
        switch = ryu_switch(change.switch, datapath_of(change.switch.dpid))
        cls = tevent.EventSwitchEnter if isinstance(change, SwitchAdded) else tevent.EventSwitchLeave
        ev = cls(switch)
    elif isinstance(change, PortAdded):
        ev = tevent.EventPortAdd(ryu_port(change.dpid, change.port))
    elif isinstance(change, PortRemoved):
        ev = tevent.EventPortDelete(ryu_port(change.dpid, change.port))
    elif isinstance(change, PortModified):
        ev = tevent.EventPortModify(ryu_port(change.dpid, change.port))
    elif isinstance(change, LinkAdded):
        ev = tevent.EventLinkAdd(ryu_link(change.link, port_of))
    elif isinstance(change, LinkRemoved):
        ev = tevent.EventLinkDelete(ryu_link(change.link, port_of))
    elif isinstance(change, HostAdded):
        ev = tevent.EventHostAdd(ryu_host(change.host, port_of))
    elif isinstance(change, HostRemoved):
        ev = tevent.EventHostDelete(ryu_host(change.host, port_of))
    elif isinstance(change, HostMoved):
        ev = tevent.EventHostMove(src=ryu_host(change.previous, port_of),
                                  dst=ryu_host(change.host, port_of))
    else:
        return []
    setattr(ev, MARK, True)
    return [ev]
