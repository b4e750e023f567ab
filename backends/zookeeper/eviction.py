"""Evicting a member a peer's failure detector declared dead (`coordination.detector`).

ZooKeeper would remove a dead member's ephemeral znodes only when its session expires. Eviction
does it now: the member's candidate znodes (those owned by the same session as its member
znode, so a restarted member's new candidacies are never touched) and then its member znode are
deleted in batched transactions, so every election it led moves on at once. Each follower
watching one of those candidates wakes up as if the member had resigned. The member, if it was
alive after all (stopped, partitioned), sees its member znode gone and starts over
(`ZooKeeperCoordinator._check_registration`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

from kazoo.exceptions import NoNodeError

from coordination.errors import InvalidRecordError
from coordination.names import shown
from coordination.types import MemberInfo

from .client import chunks
from .election import parse_candidate

if TYPE_CHECKING:
    from .coordinator import ZooKeeperCoordinator

LOG = logging.getLogger(__name__)


def evict_member(co: ZooKeeperCoordinator, member_id: str, incarnation: str | None) -> int:
    """Delete `member_id`'s candidacies and member znode (see the module docstring); returns
    how many candidacies went. Nothing happens if its record is gone, or (with `incarnation`)
    carries another detector incarnation."""
    zk = co.zk
    path = f"{co.prefix}/members/{quote(member_id, safe='')}"
    try:
        data, stat = zk.get(path)
    except NoNodeError:
        LOG.info("member %s: %s has no member record any more: nothing to evict", co.member_id,
                 shown(member_id))
        return 0
    if incarnation is not None:
        try:
            seen = MemberInfo.decode(data, f"member record of {shown(member_id)}").metadata
        except InvalidRecordError as exc:
            LOG.warning("member %s: not evicting: %s", co.member_id, exc)
            return 0
        if seen.get("liveness_id") != incarnation:
            LOG.info("member %s: %s registered again since it was declared dead: not evicting",
                     co.member_id, shown(member_id))
            return 0
    owner = stat.ephemeralOwner
    root = f"{co.prefix}/elections"
    try:
        names = zk.get_children(root)
    except NoNodeError:
        names = []
    lists = zk.pipelined(names, lambda n: zk.get_children_async(f"{root}/{n}/candidates"))
    paths = [f"{root}/{name}/candidates/{child}" for name, children in lists
             if isinstance(children, list) for child in children
             if (parse_candidate(child) or (None, None))[1] == member_id]
    doomed = [p for p, st in zk.pipelined(paths, zk.exists_async)
              if st is not None and not isinstance(st, Exception) and st.ephemeralOwner == owner]
    for chunk in chunks(doomed):
        _delete(co, list(chunk))
    _delete(co, [path], stat.version)
    LOG.warning("member %s: evicted member %s: deleted %d candidacies and its member record",
                co.member_id, shown(member_id), len(doomed))
    return len(doomed)


def _delete(co: ZooKeeperCoordinator, paths: list[str], version: int = -1) -> None:
    """Delete `paths` in one transaction; if one is already gone (the transaction fails as a
    whole), one by one, ignoring the missing ones."""
    results = co.zk.multi(lambda t: [t.delete(p, version) for p in paths])
    if not any(isinstance(r, Exception) for r in results):
        return
    for _, result in co.zk.pipelined(paths, lambda p: co.zk.delete_async(p, version)):
        if isinstance(result, Exception) and not isinstance(result, NoNodeError):
            LOG.warning("member %s: eviction could not delete a znode: %r", co.member_id, result)
