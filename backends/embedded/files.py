"""Files of the embedded backend: the store directory, session lock files, and flock helpers.

Layout of a store directory (created 0700, owned by the user running the controllers):

    store.db, store.db-wal, store.db-shm   the SQLite database (WAL mode)
    write.lock                             flock serialising writers (a pushed wait, see below)
    sessions/<token>.lock                  flock held by a live session for its whole life
    sessions/<token>.sock                  the session's unix socket (notifications, liveness)

Why flock: the kernel releases it when the holder dies, however it dies (kill -9 included), and
wakes a thread blocked on it at once. That makes "is session X dead?" a non-blocking question
(`SessionFiles.probe`) and "tell me when it dies" a pushed wait (`wait_for_lock`), never a poll.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from coordination.errors import BadURLError, ConfigurationError, OperationTimeoutError
from coordination.eventloop import eventlet_patched
from coordination.urls import BackendURL

LOG = logging.getLogger(__name__)

DB_NAME = "store.db"
WRITE_LOCK_NAME = "write.lock"
SESSIONS_DIR = "sessions"
TOKEN = re.compile(r"^[0-9a-f]{16}$")
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux
#: Seconds a `.lock.new` file is left to its creator before a sweep may remove it.
_TEMP_GRACE = 30.0


def default_dir() -> Path:
    """`$XDG_RUNTIME_DIR/sdn-coordination` when that runtime dir exists, else
    `/tmp/sdn-coordination-<uid>` (per user, so users never share a store by accident)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "sdn-coordination"
    return Path(f"/tmp/sdn-coordination-{os.geteuid()}")


def store_dir(url: BackendURL) -> Path:
    """The directory an `embedded://` URL names; refuses host parts (one host only)."""
    if url.hosts or url.username:
        given = ",".join(h for h, _ in url.hosts) or f"{url.username}@"
        raise BadURLError(
            f"backend URL {url} names a host ({given!r}), but the embedded backend only "
            "coordinates processes on ONE host through a local directory: write "
            "'embedded:///absolute/path/to/dir' (three slashes), or 'embedded://' for the "
            "default directory; to coordinate controllers on several hosts use "
            "'zookeeper://host:2181/prefix' or 'etcd3://host:2379'"
        )
    return Path(url.path) if url.path else default_dir()


def prepare_dir(path: Path) -> Path:
    """Create the store directory (0700; missing parents get the default mode) and its
    sessions/ subdirectory; refuse one that belongs to another user."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        (path / SESSIONS_DIR).mkdir(mode=0o700, exist_ok=True)
    except FileExistsError:
        raise ConfigurationError(
            f"embedded store {path}: {path} or {path / SESSIONS_DIR} exists and is not a "
            "directory; point the URL at a directory of its own") from None
    except OSError as exc:
        raise ConfigurationError(f"embedded store {path}: cannot create it: {exc}") from None
    for directory in (path, path / SESSIONS_DIR):
        info = directory.stat()
        foreign = {info.st_uid, directory.lstat().st_uid} - {os.geteuid()}  # link and target
        if foreign:
            owner = foreign.pop()
            raise ConfigurationError(
                f"embedded store {directory} belongs to uid {owner}, not to this user "
                f"(uid {os.geteuid()}); refusing to share it (another user could forge sessions)")
        if stat.S_IMODE(info.st_mode) & 0o077:
            LOG.warning("embedded store %s is accessible to other users (mode %o); 0700 is "
                        "recommended", directory, stat.S_IMODE(info.st_mode))
    return path


def open_file(path: Path, *, create: bool = True) -> int:
    """Open `path` read-write (0600 when created); a non-regular file is a clear error."""
    flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT if create else 0)
    try:
        fd = os.open(path, flags, 0o600)
    except IsADirectoryError:
        raise ConfigurationError(f"embedded store: {path} is a directory, expected a "
                                 "file; move it away") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ConfigurationError(f"embedded store: {path} is not a regular file; move it away")
    return fd


def try_lock(fd: int) -> bool:
    """Take an exclusive flock without waiting; False if another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def wait_for_lock(fd: int, on_acquired: Callable[[int], None], name: str) -> Callable[[], bool]:
    """Block a daemon thread on flock(`fd`) and call `on_acquired(fd)` once the kernel grants it.

    Takes ownership of `fd`, which must be an open file of its own (so an abandoned wait never
    takes the lock on behalf of anyone else); `on_acquired` takes it over and must close it.
    Returns `abandon()`: once it returns True, `on_acquired` will not be called and a late grant
    is released at once. Under eventlet the flock runs in its real-thread pool (tpool), so it
    blocks one green thread, never the hub.
    """
    guard = threading.Lock()
    state = {"abandoned": False, "granted": False}

    def run() -> None:
        try:
            _blocking_flock(fd)
        except OSError as exc:
            LOG.warning("%s: waiting for a lock failed: %s", name, exc)
            os.close(fd)
            return
        with guard:
            abandoned = state["abandoned"]
            state["granted"] = not abandoned
        if abandoned:
            os.close(fd)
        else:
            on_acquired(fd)

    def abandon() -> bool:
        with guard:
            if state["granted"]:
                return False
            state["abandoned"] = True
            return True

    threading.Thread(target=run, name=name, daemon=True).start()
    return abandon


