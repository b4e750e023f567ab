"""The emulated fleet against a test-side controller (`ControllerEnd`) on loopback: the handshake,
the replies a controller needs, role requests and refusals, re-dialling, the event record and the
CLI. Every wait is bounded and event-driven; nothing sleeps to synchronise."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ryu_integration.testing.fake_switch import MAX_GENERATION_ID, Kind, Refusal, Role
from ryu_integration.testing.fleet import (
    PORTS_PER_SWITCH,
    ControllerAddress,
    ControllerEnd,
    Fleet,
    RoleAnswer,
    link_layout,
    wire,
)

TIMEOUT = 10.0
ROOT = Path(__file__).resolve().parents[2]


def run(test: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run one async test body with an overall bound."""

    async def bounded() -> Any:
        async with asyncio.timeout(60):
            return await test(*args)

    return asyncio.run(bounded())


async def ends(count: int) -> list[ControllerEnd]:
    made = [ControllerEnd() for _ in range(count)]
    for end in made:
        await end.start()
    return made


async def close_all(fleet: Fleet | None, controllers: list[ControllerEnd]) -> None:
    if fleet is not None:
        await fleet.stop()
    for end in controllers:
        await end.close()


def test_controller_address_parses_ovs_targets():
    assert ControllerAddress.parse("tcp:127.0.0.1:6653") == ControllerAddress("127.0.0.1", 6653)
    assert ControllerAddress("::1", 6653).target == "tcp:::1:6653"
    for bad in ("127.0.0.1:6653", "ssl:h:1", "tcp:h:port", "tcp::1"):
        try:
            ControllerAddress.parse(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def test_handshake_and_the_replies_a_controller_needs():
    async def body() -> None:
        (a,) = await ends(1)
        fleet = Fleet(2, [a.target], dpid_base=0x10)
        try:
            await fleet.start()
            channel = await a.channel(0x11, TIMEOUT)
            w, dp = wire(), channel.wire.dp
            parser, ofp = w.parser, w.ofp
            features = channel.features
            assert (features.datapath_id, features.n_tables, features.auxiliary_id) == (0x11, 254, 0)
            ports = (await channel.request(parser.OFPPortDescStatsRequest(dp, 0))).body
            assert [p.port_no for p in ports] == [1, 2, ofp.OFPP_LOCAL]
            assert ports[0].name == b"s17-eth1" and ports[0].hw_addr == "02:00:00:11:00:01"
            desc = (await channel.request(parser.OFPDescStatsRequest(dp, 0))).body
            assert desc.dp_desc == b"fleet dpid 0000000000000011"
            channel.send(parser.OFPSetConfig(dp, ofp.OFPC_FRAG_NORMAL, 256))
            config = await channel.request(parser.OFPGetConfigRequest(dp))
            assert (config.flags, config.miss_send_len) == (0, 256)
            assert (await channel.request(parser.OFPEchoRequest(dp, b"ping"))).data == b"ping"
            barrier = await channel.request(parser.OFPBarrierRequest(dp))
            assert barrier.msg_type == ofp.OFPT_BARRIER_REPLY
            not_emulated = await channel.request(parser.OFPFlowStatsRequest(dp))
            assert (not_emulated.type, not_emulated.code) == (
                ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_MULTIPART)
            unknown = await channel.request(parser.OFPQueueGetConfigRequest(dp, 1))
            assert (unknown.type, unknown.code) == (ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE)
        finally:
            await close_all(fleet, [a])

    run(body)


def test_roles_stale_and_is_slave_across_two_controllers():
    async def body() -> None:
        a, b = await ends(2)
        events = io.StringIO()
        fleet = Fleet(1, [a.target, b.target], dpid_base=1, events=events)
        try:
            await fleet.start()
            ca, cb = await a.channel(1, TIMEOUT), await b.channel(1, TIMEOUT)
            assert await ca.role(Role.NOCHANGE, 0) == RoleAnswer(Role.EQUAL, MAX_GENERATION_ID)
            assert (await ca.role(Role.MASTER, 5)).role is Role.MASTER
            await fleet.wait_all_mastered(TIMEOUT)
            assert fleet.masters() == {1: (a.target, 5)}
            assert (await cb.role(Role.MASTER, 7)).generation_id == 7
            assert fleet.masters() == {1: (b.target, 7)}
            assert await ca.write(ca.flow_mod()) is Refusal.IS_SLAVE
            assert await cb.write(cb.flow_mod()) is None
            assert (await ca.role(Role.MASTER, 3)).refused is Refusal.STALE
            assert (await ca.role(Role.SLAVE, 7)).role is Role.SLAVE
            assert fleet.switch(1).fencing_violations() == []
        finally:
            await close_all(fleet, [a, b])
        lines = [json.loads(line) for line in events.getvalue().splitlines()]
        assert lines[0]["kind"] == "fleet_start" and lines[-1]["kind"] == "fleet_stop"
        kinds = [(r["kind"], r["controller"], r["role"], r["generation_id"])
                 for r in lines[1:-1] if r["kind"] not in ("connect", "disconnect")]
        assert kinds == [
            ("role", a.target, "master", 5),
            ("demoted", a.target, "slave", 7),
            ("role", b.target, "master", 7),
            ("is_slave", a.target, "slave", 5),
            ("write", b.target, "master", 7),
            ("stale", a.target, "master", 3),
            ("role", a.target, "slave", 7),
        ]
        assert all(isinstance(r["t"], float) and r["dpid"] == 1 for r in lines[1:-1])

    run(body)


def test_wait_all_mastered_and_wait_for_are_event_driven():
    async def body() -> None:
        a, b = await ends(2)
        fleet = Fleet(3, [a.target, b.target], dpid_base=0x100)
        try:
            await fleet.start()
            assert fleet.mastered == 0
            for i, dpid in enumerate((0x100, 0x101, 0x102)):
                end = (a, b)[i % 2]
                channel = await end.channel(dpid, TIMEOUT)
                await channel.role(Role.MASTER, 10 + i)
                if i < 2:
                    try:
                        await fleet.wait_all_mastered(0.05)
                    except TimeoutError:
                        pass
                    else:
                        raise AssertionError("all mastered too early")
            await fleet.wait_all_mastered(TIMEOUT)
            assert fleet.masters() == {0x100: (a.target, 10), 0x101: (b.target, 11),
                                       0x102: (a.target, 12)}
            await fleet.wait_for(lambda: fleet.connections_up == 6, TIMEOUT)
            assert "mastered=3/3 connections=6/6" in fleet.status()
        finally:
            await close_all(fleet, [a, b])

    run(body)


def test_redial_after_a_drop_keeps_the_generation_and_starts_equal():
    async def body() -> None:
        (a,) = await ends(1)
        fleet = Fleet(1, [a.target], dpid_base=7)
        try:
            await fleet.start()
            first = await a.channel(7, TIMEOUT)
            await first.role(Role.MASTER, 42)
            first.close()
            await fleet.wait_for(lambda: fleet.switch(7).master is None, TIMEOUT)
            second = await a.channel(7, TIMEOUT)  # the switch re-dials
            assert second is not first
            assert await second.role(Role.NOCHANGE, 0) == RoleAnswer(Role.EQUAL, 42)
            assert (await second.role(Role.MASTER, 41)).refused is Refusal.STALE
            kinds = [e.kind for e in fleet.switch(7).events]
            assert kinds == [Kind.CONNECT, Kind.ROLE, Kind.DISCONNECT, Kind.CONNECT, Kind.STALE]
        finally:
            await close_all(fleet, [a])

    run(body)


def test_refused_dials_are_retried():
    """A controller that is not listening yet is re-dialled (with backoff) until it is."""

    async def body() -> None:
        (probe,) = await ends(1)
        port = probe.port
        await probe.close()
        fleet = Fleet(1, [f"tcp:127.0.0.1:{port}"], dpid_base=9, max_backoff=0.2)
        server: asyncio.Server | None = None
        try:
            await fleet.start()
            accepted = asyncio.get_running_loop().create_future()

            def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                if not accepted.done():
                    accepted.set_result(writer)

            server = await asyncio.start_server(on_connect, "127.0.0.1", port)
            async with asyncio.timeout(TIMEOUT):
                writer = await accepted
            await fleet.wait_for(lambda: fleet.connections_up == 1, TIMEOUT)
            writer.close()
        finally:
            if server is not None:
                server.close()
            await fleet.stop()

    run(body)


def test_cli_runs_until_sigterm_and_writes_events(tmp_path: Path):
    async def body() -> None:
        (a,) = await ends(1)
        events = tmp_path / "events.jsonl"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ryu_integration.testing.fleet", "--switches", "2",
            "--controller", a.target, "--dpid-base", "0x20", "--events", str(events),
            cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "COORD_FRAMEWORK"},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            channel = await a.channel(0x21, 30)
            assert (await channel.role(Role.MASTER, 3)).role is Role.MASTER
            # The status line reports it within a second: read until it does.
            assert proc.stdout is not None
            async with asyncio.timeout(TIMEOUT):
                while b"mastered=1/2" not in (line := await proc.stdout.readline()):
                    assert line, "the fleet exited early"
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(TIMEOUT):
                rest = await proc.stdout.read()
                assert await proc.wait() == 0
            assert b"(stopped)" in rest
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await a.close()
        lines = [json.loads(line) for line in events.read_text().splitlines()]
        assert lines[0]["kind"] == "fleet_start" and lines[0]["switches"] == 2
        assert lines[0]["framework"] == "os-ken"  # the CLI's default
        granted = [r for r in lines if r["kind"] == "role"]
        assert [(r["dpid"], r["role"], r["generation_id"]) for r in granted] == [
            (0x21, "master", 3)]
        assert lines[-1]["kind"] == "fleet_stop"

    run(body)


