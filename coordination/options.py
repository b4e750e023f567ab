"""Typed driver options, merged from the URL query and keyword arguments (keywords win).

Every value is checked here, once, for every driver: numbers written as text take ASCII digits
only (`int()` and `float()` would accept any Unicode digit), floats must be finite (no `nan`,
`inf`, nor `1e308`-style values past `maximum`), and both must lie within `[minimum, maximum]`.
The value of a secret option (`urls.is_secret`: `auth`, `password`, ...) is never echoed in an
error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .detector_wire import format_endpoint, parse_bind_address
from .errors import ConfigurationError
from .names import shown
from .types import MAX_ADDRESS_LENGTH
from .urls import is_secret

#: Seconds in a day: the ceiling of every timeout and interval.
DAY = 86400.0

_INT_TEXT = re.compile(r"[+-]?[0-9]{1,19}")
_FLOAT_TEXT = re.compile(r"[+-]?(?:[0-9]{1,20}(?:\.[0-9]{0,20})?|\.[0-9]{1,20})(?:[eE][+-]?[0-9]{1,3})?")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected a boolean (true/false)")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise ValueError("expected a whole number")
    if isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text):
            return int(text)
        raise ValueError("expected an integer written in ASCII digits")
    raise TypeError(f"expected an integer, got {type(value).__name__}")


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError("expected a number, got a boolean")
    if isinstance(value, str):
        text = value.strip()
        if not _FLOAT_TEXT.fullmatch(text):
            if text.lower().lstrip("+-") in _NOT_FINITE:
                raise ValueError("expected a finite number")
            raise ValueError("expected a decimal number written in ASCII digits")
        value = float(text)
    elif isinstance(value, (int, float)):
        try:
            value = float(value)
        except OverflowError:
            raise ValueError("number out of range") from None
    else:
        raise TypeError(f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _to_address(value: Any) -> str:
    text = str(value)
    if len(text) > MAX_ADDRESS_LENGTH or not text.isprintable():
        raise ValueError(f"expected at most {MAX_ADDRESS_LENGTH} printable characters")
    return text


def _to_bind_address(value: Any) -> str:
    host, port = parse_bind_address(value)
    return format_endpoint(host, port)


_NOT_FINITE = frozenset({"nan", "inf", "infinity"})
_CONVERTERS: dict[Callable[[Any], Any], Callable[[Any], Any]] = {
    bool: _to_bool, int: _to_int, float: _to_float}


@dataclass(frozen=True)
class Option:
    """One option a driver understands: its type, default, a one-line description and, for
    numbers, the range it must lie in."""

    convert: Callable[[Any], Any]
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None

    def parse(self, name: str, value: Any) -> Any:
        """`value` converted and checked, or `ConfigurationError` naming the option."""
        shown_as = name if is_secret(name) else f"{name}={shown(value)}"
        convert = _CONVERTERS.get(self.convert, self.convert)
        try:
            converted = convert(value)
        except (TypeError, ValueError, ArithmeticError) as exc:
            reason = "" if is_secret(name) and convert is self.convert else f": {exc}"
            raise ConfigurationError(f"option {shown_as} is invalid{reason}") from None
        if converted is None or isinstance(converted, (str, bool)):
            return converted
        if isinstance(converted, float) and not math.isfinite(converted):
            raise ConfigurationError(f"option {shown_as} must be a finite number")
        if self.minimum is not None and converted < self.minimum:
            raise ConfigurationError(f"option {shown_as} must be >= {self.minimum}")
        if self.maximum is not None and converted > self.maximum:
            raise ConfigurationError(f"option {shown_as} must be <= {self.maximum}")
        return converted


#: Options every driver accepts. Drivers add their own in `Driver.OPTIONS`.
COMMON_OPTIONS: dict[str, Option] = {
    "session_timeout": Option(float, 10.0, "seconds before a silent member's session expires",
                              0.1, DAY),
    "connect_timeout": Option(float, 10.0, "seconds to wait for the first connection", 0.1, DAY),
    "operation_timeout": Option(float, 10.0, "seconds one store operation may take", 0.1, DAY),
    "retry_attempts": Option(int, 5, "tries for an operation that hit a transient error", 1, 100),
    "retry_max_delay": Option(float, 2.0, "longest pause between two retries, seconds", 0.0, DAY),
    "watchdog_interval": Option(
        float, 5.0, "seconds between election self-checks that repair a wedged election (0: off)",
        0, DAY,
    ),
    "address": Option(_to_address, "", "address this member advertises (e.g. its OpenFlow "
                      "endpoint)"),
    "capacity": Option(int, 0, "relative capacity this member advertises", 0, 2**31 - 1),
    # the peer failure detector (coordination.detector; docs/failure-detector.md)
    "detector": Option(bool, True, "run the peer failure detector (drivers that can evict a "
                       "dead member: zookeeper, etcd3)"),
    "heartbeat_interval": Option(float, 0.1, "seconds between two detector heartbeats",
                                 0.005, 60.0),
    "heartbeat_misses": Option(int, 10, "heartbeats missed before a silent peer is declared "
                               "dead", 1, 100),
    "liveness_address": Option(_to_bind_address, "127.0.0.1:0", "host[:port] of this member's "
                               "liveness endpoint (port 0: any free port); peers must reach it"),
    "damping_window": Option(float, 30.0, "seconds within which a second declaration of the "
                             "same member counts as flapping", 0.0, DAY),
    "damping_backoff": Option(float, 120.0, "seconds a flapping member is not evicted (its "
                              "session timeout decides)", 0.0, DAY),
}


def resolve_options(
    specs: Mapping[str, Option], from_url: Mapping[str, str], from_kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """Validate and merge options; unknown names are an error that lists the known ones."""
    merged: dict[str, Any] = {name: spec.default for name, spec in specs.items()}
    for source in (from_url, from_kwargs):
        for name, value in source.items():
            spec = specs.get(name)
            if spec is None:
                known = ", ".join(sorted(specs))
                raise ConfigurationError(f"unknown option {shown(name)}; known options: {known}")
            merged[name] = spec.parse(name, value)
    return merged
