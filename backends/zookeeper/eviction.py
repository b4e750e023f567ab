"""Evicting a member a peer's failure detector declared dead (`coordination.detector`).

ZooKeeper would remove a dead member's ephemeral znodes only when its session expires. Eviction
does it now, so every election the member led moves on at once, in three passes:
1. At once, without reading a candidate list: the lists this member has already read
   (`ZooKeeperElection.candidates_seen`) name every candidacy ranked ahead of its own in each
   election it campaigns in, and in the elections it observes the leader record names the
   leading candidacy (watched while it lives); an election whose watch fired or whose join is
   still under way is left to pass 2. The dead member's candidacies that lead there
   are deleted in transactions, after one read: the member record's. Taken before that read,
   the snapshot holds no candidacy of a restarted incarnation, which registers its member
   record before it campaigns; a record of another incarnation stops the eviction.
2. At once: the candidate lists of the elections this member does not know (it neither
   campaigns nor observes there, or its view is out of date) are read, pipelined, and the
   member's candidacies there deleted -- only those owned by the same session as its member
   znode, so a restarted member's new ones are never touched.
3. Off the takeover's path, once this member's election worker has run the batch those
   deletes woke (its reads would otherwise compete with that takeover for the CPU): the same
   over the remaining elections, where the dead member's candidacies are ranked behind a live
   one and hold nothing up (a list this member read before a higher-priority candidacy joined
   ahead of its own misses that one: it goes here). Then its member znode.
Each follower watching one of those candidates wakes up as if the member had resigned. The
member, if it was alive after all (stopped, partitioned), sees its member znode gone and starts
over (`ZooKeeperCoordinator._check_registration`); its member znode goes last so that it starts
over only once nothing of it is left to delete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote

from kazoo.exceptions import KazooException, NoNodeError

from coordination.errors import CoordinationError, InvalidRecordError
from coordination.names import shown
from coordination.types import MemberInfo

from .client import TRANSIENT, chunks
from .election import ZooKeeperElection, named_candidate, parse_candidate, ranked

if TYPE_CHECKING:
    from kazoo.protocol.states import ZnodeStat

    from .coordinator import ZooKeeperCoordinator

LOG = logging.getLogger(__name__)


def evict_member(co: ZooKeeperCoordinator, member_id: str, incarnation: str | None) -> int:
    """Delete `member_id`'s candidacies and member znode (see the module docstring); returns
    how many candidacies went at once. Nothing happens if its record is gone, or (with
    `incarnation`) carries another detector incarnation."""
    zk = co.zk
    # before the member record is read (see above); without an incarnation to check, only
    # the ownership test of passes 2 and 3 decides
    seen, known = _seen_candidacies(co, member_id) if incarnation is not None else ([], set())
    path = f"{co.prefix}/members/{quote(member_id, safe='')}"
    try:
        data, stat = zk.get(path)
    except NoNodeError:
        LOG.info("member %s: %s has no member record any more: nothing to evict", co.member_id,
                 shown(member_id))
        return 0
    if incarnation is not None:
        try:
            meta = MemberInfo.decode(data, f"member record of {shown(member_id)}").metadata
        except InvalidRecordError as exc:
            LOG.warning("member %s: not evicting: %s", co.member_id, exc)
            return 0
        if meta.get("liveness_id") != incarnation:
            LOG.info("member %s: %s registered again since it was declared dead: not evicting",
                     co.member_id, shown(member_id))
            return 0
    deleted = _delete_all(co, seen)
    root = f"{co.prefix}/elections"
    try:
        names = zk.get_children(root)
    except NoNodeError:
        names = []
    later = [name for name in names if name in known]
    deleted += _scan(co, member_id, stat, [name for name in names if name not in known],
                     set(seen))
    LOG.warning("member %s: evicting member %s: deleted %d candidacies at once; its others "
                "and its member record go after this member's takeover t=%.6f", co.member_id,
                shown(member_id), deleted, time.time())
    after_takeover(co, _finish, (co, member_id, stat, later, set(seen)))
    return deleted


def after_takeover(co: ZooKeeperCoordinator, func: Callable[..., None], args: tuple) -> None:
    """Run `func(*args)` on a thread of its own once the election worker is through what is
    queued now: the batch woken by the deletes just made (their watch events reach the worker
    before the round trips that followed them returned)."""
    def start() -> None:
        threading.Thread(target=func, args=args, name="zk-evict", daemon=True).start()

    co.worker.submit(start)


def _finish(co: ZooKeeperCoordinator, member_id: str, stat: ZnodeStat, names: list[str],
            done: set[str]) -> None:
    """Pass 3 (its own thread): the rest of the member's candidacies, then its record."""
    if co.closed:
        return
    path = f"{co.prefix}/members/{quote(member_id, safe='')}"
    try:
        deleted = co.call(lambda: _scan(co, member_id, stat, names, done), "evict member")
        current = co.call(lambda: co.zk.exists(path), "evict member")
        same = current is not None and current.czxid == stat.czxid
        if same:  # not a restarted incarnation's new record (its version may well be the same)
            co.call(lambda: _delete(co, [path], current.version), "evict member")
    except CoordinationError as exc:
        LOG.warning("member %s: finishing the eviction of %s failed (%s); its session timeout "
                    "decides", co.member_id, shown(member_id), exc)
        return
    LOG.warning("member %s: evicted member %s: deleted %d more candidacies and %s",
                co.member_id, shown(member_id), deleted,
                "its member record" if same else "left the record it registered again since")


