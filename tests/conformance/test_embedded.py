"""The conformance suite on the embedded driver (a fresh store directory per test).

Faults: `expire` is real for this backend (the session's lock and sockets vanish as in a crash,
the peers reap it, the coordinator reports LOST and opens a new session). An embedded session has
no connection that can drop while the session survives, so SUSPENDED never happens and the two
suspend tests are skipped, saying why.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from coordination import Coordinator
from coordination.testing import ConformanceSuite
from coordination.testing.backend import Backend

NO_SUSPEND = ("embedded sessions are never SUSPENDED: a session lives exactly as long as its "
              "process's flock, with no connection that could drop while it survives")


class EmbeddedBackend(Backend):
    """Every test namespace is a subdirectory of one temporary directory."""

    supports_faults = True

    def suspend(self, coordinator: Coordinator) -> None:
        pytest.skip(NO_SUSPEND)

    def resume(self, coordinator: Coordinator) -> None:
        pytest.skip(NO_SUSPEND)

    def expire(self, coordinator: Coordinator) -> None:
        coordinator.expire()  # type: ignore[attr-defined]


class TestEmbedded(ConformanceSuite):
    @pytest.fixture
    def backend(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
        backend = EmbeddedBackend(f"embedded://{tmp_path_factory.mktemp('embedded')}")
        yield backend
        backend.close()
