"""Process shutdown hooks, run by `coord-manager` on SIGTERM/SIGINT before the process exits.

Why: a controller that resigns its elections before its OpenFlow connections drop hands every
switch over at once, instead of after the session timeout. Ryu and os-ken have no shutdown hook
of their own that runs on SIGTERM (ryu-manager simply dies), so the launcher provides one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

LOG = logging.getLogger(__name__)
_hooks: list[tuple[int, int, str, Callable[[float], None]]] = []
_lock = threading.Lock()


#: Stages: apps that write through the coordinator flush first; the one that closes it, last.
FLUSH, CLOSE = 0, 10


def register(name: str, hook: Callable[[float], None], *, stage: int = FLUSH) -> None:
    """Run `hook(deadline)` at shutdown; `deadline` is a `time.monotonic()` value to finish by.
    Hooks run by ascending `stage`, and within a stage the last registered first."""
    with _lock:
        _hooks.append((stage, -len(_hooks), name, hook))


def unregister(hook: Callable[[float], None]) -> None:
    with _lock:
        _hooks[:] = [item for item in _hooks if item[3] != hook]


def run_all(timeout: float) -> None:
    """Run every hook (by stage, then last registered first), each bounded by the shared
    deadline; a failing hook is logged and the next one still runs."""
    deadline = time.monotonic() + timeout
    with _lock:
        hooks = [(name, hook) for _, _, name, hook in sorted(_hooks, key=lambda h: h[:2])]
        _hooks.clear()
    for name, hook in hooks:
        try:
            hook(deadline)
        except Exception:
            LOG.exception("shutdown hook %s failed", name)