def _scan(co: ZooKeeperCoordinator, member_id: str, stat: ZnodeStat, names: list[str],
          done: set[str]) -> int:
    """Read the candidate lists of elections `names` and delete `member_id`'s candidacies
    owned by its member znode's session (`stat`), except those in `done`."""
    zk, root = co.zk, f"{co.prefix}/elections"
    lists = zk.pipelined(names, lambda n: zk.get_children_async(f"{root}/{n}/candidates"))
    paths = [f"{root}/{name}/candidates/{child}" for name, children in lists
             if isinstance(children, list) for child in children
             if (parse_candidate(child) or (None, None))[1] == member_id
             and f"{root}/{name}/candidates/{child}" not in done]
    doomed = [p for p, st in zk.pipelined(paths, zk.exists_async)
              if st is not None and not isinstance(st, Exception)
              and st.ephemeralOwner == stat.ephemeralOwner]
    return _delete_all(co, doomed)


def _seen_candidacies(co: ZooKeeperCoordinator, member_id: str) -> tuple[list[str], set[str]]:
    """Paths of `member_id`'s candidacies that lead as far as this member knows, and the names
    of the elections it knows that of: where it campaigns, the candidate list it last read
    names every candidacy ranked ahead of its own (if read since that candidacy exists); where
    it observes, the leader record names the leading candidacy, watched while it lives. An
    election with a step still queued counts as unknown: its watch fired, or its candidacy is
    being created, so what was read may no longer hold (seen at 5,000 switches: a kill during
    start-up left 130 leaderships to the session timeout); pass 2 reads its list. Only a
    leading candidacy holds a takeover up; the others wait for pass 3, so that the survivors'
    takeover does not also pay for their deletes and the watches those wake."""
    out, known = [], set()
    queued = co.engine.queued()
    for election in co.existing_elections():
        if not isinstance(election, ZooKeeperElection) or election in queued:
            continue  # a watch fired or a join is under way: what we read is out of date
        named = named_candidate(election.seen_doc[0]) if election.seen_doc else None
        if not election.named_alive:
            named = None
        # a list read before our candidacy existed does not name everything ahead of it
        listed = election.node is not None and election.node in election.candidates_seen
        if not listed and named is None:
            continue  # no list read since we joined, no live leader seen: unknown
        known.add(election.name)
        first = next((c[0] for c in ranked(election.candidates_seen)
                      if c[0] not in election.orphans), None) if listed else None
        for node in {first, named} - {None}:
            if (parse_candidate(node) or (None, None))[1] == member_id:
                out.append(f"{election.cands}/{node}")
    return out, known


def _delete_all(co: ZooKeeperCoordinator, paths: list[str]) -> int:
    """Delete `paths` in transactions that are all in flight at once (one round trip, not one
    per transaction: at 5,000 switches, 15 transactions one after another took 1.2 s of a
    takeover); a transaction that failed (a candidacy gone meanwhile) is redone by `_delete`."""
    parts = [list(chunk) for chunk in chunks(paths)]
    pending = [(part, co.zk.multi_async(lambda t, part=part: [t.delete(p) for p in part]))
               for part in parts]
    deleted = 0
    for part, result in pending:
        try:
            failed = any(isinstance(r, Exception) for r in result.get())
        except TRANSIENT:
            raise
        except KazooException:
            failed = True
        deleted += _delete(co, part) if failed else len(part)
    return deleted


def _delete(co: ZooKeeperCoordinator, paths: list[str], version: int = -1) -> int:
    """Delete `paths` in one transaction and return how many went. A transaction fails as a
    whole and names only its first missing znode: that one is dropped and the rest tried
    again, a few times, then one by one, ignoring the missing ones."""
    for _ in range(3):
        if not paths:
            return 0
        results = co.zk.multi(lambda t, paths=paths: [t.delete(p, version) for p in paths])
        if not any(isinstance(r, Exception) for r in results):
            return len(paths)
        missing = {p for p, r in zip(paths, results, strict=False) if isinstance(r, NoNodeError)}
        if not missing:
            break
        paths = [p for p in paths if p not in missing]
    deleted = 0
    for _, result in co.zk.pipelined(paths, lambda p: co.zk.delete_async(p, version)):
        if not isinstance(result, Exception):
            deleted += 1
        elif not isinstance(result, NoNodeError):
            LOG.warning("member %s: eviction could not delete a znode: %r", co.member_id, result)
    return deleted
