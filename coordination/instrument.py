"""Timing of store operations, for whoever wants it (e.g. a controller's Prometheus metrics).

The core stays free of any metrics library: it reports each operation it sends to a driver to
the observers registered here, with the backend's scheme, the operation's name, how long it took
and, if it failed, the error's class name. No observer, no cost beyond a clock read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LOG = logging.getLogger(__name__)

#: (backend scheme, operation, seconds or None, error class name or None). Seconds are None
#: for one op of a batch that failed on its own (`refused`): the batch was timed as a whole.
OperationObserver = Callable[[str, str, "float | None", "str | None"], None]

_observers: tuple[OperationObserver, ...] = ()
_lock = threading.Lock()


def add_observer(observer: OperationObserver) -> None:
    """Report every store operation of this process to `observer` (called on the operation's
    thread: it must be quick and must not raise)."""
    global _observers
    with _lock:
        _observers = (*_observers, observer)


def remove_observer(observer: OperationObserver) -> None:
    global _observers
    with _lock:
        _observers = tuple(o for o in _observers if o is not observer)


def refused(backend: str, operation: str, error: str) -> None:
    """Report one op of a batch that failed on its own (a fenced put in `TopologyStore.apply`
    is a `topology_put` refused with `StaleTermError`, as a single put would be)."""
    _report(backend, operation, None, error)


def _report(backend: str, operation: str, seconds: float | None, error: str | None) -> None:
    for observer in _observers:
        try:
            observer(backend, operation, seconds, error)
        except Exception:
            LOG.exception("store operation observer %r failed", observer)


@contextmanager
def timed(backend: str, operation: str) -> Iterator[None]:
    """Time the block and report it as `operation` on `backend`; exceptions pass through."""
    if not _observers:
        yield
        return
    started = time.monotonic()
    error: str | None = None
    try:
        yield
    except BaseException as exc:
        error = type(exc).__name__
        raise
    finally:
        _report(backend, operation, time.monotonic() - started, error)
