"""The conformance suite on the in-process memory driver (with its fault hooks)."""

from collections.abc import Iterator

import pytest

from coordination.testing import ConformanceSuite
from coordination.testing.backend import Backend, MemoryBackend


class TestMemory(ConformanceSuite):
    url = "memory://conformance"

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        yield MemoryBackend(self.url)
