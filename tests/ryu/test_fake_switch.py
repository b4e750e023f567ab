"""The switch model's controller-role rules, asserted on what the switch does (roles, refusals,
its record), with a fake clock. The same rules are checked against Open vSwitch in
tests/integration/test_fleet_vs_ovs.py."""

from __future__ import annotations

import random

import pytest

from ryu_integration.testing.fake_switch import (
    MAX_GENERATION_ID,
    FakeSwitch,
    Kind,
    Refusal,
    Role,
    Write,
    is_newer,
    is_stale,
)

A, B, C = "tcp:127.0.0.1:6653", "tcp:127.0.0.1:6654", "tcp:127.0.0.1:6655"
HALF = 2**63


def switch(*channels: str) -> FakeSwitch:
    sw = FakeSwitch(0x1)
    for i, channel in enumerate(channels):
        sw.connect(channel, float(i))
    return sw


# ---- the compare -------------------------------------------------------------------------


def test_stale_compare_wraps_around_64_bits():
    assert not is_stale(5, None)  # nothing seen yet: never stale
    assert not is_stale(5, 5) and not is_stale(6, 5) and is_stale(4, 5)
    assert not is_stale(0, MAX_GENERATION_ID)  # 0 follows 2**64-1
    assert is_stale(MAX_GENERATION_ID, 0)
    assert is_stale(7 + HALF, 7)  # (int64)(2**63) < 0: exactly half the ring counts as older
    assert not is_stale(6 + HALF, 7)
    assert is_newer(1, MAX_GENERATION_ID) and not is_newer(5, 5) and not is_newer(4, 5)


def test_compare_is_antisymmetric_away_from_the_half_point():
    rng = random.Random(7)
    for _ in range(2000):
        a, b = rng.randrange(2**64), rng.randrange(2**64)
        if (a - b) % 2**64 in (0, HALF):
            continue
        assert is_stale(a, b) != is_stale(b, a), (a, b)
        assert is_newer(a, b) == is_stale(b, a), (a, b)


# ---- role requests -----------------------------------------------------------------------


def test_new_channel_is_equal_and_reply_says_max_generation_before_any():
    sw = switch(A)
    out = sw.role_request(A, Role.NOCHANGE, 0, 1.0)
    assert (out.role, out.generation_id, out.accepted) == (Role.EQUAL, MAX_GENERATION_ID, True)
    assert sw.generation_id is None and sw.master is None


def test_master_then_newer_master_demotes_silently_and_older_is_stale():
    sw = switch(A, B)
    assert sw.role_request(A, Role.MASTER, 5, 1.0).role is Role.MASTER
    out = sw.role_request(B, Role.MASTER, 7, 2.0)
    assert (out.role, out.generation_id, out.demoted) == (Role.MASTER, 7, (A,))
    assert sw.role_of(A) is Role.SLAVE and sw.master == B and sw.master_generation == 7
    stale = sw.role_request(A, Role.MASTER, 3, 3.0)
    assert stale.refused is Refusal.STALE and stale.role is Role.SLAVE
    assert sw.master == B and sw.generation_id == 7  # a refusal changes nothing
    assert sw.role_request(A, Role.SLAVE, 7, 4.0).role is Role.SLAVE
    demoted = sw.history(Kind.DEMOTED)
    assert [(e.channel, e.generation_id, e.detail, e.t) for e in demoted] == [(A, 7, B, 2.0)]


def test_equal_needs_no_generation_and_slave_is_checked():
    sw = switch(A, B)
    sw.role_request(A, Role.MASTER, 10, 1.0)
    assert sw.role_request(A, Role.EQUAL, 0, 2.0).role is Role.EQUAL
    assert sw.master is None and sw.generation_id == 10
    assert sw.role_request(B, Role.SLAVE, 9, 3.0).refused is Refusal.STALE
    assert sw.role_request(B, Role.SLAVE, 11, 4.0).accepted
    assert sw.generation_id == 11  # a SLAVE request moves the newest generation_id too


def test_master_reasserting_itself_demotes_no_one():
    sw = switch(A, B)
    sw.role_request(A, Role.MASTER, 5, 1.0)
    assert sw.role_request(A, Role.MASTER, 5, 2.0).demoted == ()
    assert sw.master == A and not sw.history(Kind.DEMOTED)


def test_master_going_slave_leaves_no_master():
    sw = switch(A)
    sw.role_request(A, Role.MASTER, 5, 1.0)
    sw.role_request(A, Role.SLAVE, 6, 2.0)
    assert sw.master is None and sw.master_generation is None


def test_generation_id_must_be_unsigned_64_bit():
    sw = switch(A)
    for bad in (-1, 2**64, True, 1.5):
        with pytest.raises(ValueError):
            sw.role_request(A, Role.MASTER, bad, 1.0)  # type: ignore[arg-type]


def test_unknown_channel_and_double_connect_are_errors():
    sw = switch(A)
    with pytest.raises(KeyError):
        sw.role_request(B, Role.MASTER, 1, 1.0)
    with pytest.raises(ValueError):
        sw.connect(A, 1.0)


# ---- writes ------------------------------------------------------------------------------


