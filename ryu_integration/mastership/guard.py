"""The mastership API for other apps of the same process: who may program which switch.

Other apps listen for `EventMastershipChanged`, or call `is_master(dpid)`, or decorate a handler
with `@only_master` / send with `send_if_master(datapath, msg)`; apps that share the
controller's coordination session use `coordinator()`. All of it answers "no" (or None) while no
mastership app runs in this process, and is safe from any thread.

This module defines the public event, so it registers the mastership app as that event's
service: an app that handles `EventMastershipChanged` gets the mastership app loaded with it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import coordination

from ..compat import EventBase, app_manager, register_service

if TYPE_CHECKING:
    from .app import Mastership

register_service("ryu_integration.mastership")

_instance: Mastership | None = None


def election_name(dpid: int) -> str:
    """The election of one datapath: `dpid-<16 hex digits>`."""
    return f"dpid-{dpid:016x}"


class EventMastershipChanged(EventBase):
    """This controller's role on a switch changed.

    `role`: "master", "slave", "equal" (connected, no role confirmed) or "none" (disconnected).
    `datapath`: the switch's connection (None once disconnected).
    `term`: the generation_id the role was confirmed under. `may_program`: true only while the
    switch has confirmed us MASTER under our current term and the session allows it; send
    FLOW_MOD/PACKET_OUT/GROUP_MOD only then. On a change to true, re-sync the switch's state
    (ONOS-3509): whatever the previous master did may be gone or half done.
    """

    def __init__(self, dpid: int, role: str, term: int, may_program: bool, reason: str = "",
                 datapath: Any = None) -> None:
        super().__init__()
        self.dpid = dpid
        self.datapath = datapath
        self.role = role
        self.term = term
        self.may_program = may_program
        self.reason = reason

    def __repr__(self) -> str:
        return (f"EventMastershipChanged(dpid={self.dpid:016x}, role={self.role}, "
                f"term={self.term}, may_program={self.may_program})")


def register(app: Mastership) -> None:
    """Make `app` this process's mastership app (called by the app when it is created)."""
    global _instance
    _instance = app


def instance() -> Mastership | None:
    """The running mastership app of this process, if any."""
    return _instance or app_manager.lookup_service_brick("Mastership")


def coordinator() -> coordination.Coordinator | None:
    """The coordinator of this process's mastership app (None until it has connected), for
    other apps that share its session: one member, one session, per controller."""
    app = instance()
    return app.coord if app is not None else None


_record_counter: Callable[[], dict[str, int]] | None = None


def count_records_with(counter: Callable[[], dict[str, int]] | None) -> None:
    """Let the topology app report its records by kind for the mastership app's metrics
    (registered by that app, so the mastership app never imports it)."""
    global _record_counter
    _record_counter = counter


def record_counts() -> dict[str, int]:
    """Topology records by kind, if a topology app registered a counter (else empty)."""
    counter = _record_counter
    return counter() if counter is not None else {}


def is_master(dpid: int) -> bool:
    """True if this controller may program `dpid` now. False with no mastership app running."""
    app = instance()
    return app is not None and app.is_master(dpid)


def _datapath_of(ev: Any) -> Any:
    msg = getattr(ev, "msg", None)
    found = getattr(msg, "datapath", None) or getattr(ev, "datapath", None)
    return found or getattr(ev, "dp", None)


def only_master(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Decorator for an event handler `(self, ev)`: run it only if we may program the event's
    datapath (from `ev.msg.datapath`, `ev.datapath` or `ev.dp`). Order with `@set_ev_cls` does
    not matter."""

    @functools.wraps(handler)
    def guarded(self: Any, ev: Any) -> Any:
        dp = _datapath_of(ev)
        if dp is None or dp.id is None or not is_master(dp.id):
            return None
        return handler(self, ev)

    return guarded


def send_if_master(datapath: Any, msg: Any) -> bool:
    """Send `msg` only if we may program `datapath`; returns whether it was sent."""
    if datapath.id is None or not is_master(datapath.id):
        return False
    datapath.send_msg(msg)
    return True
