"""The per-datapath mastership state machine, driven with no Ryu, no store and a fake clock."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from ryu_integration.mastership.fsm import (
    MAX_GENERATION_ID,
    STALE_HINT_AFTER,
    Campaign,
    CheckPredecessor,
    MastershipChanged,
    MastershipFSM,
    ReadLeader,
    Resign,
    Role,
    SendRoleRequest,
    Session,
    Timing,
    xid_counter,
)

DPID = 0x1
ME = "c1"
OTHER = "c2"
TIMING = Timing(role_request_timeout=1.0, retry_initial=0.2, retry_max=1.6, reassert_interval=10.0)


@dataclass
class Driver:
    """Feeds one FSM and keeps what it asked for."""

    fsm: MastershipFSM
    now: float = 100.0
    actions: list = field(default_factory=list)

    def __call__(self, method: str, *args) -> list:
        out = getattr(self.fsm, method)(*args, self.now)
        self.actions.extend(out)
        return out

    def advance(self, seconds: float) -> list:
        self.now += seconds
        return self("tick")

    def reply_to(self, request: SendRoleRequest, role: Role | None = None) -> list:
        return self("role_reply", request.xid, role or request.role, request.generation_id)


def sends(actions: list) -> list[SendRoleRequest]:
    return [a for a in actions if isinstance(a, SendRoleRequest)]


def reports(actions: list) -> list[MastershipChanged]:
    return [a for a in actions if isinstance(a, MastershipChanged)]


def make(timing: Timing = TIMING, **kwargs) -> Driver:
    return Driver(MastershipFSM(DPID, ME, timing, **kwargs))


def master(d: Driver, term: int = 10) -> SendRoleRequest:
    """Bring `d` to confirmed MASTER under `term`; return the confirmed request."""
    d("switch_up")
    (request,) = sends(d("elected", term))
    d.reply_to(request)
    assert d.fsm.may_program
    return request


# ---- switch up / election ----------------------------------------------------------------------


def test_switch_up_campaigns_and_reads_the_leader_but_claims_nothing_without_a_term():
    d = make()
    out = d("switch_up")
    assert out[:2] == [Campaign(DPID), ReadLeader(DPID)]
    assert not sends(out)
    assert reports(out)[-1].role is Role.EQUAL


def test_elected_sends_master_with_the_term_and_programs_only_after_the_matching_reply():
    d = make()
    d("switch_up")
    (request,) = sends(d("elected", 42))
    assert (request.role, request.generation_id) == (Role.MASTER, 42)
    assert not d.fsm.may_program  # ONOS-2885: not before the reply
    assert d("role_reply", request.xid + 1, Role.MASTER, 42) == []  # someone else's xid
    assert not d.fsm.may_program
    out = d.reply_to(request)
    assert d.fsm.may_program
    last = reports(out)[-1]
    assert last == MastershipChanged(DPID, Role.MASTER, 42, True, last.reason)


def test_not_elected_claims_slave_with_the_leaders_term():
    d = make()
    d("switch_up")
    (request,) = sends(d("leader_seen", OTHER, 7))
    assert (request.role, request.generation_id) == (Role.SLAVE, 7)
    d.reply_to(request)
    assert d.fsm.role is Role.SLAVE and not d.fsm.may_program


def test_a_confirmed_slave_stays_as_it_is_when_the_leader_changes():
    """A standby re-claiming SLAVE per switch that changes hands would demote nobody and double
    a failover's OpenFlow work; only a role still to claim follows the newest term."""
    d = make()
    d("switch_up")
    d.reply_to(sends(d("leader_seen", OTHER, 7))[0])
    out = d("leader_seen", "c3", 8)
    assert not sends(out) and not reports(out)
    assert d.fsm.known_term == 8 and d.fsm.role is Role.SLAVE
    out = d("elected", 9)  # and it still claims MASTER under its own term
    assert [(s.role, s.generation_id) for s in sends(out)] == [(Role.MASTER, 9)]


