"""Typed inputs of the planned-handover glue (`handover_glue`) for the mastership app's loop.

As `inputs`: posted from other threads (the move records' watch, the store thread, the tap on
the OpenFlow receive loops, other apps' loops answering a drain) to the app's own event loop,
where one handler per class feeds `Handovers`. Kept apart from `inputs` so the mastership
machine's inputs and the handover's read separately.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordination.records import Move

from ..compat import EventBase


@dataclass(eq=False)
class MoveSeen(EventBase):
    """The move record of `dpid` changed in the store (`record` None: deleted); `snapshot`: from
    the watch's first or resync snapshot."""

    dpid: int
    record: Move | None
    snapshot: bool = False


@dataclass(eq=False)
class MovePublished(EventBase):
    """Our compare-and-set of move `move_id` of `dpid` to `step` succeeded (`ok`) or not."""

    dpid: int
    move_id: int
    step: str
    ok: bool


@dataclass(eq=False)
class HeldPacketIn(EventBase):
    """A packet-in the tap kept from the other apps (past a handover's cut), with the
    dispatcher state to hand it on with."""

    ev: object
    state: object


@dataclass(eq=False)
class MarkerRemoved(EventBase):
    """A marker flow's FLOW_REMOVED (only the mastership app sees these)."""

    ev: object


@dataclass(eq=False)
class Drained(EventBase):
    """App `app` has handled every event queued before the drain request of move `move_id`."""

    dpid: int
    move_id: int
    app: str


@dataclass(eq=False)
class LeadershipChecked(EventBase):
    """Whether we lead the election of `dpid`, read from the store for move `move_id`."""

    dpid: int
    move_id: int
    is_leader: bool


@dataclass(eq=False)
class PeerChecked(EventBase):
    """Whether the peer of move `move_id` of `dpid` is still a live member."""

    dpid: int
    move_id: int
    alive: bool
