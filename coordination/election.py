"""Elections: the backend-neutral half (callbacks, bookkeeping, session policy).

A driver subclasses `Election` and implements the `_driver_*` hooks against its store (four
required; `_driver_forget` defaults to nothing; `_driver_observe` and `_driver_read_candidates`
are capabilities "leader_listeners" and "candidates"). It reads the core's state through
`active_campaign`, `campaign_priority`, `observed`, `last_term` and `lock`, and reports outcomes
with `_elected(term)`, `_revoked()` and `_leader_seen(leadership)`; this class makes sure terms
only grow, that callbacks run on the coordinator's callback thread, and that a lost session revokes
leadership and re-enters the candidacy once a new session is up. Work on many elections at once
(`Coordinator.campaign_many`, `resign_many`, `read_leaders`) goes through the coordinator, whose
batch hooks a driver may override to use one round trip per batch.

A driver that could not finish a step (store unreachable, a list that kept moving) calls
`_unsettled()`: the coordinator's watchdog re-evaluates only such elections, so its periodic cost
does not grow with the number of elections.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .errors import ConfigurationError
from .names import validate_election_name
from .types import Candidate, Leadership

if TYPE_CHECKING:
    from .api import Coordinator

LOG = logging.getLogger(__name__)

#: Priorities are 0..MAX_PRIORITY; higher wins, ties go to the earliest candidate.
MAX_PRIORITY = 999_999

LeadershipCallback = Callable[[Leadership], None]
LeaderListener = Callable[[Leadership | None], None]


@dataclass(frozen=True)
class Campaign:
    priority: int
    on_elected: LeadershipCallback | None
    on_revoked: LeadershipCallback | None


@dataclass(frozen=True)
class CampaignRequest:
    """One entry of `Coordinator.campaign_many`: what `Election.campaign` takes, plus the name."""

    election: str
    priority: int = 0
    on_elected: LeadershipCallback | None = None
    on_revoked: LeadershipCallback | None = None


def check_priority(priority: object) -> int:
    """`priority` if it is a valid one, else ConfigurationError."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigurationError(f"priority must be an integer, got {priority!r}")
    if not 0 <= priority <= MAX_PRIORITY:
        raise ConfigurationError(f"priority must be in 0..{MAX_PRIORITY}, got {priority}")
    return priority


