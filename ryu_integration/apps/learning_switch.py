"""Ryu's simple_switch_13, ported onto the mastership guard.

    coord-manager --config-file ryu.conf ryu_integration.apps.learning_switch

Run it on three controllers against the same switches: only each switch's master answers
packet-ins and installs flows (slaves get no packet-ins by OpenFlow 1.3's default asynchronous
configuration anyway, but a slave must not program the switch even when it does get one, e.g.
while EQUAL). The guard is the decorator `@only_master` and `send_if_master()`.

On promotion (`EventMastershipChanged` with `may_program`), the new master re-syncs the switch,
since it cannot know what the previous master left half done (ONOS-3509): it installs the
table-miss entry (replacing whatever sat at priority 0 with an empty match, e.g. Open vSwitch's
NORMAL flow), then deletes every flow the app learned -- they carry `LEARNED_COOKIE`, whichever
controller installed them -- and MACs are learned again from the next packets. In that order
the table is never without its table-miss entry, so no frame is dropped while it re-syncs
(deleting everything first dropped the frames that came in between, fail-mode secure).

Options, group `[learning_switch]`:
- `flow_idle_timeout` (s, default 0 = never): learned flows expire when idle, with
  OFPFF_SEND_FLOW_REM so the master forgets the MAC too.
- `trace` (default false): log every packet-in, port-status and flow-removed this controller
  receives (master or not), and the switch's asynchronous configuration for this connection
  (OFPT_GET_ASYNC) at each role change. Used by the integration tests to check OF1.3 defaults.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from ..compat import (
    MAIN_DISPATCHER,
    RyuApp,
    cfg,
    ether_types,
    ethernet,
    ofp_event,
    ofproto_v1_3,
    packet,
    set_ev_cls,
)
from ..mastership import EventMastershipChanged, instance, only_master, send_if_master

cfg.CONF.register_opts([
    cfg.IntOpt("flow_idle_timeout", default=0, min=0,
               help="Seconds before an idle learned flow expires (0: never)."),
    cfg.BoolOpt("trace", default=False,
                help="Log every async message received and the async config per role change."),
], group="learning_switch")


#: The cookie of every flow the app learns (the table-miss entry has cookie 0), so that a new
#: master can delete exactly those, whoever installed them.
LEARNED_COOKIE = int.from_bytes(b"learnsw\0", "big")
COOKIE_MASK = 0xFFFF_FFFF_FFFF_FFFF


class LearningSwitch(RyuApp):
    """A MAC-learning switch in which only the switch's master acts."""

    OFP_VERSIONS: ClassVar[list[int]] = [ofproto_v1_3.OFP_VERSION]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.mac_to_port: dict[int, dict[str, int]] = {}
        #: (dpid, barrier xid) -> term of a resync waiting for the switch to confirm it
        self._resyncs: dict[tuple[int, int], int] = {}
        options = self.CONF.learning_switch
        self.idle_timeout = options.flow_idle_timeout
        self.trace = options.trace

    def _member(self) -> str:
        app = instance()
        return app.member_id if app is not None else "?"

    # ---- mastership ----------------------------------------------------------------------

    @set_ev_cls(EventMastershipChanged)
    def _mastership_changed(self, ev: EventMastershipChanged) -> None:
        dp = ev.datapath
        if dp is None:
            self.mac_to_port.pop(ev.dpid, None)
            return
        if self.trace and ev.role in ("master", "slave"):
            dp.send_msg(dp.ofproto_parser.OFPGetAsyncRequest(dp))
        if not ev.may_program:
            self.mac_to_port.pop(ev.dpid, None)
            return
        # Promoted: the table-miss entry first, then forget every learned flow.
        ofp, parser = dp.ofproto, dp.ofproto_parser
        self.mac_to_port[ev.dpid] = {}
        actions = [parser.OFPActionOutput(ofp.OFPP_CONTROLLER, ofp.OFPCML_NO_BUFFER)]
        self._add_flow(dp, 0, parser.OFPMatch(), actions, cookie=0)
        send_if_master(dp, parser.OFPFlowMod(
            datapath=dp, command=ofp.OFPFC_DELETE, table_id=ofp.OFPTT_ALL,
            cookie=LEARNED_COOKIE, cookie_mask=COOKIE_MASK,
            out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, match=parser.OFPMatch()))
        # The resync is in effect once the switch has applied both flow-mods; a barrier tells
        # us when; until its reply, traffic may still meet the old learned flows.
        barrier = parser.OFPBarrierRequest(dp)
        if send_if_master(dp, barrier):
            self._resyncs[(ev.dpid, barrier.xid)] = ev.term

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier_reply(self, ev: Any) -> None:
        dpid = ev.msg.datapath.id
        term = self._resyncs.pop((dpid, ev.msg.xid), None)
        if term is not None:
            self.logger.info("LEARNING_SWITCH dpid=%016x member=%s resynced term=%d t=%.6f",
                             dpid, self._member(), term, time.time())

    # ---- the switch ------------------------------------------------------------------------

    def _add_flow(self, dp: Any, priority: int, match: Any, actions: list[Any],
                  buffer_id: int | None = None, idle_timeout: int = 0,
                  cookie: int = LEARNED_COOKIE) -> bool:
        ofp, parser = dp.ofproto, dp.ofproto_parser
        inst = [parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions)]
        kwargs: dict[str, Any] = {"cookie": cookie}
        if buffer_id is not None and buffer_id != ofp.OFP_NO_BUFFER:
            kwargs["buffer_id"] = buffer_id
        if idle_timeout:
            kwargs.update(idle_timeout=idle_timeout, flags=ofp.OFPFF_SEND_FLOW_REM)
        return send_if_master(dp, parser.OFPFlowMod(datapath=dp, priority=priority, match=match,
                                                    instructions=inst, **kwargs))

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    @only_master
    def _packet_in(self, ev: Any) -> None:
        msg = ev.msg
        dp = msg.datapath
        ofp, parser = dp.ofproto, dp.ofproto_parser
        in_port = msg.match["in_port"]
        eth = packet.Packet(msg.data).get_protocols(ethernet.ethernet)[0]
        if eth.ethertype == ether_types.ETH_TYPE_LLDP:
            return
        table = self.mac_to_port.setdefault(dp.id, {})
        table[eth.src] = in_port
        out_port = table.get(eth.dst, ofp.OFPP_FLOOD)
        actions = [parser.OFPActionOutput(out_port)]
        if out_port != ofp.OFPP_FLOOD:
            match = parser.OFPMatch(in_port=in_port, eth_dst=eth.dst, eth_src=eth.src)
            if msg.buffer_id != ofp.OFP_NO_BUFFER:
                self._add_flow(dp, 1, match, actions, msg.buffer_id, self.idle_timeout)
                return
            self._add_flow(dp, 1, match, actions, idle_timeout=self.idle_timeout)
        data = msg.data if msg.buffer_id == ofp.OFP_NO_BUFFER else None
        send_if_master(dp, parser.OFPPacketOut(datapath=dp, buffer_id=msg.buffer_id,
                                               in_port=in_port, actions=actions, data=data))

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    @only_master
    def _flow_removed(self, ev: Any) -> None:
        msg = ev.msg
        src = msg.match.get("eth_src")
        table = self.mac_to_port.get(msg.datapath.id, {})
        if src and table.get(src) == msg.match.get("in_port"):
            del table[src]

    # ---- tracing (every role) ------------------------------------------------------------

    def _trace(self, what: str, dp: Any, **fields: Any) -> None:
        if not self.trace:
            return
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        self.logger.info("%s dpid=%016x member=%s %s t=%.6f", what, dp.id, self._member(), extra,
                         time.time())

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _trace_packet_in(self, ev: Any) -> None:
        self._trace("PACKET_IN", ev.msg.datapath, in_port=ev.msg.match["in_port"])

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _trace_port_status(self, ev: Any) -> None:
        self._trace("PORT_STATUS", ev.msg.datapath, reason=ev.msg.reason, port=ev.msg.desc.port_no)

    @set_ev_cls(ofp_event.EventOFPFlowRemoved, MAIN_DISPATCHER)
    def _trace_flow_removed(self, ev: Any) -> None:
        self._trace("FLOW_REMOVED", ev.msg.datapath, reason=ev.msg.reason)

    @set_ev_cls(ofp_event.EventOFPGetAsyncReply, MAIN_DISPATCHER)
    def _trace_async(self, ev: Any) -> None:
        m = ev.msg
        self._trace("ASYNC_CONFIG", m.datapath,
                    packet_in_mask=_masks(m.packet_in_mask),
                    port_status_mask=_masks(m.port_status_mask),
                    flow_removed_mask=_masks(m.flow_removed_mask))


def _masks(pair: Any) -> str:
    """`[master/equal, slave]` bitmasks as `0x..,0x..`."""
    return ",".join(f"{int(v):#x}" for v in pair)
