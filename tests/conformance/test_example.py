"""The conformance suite on the example driver (`backends/example/`), and on a variant of it
that declares capabilities unsupported: their tests are skipped with the driver's reason, and
their calls raise `NotSupportedError` with it."""

from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from backends.example import ExampleCoordinator
from coordination.api import Coordinator
from coordination.options import COMMON_OPTIONS, resolve_options
from coordination.testing import ConformanceSuite
from coordination.testing.backend import Backend
from coordination.urls import parse_url


class TestExample(ConformanceSuite):
    url = "example://conformance"


class _ElectionsOnly(ExampleCoordinator):
    """The example driver without a topology store or leader listeners."""

    UNSUPPORTED: ClassVar[dict[str, str]] = {
        "topology": "this variant keeps no records",
        "leader_listeners": "this variant reports no leader changes",
    }


class _ElectionsOnlyBackend(Backend):
    """Connects `_ElectionsOnly` coordinators directly (the variant has no URL scheme)."""

    def connect(self, namespace: str, member_id: str, **options: Any) -> Coordinator:
        url = parse_url(self.url_for(namespace))
        resolved = resolve_options(dict(COMMON_OPTIONS), url.options, options)
        return _ElectionsOnly(url, member_id, resolved).start()

    def unsupported(self) -> dict[str, str]:
        return dict(_ElectionsOnly.UNSUPPORTED)


class TestExampleElectionsOnly(ConformanceSuite):
    url = "example://conformance-elections-only"

    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        yield _ElectionsOnlyBackend(self.url)
