"""Records <-> ryu.topology objects and events, and the sync app's event takeover.

Needs Ryu or os-ken importable (no switch, no store); skipped otherwise.
"""

from __future__ import annotations

import importlib.util
import threading
from typing import Any

import pytest

if not any(importlib.util.find_spec(p) for p in ("ryu", "os_ken")):
    pytest.skip("neither ryu nor os-ken is installed", allow_module_level=True)

from coordination.records import Host, Link, Mastership, Port, Switch
from ryu_integration.topology import ryu_objects as tr
from ryu_integration.topology.view import (
    HostAdded,
    HostMoved,
    HostRemoved,
    HostUpdated,
    LinkAdded,
    LinkRemoved,
    MasterChanged,
    PortAdded,
    PortModified,
    PortRemoved,
    SwitchAdded,
    SwitchRemoved,
)

SW = Switch(owner="c1", term=3, dpid=1, address="127.0.0.1:5000",
            ports=(Port(1, "s1-eth1", "aa:bb:cc:dd:ee:01"), Port(2, "s1-eth2", up=False),
                   Port(0xFFFFFFFE, "s1")))
LINK = Link(owner="c1", term=3, src_dpid=1, src_port=1, dst_dpid=2, dst_port=1)
HOST = Host(owner="c1", term=3, mac="00:00:00:00:00:01", ips=("10.0.0.1", "fe80::1"), dpid=1,
            port_no=1)


def port_of(dpid: int, port_no: int) -> Port | None:
    return next((p for p in SW.ports if p.port_no == port_no), None) if dpid == 1 else None


def test_ports_round_trip_and_state() -> None:
    ryu_port = tr.ryu_port(1, SW.ports[0])
    assert (ryu_port.dpid, ryu_port.port_no, ryu_port.hw_addr) == (1, 1, "aa:bb:cc:dd:ee:01")
    assert ryu_port.is_live() and ryu_port.to_dict()["name"] == "s1-eth1"
    assert tr.port_record(ryu_port) == SW.ports[0]
    down = tr.ryu_port(1, SW.ports[1])
    assert not down.is_live() and tr.port_record(down) == Port(2, "s1-eth2",
                                                              "00:00:00:00:00:00", up=False)
    bare = tr.ryu_port(5, None, 7)
    assert (bare.dpid, bare.port_no) == (5, 7)


def test_switch_link_host_objects() -> None:
    switch = tr.ryu_switch(SW, None)
    assert isinstance(switch.dp, tr.RemoteDatapath) and switch.dp.id == 1
    assert [p.port_no for p in switch.ports] == [1, 2]  # LOCAL is reserved, left out
    assert switch.to_dict()["dpid"] == "0000000000000001"
    assert switch.dp.send_msg(object()) is False
    link = tr.ryu_link(LINK, port_of)
    assert tr.link_id(link) == (1, 1, 2, 1) and link.src.name == b"s1-eth1"
    host = tr.ryu_host(HOST, port_of)
    assert host.ipv4 == ["10.0.0.1"] and host.ipv6 == ["fe80::1"] and host.port.port_no == 1
    assert tr.address_of(type("Dp", (), {"address": ("10.1.1.1", 6653)})()) == "10.1.1.1:6653"


def test_events_for_each_change() -> None:
    moved = Host(owner="c1", term=3, mac=HOST.mac, dpid=1, port_no=2)
    cases = [
        (SwitchAdded(SW), tr.tevent.EventSwitchEnter),
        (SwitchRemoved(SW), tr.tevent.EventSwitchLeave),
        (PortAdded(1, SW.ports[0]), tr.tevent.EventPortAdd),
        (PortRemoved(1, SW.ports[0]), tr.tevent.EventPortDelete),
        (PortModified(1, SW.ports[1], SW.ports[0]), tr.tevent.EventPortModify),
        (LinkAdded(LINK), tr.tevent.EventLinkAdd),
        (LinkRemoved(LINK), tr.tevent.EventLinkDelete),
        (HostAdded(HOST), tr.tevent.EventHostAdd),
        (HostRemoved(HOST), tr.tevent.EventHostDelete),
        (HostMoved(moved, HOST), tr.tevent.EventHostMove),
    ]
    for change, cls in cases:
        (ev,) = tr.events_for(change, lambda dpid: None, port_of)
        assert type(ev) is cls and getattr(ev, tr.MARK)
    (move,) = tr.events_for(HostMoved(moved, HOST), lambda dpid: None, port_of)
    assert (move.src.port.port_no, move.dst.port.port_no) == (1, 2)
    assert tr.events_for(HostUpdated(HOST, moved), lambda d: None, port_of) == []
    assert tr.events_for(MasterChanged(1, Mastership(owner="c", term=1, dpid=1), None),
                         lambda d: None, port_of) == []
    real_dp = object()
    (enter,) = tr.events_for(SwitchAdded(SW), lambda dpid: real_dp, port_of)
    assert enter.switch.dp is real_dp


