"""Keep the main thread able to run signal handlers while the framework's hub waits.

Python runs signal handlers on the main thread only, when it next executes bytecode. os-ken's
native hub parks the main thread in `Thread.join()` for the life of the process. The kernel
delivers a process-directed signal to any thread that does not block it (normally the main
thread, but not always: e.g. when the main thread already has a signal pending). A SIGTERM
that lands on another thread trips the handler but never wakes the join, so the controller
ignored it (seen in CI: "ignored SIGTERM for 10.0 s"), and the shutdown watchdog, which that
very handler arms, never started.

Here the main thread waits in `poll()` on the signal wakeup fd instead: the C-level handler
writes one byte to it on whichever thread it runs, the main thread wakes, and Python runs the
handler. Nothing is polled; the joins run on a helper thread that writes to a second pipe when
they end.

Under eventlet (Ryu) the main thread sits in the hub's epoll, and real threads exist too (the
embedded store's blocking `flock` runs in eventlet's thread pool): a signal landing on one of
those waited for the hub's next timer. `wake_eventlet_hub` gives the hub the wakeup fd to read.
"""

from __future__ import annotations

import os
import select
import signal
import threading
from collections.abc import Callable, Iterable
from typing import Any

_MARK = "_coord_signal_aware"


def install(hub: Any) -> None:
    """Make `hub.joinall` wake for signals when called on the main thread (idempotent)."""
    original = hub.joinall
    if getattr(original, _MARK, False):
        return

    def joinall(threads: Iterable[Any]) -> None:
        threads = list(threads)
        run_waking_for_signals(lambda: original(threads))

    setattr(joinall, _MARK, True)
    hub.joinall = joinall


def wake_eventlet_hub() -> None:
    """Under eventlet: let a signal on any thread wake the hub at once (main thread, once)."""
    import eventlet
    from eventlet.hubs import trampoline

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)

    def drain_forever() -> None:  # a green thread: back in the hub, Python runs the handler
        while True:
            trampoline(wake_r, read=True)
            _drain(wake_r)

    eventlet.spawn(drain_forever)


def run_waking_for_signals(block: Callable[[], None]) -> None:
    """Run `block` (a blocking call) on a helper thread while the main thread waits for it in a
    way any signal interrupts; re-raises what `block` raised. On another thread (which runs no
    handlers) `block` simply runs."""
    if threading.current_thread() is not threading.main_thread():
        block()
        return
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    done_r, done_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            block()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
            failure.append(exc)
        finally:
            os.write(done_w, b"x")

    previous = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    helper = threading.Thread(target=run, name="joinall", daemon=True)
    finished = False
    try:
        helper.start()
        poller = select.poll()  # not select(): the fds may be numbered past FD_SETSIZE
        poller.register(wake_r, select.POLLIN)
        poller.register(done_r, select.POLLIN)
        while not finished:
            # A byte on wake_r means a handler is due: returning to bytecode runs it.
            for fd, _ in poller.poll():
                if fd == wake_r:
                    _drain(wake_r)
                else:
                    finished = True
    finally:
        signal.set_wakeup_fd(previous)
        os.close(wake_r)
        os.close(wake_w)
        if finished:  # else a handler raised: the helper still writes to its pipe
            os.close(done_r)
            os.close(done_w)
    if failure:
        raise failure[0]


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
