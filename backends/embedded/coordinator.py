"""The embedded coordinator: a session in the store directory, the worker that reads the store
after every notification, dead peers reaped, and recovery from a lost session or store."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from coordination.api import Coordinator
from coordination.dispatch import SerialExecutor
from coordination.election import Election
from coordination.errors import (
    BackendConnectionError,
    ClosedError,
    CoordinationError,
    OperationTimeoutError,
    SessionLostError,
)
from coordination.options import Option
from coordination.store import RawEvent, RecordStoreDriver
from coordination.types import MemberInfo, SessionState
from coordination.urls import BackendURL

from . import election as elections
from .bus import Bus
from .db import Database, StoreUnusableError, Txn, read_sync
from .election import EmbeddedElection
from .files import SessionFiles, prepare_dir, store_dir, wait_for_lock
from .store import EmbeddedRecordStore, EmbeddedWatch

LOG = logging.getLogger(__name__)
_RECOVERY_DELAYS = (0.1, 0.5, 1.0, 2.0, 5.0)
_LIVE: weakref.WeakSet[EmbeddedCoordinator] = weakref.WeakSet()


class _Session:
    """One registration in the store: a token, the flock that proves it alive, its bus."""

    def __init__(self, token: str, sid: int, lock_fd: int, bus: Bus) -> None:
        self.token = token
        self.sid = sid
        self.lock_fd: int | None = lock_fd
        self.bus = bus

    def close(self, files: SessionFiles) -> None:
        """Remove the files, release the lock, then close the sockets (peers see EOF last, so
        their liveness check finds the lock already released)."""
        files.remove(self.token)
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
        self.bus.close()


class EmbeddedCoordinator(Coordinator):
    """A member's session in an embedded store directory (see the module docstring)."""

    OPTIONS: ClassVar[dict[str, Option]] = {}
    #: reads the store after every notification, reports elections and topology changes
    EXECUTORS: ClassVar[dict[str, str]] = {"worker": "embedded-driver"}
    worker: SerialExecutor

    def __init__(self, url: BackendURL, member_id: str, options: dict[str, Any]) -> None:
        super().__init__(url, member_id, options)
        self.directory: Path = store_dir(url)
        self.op_timeout = float(options["operation_timeout"])
        self._db_lock = threading.RLock()  # one sqlite connection, shared by our threads
        self._db: Database | None = None
        self._files: SessionFiles | None = None
        self._session: _Session | None = None
        self._records: EmbeddedRecordStore | None = None
        self._sync_lock = threading.Lock()
        self._sync_pending = False
        self._dirty: set[str] = set()
        self._election_rev = 0
        self._watches: list[EmbeddedWatch] = []
        self._checking: dict[str, Callable[[], bool]] = {}  # peers whose death we await
        self._recovery = 0
        self._stopping = False
        self._last_token = ""  # our previous session's, whose member row we may replace

    # ---- lifecycle ------------------------------------------------------------------------

    def _driver_start(self) -> None:
        try:
            self._open_store(float(self.options["connect_timeout"]))
            self.worker.call(self._open_session, timeout=self.op_timeout * 3)
        except BaseException as exc:
            self.worker.call(self._close_store, timeout=self.op_timeout)
            if isinstance(exc, OSError):
                raise BackendConnectionError(
                    f"embedded store {self.directory}: cannot start a session: {exc}") from exc
            raise
        _LIVE.add(self)
        self.worker.call(self._set_session_state, SessionState.CONNECTED)

    def _driver_stop(self) -> None:
        self._stopping = True
        with self._sync_lock:
            self._watches.clear()
        try:
            self.worker.call(self._shutdown, timeout=self.op_timeout * 3)
        except CoordinationError:
            LOG.warning("member %s: closing the embedded session failed", self.member_id,
                        exc_info=True)
        _LIVE.discard(self)

    def _open_store(self, timeout: float) -> None:
        prepare_dir(self.directory)
        files = SessionFiles(self.directory)
        try:
            db = Database(self.directory, timeout)
        except BaseException:
            files.close()
            raise
        db.timeout = self.op_timeout
        with self._db_lock:
            self._db, self._files = db, files

    def _close_store(self) -> None:
        with self._db_lock:  # no thread is inside the database while it closes
            db, self._db = self._db, None
            files, self._files = self._files, None
            if db is not None:
                db.close()
            if files is not None:
                files.close()

    def _open_session(self) -> None:
        """Register a new session (worker thread): lock file, socket, row, then connect to
        every older session and reap the dead ones."""
        db, files = self._require_store()
        token = secrets.token_hex(8)
        lock_fd = files.hold(token)
        bus = Bus(files, token, self.request_sync, self._peer_gone)
        try:
            bus.start()
            with self._db_lock, db.write() as txn:
                sid, previous = txn.register(token, self.member_id, self.info)
            if previous not in (None, self._last_token):
                LOG.warning("member id %r was registered by session %s; taking it over",
                            self.member_id, previous)
        except BaseException:
            bus.close()
            files.remove(token)
            os.close(lock_fd)
            raise
        self._session = _Session(token, sid, lock_fd, bus)
        self._last_token = token
        LOG.info("member %s: embedded session %s (#%d) in %s", self.member_id, token, sid,
                 self.directory)
        self.request_sync()  # connects to every older session, reaps the dead ones
        with self._db_lock:
            known = db.session_tokens()
        files.sweep(known)

    def _shutdown(self) -> None:
        """Leave the store (worker thread): drop our rows, tell the peers, release our files."""
        session, self._session = self._session, None
        for abandon in self._checking.values():
            abandon()
        self._checking.clear()
        if session is not None and self._db is not None and self._files is not None:
            try:
                with self._db_lock, self._db.write() as txn:
                    txn.reap(session.token)
                session.bus.notify()
            except CoordinationError:
                LOG.warning("member %s: removing the session from the store failed",
                            self.member_id, exc_info=True)
            session.close(self._files)
        self._close_store()

    # ---- plumbing for elections and records ---------------------------------------------

    def _require_store(self) -> tuple[Database, SessionFiles]:
        db, files = self._db, self._files
        if db is None or files is None:
            if self._closed:
                raise ClosedError(f"coordinator {self.member_id!r} is closed")
            raise SessionLostError(f"member {self.member_id!r}: the embedded store "
                                   f"{self.directory} is unusable; reopening it")
        return db, files

    def _require_session(self) -> _Session:
        session = self._session
        if session is None:
            self._require_store()
            raise SessionLostError(f"member {self.member_id!r} has no live session")
        return session

    def has_session(self) -> bool:
        return self._session is not None and self._db is not None

    def session_token(self) -> str:
        """Our live session's token; `SessionLostError` if there is none."""
        return self._require_session().token

    def read(self, func: Callable[[Database], Any], *, check_identity: bool = False) -> Any:
        """Run a read against the store (any thread); with `check_identity`, first check the
        database file is still the one we opened."""
        db, _ = self._require_store()
        try:
            with self._db_lock:
                if check_identity:
                    db.check_identity()
                return func(db)
        except StoreUnusableError as exc:
            self.worker.submit(self._store_failed, exc)
            raise

    def write(self, func: Callable[[Txn], Any]) -> Any:
        """Run `func` in a write transaction of our live session, then notify everyone."""
        session = self._require_session()
        db, _ = self._require_store()
        try:
            with self._db_lock, db.write() as txn:
                if not txn.session_alive(session.token):
                    self.worker.submit(self._lose_session, session, "its row is gone")
                    raise SessionLostError(f"member {self.member_id!r}: the session was reaped")
                result = func(txn)
                changed = txn.changed
        except StoreUnusableError as exc:
            self.worker.submit(self._store_failed, exc)
            raise
        if changed:
            session.bus.notify()
            self.request_sync()
        return result

    def request_sync(self) -> None:
        """Have the worker read the store (coalesced: many requests, one read)."""
        with self._sync_lock:
            if self._sync_pending:
                return
            self._sync_pending = True
        self.worker.submit(self._sync)

    def mark_dirty(self, *names: str) -> None:
        """Re-read these elections at the next sync whatever their revision."""
        with self._sync_lock:
            self._dirty.update(names)
        self.request_sync()

    def add_watch(self, sink: Callable[[RawEvent], None]) -> EmbeddedWatch:
        self._require_store()
        watch = EmbeddedWatch(self, sink)
        with self._sync_lock:
            self._watches.append(watch)
        self.request_sync()
        return watch

    def drop_watch(self, watch: EmbeddedWatch) -> None:
        with self._sync_lock:
            if watch in self._watches:
                self._watches.remove(watch)

    # ---- the worker: read the store after every notification ------------------------------

    def _sync(self) -> None:
        with self._sync_lock:
            self._sync_pending = False
            dirty, self._dirty = self._dirty, set()
            watches = [w for w in self._watches if not w.cancelled]
        session, db = self._session, self._db
        if session is None or db is None or self._stopping:
            return
        try:
            with self._db_lock:
                db.check_identity()
                with db.read() as conn:
                    state = read_sync(conn, session.token, session.sid, self._election_rev,
                                      dirty, [None if w.resync else w.rev for w in watches])
        except StoreUnusableError as exc:
            self._store_failed(exc)
            return
        except OperationTimeoutError as exc:  # SQLite-internal lock (e.g. WAL recovery)
            LOG.warning("member %s: reading the store timed out (%s); retrying",
                        self.member_id, exc)
            self.request_sync()
            return
        if state is None:
            self._lose_session(session, "its row is gone (reaped by another process)")
            return
        self._election_rev = state.revision
        for row in state.elections:
            election = self.existing_election(row.name)
            if isinstance(election, EmbeddedElection):
                elections.apply_leader_row(election, row)
        for watch in watches:
            if not watch.deliver(state):
                self.request_sync()
        for token in state.older_sessions - session.bus.tokens() - set(self._checking):
            if not session.bus.connect(token):
                self._check_peer(token)

    # ---- dead peers -----------------------------------------------------------------------

    def _peer_gone(self, token: str) -> None:
        """The bus read EOF from `token` (bus thread): check it on the worker."""
        self.worker.submit(self._check_peer, token)

    def _check_peer(self, token: str) -> None:
        """Reap `token` if its lock is free; else wait (a blocked flock) until it is."""
        if token in self._checking or self._files is None or self._session is None:
            return
        verdict, fd = self._files.probe(token)
        if verdict != "alive" or fd is None:
            self._reap_peer(token, fd)
            return

        def on_acquired(lock_fd: int) -> None:
            future = self.worker.submit(self._reap_peer, token, lock_fd)
            if future.done() and future.exception() is not None:
                os.close(lock_fd)  # we are closing: never keep a dead peer's lock held

        LOG.debug("member %s: session %s closed its socket but holds its lock; waiting",
                  self.member_id, token)
        self._checking[token] = wait_for_lock(fd, on_acquired, f"embedded-peer[{token}]")

    def _reap_peer(self, token: str, lock_fd: int | None) -> None:
        """Remove a dead session's rows (its leaderships pass on in the same transaction)."""
        self._checking.pop(token, None)
        try:
            db, files = self._db, self._files
            session = self._session
            if db is None or files is None or session is None:
                return
            try:
                with self._db_lock, db.write() as txn:
                    reaped = txn.reap(token)
            except StoreUnusableError as exc:
                self._store_failed(exc)
                return
            files.remove(token)
            if reaped:
                LOG.info("member %s: reaped dead session %s", self.member_id, token)
                session.bus.notify()
                self.request_sync()
        finally:
            if lock_fd is not None:
                os.close(lock_fd)

    # ---- losing and recovering the session ------------------------------------------------

    def _lose_session(self, session: _Session, reason: str) -> None:
        """Our registration is gone (worker thread): LOST, then a fresh session."""
        if self._session is not session or self._stopping:
            return
        LOG.warning("member %s: embedded session %s lost: %s", self.member_id, session.token,
                    reason)
        self._session = None
        if self._files is not None:
            session.close(self._files)
        self._set_session_state(SessionState.LOST)
        self._recover()

    def _store_failed(self, exc: Exception) -> None:
        """The database is unusable (worker thread): LOST, close it, reopen with backoff."""
        if self._db is None or self._stopping:
            return
        LOG.error("member %s: %s", self.member_id, exc)
        session, self._session = self._session, None
        if session is not None and self._files is not None:
            session.close(self._files)
        self._close_store()
        self._set_session_state(SessionState.LOST)
        self._recover()

    def _recover(self) -> None:
        """Open the store (if closed) and a new session; on failure retry after a backoff."""
        if self._stopping or self._closed:
            return
        try:
            if self._db is None:
                self._open_store(self.op_timeout)
                with self._sync_lock:
                    for watch in self._watches:
                        watch.resync = True  # a new database: revisions are not comparable
            self._election_rev = 0
            self._open_session()
        except (CoordinationError, OSError) as exc:
            delay = _RECOVERY_DELAYS[min(self._recovery, len(_RECOVERY_DELAYS) - 1)]
            self._recovery += 1
            LOG.warning("member %s: embedded store %s still unusable (%s); retrying in %.1f s",
                        self.member_id, self.directory, exc, delay)
            self._close_store()
            timer = threading.Timer(delay, self.worker.submit, (self._recover,))
            timer.daemon = True
            timer.start()
            return
        self._recovery = 0
        self._set_session_state(SessionState.CONNECTED)

    # ---- core hooks -----------------------------------------------------------------------

    def _driver_join_many(self, joins: list[tuple[Election, int]]) -> None:
        elections.join_many(self, joins)

    def _driver_leave_many(self, elections_: list[Election]) -> None:
        elections.leave_many(self, elections_)

    def _driver_watchdog(self) -> None:
        """Besides unsettled elections, check every campaign's candidacy still exists: the
        store is a local file that a hand or a wipe can change behind the session's back, and
        these are local reads, not server round trips."""
        super()._driver_watchdog()
        for election in self.existing_elections():
            if election.campaigning:
                election._driver_reevaluate()

    def _driver_members(self) -> dict[str, MemberInfo]:
        return self.read(lambda db: db.members())

    def _driver_election(self, name: str) -> Election:
        return EmbeddedElection(self, name)

    def _driver_election_names(self) -> list[str]:
        return self.read(lambda db: db.election_names())

    def _driver_record_store(self) -> RecordStoreDriver:
        if self._records is None:
            self._records = EmbeddedRecordStore(self)
        return self._records

    # ---- fault hook (conformance suite) ---------------------------------------------------

    def expire(self) -> None:
        """Drop this session the way a crash would (no cleanup: its lock and sockets just go
        away, so the peers reap it and pass its leaderships on), then recover as after any
        loss: LOST, a new session, CONNECTED, campaigns resumed."""
        def run() -> None:
            if self._session is not None:
                self._lose_session(self._session, "expired on request")

        self.worker.call(run, timeout=self.op_timeout * 3)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop our copies of the session's fds so that the child never keeps
        a dead parent's lock held or its sockets open (the child has no session of its own)."""
        session = self._session
        if session is None:
            return
        if session.lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(session.lock_fd)
        for sock in session.bus.fds():
            with contextlib.suppress(OSError):
                os.close(sock.detach())


def _after_fork_in_child() -> None:
    for coordinator in list(_LIVE):
        coordinator._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
