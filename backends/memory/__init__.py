"""In-process driver (`memory://name`): the reference semantics, for tests and single processes.

Coordinators connected to the same `memory://name` in one process share one `MemoryServer`: a
global revision counter (terms), sessions, elections and records, behaving like one ZooKeeper
ensemble would. It also exposes fault hooks (`suspend`, `resume`, `expire`) so the conformance
suite can exercise the session policy without a network.
"""

from .coordinator import MemoryCoordinator

__all__ = ["MemoryCoordinator"]
