"""The global topology view: store records in, one consistent picture and its changes out.

Pure logic (no Ryu, no I/O, no threads): `TopologyView.apply()` takes the `Snapshot` / `Change`
events of `TopologyStore.watch()` and returns what changed *as an application sees it*
(`ViewChange` values), which the Ryu app turns into `ryu.topology` events and which the unit
tests check directly.

What an application sees is derived from the records, not copied from them, so that a partial or
stale store never shows an impossible network:
- a switch is visible while its `Switch` record exists;
- a link is visible only while both its switches are visible and both its ports exist and are
  up (a port that went away hides its links at once, even before their owner deletes them);
- a host is visible only while its switch is visible and its port exists;
- `masters` maps a dpid to its `Mastership` record, as stored.
A change of owner or term alone (a new master re-publishing what it confirmed) changes no
visible entity, so it produces no event: failover is silent for applications.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from coordination.records import Host, Link, Mastership, Port, Record, Switch, dpid_key
from coordination.topology import Change, Snapshot, TopologyEvent

# ---- what applications see -----------------------------------------------------------------

LinkId = tuple[int, int, int, int]  # (src_dpid, src_port, dst_dpid, dst_port)


def link_id(link: Link) -> LinkId:
    return (link.src_dpid, link.src_port, link.dst_dpid, link.dst_port)


@dataclass(frozen=True)
class Topology:
    """An immutable picture of the network (what `get_topology()` returns).

    `switches`: dpid -> Switch record (with its ports); `links`: visible links, sorted;
    `hosts`: MAC -> visible Host record; `masters`: dpid -> Mastership record;
    `hidden_links`: links stored but not visible (a port missing or down, a switch unknown).
    `revision` counts the store events applied to the view.
    """

    switches: Mapping[int, Switch] = field(default_factory=dict)
    links: tuple[Link, ...] = ()
    hosts: Mapping[str, Host] = field(default_factory=dict)
    masters: Mapping[int, Mastership] = field(default_factory=dict)
    hidden_links: tuple[Link, ...] = ()
    revision: int = 0

    def port(self, dpid: int, port_no: int) -> Port | None:
        switch = self.switches.get(dpid)
        return _port_of(switch, port_no) if switch is not None else None

    def master_of(self, dpid: int) -> str | None:
        """The member id mastering `dpid`, as published; None if nobody does (a record with a
        `hint` names an elected leader the switch has not confirmed: nobody masters it)."""
        record = self.masters.get(dpid)
        return record.owner if record is not None and not record.hint else None

    def graph(self, hosts: bool = False) -> Any:
        """A `networkx.DiGraph` for path computation.

        Nodes are dpids (attributes `kind="switch"`, `address`, `master`); an edge u -> v per
        switch pair with at least one visible link, with `src_port` / `dst_port` of the link
        with the lowest source port and `links`, every parallel (src_port, dst_port). With
        `hosts`, each host is a node (its MAC, `kind="host"`, `ips`) joined both ways to its
        switch (`port` on the edge). networkx is imported here only, so the view works without.
        """
        import networkx as nx

        g = nx.DiGraph()
        for dpid, switch in self.switches.items():
            g.add_node(dpid, kind="switch", address=switch.address, master=self.master_of(dpid))
        for link in self.links:
            u, v = link.src_dpid, link.dst_dpid
            if g.has_edge(u, v):
                data = g.edges[u, v]
                data["links"].append((link.src_port, link.dst_port))
                data["links"].sort()
                data["src_port"], data["dst_port"] = data["links"][0]
            else:
                g.add_edge(u, v, src_port=link.src_port, dst_port=link.dst_port,
                           links=[(link.src_port, link.dst_port)])
        if hosts:
            for mac, host in self.hosts.items():
                g.add_node(mac, kind="host", ips=host.ips)
                g.add_edge(mac, host.dpid, port=host.port_no)
                g.add_edge(host.dpid, mac, port=host.port_no)
        return g

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (what the view dump file holds); dpids and ports as integers."""
        return {
            "revision": self.revision,
            "switches": [
                {"dpid": s.dpid, "address": s.address, "owner": s.owner, "term": s.term,
                 "ports": [{"port_no": p.port_no, "name": p.name, "hw_addr": p.hw_addr,
                            "up": p.up} for p in s.ports]}
                for s in sorted(self.switches.values(), key=lambda s: s.dpid)
            ],
            "links": [_link_dict(link) for link in self.links],
            "hidden_links": [_link_dict(link) for link in self.hidden_links],
            "hosts": [
                {"mac": h.mac, "ips": list(h.ips), "dpid": h.dpid, "port_no": h.port_no,
                 "owner": h.owner, "term": h.term}
                for h in sorted(self.hosts.values(), key=lambda h: h.mac)
            ],
            "masters": [
                {"dpid": m.dpid, "owner": m.owner, "term": m.term}
                for m in sorted(self.masters.values(), key=lambda m: m.dpid)
            ],
        }


