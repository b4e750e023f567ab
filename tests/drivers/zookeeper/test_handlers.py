"""kazoo handlers with a one-call `select` (backends/zookeeper/handlers.py); no server needed."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import textwrap

import pytest

from backends.zookeeper.handlers import PollingThreadingHandler, poll_select


@pytest.fixture
def pair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_nothing_ready_returns_empty_lists(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    assert poll_select(select.poll, [a], [], 0) == ([], [], [])


def test_readable_and_writable_are_reported_per_list(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    b.send(b"x")
    readable, writable, errors = poll_select(select.poll, [a], [a, b], None)
    assert readable == [a]
    assert writable == [a, b]
    assert errors == []


def test_a_closed_peer_reports_readable_so_the_read_sees_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    a, b = pair
    b.close()
    assert poll_select(select.poll, [a], [], 0)[0] == [a]
    assert a.recv(1) == b""


def test_a_closed_socket_is_a_value_error(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    a.close()
    with pytest.raises(ValueError):
        poll_select(select.poll, [a], [], 0)


def test_descriptors_beyond_select_limit_work() -> None:
    """A controller holds a socket per switch: kazoo's descriptor is often above 1,024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1100:
        pytest.skip(f"open-file limit {hard} < 1100")
    if soft < 1100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    filler = [socket.socket() for _ in range(1030)]
    try:
        a, b = socket.socketpair()
        assert a.fileno() > 1024
        b.send(b"x")
        assert PollingThreadingHandler().select([a], [], [], 1.0)[0] == [a]
        a.close()
        b.close()
    finally:
        for s in filler:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_eventlet_select_does_not_believe_a_stale_wake_up() -> None:
    """eventlet's hub runs every callback of one poll round: when two descriptors became ready
    together and the first woke the waiter, the second's callback wakes whatever that green
    thread waits on next. kazoo's loop then took its wake-up pipe for readable, read a byte a
    later request needed, and that request was never sent. The handler asks the kernel again."""
    script = textwrap.dedent("""
        import eventlet
        eventlet.monkey_patch()
        import socket
        from backends.zookeeper.handlers import polling_eventlet_handler

        handler = polling_eventlet_handler()
        a_in, a_out = socket.socketpair()
        b_in, b_out = socket.socketpair()

        def write_both():
            a_out.send(b"a")
            b_out.send(b"b")

        eventlet.spawn_after(0.01, write_both)
        first = handler.select([a_in, b_in], [], [], 5.0)[0]
        assert first, "nothing became readable"
        for sock in first:
            sock.recv(1)
        for sock in (a_in, b_in):
            if sock not in first:
                sock.recv(1)  # consumed here: no longer readable, whatever the hub says
        late = handler.select([a_in, b_in], [], [], 0.2)[0]
        assert late == [], f"stale readiness: {late}"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=False, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["ok"]