class _Brick:
    """Just what `_take_over` touches on an app."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.observers: dict[type, dict[str, set[Any]]] = {}
        self.event_handlers: dict[type, list[Any]] = {}
        self.link_discovery = True
        self.sent: list[Any] = []
        self.ports = self

    def register_observer(self, ev_cls: type, name: str, states: Any = None) -> None:
        self.observers.setdefault(ev_cls, {}).setdefault(name, set()).update(states or set())

    def send_lldp_packet(self, port: Any) -> None:
        self.sent.append(port)

    def lldp_sent(self, port: Any) -> None:
        self.sent.append(("counted", port))

    def register_handler(self, ev_cls: type, handler: Any) -> None:
        self.event_handlers.setdefault(ev_cls, []).append(handler)


@pytest.mark.parametrize("takeover", [True, False])
def test_take_over_routes_events_and_guards_lldp(monkeypatch, takeover: bool) -> None:
    from ryu_integration import mastership, topology_sync

    switches, app = _Brick("switches"), _Brick("TopologySync")
    ev_cls = tr.tevent.EventLinkAdd
    # what _update_bricks leaves: both bricks list the event, so everyone observes both
    for brick in (switches, app):
        for name in ("TopologySync", "my_app"):
            brick.register_observer(ev_cls, name)
    app.settings = type("S", (), {"takeover_events": takeover, "serve_api": True,
                                  "discovery_master_only": True})()
    app._switch_request = app._link_request = app._host_request = object()
    app._forget_in_switches = object()
    app._switches = lambda: switches
    app.runtime = type("R", (), {"replace_local": object()})()
    app._host_address = object()
    sent: list[tuple[str, Any]] = []
    app._courier = type("C", (), {"send": lambda self, name, ev: sent.append((name, ev))})()
    monkeypatch.setattr(mastership, "is_master", lambda dpid: dpid == 1)
    topology_sync.TopologySync._take_over(app)  # type: ignore[arg-type]
    # one scan of what the switches app learnt before, on its own thread
    from ryu_integration.topology import local_discovery
    assert [(name, type(ev)) for name, ev in sent] == [("switches",
                                                        local_discovery.LocalScanRequest)]
    assert len(switches.event_handlers[local_discovery.LocalScanRequest]) == 1
    if takeover:  # local discoveries go to the sync app alone, applications get ours
        assert set(switches.observers[ev_cls]) == {"TopologySync"}
        assert set(app.observers[ev_cls]) == {"my_app"}
    else:  # applications keep the local events, and get none from us (no doubles)
        assert set(switches.observers[ev_cls]) == {"TopologySync", "my_app"}
        assert set(app.observers[ev_cls]) == set()
    assert switches.event_handlers[tr.tevent.EventLinkRequest] == [app._link_request]
    one, two = type("P", (), {"dpid": 1})(), type("P", (), {"dpid": 2})()
    switches.send_lldp_packet(one)
    switches.send_lldp_packet(two)
    assert switches.sent == [one, ("counted", two)]  # LLDP only out of switches we master


def test_forget_host_runs_in_the_switches_app_and_only_if_still_there(monkeypatch) -> None:
    from ryu_integration.topology import app as topology_sync
    from ryu_integration.topology.publisher import ForgetHost

    switches = _Brick("switches")
    port = tr.ryu_port(1, Port(3))
    switches.hosts = {"00:00:00:00:00:01": tr.tswitches.Host("00:00:00:00:00:01", port),
                      "00:00:00:00:00:02": tr.tswitches.Host("00:00:00:00:00:02", port)}
    monkeypatch.setattr(topology_sync.TopologySync, "_switches", staticmethod(lambda: switches))
    forget = topology_sync.TopologySync._forget_in_switches
    forget(topology_sync._EventForget(ForgetHost("00:00:00:00:00:01", 1, 3)))
    forget(topology_sync._EventForget(ForgetHost("00:00:00:00:00:02", 1, 4)))  # moved on
    assert set(switches.hosts) == {"00:00:00:00:00:02"}


def test_forget_link_makes_the_next_lldp_news_again(monkeypatch) -> None:
    """A link the publisher dropped with its port goes from Ryu's table too (with the event
    Ryu raises when a link times out), so the LLDP that finds it again raises EventLinkAdd."""
    from ryu_integration.topology import app as topology_sync
    from ryu_integration.topology.publisher import ForgetLink

    switches = _Brick("switches")
    switches.links = tr.tswitches.LinkState()
    into = (tr.ryu_port(2, Port(2)), tr.ryu_port(1, Port(1)))  # 2:2 -> 1:1, reverse unseen
    switches.links.update_link(*into)
    switches.links.update_link(tr.ryu_port(3, Port(1)), tr.ryu_port(1, Port(2)))
    events: list[Any] = []
    switches.send_event_to_observers = events.append
    monkeypatch.setattr(topology_sync.TopologySync, "_switches", staticmethod(lambda: switches))
    forget = topology_sync.TopologySync._forget_in_switches
    forget(topology_sync._EventForget(ForgetLink((2, 2, 1, 1))))
    forget(topology_sync._EventForget(ForgetLink((2, 2, 1, 1))))  # gone already: nothing
    assert [tr.link_id(link) for link in switches.links] == [(3, 1, 1, 2)]
    assert [(type(ev), tr.link_id(ev.link)) for ev in events] == [
        (tr.tevent.EventLinkDelete, (2, 2, 1, 1))]
    assert tr.tswitches.Link(*into) not in switches.links  # Ryu's `link not in self.links`


def test_lldp_schedule_holds_only_the_ports_of_switches_we_master() -> None:
    """Ports of switches we do not master are parked out of the LLDP loop (which waits 50 ms
    per port) and come back first in line when we become master; their up/down state and
    removal still work while parked."""
    from ryu_integration.topology import discovery

    masters = {1}
    sw = _Brick("switches")
    sw.ports = tr.tswitches.PortDataState()
    sw.lldp_event = threading.Event()
    discovery.install(sw, lambda dpid: dpid in masters)
    (handle,) = sw.event_handlers[discovery.ParkingRequest]
    mine, theirs, gone = tr.ryu_port(1, Port(1)), tr.ryu_port(2, Port(1)), tr.ryu_port(2, Port(2))
    for port in (mine, theirs, gone):
        sw.ports.add_port(port, b"lldp")
    assert list(sw.ports) == [mine]
    with pytest.raises(KeyError):
        sw.ports.lldp_sent(theirs)  # what send_lldp_packet does: nothing is sent
    assert sw.ports.set_down(theirs) is False
    sw.ports.del_port(gone)

    masters.add(2)
    handle(discovery.ParkingRequest(2, True))
    assert list(sw.ports) == [theirs, mine] and sw.lldp_event.is_set()
    assert sw.ports[theirs].timestamp is None  # sent at the next turn of the loop
    masters.discard(1)
    handle(discovery.ParkingRequest(1, False))
    assert list(sw.ports) == [theirs]
    discovery.install(sw, lambda dpid: True)  # idempotent
    assert list(sw.ports) == [theirs]
    # a round over the table fits in a quarter of the link timeout, never slower than Ryu's
    discovery.pace(sw, 1)
    assert sw.LLDP_SEND_GUARD == 0.05
    discovery.pace(sw, 1000)
    assert sw.LLDP_SEND_GUARD * 1000 <= 10.0 / 4
