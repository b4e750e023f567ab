"""The mastership app's report lane: an election's callback overtakes a backlog of reports.

At start-up every switch's leader listener reports; a takeover's Elected callbacks, posted
behind thousands of reports, would wait for all of them. The app's own loop is driven by hand
here (the framework's queue as a list); no switch, no store.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from ryu_integration.mastership import app as mastership_app
from ryu_integration.mastership.inputs import (
    Elected,
    LeaderSeen,
    ListenersRegistered,
    ReportsWaiting,
)


class LoopUnderTest:
    """The app's `_post` and `_handle_reports` over a hand-driven framework queue."""

    def __init__(self) -> None:
        app: Any = mastership_app.Mastership.__new__(mastership_app.Mastership)
        app.name = "mastership"
        app._running = True
        app._reports = collections.deque()
        app._reports_lock = threading.Lock()
        app._reports_posted = False
        self.queue: list[Any] = []  # the framework's queue, in order
        self.handled: list[Any] = []
        app.send_event = lambda name, ev: self.queue.append(ev)
        app._courier = type("C", (), {"send": lambda _self, name, ev: self.queue.append(ev)})()
        app._handle_leader_seen = self.handled.append
        app._handle_listeners_registered = self.handled.append
        self.app = app

    def run(self) -> None:
        while self.queue:
            ev = self.queue.pop(0)
            if isinstance(ev, ReportsWaiting):
                self.app._handle_reports(ev)
            else:
                self.handled.append(ev)


def test_an_election_posted_behind_a_backlog_of_reports_waits_for_one_turn_only() -> None:
    loop = LoopUnderTest()
    reports = [LeaderSeen(dpid, None) for dpid in range(200)]
    registered = ListenersRegistered((7,))
    for ev in [*reports[:100], registered, *reports[100:]]:
        loop.app._post(ev)
    elected = Elected(5, 1, 42)
    loop.app._post(elected)
    assert len(loop.queue) == 2  # one wake-up for every report, then the election
    loop.run()
    turn = mastership_app.REPORTS_PER_TURN
    assert loop.handled.index(elected) == turn
    assert [ev for ev in loop.handled if ev is not elected] == [
        *reports[:100], registered, *reports[100:]]  # every report, once, in order
    assert loop.queue == [] and not loop.app._reports_posted


def test_a_report_after_the_lane_drained_wakes_the_loop_again() -> None:
    loop = LoopUnderTest()
    loop.app._post(LeaderSeen(1, None))
    loop.run()
    loop.app._post(LeaderSeen(2, None))
    assert len(loop.queue) == 1
    loop.run()
    assert [ev.dpid for ev in loop.handled] == [1, 2]


def test_nothing_is_posted_once_stopped() -> None:
    loop = LoopUnderTest()
    loop.app._running = False
    loop.app._post(LeaderSeen(1, None))
    loop.app._post(Elected(1, 1, 1))
    assert loop.queue == [] and not loop.app._reports
