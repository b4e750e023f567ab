"""Driver conformance kit: `ConformanceSuite` (pytest) plus the helpers it uses.

A third-party driver runs the whole suite against its own server with:

    from coordination.testing import ConformanceSuite

    class TestMyDriver(ConformanceSuite):
        url = "mydriver://127.0.0.1:1234/conformance"

Override the `backend` fixture with a `Backend` subclass to enable the fault tests.
"""

from .backend import Backend
from .conformance import ConformanceSuite, requires
from .recorder import Recorder

__all__ = ["Backend", "ConformanceSuite", "Recorder", "requires"]
