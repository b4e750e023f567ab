"""The fault kinds of the chaos suite: each injects one failure and undoes it.

What: a :class:`Fault` is a kind name, the bound on a switch's masterless interval while it
runs (made of the controllers' timeouts, see :class:`~tests.chaos.rig.Timing`) and a function
that injects the failure into a :class:`~tests.chaos.rig.ChaosRig`, waits (pushed, bounded) for
what must follow, and undoes it. The scenario then waits for the rig to settle again (one master
per switch, traffic flowing) before the next fault. Victims rotate over the bridges' masters.
Holding a store fault for a while is the fault's duration, not a synchronisation.
Why: one small function per failure mode, all with the same shape, so a soak can repeat them.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass

from .rig import ChaosRig, Timing

#: Allowance for a store member (JVM for ZooKeeper) to restart and rejoin, on 2 busy cores.
STORE_RESTART = 30.0


@dataclass(frozen=True)
class Fault:
    """One kind of failure: name, masterless bound, and how to cause and undo it."""

    kind: str
    bound: Callable[[Timing], float]
    run: Callable[[ChaosRig, int], None]
    what: str


def _hold(seconds: float) -> None:
    """Keep a fault in place for ``seconds`` (its duration, nothing is waited for)."""
    threading.Event().wait(seconds)


def _held(t: Timing) -> float:
    """How long a store fault stays in place: longer than a session, so sessions are tested."""
    return t.session_timeout + 1


def _victim(rig: ChaosRig, round_no: int) -> str:
    """The master of the bridge this round points at."""
    dpid = rig.dpids[round_no % len(rig.dpids)]
    m = rig.monitor
    return m.wait_for(lambda: m.master_of(dpid), rig.timing.recover_timeout,
                      f"a master of {dpid}")


def _wait_replaced(rig: ChaosRig, victim: str, timeout: float) -> None:
    """Until no bridge is mastered by ``victim`` and each has another confirmed master."""
    m = rig.monitor

    def replaced() -> bool:
        owners = [m.master_of(d) for d in rig.dpids]
        return all(o is not None and o != victim for o in owners)

    m.wait_for(replaced, timeout, f"every bridge mastered by someone else than {victim}")


def _restart(rig: ChaosRig, name: str) -> None:
    c = rig.controller(name)
    mark = c.mark()
    c.start()
    c.wait_for(lambda r: r.kind == "READY", 60, since=mark, what="ready after restart")


# -- controller faults -----------------------------------------------------------------------
def kill9_master(rig: ChaosRig, round_no: int) -> None:
    victim = _victim(rig, round_no)
    rig.controller(victim).kill()
    t = rig.timing
    _wait_replaced(rig, victim, t.session_timeout + t.margin + 10)
    _restart(rig, victim)  # same port, same member_id


def sigstop_master(rig: ChaosRig, round_no: int) -> None:
    victim = _victim(rig, round_no)
    pid = rig.controller(victim).pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    rig.monitor.set_paused(victim, True)
    try:
        t = rig.timing
        _wait_replaced(rig, victim, t.session_timeout + t.margin + 10)
    finally:
        os.kill(pid, signal.SIGCONT)
        rig.monitor.set_paused(victim, False)


def restart_same_id(rig: ChaosRig, round_no: int) -> None:
    """kill -9 and start again at once: the new process meets its old, still live session."""
    victim = _victim(rig, round_no)
    rig.controller(victim).kill()
    _restart(rig, victim)


def store_cut(rig: ChaosRig, round_no: int) -> None:
    """The master loses the store (every member black-holed) but keeps its switches."""
    victim = _victim(rig, round_no)
    proxies = rig.store_proxies[victim]
    for p in proxies:
        p.blackhole()
    try:
        t = rig.timing
        _wait_replaced(rig, victim, t.session_timeout + t.margin + 10)
    finally:
        for p in proxies:
            p.restore()


def switch_cut(rig: ChaosRig, round_no: int) -> None:
    """The master loses its switches (OpenFlow connections reset) but keeps the store."""
    victim = _victim(rig, round_no)
    tap = rig.taps[victim]
    tap.cut()
    try:
        _wait_replaced(rig, victim, rig.timing.margin + 10)
    finally:
        tap.restore()


def expiry_in_flight(rig: ChaosRig, round_no: int) -> None:
    """The master's session expires while a role request of its own waits for its reply:
    the switches' answers to it are held at the tap; once it has sent a role request (its
    periodic re-assert), its store is black-holed too. Both heal after the successors were
    confirmed; the late replies arrive first."""
    victim = _victim(rig, round_no)
    tap, proxies = rig.taps[victim], rig.store_proxies[victim]
    m = rig.monitor
    held = tap.held_role_replies
    with m.cond:
        sent = m.role_requests[victim]
    tap.hold_replies()
    m.wait_for(lambda: m.role_requests[victim] > sent,
               rig.timing.reassert_interval + rig.timing.margin, f"a role request from {victim}")
    for p in proxies:
        p.blackhole()
    try:
        t = rig.timing
        _wait_replaced(rig, victim, t.session_timeout + t.margin + 10)
        m.note(f"{tap.held_role_replies - held} role reply(ies) to {victim} held until after "
               "its successors were confirmed")
    finally:
        tap.release()
        for p in proxies:
            p.restore()


def switch_restart(rig: ChaosRig, round_no: int) -> None:
    """Delete a bridge and create it again (same dpid, controllers, hosts)."""
    dpid = rig.dpids[round_no % len(rig.dpids)]
    rig.ovs.del_bridge(f"br{dpid}")
    rig.add_bridge(dpid)


# -- store faults ----------------------------------------------------------------------------
def store_member_loss(rig: ChaosRig, round_no: int) -> None:
    """kill -9 one store member that is not the leader; it returns after a session timeout."""
    leader = rig.store.wait_leader(STORE_RESTART)
    i = next(j for j in (round_no % 3, (round_no + 1) % 3) if j != leader)
    rig.store.kill_member(i)
    _hold(_held(rig.timing))
    rig.store.start_member(i, wait=False)
    rig.store.wait_serving(STORE_RESTART)


def store_leader_loss(rig: ChaosRig, round_no: int) -> None:
    """kill -9 the store's leader; the other two elect a new one; it returns later."""
    leader = rig.store.wait_leader(STORE_RESTART)
    rig.store.kill_member(leader)
    rig.store.wait_leader(STORE_RESTART)
    _hold(_held(rig.timing))
    rig.store.start_member(leader, wait=False)
    rig.store.wait_serving(STORE_RESTART)


