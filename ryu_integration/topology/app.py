"""The topology sync app: every controller sees the whole network, standbys included.

Run it next to the mastership app (it requires it, and Ryu's switches app for discovery):

    coord-manager --observe-links --config-file ryu.conf ryu_integration.topology_sync my_app

Thin glue (Faucet-style) around `runtime.TopologyRuntime`, which does the work with the
pure `TopologyView` / `Publisher` / `Janitor`:
- what Ryu's own discovery (`ryu.topology.switches`) reports on this controller goes to the
  publisher; only what concerns switches we master is written to the store;
- `EventMastershipChanged` from the mastership app says which switches we master, under which
  term;
- the store is watched and replayed as `ryu.topology` events (`EventSwitchEnter`,
  `EventLinkAdd`, ...) plus `EventTopologyChanged`, on every controller. With
  `topology_takeover_events` (default) this app is the *only* source of those events: the
  switches app's own events come to it alone, so applications see the global view once, not
  the local discovery twice;
- with `topology_serve_api` (default) `ryu.topology.api.get_switch/get_link/get_host` answer
  from the global view too;
- with `topology_discovery_master_only` (default) LLDP goes out only of switches we master
  (a slave's packet-outs are refused anyway); under os-ken's native hub the discovery loops are
  woken every `topology_lldp_pace` seconds, since their timed waits never time out there.

For applications: `get_topology()` (switches, links, hosts, masters; `.graph()` for networkx),
or the events above. See docs/topology.md.
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

from .. import lifecycle, mastership
from ..compat import (
    PACKAGE,
    EventBase,
    RyuApp,
    app_manager,
    hub,
    ofproto_v1_3,
    set_ev_cls,
    uses_eventlet,
)
from ..courier import Courier
from ..mastership import config
from . import config as topology_config
from . import discovery, local_discovery
from .publisher import Forget, ForgetLink, LocalHost
from .runtime import TopologyRuntime
from .ryu_objects import (
    MARK,
    TOPOLOGY_EVENTS,
    EventTopologyChanged,
    address_of,
    events_for,
    is_reserved,
    link_id,
    port_record,
    ryu_host,
    ryu_link,
    ryu_port,
    ryu_switch,
    tevent,
    tswitches,
)
from .view import Topology, ViewChange

LOG = logging.getLogger("ryu_integration.topology")
app_manager.require_app(f"{PACKAGE}.topology.switches")
app_manager.require_app("ryu_integration.mastership")

_instance: TopologySync | None = None


class _EventForget(EventBase):
    """Private: sent to the switches app, handled on its thread."""

    def __init__(self, forget: Forget) -> None:
        super().__init__()
        self.forget = forget


class TopologySync(RyuApp):
    """Publishes what this controller discovers for its switches; replays the global view."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]
    _EVENTS: ClassVar[list[type]] = [*TOPOLOGY_EVENTS, EventTopologyChanged]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        global _instance
        _instance = self
        mastership.count_records_with(self.record_counts)
        base = config.load(self.CONF)
        self.member_id = base.member_id
        self.settings = topology_config.load(self.CONF, base.publish_mastership)
        self.runtime = TopologyRuntime(self.member_id, self.settings.runtime,
                                       on_changes=self._emit, on_forget=self._forget)
        self.runtime.publish_observer = _publish_lag
        #: What we send the switches app: it sends to us too, so our loop must never wait on it.
        self._courier = Courier(self)
        self._running = False

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> Any:
        """Take the switches app's events over, then start the runtime. The runtime waits
        for the mastership app's coordinator (created in *its* start) before it watches the
        store, so the order in which the two apps start does not matter."""
        thread = super().start()
        self._running = True
        self._courier.start()
        self._take_over()
        self.runtime.start(_coordinator)
        if self.settings.scan_interval > 0:
            self.threads.append(hub.spawn(self._rescanner))
        if self.settings.lldp_pace > 0 and not uses_eventlet():
            self.threads.append(hub.spawn(self._pacer))
        lifecycle.register("topology", self._shutdown)
        LOG.info("topology: member %s syncing (dump file: %s)", self.member_id,
                 self.settings.runtime.dump_file or "none")
        return thread

    def _shutdown(self, deadline: float) -> None:
        """Flush pending writes (if the coordinator is still open) and stop. Records stay in
        the store on purpose: the next master adopts them, or the janitor removes them."""
        self._running = False
        lifecycle.unregister(self._shutdown)
        self.runtime.stop(max(0.1, min(2.0, deadline - time.monotonic())))
        self._courier.stop()

    def stop(self) -> None:
        self._shutdown(time.monotonic() + 2.0)
        super().stop()

    def close(self) -> None:
        self._shutdown(time.monotonic() + 2.0)

    # ---- queries for other apps (any thread) -------------------------------------------------

    def get_topology(self) -> Topology:
        """The global view now: switches, links, hosts, masters (`.graph()` for paths)."""
        return self.runtime.topology()

    def record_counts(self) -> dict[str, int]:
        """Records by kind in the view (the mastership app's `coord_topology_records`)."""
        topo = self.get_topology()
        return {"switch": len(topo.switches), "link": len(topo.links) + len(topo.hidden_links),
                "host": len(topo.hosts), "mastership": len(topo.masters)}

    # ---- the switches app -----------------------------------------------------------------

    @staticmethod
    def _switches() -> Any:
        return app_manager.lookup_service_brick("switches")

    def _take_over(self) -> None:
        """Route the switches app's topology events to this app alone (and ours to everyone
        else), answer the topology API from the view, and keep LLDP to switches we master."""
        sw = self._switches()
        takeover = self.settings.takeover_events
        for ev_cls in TOPOLOGY_EVENTS:
            mine = self.observers.setdefault(ev_cls, {})
            mine.pop(self.name, None)  # never our own observer
            if not takeover:
                mine.clear()  # applications keep the local events; ours would double them
            if sw is None:
                continue
            theirs = sw.observers.setdefault(ev_cls, {})
            if takeover:
                for name in [n for n in theirs if n != self.name]:
                    mine.setdefault(name, set()).update(theirs.pop(name))
            sw.register_observer(ev_cls, self.name)
        if sw is None:
            LOG.warning("topology: no switches app: nothing is discovered on this controller")
            return
        sw.register_handler(_EventForget, self._forget_in_switches)
        # What the switches app learnt before we subscribed, and host addresses from now on
        local_discovery.install(sw, self.runtime.replace_local, self._host_address)
        self._courier.send(sw.name, local_discovery.LocalScanRequest())
        if self.settings.serve_api:
            sw.event_handlers[tevent.EventSwitchRequest] = [self._switch_request]
            sw.event_handlers[tevent.EventLinkRequest] = [self._link_request]
            sw.event_handlers[tevent.EventHostRequest] = [self._host_request]
        if self.settings.discovery_master_only and getattr(sw, "link_discovery", False):
            original = sw.send_lldp_packet

            def send_lldp_if_master(port: Any) -> None:
                if mastership.is_master(port.dpid):
                    original(port)
                    return
                try:  # count it as sent, so the loop keeps its rhythm and links still age
                    sw.ports.lldp_sent(port)
                except KeyError:
                    pass

            sw.send_lldp_packet = send_lldp_if_master
            discovery.install(sw, mastership.is_master)

    def _host_address(self, host: LocalHost) -> None:
        """(switches app's thread) Ryu learnt an address of `host`."""
        self.runtime.host_seen(host.mac, host.dpid, host.port_no, list(host.ips))

    def _datapath_of(self, dpid: int) -> Any:
        sw = self._switches()
        return sw.dps.get(dpid) if sw is not None else None

    def _rescanner(self) -> None:
        """`topology_scan_interval` > 0: re-read Ryu's discovery state now and then (a safety
        net; the state is followed through events)."""
        while self._running:
            hub.sleep(self.settings.scan_interval)
            sw = self._switches()
            if sw is not None and self._running:
                self._courier.send(sw.name, local_discovery.LocalScanRequest())

    def _pacer(self) -> None:
        """os-ken native hub: `hub.Event.wait(timeout)` never times out, so the switches app's
        LLDP and link-ageing loops only run when woken. Wake them regularly."""
        while self._running:
            hub.sleep(self.settings.lldp_pace)
            sw = self._switches()
            if sw is not None and getattr(sw, "link_discovery", False):
                sw.lldp_event.set()
                sw.link_event.set()

    def _forget(self, forget: Forget) -> None:
        """(writer thread) Make the switches app forget a host that moved to another master's
        switch, or a link we dropped with its port: on its own thread (its tables are not ours
        to touch)."""
        sw = self._switches()
        if sw is not None:
            self._courier.send(sw.name, _EventForget(forget))

    @staticmethod
    def _forget_in_switches(ev: _EventForget) -> None:
        """(switches app's thread) Forget the host if it is still where we saw it; forget the
        link (and say so, as Ryu does when a link times out) if Ryu still holds it, so that
        the LLDP that finds it again raises `EventLinkAdd`."""
        sw, forget = TopologySync._switches(), ev.forget
        if sw is None:
            return
        if isinstance(forget, ForgetLink):
            src, src_port, dst, dst_port = forget.link
            link = tswitches.Link(ryu_port(src, None, src_port), ryu_port(dst, None, dst_port))
            if link in sw.links:
                try:
                    sw.links.link_down(link)
                except KeyError:
                    return
                sw.send_event_to_observers(tevent.EventLinkDelete(link))
            return
        host = sw.hosts.get(forget.mac)
        if host is not None and (host.port.dpid, host.port.port_no) == (forget.dpid,
                                                                         forget.port_no):
            sw.hosts.pop(forget.mac, None)

    # ---- local discovery -> publisher -------------------------------------------------------

    @set_ev_cls(tevent.EventSwitchEnter)
    def _switch_enter(self, ev: Any) -> None:
        if getattr(ev, MARK, False):
            return
        dp = ev.switch.dp
        self.runtime.switch_up(dp.id, address_of(dp), [port_record(p) for p in ev.switch.ports])

    @set_ev_cls(tevent.EventSwitchReconnected)
    def _switch_reconnected(self, ev: Any) -> None:
        self._switch_enter(ev)

    @set_ev_cls(tevent.EventSwitchLeave)
    def _switch_leave(self, ev: Any) -> None:
        if not getattr(ev, MARK, False):
            self.runtime.switch_down(ev.switch.dp.id)

    @set_ev_cls([tevent.EventPortAdd, tevent.EventPortModify])
    def _port_up(self, ev: Any) -> None:
        if not getattr(ev, MARK, False) and not is_reserved(ev.port.port_no):
            self.runtime.port_up(ev.port.dpid, port_record(ev.port))

    @set_ev_cls(tevent.EventPortDelete)
    def _port_deleted(self, ev: Any) -> None:
        if not getattr(ev, MARK, False):
            self.runtime.port_deleted(ev.port.dpid, ev.port.port_no)

    @set_ev_cls(tevent.EventLinkAdd)
    def _link_added(self, ev: Any) -> None:
        if not getattr(ev, MARK, False):
            self.runtime.link_added(link_id(ev.link))

    @set_ev_cls(tevent.EventLinkDelete)
    def _link_deleted(self, ev: Any) -> None:
        if not getattr(ev, MARK, False):
            self.runtime.link_deleted(link_id(ev.link))

    @set_ev_cls(tevent.EventHostAdd)
    def _host_added(self, ev: Any) -> None:
        if not getattr(ev, MARK, False):
            host = ev.host
            self.runtime.host_seen(host.mac, host.port.dpid, host.port.port_no,
                                   list(host.ipv4) + list(host.ipv6))

    @set_ev_cls(tevent.EventHostMove)
    def _host_moved(self, ev: Any) -> None:
        if not getattr(ev, MARK, False):
            host = ev.dst
            self.runtime.host_seen(host.mac, host.port.dpid, host.port.port_no,
                                   list(host.ipv4) + list(host.ipv6))

    @set_ev_cls(mastership.EventMastershipChanged)
    def _mastership(self, ev: Any) -> None:
        self.runtime.set_master(ev.dpid, ev.term if ev.may_program else None)
        sw = self._switches()
        if sw is None or not getattr(sw, "link_discovery", False):
            return
        if self.settings.discovery_master_only:
            # LLDP from the switches we master only; the switches app's thread moves the ports
            self._courier.send(sw.name, discovery.ParkingRequest(ev.dpid, ev.may_program))
        elif ev.may_program:
            sw.lldp_event.set()  # discover from the new switch now, not at the next round

    # ---- the view -> applications (runtime's notifier thread) ------------------------------

    def _emit(self, changes: list[ViewChange], resync: bool) -> None:
        port_of = self.runtime.emitted_port
        for change in changes:
            for ev in events_for(change, self._datapath_of, port_of):
                self.send_event_to_observers(ev)
        self.send_event_to_observers(EventTopologyChanged(changes, resync))

    # ---- ryu.topology.api requests, answered from the view (switches app's thread) -----------

    def _switch_request(self, req: Any) -> None:
        topo = self.runtime.topology()
        records = [s for d, s in sorted(topo.switches.items()) if req.dpid in (None, d)]
        switches = [ryu_switch(s, self._datapath_of(s.dpid)) for s in records]
        self.reply_to_request(req, tevent.EventSwitchReply(req.src, switches))

    def _link_request(self, req: Any) -> None:
        topo = self.runtime.topology()
        links = [ryu_link(link, topo.port) for link in topo.links
                 if req.dpid in (None, link.src_dpid)]
        self.reply_to_request(req, tevent.EventLinkReply(req.src, req.dpid, links))

    def _host_request(self, req: Any) -> None:
        topo = self.runtime.topology()
        hosts = [ryu_host(h, topo.port) for h in topo.hosts.values()
                 if req.dpid in (None, h.dpid)]
        self.reply_to_request(req, tevent.EventHostReply(req.src, req.dpid, hosts))


def _coordinator() -> Any:
    return mastership.coordinator()


def _publish_lag(seconds: float) -> None:
    """Into the mastership app's metrics, if it serves them."""
    app = mastership.instance()
    if app is not None and app.metrics is not None:
        app.metrics.published([seconds])


def instance() -> TopologySync | None:
    """The running topology sync app of this process, if any."""
    return _instance


def get_topology() -> Topology:
    """The global view (empty if the sync app is not running in this process)."""
    app = instance()
    return app.get_topology() if app is not None else Topology()
