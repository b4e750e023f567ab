"""Elections on ZooKeeper, run in batches.

Layout under `<prefix>/elections/<name>/`:
    candidates/c-<rank>-<member>-<seq>   ephemeral sequential, one per campaigning member;
                                         rank = MAX_PRIORITY - priority, so better sorts first
    leader                               persistent, JSON {member_id, candidate, term}

Order: rank (higher priority first), then ZooKeeper's sequence number (older first).

Term: the candidates directory's pzxid in the state where the candidate is first, i.e. the zxid
of the create or delete that made it first. The store assigns it, each state of the candidate
list has exactly one first candidate, and every change of leader is a later state, so terms are
unique and strictly increasing across leaders -- including when an older candidate returns after
a high-priority one preempted it and left. It costs no write on the handover path: the new leader
learns it from the read that tells it it is first. It publishes {member, candidate, term} in the
`leader` znode (CAS-guarded, never lowering the term) for listeners and `leader()`; a successor
(the leader before it is gone) reports its leadership (on_elected) first and publishes after,
so a handover costs one read, and `leader()` waits for the write when the first candidate has
not made it yet. A preempter (an older candidacy, perhaps a live leader, is behind it) publishes
first, for the reason below.

A preemption the old leader never saw: a higher-priority candidate may take over and vanish
(killed, evicted by a peer's failure detector) before the old leader re-reads the list. The
old leader's term is then fenced by the switch, so it must not simply go on: when the list's
cversion moved more than the changes it can see, it reads the leader znode, and if another
candidate published a newer term meanwhile it takes leadership again under the current pzxid.

A candidate znode no session owns (ephemeralOwner 0: left by a bug or by hand) is never a
candidate: the member behind it skips it with a warning instead of waiting for it forever.
A candidacy a member gave up is deleted, and a delete lost with the connection is owed and
tried again by every later batch and after a reconnect; a candidate znode named for this member,
owned by its current session but not the one it tracks (a create whose answer was lost), is
deleted when it is seen. Either would otherwise hold the election as long as the session lives.

Watches, none of them a herd: a follower watches only the candidate just before its own (a data
watch); only the leader watches the candidate list (to notice preemption by a higher priority).
An observer (leader listeners) watches the leader record and the candidacy it names. A
candidate joining at the back of the line wakes the leader alone.

Batches: every step (create directories and candidacies, read candidate lists, publish leaders,
observe for listeners) runs on the driver's worker thread over every election that needs it at
that moment, as pipelined requests and ZooKeeper transactions (`multi`). A controller joining
5,000 elections, or taking over 1,700 from a peer that died, pays a few round trips per batch,
not per election. Watch callbacks only queue elections for the next batch (kazoo #381/#426).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from kazoo.exceptions import KazooException, NodeExistsError, NoNodeError
from kazoo.protocol.states import EventType

from coordination.codec import decode_json
from coordination.driver_support import RANK_DIGITS, decode_rank, encode_rank
from coordination.election import BatchedElection
from coordination.errors import InvalidRecordError
from coordination.names import member_id_problem
from coordination.types import MAX_TERM, Candidate, Leadership, SessionState

from .client import MULTI_SIZE, TRANSIENT, BoundedClient, chunks

if TYPE_CHECKING:
    from .coordinator import ZooKeeperCoordinator

LOG = logging.getLogger(__name__)
#: Evaluation passes per batch before leftovers wait for their next watch or the watchdog.
_PASSES = 10
#: Candidacies created, and elections observed, per batch at most; the rest go in the next
#: batch. So an election woken by a watch (a takeover after a peer died) waits behind at most
#: one bounded batch, not behind thousands of joins (measured at 5,000 switches x 3 on 2 cores:
#: one batch of 1,530 joins took 5.9 s while the takeovers it held up waited).
JOIN_BATCH = 250
OBSERVE_BATCH = 500


class _JoinWaiter:
    """The future of one join request split over several batches: done with its last part,
    failed with its first failure (worker thread only)."""

    def __init__(self, future: Future[None], parts: int) -> None:
        self.future = future
        self.parts = parts

    def part_done(self) -> None:
        self.parts -= 1
        if self.parts == 0 and not self.future.done():
            self.future.set_result(None)

    def failed(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


def candidate_prefix(member_id: str, priority: int) -> str:
    """Name prefix of a candidate node; ZooKeeper appends a 10-digit sequence number."""
    return f"c-{encode_rank(priority)}-{quote(member_id, safe='')}-"


@functools.lru_cache(maxsize=1 << 15)
def parse_candidate(name: str) -> tuple[tuple[int, int], str, int] | None:
    """(sort key, member_id, priority) of a candidate node name, or None if it is not one.
    Cached: every candidate list read ranks its names again, and an eviction ranks every list
    the member has read (5,000 elections: 0.27 s under load, on the takeover's path)."""
    priority = decode_rank(name[2:2 + RANK_DIGITS])
    try:
        seq = int(name[-10:])
    except ValueError:
        return None
    member = unquote(name[3 + RANK_DIGITS:-11])
    if priority is None or not name.startswith("c-") or member_id_problem(member) is not None:
        return None
    return (-priority, seq), member, priority


def ranked(children: list[str]) -> list[tuple[str, str, int]]:
    """(node, member, priority) of each candidate, best first; foreign names are ignored."""
    out = []
    for name in children:
        parsed = parse_candidate(name)
        if parsed is not None:
            out.append((parsed[0], name, parsed[1], parsed[2]))
    return [(node, member, priority) for _, node, member, priority in sorted(out)]


def leader_doc(data: bytes) -> dict[str, Any]:
    """The published leader record, or {} if it is empty or not a valid one (logged)."""
    if not data:
        return {}
    try:
        doc = decode_json(data, "leader record")
    except InvalidRecordError as exc:
        LOG.error("ignoring %s", exc)
        return {}
    valid = (isinstance(doc, dict) and isinstance(doc.get("term"), int)
             and 0 < doc["term"] <= MAX_TERM and member_id_problem(doc.get("member_id")) is None)
    return doc if valid else {}


def leader_of(doc: dict[str, Any], children: list[str],
              orphans: set[str] | frozenset[str] = frozenset()
              ) -> Leadership | None:
    """The published leader, if the candidacy it names is still first in line (candidate
    znodes known to be `orphans` do not count)."""
    first = [c for c in ranked(children) if c[0] not in orphans]
    if first and doc and doc.get("candidate") == first[0][0]:
        return Leadership(doc["member_id"], doc["term"])
    return None


def named_candidate(doc: dict[str, Any]) -> str | None:
    """The candidate node a valid leader record names, if it is a candidate node of the
    member the record names (a record naming anything else names no leader)."""
    node = doc.get("candidate")
    if not isinstance(node, str) or "/" in node:
        return None
    parsed = parse_candidate(node)
    return node if parsed is not None and parsed[1] == doc.get("member_id") else None


def observed_leader(election: ZooKeeperElection) -> Leadership | None:
    """The leader an observer last saw: the record's, while the candidacy it names lives."""
    doc = election.seen_doc[0] if election.seen_doc else {}
    if election.named_alive and named_candidate(doc) is not None:
        return Leadership(doc["member_id"], doc["term"])
    return None


class ZooKeeperElection(BatchedElection):
    """One election: paths, this member's candidacy, and the step that settles it."""

    coordinator: ZooKeeperCoordinator

    def __init__(self, coordinator: ZooKeeperCoordinator, name: str) -> None:
        super().__init__(coordinator, name)
        self.base = f"{coordinator.prefix}/elections/{name}"
        self.cands = f"{self.base}/candidates"
        self.leader_path = f"{self.base}/leader"
        #: our candidate node's name (guarded by `lock`: the worker creates, callers resign)
        self.node: str | None = None
        #: left by a session we declared lost ourselves; deleted before the next join
        self.stale_node: str | None = None
        #: read the candidate list with a watch next time (we lead, or are likely to)
        self.watch_list = False
        #: the predecessor whose deletion we wait for (a follower's one watch)
        self.watching: str | None = None
        #: for leader listeners: the leader znode (doc, version) as last read, and whether the
        #: candidacy it names was alive then (None: not looked yet); each re-read only when
        #: its own watch fires (worker thread only)
        self.seen_doc: tuple[dict[str, Any], int] | None = None
        self.named_alive: bool | None = None
        #: the named candidacy its watch saw deleted: gone without a read (candidate names
        #: carry a sequence number, so a name never comes back)
        self.named_gone: str | None = None
        #: candidate znodes that belong to no session (not ephemeral): never candidates
        self.orphans: set[str] = set()
        #: candidate znodes named for this member but owned by another of its sessions (a
        #: previous incarnation): candidates until that session ends
        self.elsewhere: set[str] = set()
        #: the candidate list as last read by any step (for eviction's fast path: it names
        #: every candidate ranked ahead of ours, which is all a takeover needs)
        self.candidates_seen: list[str] = []
        #: while we lead: the candidate list and its cversion at our last read (`settle`)
        self.seen_list: tuple[frozenset[str], int | None] | None = None
        #: (campaign, candidate node) that `settle` found first, until `take`
        self.electing: tuple[Any, str] | None = None
        #: a read of the candidate list started when our predecessor went, for the next step
        self.prefetched: Any = None
        #: the candidate node of ours that last took leadership (the leader record may name it)
        #: and whether the one `settle` found first preempts an older candidacy
        self.preempting = False
        self.led_node: str | None = None
        #: (term, candidate node) of a leadership taken but not yet published: the write was
        #: lost with the connection; the next step that finds us still leading publishes it
        self.publish_owed: tuple[int, str | None] | None = None

    # ---- hooks ----------------------------------------------------------------------------

    def _driver_forget(self) -> None:
        with self.lock:
            if self.node is not None:
                self.stale_node, self.node = self.node, None

    def _driver_read_candidates(self) -> list[Candidate]:
        def read() -> list[Candidate]:
            zk = self.coordinator.zk
            zk.sync(self.cands)  # another member may be served by a lagging follower
            try:
                children = zk.get_children(self.cands)
            except NoNodeError:
                return []
            return [Candidate(member, priority) for _, member, priority in ranked(children)]

        return self.coordinator.translate(read)()

    # ---- kazoo's thread: queue only ---------------------------------------------------------

    def on_list_watch(self, _event: Any) -> None:
        # A leader re-reads (preemption?). A follower may still hold this one-shot watch from
        # a read that armed it just in case; its predecessor's watch covers it, so it stays
        # put, and so does a member that has resigned: no herd on a change of the list.
        if self.is_leader or (self.campaigning and self.watching is None):
            self.watch_list = True
            self.coordinator.engine.evaluate(self)

    def on_pred_watch(self, _event: Any) -> None:
        self.watching = None
        self.watch_list = True  # our predecessor went: we are likely to lead next
        # The read that tells us starts here (kazoo's thread; it does not wait): a handover
        # does not also wait for the worker to wake up. The read arms the list watch, so a
        # change after it wakes us again.
        self.prefetched = self.coordinator.engine.zk.get_children_async(
            self.cands, include_data=True, watch=self.on_list_watch)
        self.coordinator.engine.evaluate(self)

    def on_doc_watch(self, _event: Any) -> None:
        self.coordinator.engine.observe(self, "doc")

    def on_named_watch(self, event: Any) -> None:
        if event.type == EventType.DELETED:
            # the event says all a read would (that read, per survivor and per election the
            # dead leader led, was a quarter of a mass failover's requests)
            self.named_gone = event.path.rsplit("/", 1)[-1]
        self.coordinator.engine.observe(self, "named")

    # ---- worker thread ------------------------------------------------------------------------

    def settle(self, children: list[str], pzxid: int, cversion: int | None = None
               ) -> tuple[str | None, str | None]:
        """Act on our rank in this state of the candidate list. Returns (what, predecessor):
        "elected" (we are first: to take leadership under `pzxid`, then publish), "leading"
        (we still are), "check" (we lead, but a candidate came and went unseen: see below),
        "following" (the predecessor's node name comes with it), "rejoin" (our candidacy is
        gone but we campaign), or None (we do not campaign).

        A leader compares the list's `cversion` (its count of child changes) with the changes
        it can see since its last read: more means a candidate came and went unseen, maybe a
        higher priority that took over and was killed and evicted before we re-read. The
        engine then reads the leader record: if that candidate published a newer term, the
        switch has fenced ours, and we take leadership again under a newer one. (A candidate
        that takes over from a live leader publishes before it reports: `publish_first`.)"""
        with self.lock:
            campaign, node = self.active_campaign, self.node
        seen, self.seen_list = self.seen_list, None
        if campaign is None:
            return None, None
        if node is None:
            return "rejoin", None
        order = [name for name, _, _ in ranked(children) if name not in self.orphans]
        if node not in order:  # deleted by hand, or by a peer that declared us dead
            self._revoked()
            with self.lock:
                if self.node == node:
                    self.node = None
            return "rejoin", None
        index = order.index(node)
        if index > 0:
            self._revoked()
            return "following", order[index - 1]
        now = (frozenset(children), cversion)
        if self.is_leader:
            self.seen_list = now
            if cversion is None or seen is None or seen[1] is None \
                    or cversion - seen[1] <= len(seen[0] ^ now[0]):
                return "leading", None
            return "check", None
        if pzxid <= self.last_term:
            return None, None  # (`_elected` would refuse it: terms only grow)
        self.seen_list = now
        self.electing = (campaign, node)
        # Preempting: an older candidacy is behind us, so a live leader may be. It may miss
        # the change (see above) and looks for our term in the leader record: write it first.
        seq = int(node[-10:])
        self.preempting = any(int(other[-10:]) < seq for other in order[1:])
        return "elected", None  # the engine calls `take` and publishes it

    def take(self, term: int) -> bool:
        """Take the leadership settled under `term`, unless the candidacy it was settled for
        is gone meanwhile (resigned, re-entered, session lost). True if taken."""
        with self.lock:
            electing, self.electing = self.electing, None
            current = (self.active_campaign, self.node)
        if electing is None or electing[0] is not current[0] or electing[1] != current[1]:
            return False
        self.led_node = electing[1]
        self._elected(term)
        return True

    def take_prefetched(self) -> Any:
        """The read `on_pred_watch` started, once (None if there is none)."""
        prefetched, self.prefetched = self.prefetched, None
        return prefetched

    def publish_first(self) -> bool:
        """Whether the leadership `settle` found must be published before it is taken: when
        it preempts a live leader (which looks for it in the record), and when the candidacy
        led before (the record may name it under its older term, which `read_leaders` would
        take for the current one)."""
        electing = self.electing
        return electing is not None and (self.preempting or electing[1] == self.led_node)

    def leader_payload(self, term: int, node: str | None) -> bytes:
        """The leader record of our candidacy `node` under `term`."""
        return json.dumps({"member_id": self.coordinator.member_id, "candidate": node,
                           "term": term}).encode()


class ElectionEngine:
    """Every election step of one member, in batches, on the driver's worker thread.

    Requests (join, evaluate, observe) may come from any thread; they are queued and the worker
    drains whatever is queued as one batch. Transient errors (connection gone) leave the batch's
    elections to the session policy: they are re-evaluated when the session resumes, re-joined
    when a new one starts, and marked unsettled for the watchdog meanwhile.
    """

    def __init__(self, coordinator: ZooKeeperCoordinator) -> None:
        self.co = coordinator
        self._lock = threading.Lock()
        self._joins: list[tuple[list[tuple[ZooKeeperElection, int]], _JoinWaiter | None]] = []
        self._evaluate: dict[ZooKeeperElection, None] = {}
        self._observe: dict[ZooKeeperElection, set[str]] = {}
        self._scheduled = False
        #: paths of our own candidacies whose delete failed (connection lost): tried again
        self._doomed: set[str] = set()
        #: paths of our own candidacies whose delete is in flight
        self._deleting: set[str] = set()
        #: election names whose directories are known to exist (worker thread only)
        self._known: set[str] = set()
        self._root_ready = False

    @property
    def zk(self) -> BoundedClient:
        return self.co.zk

    # ---- requests (any thread) ------------------------------------------------------------

    def join(self, joins: list[tuple[ZooKeeperElection, int]], wait: bool) -> Future[None] | None:
        """Queue candidacies to create; with `wait`, a future that completes once they exist."""
        future: Future[None] | None = Future() if wait else None
        joins = list(joins)
        parts = [joins[i:i + JOIN_BATCH] for i in range(0, len(joins), JOIN_BATCH)] or [[]]
        waiter = _JoinWaiter(future, len(parts)) if future is not None else None
        with self._lock:
            self._joins.extend((part, waiter) for part in parts)
        self._schedule()
        return future

    def evaluate(self, election: ZooKeeperElection) -> None:
        with self._lock:
            self._evaluate[election] = None
        self._schedule()

    def observe(self, election: ZooKeeperElection, *parts: str) -> None:
        """Queue a report to `election`'s leader listeners, re-reading `parts` ("doc": the
        leader znode, "named": the candidacy it names; both if none is given)."""
        with self._lock:
            self._observe.setdefault(election, set()).update(parts or ("doc", "named"))
        self._schedule()

    def queued(self) -> set[ZooKeeperElection]:
        """Elections with a join, an evaluation or an observation queued: what this member
        last read of them may be out of date (a watch fired, a candidacy is being created)."""
        with self._lock:
            out = set(self._evaluate) | set(self._observe)
            out.update(e for batch, _ in self._joins for e, _ in batch)
        return out

    def forget_directories(self) -> None:
        """A new session: directories may have been removed meanwhile; look again."""
        self.co.worker.submit(self._known.clear)

    def _schedule(self) -> None:
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        self.co.worker.submit(self._drain)

    # ---- the batch (worker thread) ----------------------------------------------------------

    def _drain(self) -> None:
        """One batch: the elections woken by watches first (a takeover must not wait behind
        bulk work), then at most `JOIN_BATCH` candidacies, then at most `OBSERVE_BATCH`
        reports to listeners; what is left goes in the next batch, queued at once."""
        with self._lock:
            joins, count = [], 0
            while self._joins and count < JOIN_BATCH:
                joins.append(self._joins.pop(0))
                count += len(joins[-1][0])
            evaluate, self._evaluate = list(self._evaluate), {}
            observe = dict(itertools.islice(self._observe.items(), OBSERVE_BATCH))
            for election in observe:
                del self._observe[election]
            more = self._scheduled = bool(self._joins or self._observe)
            doomed = list(self._doomed)
        started = time.monotonic()
        try:
            self._delete_paths(doomed)
            joining = {e for batch, _ in joins for e, _ in batch}
            self._evaluate_all([e for e in evaluate if e not in joining])
            joined = self._join_all(joins)
            self._evaluate_all(list(dict.fromkeys(joined + [e for e in evaluate if e in joining])))
            self._observe_all(observe)
            LOG.debug("member %s: election batch: %d joined, %d evaluated, %d observed in %.3f s",
                      self.co.member_id, len(joined), len(evaluate), len(observe),
                      time.monotonic() - started)
        except TRANSIENT + (KazooException,) as exc:
            log = LOG.debug if isinstance(exc, TRANSIENT) else LOG.warning
            log("member %s: election batch deferred: %s", self.co.member_id,
                self.co._driver_translate_error(exc))
            for election in joined_or(joins) + evaluate + list(observe):
                election._unsettled()
        finally:
            if more:
                self.co.worker.submit(self._drain)

    def _join_all(self, joins: list[tuple[list[tuple[ZooKeeperElection, int]],
                                          _JoinWaiter | None]]) -> list[ZooKeeperElection]:
        wanted: dict[ZooKeeperElection, int] = {}
        for batch, _ in joins:
            for election, priority in batch:
                wanted[election] = priority
        try:
            created = self.create_candidacies(wanted)
        except Exception as exc:  # every joiner hears of it, translated
            error = self.co._driver_translate_error(exc)
            for _, waiter in joins:
                if waiter is not None:
                    waiter.failed(error)
            if isinstance(exc, TRANSIENT + (KazooException,)):
                raise
            LOG.error("member %s: joining %d elections failed: %s", self.co.member_id,
                      len(wanted), error)
            return []
        for _, waiter in joins:
            if waiter is not None:
                waiter.part_done()
        return created

    def create_candidacies(self, wanted: dict[ZooKeeperElection, int]) -> list[ZooKeeperElection]:
        """Create a candidate node for every election that campaigns and has none; returns the
        elections to evaluate."""
        todo = []
        stale = []
        for election, priority in wanted.items():
            with election.lock:
                if election.stale_node:
                    stale.append(f"{election.cands}/{election.stale_node}")
                    election.stale_node = None
                if election.active_campaign is not None and election.node is None:
                    todo.append((election, priority))
        if stale:
            self._delete_paths(stale)
        self.prepare([e for e, _ in todo])
        paths: list[tuple[tuple[ZooKeeperElection, int], Any]] = []
        for chunk in chunks(todo):
            results = self.zk.multi(lambda t, chunk=chunk: [
                t.create(f"{e.cands}/{candidate_prefix(self.co.member_id, p)}",
                         ephemeral=True, sequence=True) for e, p in chunk])
            if any(isinstance(r, Exception) for r in results):
                # a directory vanished under us: make sure of each, then one by one
                self._ensure_directories([e for e, _ in chunk])
                results = [r for _, r in self.zk.pipelined(chunk, lambda item: self.zk.create_async(
                    f"{item[0].cands}/{candidate_prefix(self.co.member_id, item[1])}",
                    ephemeral=True, sequence=True))]
            paths.extend(zip(chunk, results, strict=True))
        orphans = []
        created = []
        for (election, _), result in paths:
            if isinstance(result, Exception):
                raise result
            name = result.rsplit("/", 1)[1]
            with election.lock:
                if election.active_campaign is None or election.node is not None:
                    orphans.append(result)  # resigned (or joined) while we created it
                    continue
                election.node = name
            created.append(election)
        if orphans:
            self._delete_paths(orphans)
        return created

    def prepare(self, elections: list[ZooKeeperElection]) -> None:
        """Make sure every election's directories and leader znode exist: a listing of the
        elections directory, then transactions for the missing ones. Members starting together
        race to create the same elections; a transaction that lost the race is dropped and the
        listing taken again, so the race costs a round trip, not one create per election."""
        missing = [e for e in elections if e.name not in self._known]
        if not missing:
            return
        root = f"{self.co.prefix}/elections"
        if not self._root_ready:
            self.zk.ensure_path(root)
            self._root_ready = True
        for _ in range(3):
            self._known.update(self.zk.get_children(root))
            missing = list({e.name: e for e in missing if e.name not in self._known}.values())
            raced = False
            for chunk in chunks(missing, MULTI_SIZE // 3):
                results = self.zk.multi(lambda t, chunk=chunk: [
                    op for e in chunk for op in (t.create(e.base), t.create(e.cands),
                                                 t.create(e.leader_path, b""))])
                if any(isinstance(r, Exception) for r in results):
                    raced = True
                else:
                    self._known.update(e.name for e in chunk)
            if not raced:
                return
        self._ensure_directories([e for e in missing if e.name not in self._known])
        self._known.update(e.name for e in missing)

    def _ensure_directories(self, elections: list[ZooKeeperElection]) -> None:
        paths = [p for e in elections for p in (e.base, e.cands, e.leader_path)]
        for _, result in self.zk.pipelined(paths, lambda p: self.zk.create_async(p, b"")):
            if isinstance(result, Exception) and not isinstance(result, NodeExistsError):
                raise result

    def _delete_paths(self, paths: list[str]) -> None:
        """Delete candidacies we gave up. A path whose delete the lost connection left
        unanswered goes to `_doomed`, and every later batch tries it again (`retry_deletes`):
        a candidacy our live session keeps ahead in line would hold its election, and every
        member behind it, for as long as the session lives."""
        if not paths:
            return
        with self._lock:
            self._deleting.update(paths)
        try:
            results = self.zk.pipelined(paths, self.zk.delete_async)  # raises if the link is gone
        except BaseException:
            with self._lock:
                self._doomed.update(paths)
            raise
        finally:
            with self._lock:
                self._deleting.difference_update(paths)
        with self._lock:  # done, or an error that trying again will not change
            self._doomed.difference_update(paths)
        for _, result in results:
            if isinstance(result, Exception) and not isinstance(result, NoNodeError):
                raise result

    def retry_deletes(self) -> None:
        """Schedule a batch if a delete is still owed (after a reconnect)."""
        with self._lock:
            owed = bool(self._doomed)
        if owed:
            self._schedule()

    def _evaluate_all(self, elections: list[ZooKeeperElection]) -> None:
        """Read each candidate list and act on our rank. A leader reads it with a watch (to
        notice preemption by a higher priority); a follower watches only its predecessor, so a
        candidate joining at the back of the line wakes nobody but the leader. Repeats for the
        elections that must re-read with a watch, or re-create a vanished candidacy."""
        for _ in range(_PASSES):
            if not elections:
                return
            watched = {}
            for election in elections:
                watched[election], election.watch_list = election.watch_list, False
            publish: list[tuple[ZooKeeperElection, int]] = []
            rejoin: dict[ZooKeeperElection, int] = {}
            follow: list[tuple[ZooKeeperElection, str]] = []
            again: list[ZooKeeperElection] = []
            recheck: list[tuple[ZooKeeperElection, int]] = []
            owed: list[tuple[ZooKeeperElection, int, str | None]] = []
            reads = self.zk.pipelined(elections, lambda e, watched=watched: (
                e.take_prefetched() or self.zk.get_children_async(
                    e.cands, include_data=True,
                    watch=e.on_list_watch if watched[e] or e.is_leader else None)))
            leftovers: list[tuple[ZooKeeperElection, str]] = []
            for election, result in reads:
                if isinstance(result, NoNodeError):
                    children, pzxid, cversion = [], 0, None
                elif isinstance(result, Exception):
                    raise result
                else:
                    children, pzxid, cversion = result[0], result[1].pzxid, result[1].cversion
                election.candidates_seen = children
                ours = self.untracked_own(election, children)
                if ours:  # settled once they are gone: one may stand ahead of our candidacy
                    leftovers.extend((election, node) for node in ours)
                    again.append(election)
                    continue
                outcome, predecessor = election.settle(children, pzxid, cversion)
                if outcome != "following":
                    election.watching = None
                if outcome == "elected" and not watched[election]:
                    election.watch_list = True  # read again, now with the watch
                    again.append(election)
                if outcome == "elected":
                    publish.append((election, pzxid))
                elif outcome == "check":
                    recheck.append((election, pzxid))
                elif outcome == "leading" and election.publish_owed is not None:
                    owed.append((election, *election.publish_owed))
                elif outcome == "following" and predecessor is not None:
                    election.watching = predecessor
                    follow.append((election, predecessor))
                elif outcome == "rejoin" and election.campaign_priority is not None:
                    rejoin[election] = election.campaign_priority
            publish.extend(self.preempted_unseen(recheck))
            if publish or owed:
                # A successor reports first, then publishes: a handover costs only the read
                # that told it it leads, and `read_leaders` waits for the record to name it.
                # A preempter publishes first (`publish_first`). A publish lost with the
                # connection is owed until a later step finds us still leading (else the
                # record would name no leader for as long as we lead).
                first = [(e, t, e.electing[1]) for e, t in publish if e.publish_first()]
                self.publish(first)
                published = {e for e, _, _ in first}
                taken = [(e, t, e.led_node) for e, t in publish if e.take(t)]
                for election, term, node in taken:
                    election.publish_owed = (term, node)
                self.publish([item for item in taken if item[0] not in published] + owed)
                for election, _, _ in taken + owed:
                    election.publish_owed = None
            checks = self.zk.pipelined(follow, lambda item: self.zk.exists_async(
                f"{item[0].cands}/{item[1]}", watch=item[0].on_pred_watch))
            for (election, predecessor), stat in checks:
                if stat is None:  # the predecessor left before we watched it
                    election.watching = None
                    election.watch_list = True
                    again.append(election)
                elif isinstance(stat, Exception):
                    raise stat
                elif stat.ephemeralOwner == 0:  # no session owns it: not a real candidate
                    self.orphan_found(election, predecessor)
                    election.watching = None
                    election.watch_list = True
                    again.append(election)
            if leftovers:
                self.delete_lost_candidacies(leftovers)
            connected = self.co.session_state is SessionState.CONNECTED
            if rejoin and connected:
                again.extend(self.create_candidacies(rejoin))
            elections = list(dict.fromkeys(again))
        for election in elections:
            LOG.warning("election %s did not settle; the watchdog will retry", election.name)
            election._unsettled()

    def untracked_own(self, election: ZooKeeperElection, children: list[str]) -> list[str]:
        """Candidate nodes in `children` named for this member that are not the candidacy it
        tracks: normally none. One appears when a create's answer was lost (the connection
        dropped after the server applied it) or a delete of a candidacy left behind failed.
        A candidacy whose delete is under way (resigned: its node is no longer tracked, its
        delete not yet answered) is not one: a list read meanwhile still names it."""
        member, node = self.co.member_id, election.node
        if election.elsewhere:
            election.elsewhere.intersection_update(children)
        return [name for name in children if name != node and name not in election.orphans
                and name not in election.elsewhere
                and (parsed := parse_candidate(name)) is not None and parsed[1] == member
                and (path := f"{election.cands}/{name}") not in self._deleting
                and path not in self._doomed]

    def delete_lost_candidacies(self, found: list[tuple[ZooKeeperElection, str]]) -> None:
        """Delete the candidacies of ours we lost track of that our current session owns. Such
        a node lives as long as the session, and ranked ahead of our tracked candidacy it would
        hold the election (every member behind it) forever. Those of another session (a
        previous incarnation of this member) go with that session, or with its eviction."""
        session = (self.zk.client.client_id or (None,))[0]
        if session is None:  # no session to tell ours from another's: look again later
            return
        stats = self.zk.pipelined(found, lambda item: self.zk.exists_async(
            f"{item[0].cands}/{item[1]}"))
        lost = []
        for (election, node), stat in stats:
            if stat is None or isinstance(stat, Exception):
                continue  # gone already, or looked at again next time
            if stat.ephemeralOwner == session:
                LOG.warning("election %s: deleting candidate znode %s, ours but no longer "
                            "tracked (a create whose answer was lost, or a leftover delete "
                            "that failed)", election.name, node)
                lost.append(f"{election.cands}/{node}")
            elif stat.ephemeralOwner == 0:
                self.orphan_found(election, node)
            else:
                election.elsewhere.add(node)  # a real candidate while its session lives
        self._delete_paths(lost)

    def preempted_unseen(self, leaders: list[tuple[ZooKeeperElection, int]]
                         ) -> list[tuple[ZooKeeperElection, int]]:
        """Of these leaders that missed a change of their candidate list, those whose leader
        record names another candidate with a newer term (it took over and is gone): those
        must be elected again under the current pzxid (returned, to publish then elect)."""
        again = []
        reads = self.zk.pipelined(leaders, lambda item: self.zk.get_async(item[0].leader_path))
        for (election, pzxid), result in reads:
            if isinstance(result, Exception):
                continue  # no record to go by: keep leading
            doc, lead = leader_doc(result[0]), election.leadership
            if lead is not None and doc.get("term", 0) > lead.term \
                    and doc.get("candidate") != election.node:
                LOG.info("election %s: %s led under term %d while we did not look; taking "
                         "leadership again under a newer term", election.name,
                         doc.get("member_id"), doc["term"])
                election.electing = (election.active_campaign, election.node)
                again.append((election, pzxid))
        return again

    def orphan_found(self, election: ZooKeeperElection, node: str) -> None:
        if node not in election.orphans:
            election.orphans.add(node)
            LOG.warning("election %s: candidate znode %s is not ephemeral (no session owns "
                        "it): skipping it; delete it by hand", election.name, node)

    def find_orphans(self, elections: list[tuple[ZooKeeperElection, list[str], str | None]]
                     ) -> bool:
        """For each (election, candidate list, candidate its leader record names): look at
        the candidates ranked ahead of the named one (all of them if it names none) and
        remember those no session owns. True if any was found."""
        ahead = []
        for election, children, named in elections:
            for node, _, _ in ranked(children):
                if node == named:
                    break
                if node not in election.orphans:
                    ahead.append((election, node))
        found = False
        for (election, node), stat in self.zk.pipelined(ahead, lambda item: self.zk.exists_async(
                f"{item[0].cands}/{item[1]}")):
            if stat is not None and not isinstance(stat, Exception) and stat.ephemeralOwner == 0:
                self.orphan_found(election, node)
                found = True
        return found

    def publish(self, leaders: list[tuple[ZooKeeperElection, int, str | None]]) -> None:
        """Write each (election, term, our candidate node) into its `leader` znode, unless a
        newer term is there: pipelined reads, then transactions of version-checked writes."""
        writes = [(e, t, n, e.seen_doc[1]) for e, t, n in leaders  # observed: no read needed
                  if e.seen_doc is not None and e.seen_doc[0].get("term", -1) < t]
        leaders = [(e, t, n) for e, t, n in leaders if e.seen_doc is None]
        for _ in range(5):
            if not (leaders or writes):
                return
            reads = self.zk.pipelined(leaders, lambda item: self.zk.get_async(item[0].leader_path))
            for (election, term, node), result in reads:
                if isinstance(result, NoNodeError):
                    version = -2  # vanished: re-create it
                elif isinstance(result, Exception):
                    raise result
                elif leader_doc(result[0]).get("term", -1) >= term:
                    continue
                else:
                    version = result[1].version
                writes.append((election, term, node, version))
            leaders = []
            for chunk in chunks(writes):
                results = self.zk.multi(lambda t, chunk=chunk: [
                    t.create(e.leader_path, e.leader_payload(term, node)) if version == -2
                    else t.set_data(e.leader_path, e.leader_payload(term, node), version)
                    for e, term, node, version in chunk])
                if any(isinstance(r, Exception) for r in results):  # someone raced: re-read
                    leaders.extend((e, term, node) for e, term, node, _ in chunk)
            writes = []

    def _observe_all(self, observe: dict[ZooKeeperElection, set[str]]) -> None:
        """Tell listeners who leads each election: the leader the record names, while the
        candidacy it names is alive. Both are watched and re-read only when their watch
        fires, so a published leader costs each observer a read of the record and one of the
        candidacy it names; a candidate joining behind the leader wakes no observer.

        The candidate list is not watched here: the only changes of it that change who leads
        are the named candidacy going (its own watch) and a candidacy of higher priority
        taking over, which publishes before it takes (`publish_first`)."""
        if not observe:
            return
        self.prepare(list(observe))
        docs = [e for e, parts in observe.items() if "doc" in parts or e.seen_doc is None]
        for election, result in self.zk.pipelined(docs, lambda e: self.zk.get_async(
                e.leader_path, watch=e.on_doc_watch)):
            if isinstance(result, NoNodeError):
                result = (b"", None)
            elif isinstance(result, Exception):
                raise result
            data, stat = result
            election.seen_doc = (leader_doc(data), -2 if stat is None else stat.version)
            election.named_alive = None
        named = []
        for election, parts in observe.items():
            node = named_candidate(election.seen_doc[0] if election.seen_doc else {})
            if node is None or node == election.named_gone:
                election.named_alive = False
            elif "named" in parts or election.named_alive is None:
                named.append((election, node))
        # a read, not `exists`: on a znode already gone it leaves no watch behind in the server
        for (election, node), result in self.zk.pipelined(named, lambda item: self.zk.get_async(
                f"{item[0].cands}/{item[1]}", watch=item[0].on_named_watch)):
            if isinstance(result, NoNodeError):
                election.named_alive = False
            elif isinstance(result, Exception):
                raise result
            elif result[1].ephemeralOwner == 0:  # no session owns it: not a real candidate
                self.orphan_found(election, node)
                election.named_alive = False
            else:
                election.named_alive = True
        for election in observe:
            election._leader_seen(observed_leader(election))

    # ---- reads for callers (their own thread) ----------------------------------------------

    def read_leaders(self, elections: list[ZooKeeperElection]) -> dict[str, Leadership | None]:
        """Each election's leader. If a first candidate has not published yet (the moment
        after a handover), wait for its write: pushed by a watch, bounded by the operation
        timeout."""
        self.zk.sync(f"{self.co.prefix}/elections")
        changed = threading.Event()
        deadline = time.monotonic() + self.co.op_timeout
        out: dict[str, Leadership | None] = {}
        pending = elections
        for _ in range(3):
            changed.clear()
            items = [(e, kind) for e in pending for kind in ("doc", "list")]
            results = dict(self.zk.pipelined(items, lambda item: (
                self.zk.get_async(item[0].leader_path, watch=lambda _event: changed.set())
                if item[1] == "doc" else self.zk.get_children_async(item[0].cands))))
            unsettled = []
            for election in pending:
                doc, children = results[(election, "doc")], results[(election, "list")]
                if isinstance(children, NoNodeError) or not isinstance(children, list):
                    out[election.name] = None
                    if not isinstance(children, NoNodeError):
                        raise children
                    continue
                if isinstance(doc, Exception) and not isinstance(doc, NoNodeError):
                    raise doc
                record = {} if isinstance(doc, Exception) else leader_doc(doc[0])
                lead = leader_of(record, children, election.orphans)
                if lead is None and record.get("candidate") in children \
                        and self.find_orphans([(election, children, record.get("candidate"))]):
                    lead = leader_of(record, children, election.orphans)
                out[election.name] = lead
                if lead is None and ranked(children):
                    unsettled.append(election)
            pending = unsettled
            if not pending or not changed.wait(max(0.0, deadline - time.monotonic())):
                break
        return out

    def leave(self, elections: list[ZooKeeperElection]) -> None:
        """Delete our candidacies (caller's thread: a successor's wait starts with the
        delete, so it is not queued behind the worker's batches)."""
        paths = []
        for election in elections:
            with election.lock:
                mine = [f"{election.cands}/{node}"
                        for node in (election.node, election.stale_node) if node]
                with self._lock:  # in flight before untracked: see `untracked_own`
                    self._deleting.update(mine)
                election.node = election.stale_node = None
            paths.extend(mine)
        self._delete_paths(paths)  # clears `_deleting` once answered, whatever the answer


def joined_or(joins: list[tuple[list[tuple[ZooKeeperElection, int]], Any]]
              ) -> list[ZooKeeperElection]:
    """Every election named in a list of join requests."""
    return [election for batch, _ in joins for election, _ in batch]
