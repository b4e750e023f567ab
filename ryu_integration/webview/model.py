"""The live view of one backend that `coordctl serve` shows: topology, leaders, members, session.

Everything is pushed by the backend, nothing is polled: the topology comes from one topology
watch (a snapshot, then every change), leaders from one leader listener per election (the
elections that exist at start, and each switch's election as its record appears), the session
from a session listener. The API has no member watch, so the member list is re-read (one store
call) after events that can change it (a leader change, a session change) and on demand; the
cost of a re-read does not depend on the number of switches.

Store data is untrusted: every string that leaves this module is made printable and cut to
`MAX_TEXT` characters; records the store layer could not decode are skipped there (and logged).
Subscribers get events as plain JSON-ready dicts, each with a sequence number `seq`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from coordination.api import Coordinator
from coordination.errors import CoordinationError
from coordination.names import election_name_problem, printable
from coordination.records import Mastership, Record, dpid_key
from coordination.topology import Change, Snapshot, TopologyEvent, TopologyWatch
from coordination.types import Leadership, SessionState

LOG = logging.getLogger(__name__)

DPID_PREFIX = "dpid-"
#: Longest string shown, in characters (member ids and election names are at most 200).
MAX_TEXT = 200
#: Events kept for a page that connects later (its feed starts with these).
HISTORY = 100

Event = dict[str, Any]
Subscriber = Callable[[Event], None]


def text(value: object) -> str:
    """An untrusted value as display text: control characters escaped, at most MAX_TEXT."""
    return printable(str(value), MAX_TEXT)


def clean(value: Any) -> Any:
    """`value` with every string (keys included) passed through `text`."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def record_doc(record: Record) -> dict[str, Any]:
    """A topology record as JSON: kind, key, owner, term and its own fields, plus the switches
    it refers to as 16-digit hex strings (`src`/`dst` of a link, `switch` of a host): JSON
    numbers above 2**53 lose precision in JavaScript, and the page joins records on these."""
    doc = {"kind": record.KIND, "key": record.key, **asdict(record)}
    if record.KIND == "link":
        doc["src"], doc["dst"] = dpid_key(record.src_dpid), dpid_key(record.dst_dpid)
    elif record.KIND == "host":
        doc["switch"] = dpid_key(record.dpid)
    return clean(doc)


def election_dpid(name: str) -> int | None:
    """The datapath id of a switch's election (`dpid-<16 hex digits>`), else None."""
    if not name.startswith(DPID_PREFIX):
        return None
    try:
        return int(name[len(DPID_PREFIX):], 16)
    except ValueError:
        return None


def leader_doc(leadership: Leadership | None) -> dict[str, Any]:
    if leadership is None:
        return {"leader": None, "term": None}
    return {"leader": text(leadership.member_id), "term": leadership.term}