@dataclass(frozen=True)
class ViewSummary:
    """What one `TOPOLOGY` log line says of a view (`TopologyView.summary`)."""

    revision: int
    switches: int
    links: int
    hidden_links: int
    hosts: int
    masters: int
    owners: frozenset[str]


def _link_dict(link: Link) -> dict[str, Any]:
    return {"src_dpid": link.src_dpid, "src_port": link.src_port, "dst_dpid": link.dst_dpid,
            "dst_port": link.dst_port, "owner": link.owner, "term": link.term}


# ---- changes, as applications see them ----------------------------------------------------


@dataclass(frozen=True)
class SwitchAdded:
    switch: Switch


@dataclass(frozen=True)
class SwitchRemoved:
    switch: Switch


@dataclass(frozen=True)
class SwitchUpdated:
    """The switch's address changed (ports have their own changes)."""

    switch: Switch
    previous: Switch


@dataclass(frozen=True)
class PortAdded:
    dpid: int
    port: Port


@dataclass(frozen=True)
class PortRemoved:
    dpid: int
    port: Port


@dataclass(frozen=True)
class PortModified:
    dpid: int
    port: Port
    previous: Port


@dataclass(frozen=True)
class LinkAdded:
    link: Link


@dataclass(frozen=True)
class LinkRemoved:
    link: Link


@dataclass(frozen=True)
class HostAdded:
    host: Host


@dataclass(frozen=True)
class HostRemoved:
    host: Host


@dataclass(frozen=True)
class HostMoved:
    host: Host
    previous: Host


@dataclass(frozen=True)
class HostUpdated:
    """Same place, other addresses."""

    host: Host
    previous: Host


@dataclass(frozen=True)
class MasterChanged:
    dpid: int
    master: Mastership | None
    previous: Mastership | None


ViewChange = (
    SwitchAdded | SwitchRemoved | SwitchUpdated | PortAdded | PortRemoved | PortModified
    | LinkAdded | LinkRemoved | HostAdded | HostRemoved | HostMoved | HostUpdated | MasterChanged
)


# ---- the view ------------------------------------------------------------------------------


@dataclass
class _Part:
    """The visible state of a subset of the view (what a change can affect)."""

    switches: dict[int, Switch] = field(default_factory=dict)
    links: dict[LinkId, Link] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    masters: dict[int, Mastership] = field(default_factory=dict)


def _port_of(switch: Switch, port_no: int) -> Port | None:
    for port in switch.ports:
        if port.port_no == port_no:
            return port
    return None


