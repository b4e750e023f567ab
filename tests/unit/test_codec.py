"""`coordination.codec.decode_json`: every stored JSON value decodes one way, and fails one way."""

from __future__ import annotations

import json
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordination import InvalidRecordError, MemberInfo
from coordination.codec import MAX_BYTES, MAX_DEPTH, decode_json
from coordination.records import decode

PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("data, expected", [
    (b'{"a": [1, 2.5, "x"]}', {"a": [1, 2.5, "x"]}),
    ('{"a": null}', {"a": None}),              # text (an SQLite TEXT column) decodes the same
    (bytearray(b"[true]"), [True]),
    (memoryview(b'"\\ud83d\\ude00"'), "\U0001F600"),  # an escaped surrogate *pair* is fine
    ("[" * MAX_DEPTH + "]" * MAX_DEPTH, json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH)),
    ('["' + "[" * 42 + '"]', ["[" * 42]),  # brackets inside strings do not nest
])
def test_valid_values_decode(data: object, expected: object) -> None:
    assert decode_json(data, "value") == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("data, fragment", [
    (b"[" * 1000, "nested deeper than"),                          # the tester's 1 kB of '['
    (b"[" * 200_000 + b"]" * 200_000, "nested deeper than"),
    ("{" + '"a":{' * (MAX_DEPTH + 1) + "}" * (MAX_DEPTH + 2), "nested deeper than"),
    (b"\xff\xfe", "not UTF-8"),
    ("\ud800", "unpaired surrogate"),                              # TEXT that cannot be UTF-8
    (b'"\\ud800"', "unpaired surrogate"),
    (b'{"term": NaN}', "NaN"),
    (b"[Infinity]", "Infinity"),
    (b"-Infinity", "Infinity"),
    (b"1e400", "out of range"),
    (b"1" * 100, "out of range"),
    (b" " * (MAX_BYTES + 1), "more than"),
    (b"", "not valid JSON"),
    (b'{"a": 1', "not valid JSON"),
    (b'["\\', "not valid JSON"),
    (42, "expected bytes or text"),
    (None, "expected bytes or text"),
])
def test_bad_values_raise_invalid_record_error_naming_what(data: object, fragment: str) -> None:
    with pytest.raises(InvalidRecordError, match=fragment) as info:
        decode_json(data, "member record 'x'")  # type: ignore[arg-type]
    message = str(info.value)
    assert message.startswith("member record 'x': ") and "\n" not in message
    assert len(message) < 400


def test_what_is_shown_on_one_line() -> None:
    with pytest.raises(InvalidRecordError) as info:
        decode_json(b"[", "topology record a\nforged line\x00" + "x" * 10_000)
    assert "\n" not in str(info.value) and "\\n" in str(info.value)
    assert len(str(info.value)) < 500


def test_the_depth_check_is_not_recursive() -> None:
    """Under a recursion limit much lower than the nesting, the check still answers."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100)
    try:
        with pytest.raises(InvalidRecordError, match="nested"):
            decode_json(b"[" * 50_000, "deep")
    finally:
        sys.setrecursionlimit(limit)


def test_adversarial_strings_decode_in_linear_time() -> None:
    """Many escapes, unterminated strings and brackets: bounded work, not a regex blow-up."""
    start = time.monotonic()
    for data in (b'["' + b'\\"' * 400_000, b"[" * 40 + b'"' + b"[" * 500_000,
                 b"[" + b'"\\\\",' * 200_000 + b"1]", b"[[]," * 200_000 + b"[]]"):
        try:
            decode_json(data, "big", max_depth=1)
        except InvalidRecordError:
            pass
    assert time.monotonic() - start < 10


# ---- properties ---------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=30,
)


@PROPERTY
@given(st.binary(max_size=2000))
def test_random_bytes_only_ever_raise_invalid_record_error(data: bytes) -> None:
    try:
        decode_json(data, "random")
    except InvalidRecordError:
        pass


@PROPERTY
@given(st.text(alphabet=st.sampled_from('[]{}",:\\ 0aetruflsn.-e1u\ud800'), max_size=3000))
def test_random_json_like_text_only_ever_raises_invalid_record_error(text: str) -> None:
    try:
        decode_json(text, "random")
    except InvalidRecordError:
        pass


@PROPERTY
@given(st.integers(0, 5000), st.sampled_from(["[", "{\"k\":", "[{\"a\":", "[\"s\","]))
def test_any_nesting_decodes_or_raises_invalid_record_error(depth: int, opener: str) -> None:
    closer = {"[": "]", '{"k":': "}", '[{"a":': "}]", '["s",': "]"}[opener]
    text = opener * depth + "1" + closer * depth
    try:
        value = decode_json(text, "nested")
    except InvalidRecordError as exc:
        assert "nested deeper" in str(exc)
        return
    json.dumps(value)  # whatever decodes is shallow enough for recursive code


@PROPERTY
@given(json_values)
def test_valid_json_round_trips(value: object) -> None:
    text = json.dumps(value)
    try:
        decoded = decode_json(text.encode(), "value")
    except InvalidRecordError as exc:  # only lone surrogates from st.text are refused
        assert "surrogate" in str(exc)
        return
    assert decoded == value


@PROPERTY
@given(st.text(max_size=40), st.binary(max_size=300) | st.text(max_size=300)
       | st.builds(lambda n: b"[" * n, st.integers(0, 3000)))
def test_topology_and_member_decoders_only_raise_invalid_record_error(
        path: str, data: bytes | str) -> None:
    for func in (lambda: decode(path, data),  # type: ignore[arg-type]
                 lambda: decode("switch/0000000000000001", data),  # type: ignore[arg-type]
                 lambda: MemberInfo.decode(data, path)):
        try:
            func()
        except InvalidRecordError as exc:
            assert "\n" not in str(exc)
