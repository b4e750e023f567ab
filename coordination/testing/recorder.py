"""Collects callback arguments and lets a test wait for a condition on them, without polling."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Recorder:
    """A callable that records what it is called with; `wait_for` blocks until a predicate on
    the recorded items holds (woken by each new item), or fails after `timeout` seconds."""

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.items: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, item: Any = None) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[Any]], bool], timeout: float = 10.0) -> list[Any]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.items), timeout):
                raise AssertionError(f"{self.name}: condition not met within {timeout} s; "
                                     f"got {self.items!r}")
            return list(self.items)

    def wait_count(self, count: int, timeout: float = 10.0) -> list[Any]:
        return self.wait_for(lambda items: len(items) >= count, timeout)

    @property
    def last(self) -> Any:
        with self._cond:
            return self.items[-1] if self.items else None