class TopologyView:
    """Records by kind and key, with indexes, and the visible picture derived from them.

    Thread-safe: `apply()` and the readers take one lock, so one thread may feed the view while
    others read it. Each `apply()` costs in proportion to what the change can affect (one switch:
    its links and hosts), a `Snapshot` in proportion to the whole view.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._switches: dict[int, Switch] = {}
        self._links: dict[str, Link] = {}
        self._hosts: dict[str, Host] = {}
        self._masters: dict[int, Mastership] = {}
        self._links_at: defaultdict[int, set[str]] = defaultdict(set)  # dpid -> link keys
        self._hosts_at: defaultdict[int, set[str]] = defaultdict(set)  # dpid -> host keys
        self._link_ends: Counter[tuple[int, int]] = Counter()  # (dpid, port) -> stored links
        # what `summary()` reports, kept up to date by each change (no pass over the view)
        self._visible_links = 0
        self._visible_hosts = 0
        self._owners: Counter[str] = Counter()  # owner -> switches, visible links and hosts
        #: Store events applied so far; snapshots received; of which resyncs.
        self.revision = 0
        self.snapshots = 0
        self.resyncs = 0

    # ---- feeding ---------------------------------------------------------------------------

    def apply(self, event: TopologyEvent) -> list[ViewChange]:
        """Apply one store event; return the visible changes it caused, in a safe order
        (removals of hosts and links before their ports and switches, additions after)."""
        with self._lock:
            self.revision += 1
            if isinstance(event, Snapshot):
                self.snapshots += 1
                self.resyncs += int(event.resync)
                return self._reset(event.records)
            return self._change(event)

    def _reset(self, records: Iterable[Record]) -> list[ViewChange]:
        before = self._capture_all()
        self._switches.clear()
        self._links.clear()
        self._hosts.clear()
        self._masters.clear()
        self._links_at.clear()
        self._hosts_at.clear()
        self._link_ends.clear()
        for record in records:
            self._store(record)
        after = self._capture_all()
        self._visible_links, self._visible_hosts = 0, 0
        self._owners.clear()
        self._count(after, 1)
        return _diff(before, after)

    def _change(self, change: Change) -> list[ViewChange]:
        record = change.record if change.record is not None else change.previous
        if record is None:
            return []
        current = self._get(change.kind, change.key)
        # One path keeps its kind and key, so the scope from the old and new records, taken
        # before the change, covers everything the change can make (in)visible.
        scope = self._affected(record, current)
        before = self._capture(*scope)
        if current is not None:
            self._forget(current)
        if change.record is not None:
            self._store(change.record)
        after = self._capture(*scope)
        self._count(before, -1)
        self._count(after, 1)
        return _diff(before, after)

    def _count(self, part: _Part, sign: int) -> None:
        """Add (`sign` 1) or take away (-1) a part's visible entities from the counts."""
        self._visible_links += sign * len(part.links)
        self._visible_hosts += sign * len(part.hosts)
        for record in (*part.switches.values(), *part.links.values(), *part.hosts.values()):
            left = self._owners[record.owner] + sign
            if left:
                self._owners[record.owner] = left
            else:
                del self._owners[record.owner]

    def _affected(self, record: Record, other: Record | None) -> tuple[
            frozenset[int], frozenset[str], frozenset[str], frozenset[int]]:
        """(switch dpids, link keys, host keys, master dpids) whose visibility the record
        (and the one it replaces) can change."""
        dpids: set[int] = set()
        links: set[str] = set()
        hosts: set[str] = set()
        masters: set[int] = set()
        for r in (record, other):
            if isinstance(r, Switch):
                dpids.add(r.dpid)
                links |= self._links_at.get(r.dpid, set())
                hosts |= self._hosts_at.get(r.dpid, set())
            elif isinstance(r, Link):
                links.add(r.key)
            elif isinstance(r, Host):
                hosts.add(r.key)
            elif isinstance(r, Mastership):
                masters.add(r.dpid)
        return frozenset(dpids), frozenset(links), frozenset(hosts), frozenset(masters)

    def _get(self, kind: str, key: str) -> Record | None:
        if kind == Switch.KIND:
            return self._switches.get(int(key, 16))
        if kind == Link.KIND:
            return self._links.get(key)
        if kind == Host.KIND:
            return self._hosts.get(key)
        if kind == Mastership.KIND:
            return self._masters.get(int(key, 16))
        return None

    def _store(self, record: Record) -> None:
        if isinstance(record, Switch):
            self._switches[record.dpid] = record
        elif isinstance(record, Link):
            self._links[record.key] = record
            self._links_at[record.src_dpid].add(record.key)
            self._links_at[record.dst_dpid].add(record.key)
            self._link_ends[(record.src_dpid, record.src_port)] += 1
            self._link_ends[(record.dst_dpid, record.dst_port)] += 1
        elif isinstance(record, Host):
            self._hosts[record.key] = record
            self._hosts_at[record.dpid].add(record.key)
        elif isinstance(record, Mastership):
            self._masters[record.dpid] = record

    def _forget(self, record: Record) -> None:
        if isinstance(record, Switch):
            self._switches.pop(record.dpid, None)
        elif isinstance(record, Link):
            if self._links.pop(record.key, None) is None:
                return
            for end in ((record.src_dpid, record.src_port), (record.dst_dpid, record.dst_port)):
                self._link_ends[end] -= 1
                if self._link_ends[end] <= 0:
                    del self._link_ends[end]
            for dpid in (record.src_dpid, record.dst_dpid):
                keys = self._links_at.get(dpid)
                if keys is not None:
                    keys.discard(record.key)
                    if not keys:
                        del self._links_at[dpid]
        elif isinstance(record, Host):
            self._hosts.pop(record.key, None)
            keys = self._hosts_at.get(record.dpid)
            if keys is not None:
                keys.discard(record.key)
                if not keys:
                    del self._hosts_at[record.dpid]
        elif isinstance(record, Mastership):
            self._masters.pop(record.dpid, None)

    # ---- visibility ------------------------------------------------------------------------

    def _link_visible(self, link: Link) -> bool:
        src, dst = self._switches.get(link.src_dpid), self._switches.get(link.dst_dpid)
        if src is None or dst is None:
            return False
        src_port, dst_port = _port_of(src, link.src_port), _port_of(dst, link.dst_port)
        return src_port is not None and dst_port is not None and src_port.up and dst_port.up

    def _host_visible(self, host: Host) -> bool:
        switch = self._switches.get(host.dpid)
        return switch is not None and _port_of(switch, host.port_no) is not None

    def _capture(self, dpids: Iterable[int], links: Iterable[str], hosts: Iterable[str],
                 masters: Iterable[int]) -> _Part:
        part = _Part()
        for dpid in dpids:
            if dpid in self._switches:
                part.switches[dpid] = self._switches[dpid]
        for key in links:
            link = self._links.get(key)
            if link is not None and self._link_visible(link):
                part.links[link_id(link)] = link
        for key in hosts:
            host = self._hosts.get(key)
            if host is not None and self._host_visible(host):
                part.hosts[host.key] = host
        for dpid in masters:
            if dpid in self._masters:
                part.masters[dpid] = self._masters[dpid]
        return part

    def _capture_all(self) -> _Part:
        return self._capture(self._switches, self._links, self._hosts, self._masters)

    # ---- reading ---------------------------------------------------------------------------

    def topology(self) -> Topology:
        """The current picture (a copy; safe to keep)."""
        with self._lock:
            visible, hidden = [], []
            for link in self._links.values():
                (visible if self._link_visible(link) else hidden).append(link)
            return Topology(
                switches=dict(self._switches),
                links=tuple(sorted(visible, key=link_id)),
                hosts={h.mac: h for h in self._hosts.values() if self._host_visible(h)},
                masters=dict(self._masters),
                hidden_links=tuple(sorted(hidden, key=link_id)),
                revision=self.revision,
            )

    def summary(self) -> ViewSummary:
        """Counts and owners of the current picture, as `topology()` would give them, kept as
        each change is applied: what a per-batch log line needs, at a cost that does not grow
        with the view."""
        with self._lock:
            return ViewSummary(self.revision, len(self._switches), self._visible_links,
                               len(self._links) - self._visible_links, self._visible_hosts,
                               len(self._masters), frozenset(self._owners))

    def records(self) -> list[Record]:
        """Every record the view holds (visible or not), e.g. to resynchronise another view."""
        with self._lock:
            return [*self._switches.values(), *self._links.values(), *self._hosts.values(),
                    *self._masters.values()]

    def switch(self, dpid: int) -> Switch | None:
        with self._lock:
            return self._switches.get(dpid)

    def mastership(self, dpid: int) -> Mastership | None:
        with self._lock:
            return self._masters.get(dpid)

    def links_to(self, dpid: int) -> list[Link]:
        """Stored links whose destination is `dpid` (visible or not)."""
        with self._lock:
            return [link for key in self._links_at.get(dpid, ())
                    if (link := self._links[key]).dst_dpid == dpid]

    def links_at(self, dpid: int) -> list[Link]:
        """Stored links with either end on `dpid`."""
        with self._lock:
            return [self._links[key] for key in self._links_at.get(dpid, ())]

    def hosts_on(self, dpid: int) -> list[Host]:
        """Stored hosts on `dpid` (visible or not)."""
        with self._lock:
            return [self._hosts[key] for key in self._hosts_at.get(dpid, ())]

    def host(self, mac: str) -> Host | None:
        with self._lock:
            return self._hosts.get(mac.lower().replace(":", ""))

    def is_link_port(self, dpid: int, port_no: int) -> bool:
        """Whether a stored link ends at (dpid, port_no): a port that faces a switch."""
        with self._lock:
            return (dpid, port_no) in self._link_ends

    def domains(self) -> set[int]:
        """Every dpid some record is about."""
        with self._lock:
            return set(self._switches) | set(self._masters) | set(self._links_at) | set(
                self._hosts_at)

    def __len__(self) -> int:
        with self._lock:
            return len(self._switches) + len(self._links) + len(self._hosts) + len(self._masters)