# ---- links: PACKET_OUT on a linked port -> PACKET_IN at the peer ------------------------------


def _lldp(dpid: int, port: int) -> bytes:
    """An LLDP frame as the framework's topology discovery sends it."""
    from ryu_integration.compat import framework_module

    lldp = framework_module("topology.switches").LLDPPacket
    return bytes(lldp.lldp_packet(dpid, port, "02:00:00:00:00:01", 0))


def test_link_layouts_join_advertised_ports_both_ways():
    assert link_layout("none", [1, 2, 3]) == {}
    assert link_layout("line", [1, 2, 3]) == {(1, 1): (2, 2), (2, 2): (1, 1),
                                              (2, 1): (3, 2), (3, 2): (2, 1)}
    ring = link_layout("ring", [5, 6, 7])
    assert ring[(7, 1)] == (5, 2) and ring[(5, 2)] == (7, 1) and len(ring) == 6
    assert {port for _, port in ring} <= set(range(1, PORTS_PER_SWITCH + 1))
    for kind, dpids in (("mesh", [1, 2]), ("ring", [1, 2])):
        try:
            link_layout(kind, dpids)
        except ValueError:
            continue
        raise AssertionError(f"accepted {kind} over {dpids}")


def test_packet_out_on_a_linked_port_reaches_master_and_equal_channels_of_the_peer():
    """A masters switch 1 and is SLAVE on switch 2, B masters switch 2, C stays EQUAL: A's LLDP
    out of switch 1 port 1 arrives at switch 2 port 2 for B and C, not A; A's refused PACKET_OUT
    on switch 2 delivers nothing."""

    async def body() -> None:
        a, b, c = await ends(3)
        events = io.StringIO()
        fleet = Fleet(2, [a.target, b.target, c.target], dpid_base=1, events=events,
                      links="line")
        try:
            await fleet.start()
            a1, a2 = await a.channel(1, TIMEOUT), await a.channel(2, TIMEOUT)
            b1, b2 = await b.channel(1, TIMEOUT), await b.channel(2, TIMEOUT)
            c1, c2 = await c.channel(1, TIMEOUT), await c.channel(2, TIMEOUT)
            await fleet.wait_for(lambda: fleet.connections_up == 6, TIMEOUT)
            ofp = wire().ofp
            # PORT_DESC advertises both linked ports of switch 1.
            ports = (await a1.request(wire().parser.OFPPortDescStatsRequest(a1.wire.dp, 0))).body
            assert {1, 2} <= {p.port_no for p in ports}
            assert (await a1.role(Role.MASTER, 10)).role is Role.MASTER
            assert (await a2.role(Role.SLAVE, 10)).role is Role.SLAVE
            assert (await b2.role(Role.MASTER, 11)).role is Role.MASTER

            frame = _lldp(1, 1)
            assert await a1.write(a1.packet_out(1, frame)) is None  # accepted
            for channel in (b2, c2):
                msg = await channel.packet_in(TIMEOUT)
                assert msg.match["in_port"] == 2
                assert bytes(msg.data) == frame and msg.total_len == len(frame)
                assert (msg.reason, msg.buffer_id) == (ofp.OFPR_ACTION, ofp.OFP_NO_BUFFER)
            from ryu_integration.compat import framework_module

            lldp = framework_module("topology.switches").LLDPPacket
            assert lldp.lldp_parse(bytes(msg.data)) == (1, 1)
            # A barrier on each other channel: any PACKET_IN for it would have come first.
            for channel in (a1, a2, b1, c1):
                await channel.request(wire().parser.OFPBarrierRequest(channel.wire.dp))
                assert channel.packet_ins.empty(), channel.dpid
            assert (fleet.packet_ins_delivered, fleet.packet_ins_suppressed) == (2, 1)

            # Refused (A is SLAVE on switch 2): nothing reaches switch 1's channels.
            assert await a2.write(a2.packet_out(2, _lldp(2, 2))) is Refusal.IS_SLAVE
            # Not linked (switch 2 port 1 is the end of the line): nothing either.
            assert await b2.write(b2.packet_out(1, _lldp(2, 1))) is None
            for channel in (a1, b1, c1, a2, b2, c2):
                await channel.request(wire().parser.OFPBarrierRequest(channel.wire.dp))
                assert channel.packet_ins.empty(), channel.dpid
            assert (fleet.packet_ins_delivered, fleet.packet_ins_suppressed) == (2, 1)
            assert "packet_ins=2 suppressed=1" in fleet.status()
        finally:
            await close_all(fleet, [a, b, c])
        lines = [json.loads(line) for line in events.getvalue().splitlines()]
        assert lines[0]["links"] == "line" and lines[0]["linked_ports"] == 2
        # Counters per period, not a line per packet: the accepted PACKET_OUTs are in them.
        counted = [r for r in lines if r["kind"] == "packet_in"]
        assert 1 <= len(counted) <= 2
        assert [sum(r[k] for r in counted) for k in ("packet_outs", "delivered", "suppressed")
                ] == [2, 2, 1]
        assert not [r for r in lines if r.get("detail") == "packet_out" and r["kind"] == "write"]
        assert [r["detail"] for r in lines if r["kind"] == "is_slave"] == ["packet_out"]

    run(body)