def test_a_slave_claim_in_flight_is_not_sent_again_for_a_newer_leader():
    d = make()
    d("switch_up")
    (request,) = sends(d("leader_seen", OTHER, 7))
    assert not sends(d("leader_seen", "c3", 8))
    d.reply_to(request)
    assert d.fsm.role is Role.SLAVE and not sends(d.advance(1.0))


def test_the_answer_to_read_leader_is_the_same_input():
    d = make()
    d("switch_up")
    (request,) = sends(d("leader_read", OTHER, 3))
    assert request.role is Role.SLAVE


def test_duplicate_elected_and_duplicate_leader_send_nothing_new():
    d = make()
    request = master(d, 5)
    assert d("elected", 5) == []
    assert not sends(d("leader_seen", ME, 5))
    assert d.fsm.may_program and request.generation_id == 5


def test_elected_under_a_newer_term_reclaims_and_holds_until_confirmed():
    d = make()
    master(d, 5)
    d("revoked", 5)
    assert not d.fsm.may_program
    out = d("elected", 9)
    assert [(s.role, s.generation_id) for s in sends(out)] == [(Role.MASTER, 9)]
    assert not d.fsm.may_program


def test_elected_for_a_switch_that_is_gone_resigns():
    d = make()
    assert d("elected", 5) == [Resign(DPID)]


# ---- losing mastership -------------------------------------------------------------------------


def test_revoked_stops_programming_in_the_same_step_then_claims_slave():
    d = make()
    master(d, 10)
    out = d("revoked", 10)
    assert isinstance(out[0], MastershipChanged) and not out[0].may_program
    (request,) = sends(out)
    assert (request.role, request.generation_id) == (Role.SLAVE, 10)


def test_revoked_for_another_term_is_ignored():
    d = make()
    master(d, 10)
    assert d("revoked", 9) == []
    assert d.fsm.may_program


def test_session_lost_demotes_at_once():
    d = make()
    master(d, 10)
    out = d("session_changed", Session.LOST)
    assert not d.fsm.may_program
    assert [(s.role, s.generation_id) for s in sends(out)] == [(Role.SLAVE, 10)]


def test_a_newer_leader_observed_demotes_before_the_revoke_arrives():
    d = make()
    master(d, 10)
    out = d("leader_seen", OTHER, 12)
    assert not d.fsm.may_program
    assert [(s.role, s.generation_id) for s in sends(out)] == [(Role.SLAVE, 12)]
    assert d("revoked", 10) == []  # late revoke: nothing more to do


def test_an_older_leader_observation_does_not_demote():
    d = make()
    master(d, 10)
    assert not sends(d("leader_seen", OTHER, 8))
    assert d.fsm.may_program


def test_is_slave_error_while_master_stops_at_once_and_reclaims_once_the_store_agrees():
    d = make()
    master(d, 10)
    out = d("not_master_error")
    assert reports(out)[0].role is Role.SLAVE and not reports(out)[0].may_program
    assert ReadLeader(DPID, fresh=True) in out
    assert not sends(out)  # the store decides, not a retry
    assert not sends(d.advance(5.0))
    out = d("leader_read", ME, 10)
    assert [(s.role, s.generation_id) for s in sends(out)] == [(Role.MASTER, 10)]


def test_is_slave_error_while_slave_is_ignored():
    d = make()
    d("switch_up")
    d.reply_to(sends(d("leader_seen", OTHER, 4))[0])
    assert d("not_master_error") == []


# ---- suspended sessions ------------------------------------------------------------------------


def test_suspended_holds_sends_nothing_and_resumes_after_reconfirmation():
    d = make()
    master(d, 10)
    out = d("session_changed", Session.SUSPENDED)
    assert not d.fsm.may_program and reports(out)[-1].role is Role.MASTER
    assert not sends(d.advance(TIMING.reassert_interval + 1))  # no periodic re-assert either
    assert not sends(d("elected", 11))  # nothing state-changing while suspended
    d("revoked", 11)
    d("elected", 10 + 2)
    out = d("session_changed", Session.CONNECTED)
    assert ReadLeader(DPID) in out
    (request,) = sends(out)
    assert (request.role, request.generation_id) == (Role.MASTER, 12)
    assert not d.fsm.may_program
    d.reply_to(request)
    assert d.fsm.may_program


