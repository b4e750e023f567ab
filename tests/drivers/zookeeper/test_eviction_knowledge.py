"""Eviction's first pass deletes only what this member's reads show leading, and reads again
(pass 2) wherever those reads may be out of date.

What a member has read at the moment a peer dies (a list read before its own candidacy
existed, a watch fired but not yet followed) is a race a real server cannot be made to lose on
demand, so the coordinator here is a stub; tests/drivers/zookeeper/test_real_servers.py evicts
on a real server.
"""

from __future__ import annotations

from types import SimpleNamespace

from backends.zookeeper.election import ElectionEngine, ZooKeeperElection
from backends.zookeeper.eviction import _seen_candidacies

DEAD = "dead"


def node(member: str, seq: int) -> str:
    return f"c-999999-{member}-{seq:010d}"


def make() -> tuple[SimpleNamespace, dict[str, ZooKeeperElection]]:
    co = SimpleNamespace(prefix="/p", member_id="me", worker=SimpleNamespace(
        submit=lambda *_: None))
    co.engine = ElectionEngine(co)  # type: ignore[arg-type]
    elections = {name: ZooKeeperElection(co, name)  # type: ignore[arg-type]
                 for name in ("listed", "unread", "observed", "watched", "joining")}
    co.existing_elections = lambda: list(elections.values())
    return co, elections


def test_only_fresh_reads_count_and_the_rest_is_left_to_the_list_reads() -> None:
    co, e = make()
    # campaigning, and the list read since our candidacy exists names the dead leader first
    e["listed"].node = node("me", 2)
    e["listed"].candidates_seen = [node(DEAD, 1), node("me", 2)]
    # campaigning, but the candidacy was created after the last list read
    e["unread"].node = node("me", 5)
    e["unread"].candidates_seen = [node("other", 3)]
    # observing only: the record names the dead member's live candidacy
    e["observed"].seen_doc = ({"member_id": DEAD, "term": 7, "candidate": node(DEAD, 1)}, 0)
    e["observed"].named_alive = True
    # the same, but the record's watch has fired and the re-read is still queued
    e["watched"].seen_doc = ({"member_id": DEAD, "term": 7, "candidate": node(DEAD, 1)}, 0)
    e["watched"].named_alive = True
    co.engine._observe[e["watched"]] = {"doc"}
    # a candidacy still being created
    e["joining"].node = node("me", 4)
    e["joining"].candidates_seen = [node(DEAD, 1), node("me", 4)]
    co.engine._joins.append(([(e["joining"], 0)], None))

    paths, known = _seen_candidacies(co, DEAD)  # type: ignore[arg-type]

    assert sorted(paths) == [f"/p/elections/{name}/candidates/{node(DEAD, 1)}"
                             for name in ("listed", "observed")]
    # pass 2 reads the candidate lists of the others at once, instead of pass 3 after the
    # takeover (or the session timeout)
    assert known == {"listed", "observed"}


def test_queued_names_every_election_with_a_step_pending() -> None:
    co, e = make()
    co.engine._evaluate[e["listed"]] = None
    co.engine._observe[e["observed"]] = {"named"}
    co.engine._joins.append(([(e["joining"], 0)], None))
    assert co.engine.queued() == {e["listed"], e["observed"], e["joining"]}
