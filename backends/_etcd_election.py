"""Elections on etcd: candidate keys on the member's lease, a persistent leader key, fencing terms.

Layout under `<prefix>/elections/<name>/`:
    candidates/<rank>/<lease id>   on the member's lease; JSON {member_id, priority};
                                   rank = MAX_PRIORITY - priority, zero-padded, so keys of a
                                   higher priority sort first
    leader                         no lease; JSON {member_id, candidate, create_revision}

Order: priority (higher first), then the candidate key's create revision (older first).

Term: a candidate that finds itself first writes the leader key in ONE txn that checks, at one
revision: its candidate key still exists with the create revision it had; no key in a higher
rank exists; no key of its own rank is older; the leader key's mod revision is still the one it
last read. The term is that txn's revision. Every leadership is thus a write ordered after the
previous one's write, so terms strictly increase across every change of leader, cluster-wide.
(A candidate key's create revision would not do: a late high-priority candidate preempts and
leaves, and an older candidate returns with a smaller creation revision.) The leader key is not
on a lease: it outlives its leader, so the next term is ordered after it; `leader()` reports it
only while the candidate it names still exists with the same create revision.

Watches, none of them a herd: a candidate watches only the key just before its own; only the
leader watches the range of higher-priority keys (preemption) and its own key. Every step runs
on the coordinator's worker thread; watch callbacks only queue work there.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coordination.election import MAX_PRIORITY, Election
from coordination.errors import CoordinationError
from coordination.types import Candidate, Leadership, SessionState

from ._etcd_client import (
    Compare,
    Delete,
    Get,
    KeyValue,
    Put,
    RangeResult,
    WatchEvent,
    WatchHandle,
    prefix_end,
)

if TYPE_CHECKING:
    from .etcd import EtcdCoordinator

LOG = logging.getLogger(__name__)
RANK_DIGITS = len(str(MAX_PRIORITY))
_SETTLE_PASSES = 20


@dataclass(frozen=True)
class _Ranked:
    rank: int
    kv: KeyValue

    @property
    def sort_key(self) -> tuple[int, int]:
        return self.rank, self.kv.create_revision


def rank_candidates(prefix: bytes, kvs: tuple[KeyValue, ...]) -> list[_Ranked]:
    """Candidates best first: lowest rank (highest priority), then oldest create revision."""
    out = []
    for kv in kvs:
        head = kv.key[len(prefix):].split(b"/", 1)[0]
        if not head.isdigit():
            LOG.warning("ignoring a foreign key among candidates: %r", kv.key)
            continue
        out.append(_Ranked(int(head), kv))
    return sorted(out, key=lambda r: r.sort_key)


def _decode(value: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(value)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


class EtcdElection(Election):
    """One election (see the module docstring for keys, order, terms and watches)."""

    coordinator: EtcdCoordinator

    def __init__(self, coordinator: EtcdCoordinator, name: str) -> None:
        super().__init__(coordinator, name)
        base = f"{coordinator.prefix}/elections/{name}/"
        self._base = base.encode()
        self._cands = f"{base}candidates/".encode()
        self._cands_end = prefix_end(self._cands)
        self._leader_key = f"{base}leader".encode()
        # our candidacy (worker thread only)
        self._key: bytes | None = None
        self._key_rev = 0
        self._key_lease = 0
        self._rank = 0
        # what the last snapshot said about the leader key
        self._leader_mod = 0
        self._leader_mine = False
        # the one watch of our candidacy, and the leader-listener watch
        self._watch: WatchHandle | None = None
        self._watch_target: tuple[Any, ...] | None = None
        self._watch_gen = 0
        self._observer: WatchHandle | None = None
        self._observer_gen = 0

    # ---- plumbing -------------------------------------------------------------------------

    def _run(self, func: Callable[..., Any], *args: Any) -> Any:
        co = self.coordinator
        return co.worker.call(co.translate(func), *args, timeout=co.op_timeout * 3)

    def _submit(self, func: Callable[..., None], *args: Any) -> None:
        self.coordinator.worker.submit(self._guarded, func, *args)

    def _guarded(self, func: Callable[..., None], *args: Any) -> None:
        """A background step; store errors wait for the next trigger (event, resume, watchdog)."""
        try:
            func(*args)
        except CoordinationError as exc:
            LOG.warning("election %s: %s deferred (%s)", self.name, func.__name__, exc)

    def _band(self, rank: int) -> bytes:
        return self._cands + f"{rank:0{RANK_DIGITS}d}/".encode()

    # ---- hooks ----------------------------------------------------------------------------

    def _driver_join(self, priority: int) -> None:
        co = self.coordinator
        if co.on_session_thread():  # a new session re-campaigns: queue it, never block there
            self._submit(self._join, priority)
        elif co.worker.in_executor():
            self._guarded(self._join, priority)
        else:
            self._run(self._join, priority)

    def _driver_leave(self) -> None:
        self._run(self._leave)

    def _driver_forget(self) -> None:
        # called on the session thread; the lease is already gone from the coordinator, so a
        # step running now on the worker stops at its next check, and this runs right after it
        self._submit(self._forget)

    def _forget(self) -> None:
        if self._key_lease != self.coordinator.lease_id:
            self._drop_watch()
            self._key = None
            self._leader_mine = False

    def _driver_reevaluate(self) -> None:
        self._submit(self._evaluate)
        if self._listeners:
            self._submit(self._observe)

    def _driver_observe(self) -> None:
        self._submit(self._observe)

    def _driver_read_leader(self) -> Leadership | None:
        return self.coordinator.call(self._read_leader, "read leader")

    def _driver_read_candidates(self) -> list[Candidate]:
        return self.coordinator.call(self._read_candidates, "read candidates")

    # ---- candidacy ------------------------------------------------------------------------

    def _join(self, priority: int) -> None:
        if self._campaign is None:
            return
        co = self.coordinator
        lease = co.lease_id
        if lease is None or co.session_state is SessionState.LOST:
            return  # the next session re-joins (Election._on_new_session)
        if self._key is None or self._key_lease != lease:
            self._create_key(priority, lease)
        self._evaluate()

    def _create_key(self, priority: int, lease: int) -> None:
        rank = MAX_PRIORITY - priority
        key = self._band(rank) + f"{lease:016x}".encode()
        value = json.dumps({"member_id": self.coordinator.member_id, "priority": priority})
        result = self.coordinator.txn([Compare.create(key, "==", 0)],
                                      [Put(key, value.encode(), lease)], [Get(key)])
        if result.succeeded:
            revision = result.revision
        else:  # already there: our own create, retried after a lost reply
            revision = result.range(0).kvs[0].create_revision
        self._drop_watch()
        self._key, self._key_rev, self._key_lease, self._rank = key, revision, lease, rank
        self._leader_mine = False

    def _leave(self) -> None:
        self._drop_watch()
        key, self._key = self._key, None
        self._leader_mine = False
        if key is not None:
            self._delete_candidacy(key, self._key_rev, self._key_lease, attempt=0)

    def _delete_candidacy(self, key: bytes, revision: int, lease: int, attempt: int) -> None:
        """Delete a candidate key of ours (only that incarnation). If etcd does not answer,
        keep trying in the background while its lease lives (our keep-alive would otherwise
        keep a resigned candidacy alive), and tell the caller the first time."""
        if lease != self.coordinator.lease_id or (attempt and self.coordinator.closed):
            return  # its lease is gone (or about to be revoked), and the key with it
        try:
            self.coordinator.txn([Compare.create(key, "==", revision)], [Delete(key)])
        except CoordinationError as exc:
            delay = min(5.0, 0.2 * 2 ** attempt)
            LOG.warning("election %s: removing our candidacy failed (%s); retrying in %.1f s",
                        self.name, exc, delay)
            timer = threading.Timer(delay, self._submit, (self._delete_candidacy, key, revision,
                                                          lease, attempt + 1))
            timer.daemon = True
            timer.start()
            if attempt == 0:
                raise

    def _leader_doc(self) -> bytes:
        return json.dumps({"member_id": self.coordinator.member_id,
                           "candidate": (self._key or b"").decode(),
                           "create_revision": self._key_rev}).encode()

    def _note_leader(self, leader: RangeResult) -> None:
        kv = leader.kvs[0] if leader.kvs else None
        self._leader_mod = kv.mod_revision if kv else 0
        doc = _decode(kv.value) if kv else None
        self._leader_mine = bool(
            doc and self._key is not None and doc.get("candidate") == self._key.decode()
            and doc.get("create_revision") == self._key_rev)

    def _evaluate(self) -> None:
        """Settle our standing: lead (establishing a term if needed) or watch our predecessor."""
        co = self.coordinator
        for _ in range(_SETTLE_PASSES):
            campaign = self._campaign
            if campaign is None:
                return
            if self._key is None or self._key_lease != co.lease_id:
                if co.lease_id is None or co.session_state is SessionState.LOST:
                    return
                self._create_key(campaign.priority, co.lease_id)
                continue
            key, revision, band = self._key, self._key_rev, self._band(self._rank)
            leadership = self.leadership
            confirm = bool(leadership and self._leader_mine
                           and self._leader_mod == leadership.term)
            compares = [
                Compare.create(key, "==", revision),  # our candidacy, this incarnation
                Compare.create(self._cands, "==", 0, band),  # no higher priority
                Compare.create(band, ">", revision - 1, prefix_end(band)),  # none older at ours
                Compare.mod(self._leader_key, "==", self._leader_mod),  # leader key as last read
            ]
            reads = [Get(self._cands, self._cands_end), Get(self._leader_key)]
            writes = [] if confirm else [Put(self._leader_key, self._leader_doc())]
            result = co.txn(compares, writes + reads, reads)
            count = len(result.responses)
            candidates, leader = result.range(count - 2), result.range(count - 1)
            self._note_leader(leader)
            if result.succeeded:
                if not confirm:
                    self._leader_mine = True
                    self._take(result.revision)  # the term: this txn's revision
                self._arm(("leader", key, band), self._cands, prefix_end(band),
                          result.revision)
                return
            ranked = rank_candidates(self._cands, candidates.kvs)
            index = next((i for i, r in enumerate(ranked) if r.kv.key == key), None)
            if index is None or ranked[index].kv.create_revision != revision:
                LOG.info("election %s: our candidate key vanished; re-creating it", self.name)
                self._revoked()
                self._drop_watch()
                self._key = None
                continue
            if index == 0:
                if self._leader_mine and (leadership is None
                                          or leadership.term != self._leader_mod):
                    # the leader key already names this candidacy: our own write, whose
                    # reply was lost (a retried txn); its revision is our term
                    self._take(self._leader_mod)
                continue  # first, but the leader key moved since we read it: try again
            self._revoked()
            predecessor = ranked[index - 1].kv.key
            if index == 1:
                # next in line: also follow the leader key (one range, up to and including
                # it), so our view of it is current and the handover takes one txn, not two
                self._arm(("follow", predecessor, "next"), predecessor,
                          self._leader_key + b"\0", result.revision)
            else:
                self._arm(("follow", predecessor), predecessor, None, result.revision)
            return
        LOG.warning("election %s did not settle in %d passes; the watchdog will retry",
                    self.name, _SETTLE_PASSES)

    def _take(self, term: int) -> None:
        """Report leadership under `term`, unless the session that holds our candidacy was
        declared lost while the txn was in flight (its lease may be gone on the server)."""
        if self._key_lease == self.coordinator.lease_id:
            self._elected(term)

    # ---- watches --------------------------------------------------------------------------

    def _arm(self, target: tuple[Any, ...], key: bytes, range_end: bytes | None,
             seen_revision: int) -> None:
        """Watch `target` for what happens after `seen_revision` (our last read).

        The watch starts "now" (etcd serves it from its synced group at once; a watch from
        an older revision can lag up to 100 ms, which would show in every quick handover),
        and if the store moved between our read and the watch's creation, we evaluate again
        to cover that gap. An existing watch on the same target already covers everything
        since an earlier revision, so it is kept.
        """
        if self._watch is not None and self._watch_target == target:
            return
        self._drop_watch()
        self._watch_gen += 1
        gen = self._watch_gen
        worker = self.coordinator.worker
        self._watch_target = target
        self._watch = self.coordinator.client.watch(
            key, range_end, 0,
            on_events=lambda events: worker.submit(self._guarded, self._on_events, gen, events),
            on_compacted=lambda _rev: worker.submit(self._guarded, self._on_watch_lost, gen),
            on_failed=lambda _err: worker.submit(self._guarded, self._on_watch_lost, gen),
            on_created=lambda revision: worker.submit(self._guarded, self._on_armed, gen,
                                                      seen_revision, revision),
        )

    def _on_armed(self, gen: int, seen_revision: int, created_revision: int) -> None:
        if gen == self._watch_gen and created_revision > seen_revision:
            self._evaluate()  # something happened between our read and the watch

    def _drop_watch(self) -> None:
        watch, self._watch, self._watch_target = self._watch, None, None
        self._watch_gen += 1
        if watch is not None:
            watch.cancel()

    def _on_events(self, gen: int, events: list[WatchEvent]) -> None:
        if gen != self._watch_gen or self._watch_target is None:
            return
        if self._watch_target[0] == "follow":
            predecessor = self._watch_target[1]
            relevant = False
            for ev in events:
                if ev.kv.key == self._leader_key:
                    self._note_leader(RangeResult((ev.kv,) if ev.type == "put" else (), 0))
                elif ev.kv.key == predecessor and ev.type == "delete":
                    relevant = True
        else:  # leading: a higher-priority newcomer, or our own key changed
            band = self._watch_target[2]
            relevant = any(ev.kv.key < band or ev.kv.key == self._key for ev in events)
        if relevant:
            self._evaluate()

    def _on_watch_lost(self, gen: int) -> None:
        if gen == self._watch_gen:
            self._watch = self._watch_target = None
            self._evaluate()

    # ---- reading --------------------------------------------------------------------------

    def _snapshot(self) -> tuple[RangeResult, RangeResult]:
        """The leader key and every candidate, at one revision."""
        result = self.coordinator.txn(
            [], [Get(self._leader_key), Get(self._cands, self._cands_end)])
        return result.range(0), result.range(1)

    def _leader_from(self, leader: RangeResult, candidates: RangeResult) -> Leadership | None:
        if not leader.kvs:
            return None
        kv = leader.kvs[0]
        doc = _decode(kv.value)
        if doc is None or not isinstance(doc.get("member_id"), str):
            return None
        candidate = str(doc.get("candidate", "")).encode()
        alive = any(c.key == candidate and c.create_revision == doc.get("create_revision")
                    for c in candidates.kvs)
        return Leadership(doc["member_id"], kv.mod_revision) if alive else None

    def _read_leader(self) -> Leadership | None:
        return self._leader_from(*self._snapshot())

    def _read_candidates(self) -> list[Candidate]:
        candidates = self.coordinator.range(self._cands, self._cands_end)
        out = []
        for ranked in rank_candidates(self._cands, candidates.kvs):
            doc = _decode(ranked.kv.value) or {}
            out.append(Candidate(str(doc.get("member_id", "?")), MAX_PRIORITY - ranked.rank))
        return out

    def _observe(self) -> None:
        """Report the leader to listeners now, and (once) watch the election for changes."""
        leader, candidates = self._snapshot()
        self._leader_seen(self._leader_from(leader, candidates))
        if self._observer is None:
            self._observer_gen += 1
            gen = self._observer_gen
            worker = self.coordinator.worker
            seen = leader.revision
            self._observer = self.coordinator.client.watch(  # from now: see `_arm`
                self._base, prefix_end(self._base), 0,
                on_events=lambda _events: worker.submit(self._guarded, self._observed, gen),
                on_compacted=lambda _rev: worker.submit(self._guarded, self._observer_lost, gen),
                on_failed=lambda _err: worker.submit(self._guarded, self._observer_lost, gen),
                on_created=lambda revision: worker.submit(self._guarded, self._observer_armed,
                                                          gen, seen, revision),
            )

    def _observer_armed(self, gen: int, seen_revision: int, created_revision: int) -> None:
        if created_revision > seen_revision:
            self._observed(gen)  # the election moved between our read and the watch

    def _observed(self, gen: int) -> None:
        if gen == self._observer_gen:
            self._leader_seen(self._read_leader())

    def _observer_lost(self, gen: int) -> None:
        if gen == self._observer_gen:
            self._observer = None
            self._observe()

    def close_watches(self) -> None:
        """Cancel every watch of this election (coordinator shutdown)."""
        self._drop_watch()
        observer, self._observer = self._observer, None
        self._observer_gen += 1
        if observer is not None:
            observer.cancel()
