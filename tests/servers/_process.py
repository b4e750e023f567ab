"""Shared plumbing for the real-server test fixtures.

What: free loopback ports, a managed subprocess (own temp dir, log file, stop by PID with a
bounded SIGTERM -> SIGKILL escalation), and deadline-bounded readiness polling.
Why: every fixture must own the processes it starts and leave nothing behind, even when a test
fails or the interpreter exits early (atexit + parent-death signal).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Self

LOOPBACK = "127.0.0.1"

#: util-linux ``setpriv`` sets PR_SET_PDEATHSIG and then execs the server, so the server gets
#: SIGKILL if pytest dies without running atexit (e.g. it is SIGKILLed itself).
_SETPRIV = shutil.which("setpriv")


class ServerError(RuntimeError):
    """A test server could not be started, reached or stopped."""


class ServerStartTimeout(ServerError):
    """A server did not become ready before its deadline (message carries its log tail)."""


#: Where listening ports are picked when the kernel's ephemeral range leaves room below it.
_LISTEN_FLOOR = 10_000
_RNG = random.SystemRandom()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux), or a default."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct TCP ports that were free on ``host`` a moment ago.

    They are picked at random below the kernel's ephemeral range when there is room: a port
    from that range can be taken by any outgoing connection's local end (a client of ZooKeeper,
    a switch dialling a controller) between this check and the server's bind, which made a
    controller fail to listen now and then. All the sockets are bound at once, so the ports
    are distinct. A race with another process choosing the same port at the same moment
    remains, and is unlikely.
    """
    low, _ = _ephemeral_range()
    if low - _LISTEN_FLOOR < 1000:  # no room below: let the kernel choose
        return _kernel_chosen_ports(count, host)
    socks: list[socket.socket] = []
    try:
        for attempt in itertools.count():
            if len(socks) == count:
                return [s.getsockname()[1] for s in socks]
            if attempt == count * 50:
                raise ServerError(f"no {count} free TCP ports on {host} below {low}")
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, _RNG.randrange(_LISTEN_FLOOR, low)))
            except OSError:  # in use
                s.close()
                continue
            socks.append(s)
        raise AssertionError("unreachable")
    finally:
        for s in socks:
            s.close()


def _kernel_chosen_ports(count: int, host: str) -> list[int]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = LOOPBACK) -> int:
    """Return one TCP port that was free on ``host`` a moment ago."""
    return free_ports(1, host)[0]


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """Cheap probe: does something accept TCP connections on ``host:port``?"""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    *,
    interval: float = 0.05,
    what: str = "condition",
    on_timeout: Callable[[], str] | None = None,
) -> float:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; return the time taken.

    Meant for startup readiness only (the one place where polling is acceptable). Exceptions
    from the predicate count as "not yet". On timeout raises :class:`ServerStartTimeout` whose
    message includes ``on_timeout()`` (typically a log tail).
    """
    start = time.monotonic()
    deadline = start + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            if predicate():
                return time.monotonic() - start
        except ServerError:
            raise
        except Exception as exc:  # noqa: BLE001 - any probe failure means "not ready yet"
            last_exc = exc
        now = time.monotonic()
        if now >= deadline:
            detail = f" (last probe error: {last_exc!r})" if last_exc else ""
            extra = on_timeout() if on_timeout else ""
            raise ServerStartTimeout(
                f"timed out after {timeout:.1f}s waiting for {what}{detail}\n{extra}"
            )
        time.sleep(min(interval, max(0.0, deadline - now)))


def pid_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_pid_gone(pid: int, timeout: float) -> bool:
    """Wait (bounded) until a process that is not our child has exited. True if it is gone."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


