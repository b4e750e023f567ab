"""What the master of a switch writes into the TopologyStore: pure decisions, no I/O.

The Ryu app feeds `Publisher` what this controller's own Ryu sees (switches and ports of every
connected switch; links and hosts its discovery found) and which switches it masters, under which
term. `plan()` compares that with the store (read through the global view) and returns the
writes that make the store say what the master sees: one `Put` per record that differs, one
`Delete` per record that is no longer true. Nothing is written when nothing changed, and since
the app calls `plan()` once per batch (not per event), a link that flaps within a batch costs no
write at all.

Ownership (who may write what), all fenced by the store with the writer's term:
- `Switch(D)` (ports included): the master of D.
- `Link(S -> D)`: the master of D, the destination. LLDP sent out of S's port arrives as a
  packet-in from D, and only D's master gets packet-ins, so that is where Ryu discovers the link.
  Every writer of one link's record is therefore a master of D, and the store's fence compares
  D-terms with D-terms.
- `Host(mac)` on D: the master of D. A host seen on another switch later is a move; whoever saw
  it most recently wins, and the earlier master forgets it (`ForgetHost`).

Failover (reconciliation): a new master of D re-publishes at once what it can see for itself (the
switch and its ports, as the switch reports them now: changes made while nobody was master are
included). Links and hosts written by the previous master are kept for `reconcile_window`
seconds, while discovery confirms them; then whatever was not confirmed is deleted (fenced by the
new term). Hosts on ports that still exist are adopted at once (Ryu only learns hosts from their
traffic, which may be rare). A record this master wrote under its current term and no longer
sees is deleted at once.
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from coordination.records import Host, Link, Port, Record, Switch, record_path

from .view import LinkId

# ---- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Put:
    """Write `record` (fenced by its term). `dpid`: the mastered switch this write is for."""

    record: Record
    dpid: int
    reason: str = ""

    @property
    def path(self) -> str:
        return record_path(self.record)


@dataclass(frozen=True)
class Delete:
    """Delete `record` unless the store holds a newer term for it (`term`, `domain`)."""

    record: Record
    term: int
    dpid: int
    reason: str = ""

    @property
    def path(self) -> str:
        return record_path(self.record)


@dataclass(frozen=True)
class ForgetHost:
    """Tell the local discovery to forget `mac` at (dpid, port_no): it moved elsewhere, so a
    later sighting here is news again."""

    mac: str
    dpid: int
    port_no: int


@dataclass(frozen=True)
class ForgetLink:
    """Tell the local discovery to forget `link`: we dropped it because a port at one of its
    ends went down or away, or its switch left. Ryu forgets the links *from* such a port (and
    their reverse), not a link *into* it whose reverse it never saw, and an LLDP that confirms
    a link it still holds raises no event: without this, that link would never be published
    again once it comes back."""

    link: LinkId


Forget = ForgetHost | ForgetLink
Op = Put | Delete


class StoredTopology(Protocol):
    """Read access to the store's records, as the view holds them (`TopologyView`)."""

    def switch(self, dpid: int) -> Switch | None: ...

    def links_to(self, dpid: int) -> list[Link]: ...

    def hosts_on(self, dpid: int) -> list[Host]: ...

    def host(self, mac: str) -> Host | None: ...

    def is_link_port(self, dpid: int, port_no: int) -> bool: ...


# ---- local observations ----------------------------------------------------------------------


@dataclass
class LocalSwitch:
    """A switch as this controller's Ryu sees it (every connected switch, master or not)."""

    address: str
    ports: dict[int, Port] = field(default_factory=dict)


@dataclass
class LocalHost:
    """A host this controller saw (or adopted); `published` once the store took our record."""

    mac: str
    dpid: int
    port_no: int
    ips: tuple[str, ...] = ()
    published: bool = False


@dataclass
class _Domain:
    term: int
    since: float
    adopted: bool = False
    window_open: bool = True


