"""The embedded backend's SQLite store: schema, transactions, the revision counter, every query.

One database per store directory, in WAL mode (readers never block the writer or each other).
Every write is one `BEGIN IMMEDIATE` transaction taken under the store-wide `write.lock`.

The revision counter lives in the database (`meta.revision`) and every write draws fresh
revisions from it: candidacy order, record versions, change-log positions and election terms.
A term is drawn in the same transaction that makes a candidate the leader (`settle`), so terms
grow with every change of leader, whatever order the candidates joined in.

It is a hybrid counter: next = max(last + 1, wall clock in microseconds). Within one store it
only ever grows; and should the store be lost (directory wiped, tmpfs after a reboot, a torn tail
after power loss with synchronous=NORMAL), a new one still issues terms above every term the old
one handed out, so switches never see a generation_id go backwards.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordination.driver_support import decode_members
from coordination.errors import (
    BackendConnectionError,
    ConfigurationError,
    OperationTimeoutError,
)
from coordination.names import election_name_problem, shown
from coordination.store import Versioned
from coordination.types import Candidate, Leadership, MemberInfo

from .files import DB_NAME, WRITE_LOCK_NAME, WriteLock, open_file

LOG = logging.getLogger(__name__)

FORMAT = "sdn-coordination-embedded"
SCHEMA = 1
#: Changes kept in the log for watchers that fall behind; older ones force a resync snapshot.
LOG_KEEP = 10_000
_COMPACT_EVERY = 500

_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, token TEXT NOT NULL UNIQUE,
    member_id TEXT NOT NULL, pid INTEGER NOT NULL, started REAL NOT NULL);
CREATE TABLE members (member_id TEXT PRIMARY KEY, token TEXT NOT NULL, info TEXT NOT NULL);
CREATE TABLE candidates (
    election TEXT NOT NULL, token TEXT NOT NULL, seq INTEGER NOT NULL,
    member_id TEXT NOT NULL, priority INTEGER NOT NULL, PRIMARY KEY (election, token));
CREATE INDEX candidates_rank ON candidates (election, priority DESC, seq);
CREATE INDEX candidates_token ON candidates (token);
CREATE TABLE elections (
    name TEXT PRIMARY KEY, leader_token TEXT, leader_member TEXT, leader_seq INTEGER,
    term INTEGER NOT NULL, rev INTEGER NOT NULL);
CREATE INDEX elections_rev ON elections (rev);
CREATE TABLE records (path TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL);
CREATE TABLE changes (rev INTEGER PRIMARY KEY, path TEXT NOT NULL, value BLOB);
"""


class StoreUnusableError(BackendConnectionError):
    """The database file is gone, replaced, corrupted or failing I/O: the session is lost."""


@dataclass(frozen=True)
class LeaderRow:
    """An election's row: who leads (None: nobody) under which term, and its candidacy seq."""

    name: str
    token: str | None
    member_id: str | None
    seq: int | None
    term: int


def _clock() -> int:
    return time.time_ns() // 1000


