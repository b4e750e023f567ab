"""Typed inputs of the balancer glue (`balancer_glue`) for the mastership app's event loop.

As `inputs`: posted from the coordinator's callback thread and the balancer's store thread to
the app's own loop, where one handler per class feeds `Balancer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from coordination import balancing
from coordination.records import Rebalance

from ..compat import EventBase


@dataclass(eq=False)
class BalancerLeadership(EventBase):
    """We became (`leading`) or stopped being the cluster's balancer."""

    leading: bool


@dataclass(eq=False)
class RebalanceAsked(EventBase):
    """A `rebalance` record changed: `request` (a controller joined, left or reports its switch
    connections) or `forced` (`coordctl balance`)."""

    record: Rebalance


@dataclass(eq=False)
class MembersRead(EventBase):
    """The live controllers as read from the store (None: the read failed), and the capacity
    each advertises."""

    members: frozenset[str] | None
    capacities: Mapping[str, int] = field(default_factory=dict)


@dataclass(eq=False)
class PlanReady(EventBase):
    """A plan computed from the store (None: the store could not be read)."""

    plan: balancing.Plan | None
    reason: str
    #: the plan was put off (a live controller is connected to no switch yet): ask again later
    deferred: bool = False


@dataclass(eq=False)
class MoveAsked(EventBase):
    """Our move request for `dpid` was written (`ok`) or refused."""

    dpid: int
    ok: bool
