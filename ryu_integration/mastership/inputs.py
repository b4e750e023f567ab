"""Typed inputs for the mastership app's event loop: one small event class per kind.

Coordination callbacks and the store workers run on other threads; they post one of these to the
app's own event loop (`RyuApp.send_event`, whose queue is safe from any thread), where a handler
per class (`@set_ev_cls(Elected)`, ...) feeds the right per-switch state machine. They are
`EventBase` subclasses only so that they travel through the framework's queue; nothing outside
the app sees them.

`dpid`/`epoch` name the switch connection an input is for: an input whose epoch is not the
connection's current one is for a connection that is gone, and is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import coordination

from ..compat import EventBase
from .fsm import Session


@dataclass(eq=False)
class SessionChanged(EventBase):
    """The coordination session changed state (all switches)."""

    state: Session


@dataclass(eq=False)
class Elected(EventBase):
    """We lead the election of `dpid` under `term` (for connection `epoch`)."""

    dpid: int
    epoch: int
    term: int


@dataclass(eq=False)
class Revoked(EventBase):
    """We no longer lead the election of `dpid` (we led it under `term`)."""

    dpid: int
    epoch: int
    term: int


@dataclass(eq=False)
class LeaderSeen(EventBase):
    """The leader listener of `dpid`'s election reported a leader (None: nobody leads). Not
    tied to a connection: it also refreshes what the app knows of the store."""

    dpid: int
    leadership: coordination.Leadership | None


@dataclass(eq=False)
class ListenersRegistered(EventBase):
    """The store worker has registered the election listeners of `dpids` and entered their
    campaigns (or given up trying): the wait for each one's first report starts now."""

    dpids: tuple[int, ...]


@dataclass(eq=False)
class LeaderRead(EventBase):
    """A leader read of `dpid` asked for by connection `epoch` answered `leadership`, or
    `failed` (the store could not be reached)."""

    dpid: int
    epoch: int
    leadership: coordination.Leadership | None = None
    failed: bool = False


@dataclass(eq=False)
class Deposed(EventBase):
    """The store refused our Mastership record for `dpid` under `term`: a newer term exists."""

    dpid: int
    epoch: int
    term: int


@dataclass(eq=False)
class PredecessorAnswer(EventBase):
    """Unfenced switches: whether `dpid`'s previous master has stopped (`gone`) and why, for
    the claim under `term`."""

    dpid: int
    epoch: int
    term: int
    gone: bool
    why: str


@dataclass(eq=False)
class RecordsChanged(EventBase):
    """A Mastership record of `target` changed (None: any, e.g. the watch resynchronised)."""

    target: int | None


@dataclass(eq=False)
class ReportsWaiting(EventBase):
    """Listener reports wait in the app's report lane: handle a turn of them."""


@dataclass(eq=False)
class Tick(EventBase):
    """Timer tick: run the state machines whose deadline has come."""
