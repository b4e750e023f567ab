"""Suite-wide hooks: the per-backend summary of the conformance matrix and the driver tests."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import pytest

pytest_plugins = ["tests.servers.pytest_plugin"]

_MATRIX: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))


def _backend_of(nodeid: str) -> str | None:
    """`tests/conformance/test_zookeeper.py::TestZooKeeperEnsemble::test_x` -> `ZooKeeperEnsemble`;
    `tests/drivers/etcd/test_unit.py::test_x` -> `etcd (driver tests)`."""
    if nodeid.startswith("tests/drivers/"):
        return f"{nodeid.split('/')[2]} (driver tests)"
    if not nodeid.startswith("tests/conformance/"):
        return None
    parts = nodeid.split("::")
    if len(parts) > 2:
        return parts[1].removeprefix("Test")
    module = parts[0].rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
    return f"{module} (module tests)"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    backend = _backend_of(report.nodeid)
    if backend is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _MATRIX[backend][report.outcome] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _MATRIX:
        return
    terminalreporter.section("conformance matrix and driver tests (per backend)")
    for backend, counts in sorted(_MATRIX.items()):
        terminalreporter.write_line(
            f"{backend:<28} passed {counts['passed']:>3}  failed {counts['failed']:>3}  "
            f"skipped {counts['skipped']:>3}"
        )
