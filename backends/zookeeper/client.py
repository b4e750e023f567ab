"""kazoo, wrapped: the handler choice, a deadline on every call, and batches of calls.

kazoo queues requests while it reconnects and its blocking methods wait without limit, so a
plain `client.get()` during an outage hangs whoever called it. `BoundedClient` gives every call
a deadline (`operation_timeout`), after which it raises kazoo's OperationTimeoutError.
`pipelined()` and `multi()` are the two ways one round trip serves many elections: requests sent
back to back on the one connection, and ZooKeeper transactions.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionLoss, KazooException
from kazoo.exceptions import OperationTimeoutError as KazooOperationTimeout

from coordination.errors import ConfigurationError
from coordination.eventloop import eventlet_patched

from .handlers import PollingThreadingHandler, polling_eventlet_handler

T = TypeVar("T")
#: Errors that mean "the connection is gone for now"; the step waits for the reconnect.
TRANSIENT = (ConnectionLoss, KazooOperationTimeout)
#: Requests in flight at once on the connection: enough to hide the round trip, few enough
#: that a heartbeat queued behind them is answered well within the session timeout (and
#: that kazoo's eventlet handler keeps up: 200 at once stalled it).
PIPELINE_DEPTH = 50
#: Operations per transaction: well under ZooKeeper's 1 MB request limit.
MULTI_SIZE = 200


class KazooLog(logging.LoggerAdapter):
    """kazoo's own log lines, demoted to DEBUG (logger `backends.zookeeper.kazoo`).

    kazoo logs a warning per failed reconnect attempt and tracebacks of dropped connections;
    the driver reports what matters itself (session states, errors with their cause), and those
    lines would bury it. The last problem kazoo reported is kept, so an error can name the
    cause ("Connection refused") instead of kazoo's generic time-out.
    """

    def __init__(self) -> None:
        super().__init__(logging.getLogger("backends.zookeeper.kazoo"), {})
        self.last_problem = ""

    #: kazoo's lines that say something happened, not why
    _GENERIC = ("Transition to CONNECTING", "Failed connecting to Zookeeper")

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        # kazoo logs every request and response at its BLATHER level: keep that path cheap
        if level >= logging.WARNING and not str(msg).startswith(self._GENERIC):
            try:
                self.last_problem = str(msg) % args if args else str(msg)
            except (TypeError, ValueError):
                self.last_problem = str(msg)
        level = min(level, logging.DEBUG)
        if self.logger.isEnabledFor(level):
            self.logger.log(level, msg, *args, **kwargs)


def make_handler(kind: str) -> Any:
    """kazoo's handler: eventlet when the process is monkey-patched (Ryu), else threads; both
    with the cheaper `select` of backends/zookeeper/handlers.py."""
    if kind == "auto":
        kind = "eventlet" if eventlet_patched() else "threading"
    if kind == "eventlet":
        return polling_eventlet_handler()
    if kind == "threading":
        return PollingThreadingHandler()
    raise ConfigurationError(f"option handler={kind!r}: use auto, threading or eventlet")


class BoundedResult:
    """A kazoo async result whose `get()` gives up after the operation timeout."""

    def __init__(self, result: Any, timeout: float, timeout_error: type[BaseException]) -> None:
        self._result = result
        self._timeout = timeout
        self._timeout_error = timeout_error

    def get(self) -> Any:
        try:
            return self._result.get(timeout=self._timeout)
        except self._timeout_error:
            raise KazooOperationTimeout(f"no answer within {self._timeout} s") from None


class BoundedClient:
    """kazoo with a deadline on every call (`get`, `get_async`, ... as kazoo names them)."""

    _CALLS = frozenset({"get", "get_children", "exists", "create", "set", "delete", "sync",
                        "ensure_path"})

    def __init__(self, client: KazooClient, timeout: float) -> None:
        self.client = client
        self.timeout = timeout

    def __getattr__(self, name: str) -> Any:
        if name in self._CALLS:
            start = getattr(self.client, f"{name}_async")
            return lambda *args, **kwargs: self._bounded(start(*args, **kwargs)).get()
        if name.endswith("_async") and name[:-6] in self._CALLS:
            start = getattr(self.client, name)
            return lambda *args, **kwargs: self._bounded(start(*args, **kwargs))
        return getattr(self.client, name)

    def _bounded(self, result: Any) -> BoundedResult:
        return BoundedResult(result, self.timeout, self.client.handler.timeout_exception)

    def pipelined(self, items: Iterable[T], start: Callable[[T], BoundedResult]
                  ) -> list[tuple[T, Any]]:
        """Start `start(item)` for every item, PIPELINE_DEPTH in flight at a time, and return
        (item, result or the kazoo error it raised) in order. A transient error (connection
        gone, deadline passed) is raised: the whole step waits for the reconnect."""
        out: list[tuple[T, Any]] = []
        # a sliding window, not chunks in lockstep: each answer lets the next request go, so
        # the connection never idles waiting for the slowest answer of a chunk
        pending: collections.deque[tuple[T, BoundedResult]] = collections.deque()

        def settle_oldest() -> None:
            item, result = pending.popleft()
            try:
                out.append((item, result.get()))
            except TRANSIENT:
                raise
            except KazooException as exc:
                out.append((item, exc))

        for item in items:
            if len(pending) == PIPELINE_DEPTH:
                settle_oldest()
            pending.append((item, start(item)))
        while pending:
            settle_oldest()
        return out

    def multi(self, build: Callable[[Any], None]) -> list[Any]:
        """Commit one transaction filled by `build(transaction)`; its per-operation results
        (a created path, True, or the error of the operation that failed / RolledBackError)."""
        return self.multi_async(build).get()

    def multi_async(self, build: Callable[[Any], None]) -> BoundedResult:
        """`multi` without waiting: several transactions in flight at once."""
        transaction = self.client.transaction()
        build(transaction)
        return self._bounded(transaction.commit_async())


def chunks(items: Sequence[T], size: int = MULTI_SIZE) -> Iterable[Sequence[T]]:
    """`items` in slices of at most `size`."""
    for i in range(0, len(items), size):
        yield items[i:i + size]
