"""The suite's one rule for missing servers: skip locally, fail under CI=true."""

from __future__ import annotations

import pytest

from tests.requirements import require_tool


def test_missing_tool_skips_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-server.*'some-package'"):
        require_tool("no-such-server", "some-package")


def test_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_tool("/nonexistent/zookeeper.jar", "zookeeper")


def test_present_tool_is_returned() -> None:
    assert require_tool("sh", "dash").endswith("/sh")