def test_suspended_then_connected_with_the_same_term_reasserts_before_programming():
    d = make()
    master(d, 10)
    d("session_changed", Session.SUSPENDED)
    out = d("session_changed", Session.CONNECTED)
    (request,) = sends(out)
    assert (request.role, request.generation_id) == (Role.MASTER, 10)
    assert not d.fsm.may_program  # waits for the re-assert's reply
    d.reply_to(request)
    assert d.fsm.may_program


def test_without_hold_a_suspended_master_keeps_programming_and_reasserting():
    timing = Timing(role_request_timeout=1.0, retry_initial=0.2, retry_max=1.6,
                    reassert_interval=2.0, hold_on_suspend=False)
    d = make(timing)
    master(d, 10)
    d("session_changed", Session.SUSPENDED)
    assert d.fsm.may_program
    (request,) = sends(d.advance(2.5))
    assert (request.role, request.generation_id) == (Role.MASTER, 10)
    # A successor claimed a newer term: the switch refuses our old one. Stop at once.
    out = d("role_error", request.xid, True)
    assert not d.fsm.may_program and d.fsm.role is Role.SLAVE
    assert ReadLeader(DPID, fresh=True) in out and not sends(out)
    d("leader_read_failed")  # the store is unreachable from here
    assert not d.fsm.may_program
    # No MASTER claim with the old term while the store has not answered, backoff or not.
    assert not any(s.role is Role.MASTER for s in sends(d.advance(3.0)))


# ---- refusals, timeouts, retries ---------------------------------------------------------------


def test_stale_rereads_and_retries_with_exponential_backoff_never_inventing_a_term():
    d = make()
    d("switch_up")
    (first,) = sends(d("elected", 10))
    out = d("role_error", first.xid, True)
    assert ReadLeader(DPID, fresh=True) in out and not sends(out)
    assert not sends(d("leader_read", ME, 10))  # still ours, but backoff 0.2 s not over
    assert not sends(d.advance(0.1))
    (second,) = sends(d.advance(0.15))
    assert (second.role, second.generation_id) == (Role.MASTER, 10)
    d("role_error", second.xid, True)
    d("leader_read", ME, 10)
    assert not sends(d.advance(0.35))  # now 0.4 s
    (third,) = sends(d.advance(0.1))
    assert third.generation_id == 10
    # The read answers: another member leads under a newer term -> SLAVE with that term, now.
    out = d("leader_read", OTHER, 15)
    assert [(s.role, s.generation_id) for s in sends(out)] == [(Role.SLAVE, 15)]


def test_backoff_is_capped_by_retry_max():
    d = make()
    d("switch_up")
    d("leader_seen", OTHER, 5)
    gaps = []
    last = d.now
    for _ in range(8):
        request = next(a for a in reversed(d.actions) if isinstance(a, SendRoleRequest))
        d("role_error", request.xid, True)
        while not sends(d.advance(0.05)):
            pass
        gaps.append(round(d.now - last, 2))
        last = d.now
    assert max(gaps) <= TIMING.retry_max + 0.06
    assert gaps[-1] >= TIMING.retry_max


def test_stale_slave_claim_is_retried_so_equal_is_not_left_behind():
    d = make()
    d("switch_up")
    (request,) = sends(d("leader_seen", OTHER, 5))
    d("role_error", request.xid, True)
    assert d.fsm.role is Role.EQUAL
    out = d("leader_read", OTHER, 6)
    (retry,) = sends(out)
    assert (retry.role, retry.generation_id) == (Role.SLAVE, 6)
    d.reply_to(retry)
    assert d.fsm.role is Role.SLAVE


