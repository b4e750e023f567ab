"""ElectionEngine: a delete of our own candidacy that fails is owed, and paid later; one in
flight is not taken for a candidacy we lost track of.

A connection lost in the middle of a delete is what a real server cannot produce on demand,
so the client here is a stub; tests/drivers/zookeeper/test_real_servers.py has the lost
create's case on a real server.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest
from kazoo.exceptions import ConnectionLoss, NoAuthError, NoNodeError

from backends.zookeeper.election import ElectionEngine


class StubClient:
    """`pipelined` answers deletes from `answers` (a path's answer, or an exception raised
    for the whole step, as BoundedClient does for a lost connection)."""

    def __init__(self) -> None:
        self.answers: dict[str, Any] = {}
        self.deleted: list[str] = []

    delete_async = None  # only handed to `pipelined`, which answers itself

    def pipelined(self, paths: list[str], _start: Any) -> list[tuple[str, Any]]:
        out = []
        for path in paths:
            answer = self.answers.pop(path, None)
            if isinstance(answer, ConnectionLoss):
                raise answer
            if answer is None:
                self.deleted.append(path)
            out.append((path, answer))
        return out


@pytest.fixture
def engine() -> tuple[ElectionEngine, StubClient, list[Any]]:
    zk, submitted = StubClient(), []
    co = SimpleNamespace(zk=zk, member_id="a", worker=SimpleNamespace(
        submit=lambda func, *args: submitted.append((func, args))),
        _driver_translate_error=lambda exc: str(exc))
    return ElectionEngine(co), zk, submitted  # type: ignore[arg-type]


def test_a_delete_lost_with_the_connection_is_owed_and_retried_after_the_reconnect(
        engine) -> None:
    engine, zk, submitted = engine
    zk.answers["/e/candidates/c-a-1"] = ConnectionLoss()
    with pytest.raises(ConnectionLoss):
        engine._delete_paths(["/e/candidates/c-a-1"])
    assert zk.deleted == []
    engine.retry_deletes()  # what the coordinator does once connected again
    (func, args), = submitted
    func(*args)  # the worker runs the batch
    assert zk.deleted == ["/e/candidates/c-a-1"]
    submitted.clear()
    engine.retry_deletes()
    assert submitted == []  # nothing owed any more


def test_a_delete_that_cannot_succeed_is_not_owed(engine) -> None:
    """A gone node is deleted enough; a refusal (no permission) would refuse every retry."""
    engine, zk, submitted = engine
    zk.answers["/e/candidates/c-a-2"] = NoNodeError()
    engine._delete_paths(["/e/candidates/c-a-2"])
    zk.answers["/e/candidates/c-a-3"] = NoAuthError()
    with pytest.raises(NoAuthError):
        engine._delete_paths(["/e/candidates/c-a-3"])
    engine.retry_deletes()
    assert submitted == []


def test_a_resigned_candidacy_is_not_lost_track_of_while_its_delete_is_in_flight(
        engine) -> None:
    """A list read while our resign's delete is under way still names the candidacy, no
    longer tracked: it is ours and going, not one we lost track of (at 5,000 switches a
    controller's stop logged a warning and sent a second delete for each of 1,196)."""
    engine, zk, _ = engine
    ours = "c-999999-a-0000000001"
    election = SimpleNamespace(cands="/e/candidates", node=ours, stale_node=None,
                               orphans=set(), elsewhere=set(), lock=threading.Lock())
    during: list[list[str]] = []
    answer = zk.pipelined

    def pipelined(paths: list[str], start: Any) -> list[tuple[str, Any]]:
        during.append(engine.untracked_own(election, [ours]))  # a read in the meantime
        return answer(paths, start)

    zk.pipelined = pipelined
    engine.leave([election])
    assert zk.deleted == [f"/e/candidates/{ours}"] and during == [[]]
    assert election.node is None
    # once the delete is answered, a node still listed is one we lost track of
    assert engine.untracked_own(election, [ours]) == [ours]
