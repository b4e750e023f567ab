"""`signal_wait`: the main thread runs a signal handler even when the kernel delivers the signal
to another thread while the main thread waits for its app threads (os-ken's native hub)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# The child parks its main thread in hub.joinall([worker]) and directs SIGTERM at the worker
# thread, as the kernel may. The worker ends by itself after 5 s, so a main thread that cannot
# wake shows up as a late handler, not a hang.
CHILD = textwrap.dedent("""
    import os, signal, sys, threading, time, types
    from ryu_integration import signal_wait

    stop = threading.Event()
    hub = types.SimpleNamespace(joinall=lambda threads: [t.join() for t in threads])
    signal_wait.install(hub)
    signal_wait.install(hub)  # idempotent

    def handler(signum, frame):
        print(f"handled {time.monotonic() - sent[0]:.3f} "
              f"main={threading.current_thread() is threading.main_thread()}", flush=True)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    worker = threading.Thread(target=lambda: stop.wait(5))
    worker.start()
    sent = []

    def aim():
        time.sleep(0.2)  # let the main thread block in joinall (a bounded head start)
        sent.append(time.monotonic())
        signal.pthread_kill(worker.ident, signal.SIGTERM)

    threading.Thread(target=aim, daemon=True).start()
    hub.joinall([worker])
    print("joined", flush=True)
""")


def test_signal_to_another_thread_wakes_the_waiting_main_thread() -> None:
    """Without `install`, CPython runs the handler only once the join ends (measured: 4.8 s)."""
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout.split()
    assert out[0] == "handled" and out[2] == "main=True" and out[3] == "joined", out
    assert float(out[1]) < 4, f"the handler ran only after the join ended: {out}"


def test_errors_in_the_joined_block_reach_the_caller() -> None:
    from ryu_integration import signal_wait

    def boom() -> None:
        raise RuntimeError("join failed")

    with pytest.raises(RuntimeError, match="join failed"):
        signal_wait.run_waking_for_signals(boom)


# Under eventlet the main thread waits in the hub's epoll; a real thread (as eventlet's thread
# pool runs the embedded store's flock) takes the signal. The hub's only timer is 5 s away.
EVENTLET_CHILD = textwrap.dedent("""
    import eventlet
    eventlet.monkey_patch()
    import os, signal, sys, time
    from eventlet import patcher
    from ryu_integration import signal_wait

    real_threading = patcher.original("threading")
    signal_wait.wake_eventlet_hub()
    handled = []

    def handler(signum, frame):
        handled.append(time.monotonic())

    signal.signal(signal.SIGTERM, handler)
    release = real_threading.Event()
    worker = real_threading.Thread(target=lambda: release.wait(10))
    worker.start()
    eventlet.sleep(0.2)
    sent = time.monotonic()
    signal.pthread_kill(worker.ident, signal.SIGTERM)
    eventlet.sleep(5)
    release.set()
    print(f"handled {handled[0] - sent:.3f}" if handled else "not handled", flush=True)
""")


def test_signal_to_a_real_thread_wakes_the_eventlet_hub() -> None:
    """Without `wake_eventlet_hub`, the handler waits for the hub's next timer (5 s here)."""
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", EVENTLET_CHILD],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    out = done.stdout.split()
    assert out[0] == "handled" and float(out[1]) < 4, out