class ManagedProcess:
    """One server subprocess owned by the test suite.

    Started with ``start_new_session`` (so a Ctrl-C to pytest does not race our own shutdown),
    stdout+stderr appended to ``log_path``, registered for an atexit SIGKILL, and, when started
    from the main thread, under ``setpriv --pdeathsig KILL`` so it dies if pytest is killed
    outright. (Parent-death fires when the *thread* that forked exits, so other threads skip it.)
    """

    _live: ClassVar[set[ManagedProcess]] = set()
    _live_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str],
        log_path: str | os.PathLike[str],
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.cwd = Path(cwd)
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Launch the process (no-op if it is already running)."""
        if self.running:
            return
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = list(self.argv)
        if _SETPRIV and threading.current_thread() is threading.main_thread():
            # Parent-death fires when the *thread* that forked exits: main thread only.
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with ManagedProcess._live_lock:
            ManagedProcess._live.add(self)

    def request_stop(self) -> None:
        """Send SIGTERM without waiting (so several servers can shut down in parallel)."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL and wait. Returns the exit code."""
        return self._terminate(signal.SIGTERM, timeout)

    def kill(self) -> int | None:
        """SIGKILL now and wait for the exit (simulates a crash)."""
        return self._terminate(signal.SIGKILL, 0.0)

    def _terminate(self, sig: signal.Signals, grace: float) -> int | None:
        proc = self._proc
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
                try:
                    proc.wait(timeout=grace if sig != signal.SIGKILL else 10.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10.0)
            return proc.returncode
        finally:
            with ManagedProcess._live_lock:
                ManagedProcess._live.discard(self)

    # -- inspection --------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """PID of the current (or last) process, or None if never started."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """True while the process has not exited."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status once exited (negative = killed by that signal)."""
        return self._proc.poll() if self._proc else None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log, for error messages."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 1024))
                data = fh.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"<no log: {exc}>"
        tail = "\n".join(data.splitlines()[-lines:])
        return f"---- last {lines} lines of {self.log_path} ----\n{tail}"

    def wait_ready(self, probe: Callable[[], bool], timeout: float, what: str = "ready") -> float:
        """Poll ``probe`` until true; fail fast (with the log tail) if the process exits first."""

        def check() -> bool:
            if not self.running:
                raise ServerError(
                    f"{self.name} exited with status {self.returncode} before being {what}\n"
                    + self.log_tail()
                )
            return probe()

        return wait_until(check, timeout, what=f"{self.name} {what}", on_timeout=self.log_tail)

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid} running={self.running}>"

    @classmethod
    def kill_all(cls) -> None:
        """SIGKILL every process still registered (atexit safety net)."""
        with cls._live_lock:
            live = list(cls._live)
        for proc in live:
            with contextlib.suppress(Exception):  # best effort at interpreter exit
                proc.kill()


_TEMP_DIRS: set[Path] = set()
_TEMP_LOCK = threading.Lock()


def make_temp_dir(prefix: str) -> Path:
    """mkdtemp whose removal at interpreter exit is guaranteed (after the servers are killed)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    with _TEMP_LOCK:
        _TEMP_DIRS.add(path)
    return path


def remove_temp_dir(path: Path) -> None:
    """Delete a directory made by :func:`make_temp_dir` now."""
    shutil.rmtree(path, ignore_errors=True)
    with _TEMP_LOCK:
        _TEMP_DIRS.discard(path)


def _cleanup_at_exit() -> None:
    ManagedProcess.kill_all()
    with _TEMP_LOCK:
        dirs = list(_TEMP_DIRS)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)


atexit.register(_cleanup_at_exit)


def log_tail_of(path: str | os.PathLike[str], lines: int = 40) -> str:
    """Tail of an arbitrary log file (for daemons that write their own logs)."""
    try:
        data = Path(path).read_bytes()[-64 * 1024 :].decode("utf-8", "replace")
    except OSError as exc:
        return f"<no log {path}: {exc}>"
    return f"---- last {lines} lines of {path} ----\n" + "\n".join(data.splitlines()[-lines:])


def clean_env(
    extra: Mapping[str, str] | None = None, drop_prefixes: Sequence[str] = ()
) -> dict[str, str]:
    """A copy of os.environ without variables starting with ``drop_prefixes``, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not any(k.startswith(p) for p in drop_prefixes)}
    if extra:
        env.update(extra)
    return env


class ServerGroup:
    """What a 3-member ZooKeeper ensemble and etcd cluster share: member-wise stop, kill and
    restart, the leader wait, and ownership of the temp dir. Subclasses set `members`,
    `base_dir` and `_owns_dir`, and implement `start`, `stop`, `wait_serving`,
    `start_member` and `leader_index`."""

    members: list
    base_dir: Path
    _owns_dir: bool
    #: Default seconds `restart` waits for the group to serve again.
    restart_timeout = 30.0

    def start(self, timeout: float = 30.0) -> float:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def wait_serving(self, timeout: float = 30.0) -> float:
        raise NotImplementedError

    def leader_index(self) -> int | None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL every member."""
        for member in self.members:
            member.kill()

    def restart(self, timeout: float | None = None) -> float:
        """Stop all members, start them again on the same ports/data; returns seconds to serving."""
        self.stop()
        t0 = time.monotonic()
        for member in self.members:
            member.launch()
        self.wait_serving(timeout or self.restart_timeout)
        return time.monotonic() - t0

    def close(self) -> None:
        """Stop everything and remove the temp dir if this object created it."""
        self.stop()
        if self._owns_dir:
            remove_temp_dir(self.base_dir)

    def stop_member(self, i: int, timeout: float = 10.0) -> int | None:
        """Gracefully stop member ``i`` and wait for its PID; returns its exit status."""
        return self.members[i].stop(timeout)

    def kill_member(self, i: int) -> int | None:
        """SIGKILL member ``i`` and wait for its PID to be gone."""
        return self.members[i].kill()

    def wait_leader(self, timeout: float = 30.0) -> int:
        """Wait (bounded) until the running members serve with one leader; return its index."""
        self.wait_serving(timeout)
        idx = self.leader_index()
        if idx is None:
            raise ServerStartTimeout(f"{type(self).__name__}: the leader vanished right after "
                                     "the group settled")
        return idx

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