def test_a_ring_closes_the_loop_and_flood_goes_out_of_every_linked_port():
    async def body() -> None:
        (a,) = await ends(1)
        fleet = Fleet(3, [a.target], dpid_base=1, links="ring")
        try:
            await fleet.start()
            channels = {d: await a.channel(d, TIMEOUT) for d in (1, 2, 3)}
            for dpid, channel in channels.items():  # EQUAL: every channel gets packet-ins
                assert (await channel.role(Role.NOCHANGE, 0)).role is Role.EQUAL, dpid
            ofp = wire().ofp
            frame = _lldp(3, 1)
            assert await channels[3].write(channels[3].packet_out(1, frame)) is None
            assert (await channels[1].packet_in(TIMEOUT)).match["in_port"] == 2
            flood = _lldp(1, ofp.OFPP_FLOOD)
            assert await channels[1].write(channels[1].packet_out(ofp.OFPP_FLOOD, flood)) is None
            assert (await channels[2].packet_in(TIMEOUT)).match["in_port"] == 2  # from 1 port 1
            assert (await channels[3].packet_in(TIMEOUT)).match["in_port"] == 1  # from 1 port 2
            assert fleet.packet_ins_delivered == 3
        finally:
            await close_all(fleet, [a])

    run(body)


def test_a_cut_link_carries_nothing_and_both_ends_report_link_down():
    """`cut_link` unplugs (1, 1) <-> (2, 2): PORT_STATUS (MODIFY, link down) on every channel
    of both switches, a SLAVE's included; LLDP no longer crosses; one events-file line."""

    async def body() -> None:
        a, b = await ends(2)
        events = io.StringIO()
        fleet = Fleet(3, [a.target, b.target], dpid_base=1, events=events, links="line")
        try:
            await fleet.start()
            chans = {(e.target, d): await e.channel(d, TIMEOUT) for e in (a, b) for d in (1, 2)}
            await fleet.wait_for(lambda: fleet.connections_up == 6, TIMEOUT)
            a1, b2 = chans[(a.target, 1)], chans[(b.target, 2)]
            assert (await a1.role(Role.MASTER, 10)).role is Role.MASTER
            assert (await chans[(b.target, 1)].role(Role.SLAVE, 10)).role is Role.SLAVE
            ofp = wire().ofp
            assert fleet.cut_next_link() == (1, 1)
            for (_, dpid), channel in chans.items():
                msg = await channel.port_status(TIMEOUT)
                assert (msg.reason, msg.desc.port_no) == (ofp.OFPPR_MODIFY, dpid)
                assert msg.desc.state & ofp.OFPPS_LINK_DOWN
            assert fleet.cut_link(1, 1) is None and (2, 2) not in fleet.peers
            assert await a1.write(a1.packet_out(1, _lldp(1, 1))) is None  # accepted, goes nowhere
            await b2.request(wire().parser.OFPBarrierRequest(b2.wire.dp))
            assert b2.packet_ins.empty() and fleet.packet_ins_delivered == 0
            assert fleet.cut_next_link() == (2, 1) and fleet.cut_next_link() is None
        finally:
            await close_all(fleet, [a, b])
        cuts = [json.loads(line) for line in events.getvalue().splitlines()]
        assert [(r["dpid"], r["port"], r["peer_dpid"], r["peer_port"]) for r in cuts
                if r["kind"] == "link_cut"] == [(1, 1, 2, 2), (2, 1, 3, 2)]

    run(body)


