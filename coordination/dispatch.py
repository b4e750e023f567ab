"""Executors: one thread that runs submitted work in order, and one that also batches it.

Drivers run their store logic on one (never inside a client library's watch or state callback,
where blocking calls deadlock: kazoo #381/#426), and the coordinator delivers user callbacks on
another, so a slow callback never stalls the store client.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from .errors import ClosedError, OperationTimeoutError

LOG = logging.getLogger(__name__)
T = TypeVar("T")
_STOP = object()


class SerialExecutor:
    """Runs callables one at a time, in submission order, on a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        """Queue `func`; errors it raises are logged (and set on the returned future)."""
        future: Future[Any] = Future()
        if self._closed:
            future.set_exception(ClosedError(f"{self.name} is stopped"))
            return future
        self._queue.put((future, func, args, kwargs))
        return future

    def call(self, func: Callable[..., T], *args: Any, timeout: float = 30.0, **kwargs: Any) -> T:
        """Run `func` on the executor and wait for its result (never call from the executor)."""
        if self.in_executor():
            return func(*args, **kwargs)
        future = self.submit(func, *args, **kwargs)
        try:
            return future.result(timeout)
        except TimeoutError:
            raise OperationTimeoutError(f"{self.name}: no result within {timeout} s") from None

    def in_executor(self) -> bool:
        return threading.current_thread() is self._thread

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is queued, then stop the thread (bounded by `timeout`)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        if not self.in_executor():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, func, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(func(*args, **kwargs))
            except BaseException as exc:  # keep the executor alive whatever a task does
                LOG.exception("%s: task %r failed", self.name, getattr(func, "__qualname__", func))
                future.set_exception(exc)


class BatchingExecutor:
    """One thread that runs queued operations in submission order, handing each run of
    consecutive operations of one kind to that kind's handler as one list.

    For work that a store can batch: a thousand campaigns queued while the thread was busy
    become one `campaign_many` call, yet a resign queued between two campaigns still runs
    between them. `submit(func)` runs one callable in order, unbatched.
    """

    def __init__(self, name: str, handlers: dict[str, Callable[[list[Any]], None]]) -> None:
        self.name = name
        self._handlers = handlers
        self._items: list[tuple[str | None, Any]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, kind: str, item: Any) -> None:
        """Queue `item` for the handler of `kind` (dropped once stopped)."""
        with self._cond:
            if self._closed:
                return
            self._items.append((kind, item))
            self._cond.notify()

    def submit(self, func: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue one call, in order with the batched items; its result on the future."""
        future: Future[Any] = Future()
        with self._cond:
            if self._closed:
                future.set_exception(ClosedError(f"{self.name} is stopped"))
                return future
            self._items.append((None, (future, func, args)))
            self._cond.notify()
        return future

    def stop(self, timeout: float = 5.0) -> None:
        """Finish what is queued, then stop the thread (bounded by `timeout`)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._closed:
                    self._cond.wait()
                items, self._items = self._items, []
                if not items and self._closed:
                    return
            start = 0
            while start < len(items):
                kind = items[start][0]
                end = start + 1
                if kind is not None:
                    while end < len(items) and items[end][0] == kind:
                        end += 1
                self._run_one(kind, [item for _, item in items[start:end]])
                start = end

    def _run_one(self, kind: str | None, batch: list[Any]) -> None:
        if kind is None:
            future, func, args = batch[0]
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(func(*args))
            except BaseException as exc:  # keep the thread alive whatever a task does
                LOG.exception("%s: task %r failed", self.name, getattr(func, "__qualname__", func))
                future.set_exception(exc)
            return
        try:
            self._handlers[kind](batch)
        except Exception:  # keep the thread alive whatever a handler does
            LOG.exception("%s: %d %s item(s) failed", self.name, len(batch), kind)
