"""Member ids and election names: one validation, used wherever they enter the system.

Both end up as store keys (ZooKeeper znodes, etcd keys, SQLite rows) and in operators' tables,
so they are bounded (1-200 characters) and never `.` or `..` (path components the ZooKeeper
client refuses). A member id may be any printable text without `/`; an election name keeps to
`A-Z a-z 0-9 _ . : -`. Control characters (newline, NUL, ...) are refused: a newline in a member
id would forge a row in `coordctl members`.

Error messages stay one line: the bad value is shown through `shown()` (repr, truncated), so a
10 kB id does not make a 10 kB message.
"""

from __future__ import annotations

import re

from .errors import ConfigurationError

#: Longest member id or election name, in characters.
MAX_NAME_LENGTH = 200
_ELECTION = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")
_RESERVED = frozenset({".", ".."})
_SHOWN = 60


def shown(value: object, limit: int = _SHOWN) -> str:
    """`repr(value)`, cut to about `limit` characters (with the full length said): for messages
    that quote untrusted input. Never raises."""
    try:
        text = repr(value)
    except (ValueError, TypeError, RecursionError):  # an int too long to print, a broken repr
        return f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters"
    return f"{text[:limit]}... ({size})"


def printable(text: str, limit: int = 200) -> str:
    """`text` with non-printable characters escaped (`\\n`, `\\x00`, ...) and cut to `limit`:
    untrusted text that must stay on one line of a table or a log message."""
    out = text if text.isprintable() else "".join(
        c if c.isprintable() else repr(c)[1:-1] for c in text)
    return out if len(out) <= limit else out[:limit] + "..."


def member_id_problem(value: object) -> str | None:
    """Why `value` is not a valid member id, or None if it is one."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        return f"must be 1-{MAX_NAME_LENGTH} characters long, got {len(value)}"
    if not value.strip():
        return "must not be blank"
    if not value.isprintable():
        return "must not contain control characters (newline, NUL, ...)"
    if "/" in value:
        return "must not contain '/'"
    if value in _RESERVED:
        return "must not be '.' or '..'"
    return None


def election_name_problem(value: object) -> str | None:
    """Why `value` is not a valid election name, or None if it is one."""
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    if not _ELECTION.fullmatch(value):
        return f"use 1-{MAX_NAME_LENGTH} characters from A-Z a-z 0-9 _ . : -"
    if value in _RESERVED:
        return "must not be '.' or '..'"
    return None


def validate_member_id(value: object) -> str:
    """`value` if it is a valid member id, else `ConfigurationError` saying why."""
    problem = member_id_problem(value)
    if problem is not None:
        raise ConfigurationError(f"bad member_id {shown(value)}: {problem}")
    return value  # type: ignore[return-value]


def validate_election_name(name: object) -> str:
    """`name` if it is a valid election name, else `ConfigurationError` saying why."""
    problem = election_name_problem(name)
    if problem is not None:
        raise ConfigurationError(f"bad election name {shown(name)}: {problem}")
    return name  # type: ignore[return-value]