def test_stale_streak_counts_refusals_until_the_switch_confirms_a_role():
    d = make()
    d("switch_up")
    (request,) = sends(d("leader_seen", OTHER, 5))
    d("role_error", request.xid, True)
    (retry,) = sends(d("leader_read", OTHER, 6))
    d("role_error", retry.xid, True)
    assert d.fsm.stale_streak == 2  # the app explains a streak that does not end
    (last,) = sends(d("leader_read", OTHER, 7))
    d.reply_to(last)
    assert d.fsm.role is Role.SLAVE and d.fsm.stale_streak == 0
    assert d.fsm.stale_refusals == 2


def test_other_role_errors_back_off_too():
    d = make()
    d("switch_up")
    (request,) = sends(d("elected", 3))
    out = d("role_error", request.xid, False)
    assert not sends(out)
    assert sends(d.advance(0.25))


def test_unanswered_role_request_times_out_and_is_resent_under_a_fresh_xid():
    d = make()
    d("switch_up")
    (first,) = sends(d("elected", 10))
    assert not sends(d.advance(0.9))
    out = d.advance(0.2)
    (second,) = sends(out)
    assert ReadLeader(DPID) in out
    assert second.xid != first.xid and second.generation_id == 10
    assert d.fsm.timeouts == 1
    # A late answer to the first request is still the switch's word.
    d.reply_to(first)
    assert d.fsm.may_program


def test_periodic_reassert_keeps_mastership_without_interruption():
    d = make()
    master(d, 10)
    assert not sends(d.advance(9.0))
    (request,) = sends(d.advance(1.5))
    assert (request.role, request.generation_id) == (Role.MASTER, 10)
    assert d.fsm.may_program  # a routine re-assert does not interrupt programming
    d.reply_to(request)
    assert not sends(d.advance(9.0))
    assert sends(d.advance(1.5))


def test_no_periodic_reassert_by_default():
    """The default sends nothing while nothing happens: periodic work per switch would grow
    with the number of switches, and every event that may change a role is pushed."""
    d = make(Timing(role_request_timeout=1.0))
    master(d, 10)
    assert d.fsm.next_deadline() is None
    assert not sends(d.advance(3600.0)) and d.fsm.may_program
    with pytest.raises(ValueError, match="reassert_interval"):
        Timing(reassert_interval=-1.0)


def test_reply_with_another_role_than_asked_is_not_a_confirmation():
    d = make()
    d("switch_up")
    (request,) = sends(d("elected", 10))
    d.reply_to(request, Role.SLAVE)
    assert not d.fsm.may_program and d.fsm.role is Role.SLAVE
    assert sends(d.advance(0.25))


def test_no_leader_yet_keeps_asking_the_store():
    d = make()
    d("switch_up")
    d("leader_read", None, None)
    reads = 0
    for _ in range(40):
        reads += d.advance(0.1).count(ReadLeader(DPID))
    assert reads >= 2
    (request,) = sends(d("leader_seen", OTHER, 2))
    assert request.role is Role.SLAVE


# ---- channel down, numbers ---------------------------------------------------------------------


def test_switch_down_resigns_and_reports():
    d = make()
    master(d, 10)
    out = d("switch_down")
    assert out[0] == Resign(DPID)
    assert reports(out)[-1].role is Role.NONE and not reports(out)[-1].may_program
    assert d("tick") == [] and d("role_reply", 1, Role.MASTER, 10) == []


def test_generation_ids_are_unsigned_64_bit():
    d = make()
    d("switch_up")
    (request,) = sends(d("elected", MAX_GENERATION_ID))
    assert request.generation_id == 2**64 - 1
    with pytest.raises(ValueError):
        d("elected", 2**64)
    with pytest.raises(ValueError):
        d("leader_seen", OTHER, -1)


def test_xids_are_32_bit():
    nxt = xid_counter(2**32 - 1)
    assert [nxt(), nxt()] == [2**32 - 1, 0]


