"""Which switch records the topology store holds, followed live for invariant (d).

What: an observer coordinator (its own member id, connected straight to every store member,
not through the controllers' proxies) watches the topology store's ``switch`` records: the
snapshot, then every put and delete, and after a resync a new snapshot. The set of dpids is
kept on the monitor (under its condition, notified on each change), so a scenario can wait,
pushed and bounded, for "every bridge has its switch record" after recovery.
Why: the topology sync app's masters publish the switches; a record lost in a failover (and
never re-published) is a stale picture on every standby.
"""

from __future__ import annotations

import os

import coordination
from coordination.topology import Change, Snapshot, TopologyEvent

from .monitor import Monitor


class SwitchRecords:
    """A live watch on the ``switch`` records; ``close()`` cancels it and disconnects."""

    def __init__(self, url: str, monitor: Monitor) -> None:
        self.monitor = monitor
        self.coord = coordination.connect(url, f"chaos-observer-{os.getpid()}")
        self.watch = self.coord.topology.watch(self._on_event, kinds=["switch"])

    def _on_event(self, event: TopologyEvent) -> None:
        m = self.monitor
        with m.cond:
            if isinstance(event, Snapshot):
                m.topology_switches = {r.dpid for r in event.records}  # type: ignore[attr-defined]
            elif isinstance(event, Change):
                dpid = int(event.key, 16)
                if event.op == "delete":
                    m.topology_switches.discard(dpid)
                else:
                    m.topology_switches.add(dpid)
            m.cond.notify_all()

    def close(self) -> None:
        self.watch.cancel()
        self.coord.close()
