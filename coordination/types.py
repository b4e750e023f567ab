"""Value types shared by the API and the drivers."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from .codec import decode_json
from .errors import InvalidRecordError
from .names import member_id_problem, printable, shown

#: Terms are used as OpenFlow generation_ids, which are 64-bit unsigned.
MAX_TERM = 2**64 - 1
#: Bounds of what a member record may advertise (`MemberInfo.decode`).
MAX_ADDRESS_LENGTH = 1024
MAX_CAPACITY = 2**63 - 1


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
    def decode(cls, data: bytes | str, what: str) -> MemberInfo:
        """A member record read from a store (JSON of `to_dict()`), validated: types, bounds and
        the member id rules of `coordination.names`. Anything else raises `InvalidRecordError`
        naming `what`, which readers log before skipping the record."""
        label = printable(str(what), 200)
        doc = decode_json(data, label)
        if not isinstance(doc, dict):
            raise InvalidRecordError(f"{label}: expected a JSON object, got {type(doc).__name__}")
        member_id = doc.get("member_id")
        problem = member_id_problem(member_id)
        if problem is not None:
            raise InvalidRecordError(f"{label}: member_id {shown(member_id)} {problem}")
        address = doc.get("address", "")
        if not isinstance(address, str) or len(address) > MAX_ADDRESS_LENGTH:
            raise InvalidRecordError(
                f"{label}: address must be a string of at most {MAX_ADDRESS_LENGTH} characters, "
                f"got {shown(address)}")
        capacity = doc.get("capacity", 0)
        if isinstance(capacity, bool) or not isinstance(capacity, int) \
                or not 0 <= capacity <= MAX_CAPACITY:
            raise InvalidRecordError(
                f"{label}: capacity must be an integer in 0..{MAX_CAPACITY}, got {shown(capacity)}")
        started_at = doc.get("started_at", 0.0)
        if isinstance(started_at, bool) or not isinstance(started_at, (int, float)) \
                or not math.isfinite(started_at) or started_at < 0:
            raise InvalidRecordError(
                f"{label}: started_at must be a number of seconds >= 0, got {shown(started_at)}")
        metadata = doc.get("metadata")
        metadata = {} if metadata is None else metadata
        if not isinstance(metadata, dict):
            raise InvalidRecordError(f"{label}: metadata must be an object, got {shown(metadata)}")
        return cls(member_id, address, capacity, float(started_at), dict(metadata))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemberInfo:
        """Lenient conversion of a dict (KeyError, ValueError, TypeError if it does not fit);
        for data read from a store use `decode`, which validates."""
        return cls(
            member_id=str(data["member_id"]),
            address=str(data.get("address", "")),
            capacity=int(data.get("capacity", 0)),
            started_at=float(data.get("started_at", 0.0)),
            metadata=dict(data.get("metadata") or {}),
        )