def test_timing_is_validated():
    with pytest.raises(ValueError):
        Timing(role_request_timeout=0)
    with pytest.raises(ValueError):
        Timing(retry_initial=2.0, retry_max=1.0)


# ---- invariants under random input -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_random_inputs_never_break_the_invariants(seed: int) -> None:
    """Whatever happens: MASTER is claimed only with our current term while the session allows;
    every generation_id was handed to us by the store; may_program implies a confirmed MASTER
    reply under the term we hold; a switch with an answer is never left EQUAL for long."""
    rng = random.Random(seed)
    hold = rng.random() < 0.7
    timing = Timing(role_request_timeout=1.0, retry_initial=0.1, retry_max=0.8,
                    reassert_interval=3.0, hold_on_suspend=hold)
    fenced = rng.random() < 0.7
    d = make(timing, fenced=fenced)
    d("switch_up")
    terms_given: set[int] = set()
    term = 0
    pending: list[SendRoleRequest] = []
    switch_gen = 0
    for _ in range(300):
        choice = rng.random()
        if choice < 0.12:
            term += rng.randint(1, 5)
            terms_given.add(term)
            out = d("elected", term)
        elif choice < 0.2:
            out = d("revoked", d.fsm.elected_term)
        elif choice < 0.3:
            term += rng.randint(1, 5)
            terms_given.add(term)
            out = d("leader_seen", rng.choice([OTHER, "c3"]), term)
        elif choice < 0.36:
            out = d("session_changed", rng.choice(list(Session)))
        elif choice < 0.62 and pending:
            request = pending.pop(0)
            if rng.random() < 0.15:
                out = []  # the switch never answers this one
            elif fenced and request.generation_id < switch_gen:
                out = d("role_error", request.xid, True)
            else:
                switch_gen = request.generation_id
                out = d.reply_to(request)
        elif choice < 0.63:
            out = d("role_status", Role.SLAVE, term + 1)
        elif choice < 0.645 and d.fsm.elected_term is not None:
            out = d("predecessor_gone", d.fsm.elected_term)
        elif choice < 0.66:
            out = d("not_master_error")
        else:
            out = d.advance(rng.random() * 0.6)
        for action in out:
            if isinstance(action, SendRoleRequest):
                assert action.generation_id in terms_given, "generation_id not from the store"
                if action.role is Role.MASTER:
                    assert action.generation_id == d.fsm.elected_term
                    assert d.fsm.session is Session.CONNECTED or (
                        not hold and fenced and d.fsm.session is Session.SUSPENDED)
                pending.append(action)
        fsm = d.fsm
        if fsm.may_program:
            assert fsm.role is Role.MASTER and fsm.role_generation_id == fsm.elected_term
            assert fsm.session is Session.CONNECTED or (not hold and fenced)
    # Let everything settle: answer everything, connect the session, run the clock.
    d("session_changed", Session.CONNECTED)
    term += 1
    terms_given.add(term)
    d("leader_seen", OTHER, term)
    for _ in range(200):
        out = d.advance(0.2)
        pending += sends(out)
        while pending:
            request = pending.pop(0)
            if fenced and request.generation_id < switch_gen:
                pending += sends(d("role_error", request.xid, True))
            else:
                switch_gen = request.generation_id
                pending += sends(d.reply_to(request))
    assert d.fsm.role is Role.SLAVE and d.fsm.role_generation_id == term


def test_deposed_by_the_store_fence_stops_mastering_and_rereads():
    d = make()
    master(d, 10)
    assert d("deposed", 9) == []  # not our term
    out = d("deposed", 10)
    assert not d.fsm.may_program and ReadLeader(DPID) in out
    assert [(s.role, s.generation_id) for s in sends(out)] == [(Role.SLAVE, 10)]


# ---- OpenFlow 1.4+ ROLE_STATUS, and the switch's word in general ------------------------------


