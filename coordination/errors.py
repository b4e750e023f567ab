"""The project's exception hierarchy.

Every failure that crosses the public API is a `CoordinationError`, so callers can catch one type
and never see a kazoo, grpc or stevedore exception leak through.
"""

from __future__ import annotations


class CoordinationError(Exception):
    """Base of every error raised by the coordination API."""


class ConfigurationError(CoordinationError):
    """An option or setting is wrong (unknown name, bad value)."""


class BadURLError(ConfigurationError):
    """A backend URL could not be parsed or is missing a required part."""


class UnknownBackendError(ConfigurationError):
    """No installed driver is registered for a URL scheme."""

    def __init__(self, scheme: str, installed: list[str]) -> None:
        self.scheme = scheme
        self.installed = sorted(installed)
        names = ", ".join(self.installed) or "none"
        super().__init__(
            f"no coordination backend named {scheme!r} is installed (installed: {names}); "
            "a driver registers itself under the 'coordination.backends' entry point group"
        )


class BackendConnectionError(CoordinationError):
    """The backend could not be reached (names the endpoints tried)."""


class OperationTimeoutError(CoordinationError):
    """An operation did not complete within its bound."""


class SessionLostError(CoordinationError):
    """The session expired: ephemeral state (memberships, leaderships) is gone."""


class NotLeaderError(CoordinationError):
    """An operation required leadership this member does not hold."""


class StaleTermError(CoordinationError):
    """A write was fenced: the store already holds a record from a newer term."""


class InvalidRecordError(CoordinationError):
    """A topology record failed validation (on the way in or out of the store)."""


class ConflictError(CoordinationError):
    """A conditional write lost a race too many times in a row."""


class ClosedError(CoordinationError):
    """The coordinator was already closed."""


class NotSupportedError(CoordinationError):
    """The driver does not offer this capability (its `Coordinator.UNSUPPORTED` says why)."""