def test_set_async_lets_a_slave_ask_for_packet_ins():
    """OFPT_SET_ASYNC is the model's per-channel async config: a SLAVE that asks for ACTION
    packet-ins in its slave mask gets them; GET_ASYNC reports the defaults, then the change."""

    async def body() -> None:
        a, b = await ends(2)
        fleet = Fleet(2, [a.target, b.target], dpid_base=1, links="line")
        try:
            await fleet.start()
            a1, a2, b2 = (await a.channel(1, TIMEOUT), await a.channel(2, TIMEOUT),
                          await b.channel(2, TIMEOUT))
            parser, dp = wire().parser, a2.wire.dp
            before = await a2.request(parser.OFPGetAsyncRequest(dp))
            assert (before.packet_in_mask, before.port_status_mask, before.flow_removed_mask) == (
                [0x3, 0x0], [0x7, 0x7], [0xF, 0x0])  # OVS's defaults
            assert (await b2.role(Role.MASTER, 3)).role is Role.MASTER
            assert (await a2.role(Role.SLAVE, 3)).role is Role.SLAVE
            a2.send(parser.OFPSetAsync(dp, [0x3, 0x2], [0x7, 0x7], [0xF, 0x0]))
            after = await a2.request(parser.OFPGetAsyncRequest(dp))
            assert after.packet_in_mask == [0x3, 0x2]
            assert await a1.write(a1.packet_out(1, _lldp(1, 1))) is None
            assert (await a2.packet_in(TIMEOUT)).match["in_port"] == 2  # the SLAVE that asked
            assert (await b2.packet_in(TIMEOUT)).match["in_port"] == 2
            assert (fleet.packet_ins_delivered, fleet.packet_ins_suppressed) == (2, 0)
        finally:
            await close_all(fleet, [a, b])

    run(body)


