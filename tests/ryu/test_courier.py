"""The courier: an app's loop hands events to another app without waiting on its full queue.

Two apps that wait on each other's full queue deadlock for good (the topology sync app and the
switches app did, under a burst of mastership changes and LLDP). Real framework apps here, with
the receiver's queue filled to the framework's bound; no switch, no store.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from ryu_integration.compat import EventBase, RyuApp, app_manager
from ryu_integration.courier import Courier

WAIT = 10.0  # liveness bound of every wait


class _Numbered(EventBase):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n


@pytest.fixture
def apps() -> Any:
    """A sender and a receiver registered as framework apps; the receiver's loop is not
    running, so its queue fills and stays full until the test takes from it."""
    sender, receiver = RyuApp(), RyuApp()
    sender.name, receiver.name = "courier_test_sender", "courier_test_receiver"
    for app in (sender, receiver):
        app_manager.SERVICE_BRICKS[app.name] = app
    try:
        yield sender, receiver
    finally:
        for app in (sender, receiver):
            app_manager.SERVICE_BRICKS.pop(app.name, None)


def _fill(sender: Any, receiver: Any) -> int:
    bound = receiver.events.maxsize
    for n in range(bound):
        sender.send_event(receiver.name, _Numbered(n))
    assert receiver.events.full()
    return bound


def _take(receiver: Any) -> int:
    ev, _state = receiver.events.get(timeout=WAIT)
    receiver._events_sem.release()  # what the framework's loop does per event taken
    return ev.n


def test_send_returns_while_the_receivers_queue_is_full_and_delivers_in_order(apps) -> None:
    sender, receiver = apps
    bound = _fill(sender, receiver)
    courier = Courier(sender)
    courier.start()
    try:
        done = threading.Event()

        def send_more() -> None:
            for n in range(bound, bound + 3):
                courier.send(receiver.name, _Numbered(n))
            done.set()

        threading.Thread(target=send_more, daemon=True).start()
        assert done.wait(WAIT), "Courier.send waited on the receiver's full queue"
        # the receiver drains: everything arrives, in the order sent, nothing twice
        assert [_take(receiver) for _ in range(bound + 3)] == list(range(bound + 3))
        assert receiver.events.empty()
    finally:
        courier.stop()


def test_events_sent_before_start_go_first_and_none_after_stop(apps) -> None:
    sender, receiver = apps
    courier = Courier(sender)
    courier.send(receiver.name, _Numbered(1))
    courier.start()
    courier.send(receiver.name, _Numbered(2))
    assert [_take(receiver), _take(receiver)] == [1, 2]
    courier.stop()
    courier.send(receiver.name, _Numbered(3))
    courier.start()  # a stopped courier stays stopped
    assert receiver.events.empty()


def test_a_failing_delivery_does_not_stop_the_ones_behind_it(apps, monkeypatch) -> None:
    sender, receiver = apps
    original = sender.send_event

    def send_event(name: str, ev: Any, state: Any = None) -> None:
        if ev.n == 1:
            raise RuntimeError("boom")
        original(name, ev, state)

    monkeypatch.setattr(sender, "send_event", send_event)
    courier = Courier(sender)
    courier.start()
    try:
        for n in (1, 2):
            courier.send(receiver.name, _Numbered(n))
        assert _take(receiver) == 2
    finally:
        courier.stop()


def test_topology_sync_parks_through_the_courier_while_the_switches_app_is_full(
        apps, monkeypatch) -> None:
    """The deadlock's first half: the topology app's loop handling a mastership change must
    return although the switches app's queue is full (the switches app may be waiting on ours)."""
    from ryu_integration.topology import app as topology_app
    from ryu_integration.topology import discovery

    sender, switches = apps
    bound = _fill(sender, switches)
    switches.link_discovery = True
    sync = topology_app.TopologySync.__new__(topology_app.TopologySync)
    sync.name = "courier_test_sync"
    sync.settings = type("S", (), {"discovery_master_only": True})()
    sync.runtime = type("R", (), {"set_master": lambda self, dpid, term: None})()
    sync._courier = Courier(sync)
    sync._courier.start()
    monkeypatch.setattr(topology_app.TopologySync, "_switches", staticmethod(lambda: switches))
    try:
        done = threading.Event()
        change = type("Ev", (), {"dpid": 7, "term": 3, "may_program": True})()
        threading.Thread(target=lambda: (sync._mastership(change), done.set()),
                         daemon=True).start()
        assert done.wait(WAIT), "the topology app's loop waited on the switches app's queue"
        for _ in range(bound):
            _take(switches)
        ev, _state = switches.events.get(timeout=WAIT)
        assert isinstance(ev, discovery.ParkingRequest) and (ev.dpid, ev.mastered) == (7, True)
    finally:
        sync._courier.stop()
