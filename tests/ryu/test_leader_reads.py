"""Where a leader read is answered from (ryu_integration/mastership/reads.py): pure, no I/O."""

from __future__ import annotations

from coordination import Leadership
from ryu_integration.mastership.reads import Answer, LeaderReads

LEAD = Leadership("c1", 7)


def test_a_reported_leader_answers_plain_asks_and_a_fresh_one_reads_the_store() -> None:
    reads = LeaderReads()
    reads.listening(1, connected=True)
    assert reads.reported(1, LEAD, connected=True) == []
    assert reads.ask(1, epoch=1) is Answer.LOCAL
    assert reads.seen[1] == LEAD
    assert reads.ask(1, epoch=1, fresh=True) is Answer.READ  # the switch contradicted it


def test_a_new_listener_is_waited_for_from_its_registration_not_from_the_connection() -> None:
    reads = LeaderReads(first_report_wait=10.0)
    reads.listening(1, connected=True)
    assert reads.ask(1, epoch=1) is Answer.WAIT
    assert reads.overdue(now=1_000.0) == []  # not registered yet: no deadline runs
    reads.registered([1], now=100.0)
    assert reads.overdue(now=109.9) == []
    assert reads.ask(1, epoch=2) is Answer.WAIT
    assert reads.overdue(now=110.0) == [(1, 1), (1, 2)]
    assert reads.ask(1, epoch=2) is Answer.READ  # overdue: now from the store


def test_the_first_report_answers_those_that_waited() -> None:
    reads = LeaderReads()
    reads.listening(1, connected=True)
    reads.registered([1], now=0.0)
    reads.ask(1, epoch=3)
    assert reads.reported(1, None, connected=True) == [3]
    assert reads.overdue(now=60.0) == []
    assert reads.ask(1, epoch=3) is Answer.LOCAL and reads.seen[1] is None


def test_a_plain_ask_is_answered_by_the_read_in_flight() -> None:
    reads = LeaderReads()
    assert reads.ask(1, epoch=1) is Answer.READ
    assert reads.ask(1, epoch=1) is Answer.FOLDED
    assert reads.read_done(1) is False  # its answer serves both
    assert reads.ask(1, epoch=1) is Answer.READ  # nothing in flight any more


def test_a_fresh_ask_or_a_newer_connection_gets_a_read_of_its_own() -> None:
    reads = LeaderReads()
    reads.ask(1, epoch=1)
    assert reads.ask(1, epoch=1, fresh=True) is Answer.FOLDED
    assert reads.read_done(1) is True
    reads.ask(2, epoch=1)
    assert reads.ask(2, epoch=2) is Answer.FOLDED  # the switch reconnected meanwhile
    assert reads.read_done(2) is True


def test_without_a_session_reports_answer_nothing() -> None:
    reads = LeaderReads()
    reads.listening(1, connected=True)
    reads.listening(2, connected=True)
    reads.reported(1, LEAD, connected=True)
    reads.ask(2, epoch=5)
    assert reads.session_down() == [(2, 5)]  # asked again by the caller, from the store
    assert reads.ask(1, epoch=1) is Answer.READ  # the old report no longer answers
    assert reads.reported(1, LEAD, connected=False) == []
    assert 1 not in reads.seen
    reads.listening(3, connected=False)  # a listener new while down: no wait either
    assert reads.ask(3, epoch=1) is Answer.READ


def test_no_reader_drops_the_ask_without_marking_a_read_in_flight() -> None:
    reads = LeaderReads()
    assert reads.ask(1, epoch=1, can_read=False) is Answer.NONE
    assert reads.ask(1, epoch=1) is Answer.READ
