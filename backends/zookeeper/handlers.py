"""kazoo's handlers with a cheaper `select`, for threads and for eventlet.

kazoo's connection loop asks its handler's `select` before every step: before each request it
sends, before each response it reads, and before each of the response's two reads. kazoo's own
handlers build a fresh `selectors` object for every call (an epoll instance created, two
registrations, closed again), and the eventlet one also yields to the hub twice around each
call and twice around each callback it runs. Under load, when the socket is almost always ready,
that bookkeeping was most of kazoo's cost: traced in a Ryu 4.34 controller mastering 1,000
switches, `select` alone took 29 % of the process's CPU.

Here `select` is one `poll()` system call on the two or three descriptors. Under eventlet it
first asks without waiting, and only when nothing is ready waits in the hub (green), then asks
the kernel again before it believes the hub (eventlet can wake a waiter for a descriptor an
earlier wait already consumed). A busy loop yields to the other green threads once it has run
for `YIELD_EVERY` seconds instead of on every step, and the callback workers likewise. `poll`
has no descriptor limit (`select()` has: 1,024, and a controller holds a socket per switch).
"""

from __future__ import annotations

import logging
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

from kazoo.handlers.threading import SequentialThreadingHandler

LOG = logging.getLogger(__name__)

#: The longest a busy kazoo loop or callback worker runs before letting other green threads in.
YIELD_EVERY = 0.001

_READABLE = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | select.POLLNVAL
_WRITABLE = select.POLLOUT | select.POLLHUP | select.POLLERR | select.POLLNVAL


def _fileno(obj: Any) -> int:
    fd = obj if isinstance(obj, int) else obj.fileno()
    if fd < 0:
        raise ValueError(f"invalid file descriptor {fd}")
    return fd


def poll_select(poll: Callable[[], Any], rlist: Sequence[Any], wlist: Sequence[Any],
                timeout: float | None) -> tuple[list[Any], list[Any], list[Any]]:
    """`select.select(rlist, wlist, [], timeout)` answered by one `poll()` call.

    An error or hang-up on a descriptor reports it ready, as `select` does, so the caller's read
    or write raises the error. `timeout` None waits without limit, 0 does not wait."""
    reads = [(obj, _fileno(obj)) for obj in rlist]
    writes = [(obj, _fileno(obj)) for obj in wlist]
    masks: dict[int, int] = {}
    for _, fd in reads:
        masks[fd] = masks.get(fd, 0) | select.POLLIN | select.POLLPRI
    for _, fd in writes:
        masks[fd] = masks.get(fd, 0) | select.POLLOUT
    poller = poll()
    for fd, mask in masks.items():
        poller.register(fd, mask)
    events = dict(poller.poll(None if timeout is None else max(0.0, timeout) * 1000.0))
    if not events:
        return [], [], []
    readable = [obj for obj, fd in reads if events.get(fd, 0) & _READABLE]
    writable = [obj for obj, fd in writes if events.get(fd, 0) & _WRITABLE]
    return readable, writable, []


class PollingThreadingHandler(SequentialThreadingHandler):
    """kazoo's threading handler, its `select` one `poll()` call."""

    name = "coordination_polling_threading_handler"

    def select(self, rlist: Sequence[Any], wlist: Sequence[Any], xlist: Sequence[Any],
               timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
        return poll_select(select.poll, rlist, wlist, timeout)


def polling_eventlet_handler() -> Any:
    """kazoo's eventlet handler, its `select` asking the kernel without waiting first, and
    yielding to the hub once it has run for `YIELD_EVERY`, not around every step. Imports
    eventlet: call it only in a monkey-patched process."""
    import eventlet
    from eventlet import patcher
    from eventlet.green import select as green_select
    from kazoo.handlers import eventlet as kazoo_eventlet

    # eventlet's patched `select` module has no poll(): the original's answers without waiting
    real_poll = patcher.original("select").poll
    stop = kazoo_eventlet._STOP  # what the handler's stop() queues for its workers

    class PollingEventletHandler(kazoo_eventlet.SequentialEventletHandler):
        name = "coordination_polling_eventlet_handler"

        def __init__(self) -> None:
            super().__init__()
            self._ran_since = time.monotonic()

        def _yield_if_due(self) -> None:
            now = time.monotonic()
            if now - self._ran_since >= YIELD_EVERY:
                eventlet.sleep(0)
                self._ran_since = time.monotonic()

        def select(self, rlist: Sequence[Any], wlist: Sequence[Any], xlist: Sequence[Any],
                   timeout: float | None = None) -> tuple[list[Any], list[Any], list[Any]]:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                ready = poll_select(real_poll, rlist, wlist, 0)
                if ready[0] or ready[1]:
                    self._yield_if_due()
                    return ready
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return ready
                # What the hub answers is only a hint: it runs every callback of one poll
                # round, so a descriptor an earlier wait already consumed can wake this one.
                # The loop asks the kernel again before believing it.
                green_select.select(list(rlist), list(wlist), [], remaining)
                self._ran_since = time.monotonic()

        def _run_queue(self, queue: Any, kind: str) -> None:
            while True:
                callback = queue.get()
                if callback is stop:
                    break
                try:
                    callback()
                except Exception:
                    LOG.warning("kazoo %s callback failed", kind, exc_info=True)
                finally:
                    del callback  # release before possible idle
                self._yield_if_due()

        def _process_completion_queue(self) -> None:
            self._run_queue(self.completion_queue, "completion")

        def _process_callback_queue(self) -> None:
            self._run_queue(self.callback_queue, "watch")

    return PollingEventletHandler()
