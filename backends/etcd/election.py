"""Elections on etcd, run in batches from a local cache of every election.

Layout under `<prefix>/elections/<name>/`:
    candidates/<rank>/<lease id>   on the member's lease; JSON {member_id, priority};
                                   rank = MAX_PRIORITY - priority, zero-padded, so keys of a
                                   higher priority sort first
    leader                         no lease; JSON {member_id, candidate, create_revision}

Order: priority (higher first), then the candidate key's create revision (older first).

Term: a candidate that is first writes the leader key in a txn that checks, at one revision: its
candidate key still exists with the create revision it had; no key in a higher rank exists; no
key of its own rank is older; the leader key's mod revision is still the one it last saw. The
term is the revision of the txn that wrote it. Every leadership is thus a write ordered after
the previous one's write, so terms strictly increase across every change of leader. (A
candidate key's create revision would not do: a late high-priority candidate preempts and
leaves, and an older candidate returns with a smaller creation revision.) The leader key has no
lease: it outlives its leader, so the next term is ordered after it; it counts as the leader
only while the candidacy it names still exists with the same create revision.

Batches: leader keys for many elections are written by ONE txn holding one nested txn per
election (etcd >= 3.3), each with that election's compares. Every election that succeeds gets
the outer txn's revision as its term, which is still ordered after that election's previous
leader write, so the guarantee holds per election. Candidacies are created by txns of puts and
removed by txns of deletes. Each txn stays within etcd's --max-txn-ops (128 by default; a nested
txn's own compares count against it too), so 5,000 elections cost about 40 txns per step.

Cache and watch: each member mirrors the whole `elections/` range (`cache.ElectionCache`),
loaded by one range read and kept current by ONE watch from the read's revision + 1; a
compacted revision or a failed watch reloads it. Elections are decided from the cache and only
writes go to etcd; their compares, not the cache, guard every leadership. A write that fails
because the cache was behind is re-evaluated when the event that made it fail arrives (every
failed compare is a change under the watched range), and is marked unsettled for the watchdog
as well. Every step runs on the coordinator's worker thread (`ElectionEngine`); watch callbacks
only queue events for the next batch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, TypeVar

from coordination.driver_support import encode_rank
from coordination.election import BatchedElection
from coordination.errors import CoordinationError
from coordination.types import Candidate, Leadership, SessionState

from .cache import ElectionCache, ElectionView, decode_doc, rank_candidates
from .client import (
    MAX_TXN_OPS,
    Backoff,
    Compare,
    Delete,
    EtcdTooManyOps,
    Get,
    KeyValue,
    Op,
    OpResult,
    Put,
    PutResult,
    StreamHandle,
    Txn,
    TxnResult,
    WatchEvent,
    prefix_end,
)

if TYPE_CHECKING:
    from .coordinator import EtcdCoordinator

LOG = logging.getLogger(__name__)
T = TypeVar("T")
#: Compares of one election's leadership txn (what it costs against --max-txn-ops besides its
#: slot in the outer txn).
LEADER_COMPARES = 4
#: Txns of one batch in flight at once (5,000 nested leader writes measured alone on 2 vCPUs:
#: gRPC 0.25-0.28 s one at a time, 0.17-0.19 s four at once; the gateway 0.7-1.0 s, 0.47-0.54 s).
PIPELINE = 4
#: read_leaders reads the keys of up to this many elections in txns, else the whole range once.
_READ_ONE_BY_ONE = 2 * MAX_TXN_OPS


class EtcdElection(BatchedElection):
    """One election: keys, this member's candidacy, and the step that settles it."""

    coordinator: EtcdCoordinator

    def __init__(self, coordinator: EtcdCoordinator, name: str) -> None:
        super().__init__(coordinator, name)
        base = f"{coordinator.prefix}/elections/{name}/"
        self.cands = f"{base}candidates/".encode()
        self.cands_end = prefix_end(self.cands)
        self.leader_key = f"{base}leader".encode()
        # our candidacy, guarded by `lock` (the worker creates it, callers resign)
        self.key: bytes | None = None
        self.key_rev = 0
        self.key_lease = 0
        #: revision of the txn that created `key`: once the cache is past it, a missing key
        #: means deleted (before, its event is still on the way)
        self.joined_at = 0

    def band(self, priority: int) -> bytes:
        """The key prefix of every candidacy of `priority` (`encode_rank`: better sorts first)."""
        return self.cands + f"{encode_rank(priority)}/".encode()

    def candidate_key(self, priority: int, lease: int) -> bytes:
        return self.band(priority) + f"{lease:016x}".encode()

    # ---- hooks ----------------------------------------------------------------------------

    def _driver_forget(self) -> None:
        # the session's lease is gone (revoked by the coordinator, or expiring): so is the key
        with self.lock:
            self.key = None

    def _driver_read_candidates(self) -> list[Candidate]:
        def read() -> list[Candidate]:
            out = []
            for ranked in rank_candidates(self.cands,
                                          self.coordinator.range(self.cands, self.cands_end).kvs):
                doc = decode_doc(ranked.kv.value) or {}
                out.append(Candidate(str(doc.get("member_id", "?")), ranked.priority))
            return out

        return self.coordinator.call(read, "read candidates")

    # ---- worker thread ------------------------------------------------------------------------

    def settle(self, view: ElectionView | None, cache_revision: int, lease: int | None,
               connected: bool) -> Txn | str | None:
        """Act on our standing in the cached state. Returns the nested txn that makes us
        leader, "rejoin" (we campaign without a candidacy), or None (nothing to do until the
        election changes)."""
        with self.lock:
            campaign, key, key_rev = self.active_campaign, self.key, self.key_rev
            key_lease, joined_at = self.key_lease, self.joined_at
        if campaign is None:
            return None
        if key is None or key_lease != lease:
            return "rejoin" if lease is not None else None
        mine = view.candidates.get(key) if view is not None else None
        if mine is None or view is None:  # (view is None only without mine: for type checks)
            if cache_revision < joined_at:
                return None  # our create is still on its way through the watch
            LOG.info("election %s: our candidate key vanished; re-creating it", self.name)
            self.coordinator.check_lease_soon()  # a revoked lease deletes them all at once
            self._revoked()
            with self.lock:
                if self.key == key:
                    self.key = None
            return "rejoin"
        if mine.kv.create_revision != key_rev:  # re-created under the same name: that one now
            key_rev = mine.kv.create_revision
            with self.lock:
                if self.key == key:
                    self.key_rev = key_rev
        if view.ranked()[0].kv.key != key:
            self._revoked()
            return None
        leader = view.leader
        if leader is not None and view.names(key, key_rev):
            lead = self.leadership
            if lead is not None and lead.term == leader.mod_revision:
                return None  # leading, and the store agrees
            if leader.mod_revision > self.last_term:
                # our own write whose reply was lost (a retried txn): its revision is our term
                self.take(leader.mod_revision, lease)
                return None
        if not connected:
            return None  # a write waits for the session (resuming re-evaluates every election)
        band = self.band(mine.priority)
        compares = (
            Compare.create(key, "==", key_rev),  # our candidacy, this incarnation
            Compare.create(self.cands, "==", 0, band),  # no higher priority
            Compare.create(band, ">", key_rev - 1, prefix_end(band)),  # none older at ours
            Compare.mod(self.leader_key, "==", leader.mod_revision if leader else 0),
        )
        return Txn(compares, (Put(self.leader_key, self.leader_doc(key, key_rev)),))

    def leader_doc(self, key: bytes, key_rev: int) -> bytes:
        return json.dumps({"member_id": self.coordinator.member_id, "candidate": key.decode(),
                           "create_revision": key_rev}).encode()

    def take(self, term: int, lease: int | None) -> None:
        """Report leadership under `term`, unless the session holding our candidacy was
        declared lost meanwhile (its lease may be gone on the server)."""
        co = self.coordinator
        with co.session_lock:
            if lease is not None and lease == co.lease_id \
                    and co.session_state is not SessionState.LOST:
                self._elected(term)


