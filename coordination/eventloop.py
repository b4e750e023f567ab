"""The process's event loop: whether eventlet has monkey-patched threading (drivers adapt to it)."""

from __future__ import annotations

import sys


def eventlet_patched() -> bool:
    """True in a process whose threading eventlet has monkey-patched (e.g. ryu-manager): there
    kazoo needs its eventlet handler, gRPC streams hang, and blocking system calls must go
    through eventlet's thread pool. Never imports eventlet itself."""
    eventlet = sys.modules.get("eventlet")
    patcher = getattr(eventlet, "patcher", None)
    return bool(patcher) and bool(patcher.is_monkey_patched("thread"))
