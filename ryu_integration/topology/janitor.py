"""Grace-period garbage collection of switches nobody owns: pure decisions, no I/O.

A switch's records (its `Switch`, its `Mastership`, every link with an end on it, the hosts on
it) outlive its master on purpose: after a crash the successor adopts them, so failover shows no
gap. But when *no* controller takes the switch over (it was unplugged, or every controller lost
it), they would live forever. `Janitor.plan()` finds such switches and, once one has stayed
unowned for `grace_period` seconds, deletes its records.

"Owned" means: the switch's `Mastership` record exists and its owner is a live member (the
mastership app withdraws the record when it resigns, and a crashed owner drops out of the member
list when its session expires). With `publish_mastership = false` there are no Mastership records;
then a switch counts as owned while the owner of its `Switch` record is a live member.

Every delete is fenced with the term of the record as the janitor saw it, so a record that a new
master re-published meanwhile (under a newer term) is never removed. Exactly one controller runs
the janitor at a time (the leader of the `topology-janitor` election); running it on several
would only cost duplicate reads.

A pass costs what changed, not the size of the network: it looks at the switches whose records
changed since the last pass (`touched`), at those already unowned, and at every switch only when
the set of live members changed (an owner may have left) or the view was replaced by a snapshot
(`recheck_all`). So the runtime must tell the janitor which switches each store change is about.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from coordination.records import Host, Link, Mastership, Record, Switch

from .publisher import Delete

#: `Janitor(ownership=...)`: how to tell that a switch is owned.
BY_MASTERSHIP = "mastership"
BY_SWITCH_OWNER = "switch-owner"


class StoredDomains(Protocol):
    """What the janitor reads from the view (`TopologyView` implements it)."""

    def domains(self) -> set[int]: ...

    def switch(self, dpid: int) -> Switch | None: ...

    def mastership(self, dpid: int) -> Mastership | None: ...

    def links_at(self, dpid: int) -> list[Link]: ...

    def hosts_on(self, dpid: int) -> list[Host]: ...


class Janitor:
    """Tracks since when each switch is unowned; `plan()` returns the deletes that are due."""

    def __init__(self, grace_period: float, ownership: str = BY_MASTERSHIP) -> None:
        if grace_period < 0:
            raise ValueError(f"grace_period must be >= 0, got {grace_period!r}")
        if ownership not in (BY_MASTERSHIP, BY_SWITCH_OWNER):
            raise ValueError(f"ownership must be {BY_MASTERSHIP!r} or {BY_SWITCH_OWNER!r}")
        self.grace_period = grace_period
        self.ownership = ownership
        self._unowned_since: dict[int, float] = {}
        self._touched: set[int] | None = None  # None: look at every switch at the next pass
        self._live: frozenset[str] | None = None  # the live members the last pass saw

    def touched(self, dpids: Iterable[int]) -> None:
        """Records about these switches changed: look at them at the next pass."""
        if self._touched is not None:
            self._touched.update(dpids)

    def recheck_all(self) -> None:
        """Look at every switch at the next pass (the view was replaced by a snapshot)."""
        self._touched = None

    def owned(self, stored: StoredDomains, dpid: int, live: set[str]) -> bool:
        if self.ownership == BY_MASTERSHIP:
            record: Record | None = stored.mastership(dpid)
        else:
            record = stored.switch(dpid)
        return record is not None and record.owner in live

    def plan(self, stored: StoredDomains, live: Iterable[str], now: float) -> list[Delete]:
        """Deletes for every switch unowned for at least the grace period (retried at every
        call until the records are gone)."""
        live_set = frozenset(live)
        if live_set != self._live:
            self._live, self._touched = live_set, None  # an owner may have come or gone
        look = stored.domains() if self._touched is None else self._touched
        look = look | self._unowned_since.keys()  # those with no records left are forgotten
        self._touched = set()
        out: list[Delete] = []
        for dpid in sorted(look):
            if self.owned(stored, dpid, live_set):
                self._unowned_since.pop(dpid, None)
                continue
            records = self._records(stored, dpid)
            if not records:  # nothing left about it
                self._unowned_since.pop(dpid, None)
                continue
            since = self._unowned_since.setdefault(dpid, now)
            if now - since >= self.grace_period:
                reason = "switch unowned for the grace period"
                out.extend(Delete(record, record.term, dpid, reason) for record in records)
        return out

    def ownership_written(self, record: Record) -> None:
        """The store reported a write of `record`. A master just wrote its ownership record
        (`Mastership`, or `Switch` in switch-owner mode), so the switch was owned at that
        moment, even if it is unowned again by the next pass: its grace period starts over.
        (Passes alone would miss an ownership shorter than the time between two of them.)"""
        kind = Mastership if self.ownership == BY_MASTERSHIP else Switch
        if isinstance(record, kind):
            self._unowned_since.pop(record.dpid, None)

    def unowned(self) -> dict[int, float]:
        """dpid -> since when (monotonic) it has been unowned."""
        return dict(self._unowned_since)

    def next_deadline(self) -> float | None:
        """When the next switch's grace period ends."""
        if not self._unowned_since:
            return None
        return min(self._unowned_since.values()) + self.grace_period

    @staticmethod
    def _records(stored: StoredDomains, dpid: int) -> list[Record]:
        """Every stored record about `dpid`: its switch, mastership, links and hosts."""
        records: list[Record] = [r for r in (stored.switch(dpid), stored.mastership(dpid))
                                 if r is not None]
        records.extend(stored.links_at(dpid))
        records.extend(stored.hosts_on(dpid))
        return records
