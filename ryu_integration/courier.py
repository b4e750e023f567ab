"""Send framework events to another app without waiting on that app's queue.

Why: every Ryu / os-ken app has a bounded event queue (128 events) and `send_event` waits while
the receiver's queue is full. Two apps that send to each other from their event loops deadlock
once both queues are full, each loop waiting on the other, and stay so. It happened between
`topology_sync` (parking requests to the switches app on each mastership change) and the
switches app (link events to `topology_sync`) when a burst of mastership changes met a burst of
LLDP: both loops stopped for good, and the mastership app with them, waiting on
`topology_sync`'s full queue to report a switch it had just been elected for.

What: `Courier.send(name, ev)` puts the event on an unbounded queue and returns at once. One
thread delivers the queued events in order with the sender app's own `send_event`, waiting on the
receiver's queue in the sender's stead. The queue grows only while the receiver is slower than
the sender, by what the sender produced meanwhile. The thread is a daemon (a green thread under
eventlet) and not among the app's `threads`: a receiver that stopped first never drains its queue,
and the framework joins an app's threads when it stops it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .compat import hub, uses_eventlet

LOG = logging.getLogger("ryu_integration.courier")

_STOP = object()


class Courier:
    """Delivers events from `sender` (a RyuApp) to other apps, in order, off its event loop."""

    def __init__(self, sender: Any) -> None:
        self._sender = sender
        self._queue: Any = hub.Queue()  # unbounded: put never waits
        self._thread: Any = None
        self._stopped = False

    def start(self) -> None:
        """Start delivering (events sent before are kept and go first)."""
        if self._thread is not None or self._stopped:
            return
        if uses_eventlet():
            self._thread = hub.spawn(self._deliver)
        else:
            self._thread = threading.Thread(target=self._deliver, daemon=True,
                                            name=f"courier-{getattr(self._sender, 'name', '?')}")
            self._thread.start()

    def send(self, name: str, ev: Any) -> None:
        """Queue `ev` for the app called `name` (any thread; never waits). Dropped once
        stopped: the receiver is going away with the sender."""
        if not self._stopped:
            self._queue.put((name, ev))

    def stop(self) -> None:
        """Deliver nothing more (the receivers may be stopping too; nothing waits for them)."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(_STOP)

    def _deliver(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP or self._stopped:
                return
            name, ev = item
            try:
                self._sender.send_event(name, ev)
            except Exception:  # one bad event must not stop the ones behind it
                LOG.exception("courier of %s: delivering %s to %s failed",
                              getattr(self._sender, "name", "?"), type(ev).__name__, name)
