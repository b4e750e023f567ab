"""The fixtures' free loopback ports: distinct, bindable, and out of the kernel's ephemeral
range, where an outgoing connection's local end could take one before the server binds it."""

from __future__ import annotations

import socket

import pytest

from tests.servers import _process
from tests.servers._process import LOOPBACK, _ephemeral_range, free_ports


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low, high = _ephemeral_range()
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(not low <= port <= high for port in ports), (low, high, ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, port))


def test_a_port_in_use_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind((LOOPBACK, free_ports(1)[0]))
        held.listen()
        taken = held.getsockname()[1]
        other = free_ports(1)[0]
        draws = iter([taken, taken, other])
        monkeypatch.setattr(_process._RNG, "randrange", lambda *_: next(draws))
        assert free_ports(1) == [other]