class ElectionEngine:
    """Every election step of one member, in batches, on the coordinator's worker thread.

    Requests (join, evaluate, observe) and watch events may come from any thread; they are
    queued and the worker drains whatever is queued as one batch: apply events to the cache,
    create candidacies, settle every election that changed, report leaders to listeners.
    Store errors leave the batch's elections unsettled (the watchdog, a resumed session or a
    new one takes them up again).
    """

    def __init__(self, coordinator: EtcdCoordinator) -> None:
        self.co = coordinator
        self.cache = ElectionCache(f"{coordinator.prefix}/elections/".encode())
        self._lock = threading.Lock()
        self._joins: list[tuple[list[tuple[EtcdElection, int]], Future[None] | None]] = []
        self._evaluate: dict[EtcdElection, None] = {}
        self._observe: dict[EtcdElection, None] = {}
        self._events: list[tuple[int, list[WatchEvent]]] = []
        self._reload = False
        self._scheduled = False
        self._closed = False
        # the watch over every election (worker thread; `_gen` names the current one)
        self._watch: StreamHandle | None = None
        self._gen = 0
        self._backoff = Backoff(0.1, 2.0)
        self._timer: threading.Timer | None = None
        #: operations per txn; halved if the server allows fewer than etcd's default
        self.max_txn_ops = MAX_TXN_OPS
        self._pool: ThreadPoolExecutor | None = None  # for txns in flight at once

    # ---- requests (any thread) ------------------------------------------------------------

    def join(self, joins: list[tuple[EtcdElection, int]], wait: bool) -> Future[None] | None:
        """Queue candidacies to create; with `wait`, a future that completes once they exist."""
        future: Future[None] | None = Future() if wait else None
        with self._lock:
            self._joins.append((list(joins), future))
        self._schedule()
        return future

    def evaluate(self, election: EtcdElection) -> None:
        with self._lock:
            self._evaluate[election] = None
        self._schedule()

    def observe(self, election: EtcdElection) -> None:
        with self._lock:
            self._observe[election] = None
        self._schedule()

    def reload(self) -> None:
        """Read every election again and restart the watch (compaction, failed watch)."""
        with self._lock:
            self._reload = True
        self._schedule()

    def close(self) -> None:
        """Stop the watch and any pending retry (coordinator shutdown)."""
        with self._lock:
            self._closed = True
            self._gen += 1
            watch, self._watch = self._watch, None
            timer, self._timer = self._timer, None
            pool, self._pool = self._pool, None
        if watch is not None:
            watch.cancel()
        if timer is not None:
            timer.cancel()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def _schedule(self) -> None:
        with self._lock:
            if self._scheduled or self._closed:
                return
            self._scheduled = True
        self.co.worker.submit(self._drain)

    # ---- watch callbacks (transport thread: queue only) ---------------------------------------

    def _on_events(self, gen: int, events: list[WatchEvent]) -> None:
        with self._lock:
            if gen != self._gen:
                return
            self._events.append((gen, events))
        self._schedule()

    def _on_watch_lost(self, gen: int, why: str) -> None:
        with self._lock:
            if gen != self._gen:
                return
        self._reload_later(f"the election watch ended ({why})")

    def _reload_later(self, why: str) -> None:
        delay = self._backoff.next()
        LOG.warning("member %s: %s; reading every election again in %.2f s",
                    self.co.member_id, why, delay)
        timer = threading.Timer(delay, self.reload)
        timer.daemon = True
        with self._lock:
            if self._closed:
                return
            self._timer = timer
        timer.start()

    # ---- the batch (worker thread) ------------------------------------------------------------

    def _drain(self) -> None:
        with self._lock:
            joins, self._joins = self._joins, []
            evaluate, self._evaluate = list(self._evaluate), {}
            observe, self._observe = list(self._observe), {}
            events, self._events = self._events, []
            reload, self._reload = self._reload, False
            self._scheduled = False
            closed = self._closed
        if closed:
            for _, future in joins:
                if future is not None:
                    future.set_exception(CoordinationError("the coordinator is closing"))
            return
        started = time.monotonic()
        joined = self._join_all(joins)
        try:  # everything below only reads the cache, but a (re)load reads the store
            if reload or not self.cache.loaded:
                more, seen = self._load()
            else:
                more, seen = self._apply(events)
        except CoordinationError as exc:
            self.cache.loaded = False
            self._reload_later(f"reading the elections failed ({exc})")
            for election in joined + evaluate + observe:
                election._unsettled()
            return
        settle = list(dict.fromkeys(joined + evaluate + more))
        writes = self._settle_all(settle)
        self._report(list(dict.fromkeys(observe + seen)))
        LOG.debug("member %s: batch: %d events, %d joined, %d settled, %d leader writes in "
                  "%.3f s", self.co.member_id, sum(len(batch) for _, batch in events),
                  len(joined), len(settle), writes, time.monotonic() - started)

    def _interested(self, names: set[str]) -> tuple[list[EtcdElection], list[EtcdElection]]:
        """Of the elections named, those we campaign in and those with leader listeners."""
        campaigns, listened = [], []
        for name in names:
            election = self.co.existing_election(name)
            if not isinstance(election, EtcdElection):
                continue
            if election.campaigning:
                campaigns.append(election)
            if election.observed:
                listened.append(election)
        return campaigns, listened

    def _load(self) -> tuple[list[EtcdElection], list[EtcdElection]]:
        """Read every election at one revision R into the cache and watch from R + 1."""
        with self._lock:
            self._gen += 1
            gen = self._gen
            watch, self._watch = self._watch, None
            self._events = [item for item in self._events if item[0] == gen]
        if watch is not None:
            watch.cancel()
        self.cache.loaded = False
        root = self.cache.root
        result = self.co.call(lambda: self.co.range(root, prefix_end(root)), "read elections")
        names = self.cache.load(result.kvs, result.revision)
        names.update(e.name for e in self.co.existing_elections())  # ours may have vanished while not watched
        self._watch = self.co.client.watch(
            root, prefix_end(root), result.revision + 1,
            on_events=lambda events: self._on_events(gen, events),
            on_compacted=lambda rev: self._on_watch_lost(gen, f"revision {rev} compacted"),
            on_failed=lambda err: self._on_watch_lost(gen, str(err)),
        )
        self._backoff.reset()
        LOG.debug("member %s: %d elections read at revision %d", self.co.member_id,
                  len(self.cache.views), result.revision)
        return self._interested(names)

    def _apply(self, events: list[tuple[int, list[WatchEvent]]]
               ) -> tuple[list[EtcdElection], list[EtcdElection]]:
        touched: set[str] = set()
        for gen, batch in events:
            if gen == self._gen:
                touched |= self.cache.apply(batch)
        return self._interested(touched)

    # ---- candidacies --------------------------------------------------------------------------

    def _join_all(self, joins: list[tuple[list[tuple[EtcdElection, int]], Future[None] | None]]
                  ) -> list[EtcdElection]:
        wanted: dict[EtcdElection, int] = {}
        for batch, _ in joins:
            for election, priority in batch:
                wanted[election] = priority
        if not wanted:
            for _, future in joins:
                if future is not None:
                    future.set_result(None)
            return []
        try:
            created = self.create_candidacies(wanted)
        except Exception as exc:  # whatever it is, the callers waiting must hear of it
            LOG.warning("member %s: joining %d elections failed: %s", self.co.member_id,
                        len(wanted), exc, exc_info=not isinstance(exc, CoordinationError))
            if not isinstance(exc, CoordinationError):
                exc = CoordinationError(f"joining elections failed: {exc!r}")
            for _, future in joins:
                if future is not None:
                    future.set_exception(exc)
            for election in wanted:
                election._unsettled()
            return []
        for _, future in joins:
            if future is not None:
                future.set_result(None)
        return created

    def create_candidacies(self, wanted: dict[EtcdElection, int]) -> list[EtcdElection]:
        """Put a candidate key on our lease for every election that campaigns with this
        priority and has none (txns of puts); returns the elections that got one.

        A put that finds the key there (our own create, retried after a lost reply) keeps its
        create revision, which `prev_kv` tells us."""
        lease = self.co.lease_id
        if lease is None or self.co.session_state is SessionState.LOST:
            return []  # the next session joins them all (Coordinator._on_new_session)
        todo = []
        for election, priority in wanted.items():
            with election.lock:
                campaign = election.active_campaign
                if campaign is None or campaign.priority != priority:
                    continue  # resigned, or campaigning again under a later request
                if election.key is not None and election.key_lease == lease:
                    continue
            value = json.dumps({"member_id": self.co.member_id, "priority": priority}).encode()
            todo.append((election, priority, Put(election.candidate_key(priority, lease), value,
                                                 lease, prev_kv=True)))
        created, orphans = [], []
        for (election, priority, put), result, revision in self.txns(todo, lambda t: t[2]):
            assert isinstance(result, PutResult)
            created_at = result.prev.create_revision if result.prev is not None else revision
            with election.lock:
                campaign = election.active_campaign
                if campaign is None or campaign.priority != priority or lease != self.co.lease_id:
                    orphans.append(put.key)  # resigned while we created it
                    continue
                election.key, election.key_rev, election.key_lease = put.key, created_at, lease
                election.joined_at = revision
            created.append(election)
        if orphans:
            self.delete_keys(orphans)
        return created

    def leave(self, elections: list[EtcdElection]) -> None:
        """Delete our candidacies (caller's thread: a successor takes over once the delete is
        done, so it is not queued behind the worker's batches)."""
        keys = []
        lease = self.co.lease_id
        for election in elections:
            with election.lock:
                if election.key is not None and election.key_lease == lease:
                    keys.append(election.key)
                election.key = None  # a key on an older lease goes with that lease
        if keys:
            try:
                self.delete_keys(keys)
            except CoordinationError:
                self._delete_later(keys, lease, 0)
                raise

    def delete_keys(self, keys: list[bytes]) -> None:
        """Delete keys in txns of deletes (idempotent)."""
        self.txns(keys, Delete)

    def _delete_later(self, keys: list[bytes], lease: int | None, attempt: int) -> None:
        """Keep deleting resigned candidacies in the background while their lease lives (our
        keep-alive would otherwise keep them alive)."""
        delay = min(5.0, 0.2 * 2 ** attempt)
        LOG.warning("member %s: removing %d candidacies failed; retrying in %.1f s",
                    self.co.member_id, len(keys), delay)
        timer = threading.Timer(delay, self.co.worker.submit,
                                (self._retry_delete, keys, lease, attempt + 1))
        timer.daemon = True
        timer.start()

    def _retry_delete(self, keys: list[bytes], lease: int | None, attempt: int) -> None:
        if lease != self.co.lease_id or self.co.closed:
            return  # their lease is gone (or about to be revoked), and the keys with it
        held = {e.key for e in self.co.existing_elections()
                if isinstance(e, EtcdElection) and e.key is not None}
        keys = [k for k in keys if k not in held]  # campaigning again under the same key
        try:
            if keys:
                self.delete_keys(keys)
        except CoordinationError:
            self._delete_later(keys, lease, attempt)

    # ---- settling -----------------------------------------------------------------------------

    def _settle_all(self, elections: list[EtcdElection]) -> int:
        """Settle each election from the cache; write every leadership due in nested txns.
        Returns how many leader writes were sent."""
        if not elections:
            return 0
        co = self.co
        lease = co.lease_id
        connected = co.session_state is SessionState.CONNECTED
        writes: list[tuple[EtcdElection, Txn]] = []
        rejoin: dict[EtcdElection, int] = {}
        for election in elections:
            outcome = election.settle(self.cache.view(election.name), self.cache.revision,
                                      lease, connected)
            if isinstance(outcome, Txn):
                writes.append((election, outcome))
            elif outcome == "rejoin" and election.campaign_priority is not None:
                rejoin[election] = election.campaign_priority
        try:
            if writes:
                self._write_leaders(writes, lease)
            if rejoin and connected:
                self.create_candidacies(rejoin)  # their events bring them back here
        except CoordinationError as exc:
            LOG.warning("member %s: settling %d elections deferred: %s", co.member_id,
                        len(writes) + len(rejoin), exc)
            for election, _ in writes:
                election._unsettled()
            for election in rejoin:
                election._unsettled()
        return len(writes)

    def _write_leaders(self, writes: list[tuple[EtcdElection, Txn]], lease: int | None) -> None:
        results = self.txns(writes, lambda w: w[1], nested=LEADER_COMPARES)
        with self.co.session_lock:
            for (election, txn), result, revision in results:
                assert isinstance(result, TxnResult)
                if not result.succeeded:
                    # the cache was behind: the event that made a compare fail settles it;
                    # the watchdog looks again in case it does not
                    election._unsettled()
                    continue
                put = txn.success[0]
                assert isinstance(put, Put)
                self.cache.note_leader(election.name,
                                       KeyValue(put.key, put.value, revision, revision))
                election.take(revision, lease)

    def _report(self, elections: list[EtcdElection]) -> None:
        """Tell listeners who leads each election, as the cache says."""
        for election in elections:
            if election.observed:
                view = self.cache.view(election.name)
                election._leader_seen(view.leadership() if view is not None else None)

    # ---- txns in batches ------------------------------------------------------------------

    def txns(self, items: list[T], op: Callable[[T], Op], nested: int = 0
             ) -> list[tuple[T, OpResult, int]]:
        """One operation per item, in as few txns as --max-txn-ops allows, up to `PIPELINE` of
        them in flight at once; returns (item, its result, the revision of its txn) in order.
        `nested`: the size of the largest nested txn among the operations (its compares count
        against the limit too). The first error is raised once every txn has finished."""
        results: dict[int, tuple[T, OpResult, int]] = {}
        pending = list(range(len(items)))
        while pending:
            size = max(1, self.max_txn_ops - nested)
            chunks = [pending[i:i + size] for i in range(0, len(pending), size)]
            outcomes = self._send([[op(items[i]) for i in chunk] for chunk in chunks])
            refused: list[int] = []
            error: CoordinationError | None = None
            for chunk, outcome in zip(chunks, outcomes, strict=True):
                if isinstance(outcome, EtcdTooManyOps) and size > 1:
                    refused.extend(chunk)
                elif isinstance(outcome, CoordinationError):
                    error = error or outcome
                else:
                    for i, response in zip(chunk, outcome.responses, strict=True):
                        results[i] = (items[i], response, outcome.revision)
            if error is not None:
                raise error
            if refused:
                self.max_txn_ops = max(nested + 1, self.max_txn_ops // 2)
                LOG.warning("etcd refused %d operations in one txn; sending %d from now on "
                            "(its --max-txn-ops is below etcd's default 128)",
                            size + nested, self.max_txn_ops)
            pending = refused
        return [results[i] for i in range(len(items))]

    def _send(self, txns: list[list[Op]]) -> list[TxnResult | CoordinationError]:
        """Send txns (no compares, these operations); several at once when there are many."""
        with self._lock:
            if self._pool is None and not self._closed and len(txns) > 1:
                self._pool = ThreadPoolExecutor(PIPELINE, f"etcd-txn[{self.co.member_id}]")
            pool = self._pool
        if pool is None or len(txns) == 1:
            outcomes: list[TxnResult | CoordinationError] = []
            for ops in txns:
                try:
                    outcomes.append(self.co.txn([], ops))
                except CoordinationError as exc:
                    outcomes.append(exc)
            return outcomes
        try:
            futures = [pool.submit(self.co.txn, [], ops) for ops in txns]
        except RuntimeError:  # shut down under us: the coordinator is closing
            return [CoordinationError("the coordinator is closing")] * len(txns)
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except CoordinationError as exc:
                outcomes.append(exc)
            except CancelledError:
                outcomes.append(CoordinationError("the coordinator is closing"))
        return outcomes

    # ---- reads for callers (their own thread) ----------------------------------------------

    def read_leaders(self, elections: list[EtcdElection]) -> dict[str, Leadership | None]:
        """Each election's leader as the store says now: the leader key and candidates of
        each, two reads per election in txns, or one read of every election when many are
        asked for."""
        cache = ElectionCache(self.cache.root)
        if len(elections) > _READ_ONE_BY_ONE:
            result = self.co.range(cache.root, prefix_end(cache.root))
            cache.load(result.kvs, result.revision)
        else:
            kvs: list[KeyValue] = []
            reads = self.txns(elections, lambda e: Txn((), (Get(e.leader_key),
                                                            Get(e.cands, e.cands_end))), nested=2)
            for _, result, _ in reads:
                assert isinstance(result, TxnResult)
                kvs.extend(kv for response in result.responses
                           for kv in getattr(response, "kvs", ()))
            cache.load(kvs, 0)
        out = {}
        for election in elections:
            view = cache.view(election.name)
            out[election.name] = view.leadership() if view is not None else None
        return out
