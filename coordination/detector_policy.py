"""The failure detector's thresholds and its damping of flapping members."""

from __future__ import annotations

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

    @property
    def bound(self) -> float:
        """Seconds of silence after which a peer is declared dead."""
        return self.interval * self.misses


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
