"""The emulated fleet against a test-side controller (`ControllerEnd`) on loopback: the handshake,
the replies a controller needs, role requests and refusals, re-dialling, the event record and the
CLI. Every wait is bounded and event-driven; nothing sleeps to synchronise."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ryu_integration.testing.fake_switch import MAX_GENERATION_ID, Kind, Refusal, Role
from ryu_integration.testing.fleet import (
    ControllerAddress,
    ControllerEnd,
    Fleet,
    RoleAnswer,
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