class Txn:
    """One write transaction: draws revisions and remembers whether it changed anything."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.rev = 0
        self.changed = False

    def next_rev(self) -> int:
        if not self.changed:
            self.rev = int(self.execute("SELECT value FROM meta WHERE key = 'revision'")
                           .fetchone()[0])
            self.changed = True
        self.rev = max(self.rev + 1, _clock())
        return self.rev

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, args)

    def session_alive(self, token: str) -> bool:
        return self.execute("SELECT 1 FROM sessions WHERE token = ?", (token,)).fetchone() is not None

    def settle(self, name: str) -> bool:
        """Make the best candidate (priority, then earliest) the leader, under a new term."""
        best = self.execute(
            "SELECT token, member_id, seq FROM candidates WHERE election = ? "
            "ORDER BY priority DESC, seq LIMIT 1", (name,)).fetchone()
        row = self.execute("SELECT leader_seq, term FROM elections WHERE name = ?",
                           (name,)).fetchone()
        current_seq, term = (row[0], row[1]) if row else (None, 0)
        if (best[2] if best else None) == current_seq and row is not None:
            return False
        rev = self.next_rev()
        token, member, seq = best if best else (None, None, None)
        self.execute(
            "INSERT INTO elections (name, leader_token, leader_member, leader_seq, term, rev) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "leader_token = excluded.leader_token, leader_member = excluded.leader_member, "
            "leader_seq = excluded.leader_seq, term = excluded.term, rev = excluded.rev",
            (name, token, member, seq, rev if best else term, rev))
        return True

    def log_change(self, path: str, value: bytes | None) -> int:
        rev = self.next_rev()
        self.execute("INSERT INTO changes (rev, path, value) VALUES (?, ?, ?)", (rev, path, value))
        return rev

    # ---- sessions -------------------------------------------------------------------------

    def register(self, token: str, member_id: str, info: MemberInfo) -> tuple[int, str | None]:
        """Add a session and make it own `member_id`; returns its id (ids grow with
        registration order) and the token of the session that owned the member id before."""
        cursor = self.execute("INSERT INTO sessions (token, member_id, pid, started) "
                              "VALUES (?, ?, ?, ?)", (token, member_id, os.getpid(), time.time()))
        previous = self.execute("SELECT token FROM members WHERE member_id = ?",
                                (member_id,)).fetchone()
        self.execute("INSERT INTO members (member_id, token, info) VALUES (?, ?, ?) "
                     "ON CONFLICT (member_id) DO UPDATE SET token = excluded.token, "
                     "info = excluded.info", (member_id, token, json.dumps(info.to_dict())))
        self.reap_orphans()
        self.next_rev()
        return int(cursor.lastrowid or 0), previous[0] if previous else None

    def reap(self, token: str) -> bool:
        """Delete every row of a session and settle each election it was a candidate in; False
        if it had none left (reaped already, or closed cleanly)."""
        names = [r[0] for r in self.execute(
            "SELECT DISTINCT election FROM candidates WHERE token = ?", (token,))]
        deleted = sum(self.execute(f"DELETE FROM {table} WHERE token = ?", (token,)).rowcount
                      for table in ("sessions", "members", "candidates"))
        for name in names:
            self.settle(name)
        if deleted:
            self.next_rev()
        return deleted > 0

    def reap_orphans(self) -> None:
        """Rows left by sessions whose registration row is gone (hand-edited stores)."""
        for (token,) in self.execute(
            "SELECT token FROM candidates UNION SELECT token FROM members "
            "EXCEPT SELECT token FROM sessions").fetchall():
            LOG.warning("removing rows of unregistered session %s", token)
            self.reap(token)

    # ---- elections ------------------------------------------------------------------------

    def join(self, election: str, token: str, member_id: str, priority: int) -> int:
        """Add a candidacy (or keep the session's existing one) and settle; returns its seq."""
        row = self.execute("SELECT seq FROM candidates WHERE election = ? AND token = ?",
                           (election, token)).fetchone()
        if row is not None:
            seq = int(row[0])
        else:
            seq = self.next_rev()
            self.execute("INSERT INTO candidates (election, token, seq, member_id, priority) "
                         "VALUES (?, ?, ?, ?, ?)", (election, token, seq, member_id, priority))
        self.settle(election)
        return seq

    def leave(self, election: str, token: str) -> None:
        """Remove the session's candidacy; the successor is settled in the same transaction."""
        cursor = self.execute("DELETE FROM candidates WHERE election = ? AND token = ?",
                              (election, token))
        if cursor.rowcount:
            self.settle(election)

    # ---- records --------------------------------------------------------------------------

    def record_version(self, path: str) -> int | None:
        row = self.execute("SELECT version FROM records WHERE path = ?", (path,)).fetchone()
        return None if row is None else int(row[0])

    def put(self, path: str, value: bytes) -> None:
        """Write a record; its version is the revision of its change-log entry."""
        rev = self.log_change(path, value)
        self.execute("INSERT INTO records (path, value, version) VALUES (?, ?, ?) ON CONFLICT "
                     "(path) DO UPDATE SET value = excluded.value, version = excluded.version",
                     (path, value, rev))

    def delete(self, path: str) -> None:
        self.execute("DELETE FROM records WHERE path = ?", (path,))
        self.log_change(path, None)


class Database:
    """The store's SQLite database, shared by every thread of one coordinator (one connection,
    guarded by the caller's lock)."""

    def __init__(self, directory: Path, timeout: float) -> None:
        self.path = directory / DB_NAME
        self.timeout = timeout
        os.close(open_file(self.path))  # create it 0600, and refuse a directory or a device
        self._identity = _identity(self.path)
        self._writes = 0
        self.write_lock = WriteLock(directory / WRITE_LOCK_NAME)
        try:
            self.conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None,
                                        check_same_thread=False)
        except sqlite3.Error as exc:
            self.write_lock.close()
            raise ConfigurationError(f"embedded store {self.path}: cannot open: {exc}") from None
        try:
            self._prepare()
        except StoreUnusableError as exc:
            self.close()
            raise StoreUnusableError(
                f"embedded store {self.path} is corrupted or unreadable ({exc.__cause__}); move "
                "it away or point the URL at another directory (a new store still issues larger "
                "terms)") from exc
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.write_lock.close()

    def _prepare(self) -> None:
        """Check (or create) the schema, under the write lock so concurrent starts agree."""
        try:
            self.conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"embedded store {self.path} is not an SQLite database ({exc}): it is a foreign "
                "or corrupted file; move it away (or point the URL at another directory)"
            ) from None
        with self.write():
            mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
            tables = {r[0] for r in self.conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if mode != "wal":
                self.conn.execute("COMMIT")  # journal_mode cannot change inside a transaction
                mode = self.conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                self.conn.execute("BEGIN IMMEDIATE")
                if mode != "wal":
                    raise ConfigurationError(
                        f"embedded store {self.path}: SQLite cannot use WAL mode here (journal "
                        f"mode {mode!r}); keep the store on a local filesystem, not NFS")
            if not tables:
                for statement in _TABLES.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [
                    ("format", FORMAT), ("schema", SCHEMA), ("revision", _clock()),
                    ("log_floor", 0)])
                LOG.info("created embedded coordination store %s", self.path)
                return
            meta = dict(self.conn.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
            if meta.get("format") != FORMAT:
                raise ConfigurationError(
                    f"embedded store {self.path} is an SQLite database of something else (no "
                    f"{FORMAT!r} marker); move it away or use another directory")
            if int(meta.get("schema", 0)) > SCHEMA:
                raise ConfigurationError(
                    f"embedded store {self.path} has schema {meta['schema']}, newer than this "
                    f"version understands ({SCHEMA}); upgrade sdn-coordination")
        self.conn.execute("PRAGMA synchronous = NORMAL")

    # ---- transactions -------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[Txn]:
        """A `BEGIN IMMEDIATE` transaction under the store-wide write lock (caller holds the
        connection lock). Commits on success, rolls back on any exception."""
        self.check_identity()
        self.write_lock.acquire(self.timeout)
        try:
            with self._translated("write"):
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    txn = Txn(self.conn)
                    yield txn
                    if txn.changed:
                        self.conn.execute("UPDATE meta SET value = ? WHERE key = 'revision'",
                                          (txn.rev,))
                        self._writes += 1
                        if self._writes % _COMPACT_EVERY == 0:
                            _compact(txn)
                    self.conn.execute("COMMIT")
                except BaseException:
                    if self.conn.in_transaction:
                        self.conn.execute("ROLLBACK")
                    raise
        finally:
            self.write_lock.release()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one consistent state of the store."""
        with self._translated("read"):
            self.conn.execute("BEGIN")
            try:
                yield self.conn
            finally:
                if self.conn.in_transaction:
                    self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise OperationTimeoutError(
                    f"embedded store {self.path}: {what} waited more than {self.timeout} s: {exc}"
                ) from exc
            raise StoreUnusableError(f"embedded store {self.path}: {what} failed: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StoreUnusableError(f"embedded store {self.path}: {what} failed: {exc}") from exc

    def check_identity(self) -> None:
        """The file we have open must still be the one at the store's path: a deleted or
        replaced database would otherwise let this process lead in a store nobody else sees."""
        try:
            same = _identity(self.path) == self._identity
        except OSError:
            same = False
        if not same:
            raise StoreUnusableError(
                f"embedded store {self.path} was deleted or replaced while in use")

    # ---- reads --------------------------------------------------------------------------

    def leader(self, name: str) -> Leadership | None:
        with self.read() as conn:
            row = conn.execute("SELECT leader_member, term FROM elections WHERE name = ? AND "
                               "leader_token IS NOT NULL", (name,)).fetchone()
        if row is None:
            return None
        if not (isinstance(row[0], str) and _is_int(row[1])):
            _skip("election", name, "its leader or term has the wrong type")
            return None
        return Leadership(row[0], row[1])

    def candidates(self, name: str) -> list[Candidate]:
        with self.read() as conn:
            rows = conn.execute("SELECT member_id, priority FROM candidates WHERE election = ? "
                                "ORDER BY priority DESC, seq", (name,)).fetchall()
        out = []
        for member, priority in rows:
            if isinstance(member, str) and _is_int(priority):
                out.append(Candidate(member, priority))
            else:
                _skip("candidate of election", name, "member id or priority of the wrong type")
        return out

    def session_tokens(self) -> set[str]:
        with self.read() as conn:
            return {r[0] for r in conn.execute("SELECT token FROM sessions")}

    def has_candidacy(self, name: str, seq: int | None) -> bool:
        with self.read() as conn:
            return conn.execute("SELECT 1 FROM candidates WHERE election = ? AND seq = ?",
                                (name, seq)).fetchone() is not None

    def election_names(self) -> list[str]:
        with self.read() as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM elections ORDER BY name")]
        out = []
        for name in names:
            problem = election_name_problem(name)
            if problem is None:
                out.append(name)
            else:
                _skip("election", name, f"its name {problem}")
        return out

    def members(self) -> dict[str, MemberInfo]:
        with self.read() as conn:
            rows = conn.execute("SELECT member_id, info FROM members ORDER BY member_id").fetchall()
        return decode_members(rows)

    def get(self, path: str) -> Versioned | None:
        """The record at `path`. A row of the wrong type keeps its version but reads as an empty
        value, which the topology store logs as malformed and a put can still replace."""
        with self.read() as conn:
            row = conn.execute("SELECT value, version FROM records WHERE path = ?",
                               (path,)).fetchone()
        if row is None:
            return None
        value = _blob(path, row[0])
        return Versioned(b"" if value is None else value, row[1])

    def list(self, prefix: str) -> dict[str, Versioned]:
        """Every record under `prefix`; malformed rows (see `_blob`) are logged and skipped."""
        with self.read() as conn:
            rows = conn.execute("SELECT path, value, version FROM records WHERE substr(path, 1, ?)"
                                " = ? ORDER BY path", (len(prefix), prefix)).fetchall()
        out = {}
        for path, value, version in rows:
            blob = _blob(path, value)
            if blob is not None and _is_int(version):
                out[path] = Versioned(blob, version)
        return out


@dataclass(frozen=True)
class SyncState:
    """What one read of the store tells a session's worker (see `read_sync`)."""

    revision: int
    log_floor: int
    elections: list[LeaderRow]
    snapshot: dict[str, bytes] | None
    changes: list[tuple[int, str, bytes | None]]
    older_sessions: set[str]


def read_sync(conn: sqlite3.Connection, token: str, sid: int, election_rev: int,
              dirty: set[str], positions: list[int | None]) -> SyncState | None:
    """Everything a session must catch up on, in one read transaction: election rows changed
    after `election_rev` (and those in `dirty` whatever their revision), a snapshot of every
    record if a watch position is None or behind the change log, the changes after the oldest
    other position, and the tokens of the sessions registered before `sid`. None if session
    `token` is no longer registered."""
    if conn.execute("SELECT 1 FROM sessions WHERE token = ?", (token,)).fetchone() is None:
        return None
    meta = dict(conn.execute("SELECT key, value FROM meta WHERE key IN ('revision', 'log_floor')"))
    rev, floor = int(meta["revision"]), int(meta["log_floor"])
    columns = "name, leader_token, leader_member, leader_seq, term"
    rows = conn.execute(f"SELECT {columns} FROM elections WHERE rev > ?", (election_rev,)).fetchall()
    seen = {r[0] for r in rows}
    for name in sorted(n for n in dirty - seen if isinstance(n, str)):
        row = conn.execute(f"SELECT {columns} FROM elections WHERE name = ?", (name,)).fetchone()
        rows.append(row if row is not None else (name, None, None, None, 0))
    snapshot = None
    if any(p is None or p < floor for p in positions):
        snapshot = {}
        for path, value in conn.execute("SELECT path, value FROM records"):
            blob = _blob(path, value)
            if blob is not None:
                snapshot[path] = blob
    streaming = [p for p in positions if p is not None and p >= floor]
    changes: list[tuple[int, str, bytes | None]] = []
    if streaming:
        for change_rev, path, value in conn.execute(
                "SELECT rev, path, value FROM changes WHERE rev > ? ORDER BY rev",
                (min(streaming),)):
            blob = None if value is None else _blob(path, value)
            if _is_int(change_rev) and isinstance(path, str) and (value is None or blob is not None):
                changes.append((change_rev, path, blob))
    older = {r[0] for r in conn.execute("SELECT token FROM sessions WHERE id < ?", (sid,))}
    return SyncState(rev, floor, [LeaderRow(*r) for r in rows if _leader_row_ok(r)], snapshot,
                     changes, older)


# ---- rows of the wrong type ---------------------------------------------------------------
# SQLite keeps whatever type a hand wrote (the sqlite3 shell writes '...' as TEXT). A row that
# does not have the types this module writes is malformed: logged and skipped, never raised into
# the worker, where it would stop every later read of the store (the watch would wedge).


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _skip(what: str, name: Any, why: str) -> None:
    LOG.error("embedded store: skipping %s %s (edited by hand?): %s", what, shown(name), why)


def _blob(path: Any, value: Any) -> bytes | None:
    """A record's stored value, or None (logged) if the row is malformed: a path that is not
    text, or a value that is not a BLOB (TEXT, a number)."""
    if not isinstance(path, str):
        _skip("record", path, "its path is not text")
        return None
    if not isinstance(value, bytes):
        kind = "TEXT" if isinstance(value, str) else type(value).__name__
        _skip("record", path, f"its value is {kind}, not a BLOB; put the record again to repair it")
        return None
    return value


def _leader_row_ok(row: tuple[Any, ...]) -> bool:
    name, token, member, seq, term = row
    ok = (isinstance(name, str) and (token is None or isinstance(token, str))
          and (member is None or isinstance(member, str)) and (seq is None or _is_int(seq))
          and _is_int(term))
    if not ok:
        _skip("election", name, "a column has the wrong type")
    return ok


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def _compact(txn: Txn) -> None:
    """Trim the change log to its last LOG_KEEP entries; watchers behind the floor resync."""
    row = txn.execute("SELECT rev FROM changes ORDER BY rev DESC LIMIT 1 OFFSET ?",
                      (LOG_KEEP,)).fetchone()
    if row is not None:
        txn.execute("DELETE FROM changes WHERE rev <= ?", (row[0],))
        txn.execute("UPDATE meta SET value = ? WHERE key = 'log_floor'", (row[0],))
