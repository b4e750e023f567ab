"""`connect()`: from a URL to a started coordinator; `check_url()`: the same checks, no connection."""

from __future__ import annotations

from typing import Any

from .api import Coordinator
from .loader import load_driver
from .names import validate_member_id
from .options import COMMON_OPTIONS, resolve_options
from .urls import BackendURL, parse_url


def _prepare(url: str, options: dict[str, Any]) -> tuple[BackendURL, type, dict[str, Any]]:
    parsed = parse_url(url)
    driver = load_driver(parsed.scheme)
    resolved = resolve_options({**COMMON_OPTIONS, **driver.OPTIONS}, parsed.options, options)
    return parsed, driver, resolved


def check_url(url: str, **options: Any) -> BackendURL:
    """Parse `url` and check its options (and `options`) against its driver, without
    connecting: every `ConfigurationError` `connect()` would raise for them, raised now (for
    launchers that validate their configuration before starting anything)."""
    return _prepare(url, options)[0]


def connect(url: str, member_id: str, **options: Any) -> Coordinator:
    """Connect to the backend named by `url` as `member_id`, and return a started coordinator.

    `member_id` must satisfy `coordination.names.validate_member_id`. Options come from the URL
    query and from keyword arguments (keywords win); every driver accepts
    `coordination.options.COMMON_OPTIONS` plus its own. Use it as a context manager, or call
    `close()`, to leave cleanly (resigning elections at once instead of at session expiry).
    """
    validate_member_id(member_id)
    parsed, driver, resolved = _prepare(url, options)
    return driver(parsed, member_id, resolved).start()
