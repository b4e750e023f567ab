"""The embedded driver in one process: its directory, its files, failure handling, recovery.

(Elections, terms and the topology store are covered by the conformance suite, and behaviour
across real processes by tests/drivers/embedded/test_processes.py.)
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import coordination
from backends.embedded import db as _embedded_db
from backends.embedded.files import default_dir, wait_for_lock
from coordination import (
    BackendConnectionError,
    BadURLError,
    ConfigurationError,
    Coordinator,
    OperationTimeoutError,
    SessionState,
    Snapshot,
    Switch,
)
from coordination.testing import Recorder

WAIT = 10.0
Connect = Callable[..., Coordinator]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def connect(store: Path) -> Iterator[Connect]:
    """`connect(member_id, directory=store, **options)`; every coordinator closed at teardown."""
    opened: list[Coordinator] = []

    def make(member_id: str, directory: Path | None = None, **options: Any) -> Coordinator:
        coordinator = coordination.connect(f"embedded://{directory or store}", member_id,
                                           **options)
        opened.append(coordinator)
        return coordinator

    yield make
    for coordinator in reversed(opened):
        coordinator.close()


# ---- URL and directory ------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["embedded://host1/srv/coord", "embedded://h1:1,h2:2/x",
                                 "embedded://relative/dir"])
def test_a_url_with_a_host_is_refused_naming_the_one_host_limit(url: str) -> None:
    with pytest.raises(BadURLError, match="ONE host.*zookeeper://"):
        coordination.connect(url, "a")


def test_default_directory_is_per_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert default_dir() == tmp_path / "sdn-coordination"
    with coordination.connect("embedded://", "a") as coord:
        assert coord.members().keys() == {"a"}
    assert stat.S_IMODE((tmp_path / "sdn-coordination").stat().st_mode) == 0o700
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_dir() == Path(f"/tmp/sdn-coordination-{os.geteuid()}")


def test_directory_and_files_are_private(connect: Connect, store: Path) -> None:
    nested = store / "a" / "b"
    connect("a", directory=nested)
    for path in (nested, nested / "sessions"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for name in ("store.db", "write.lock"):
        assert stat.S_IMODE((nested / name).stat().st_mode) == 0o600
    assert len(list((nested / "sessions").glob("*.sock"))) == 1
    assert len(list((nested / "sessions").glob("*.lock"))) == 1


def test_close_leaves_no_session_files(connect: Connect, store: Path) -> None:
    connect("a").close()
    assert list((store / "sessions").iterdir()) == []


def test_a_path_too_long_for_a_unix_socket_still_works(connect: Connect, tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    assert len(str(deep / "sessions" / "0123456789abcdef.sock")) > 108
    a, b = connect("a", directory=deep), connect("b", directory=deep)
    elected = Recorder()
    a.election("e").campaign(on_elected=elected)
    b.election("e").campaign(on_elected=elected)
    elected.wait_count(1, WAIT)
    a.election("e").resign()
    assert elected.wait_count(2, WAIT)[1].member_id == "b"


# ---- foreign, corrupted and hostile contents ------------------------------------------------------


def test_a_foreign_file_in_place_of_the_database_is_a_clear_error(store: Path) -> None:
    store.mkdir()
    (store / "store.db").write_text("these are my notes, not a database\n" * 50)
    with pytest.raises(ConfigurationError, match="not an SQLite database.*move it away"):
        coordination.connect(f"embedded://{store}", "a")


def test_another_applications_sqlite_database_is_refused(store: Path) -> None:
    store.mkdir()
    with sqlite3.connect(store / "store.db") as db:
        db.execute("CREATE TABLE photos (id INTEGER)")
    with pytest.raises(ConfigurationError, match="SQLite database of something else"):
        coordination.connect(f"embedded://{store}", "a")


def test_a_corrupted_database_is_a_clear_error(connect: Connect, store: Path) -> None:
    a = connect("a")
    for dpid in range(1, 200):
        a.topology.put(Switch(dpid=dpid, owner="a", term=1, address="x" * 200))
    a.close()
    data = bytearray((store / "store.db").read_bytes())
    for offset in range(4096, len(data), 4096):  # every page after the header
        data[offset:offset + 64] = b"\xff" * 64
    (store / "store.db").write_bytes(bytes(data))
    with pytest.raises(BackendConnectionError, match="corrupted or unreadable.*move it away"):
        coordination.connect(f"embedded://{store}", "a")


def test_a_store_from_a_newer_version_is_refused(connect: Connect, store: Path) -> None:
    connect("a").close()
    with sqlite3.connect(store / "store.db") as db:
        db.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    with pytest.raises(ConfigurationError, match="schema 99, newer"):
        coordination.connect(f"embedded://{store}", "a")


@pytest.mark.parametrize("what", ["store is a file", "database is a directory",
                                  "sessions is a file"])
def test_wrong_file_types_are_clear_errors(store: Path, what: str) -> None:
    if what == "store is a file":
        store.write_text("x")
    elif what == "database is a directory":
        (store / "store.db").mkdir(parents=True)
    else:
        store.mkdir()
        (store / "sessions").write_text("x")
    with pytest.raises(ConfigurationError, match=str(store)):
        coordination.connect(f"embedded://{store}", "a")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create another user's directory")
def test_a_directory_owned_by_another_user_is_refused(store: Path) -> None:
    store.mkdir(mode=0o700)
    os.chown(store, 65534, 65534)
    with pytest.raises(ConfigurationError, match="belongs to uid 65534"):
        coordination.connect(f"embedded://{store}", "a")


def test_stale_files_of_sessions_that_never_registered_are_swept(
    connect: Connect, store: Path,
) -> None:
    sessions = store / "sessions"
    sessions.mkdir(parents=True)
    for name in ("00000000000000aa.sock", "00000000000000aa.lock", "00000000000000bb.sock"):
        (sessions / name).write_text("")
    held = os.open(sessions / "00000000000000cc.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # a session starting right now: its files must stay
        connect("a")
        names = {p.name for p in sessions.iterdir()}
        assert not names & {"00000000000000aa.sock", "00000000000000aa.lock",
                            "00000000000000bb.sock"}
        assert "00000000000000cc.lock" in names
    finally:
        os.close(held)


# ---- waits are pushed and bounded -------------------------------------------------------------


def test_a_contended_write_waits_for_the_lock_and_is_bounded(connect: Connect,
                                                             store: Path) -> None:
    a = connect("a", operation_timeout=0.5)
    holder = os.open(store / "write.lock", os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # a hung process holding the writer lock
        started = time.monotonic()
        with pytest.raises(OperationTimeoutError, match="write.lock"):
            a.topology.put(Switch(dpid=1, owner="a", term=1))
        assert 0.4 < time.monotonic() - started < 3.0
        done = threading.Event()
        writer = threading.Thread(target=lambda: (a.topology.put(Switch(dpid=2, owner="a", term=1)),
                                                  done.set()))
        writer.start()
        assert not done.wait(0.1)  # blocked on the lock, not failing
        released = time.monotonic()
    finally:
        os.close(holder)
    assert done.wait(WAIT)
    assert time.monotonic() - released < 0.1  # woken by the kernel, not by a poll
    writer.join(WAIT)


def test_wait_for_lock_is_woken_at_release_and_can_be_abandoned(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    granted = Recorder()
    wait_for_lock(os.open(path, os.O_RDWR), granted, "test-waiter")
    abandon = wait_for_lock(os.open(path, os.O_RDWR), Recorder(), "test-abandoned")
    assert abandon() is True
    assert not granted.items
    os.close(holder)
    fd = granted.wait_count(1, WAIT)[0]
    os.close(fd)
    later = Recorder()  # the abandoned waiter must release a late grant at once
    wait_for_lock(os.open(path, os.O_RDWR), later, "test-later")
    os.close(later.wait_count(1, WAIT)[0])


# ---- losing the store or the session, and coming back ------------------------------------------


def test_a_wiped_store_is_lost_then_rebuilt_with_larger_terms(connect: Connect,
                                                              store: Path) -> None:
    a = connect("a", watchdog_interval=0.1)
    states, elected = Recorder("states"), Recorder("elected")
    a.add_session_listener(states)
    a.election("e").campaign(on_elected=elected)
    first = elected.wait_count(1, WAIT)[0]
    shutil.rmtree(store)
    states.wait_for(lambda items: items[-2:] == [SessionState.LOST, SessionState.CONNECTED],
                    WAIT)
    second = elected.wait_count(2, WAIT)[1]
    assert second.term > first.term  # the counter restarts from the clock, never below
    assert (store / "store.db").exists()
    assert a.members().keys() == {"a"}


def test_a_session_reaped_behind_its_back_is_lost_and_rejoins(connect: Connect,
                                                              store: Path) -> None:
    a = connect("a", watchdog_interval=0.1)
    b = connect("b")
    states, a_elected, a_revoked = Recorder(), Recorder(), Recorder()
    a.add_session_listener(states)
    a.election("e").campaign(on_elected=a_elected, on_revoked=a_revoked)
    first = a_elected.wait_count(1, WAIT)[0]
    b.election("e").campaign()
    with sqlite3.connect(store / "store.db") as db:  # tampering: a's rows vanish
        db.execute("DELETE FROM sessions WHERE member_id = 'a'")
    states.wait_for(lambda items: items[-2:] == [SessionState.LOST, SessionState.CONNECTED],
                    WAIT)
    assert a_revoked.wait_count(1, WAIT)[0] == first
    assert set(b.members()) == {"a", "b"}
    assert [c.member_id for c in b.election("e").candidates()] == ["b", "a"]
    assert b.election("e").leader().member_id == "b"  # no zombie leadership is left behind


def test_a_watch_that_falls_behind_the_change_log_resyncs(
    connect: Connect, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_embedded_db, "LOG_KEEP", 5)
    monkeypatch.setattr(_embedded_db, "_COMPACT_EVERY", 1)
    writer, reader = connect("writer"), connect("reader")
    events = Recorder()
    reader.topology.watch(events)
    events.wait_count(1, WAIT)
    gate = threading.Event()
    reader.worker.submit(gate.wait, WAIT)  # type: ignore[attr-defined]  # the reader stalls
    for dpid in range(1, 21):
        writer.topology.put(Switch(dpid=dpid, owner="writer", term=1))
    gate.set()
    resync = events.wait_for(lambda items: isinstance(items[-1], Snapshot) and len(items) > 1,
                             WAIT)[-1]
    assert resync.resync
    assert sorted(r.dpid for r in resync.records) == list(range(1, 21))


def test_concurrent_starts_in_threads_all_register(connect: Connect, store: Path) -> None:
    errors: list[BaseException] = []
    made: list[Coordinator] = []
    lock = threading.Lock()

    def start(i: int) -> None:
        try:
            coordinator = coordination.connect(f"embedded://{store}", f"m{i}")
            with lock:
                made.append(coordinator)
        except (coordination.CoordinationError, OSError) as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    try:
        assert not errors
        assert set(made[0].members()) == {f"m{i}" for i in range(8)}
    finally:
        for coordinator in made:
            coordinator.close()