def test_role_status_slave_stops_programming_at_once_and_asks_the_store():
    d = make()
    master(d, 10)
    out = d("role_status", Role.SLAVE, 12)
    assert out[0] == MastershipChanged(DPID, Role.SLAVE, 10, False, out[0].reason)
    assert "ROLE_STATUS" in out[0].reason and not d.fsm.may_program
    assert ReadLeader(DPID, fresh=True) in out and not sends(out)
    assert not sends(d.advance(5.0))  # no MASTER claim on our own say-so
    # The store answers: a successor leads under term 12 -> claim SLAVE with it.
    out = d("leader_read", OTHER, 12)
    assert [(s.role, s.generation_id) for s in sends(out)] == [(Role.SLAVE, 12)]
    assert d.fsm.elected_term is None


def test_role_status_while_not_master_or_promoting_changes_nothing():
    d = make()
    d("switch_up")
    d.reply_to(sends(d("leader_seen", OTHER, 4))[0])
    assert d("role_status", Role.SLAVE, 4) == []
    d2 = make()
    master(d2, 10)
    assert d2("role_status", Role.MASTER, 10) == [] and d2.fsm.may_program


def test_non_stale_refusal_reads_from_the_watch_cache_not_fresh():
    d = make()
    d("switch_up")
    (request,) = sends(d("elected", 3))
    out = d("role_error", request.xid, False)
    assert ReadLeader(DPID) in out and ReadLeader(DPID, fresh=True) not in out


def test_stale_hint_after_a_streak_and_gone_once_the_switch_confirms():
    d = make()
    d("switch_up")
    d("elected", 10)
    for _ in range(STALE_HINT_AFTER):
        assert d.fsm.stale_hint is None
        request = next(a for a in reversed(d.actions) if isinstance(a, SendRoleRequest))
        d("role_error", request.xid, True)
        d("leader_read", ME, 10)
        while not sends(d.advance(0.1)):
            pass
    hint = d.fsm.stale_hint
    assert hint and "larger generation_id" in hint and "another coordination store" in hint
    request = next(a for a in reversed(d.actions) if isinstance(a, SendRoleRequest))
    d.reply_to(request)
    assert d.fsm.may_program and d.fsm.stale_hint is None


# ---- unfenced switches (OpenFlow 1.0 Nicira roles: no generation_id) ---------------------------


def test_unfenced_claims_master_only_after_the_predecessor_stopped():
    d = make(fenced=False)
    d("switch_up")
    out = d("elected", 10)
    assert CheckPredecessor(DPID, 10) in out and not sends(out)
    assert d("predecessor_gone", 9) == []  # an older term's answer
    out = d("predecessor_gone", 10)
    (request,) = sends(out)
    assert (request.role, request.generation_id) == (Role.MASTER, 10)
    d.reply_to(request)
    assert d.fsm.may_program


def test_unfenced_claims_anyway_after_the_predecessor_timeout():
    timing = Timing(role_request_timeout=1.0, retry_initial=0.2, retry_max=1.6,
                    reassert_interval=10.0, predecessor_timeout=2.0)
    d = make(timing, fenced=False)
    d("switch_up")
    d("elected", 10)
    assert d.fsm.next_deadline() is not None and d.fsm.next_deadline() <= d.now + 2.0
    assert not sends(d.advance(1.9))
    (request,) = sends(d.advance(0.2))
    assert (request.role, request.generation_id) == (Role.MASTER, 10)
    assert "claiming anyway" in request.reason


def test_fenced_switch_needs_no_predecessor_check():
    d = make()
    d("switch_up")
    out = d("elected", 10)
    assert not any(isinstance(a, CheckPredecessor) for a in out)
    assert sends(out)


def test_unfenced_switch_always_holds_when_suspended():
    timing = Timing(role_request_timeout=1.0, retry_initial=0.2, retry_max=1.6,
                    reassert_interval=2.0, hold_on_suspend=False)
    d = make(timing, fenced=False)
    d("switch_up")
    d("elected", 10)
    (request,) = sends(d("predecessor_gone", 10))
    d.reply_to(request)
    assert d.fsm.may_program
    out = d("session_changed", Session.SUSPENDED)
    assert not d.fsm.may_program and reports(out)[-1].may_program is False
    assert not sends(d.advance(5.0))


