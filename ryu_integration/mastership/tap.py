"""The handover tap: sorts a switch's packet-ins at the cut, in the order the switch sent them.

What: wraps `send_event_to_observers` of the framework's `ofp_event` service (the OpenFlow
handler every datapath's receive loop hands each message to, in arrival order, before any app
sees it). For a switch with a planned handover running (a `Gate`), it
- routes every FLOW_REMOVED of a marker flow (`handover.is_marker_cookie`) to the mastership app
  only: other apps never see markers;
- once the gate's own marker has been removed (the cut), routes the switch's packet-ins to the
  mastership app only, which keeps them for the handover machine (the source's copies, the
  target's buffer) and hands them to the other apps later (`redispatch`) if and when this
  controller is to handle them;
- lets everything else through unchanged.
Why here: every app has its own event queue and thread, so an app deciding "before or after
the cut" itself would race the mastership app's view of the marker. The receive loop is the one
place that sees the packet-ins and the marker in the switch's order; Ryu and os-ken call this
same method there (`controller.Datapath._recv_loop`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..compat import app_manager, ofp_event
from .handover import is_marker_cookie

LOG = logging.getLogger("ryu_integration.mastership")


class Gate:
    """One switch connection's handover: the marker cookie that is its cut, and whether it has
    passed. `datapath` is the connection the handover runs on (a reconnect is another one)."""

    def __init__(self, datapath: Any, cookie: int) -> None:
        self.datapath = datapath
        self.cookie = cookie
        self.past_cut = False


class HandoverTap:
    """Installed once per process by the mastership app (`install`), removed at its stop."""

    def __init__(self, on_marker: Callable[[Any, Any], None],
                 on_packet: Callable[[Any, Any], None]) -> None:
        #: callbacks run on the receive loop: they must only queue the event for the app
        self._on_marker = on_marker
        self._on_packet = on_packet
        self._gates: dict[int, Gate] = {}
        self._lock = threading.Lock()
        self._brick: Any = None
        self._original: Callable[..., Any] | None = None

    def install(self) -> bool:
        """Wrap the `ofp_event` service's dispatch; False if there is none (no OpenFlow)."""
        brick = app_manager.lookup_service_brick("ofp_event")
        if brick is None:
            return False
        self._brick = brick
        self._original = brick.send_event_to_observers
        brick.send_event_to_observers = self._dispatch
        return True

    def uninstall(self) -> None:
        if self._brick is not None and self._original is not None:
            self._brick.send_event_to_observers = self._original
        self._brick = None

    def open(self, dpid: int, datapath: Any, cookie: int) -> None:
        """A handover of `dpid` starts on `datapath`, cut by the marker with `cookie`."""
        with self._lock:
            self._gates[dpid] = Gate(datapath, cookie)

    def close(self, dpid: int) -> None:
        """The handover is over: packet-ins go to every app again."""
        with self._lock:
            self._gates.pop(dpid, None)

    def redispatch(self, ev: Any, state: Any) -> None:
        """Hand a packet-in the tap held back to every app that observes it."""
        if self._original is not None:
            self._original(ev, state)

    def consumers(self, ev_cls: type) -> list[str]:
        """Names of the apps that observe `ev_cls` from the OpenFlow service."""
        if self._brick is None:
            return []
        return list(self._brick.observers.get(ev_cls, {}))

    # ---- the receive loop ------------------------------------------------------------------

    def _dispatch(self, ev: Any, state: Any = None) -> None:
        assert self._original is not None
        if isinstance(ev, ofp_event.EventOFPFlowRemoved) and is_marker_cookie(ev.msg.cookie):
            with self._lock:
                gate = self._gates.get(getattr(ev.msg.datapath, "id", None))
                if gate is not None and gate.datapath is ev.msg.datapath \
                        and gate.cookie == ev.msg.cookie:
                    gate.past_cut = True
            self._on_marker(ev, state)
            return
        if isinstance(ev, ofp_event.EventOFPPacketIn):
            dp = ev.msg.datapath
            with self._lock:
                gate = self._gates.get(getattr(dp, "id", None))
                held = gate is not None and gate.past_cut and gate.datapath is dp
            if held:
                # Not under the lock: the app's queue may be full, and the app takes the lock to
                # close the gate. A packet held just as the gate closes reaches the app after
                # the handover ended; the app then hands it straight on (`redispatch`).
                self._on_packet(ev, state)
                return
        self._original(ev, state)
