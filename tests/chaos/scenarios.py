"""Chaos scenarios: which faults run in which order, and the results table.

What: the short form runs every fault kind once, in a fixed order; the soak repeats all kinds
in a seeded random order until at least ``faults`` were injected. After each fault the rig must
settle again (one master per bridge, slaves besides, a packet delivered on every bridge) within
a bound, or the run fails there. ``table()`` renders, per fault kind: count, invariant
violations, the longest interval a switch had no confirmed master, and that kind's bound.
Why: the pytest entry, ``make chaos`` and the docs share one definition of a run.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from .faults import FAULTS
from .monitor import BETWEEN
from .rig import ChaosRig

SHORT: tuple[str, ...] = tuple(FAULTS)


def plan(soak_faults: int = 0, seed: int = 0) -> Iterator[str]:
    """Fault kinds to run: each once (short form), or ``soak_faults`` of them, shuffled."""
    if not soak_faults:
        yield from SHORT
        return
    rng = random.Random(seed)
    done = 0
    while done < soak_faults:
        kinds = list(SHORT)
        rng.shuffle(kinds)
        yield from kinds[: soak_faults - done]
        done += len(kinds)


def run(rig: ChaosRig, kinds: Iterable[str],
        log: Callable[[str], None] = lambda _s: None, table_every: int = 0) -> None:
    """Inject each fault in turn; after each, wait (bounded) for the rig to settle again.
    With ``table_every``, log the table every that many faults (progress of a soak)."""
    monitor = rig.monitor
    counts: dict[str, int] = {}
    for n, kind in enumerate(kinds, 1):
        fault = FAULTS[kind]
        round_no = counts.get(kind, 0)
        counts[kind] = round_no + 1
        monitor.begin_fault(kind, fault.bound(rig.timing))
        t0 = time.monotonic()
        try:
            fault.run(rig, round_no)
            masters = rig.wait_settled()
        finally:
            monitor.end_fault(rig.timing.margin)
        log(f"#{n} {kind}: settled in {time.monotonic() - t0:.1f} s, masters "
            f"{sorted(masters.items())}, violations so far {len(monitor.violations)}")
        if table_every and n % table_every == 0:
            log(table(rig))


def table(rig: ChaosRig) -> str:
    """Per fault kind: count, violations, longest masterless interval, bound."""
    m = rig.monitor
    head = (f"{'fault (' + rig.backend + ')':<34} {'count':>5} {'violations':>10} "
            f"{'longest masterless':>18} {'bound':>7}")
    lines = [head, "-" * len(head)]
    with m.cond:
        for kind in SHORT:
            s = m.stats.get(kind)
            if s is None or not s.count:
                continue
            lines.append(f"{kind:<34} {s.count:>5} {s.violations:>10} "
                         f"{s.longest_masterless:>16.2f} s {s.bound:>5.1f} s")
        between = m.stats.get(BETWEEN)
        if between is not None and (between.violations or between.longest_masterless):
            lines.append(f"{BETWEEN:<34} {'-':>5} {between.violations:>10} "
                         f"{between.longest_masterless:>16.2f} s {between.bound:>5.1f} s")
        other = sum(s.violations for k, s in m.stats.items() if k not in FAULTS)
        delivered = len(m.delivered)
        sent = rig.traffic.sent if rig.traffic else 0
        lines.append(f"violations outside faults: {other}; packets sent {sent}, distinct "
                     f"delivered {delivered}; writes accepted {m.writes_accepted}, refused "
                     f"IS_SLAVE {m.writes_refused}, in the successor window {m.window_writes}; "
                     f"switch records in the store {sorted(m.topology_switches)}")
        tracebacks = {c.name: _tracebacks(c.log_path) for c in rig.controllers}
        lines.append(f"tracebacks in the controllers' logs: {tracebacks}")
        for s_kind, s in m.stats.items():
            for note in s.notes[:3]:
                lines.append(f"note ({s_kind}): {note}")
            if len(s.notes) > 3:
                lines.append(f"note ({s_kind}): ... and {len(s.notes) - 3} more")
    return "\n".join(lines)


def _tracebacks(path: Path) -> int:
    """How many Python tracebacks a controller logged (a crash-free run logs none)."""
    try:
        with open(path, errors="replace") as f:
            return sum(line.startswith("Traceback") for line in f)
    except OSError:
        return 0