# ---- the glue's per-version codecs (the only part that knows the wire) -------------------------


@pytest.mark.parametrize("version", [1, 3, 4, 5, 6])
def test_every_codec_puts_role_and_generation_id_where_the_switch_reads_them(version: int):
    """Serialized with the installed framework's own parsers: OpenFlow 1.2-1.5 carry the role
    and the 64-bit generation_id at fixed offsets (1.5 has `short_id` in between: passed by
    keyword); 1.0 sends a Nicira NXT_ROLE_REQUEST with the Nicira role code and no
    generation_id. Replies and statuses decode back to the same roles."""
    import struct

    from ryu_integration.compat import framework_module
    from ryu_integration.mastership.roles import CODECS

    codec = CODECS[version]
    datapath = framework_module("ofproto.ofproto_protocol").ProtocolDesc(version)
    for role in (Role.MASTER, Role.SLAVE, Role.EQUAL):
        request = codec.request(datapath, codec.codes[role], 0x0102030405060708)
        request.set_xid(0xC0000001)
        request.serialize()
        wire = bytes(request.buf)
        wire_version, _type, length, xid = struct.unpack_from("!BBHI", wire)
        assert (wire_version, length, xid) == (version, len(wire), 0xC0000001)
        if version == 1:
            vendor, subtype, code = struct.unpack_from("!III", wire, 8)
            assert (vendor, subtype) == (0x2320, 10)  # Nicira, NXT_ROLE_REQUEST
            assert code == {Role.EQUAL: 0, Role.MASTER: 1, Role.SLAVE: 2}[role]
            assert codec.fenced is False and codec.stale is None
        else:
            code, generation_id = struct.unpack_from("!I4xQ", wire, 8)
            assert code == {Role.EQUAL: 1, Role.MASTER: 2, Role.SLAVE: 3}[role]
            assert generation_id == 0x0102030405060708 and codec.fenced
        assert codec.role_of(codec.codes[role]) is role
    assert codec.role_of(99) is Role.EQUAL


# ---- the glue's packaging: what Ryu / os-ken see of `ryu_integration.mastership` ---------------


def test_the_package_name_loads_the_app_and_every_input_has_one_handler():
    """The framework loads only classes *defined* in the module it is given: the package's own
    subclass, named "Mastership" (what `lookup_service_brick` finds). Each typed loop input has
    exactly one handler (but those of the report lane), and an app consuming `EventMastershipChanged` pulls the mastership app
    in as a service."""
    import inspect

    from ryu_integration import mastership
    from ryu_integration.apps.learning_switch import LearningSwitch
    from ryu_integration.compat import app_manager, framework_module
    from ryu_integration.mastership import inputs

    loaded = app_manager.AppManager().load_app("ryu_integration.mastership")
    assert loaded is mastership.Mastership and loaded.__name__ == "Mastership"
    assert issubclass(loaded, mastership.app.Mastership)

    handled: dict[type, list[str]] = {}
    for name, method in inspect.getmembers(loaded, inspect.isfunction):
        for ev_cls in getattr(method, "callers", {}):
            handled.setdefault(ev_cls, []).append(name)
    kinds = [cls for _, cls in inspect.getmembers(inputs, inspect.isclass)
             if cls.__module__ == inputs.__name__]
    assert len(kinds) == 11
    lane = mastership.app.REPORT_LANE  # handled by the lane's turn, not by the framework
    assert {cls: len(handled.get(cls, [])) for cls in kinds} == {
        cls: 0 if cls in lane else 1 for cls in kinds}

    handler = framework_module("controller.handler")
    assert "ryu_integration.mastership" in handler.get_dependent_services(LearningSwitch)
    assert "ryu_integration.mastership" not in handler.get_dependent_services(loaded)
