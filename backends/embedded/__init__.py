"""Embedded driver: `embedded:///path/to/dir` (or `embedded://` for a per-user default directory).

A real backend for several controller processes on ONE host, with nothing to install: the store
is an SQLite database in the directory, liveness is a flock per session, and changes are pushed
over unix sockets. Elections and terms behave as on ZooKeeper (priority, then earliest candidate;
the term is drawn from the store's global revision counter in the transaction that makes the
leader), a process that dies (kill -9 included) loses its leadership within milliseconds, and the
topology store has a snapshot + change stream over a change log. See docs/embedded.md.

Threads per coordinator: the bus thread (select loop on the session's sockets; it only wakes the
others), the driver worker (reads the store after every notification, reports elections and
topology changes, reaps dead sessions) and the core's callback thread. Writes run in the caller's
thread and notify every peer after they commit.

Session states: CONNECTED while the session is registered; LOST when it is not any more (another
process reaped it, which only happens if its lock file was tampered with) or when the store
became unusable (database deleted, replaced, corrupted, I/O errors); the driver then opens a new
session as soon as it can (CONNECTED again, elections re-campaign). SUSPENDED is never reported:
there is no connection that could drop while the session survives.
"""

from .coordinator import EmbeddedCoordinator

__all__ = ["EmbeddedCoordinator"]