class Publisher:
    """Decides the writes of one controller. Not thread-safe: feed and plan from one thread."""

    def __init__(self, member_id: str, reconcile_window: float = 10.0,
                 overlay_ttl: float = 10.0) -> None:
        self.member_id = member_id
        self.reconcile_window = reconcile_window
        self.overlay_ttl = overlay_ttl
        self.switches: dict[int, LocalSwitch] = {}
        # What local discovery found, indexed by switch so that each event and each plan costs
        # what its switches hold, not what the whole network holds. Change them only through
        # `_add_link`, `_remove_link`, `_set_host` and `_drop_host`.
        self.links: set[LinkId] = set()
        self.hosts: dict[str, LocalHost] = {}
        self._links_at: defaultdict[int, set[LinkId]] = defaultdict(set)  # either end
        self._hosts_at: defaultdict[int, set[str]] = defaultdict(set)
        self._domains: dict[int, _Domain] = {}
        # When reconcile windows close, soonest first: (deadline, tie-break, dpid, domain); an
        # entry whose domain was replaced or removed since is skipped when it comes up.
        self._windows: list[tuple[float, int, int, _Domain]] = []
        self._tiebreak = itertools.count()
        self._refused: dict[int, int] = {}  # dpid -> term the store refused (deposed)
        self._dirty: set[int] = set()
        # Our own recent writes, until the view shows them: path -> (record or None, dpid, time)
        self._overlay: dict[str, tuple[Record | None, int, float]] = {}
        self._forget: list[Forget] = []

    # ---- mastership ----------------------------------------------------------------------

    def set_master(self, dpid: int, term: int | None, now: float) -> None:
        """We may program `dpid` under `term` (None: we may not, any more)."""
        if term is None:
            self._domains.pop(dpid, None)
            return
        if self._refused.get(dpid) == term:
            return  # the store already told us a newer term exists
        current = self._domains.get(dpid)
        if current is not None and current.term == term:
            return
        domain = self._domains[dpid] = _Domain(term=term, since=now)
        heapq.heappush(self._windows, (now + self.reconcile_window, next(self._tiebreak), dpid,
                                       domain))
        self._dirty.add(dpid)

    def deposed(self, dpid: int, term: int) -> bool:
        """The store refused a write of ours for `dpid` under `term`: a newer master exists.
        Stop writing for `dpid` until a newer term is given. True if that changed anything."""
        self._refused[dpid] = term
        current = self._domains.get(dpid)
        if current is not None and current.term <= term:
            del self._domains[dpid]
            return True
        return False

    def masters(self) -> dict[int, int]:
        """dpid -> term of every switch we publish for."""
        return {dpid: d.term for dpid, d in self._domains.items()}

    # ---- observations ----------------------------------------------------------------------

    def switch_up(self, dpid: int, address: str, ports: Iterable[Port]) -> None:
        self.switches[dpid] = LocalSwitch(address, {p.port_no: p for p in ports})
        self._dirty.add(dpid)

    def switch_down(self, dpid: int) -> None:
        self.switches.pop(dpid, None)
        self._drop_links_at(dpid)
        for mac in list(self._hosts_at.get(dpid, ())):
            self._drop_host(mac)
        self._dirty.add(dpid)

    def port_up(self, dpid: int, port: Port) -> None:
        """A port was added or modified (`port.up` says its state)."""
        switch = self.switches.get(dpid)
        if switch is None:
            return
        switch.ports[port.port_no] = port
        if not port.up:
            self._drop_links_at(dpid, port.port_no)
        self._dirty.add(dpid)

    def port_deleted(self, dpid: int, port_no: int) -> None:
        switch = self.switches.get(dpid)
        if switch is not None:
            switch.ports.pop(port_no, None)
        self._drop_links_at(dpid, port_no)
        for mac in [m for m in self._hosts_at.get(dpid, ()) if self.hosts[m].port_no == port_no]:
            self._drop_host(mac)
        self._dirty.add(dpid)

    def _drop_links_at(self, dpid: int, port_no: int | None = None) -> None:
        """Drop the links at one port of `dpid` (None: at any), and have local discovery
        forget them too (`ForgetLink`)."""
        for lid in [lid for lid in self._links_at.get(dpid, ())
                    if port_no is None or (dpid, port_no) in ((lid[0], lid[1]), (lid[2], lid[3]))]:
            self._remove_link(lid)
            self._forget.append(ForgetLink(lid))

    def link_added(self, lid: LinkId) -> None:
        self._add_link(lid)

    def link_deleted(self, lid: LinkId) -> None:
        self._remove_link(lid)

    def _add_link(self, lid: LinkId) -> None:
        if lid not in self.links:
            self.links.add(lid)
            self._links_at[lid[0]].add(lid)
            self._links_at[lid[2]].add(lid)
            self._dirty.update((lid[0], lid[2]))

    def _remove_link(self, lid: LinkId) -> None:
        if lid in self.links:
            self.links.discard(lid)
            for dpid in (lid[0], lid[2]):
                at = self._links_at.get(dpid)
                if at is not None:
                    at.discard(lid)
                    if not at:
                        del self._links_at[dpid]
            self._dirty.update((lid[0], lid[2]))

    def _set_host(self, host: LocalHost) -> None:
        self._drop_host(host.mac)
        self.hosts[host.mac] = host
        self._hosts_at[host.dpid].add(host.mac)

    def _drop_host(self, mac: str) -> None:
        host = self.hosts.pop(mac, None)
        if host is not None:
            at = self._hosts_at.get(host.dpid)
            if at is not None:
                at.discard(mac)
                if not at:
                    del self._hosts_at[host.dpid]

    def _local_link_port(self, dpid: int, port_no: int) -> bool:
        return any((lid[0], lid[1]) == (dpid, port_no) or (lid[2], lid[3]) == (dpid, port_no)
                   for lid in self._links_at.get(dpid, ()))

    def host_seen(self, mac: str, dpid: int, port_no: int, ips: Iterable[str] = ()) -> None:
        """Ryu saw `mac` on (dpid, port_no), with these addresses (merged with known ones)."""
        mac = mac.lower()
        known = self.hosts.get(mac)
        ips_t = tuple(sorted(set(ips)))
        if known is not None and (known.dpid, known.port_no) == (dpid, port_no):
            merged = tuple(sorted(set(known.ips) | set(ips_t)))
            if merged != known.ips:
                known.ips = merged
                known.published = False
                self._dirty.add(dpid)
            return
        if known is not None:
            self._dirty.add(known.dpid)
        self._set_host(LocalHost(mac, dpid, port_no, ips_t))
        self._dirty.add(dpid)

    def replace_local(self, switches: dict[int, LocalSwitch], links: Iterable[LinkId],
                      hosts: Iterable[LocalHost]) -> None:
        """A full scan of local discovery: switches and links replace ours, hosts are merged
        (Ryu forgets hosts only when their port goes, which we follow already)."""
        for dpid in set(self.switches) | set(switches):
            old, new = self.switches.get(dpid), switches.get(dpid)
            if old is None or new is None or old != new:
                self._dirty.add(dpid)
        gone = set(self.switches) - set(switches)
        self.switches = dict(switches)
        for dpid in gone:
            for mac in list(self._hosts_at.get(dpid, ())):
                self._drop_host(mac)
        links = set(links)
        for lid in self.links - links:
            self._remove_link(lid)
        for lid in links - self.links:
            self._add_link(lid)
        for host in hosts:
            self.host_seen(host.mac, host.dpid, host.port_no, host.ips)

    def stored_changed(self, dpids: Iterable[int], paths: Iterable[str] = ()) -> None:
        """Records about these switches changed in the store: re-check what we own there.
        The watch reported `paths`, so the view is now at least as new as any write of ours
        to them: stop overlaying those writes (a later write by someone else must show)."""
        self._dirty.update(dpids)
        for path in paths:
            self._overlay.pop(path, None)

    def mark_all(self) -> None:
        """Re-check every switch we master at the next `plan()` (periodic self-repair)."""
        self._dirty.update(self._domains)

    def failed(self, op: Op) -> None:
        """An op could not be done (store unreachable): check its switch again next time."""
        self._overlay.pop(op.path, None)
        self._dirty.add(op.dpid)

    # ---- decisions -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When a reconcile window closes (plan() then deletes what was not confirmed)."""
        while self._windows and not self._current_window(self._windows[0]):
            heapq.heappop(self._windows)
        return self._windows[0][0] if self._windows else None

    def _current_window(self, entry: tuple[float, int, int, _Domain]) -> bool:
        _, _, dpid, domain = entry
        return self._domains.get(dpid) is domain and domain.window_open

    @property
    def pending(self) -> bool:
        """Whether `plan()` has switches to look at."""
        return bool(self._dirty & self._domains.keys())

    def plan(self, stored: StoredTopology, now: float) -> list[Op]:
        """The writes that make the store match what we see, for every switch we master that
        changed since the last plan (or whose reconcile window just closed)."""
        while self._windows and self._windows[0][0] <= now:
            entry = heapq.heappop(self._windows)
            if self._current_window(entry):
                entry[3].window_open = False
                self._dirty.add(entry[2])
        todo = sorted(self._dirty & self._domains.keys())
        self._dirty.clear()
        if not todo:
            return []
        ops: list[Op] = []
        for dpid in todo:
            links_in = [lid for lid in self._links_at.get(dpid, ()) if lid[2] == dpid]
            ops.extend(self._plan_switch(dpid, self._domains[dpid], stored, links_in, now))
        return ops

    def take_forgotten(self) -> list[Forget]:
        """What the local discovery should forget: hosts that moved to another master's
        switch, links we dropped with their port or switch."""
        out, self._forget = self._forget, []
        return out

    def _plan_switch(self, dpid: int, domain: _Domain, stored: StoredTopology,
                     links_in: list[LinkId], now: float) -> list[Op]:
        """The ops for one mastered switch: what we see (desired) against what is stored."""
        local = self.switches.get(dpid)
        if local is None:
            return []  # mastered but not (or no longer) connected: nothing we can vouch for
        term, me = domain.term, self.member_id
        if not domain.adopted:
            self._adopt_hosts(dpid, local, stored)
            domain.adopted = True
        desired: dict[str, Record] = {}
        switch = Switch(owner=me, term=term, dpid=dpid, address=local.address,
                        ports=tuple(local.ports.values()))
        desired[record_path(switch)] = switch
        for lid in links_in:
            # Ryu discovers a link only between two switches it is connected to
            if lid[3] in local.ports and lid[0] in self.switches:
                link = Link(owner=me, term=term, src_dpid=lid[0], src_port=lid[1],
                            dst_dpid=lid[2], dst_port=lid[3])
                desired[record_path(link)] = link
        for mac in sorted(self._hosts_at.get(dpid, ())):
            host = self.hosts[mac]
            if host.port_no not in local.ports or stored.is_link_port(dpid, host.port_no) \
                    or self._local_link_port(dpid, host.port_no):
                self._drop_host(mac)  # its port went, or faces another switch: not a host
                continue
            there = self._effective(f"host/{mac.replace(':', '')}", stored.host(mac), now)
            if there is not None and there.dpid != dpid and host.published:
                self._drop_host(mac)  # seen elsewhere after we published it: it moved
                self._forget.append(ForgetHost(mac, dpid, host.port_no))
                continue
            record = Host(owner=me, term=term, mac=mac, ips=host.ips, dpid=dpid,
                          port_no=host.port_no)
            desired[record_path(record)] = record

        current: dict[str, Record] = {}
        for record in (stored.switch(dpid), *stored.links_to(dpid), *stored.hosts_on(dpid)):
            if record is not None:
                current[record_path(record)] = record
        overlaid: dict[str, Record | None] = {
            path: stored_lookup(stored, path)
            for path, (_, owner_dpid, _) in self._overlay.items()
            if owner_dpid == dpid and path not in current
        }
        ops: list[Op] = []
        for path, record in desired.items():
            if isinstance(record, Host):
                there = self._effective(path, stored.host(record.mac), now)
            else:
                there = self._effective(path, current.get(path), now)
            if there != record:
                ops.append(Put(record, dpid, "changed" if there is not None else "new"))
        for path, stored_record in [*current.items(), *overlaid.items()]:
            if path in desired:
                continue
            record = self._effective(path, stored_record, now)
            if record is None or (isinstance(record, Host) and record.dpid != dpid):
                continue
            if record.owner == me and record.term == term:
                ops.append(Delete(record, term, dpid, "no longer seen"))
            elif not domain.window_open:
                ops.append(Delete(record, term, dpid, "not confirmed after failover"))
        return ops

    def _adopt_hosts(self, dpid: int, local: LocalSwitch, stored: StoredTopology) -> None:
        """Take over the hosts the previous master published on ports that still exist."""
        for host in stored.hosts_on(dpid):
            if host.mac not in self.hosts and host.port_no in local.ports:
                self._set_host(LocalHost(host.mac, dpid, host.port_no, host.ips))

    def _effective(self, path: str, stored_record: Record | None, now: float) -> Record | None:
        """What the store holds at `path`, counting our own writes the view has not shown yet."""
        entry = self._overlay.get(path)
        if entry is None:
            return stored_record
        written, _, at = entry
        if written == stored_record or now - at > self.overlay_ttl:
            del self._overlay[path]
            return stored_record
        return written

    # ---- results ---------------------------------------------------------------------------

    def done(self, op: Op, now: float) -> None:
        """`op` succeeded (a Put that found the record unchanged counts as success)."""
        if isinstance(op, Put):
            self._overlay[op.path] = (op.record, op.dpid, now)
            if isinstance(op.record, Host):
                host = self.hosts.get(op.record.mac)
                if host is not None and (host.dpid, host.port_no) == (op.record.dpid,
                                                                       op.record.port_no):
                    host.published = True
        else:
            self._overlay[op.path] = (None, op.dpid, now)


def stored_lookup(stored: StoredTopology, path: str) -> Record | None:
    """The stored record at `path` through the view's accessors (switch, link or host)."""
    kind, _, key = path.partition("/")
    if kind == Switch.KIND:
        return stored.switch(int(key, 16))
    if kind == Host.KIND:
        return stored.host(key)
    if kind == Link.KIND:
        dst = int(key.split("-")[2], 16)
        for link in stored.links_to(dst):
            if link.key == key:
                return link
    return None