class LiveView:
    """The state of one backend as the page shows it, kept current by pushed events.

    `start()` subscribes (and returns once the first topology snapshot is in), `close()`
    unsubscribes. `subscribe(callback)` returns the whole state and an unsubscribe function,
    taken atomically, so a subscriber misses no event and sees none twice.
    """

    def __init__(self, coord: Coordinator, *, backend: str = "") -> None:
        self._coord = coord
        self._backend = text(backend)
        self._lock = threading.RLock()
        self._seq = 0
        self._records: dict[str, Record] = {}
        self._leaders: dict[str, Leadership | None] = {}
        self._reported: set[str] = set()
        self._members: dict[str, dict[str, Any]] = {}
        self._session = coord.session_state
        self._history: deque[Event] = deque(maxlen=HISTORY)
        self._subscribers: list[Subscriber] = []
        self._snapshot_in = threading.Event()
        self._started = threading.Event()
        self._members_due = threading.Event()
        self._stop = threading.Event()
        self._watch: TopologyWatch | None = None
        self._refresher: threading.Thread | None = None
        self._unwatch_members: Callable[[], None] | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Subscribe to the backend; raises CoordinationError if the topology snapshot does not
        arrive within `timeout` seconds."""
        self._coord.add_session_listener(self._on_session)
        self._watch = self._coord.topology.watch(self._on_topology)
        if not self._snapshot_in.wait(timeout):
            raise CoordinationError(f"no topology snapshot from the backend within {timeout:g} s")
        self._started.set()  # from now on the watch callback observes new switches' elections
        with self._lock:
            known = {self._switch_election(r) for r in self._records.values()}
        names = sorted({n for n in self._coord.elections() if election_name_problem(n) is None}
                       | (known - {""}))
        for name in names:
            self._observe(name)
        for name, leadership in self._coord.read_leaders(names).items():
            with self._lock:
                if name not in self._reported:  # a listener's report is at least as new
                    self._leaders[name] = leadership
        # pushed where the driver can (a member evicted after its elections moved on is seen
        # too); elsewhere leader changes and session events ask for a re-read
        self._unwatch_members = self._coord.watch_members(self._members_due.set)
        self._refresh_members()
        self._refresher = threading.Thread(target=self._members_loop, name="webview-members",
                                           daemon=True)
        self._refresher.start()

    def close(self) -> None:
        self._stop.set()
        self._members_due.set()
        if self._unwatch_members is not None:
            self._unwatch_members()
        if self._watch is not None:
            self._watch.cancel()
        if self._refresher is not None:
            self._refresher.join(5)

    # ---- subscribers ------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> tuple[dict[str, Any], Callable[[], None]]:
        """The current state (`state()`) and a function that unsubscribes `callback`, which is
        called with every later event, in order, from a backend thread: it must not block."""
        with self._lock:
            self._subscribers.append(callback)
            state = self.state()

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return state, unsubscribe

    def _emit(self, event: Event, summary: Event | None = None) -> None:
        with self._lock:
            self._seq += 1
            event["seq"] = self._seq
            event["time"] = time.time()
            self._history.append({**(summary or event), "seq": self._seq,
                                  "time": event["time"]})
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:  # one broken subscriber must not stop the others
                    LOG.warning("webview subscriber failed", exc_info=True)

    # ---- documents --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the page shows, as one JSON-ready document."""
        with self._lock:
            return {
                "type": "state",
                "seq": self._seq,
                "backend": self._backend,
                "server": {"member_id": text(self._coord.member_id),
                           "session": self._session.value},
                "members": self.members(),
                "elections": self.elections(),
                "masters": self.masters(),
                "topology": self.topology(),
                "history": list(self._history),
            }

    def members(self) -> list[dict[str, Any]]:
        """Every member seen: its record, `alive` (session up now) and how many elections it
        leads. Members that went away stay listed with `alive: false`."""
        with self._lock:
            leads: dict[str, int] = {}
            for leadership in self._leaders.values():
                if leadership is not None:
                    leads[leadership.member_id] = leads.get(leadership.member_id, 0) + 1
            return [{**clean(doc), "leads": leads.get(mid, 0)}
                    for mid, doc in sorted(self._members.items())]

    def elections(self) -> list[dict[str, Any]]:
        """Every observed election: its leader and term (candidates: `election(name)`)."""
        with self._lock:
            return [{"election": name, **leader_doc(lead)}
                    for name, lead in sorted(self._leaders.items())]

    def masters(self) -> list[dict[str, Any]]:
        """Switch -> master and term, and whether the switch confirmed it (Mastership record)."""
        with self._lock:
            rows = []
            for name, lead in sorted(self._leaders.items()):
                dpid = election_dpid(name)
                if dpid is None:
                    continue
                record = self._records.get(f"mastership/{dpid_key(dpid)}")
                mine = isinstance(record, Mastership) and lead is not None \
                    and record.owner == lead.member_id
                # a Mastership record with a hint says why the switch has not confirmed
                hint = str(getattr(record, "hint", "") or "") if mine else ""
                confirmed = mine and record.term == lead.term and not hint  # type: ignore[union-attr]
                rows.append({"dpid": dpid_key(dpid), "election": name, **leader_doc(lead),
                             "confirmed": confirmed, "hint": text(hint)})
            return rows

    def topology(self) -> dict[str, list[dict[str, Any]]]:
        """The records in the store, by kind: switches, links, hosts, masterships."""
        with self._lock:
            out: dict[str, list[dict[str, Any]]] = {
                "switches": [], "links": [], "hosts": [], "masterships": []}
            plural = {"switch": "switches", "link": "links", "host": "hosts",
                      "mastership": "masterships"}
            for path in sorted(self._records):
                record = self._records[path]
                out[plural[record.KIND]].append(record_doc(record))
            return out

    def election(self, name: str) -> dict[str, Any] | None:
        """One election, read from the store now, with its candidates in rank order; None if
        the name is not a valid election name or the election has no candidates."""
        if election_name_problem(name) is not None:
            return None
        election = self._coord.election(name)
        candidates = election.candidates()
        leadership = election.leader()
        if not candidates and leadership is None:
            return None
        return {"election": name, **leader_doc(leadership),
                "candidates": [{"member_id": text(c.member_id), "priority": c.priority}
                               for c in candidates]}

    def refresh_members(self) -> list[dict[str, Any]]:
        """Re-read the member list now (and tell subscribers if it changed)."""
        self._refresh_members()
        return self.members()

    # ---- backend events (callback thread) ---------------------------------------------------

    def _observe(self, name: str) -> None:
        with self._lock:
            if name in self._leaders:
                return
            self._leaders[name] = None

        def listener(leadership: Leadership | None) -> None:
            self._on_leader(name, leadership)

        self._coord.election(name).add_leader_listener(listener)

    def _on_leader(self, name: str, leadership: Leadership | None) -> None:
        with self._lock:
            previous = self._leaders.get(name)
            self._reported.add(name)
            if previous == leadership:
                return
            self._leaders[name] = leadership
            self._emit({"type": "leader", "election": name, **leader_doc(leadership),
                        "previous": leader_doc(previous)})
        self._members_due.set()

    def _on_topology(self, event: TopologyEvent) -> None:
        observe: list[str] = []
        with self._lock:
            if isinstance(event, Snapshot):
                self._records = {f"{r.KIND}/{r.key}": r for r in event.records}
                observe = [self._switch_election(r) for r in event.records]
                if self._snapshot_in.is_set():
                    docs = [record_doc(r) for r in event.records]
                    self._emit({"type": "snapshot", "resync": event.resync, "records": docs},
                               {"type": "snapshot", "resync": event.resync,
                                "records": len(docs)})
                self._snapshot_in.set()
            elif isinstance(event, Change):
                path = f"{event.kind}/{event.key}"
                if event.record is None:
                    self._records.pop(path, None)
                else:
                    self._records[path] = event.record
                    observe = [self._switch_election(event.record)]
                owner = (event.record or event.previous).owner  # type: ignore[union-attr]
                doc = {"type": "topology", "op": event.op, "kind": event.kind,
                       "key": text(event.key), "owner": text(owner)}
                self._emit({**doc, "record": None if event.record is None
                            else record_doc(event.record)}, doc)
        if self._started.is_set():
            for name in observe:  # a switch's election, as soon as the switch is known
                if name:
                    self._observe(name)

    @staticmethod
    def _switch_election(record: Record) -> str:
        dpid = getattr(record, "dpid", None)
        return f"{DPID_PREFIX}{dpid_key(dpid)}" if record.KIND in ("switch", "mastership") \
            and isinstance(dpid, int) else ""

    def _on_session(self, state: SessionState) -> None:
        with self._lock:
            self._session = state
            self._emit({"type": "session", "state": state.value})
        self._members_due.set()

    # ---- members ----------------------------------------------------------------------------

    def _members_loop(self) -> None:
        """Re-read members when an event asked for it (one read per burst of events)."""
        while True:
            self._members_due.wait()
            if self._stop.is_set():
                return
            self._members_due.clear()
            self._refresh_members()

    def _refresh_members(self) -> None:
        if self._coord.session_state is not SessionState.CONNECTED:
            return
        try:
            live = self._coord.members()
        except CoordinationError as exc:
            LOG.warning("webview: reading members failed: %s", exc)
            return
        with self._lock:
            members = {mid: {**doc, "alive": False} for mid, doc in self._members.items()}
            for mid, info in live.items():
                if mid != self._coord.member_id:
                    members[mid] = {**info.to_dict(), "alive": True}
            if members == self._members:
                return
            self._members = members
            docs = self.members()
            self._emit({"type": "members", "members": docs},
                       {"type": "members", "alive": sum(d["alive"] for d in docs),
                        "count": len(docs)})
