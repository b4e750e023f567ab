"""Where a switch's leader read is answered from: pure bookkeeping, no framework, no I/O.

The mastership machine asks for its switch's leader (`ReadLeader`) whenever it must know it:
a new connection, a role request the switch refused or left unanswered, a backoff. Reading
the store for each ask would cost thousands of reads at scale for answers the app already
has. So an ask is answered, in this order:
1. by the last report of the switch's election listener: what the store says, pushed by its
   watches (no I/O), unless the ask is `fresh` (the switch has just contradicted that report);
2. for a switch whose listener is new, by that listener's first report, waited for at most
   `first_report_wait` seconds from when the store worker registered it (`registered`): at
   5,000 switches the joins alone can take longer than that from the switch's connection;
3. by the store read already in flight for the switch, unless the ask is `fresh` or from a
   newer connection: those fold into one more read after it;
4. by a new store read.
The app's event loop owns an instance and performs what it answers (`Answer`).
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterable

from coordination import Leadership

#: Seconds a new switch's leader read waits for its election listener's first report (from
#: when the store worker registered the listener and entered the campaign) before it reads
#: the store: a safety net. The report is pushed and usually comes within milliseconds;
#: under load it can take seconds, and reading sooner only adds to the load (at 5,000
#: switches a 1 s wait tripled the store's requests).
FIRST_REPORT_WAIT = 10.0


class Answer(enum.Enum):
    """What an ask becomes."""

    LOCAL = "answer from the listener's last report"
    WAIT = "wait for the listener's first report"
    FOLDED = "answered by the read in flight, or by one more after it"
    READ = "read the store now"
    NONE = "no store reader: dropped"


class LeaderReads:
    """Per-switch state of leader reads (see the module docstring). Times are the caller's
    monotonic clock."""

    def __init__(self, first_report_wait: float = FIRST_REPORT_WAIT) -> None:
        self.first_report_wait = first_report_wait
        #: dpid -> the leader its listener last reported (None: nobody leads)
        self.seen: dict[int, Leadership | None] = {}
        #: dpid -> connection epochs waiting for the listener's first report
        self._unreported: dict[int, list[int]] = {}
        self._listening: set[int] = set()
        #: (deadline, dpid) in order: past it, a switch still unreported is read from the store
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        #: dpid -> (epoch the read in flight was asked for, whether an ask since needs another)
        self._in_flight: dict[int, tuple[int, bool]] = {}

    def listening(self, dpid: int, connected: bool) -> None:
        """A campaign for `dpid` is queued, and the first one registers its listener. For a
        new listener, while the session is `connected`, asks wait for its first report."""
        if dpid in self._listening:
            return
        self._listening.add(dpid)
        if connected:
            self._unreported[dpid] = []

    def registered(self, dpids: Iterable[int], now: float) -> None:
        """The store worker registered these listeners: the wait for their first report
        starts now."""
        deadline = now + self.first_report_wait
        for dpid in dpids:
            if dpid in self._unreported:
                self._deadlines.append((deadline, dpid))

    def ask(self, dpid: int, epoch: int, fresh: bool = False, can_read: bool = True) -> Answer:
        """Connection `epoch` of `dpid` asks for its leader."""
        if dpid in self.seen and not fresh:
            return Answer.LOCAL
        if dpid in self._unreported and not fresh:
            self._unreported[dpid].append(epoch)
            return Answer.WAIT
        if dpid in self._in_flight:
            asked, again = self._in_flight[dpid]
            self._in_flight[dpid] = (asked, again or fresh or epoch != asked)
            return Answer.FOLDED
        if not can_read:
            return Answer.NONE
        self._in_flight[dpid] = (epoch, False)
        return Answer.READ

    def read_done(self, dpid: int) -> bool:
        """The store read of `dpid` in flight has answered: True if an ask made meanwhile
        needs one more (the caller asks again for the current connection)."""
        return self._in_flight.pop(dpid, (0, False))[1]

    def reported(self, dpid: int, leadership: Leadership | None, connected: bool) -> list[int]:
        """The listener of `dpid` reported. Returns the epochs that waited for it: while
        `connected` they are answered by this report (now in `seen`); otherwise the caller
        asks again for each (watches may miss changes while the session is down)."""
        waiting = self._unreported.pop(dpid, [])
        if connected:
            self.seen[dpid] = leadership
        return waiting

    def overdue(self, now: float) -> list[tuple[int, int]]:
        """(dpid, epoch) of the asks whose switch's first report is overdue: the caller asks
        again for each, now from the store."""
        out = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, dpid = self._deadlines.popleft()
            out.extend((dpid, epoch) for epoch in self._unreported.pop(dpid, ()))
        return out

    def session_down(self) -> list[tuple[int, int]]:
        """The session is not CONNECTED: watches may miss changes, so reports no longer answer
        asks. Returns the (dpid, epoch) that waited for a first report: the caller asks again
        for each."""
        self.seen.clear()
        unreported, self._unreported = self._unreported, {}
        return [(dpid, epoch) for dpid, epochs in unreported.items() for epoch in epochs]
