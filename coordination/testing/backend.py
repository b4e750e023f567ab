"""How the conformance suite reaches a backend, and how it injects faults into one."""

from __future__ import annotations

import functools
from typing import Any

from coordination.api import Coordinator
from coordination.connect import connect
from coordination.loader import load_driver
from coordination.urls import parse_url


@functools.cache
def _driver_for(scheme: str) -> type[Coordinator]:
    """The driver class of `scheme` (looked up once: every test asks)."""
    return load_driver(scheme)


class Backend:
    """A backend under test: a base URL (each test gets its own namespace below its path).

    Subclasses that can cut a coordinator off from its server set `supports_faults` and
    implement `suspend`, `resume` and `expire`.
    """

    supports_faults = False

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options = options

    def url_for(self, namespace: str) -> str:
        """The base URL with `/namespace` appended to its path (query kept)."""
        base, _, query = self.url.partition("?")
        base = base if base.endswith("://") else base.rstrip("/")
        joined = f"{base}/{namespace}"
        return f"{joined}?{query}" if query else joined

    def connect(self, namespace: str, member_id: str, **options: Any) -> Coordinator:
        return connect(self.url_for(namespace), member_id, **{**self.options, **options})

    def unsupported(self) -> dict[str, str]:
        """The capabilities the driver declares unsupported, {name: why}."""
        return dict(_driver_for(parse_url(self.url).scheme).UNSUPPORTED)

    def suspend(self, coordinator: Coordinator) -> None:
        """Cut the connection; the session must survive (SUSPENDED)."""
        raise NotImplementedError

    def resume(self, coordinator: Coordinator) -> None:
        """Restore the connection to the same session (CONNECTED)."""
        raise NotImplementedError

    def expire(self, coordinator: Coordinator) -> None:
        """Make the session expire (LOST), then let the coordinator reconnect."""
        raise NotImplementedError

    def close(self) -> None:
        """Release whatever the backend object holds (proxies, temp dirs)."""


class MemoryBackend(Backend):
    """The in-process driver, with its own fault hooks."""

    supports_faults = True

    def suspend(self, coordinator: Coordinator) -> None:
        coordinator.suspend()  # type: ignore[attr-defined]

    def resume(self, coordinator: Coordinator) -> None:
        coordinator.resume()  # type: ignore[attr-defined]

    def expire(self, coordinator: Coordinator) -> None:
        coordinator.expire()  # type: ignore[attr-defined]
