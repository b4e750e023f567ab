"""The emulated fleet tells the truth: one role scenario, played against a real Open vSwitch bridge
and against a fleet switch, from the same test-side controller (two TCP channels, A and B), must
give the same answers, and the answers OpenFlow 1.3 prescribes.

The scenario covers what the mastership design leans on: the reply before any generation_id,
EQUAL writes, MASTER with a newer generation_id demoting the old master silently, IS_SLAVE for the
demoted one, STALE for an older generation_id, 64-bit wrap-around in the staleness compare, and a
reconnected channel starting EQUAL while the switch keeps its newest generation_id.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ryu_integration.testing.fake_switch import MAX_GENERATION_ID, Refusal, Role
from ryu_integration.testing.fleet import ControllerChannel, ControllerEnd, Fleet, RoleAnswer

pytestmark = pytest.mark.integration

DPID = 0x5A
STEP_TIMEOUT = 15.0
HALF = 2**63


def _ok(role: Role, generation_id: int) -> RoleAnswer:
    return RoleAnswer(role, generation_id)


STALE = RoleAnswer(None, None, Refusal.STALE)

#: (who, what, argument, answer): what OpenFlow 1.3 (and OVS) must answer, in order.
EXPECTED: list[tuple[str, str, Any, Any]] = [
    ("A", "nochange", None, _ok(Role.EQUAL, MAX_GENERATION_ID)),  # no generation_id yet
    ("A", "flow_mod", None, None),  # EQUAL may write
    ("A", "master", 5, _ok(Role.MASTER, 5)),
    ("B", "master", 7, _ok(Role.MASTER, 7)),
    ("A", "nochange", None, _ok(Role.SLAVE, 7)),  # demoted, silently over OF1.3
    ("A", "flow_mod", None, Refusal.IS_SLAVE),
    ("B", "flow_mod", None, None),
    ("A", "master", 3, STALE),
    ("A", "nochange", None, _ok(Role.SLAVE, 7)),  # a refusal changes nothing
    ("A", "slave", 7, _ok(Role.SLAVE, 7)),
    ("A", "equal", 0, _ok(Role.EQUAL, 7)),  # EQUAL: no generation check
    ("A", "slave", 6, STALE),
    ("A", "master", 7 + HALF, STALE),  # (int64)(2**63) < 0: exactly half the ring is older
    ("A", "master", 6 + HALF, _ok(Role.MASTER, 6 + HALF)),
    ("B", "nochange", None, _ok(Role.SLAVE, 6 + HALF)),
    ("B", "slave", 7, STALE),
    ("B", "master", 2, _ok(Role.MASTER, 2)),  # newer: wrapped around
    ("A", "flow_mod", None, Refusal.IS_SLAVE),
    ("A", "reconnect", None, None),
    ("A", "nochange", None, _ok(Role.EQUAL, 2)),  # new channel: EQUAL, generation_id kept
    ("A", "master", 1, STALE),
    ("A", "master", 3, _ok(Role.MASTER, 3)),
    ("B", "flow_mod", None, Refusal.IS_SLAVE),
]


async def play(a: ControllerEnd, b: ControllerEnd, dpid: int) -> list[tuple[str, str, Any, Any]]:
    """Run EXPECTED's steps against whatever switch `dpid` connected to A and B; the answers."""
    channels: dict[str, ControllerChannel] = {
        "A": await a.channel(dpid, STEP_TIMEOUT),
        "B": await b.channel(dpid, STEP_TIMEOUT),
    }
    ends = {"A": a, "B": b}
    roles = {"nochange": Role.NOCHANGE, "equal": Role.EQUAL, "master": Role.MASTER,
             "slave": Role.SLAVE}
    seen: list[tuple[str, str, Any, Any]] = []
    for who, what, arg, _ in EXPECTED:
        channel = channels[who]
        answer: Any = None
        if what == "flow_mod":
            answer = await channel.write(channel.flow_mod(), STEP_TIMEOUT)
        elif what == "reconnect":
            channel.close()
            await channel.closed
            channels[who] = await ends[who].channel(dpid, STEP_TIMEOUT)  # the switch re-dials
        else:
            answer = await channel.role(roles[what], arg or 0, STEP_TIMEOUT)
        seen.append((who, what, arg, answer))
    return seen


async def _against_ovs(ovs: Any) -> list[tuple[str, str, Any, Any]]:
    a, b = ControllerEnd(), ControllerEnd()
    await a.start()
    await b.start()
    try:
        # max_backoff 1 s: the bridge re-dials A quickly after the test closes the channel.
        await asyncio.to_thread(ovs.add_bridge, "br-fleet", DPID, [a.port, b.port])
        return await play(a, b, DPID)
    finally:
        await a.close()
        await b.close()


async def _against_fleet() -> tuple[list[tuple[str, str, Any, Any]], Fleet]:
    a, b = ControllerEnd(), ControllerEnd()
    await a.start()
    await b.start()
    fleet = Fleet(1, [a.target, b.target], dpid_base=DPID)
    try:
        await fleet.start()
        return await play(a, b, DPID), fleet
    finally:
        await fleet.stop()
        await a.close()
        await b.close()


def _table(rows: list[tuple[str, str, Any, Any]]) -> str:
    return "\n".join(f"  {who} {what:<9} {'' if arg is None else arg!s:<22} -> {ans}"
                     for who, what, arg, ans in rows)


def test_fleet_answers_like_open_vswitch(ovs):
    """The same steps, the same answers: OVS, the fleet, and the table above."""
    from_ovs = asyncio.run(_against_ovs(ovs))
    from_fleet, fleet = asyncio.run(_against_fleet())
    assert from_ovs == EXPECTED, "Open vSwitch answered differently:\n" + _table(from_ovs)
    assert from_fleet == from_ovs, "the fleet differs from Open vSwitch:\n" + _table(from_fleet)
    # The fleet's record agrees with what the wire said.
    switch = fleet.switch(DPID)
    assert switch.generation_id == 3
    first = switch.first_master()
    assert first is not None and first.generation_id == 5
    # The one write accepted from a channel not MASTER under the newest generation_id: A's EQUAL
    # write before anyone claimed the switch.
    violations = switch.fencing_violations()
    assert [(v.channel, v.role) for v in violations] == [(fleet.controllers[0].target, Role.EQUAL)]
