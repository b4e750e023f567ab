"""Evicting a member a peer's failure detector declared dead (`coordination.detector`).

Eviction revokes the member's lease: etcd deletes its member key and every candidate key at
once, so every election it led moves on now instead of when the lease expires. The lease is
read from the member key itself (each member registers it on its lease), and only if the key
still carries the detector incarnation declared dead, so a restarted member is left alone. The
member, if it was alive after all, finds its lease gone at its next keep-alive (hurried along
when it sees its candidate keys vanish): a lost session, then a new one and new campaigns.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import quote

from coordination.errors import CoordinationError, InvalidRecordError
from coordination.names import shown
from coordination.types import MemberInfo

from .client import EtcdClientError

if TYPE_CHECKING:
    from .coordinator import EtcdCoordinator

LOG = logging.getLogger(__name__)


def evict_member(co: EtcdCoordinator, member_id: str, incarnation: str | None) -> bool:
    """Revoke `member_id`'s lease (see the module docstring); True if it was revoked."""
    key = f"{co.prefix}/members/{quote(member_id, safe='')}".encode()
    kvs = co.range(key).kvs
    if not kvs or not kvs[0].lease:
        LOG.info("member %s: %s has no leased member record any more: nothing to evict",
                 co.member_id, shown(member_id))
        return False
    if incarnation is not None:
        try:
            seen = MemberInfo.decode(kvs[0].value, f"member record of {shown(member_id)}")
        except InvalidRecordError as exc:
            LOG.warning("member %s: not evicting: %s", co.member_id, exc)
            return False
        if seen.metadata.get("liveness_id") != incarnation:
            LOG.info("member %s: %s registered again since it was declared dead: not evicting",
                     co.member_id, shown(member_id))
            return False
    try:
        co.client.lease_revoke(kvs[0].lease, timeout=co.op_timeout)
    except EtcdClientError as exc:
        raise CoordinationError(f"revoking the lease of {shown(member_id)}: {exc}") from None
    LOG.warning("member %s: evicted member %s: revoked its lease %x", co.member_id,
                shown(member_id), kvs[0].lease)
    return True

