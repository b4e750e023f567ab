"""Under eventlet, log records skip the thread lookup, unless a handler's format shows it."""

from __future__ import annotations

import logging

import pytest

from ryu_integration import compat


@pytest.fixture
def root_handler(monkeypatch):
    monkeypatch.setattr(logging, "logThreads", True)
    monkeypatch.setattr(compat, "uses_eventlet", lambda: True)
    handler = logging.StreamHandler()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def test_records_skip_the_thread_lookup_when_no_format_shows_it(root_handler) -> None:
    root_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    assert compat.skip_thread_lookups_in_logs() is True
    assert logging.logThreads is False
    assert logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None).threadName is None


def test_a_format_that_shows_the_thread_keeps_it(root_handler) -> None:
    root_handler.setFormatter(logging.Formatter("%(threadName)s %(message)s"))
    assert compat.skip_thread_lookups_in_logs() is False
    assert logging.logThreads is True


def test_native_threads_keep_it(root_handler, monkeypatch) -> None:
    monkeypatch.setattr(compat, "uses_eventlet", lambda: False)
    assert compat.skip_thread_lookups_in_logs() is False
    assert logging.logThreads is True