def test_slave_writes_are_refused_is_slave_master_and_equal_accepted():
    sw = switch(A, B, C)
    assert sw.write(C, Write.PACKET_OUT, 0.5).accepted  # EQUAL may write
    sw.role_request(A, Role.MASTER, 5, 1.0)
    sw.role_request(B, Role.SLAVE, 5, 1.0)
    for kind in Write:
        assert sw.write(B, kind, 2.0).refused is Refusal.IS_SLAVE
        assert sw.write(A, kind, 2.0).accepted
    refused = sw.history(Kind.IS_SLAVE)
    assert {e.detail for e in refused} == {k.value for k in Write} and len(refused) == len(Write)


def test_fencing_violations_are_writes_not_under_the_newest_master_generation():
    sw = switch(A, B)
    sw.write(A, Write.FLOW_MOD, 0.5)  # EQUAL, nobody master: not fenced
    sw.role_request(A, Role.MASTER, 5, 1.0)
    sw.write(A, Write.FLOW_MOD, 2.0)  # fine
    sw.role_request(B, Role.SLAVE, 6, 3.0)  # a newer term exists; A is still MASTER under 5
    sw.write(A, Write.FLOW_MOD, 4.0)  # accepted by the switch, but a violation
    violations = sw.fencing_violations()
    assert [(e.t, e.role, e.generation_id) for e in violations] == [
        (0.5, Role.EQUAL, None), (4.0, Role.MASTER, 5)]
    assert not [e for e in sw.history(Kind.WRITE) if e.t == 2.0 and e.violation]


# ---- disconnects and the record ----------------------------------------------------------


def test_disconnect_forgets_the_role_not_the_generation():
    sw = switch(A, B)
    sw.role_request(A, Role.MASTER, 9, 1.0)
    sw.disconnect(A, 2.0)
    assert sw.master is None and sw.role_of(A) is None and sw.generation_id == 9
    sw.connect(A, 3.0)
    assert sw.role_request(A, Role.NOCHANGE, 0, 4.0).role is Role.EQUAL
    assert sw.role_request(A, Role.MASTER, 8, 5.0).refused is Refusal.STALE
    assert sw.role_request(A, Role.MASTER, 10, 6.0).accepted
    sw.disconnect(C, 7.0)  # never connected: nothing happens
    assert [e.kind for e in sw.history(channel=A)] == [
        Kind.CONNECT, Kind.ROLE, Kind.DISCONNECT, Kind.CONNECT, Kind.STALE, Kind.ROLE]


def test_first_master_answers_when_and_under_which_generation():
    sw = switch(A, B)
    assert sw.first_master() is None
    sw.role_request(A, Role.MASTER, 5, 1.0)
    sw.role_request(B, Role.MASTER, 7, 2.0)
    first = sw.first_master()
    assert first is not None and (first.channel, first.generation_id, first.t) == (A, 5, 1.0)
    later = sw.first_master(since=1.5, newer_than=5)
    assert later is not None and (later.channel, later.generation_id) == (B, 7)
    assert sw.first_master(newer_than=7) is None


# ---- property-style: random request sequences ---------------------------------------------


def test_random_sequences_keep_the_invariants():
    """Whatever the controllers send: at most one MASTER, the newest generation_id never goes
    back, a refusal changes nothing, STALE exactly when the compare says so, IS_SLAVE exactly for
    slaves."""
    rng = random.Random(20240601)
    channels = [A, B, C]
    for _ in range(300):
        sw = FakeSwitch(0x2)
        connected: set[str] = set()
        base = rng.choice([0, 100, MAX_GENERATION_ID - 20, HALF - 10])
        now = 0.0
        for _ in range(60):
            now += 1.0
            channel = rng.choice(channels)
            if channel not in connected:
                sw.connect(channel, now)
                connected.add(channel)
                continue
            op = rng.random()
            before_gen, before_roles = sw.generation_id, sw.channels()
            if op < 0.1:
                sw.disconnect(channel, now)
                connected.discard(channel)
                assert sw.generation_id == before_gen
                continue
            if op < 0.3:
                kind = rng.choice(list(Write))
                out = sw.write(channel, kind, now)
                assert (out.refused is Refusal.IS_SLAVE) == (before_roles[channel] is Role.SLAVE)
                assert sw.channels() == before_roles
                continue
            role = rng.choice([Role.MASTER, Role.SLAVE, Role.EQUAL, Role.NOCHANGE])
            gen = (base + rng.randrange(-5, 25)) % 2**64
            result = sw.role_request(channel, role, gen, now)
            checked = role in (Role.MASTER, Role.SLAVE)
            assert (result.refused is Refusal.STALE) == (checked and is_stale(gen, before_gen))
            if result.refused:
                assert sw.generation_id == before_gen and sw.channels() == before_roles
            else:
                if checked:
                    assert sw.generation_id == gen
                    assert before_gen is None or not is_stale(gen, before_gen)
                if role is not Role.NOCHANGE:
                    assert sw.role_of(channel) is role
            masters = [c for c, r in sw.channels().items() if r is Role.MASTER]
            assert len(masters) <= 1 and (masters[0] if masters else None) == sw.master
            reply_gen = MAX_GENERATION_ID if sw.generation_id is None else sw.generation_id
            assert result.generation_id == reply_gen
        times = [e.t for e in sw.events]
        assert times == sorted(times)
