"""Typed driver options, merged from the URL query and keyword arguments (keywords win)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean (true/false), got {value!r}")


@dataclass(frozen=True)
class Option:
    """One option a driver understands: its type, default and a one-line description."""

    convert: Callable[[Any], Any]
    default: Any
    help: str
    minimum: float | None = None

    def parse(self, name: str, value: Any) -> Any:
        try:
            converted = _to_bool(value) if self.convert is bool else self.convert(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"option {name}={value!r} is invalid: {exc}") from None
        if self.minimum is not None and converted is not None and converted < self.minimum:
            raise ConfigurationError(f"option {name}={value!r} must be >= {self.minimum}")
        return converted


#: Options every driver accepts. Drivers add their own in `Driver.OPTIONS`.
COMMON_OPTIONS: dict[str, Option] = {
    "session_timeout": Option(float, 10.0, "seconds before a silent member's session expires", 0.1),
    "connect_timeout": Option(float, 10.0, "seconds to wait for the first connection", 0.1),
    "operation_timeout": Option(float, 10.0, "seconds one store operation may take", 0.1),
    "retry_attempts": Option(int, 5, "tries for an operation that hit a transient error", 1),
    "retry_max_delay": Option(float, 2.0, "longest pause between two retries, seconds", 0.0),
    "watchdog_interval": Option(
        float, 5.0, "seconds between election self-checks that repair a wedged election (0: off)", 0
    ),
    "address": Option(str, "", "address this member advertises (e.g. its OpenFlow endpoint)"),
    "capacity": Option(int, 0, "relative capacity this member advertises", 0),
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
                raise ConfigurationError(f"unknown option {name!r}; known options: {known}")
            merged[name] = spec.parse(name, value)
    return merged