def test_cli_refuses_bad_links_in_one_line():
    for links, switches, says in (("ring", "2", "--links ring needs --switches >= 3"),
                                  ("mesh", "3", "invalid choice: 'mesh'")):
        result = subprocess.run(
            [sys.executable, "-m", "ryu_integration.testing.fleet", "--switches", switches,
             "--controller", "tcp:127.0.0.1:9", "--links", links],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2 and says in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


MARKER_COOKIE = 0xC5 << 56 | 42


def _marker(channel: Any, *, add: bool, send_flow_rem: bool = True, hard_timeout: int = 0,
            eth_type: int = 0x88B6) -> Any:
    """The planned handover's marker FLOW_MOD: ADD with OFPFF_SEND_FLOW_REM, or DELETE_STRICT."""
    parser, ofp, dp = channel.wire.parser, channel.wire.ofp, channel.wire.dp
    match = parser.OFPMatch(eth_type=eth_type)
    if add:
        return parser.OFPFlowMod(dp, cookie=MARKER_COOKIE, table_id=0, command=ofp.OFPFC_ADD,
                                 hard_timeout=hard_timeout, priority=0, match=match,
                                 flags=ofp.OFPFF_SEND_FLOW_REM if send_flow_rem else 0,
                                 instructions=[])
    return parser.OFPFlowMod(dp, cookie=MARKER_COOKIE, cookie_mask=2**64 - 1, table_id=0,
                             command=ofp.OFPFC_DELETE_STRICT, priority=0, out_port=ofp.OFPP_ANY,
                             out_group=ofp.OFPG_ANY, match=match)


def test_flow_mods_are_applied_and_a_delete_sends_flow_removed_to_master_and_equal():
    """The marker of a planned handover: ADD with SEND_FLOW_REM, then DELETE_STRICT from the
    MASTER. Its FLOW_REMOVED (reason DELETE, cookie, priority, match) reaches the MASTER before
    the barrier reply and the EQUAL channel too, not the SLAVE; a SLAVE's FLOW_MOD changes
    nothing; an entry without the flag goes silently."""

    async def body() -> None:
        a, b, c = await ends(3)
        events = io.StringIO()
        fleet = Fleet(1, [a.target, b.target, c.target], dpid_base=1, events=events)
        try:
            await fleet.start()
            ca, cb, cc = (await a.channel(1, TIMEOUT), await b.channel(1, TIMEOUT),
                          await c.channel(1, TIMEOUT))
            ofp = ca.wire.ofp
            assert (await cb.role(Role.MASTER, 5)).role is Role.MASTER
            assert (await cc.role(Role.SLAVE, 5)).role is Role.SLAVE  # ca stays EQUAL
            assert await cc.write(_marker(cc, add=True)) is Refusal.IS_SLAVE
            assert fleet.switch(1).flows() == []
            assert await cb.write(_marker(cb, add=True)) is None
            assert await cb.write(_marker(cb, add=True, send_flow_rem=False,
                                          eth_type=0x88B5)) is None
            [flow, quiet] = fleet.switch(1).flows()
            assert (flow.cookie, flow.priority, flow.flags) == (MARKER_COOKIE, 0, 1)
            assert await cb.write(_marker(cb, add=False)) is None
            assert [f.match for f in fleet.switch(1).flows()] == [quiet.match]
            # On the master's channel the FLOW_REMOVED came before the barrier's reply.
            tail = cb.arrivals[-2:]
            assert tail == [ofp.OFPT_FLOW_REMOVED, ofp.OFPT_BARRIER_REPLY]
            for channel in (cb, ca):
                removed = await channel.flow_removed(TIMEOUT)
                assert (removed.reason, removed.cookie, removed.priority, removed.table_id) == (
                    ofp.OFPRR_DELETE, MARKER_COOKIE, 0, 0)
                assert removed.match["eth_type"] == 0x88B6
            await cc.request(cc.wire.parser.OFPBarrierRequest(cc.wire.dp))  # after any send
            assert cc.flow_removeds.empty()
            # The flagless entry goes without a message.
            assert await ca.write(_marker(ca, add=False, eth_type=0x88B5)) is None
            assert fleet.switch(1).flows() == []
            assert ca.flow_removeds.empty() and cb.flow_removeds.empty()
            assert fleet.flow_removed_sent == 2
        finally:
            await close_all(fleet, [a, b, c])
        lines = [json.loads(line) for line in events.getvalue().splitlines()]
        [removed_line] = [r for r in lines if r["kind"] == "flow_removed"]
        assert removed_line["dpid"] == 1 and removed_line["reason"] == "delete"
        assert removed_line["cookie"] == MARKER_COOKIE
        assert sorted(removed_line["channels"]) == sorted([a.target, b.target])

    run(body)


def test_a_hard_timeout_removes_the_entry_and_sends_flow_removed():
    """An entry with a hard timeout goes when it passes (a timer armed by the ADD, no polling):
    FLOW_REMOVED reason HARD_TIMEOUT to the master."""

    async def body() -> None:
        (a,) = await ends(1)
        fleet = Fleet(1, [a.target], dpid_base=1)
        try:
            await fleet.start()
            ca = await a.channel(1, TIMEOUT)
            assert (await ca.role(Role.MASTER, 1)).role is Role.MASTER
            assert await ca.write(_marker(ca, add=True, hard_timeout=1)) is None
            removed = await ca.flow_removed(TIMEOUT)
            assert removed.reason == ca.wire.ofp.OFPRR_HARD_TIMEOUT
            assert (removed.cookie, removed.hard_timeout) == (MARKER_COOKIE, 1)
            assert fleet.switch(1).flows() == []
        finally:
            await close_all(fleet, [a])

    run(body)
