"""BoundedClient.pipelined: a sliding window of requests in flight; no server needed."""

from __future__ import annotations

from typing import Any

import pytest
from kazoo.exceptions import ConnectionLoss, NoNodeError

from backends.zookeeper.client import PIPELINE_DEPTH, BoundedClient


class Answer:
    """A request in flight: answered when its `get()` is called (in flight until then)."""

    def __init__(self, log: list[str], item: int, value: Any) -> None:
        self.log, self.item, self.value = log, item, value

    def get(self) -> Any:
        self.log.append(f"answer {self.item}")
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


def run(values: dict[int, Any], count: int) -> tuple[list[tuple[int, Any]], list[str]]:
    log: list[str] = []

    def start(item: int) -> Answer:
        log.append(f"start {item}")
        return Answer(log, item, values.get(item, item * 10))

    return BoundedClient(client=None, timeout=1.0).pipelined(range(count), start), log


def test_each_answer_lets_the_next_request_go() -> None:
    count = PIPELINE_DEPTH + 3
    out, log = run({}, count)
    assert out == [(i, i * 10) for i in range(count)]
    assert log[:PIPELINE_DEPTH] == [f"start {i}" for i in range(PIPELINE_DEPTH)]
    # then one answer, one new request: never more than PIPELINE_DEPTH in flight
    assert log[PIPELINE_DEPTH:PIPELINE_DEPTH + 4] == [
        "answer 0", f"start {PIPELINE_DEPTH}", "answer 1", f"start {PIPELINE_DEPTH + 1}"]
    in_flight = 0
    for entry in log:
        in_flight += 1 if entry.startswith("start") else -1
        assert 0 <= in_flight <= PIPELINE_DEPTH


def test_an_error_is_that_items_result_and_a_lost_connection_stops_the_step() -> None:
    out, _ = run({2: NoNodeError()}, 4)
    assert [item for item, _ in out] == [0, 1, 2, 3]
    assert isinstance(out[2][1], NoNodeError)
    with pytest.raises(ConnectionLoss):
        run({1: ConnectionLoss()}, 3)
