"""Elections in the embedded store.

A candidacy is a row keyed by a `seq` (the store revision of the transaction that created it);
the transaction that adds or removes a candidacy also settles the election (priority, then the
earliest seq) and, when the leader changes, draws its term from the global revision counter. So
this module only writes candidacies in batches and applies what the coordinator's worker reads
after each change: leadership is ours exactly when the election's leader seq is our candidacy's.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from coordination.election import BatchedElection, Election
from coordination.errors import CoordinationError, OperationTimeoutError, SessionLostError
from coordination.types import Candidate, Leadership

from .db import LeaderRow, StoreUnusableError, Txn

if TYPE_CHECKING:
    from .coordinator import EmbeddedCoordinator

LOG = logging.getLogger(__name__)


class EmbeddedElection(BatchedElection):
    """An election in the embedded store: its candidacy's seq and the local reads."""

    coordinator: EmbeddedCoordinator

    def __init__(self, coordinator: EmbeddedCoordinator, name: str) -> None:
        super().__init__(coordinator, name)
        #: The seq (a store revision) of this member's live candidacy, None when it has none.
        #: Leadership is ours only if the election's leader_seq is exactly this.
        self.seq: int | None = None

    def _driver_forget(self) -> None:
        self.seq = None

    def _driver_reevaluate(self) -> None:
        self.coordinator.worker.submit(reevaluate, self)

    def _driver_observe(self) -> None:
        self.coordinator.mark_dirty(self.name)

    def _driver_read_leader(self) -> Leadership | None:
        return self.coordinator.read(lambda db: db.leader(self.name))

    def _driver_read_candidates(self) -> list[Candidate]:
        return self.coordinator.read(lambda db: db.candidates(self.name))


def join_many(coordinator: EmbeddedCoordinator, joins: list[tuple[Election, int]]) -> None:
    """Every candidacy in one write transaction (one lock, one commit, one notification), each
    election settled in it. On the worker (re-campaigns) a failure marks the elections
    unsettled for the watchdog; from a caller it raises."""
    own = [(e, p) for e, p in joins if isinstance(e, EmbeddedElection)]
    if not own:
        return
    token = coordinator.session_token()

    def op(txn: Txn) -> list[int]:
        return [txn.join(e.name, token, coordinator.member_id, p) for e, p in own]

    try:
        seqs = coordinator.write(op)
    except CoordinationError as exc:
        if not coordinator.worker.in_executor():
            raise  # a campaign call: the caller hears about it
        LOG.warning("re-campaigning in %d elections failed (%s); the watchdog retries",
                    len(own), exc)
        for election, _ in own:
            election._unsettled()
        return
    for (election, _), seq in zip(own, seqs, strict=True):
        election.seq = seq
    coordinator.mark_dirty(*(e.name for e, _ in own))


def leave_many(coordinator: EmbeddedCoordinator, elections: list[Election]) -> None:
    """Every candidacy removed in one write transaction; successors are settled in it. A lost
    session's candidacies are gone already."""
    own = [e for e in elections if isinstance(e, EmbeddedElection)]
    for election in own:
        election.seq = None
    if not own or not coordinator.has_session():
        return
    token = coordinator.session_token()

    def op(txn: Txn) -> None:
        for election in own:
            txn.leave(election.name, token)

    with contextlib.suppress(SessionLostError):
        coordinator.write(op)


def reevaluate(election: EmbeddedElection) -> None:
    """Watchdog (worker thread): re-create a vanished candidacy, then re-read the election. The
    store is a local file that a hand or a wipe can change behind the session's back."""
    coordinator = election.coordinator
    priority = election.campaign_priority
    if priority is not None and coordinator.has_session():
        try:
            present = coordinator.read(lambda db: db.has_candidacy(election.name, election.seq),
                                       check_identity=True)
        except StoreUnusableError:
            return  # the coordinator is recovering the store
        except OperationTimeoutError:
            present = True  # unknown: the next watchdog tick looks again
        if not present:
            LOG.warning("election %s: our candidacy vanished; campaigning again", election.name)
            election.seq = None
            join_many(coordinator, [(election, priority)])  # on the worker: logs, never raises
    coordinator.mark_dirty(election.name)


def apply_leader_row(election: EmbeddedElection, row: LeaderRow) -> None:
    """Report what the store says about `election` (worker thread)."""
    if row.seq is not None and row.seq == election.seq and election.campaigning:
        election._elected(row.term)
    elif election.is_leader:
        election._revoked()
    if election.observed:
        member = row.member_id
        election._leader_seen(Leadership(member, row.term) if member is not None else None)