def _diff(before: _Part, after: _Part) -> list[ViewChange]:
    """Visible changes from `before` to `after`, removals of dependants first."""
    out: list[ViewChange] = []
    # hosts and links that went away, before their ports and switches
    for key, host in sorted(before.hosts.items()):
        new = after.hosts.get(key)
        if new is None:
            out.append(HostRemoved(host))
    for lid, link in sorted(before.links.items()):
        if lid not in after.links:
            out.append(LinkRemoved(link))
    for dpid, switch in sorted(before.switches.items()):
        if dpid not in after.switches:
            out.append(SwitchRemoved(switch))
    for dpid, switch in sorted(after.switches.items()):
        old = before.switches.get(dpid)
        if old is None:
            out.append(SwitchAdded(switch))
            continue
        out.extend(_port_changes(old, switch))
        if old.address != switch.address:
            out.append(SwitchUpdated(switch, old))
    for lid, link in sorted(after.links.items()):
        if lid not in before.links:
            out.append(LinkAdded(link))
    for key, host in sorted(after.hosts.items()):
        old = before.hosts.get(key)
        if old is None:
            out.append(HostAdded(host))
        elif (old.dpid, old.port_no) != (host.dpid, host.port_no):
            out.append(HostMoved(host, old))
        elif old.ips != host.ips:
            out.append(HostUpdated(host, old))
    for dpid in sorted(set(before.masters) | set(after.masters)):
        old_m, new_m = before.masters.get(dpid), after.masters.get(dpid)
        if old_m != new_m:
            out.append(MasterChanged(dpid, new_m, old_m))
    return out


