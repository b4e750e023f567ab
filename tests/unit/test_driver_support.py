"""The driver-support base: rank codec, member decoding, error translation, capabilities, and
executors owned by the core (created by start(), stopped by close())."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any, ClassVar

import pytest

from backends.example import ExampleCoordinator
from coordination.driver_support import (
    decode_members,
    decode_rank,
    encode_rank,
    guarded,
    translating,
)
from coordination.election import MAX_PRIORITY
from coordination.errors import CoordinationError, SessionLostError
from coordination.options import COMMON_OPTIONS, resolve_options
from coordination.urls import parse_url


def test_rank_text_sorts_in_election_order_and_round_trips() -> None:
    priorities = [0, 1, 9, 10, 500, MAX_PRIORITY]
    encoded = [encode_rank(p) for p in priorities]
    assert len({len(text) for text in encoded}) == 1
    assert sorted(encoded) == [encode_rank(p) for p in sorted(priorities, reverse=True)]
    assert [decode_rank(text) for text in encoded] == priorities
    assert decode_rank(encode_rank(7).encode()) == 7


@pytest.mark.parametrize("text", ["", "12345", "1234567", "-00001", "+00001", "00 001",
                                  "٠٠٠٠٠١", "abcdef"])
def test_foreign_rank_text_is_not_a_rank(text: str) -> None:
    assert decode_rank(text) is None


def test_member_records_are_validated_and_bad_ones_skipped(caplog: Any) -> None:
    good = json.dumps({"member_id": "a", "address": "h:1", "capacity": 2}).encode()
    other = json.dumps({"member_id": "b"}).encode()
    members = decode_members([("a", good), ("c", other), ("d", b"{not json"),
                              ("e", json.dumps({"member_id": "bad/id"}).encode())])
    assert list(members) == ["a"] and members["a"].capacity == 2
    assert "it names member 'b'" in caplog.text and caplog.text.count("skipping") == 3


def test_translation_maps_library_errors_only() -> None:
    def fail(exc: BaseException) -> None:
        raise exc

    wrapped = translating(fail, (KeyError,), lambda exc: CoordinationError(f"mapped {exc}"))
    with pytest.raises(CoordinationError, match="mapped 'k'"):
        wrapped(KeyError("k"))
    with pytest.raises(SessionLostError):  # the project's own pass unchanged
        wrapped(SessionLostError("gone"))
    with pytest.raises(ValueError):  # anything else too: a bug is not a store error
        wrapped(ValueError("bug"))


def test_guarded_logs_instead_of_raising(caplog: Any) -> None:
    def fail(exc: BaseException) -> None:
        raise exc

    caplog.set_level(logging.DEBUG)
    run = guarded(fail, "step", (CoordinationError,), quiet=(TimeoutError,))
    run(CoordinationError("store away"))
    run(TimeoutError("later"))
    assert "step failed: store away" in caplog.text and "step deferred (later)" in caplog.text
    with pytest.raises(ValueError):
        run(ValueError("bug"))


def test_unknown_capability_is_refused_at_class_definition() -> None:
    with pytest.raises(TypeError, match="unknown capabilities"):
        type("Bad", (ExampleCoordinator,), {"UNSUPPORTED": {"teleport": "no"}})


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(name)]


def test_the_core_starts_and_stops_the_driver_executors() -> None:
    class Recording(ExampleCoordinator):
        EXECUTORS: ClassVar[dict[str, str]] = {"worker": "h3-worker"}
        disconnected = 0

        def _driver_disconnect(self) -> None:
            type(self).disconnected += 1

    url = parse_url("example://driver-support")
    options = resolve_options(dict(COMMON_OPTIONS), url.options, {})
    coordinator = Recording(url, "m1", options)
    assert not _threads("h3-worker[m1]")  # a constructor starts no thread
    coordinator.start()
    assert [t.is_alive() for t in _threads("h3-worker[m1]")] == [True]
    coordinator.close()
    assert not _threads("h3-worker[m1]") and Recording.disconnected == 1


def test_a_failed_start_stops_the_executors_and_disconnects() -> None:
    class Failing(ExampleCoordinator):
        EXECUTORS: ClassVar[dict[str, str]] = {"worker": "h3-failing"}
        disconnected = 0

        def _driver_start(self) -> None:
            raise CoordinationError("no server")

        def _driver_disconnect(self) -> None:
            type(self).disconnected += 1

    url = parse_url("example://driver-support-failing")
    options = resolve_options(dict(COMMON_OPTIONS), url.options, {})
    coordinator = Failing(url, "m1", options)
    with pytest.raises(CoordinationError, match="no server"):
        coordinator.start()
    assert Failing.disconnected == 1
    for thread in _threads("h3-failing[m1]"):
        thread.join(5.0)
        assert not thread.is_alive()