def _blocking_flock(fd: int) -> None:
    if eventlet_patched():
        from eventlet import tpool

        tpool.execute(fcntl.flock, fd, fcntl.LOCK_EX)
    else:
        fcntl.flock(fd, fcntl.LOCK_EX)


class WriteLock:
    """The store-wide writer lock (`write.lock`): one writer at a time across all processes.

    SQLite alone would make a contended `BEGIN IMMEDIATE` sleep-and-retry in its busy handler
    (1, 2, 5, 10 ... ms); a blocked flock is woken by the kernel the moment the holder releases,
    so a contended write costs the holder's transaction time and nothing more.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd = open_file(path)
        self._held: int | None = None

    def acquire(self, timeout: float) -> None:
        """Take the lock, waiting at most `timeout` seconds (caller serialises in-process)."""
        if try_lock(self._fd):
            self._held = self._fd
            return
        granted = threading.Event()
        holder: list[int] = []

        def on_acquired(fd: int) -> None:
            holder.append(fd)
            granted.set()

        fd = os.open(self._path, os.O_RDWR | os.O_CLOEXEC)
        abandon = wait_for_lock(fd, on_acquired, "embedded-write-lock")
        if not granted.wait(timeout) and abandon():
            raise OperationTimeoutError(
                f"embedded store: another process held {self._path} for more than {timeout} s "
                "(a stopped or hung controller?)")
        granted.wait()
        self._held = holder[0]

    def release(self) -> None:
        fd, self._held = self._held, None
        if fd is None:
            return
        if fd == self._fd:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            os.close(fd)

    def close(self) -> None:
        self.release()
        os.close(self._fd)


class SessionFiles:
    """The sessions/ directory, opened once: lock files, socket addresses, liveness probes.

    Everything goes through a directory fd, so a socket path that is too long for sun_path
    (108 bytes) is reached as /proc/self/fd/<dirfd>/<name> instead (Linux).
    """

    def __init__(self, store: Path) -> None:
        self.path = store / SESSIONS_DIR
        self.dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        os.close(self.dir_fd)

    def socket_address(self, token: str) -> str:
        full = str(self.path / f"{token}.sock")
        if len(os.fsencode(full)) <= _SUN_PATH_MAX:
            return full
        short = f"/proc/self/fd/{self.dir_fd}/{token}.sock"
        if not os.path.isdir(f"/proc/self/fd/{self.dir_fd}"):
            raise ConfigurationError(
                f"embedded store path {self.path} is too long for a unix socket "
                f"({len(full)} > {_SUN_PATH_MAX} bytes); use a shorter directory")
        return short

    def hold(self, token: str) -> int:
        """Create `<token>.lock` already locked: it is locked under a temporary name and then
        renamed, so no other process ever sees the final name unlocked."""
        temp = f".{token}.lock.new"
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600,
                     dir_fd=self.dir_fd)
        if not try_lock(fd):  # a fresh random token: nobody else can hold it
            os.close(fd)
            raise ConfigurationError(f"session lock {temp} is unexpectedly held")
        os.rename(temp, f"{token}.lock", src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        return fd

    def probe(self, token: str) -> tuple[str, int | None]:
        """Is session `token` alive? ("dead", fd now holding its lock) | ("alive", fd of its
        lock file, to wait on) | ("gone", None): no lock file (closed, or reaped already)."""
        try:
            fd = os.open(f"{token}.lock", os.O_RDWR | os.O_CLOEXEC, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return "gone", None
        return ("dead" if try_lock(fd) else "alive"), fd

    def remove(self, token: str) -> None:
        """Delete a dead or closed session's files (missing ones are fine)."""
        for name in (f"{token}.sock", f"{token}.lock"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self.dir_fd)

    def sweep(self, known: set[str]) -> None:
        """Remove files of sessions that died before registering (not in `known`, lock free)."""
        for name in os.listdir(self.dir_fd):
            if name.startswith(".") and name.endswith(".lock.new"):
                self._sweep_temp(name)
                continue
            token = name.partition(".")[0]
            if not TOKEN.match(token) or token in known:
                continue
            verdict, fd = self.probe(token)
            try:
                if verdict == "alive":
                    continue
                self.remove(token)
            finally:
                if fd is not None:
                    os.close(fd)
            LOG.info("removed stale files of unregistered session %s", token)

    def _sweep_temp(self, name: str) -> None:
        """A lock file its creator never renamed into place (it died in between). A young one
        is left alone: its creator may sit between creating and locking it (`hold`), and
        sweeping it then would make that session's start fail."""
        try:
            fd = os.open(name, os.O_RDWR | os.O_CLOEXEC, dir_fd=self.dir_fd)
        except FileNotFoundError:
            return
        try:
            if time.time() - os.fstat(fd).st_mtime < _TEMP_GRACE:
                return
            if try_lock(fd):
                os.unlink(name, dir_fd=self.dir_fd)
        finally:
            os.close(fd)