def quorum_loss(rig: ChaosRig, round_no: int) -> None:
    """kill -9 two of three members (the leader among them) for longer than a session: no
    store writes at all; both return and the store serves again."""
    leader = rig.store.wait_leader(STORE_RESTART)
    other = next(j for j in ((leader + 1 + round_no) % 3, (leader + 2) % 3) if j != leader)
    for i in (leader, other):
        rig.store.kill_member(i)
    _hold(_held(rig.timing))
    for i in (leader, other):
        rig.store.start_member(i, wait=False)
    rig.store.wait_serving(STORE_RESTART)


FAULTS: dict[str, Fault] = {f.kind: f for f in (
    Fault("kill -9 master", lambda t: t.session_timeout + t.margin, kill9_master,
          "SIGKILL the master of a bridge, wait for successors, restart it (same member_id)"),
    Fault("SIGSTOP master", lambda t: t.session_timeout + t.margin, sigstop_master,
          "SIGSTOP the master until successors are confirmed, then SIGCONT"),
    Fault("restart same member_id", lambda t: t.session_timeout + t.margin, restart_same_id,
          "SIGKILL the master and start it again at once, before its session expired"),
    Fault("store member loss", lambda t: t.session_timeout + t.margin, store_member_loss,
          "SIGKILL a store follower for a session timeout + 1 s, then restart it"),
    Fault("store leader loss", lambda t: t.session_timeout + t.margin + 2, store_leader_loss,
          "SIGKILL the store leader, new leader, restart it after a session timeout + 1 s"),
    Fault("quorum loss", lambda t: _held(t) + STORE_RESTART + t.session_timeout + t.margin,
          quorum_loss,
          "SIGKILL 2 of 3 store members for a session timeout + 1 s, then restart both"),
    Fault("master cut from store", lambda t: t.session_timeout + t.margin, store_cut,
          "black-hole the master's store connections until successors are confirmed"),
    Fault("master cut from switches", lambda t: t.margin, switch_cut,
          "reset the master's OpenFlow connections and refuse new ones until successors"),
    Fault("expiry with role reply held", lambda t: t.session_timeout + t.margin,
          expiry_in_flight,
          "hold the switches' replies to the master and black-hole its store until successors"),
    Fault("switch restart", lambda t: t.margin + 1, switch_restart,
          "ovs-vsctl del-br + add-br of one bridge (fresh generation_id, controllers redial)"),
)}