class Election(ABC):
    """One election (e.g. per datapath). Obtain with `Coordinator.election(name)`."""

    def __init__(self, coordinator: Coordinator, name: str) -> None:
        validate_election_name(name)
        self.coordinator = coordinator
        self.name = name
        self._lock = threading.RLock()
        self._campaign: Campaign | None = None
        self._leadership: Leadership | None = None
        self._last_term = 0
        self._listeners: list[LeaderListener] = []
        self._last_seen_leader: Leadership | None = None

    # ---- public API -------------------------------------------------------------------------

    def campaign(
        self,
        priority: int = 0,
        on_elected: LeadershipCallback | None = None,
        on_revoked: LeadershipCallback | None = None,
    ) -> None:
        """Enter the election. Callbacks get the `Leadership` (with its term) when this member
        becomes leader and when it stops being leader for any reason (resign, preemption by a
        higher-priority candidate, lost session). Returns once the candidacy is in the store."""
        self.coordinator.campaign_many(
            [CampaignRequest(self.name, priority, on_elected, on_revoked)])

    def resign(self) -> None:
        """Leave the election (idempotent). A leader's successor is elected at once."""
        self.coordinator.resign_many([self.name])

    def change_priority(self, priority: int) -> None:
        """Campaign on with `priority` and the same callbacks: the candidacy is re-entered.

        This is how a member hands an election over on purpose: a leader that lowers its
        priority below another candidate's is revoked and that candidate is elected under a new
        term; a follower that raises its priority above the leader's preempts it. A follower
        raised only to the leader's priority queues behind it (ties go to the earliest).
        ConfigurationError if this member does not campaign here."""
        check_priority(priority)
        with self._lock:
            campaign = self._campaign
        if campaign is None:
            raise ConfigurationError(f"not campaigning in {self.name!r}; campaign first")
        if campaign.priority == priority:
            return
        self.coordinator.resign_many([self.name])
        self.coordinator.campaign_many([CampaignRequest(self.name, priority, campaign.on_elected,
                                                        campaign.on_revoked)])

    def _begin_campaign(self, request: CampaignRequest) -> None:
        """Record the campaign (validated by the coordinator); the driver joins next."""
        with self._lock:
            if self._campaign is not None:
                raise ConfigurationError(f"already campaigning in {self.name!r}; resign first")
            self._campaign = Campaign(request.priority, request.on_elected, request.on_revoked)

    def _end_campaign(self) -> bool:
        """Drop the campaign and any leadership (firing on_revoked); True if there was one, so
        the driver must remove the candidacy."""
        with self._lock:
            campaign, self._campaign = self._campaign, None
            leadership, self._leadership = self._leadership, None
        if campaign is None:
            return False
        if leadership is not None:
            LOG.info("election %s: %s resigned, term %d", self.name, leadership.member_id,
                     leadership.term)
            self._fire(campaign.on_revoked, leadership)
        return True

    def leader(self) -> Leadership | None:
        """The current leader and its term, as the store says now; None if there is none."""
        return self._driver_read_leader()

    def candidates(self) -> list[Candidate]:
        """Every candidate, best first (the first one leads or is about to)."""
        self.coordinator._check_supported("candidates")
        return self._driver_read_candidates()

    @property
    def is_leader(self) -> bool:
        return self._leadership is not None

    @property
    def leadership(self) -> Leadership | None:
        """This member's leadership, if it leads."""
        return self._leadership

    @property
    def campaigning(self) -> bool:
        return self._campaign is not None

    @property
    def campaign_priority(self) -> int | None:
        """The priority this member campaigns with; None when it does not campaign. Drivers
        read it to re-create a vanished candidacy."""
        campaign = self._campaign
        return None if campaign is None else campaign.priority

    @property
    def observed(self) -> bool:
        """True while a leader listener is registered: the driver must report leader changes."""
        return bool(self._listeners)

    # ---- for drivers: what the core knows ------------------------------------------------

    @property
    def active_campaign(self) -> Campaign | None:
        """This member's campaign, None when it does not campaign. A new object for every
        campaign: a driver that settled an election for one compares it by identity, to drop
        a result that a resign or a re-entered campaign made stale meanwhile."""
        return self._campaign

    @property
    def last_term(self) -> int:
        """The highest term this member has led under here (`_elected` refuses any other)."""
        return self._last_term

    @property
    def lock(self) -> threading.RLock:
        """The election's lock, which guards the core's state; a driver may guard its own
        candidacy state with it too (never hold it across a store round trip)."""
        return self._lock

    def add_leader_listener(self, listener: LeaderListener) -> None:
        """Call `listener(Leadership | None)` whenever the leader changes (any member)."""
        self.coordinator._check_supported("leader_listeners")
        with self._lock:
            first = not self._listeners
            self._listeners.append(listener)
        if first:
            self._driver_observe()

    def remove_leader_listener(self, listener: LeaderListener) -> None:
        """Stop calling `listener` (no error if it was not registered)."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    # ---- for drivers ----------------------------------------------------------------------

    def _elected(self, term: int) -> None:
        """The driver established this member's leadership under `term`."""
        with self._lock:
            campaign = self._campaign
            if campaign is None:
                return
            if self._leadership is not None and self._leadership.term == term:
                return
            if term <= self._last_term:
                LOG.error("election %s: term %d does not exceed %d; not taking leadership",
                          self.name, term, self._last_term)
                return
            self._last_term = term
            if self._leadership is not None:  # re-established under a newer term
                self._fire(campaign.on_revoked, self._leadership)
            self._leadership = Leadership(self.coordinator.member_id, term)
            leadership = self._leadership
        LOG.info("election %s: %s elected, term %d", self.name, leadership.member_id, term)
        self._fire(campaign.on_elected, leadership)

    def _revoked(self) -> None:
        """This member's leadership ended (or the driver can no longer vouch for it)."""
        with self._lock:
            leadership, self._leadership = self._leadership, None
            campaign = self._campaign
        if leadership is not None:
            LOG.info("election %s: %s revoked, term %d", self.name, leadership.member_id,
                     leadership.term)
            if campaign is not None:
                self._fire(campaign.on_revoked, leadership)

    def _leader_seen(self, leadership: Leadership | None) -> None:
        """The driver observed who leads now; listeners hear about changes only."""
        with self._lock:
            if leadership == self._last_seen_leader:
                return
            self._last_seen_leader = leadership
            listeners = list(self._listeners)
        for listener in listeners:
            self.coordinator._callbacks.submit(listener, leadership)

    def _fire(self, callback: LeadershipCallback | None, leadership: Leadership) -> None:
        if callback is not None:
            self.coordinator._callbacks.submit(callback, leadership)

    def _unsettled(self) -> None:
        """A step could not finish: the watchdog re-evaluates this election at its next tick."""
        self.coordinator._mark_unsettled(self.name)

    # ---- session policy (called by the coordinator) -----------------------------------------

    def _on_session_lost(self) -> None:
        self._revoked()
        self._driver_forget()

    def _on_resumed(self) -> None:
        if self._campaign is not None or self._listeners:
            self._driver_reevaluate()

    def _on_watchdog(self) -> None:
        if self._campaign is not None:
            self._driver_reevaluate()

    # ---- driver hooks -----------------------------------------------------------------------

    @abstractmethod
    def _driver_join(self, priority: int) -> None:
        """Create this member's candidacy and start evaluating (asynchronously is fine)."""

    @abstractmethod
    def _driver_leave(self) -> None:
        """Remove this member's candidacy (synchronously: a successor may take over at once)."""

    def _driver_forget(self) -> None:
        """The session is gone: drop local candidacy state without touching the store. Default:
        nothing, for a driver that keeps no such state (its candidacies went with the session)."""
        return

    @abstractmethod
    def _driver_reevaluate(self) -> None:
        """Re-read the election and re-arm watches (after a reconnect, or from the watchdog)."""

    @abstractmethod
    def _driver_read_leader(self) -> Leadership | None: ...

    # ---- optional hooks (the coordinator lists what it leaves out in UNSUPPORTED) -----------

    def _driver_observe(self) -> None:
        """Start reporting the leader to `_leader_seen` (capability "leader_listeners")."""
        raise self.coordinator._unsupported("leader_listeners")

    def _driver_read_candidates(self) -> list[Candidate]:
        """Every candidate, best first (capability "candidates")."""
        raise self.coordinator._unsupported("candidates")


class ElectionSteps(Protocol):
    """What a batching driver's coordinator exposes as `engine`: queue an election for its
    next evaluation batch, or for its next report to leader listeners."""

    def evaluate(self, election: Election) -> None: ...

    def observe(self, election: Election) -> None: ...


class BatchedElection(Election):
    """An election whose driver does its store work in batches: the per-election hooks route to
    the coordinator's batch hooks (`_driver_join_many`, `_driver_leave_many`,
    `_driver_read_leaders`) and to its `engine` (`ElectionSteps`), so that logic is written once,
    there. A driver overrides what it does otherwise (e.g. reads from a local store)."""

    @property
    def _engine(self) -> ElectionSteps:
        return self.coordinator.engine  # type: ignore[attr-defined]

    def _driver_join(self, priority: int) -> None:
        self.coordinator._driver_join_many([(self, priority)])

    def _driver_leave(self) -> None:
        self.coordinator._driver_leave_many([self])

    def _driver_reevaluate(self) -> None:
        self._engine.evaluate(self)
        if self._listeners:
            self._engine.observe(self)

    def _driver_observe(self) -> None:
        self._engine.observe(self)

    def _driver_read_leader(self) -> Leadership | None:
        return self.coordinator._driver_read_leaders([self])[self.name]
