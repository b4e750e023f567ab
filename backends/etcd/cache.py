"""A local mirror of `<prefix>/elections/`: every election's candidates and leader key.

What: `ElectionCache` holds that key range as of the last revision it applied: loaded from one
range read, then kept current with the events of one watch over the whole range (started at the
read's revision + 1, so nothing falls in between). `ElectionView` answers what the election
logic asks of one election: its candidates best first, and whom the leader key names.

Why: deciding who leads then costs no round trip, and a member needs one watch for all its
elections instead of one per election. The cache never decides a leadership on its own: every
leader-key write carries compares that etcd checks, so a stale cache costs a failed compare,
never a wrong term.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from coordination.driver_support import decode_rank
from coordination.types import Leadership

from .client import KeyValue, WatchEvent

LOG = logging.getLogger(__name__)
CANDIDATES = b"candidates/"
LEADER = b"leader"


@dataclass(frozen=True, slots=True)
class Ranked:
    """A candidate key and the priority its rank encodes."""

    priority: int
    kv: KeyValue

    @property
    def sort_key(self) -> tuple[int, int]:
        return -self.priority, self.kv.create_revision


def parse_rank(rest: bytes) -> int | None:
    """The priority whose rank (`coordination.driver_support.encode_rank`) heads
    `<rank>/<lease>` (a candidate key below `candidates/`), None if the key is foreign."""
    return decode_rank(rest.split(b"/", 1)[0])


def rank_candidates(prefix: bytes, kvs: Iterable[KeyValue]) -> list[Ranked]:
    """Candidates best first: highest priority, then oldest create revision."""
    out = []
    for kv in kvs:
        priority = parse_rank(kv.key[len(prefix):])
        if priority is None:
            LOG.warning("ignoring a foreign key among candidates: %r", kv.key)
            continue
        out.append(Ranked(priority, kv))
    return sorted(out, key=lambda r: r.sort_key)


def decode_doc(value: bytes) -> dict[str, Any] | None:
    """A JSON object stored in a key, or None if the value is not one."""
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


class ElectionView:
    """One election as the cache knows it."""

    __slots__ = ("candidates", "leader", "leader_doc", "leader_rev", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.candidates: dict[bytes, Ranked] = {}
        self.leader: KeyValue | None = None
        self.leader_doc: dict[str, Any] | None = None
        #: revision of the last change applied to the leader key (older events are ignored)
        self.leader_rev = 0

    def ranked(self) -> list[Ranked]:
        """Candidates best first."""
        return sorted(self.candidates.values(), key=lambda r: r.sort_key)

    def set_leader(self, kv: KeyValue | None, revision: int) -> None:
        """Apply a change of the leader key at `revision` (unless a later one is known)."""
        if revision < self.leader_rev:
            return
        self.leader_rev = revision
        self.leader = kv
        self.leader_doc = decode_doc(kv.value) if kv is not None else None

    def names(self, key: bytes, create_revision: int) -> bool:
        """Whether the leader key names this incarnation of candidate `key`."""
        doc = self.leader_doc
        return bool(doc and doc.get("candidate") == key.decode()
                    and doc.get("create_revision") == create_revision)

    def leadership(self) -> Leadership | None:
        """The leader key's leadership, while the candidacy it names still exists (a resigned
        member that campaigns again reuses its key name, not its create revision)."""
        doc, kv = self.leader_doc, self.leader
        if doc is None or kv is None or not isinstance(doc.get("member_id"), str):
            return None
        candidate = self.candidates.get(str(doc.get("candidate", "")).encode())
        if candidate is None or candidate.kv.create_revision != doc.get("create_revision"):
            return None
        return Leadership(doc["member_id"], kv.mod_revision)


class ElectionCache:
    """Every election under `root` (`<prefix>/elections/`), as of revision `revision`."""

    def __init__(self, root: bytes) -> None:
        self.root = root
        self.revision = 0
        self.loaded = False
        self.views: dict[str, ElectionView] = {}

    def view(self, name: str) -> ElectionView | None:
        return self.views.get(name)

    def _split(self, key: bytes) -> tuple[str, bytes] | None:
        """(election name, rest of the key) of a key under the root, None if it is not one."""
        name, sep, rest = key[len(self.root):].partition(b"/")
        if not sep or not name or not key.startswith(self.root):
            return None
        return name.decode("utf-8", "replace"), rest

    def _view_for(self, name: str) -> ElectionView:
        view = self.views.get(name)
        if view is None:
            view = self.views[name] = ElectionView(name)
        return view

    def _put(self, kv: KeyValue, revision: int) -> str | None:
        parsed = self._split(kv.key)
        if parsed is None:
            return None
        name, rest = parsed
        if rest == LEADER:
            self._view_for(name).set_leader(kv, revision)
        elif rest.startswith(CANDIDATES):
            priority = parse_rank(rest[len(CANDIDATES):])
            if priority is None:
                return None
            self._view_for(name).candidates[kv.key] = Ranked(priority, kv)
        else:
            return None
        return name

    def _delete(self, key: bytes, revision: int) -> str | None:
        parsed = self._split(key)
        if parsed is None:
            return None
        name, rest = parsed
        view = self.views.get(name)
        if view is None:
            return None
        if rest == LEADER:
            view.set_leader(None, revision)
        elif view.candidates.pop(key, None) is None:
            return None
        return name

    def load(self, kvs: Iterable[KeyValue], revision: int) -> set[str]:
        """Replace everything with a range read at `revision`; returns every election name
        that was or is known (each may have changed)."""
        touched = set(self.views)
        self.views = {}
        for kv in kvs:
            name = self._put(kv, kv.mod_revision)
            if name is not None:
                touched.add(name)
        self.revision = revision
        self.loaded = True
        return touched

    def apply(self, events: Iterable[WatchEvent]) -> set[str]:
        """Apply watch events (in revision order); returns the names of elections touched."""
        touched = set()
        for event in events:
            revision = event.kv.mod_revision
            if event.type == "put":
                name = self._put(event.kv, revision)
            else:
                name = self._delete(event.kv.key, revision)
            if name is not None:
                touched.add(name)
            self.revision = max(self.revision, revision)
        return touched

    def note_leader(self, name: str, kv: KeyValue) -> None:
        """Our own leader-key write succeeded at `kv.mod_revision`: know it before its event."""
        self._view_for(name).set_leader(kv, kv.mod_revision)
