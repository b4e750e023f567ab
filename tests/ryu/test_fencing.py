"""The fencing argument without Open vSwitch: three mastership state machines, elections on the
memory driver, and one FakeSwitch that enforces OpenFlow 1.3's role rules.

Each controller's inputs (election callbacks, leader reads, the switch's answers) go through one
queue that the test drains on its own thread, so a controller can be "partitioned": its inputs
are held back while the others go on. The assertions are about what the switch did (who it
granted MASTER, which writes it accepted), as in Faucet's fakeoftable tests.
"""

from __future__ import annotations

import queue
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import coordination
from ryu_integration.mastership import election_name
from ryu_integration.mastership.fsm import (
    Campaign,
    MastershipFSM,
    ReadLeader,
    Resign,
    Role,
    SendRoleRequest,
    Timing,
)
from ryu_integration.testing.fake_switch import FakeSwitch, Refusal, Write
from ryu_integration.testing.fake_switch import Role as SwitchRole

DPID = 7
WAIT = 10.0
TIMING = Timing(role_request_timeout=2.0, retry_initial=0.05, retry_max=0.2,
                reassert_interval=30.0, hold_on_suspend=False)


class Controller:
    """One controller: a coordinator on the shared memory store and the switch's state machine."""

    def __init__(self, name: str, url: str, switch: FakeSwitch, inbox: queue.Queue) -> None:
        self.name = name
        self.switch = switch
        self.inbox = inbox
        self.coord = coordination.connect(url, name)
        self.election = self.coord.election(election_name(DPID))
        self.fsm = MastershipFSM(DPID, name, TIMING)
        self.partitioned = False
        self.held: list[tuple[str, tuple[Any, ...]]] = []
        self.election.add_leader_listener(lambda lead: self.post("leader", lead))

    def post(self, kind: str, *args: Any) -> None:
        self.inbox.put((self, kind, args))

    def feed(self, kind: str, args: tuple[Any, ...]) -> None:
        now = time.monotonic()
        fsm = self.fsm
        if kind == "up":
            self.switch.connect(self.name, now)
            actions = fsm.switch_up(now)
        elif kind == "elected":
            actions = fsm.elected(args[0].term, now)
        elif kind == "revoked":
            actions = fsm.revoked(args[0].term, now)
        elif kind in ("leader", "leader_read"):
            lead = args[0]
            actions = fsm.leader_seen(lead and lead.member_id, lead and lead.term, now)
        elif kind == "reply":
            actions = fsm.role_reply(*args, now)
        elif kind == "refused":
            actions = fsm.role_error(*args, now)
        elif kind == "is_slave":
            actions = fsm.not_master_error(now)
        else:
            raise AssertionError(kind)
        self.perform(actions)

    def perform(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Campaign):
                self.election.campaign(on_elected=lambda lead: self.post("elected", lead),
                                       on_revoked=lambda lead: self.post("revoked", lead))
            elif isinstance(action, Resign):
                self.election.resign()
            elif isinstance(action, ReadLeader):
                self.post("leader_read", self.election.leader())
            elif isinstance(action, SendRoleRequest):
                outcome = self.switch.role_request(
                    self.name, SwitchRole(action.role.value), action.generation_id,
                    time.monotonic())
                if outcome.accepted:
                    self.post("reply", action.xid, Role(outcome.role.value), action.generation_id)
                else:
                    self.post("refused", action.xid, outcome.refused is Refusal.STALE)

    def program(self) -> bool:
        """What a guarded app does: write only while the state machine says we may. Returns
        whether the switch accepted the write (False also when nothing was sent)."""
        if not self.fsm.may_program:
            return False
        outcome = self.switch.write(self.name, Write.FLOW_MOD, time.monotonic())
        if outcome.refused is Refusal.IS_SLAVE:
            self.post("is_slave")
        return outcome.accepted


