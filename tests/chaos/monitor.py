"""The chaos suite's invariant monitor: what the switches and hosts saw, checked as it happens.

What: fed by the OpenFlow taps (role requests, replies, errors, writes and their barrier
answers, per connection and datapath) and by the hosts (each delivered packet's sequence
number), it keeps per switch the roles the switch confirmed and the highest generation_id, and
records a violation of:

(a) ``duplicate``: a packet (by sequence number) delivered twice;
(b) ``write-from-non-master``: a FLOW_MOD / PACKET_OUT / ... that the switch accepted (barrier
    answered, no IS_SLAVE error for that xid) although, when it was sent, the switch had not
    confirmed the sender as MASTER (or had since confirmed another controller's MASTER claim,
    which always carries a generation_id at least as high: lower ones are refused STALE) and
    the sender had no MASTER claim in flight; ``term-reused``: two controllers confirmed
    MASTER with the same generation_id;
(c) ``masterless``: a switch without a confirmed master (a connected, not paused controller
    whose MASTER role the switch confirmed) for longer than the bound of the fault under way;
(d) ``topology-lost``: after recovery, a bridge's switch record missing from the topology store
    (fed by :class:`~tests.chaos.topology_watch.SwitchRecords`) for longer than a bound.

Everything is under one condition variable, notified on every change, so the scenarios wait
on it (pushed, bounded) instead of polling. Per fault kind it keeps count, violations and the
longest masterless interval for the final table.
Why: the invariants are about what the switch did, so they are judged from the wire.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from os_ken.ofproto import ofproto_v1_3 as ofp

if TYPE_CHECKING:
    from .tap import TapLink


BETWEEN = "between faults"


@dataclass
class Violation:
    """One broken invariant: which, during which fault, what exactly."""

    invariant: str
    fault: str
    detail: str
    t: float = field(default_factory=time.time)

    def __str__(self) -> str:
        return f"[{self.invariant}] during {self.fault}: {self.detail}"


@dataclass
class FaultStats:
    """What the table shows per fault kind."""

    count: int = 0
    violations: int = 0
    longest_masterless: float = 0.0
    bound: float = float("inf")
    notes: list[str] = field(default_factory=list)


@dataclass
class _Write:
    kind: str
    xid: int
    allowed: bool
    why: str


@dataclass
class _Link:
    """What the monitor knows of one switch <-> controller connection."""

    member: str
    dpid: int
    role: str = "equal"  # OpenFlow's initial role of a connection
    generation_id: int | None = None
    pending_roles: dict[int, tuple[str, int]] = field(default_factory=dict)
    writes: dict[int, _Write] = field(default_factory=dict)  # by the tap's barrier xid
    refused: set[int] = field(default_factory=set)


@dataclass
class _Switch:
    links: dict[int, _Link] = field(default_factory=dict)
    max_generation: int | None = None
    generation_owner: dict[int, str] = field(default_factory=dict)
    masterless_since: float | None = None
    masterless_fault: str = ""


class Monitor:
    """Invariant bookkeeping for one chaos run (thread-safe; taps and hosts call in)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.switches: dict[int, _Switch] = defaultdict(_Switch)
        self.violations: list[Violation] = []
        self.stats: dict[str, FaultStats] = defaultdict(FaultStats)
        self.paused: set[str] = set()
        self.fault = "setup"
        self.bound = float("inf")
        self.armed = False
        self.delivered: dict[tuple[int, int], int] = {}  # (bridge, seq) -> deliveries
        self.last_seq: dict[int, int] = {}  # bridge -> highest delivered sequence number
        self.writes_refused = 0
        self.writes_accepted = 0
        self.role_requests: dict[str, int] = defaultdict(int)  # by member, ever sent
        self.topology_switches: set[int] = set()  # dpids with a switch record in the store
        self.window_writes = 0  # writes by a master whose term a newer SLAVE claim overtook

    # -- run control (the scenario) ----------------------------------------------------------
    def begin_fault(self, kind: str, bound: float) -> None:
        """From now on masterless intervals are charged to ``kind`` and checked against ``bound``."""
        with self.cond:
            self.fault, self.bound, self.armed = kind, bound, True
            stats = self.stats[kind]
            stats.count += 1
            stats.bound = bound
            self.cond.notify_all()

    def end_fault(self, bound: float = float("inf")) -> None:
        """The fault is over and the rig settled: a masterless interval that starts from now
        on has nothing to excuse it beyond ``bound`` (a graceful handover, say)."""
        with self.cond:
            self.fault, self.bound = BETWEEN, bound
            self.stats[BETWEEN].bound = bound

    def set_paused(self, member: str, paused: bool) -> None:
        """A SIGSTOPped controller's MASTER role does not count as a master."""
        with self.cond:
            (self.paused.add if paused else self.paused.discard)(member)
            for dpid in list(self.switches):
                self._update_masterless(dpid)
            self.cond.notify_all()

    def note(self, text: str) -> None:
        with self.cond:
            self.stats[self.fault].notes.append(text)

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Wait (on the condition, no polling) until ``predicate()`` is truthy; return it."""
        with self.cond:
            result = self.cond.wait_for(predicate, timeout)
        if not result:
            raise AssertionError(f"not within {timeout:.0f} s: {what}\n{self.describe()}")
        return result

    # -- queries (call with the condition held, e.g. from a wait_for predicate) ---------------
    def masters(self, dpid: int) -> list[str]:
        """Members whose MASTER role the switch confirmed, connected and not paused."""
        sw = self.switches.get(dpid)
        if sw is None:
            return []
        return [lk.member for lk in sw.links.values()
                if lk.role == "master" and lk.member not in self.paused]

    def settled(self, dpids: Iterable[int], members: Iterable[str]) -> bool:
        """Every switch connected to each of ``members``: one master, slaves besides."""
        want = set(members)
        for dpid in dpids:
            sw = self.switches.get(dpid)
            if sw is None:
                return False
            roles = {lk.member: lk.role for lk in sw.links.values()}
            if set(roles) != want or len(self.masters(dpid)) != 1:
                return False
            if sorted(roles.values()).count("slave") != len(want) - 1:
                return False
        return True

    def master_of(self, dpid: int) -> str | None:
        found = self.masters(dpid)
        return found[0] if len(found) == 1 else None

    def describe(self) -> str:
        lines = []
        for dpid, sw in sorted(self.switches.items()):
            links = ", ".join(f"{lk.member}={lk.role}/{lk.generation_id}"
                              for lk in sw.links.values())
            lines.append(f"  dpid {dpid:016x}: max_gen={sw.max_generation} {links}")
        lines.append(f"  paused={sorted(self.paused)} last_seq={self.last_seq}")
        return "\n".join(lines)

    def check_topology(self, dpids: Iterable[int], timeout: float) -> bool:
        """(d): wait (bounded) until every dpid has its switch record; a violation if not."""
        want = set(dpids)
        with self.cond:
            if self.cond.wait_for(lambda: want <= self.topology_switches, timeout):
                return True
            missing = sorted(want - self.topology_switches)
            self._violate("topology-lost", f"switch records of dpids {missing} missing "
                          f"{timeout:.0f} s after recovery")
            return False

    # -- hosts -------------------------------------------------------------------------------
    def packet_delivered(self, bridge: int, seq: int) -> None:
        with self.cond:
            key = (bridge, seq)
            count = self.delivered.get(key, 0) + 1
            self.delivered[key] = count
            if count == 2:
                self._violate("duplicate", f"bridge {bridge}: packet #{seq} delivered twice")
            self.last_seq[bridge] = max(seq, self.last_seq.get(bridge, -1))
            self.cond.notify_all()

    # -- taps --------------------------------------------------------------------------------
    def link_up(self, link: TapLink) -> None:
        assert link.dpid is not None
        with self.cond:
            sw = self.switches[link.dpid]
            sw.links[link.id] = _Link(link.member, link.dpid)
            self._update_masterless(link.dpid)
            self.cond.notify_all()

    def link_down(self, link: TapLink) -> None:
        if link.dpid is None:
            return
        with self.cond:
            sw = self.switches[link.dpid]
            sw.links.pop(link.id, None)
            if not sw.links:
                # No connection left: the bridge may be re-created, with a fresh generation_id.
                sw.max_generation = None
                sw.generation_owner.clear()
            self._update_masterless(link.dpid)
            self.cond.notify_all()

    def role_request(self, link: TapLink, xid: int, role: str, generation_id: int) -> None:
        with self.cond:
            self.role_requests[link.member] += 1
            lk = self._link(link)
            if lk is not None:
                lk.pending_roles[xid] = (role, generation_id)
            self.cond.notify_all()

    def role_reply(self, link: TapLink, xid: int, role: str, generation_id: int) -> None:
        with self.cond:
            lk = self._link(link)
            if lk is None:
                return
            lk.pending_roles.pop(xid, None)
            sw = self.switches[lk.dpid]
            if role == "master":
                owner = sw.generation_owner.setdefault(generation_id, lk.member)
                if owner != lk.member:
                    self._violate("term-reused", f"dpid {lk.dpid:016x}: generation_id "
                                  f"{generation_id} confirmed MASTER for {owner} and {lk.member}")
                for other in sw.links.values():  # the switch demotes the previous master
                    if other is not lk and other.role == "master":
                        other.role = "slave"
            lk.role, lk.generation_id = role, generation_id
            if role in ("master", "slave") and (sw.max_generation is None
                                                or generation_id > sw.max_generation):
                sw.max_generation = generation_id
            self._update_masterless(lk.dpid)
            self.cond.notify_all()

    def error(self, link: TapLink, xid: int, err_type: int, code: int) -> None:
        with self.cond:
            lk = self._link(link)
            if lk is None:
                return
            if err_type == ofp.OFPET_ROLE_REQUEST_FAILED:
                lk.pending_roles.pop(xid, None)
            elif err_type == ofp.OFPET_BAD_REQUEST and code == ofp.OFPBRC_IS_SLAVE:
                lk.refused.add(xid)
                self.writes_refused += 1
            self.cond.notify_all()

    def write_sent(self, link: TapLink, kind: str, xid: int, barrier_xid: int) -> None:
        with self.cond:
            lk = self._link(link)
            if lk is None:
                return
            sw = self.switches[lk.dpid]
            claiming = any(r == "master" for r, _ in lk.pending_roles.values())
            why = (f"sender {lk.member} role={lk.role} gen={lk.generation_id}, switch max "
                   f"gen={sw.max_generation}, masters={self.masters(lk.dpid)}")
            if (lk.role == "master" and sw.max_generation is not None
                    and (lk.generation_id or 0) < sw.max_generation):
                # Still the switch's master, but a newer term was announced (by a SLAVE claim):
                # the documented window before the successor's MASTER claim reaches the switch.
                self.window_writes += 1
            lk.writes[barrier_xid] = _Write(kind, xid, lk.role == "master" or claiming, why)

    def barrier_reply(self, link: TapLink, xid: int) -> bool:
        """True if ``xid`` was the tap's own barrier (then the write it follows is judged)."""
        with self.cond:
            lk = self._link(link)
            write = lk.writes.pop(xid, None) if lk is not None else None
            if write is None or lk is None:
                return False
            if write.xid in lk.refused:
                lk.refused.discard(write.xid)
            else:
                self.writes_accepted += 1
                if not write.allowed:
                    self._violate("write-from-non-master",
                                  f"dpid {lk.dpid:016x} accepted {write.kind} xid={write.xid:#x}: "
                                  f"{write.why}")
            self.cond.notify_all()
            return True

    # -- internals (condition held) ------------------------------------------------------------
    def _link(self, link: TapLink) -> _Link | None:
        if link.dpid is None:
            return None
        return self.switches[link.dpid].links.get(link.id)

    def _violate(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(invariant, self.fault, detail))
        self.stats[self.fault].violations += 1

    def _update_masterless(self, dpid: int) -> None:
        sw = self.switches[dpid]
        has_master = bool(self.masters(dpid))
        now = time.monotonic()
        if not has_master and sw.masterless_since is None and self.armed:
            sw.masterless_since, sw.masterless_fault = now, self.fault
        elif has_master and sw.masterless_since is not None:
            took = now - sw.masterless_since
            stats = self.stats[sw.masterless_fault]
            stats.longest_masterless = max(stats.longest_masterless, took)
            bound = stats.bound
            if took > bound:
                self.violations.append(Violation(
                    "masterless", sw.masterless_fault,
                    f"dpid {dpid:016x} had no confirmed master for {took:.2f} s "
                    f"(bound {bound:.1f} s)"))
                stats.violations += 1
            sw.masterless_since = None

    def open_masterless(self) -> dict[int, float]:
        """Switches without a master right now, and for how long (condition held or not)."""
        with self.cond:
            now = time.monotonic()
            return {d: now - sw.masterless_since for d, sw in self.switches.items()
                    if sw.masterless_since is not None}
