"""Example driver (`example://name`): the smallest complete driver, to read and to copy.

Coordinators of one `example://name` in one process share a namespace held in memory. Read
`store`, then `election`, then `coordinator`; docs/writing-a-driver.md walks through them."""

from .coordinator import ExampleCoordinator

__all__ = ["ExampleCoordinator"]
