"""Value types shared by the API and the drivers."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

#: Terms are used as OpenFlow generation_ids, which are 64-bit unsigned.
MAX_TERM = 2**64 - 1


class SessionState(enum.Enum):
    """Session state, with Curator's meaning.

    CONNECTED: the session is live. SUSPENDED: the connection is gone but the session may still be
    alive, so leaders must hold (send nothing state-changing) and keep their state. LOST: the
    session expired; every leadership and membership it held is gone.
    """

    CONNECTED = "connected"
    SUSPENDED = "suspended"
    LOST = "lost"


@dataclass(frozen=True, order=True)
class Leadership:
    """Who leads an election, and the term that leadership was established under.

    `term` comes from the store's own monotonic counter (a ZooKeeper zxid, an etcd revision), is
    strictly increasing across every change of leader of one election, and fits in 64 bits, so it
    can be sent as an OpenFlow generation_id.
    """

    member_id: str
    term: int


@dataclass(frozen=True)
class Candidate:
    """One candidacy in an election, in the order the store ranks them."""

    member_id: str
    priority: int


@dataclass(frozen=True)
class MemberInfo:
    """What a member publishes about itself while its session is alive."""

    member_id: str
    address: str = ""
    capacity: int = 0
    started_at: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "member_id": self.member_id,
            "address": self.address,
            "capacity": self.capacity,
            "started_at": self.started_at,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemberInfo:
        return cls(
            member_id=str(data["member_id"]),
            address=str(data.get("address", "")),
            capacity=int(data.get("capacity", 0)),
            started_at=float(data.get("started_at", 0.0)),
            metadata=dict(data.get("metadata") or {}),
        )
