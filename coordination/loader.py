"""Find a driver by URL scheme through the stevedore namespace `coordination.backends`."""

from __future__ import annotations

import logging

from stevedore import ExtensionManager
from stevedore.exception import NoMatches

from .errors import ConfigurationError, UnknownBackendError

LOG = logging.getLogger(__name__)
NAMESPACE = "coordination.backends"


def _manager() -> ExtensionManager:
    return ExtensionManager(
        namespace=NAMESPACE,
        invoke_on_load=False,
        on_load_failure_callback=lambda _mgr, ep, exc: LOG.warning(
            "coordination backend %r could not be loaded: %s", ep.name, exc
        ),
    )


def installed_backends() -> list[str]:
    """Names (URL schemes) of every registered driver that imports cleanly."""
    return sorted(_manager().names())


def load_driver(scheme: str) -> type:
    """The driver class registered for `scheme`, or `UnknownBackendError` listing the others."""
    manager = _manager()
    try:
        extension = manager[scheme]
    except (KeyError, NoMatches):
        raise UnknownBackendError(scheme, manager.names()) from None
    driver = extension.plugin
    from .api import Coordinator

    if not (isinstance(driver, type) and issubclass(driver, Coordinator)):
        raise ConfigurationError(
            f"backend {scheme!r} ({extension.entry_point.value}) is not a Coordinator subclass"
        )
    return driver
