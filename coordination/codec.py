"""The one way to decode a JSON value read from a store: bounded, strict, and failing in one way.

Everything a driver reads back (topology records, member records, candidacies, leader keys) was
written by some process, or by a hand, and may be anything. `decode_json` turns it into Python
values or raises `InvalidRecordError` with a one-line reason; callers log and skip. It refuses:

- values larger than `MAX_BYTES` (a reader must not be made to hold or parse megabytes);
- nesting deeper than `MAX_DEPTH`, checked by a scan that does not recurse *before* `json.loads`
  (which does recurse: about 1 kB of `[` would otherwise raise RecursionError wherever it is
  decoded, and a deep value that does parse breaks later recursive code such as `json.dumps`);
- bytes that are not UTF-8, text with lone surrogates (neither could be printed or re-encoded),
  and a type other than bytes or text (an SQLite TEXT/INTEGER where a BLOB belongs is decoded
  by its caller's choice, never by accident);
- `NaN`, `Infinity`, `-Infinity` and numbers that overflow to them (not JSON, and a NaN term or
  timestamp compares false with everything), and integers of more than 40 digits.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from .errors import InvalidRecordError
from .names import printable

#: Largest encoded value accepted, in bytes (text: in characters).
MAX_BYTES = 1 << 20
#: Deepest nesting of arrays and objects accepted.
MAX_DEPTH = 32

# A JSON string (a possessive unrolled loop: linear, never backtracks) or one structural character.
_TOKEN = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[\[\]{}"]', re.DOTALL)
_MAX_DIGITS = 40  # 2**64 has 20: no field needs more, and long ints are slow to parse
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class _Rejected(ValueError):
    """Raised from json's hooks for values this codec refuses."""


def _constant(name: str) -> Any:
    raise _Rejected(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Rejected(f"number {text[:40]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_DIGITS:
        raise _Rejected(f"integer of {len(text)} digits is out of range")
    return int(text)


def decode_json(data: bytes | bytearray | memoryview | str, what: str,
                *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one stored JSON value, or raise `InvalidRecordError` naming `what` and the reason.

    Never raises anything else, whatever `data` is.
    """
    label = printable(str(what), 200)
    text = _text(data, label, max_bytes)
    if _too_deep(text, max_depth):
        raise InvalidRecordError(f"{label}: nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_finite_float,
                           parse_int=_bounded_int)
    except _Rejected as exc:
        raise InvalidRecordError(f"{label}: {exc}") from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, an int too long to parse
        raise InvalidRecordError(f"{label}: not valid JSON ({printable(str(exc), 120)})") from None
    if _SURROGATE_ESCAPE.search(text):
        _check_encodable(value, label)
    return value


def _text(data: Any, label: str, max_bytes: int) -> str:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
        if len(raw) > max_bytes:
            raise InvalidRecordError(f"{label}: {len(raw)} bytes, more than the {max_bytes} allowed")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRecordError(
                f"{label}: not valid JSON (not UTF-8: byte 0x{raw[exc.start]:02x} at offset "
                f"{exc.start})"
            ) from None
    if isinstance(data, str):
        if len(data) > max_bytes:
            raise InvalidRecordError(
                f"{label}: {len(data)} characters, more than the {max_bytes} allowed")
        try:
            data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidRecordError(
                f"{label}: text with an unpaired surrogate at offset {exc.start}") from None
        return data
    raise InvalidRecordError(f"{label}: expected bytes or text, got {type(data).__name__}")


def _too_deep(text: str, limit: int) -> bool:
    """Whether arrays/objects nest deeper than `limit` outside strings: a scan of the tokens,
    without recursion, linear in `len(text)`, that stops as soon as it knows."""
    if text.count("[") + text.count("{") <= limit:
        return False  # cannot nest deeper than the number of openers (strings included)
    depth = 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif token in ("]", "}"):
            depth -= 1
        elif token == '"':  # an unterminated string: the rest is inside it (and invalid)
            break
    return False


def _check_encodable(value: Any, label: str) -> None:
    """Refuse lone surrogates (from `\\ud800` escapes) anywhere in a decoded value, iteratively."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidRecordError(
                    f"{label}: a string with an unpaired surrogate (\\ud800-\\udfff)") from None
