"""`connect()`: from a URL to a started coordinator."""

from __future__ import annotations

from typing import Any

from .api import Coordinator
from .errors import ConfigurationError
from .loader import load_driver
from .options import COMMON_OPTIONS, resolve_options
from .urls import parse_url


def connect(url: str, member_id: str, **options: Any) -> Coordinator:
    """Connect to the backend named by `url` as `member_id`, and return a started coordinator.

    Options come from the URL query and from keyword arguments (keywords win); every driver
    accepts `coordination.options.COMMON_OPTIONS` plus its own. Use it as a context manager, or
    call `close()`, to leave cleanly (resigning elections at once instead of at session expiry).
    """
    if not isinstance(member_id, str) or not member_id.strip() or "/" in member_id:
        raise ConfigurationError(f"member_id must be a non-empty string without '/', got {member_id!r}")
    parsed = parse_url(url)
    driver = load_driver(parsed.scheme)
    resolved = resolve_options({**COMMON_OPTIONS, **driver.OPTIONS}, parsed.options, options)
    return driver(parsed, member_id, resolved).start()