def _port_changes(old: Switch, new: Switch) -> list[ViewChange]:
    old_ports = {p.port_no: p for p in old.ports}
    new_ports = {p.port_no: p for p in new.ports}
    out: list[ViewChange] = []
    for no in sorted(old_ports.keys() - new_ports.keys()):
        out.append(PortRemoved(new.dpid, old_ports[no]))
    for no in sorted(old_ports.keys() & new_ports.keys()):
        if old_ports[no] != new_ports[no]:
            out.append(PortModified(new.dpid, new_ports[no], old_ports[no]))
    for no in sorted(new_ports.keys() - old_ports.keys()):
        out.append(PortAdded(new.dpid, new_ports[no]))
    return out


def describe(change: ViewChange) -> str:
    """One short line for logs."""
    if isinstance(change, SwitchAdded | SwitchRemoved | SwitchUpdated):
        return f"{type(change).__name__} {dpid_key(change.switch.dpid)}"
    if isinstance(change, PortAdded | PortRemoved | PortModified):
        return f"{type(change).__name__} {dpid_key(change.dpid)}:{change.port.port_no}"
    if isinstance(change, LinkAdded | LinkRemoved):
        return f"{type(change).__name__} {change.link.key}"
    if isinstance(change, HostAdded | HostRemoved | HostMoved | HostUpdated):
        return f"{type(change).__name__} {change.host.mac}"
    return f"MasterChanged {dpid_key(change.dpid)} -> {change.master.owner if change.master else None}"