class Network:
    def __init__(self, names: list[str]) -> None:
        url = f"memory://fencing-{uuid.uuid4().hex[:8]}"
        self.switch = FakeSwitch(DPID)
        self.inbox: queue.Queue = queue.Queue()
        self.controllers = {n: Controller(n, url, self.switch, self.inbox) for n in names}

    def run_until(self, done: Callable[[], bool], timeout: float = WAIT) -> None:
        """Feed inputs (held back for partitioned controllers) until `done()`."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not settled within {timeout} s: {self.switch!r}")
            try:
                controller, kind, args = self.inbox.get(timeout=min(left, 0.05))
            except queue.Empty:
                for c in self.controllers.values():  # timers: retries after a refusal
                    if not c.partitioned:
                        c.perform(c.fsm.tick(time.monotonic()))
                continue
            if controller.partitioned:
                controller.held.append((kind, args))
            else:
                controller.feed(kind, args)

    def heal(self, controller: Controller) -> None:
        controller.partitioned = False
        for kind, args in controller.held:
            controller.post(kind, *args)
        controller.held.clear()

    def masters(self) -> list[str]:
        return [c.name for c in self.controllers.values() if c.fsm.may_program]

    def close(self) -> None:
        for c in self.controllers.values():
            c.coord.close()


@pytest.fixture
def network() -> Iterator[Network]:
    net = Network(["c1", "c2", "c3"])
    yield net
    net.close()


def start(net: Network) -> Controller:
    for c in net.controllers.values():
        c.post("up")
    net.run_until(lambda: len(net.masters()) == 1 and all(
        c.fsm.role is not Role.EQUAL for c in net.controllers.values()))
    return net.controllers[net.masters()[0]]


def test_one_master_confirmed_by_the_switch_and_only_it_may_write(network: Network) -> None:
    master = start(network)
    assert network.switch.master == master.name
    assert network.switch.master_generation == master.fsm.term
    assert master.program()
    for other in network.controllers.values():
        if other is not master:
            assert other.fsm.role is Role.SLAVE and not other.program()
            refused = network.switch.write(other.name, Write.FLOW_MOD, time.monotonic())
            assert refused.refused is Refusal.IS_SLAVE
    assert network.switch.fencing_violations() == []


def test_a_partitioned_master_is_fenced_by_the_switch_not_by_its_own_knowledge(
    network: Network,
) -> None:
    old = start(network)
    old_term = old.fsm.term
    old.partitioned = True  # it hears nothing more: a zombie that still thinks it is master
    old.coord.expire()  # the store gives its leadership away
    network.run_until(lambda: network.switch.master not in (None, old.name))
    new = network.controllers[network.switch.master]
    assert network.switch.master_generation > old_term
    network.run_until(lambda: new.fsm.may_program)

    assert old.fsm.may_program  # the zombie believes it may program...
    assert not old.program()  # ...but the switch refuses its write (IS_SLAVE)
    assert old.fsm.may_program  # it has not been told yet (its input is held)
    assert new.program()
    # A MASTER claim under the old term, as a re-assert of the zombie would send it: STALE.
    stale = network.switch.role_request(old.name, SwitchRole.MASTER, old_term, time.monotonic())
    assert stale.refused is Refusal.STALE and network.switch.master == new.name

    network.heal(old)  # the partition ends: it learns, stops, and rejoins as slave
    network.run_until(lambda: old.fsm.role is Role.SLAVE and not old.fsm.may_program)
    assert network.masters() == [new.name]
    assert network.switch.fencing_violations() == []


def test_graceful_resign_hands_over_under_a_larger_generation_id(network: Network) -> None:
    old = start(network)
    old_term = old.fsm.term
    old.perform(old.fsm.switch_down(time.monotonic()))  # its channel goes: it resigns
    network.switch.disconnect(old.name, time.monotonic())
    network.run_until(lambda: len(network.masters()) == 1 and network.masters()[0] != old.name)
    new = network.controllers[network.masters()[0]]
    assert network.switch.master == new.name
    assert network.switch.master_generation > old_term
    assert new.program() and network.switch.fencing_violations() == []
