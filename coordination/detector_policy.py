"""The failure detector's thresholds, its damping of flapping members and its silence bound."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class DetectorSettings:
    """Thresholds of one detector (see the module docstring)."""

    interval: float = 0.1
    misses: int = 10
    host: str = "127.0.0.1"
    port: int = 0
    damping_window: float = 30.0
    damping_backoff: float = 120.0
    #: the longest a busy peer's silence bound may grow to (`SilenceBound`); None: never grows
    ceiling: float | None = None

    @property
    def bound(self) -> float:
        """Seconds of silence after which a peer is declared dead (a busy peer: `SilenceBound`)."""
        return self.interval * self.misses


class SilenceBound:
    """How long one peer may be silent before it is declared dead.

    `floor` (interval x misses), or `factor` times the longest gap between its heartbeats in the
    last `window` seconds if that is longer, but never more than `ceiling` (the session timeout:
    beyond it the store decides anyway). Why: a controller that is alive but busy (thousands of
    switches connecting at once on a loaded machine) sends its heartbeats late, and declaring it
    dead makes it re-campaign for every switch, which loads it further. Its recent gaps show
    that it is slow, not stopped; a process stopped or cut off while its heartbeats were regular
    is still declared at the floor (the phi-accrual detectors of Cassandra and Akka adapt to the
    observed heartbeat history for the same reason).
    """

    def __init__(self, floor: float, ceiling: float | None, window: float = 30.0,
                 factor: float = 2.0) -> None:
        self.floor = floor
        self.ceiling = max(floor, ceiling) if ceiling is not None else floor
        self.window = window
        self.factor = factor
        self._last: float | None = None
        #: (when, gap) of the gaps longer than the floor allows for, oldest first
        self._long: deque[tuple[float, float]] = deque()

    def heard(self, now: float) -> None:
        """A heartbeat (or any frame) arrived from the peer at `now`."""
        if self._last is not None:
            gap = now - self._last
            if self.factor * gap > self.floor:
                while self._long and self._long[-1][1] <= gap:
                    self._long.pop()  # a shorter earlier gap never decides again
                self._long.append((now, gap))
        self._last = now

    def bound(self, now: float) -> float:
        """Seconds of silence after which the peer is declared dead, as of `now`."""
        while self._long and now - self._long[0][0] > self.window:
            self._long.popleft()
        longest = self._long[0][1] if self._long else 0.0
        return min(self.ceiling, max(self.floor, self.factor * longest))


class Damping:
    """Remembers when each member was declared dead. A member declared dead again within
    `window` seconds of a previous declaration flaps: it is not acted on (not evicted) for
    `backoff` seconds, and neither is any declaration of it meanwhile."""

    def __init__(self, window: float, backoff: float) -> None:
        self.window = window
        self.backoff = backoff
        self._declared: dict[str, list[float]] = {}
        self._backoff_until: dict[str, float] = {}

    def declare(self, member_id: str, now: float) -> tuple[str, float]:
        """Record a declaration: ("act", 0), ("flapping", backoff seconds), or ("damped",
        seconds of back-off left)."""
        history = [t for t in self._declared.get(member_id, []) if now - t < self.window]
        self._declared[member_id] = [*history, now]
        until = self._backoff_until.get(member_id, 0.0)
        if now < until:
            return "damped", until - now
        if history:
            self._backoff_until[member_id] = now + self.backoff
            return "flapping", self.backoff
        return "act", 0.0


#: What a declaration rests on. CLOSED: the peer's kernel closed the connection (a FIN, no
#: goodbye): its process died. RESET: the connection was reset (ECONNRESET, ECONNABORTED, a
#: failed send): a process that died with unread input, or a firewall, a conntrack flush or
#: `ss -K` on the path. SILENCE: its heartbeats stopped (stopped, hung, or cut off).
CLOSED, RESET, SILENCE = "closed", "reset", "silence"


def hears_majority(heard: int, members: int) -> bool:
    """Whether a member that hears from `heard` members (itself included) out of `members`
    in all is on the majority side of any partition: a strict majority, so two halves of an
    even split are both minorities."""
    return 2 * heard > members


def may_evict(evidence: str, heard: int, members: int) -> bool:
    """Whether a declaration may lead to an eviction. A death the kernel vouches for (CLOSED,
    or a lone RESET) always may: that is the fast path for a crash, in clusters of any size.
    A silence only on the majority side: a member cut off from its peers (but not from the
    store) hears nobody and would otherwise evict every one of them, while they, who still
    hear each other, evict it."""
    return evidence in (CLOSED, RESET) or hears_majority(heard, members)


class ResetBurst:
    """Remembers when each peer's connection was last reset. Resets of several peers within
    `window` seconds (one detection bound) are a link problem on this side (a firewall or
    conntrack flush, `ss -K`, a cable), not several processes dying at once: such resets are
    judged as silence (`may_evict`'s majority rule) instead of as deaths."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._at: dict[str, float] = {}

    def record(self, member_id: str, now: float) -> int:
        """Record a reset of `member_id`'s connection; how many distinct peers (it included)
        had a connection reset within the window."""
        self._at = {m: t for m, t in self._at.items() if now - t <= self.window}
        self._at[member_id] = now
        return len(self._at)

    def peers(self, now: float) -> int:
        """How many distinct peers had a connection reset within the window up to `now`."""
        return sum(1 for t in self._at.values() if now - t <= self.window)


def evidence_of(kind: str, resets_in_window: int) -> str:
    """The evidence a declaration rests on: a RESET among resets of several peers within one
    bound counts as SILENCE (see `ResetBurst`)."""
    return SILENCE if kind == RESET and resets_in_window > 1 else kind
