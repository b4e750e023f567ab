"""Move records: the store half of a planned handover (docs/balancing.md, "Planned handover").

What: one record per switch, `move/<dpid>` = `coordination.Move(dpid, id, source, target,
step)`, created by whoever asks for the move (`coordctl move`, the balancer, a controller
stopping) and then advanced only by compare-and-set, by the two controllers involved, so that
of two racing writers (the source's `aborted`, the target's `taken`) exactly one wins.
Why here, outside the `mastership` package: `coordctl` needs it without Ryu or os-ken (importing
that package loads the app, and so a framework); it only uses the public `Coordinator` /
`TopologyStore` API, so it works on every backend.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from coordination.api import Coordinator
from coordination.errors import ConfigurationError, CoordinationError
from coordination.names import shown
from coordination.records import Move, dpid_key

#: Steps after which a record no longer binds anyone: a new move may replace it.
FINAL_STEPS = frozenset({"taken", "aborted"})
_MAX_DPID = 2**64 - 1


def election_name(dpid: int) -> str:
    """The election of one datapath (as `mastership.guard.election_name`)."""
    return f"dpid-{dpid:016x}"


def parse_dpid(text: str) -> int:
    """A datapath id as `coordctl` takes it: 16 hex digits (as the logs print it), `0x...`, or
    a decimal number. Anything else is a one-line ConfigurationError."""
    raw = str(text).strip()
    try:
        if raw.lower().startswith("0x"):
            value = int(raw, 0)
        elif len(raw) == 16:
            value = int(raw, 16)
        elif raw.isascii() and raw.isdigit():
            value = int(raw, 10)
        else:
            raise ValueError(raw)
    except ValueError:
        raise ConfigurationError(f"bad DPID {shown(text)}: give 16 hex digits, 0x<hex> or a "
                                 f"decimal number") from None
    if not 0 <= value <= _MAX_DPID:
        raise ConfigurationError(f"bad DPID {shown(text)}: out of range")
    return value


def new_move_id() -> int:
    """A random 48-bit handover id (it goes into the marker's cookie, below its tag byte)."""
    return secrets.randbits(48)


def current(coord: Coordinator, dpid: int) -> Move | None:
    """The move record of `dpid`, if any (a malformed one is logged and reads as None)."""
    record = coord.topology.get("move", dpid_key(dpid))
    return record if isinstance(record, Move) else None


def request_move(coord: Coordinator, dpid: int, target: str, *, writer: str,
                 live: Iterable[str] | None = None) -> Move:
    """Write a `requested` move of `dpid` to `target`; returns the record written.

    Refused with a one-line CoordinationError when `target` is not a live member, is not a
    candidate in the switch's election (not connected to it), already leads it, when nobody
    leads it, or when another move of it is still running (not taken / aborted, and its source
    still leads under the term it was requested in)."""
    members = set(coord.members() if live is None else live)
    if target not in members:
        raise ConfigurationError(f"member {shown(target)} is not live (live: "
                                 f"{', '.join(sorted(members)) or 'none'})")
    election = coord.election(election_name(dpid))
    candidates = [c.member_id for c in election.candidates()]
    if not candidates:
        raise ConfigurationError(f"no controller is connected to switch {dpid_key(dpid)}")
    if target not in candidates:
        raise ConfigurationError(f"member {shown(target)} is not connected to switch "
                                 f"{dpid_key(dpid)} (candidates: {', '.join(candidates)})")
    leader = coord.read_leaders([election.name]).get(election.name)
    if leader is None:
        raise ConfigurationError(f"switch {dpid_key(dpid)} has no master to move it from")
    if leader.member_id == target:
        raise ConfigurationError(f"{shown(target)} already masters switch {dpid_key(dpid)}")
    old = current(coord, dpid)
    if old is not None and old.step not in FINAL_STEPS and old.term == leader.term \
            and old.source == leader.member_id:
        raise CoordinationError(f"a move of switch {dpid_key(dpid)} is in progress "
                                f"({old.source} -> {old.target}, step {old.step})")
    record = Move(owner=writer, term=leader.term, dpid=dpid, id=new_move_id(),
                  source=leader.member_id, target=target, step="requested")
    if not coord.topology.compare_and_set(old, record, kind="move", key=dpid_key(dpid)):
        raise CoordinationError(f"the move record of switch {dpid_key(dpid)} changed meanwhile; "
                                f"try again")
    return record


def advance(coord: Coordinator, dpid: int, move_id: int, step: str, expect: Iterable[str],
            writer: str) -> bool:
    """Compare-and-set: move `move_id` of `dpid` to `step` if its record is now at one of the
    `expect` steps. False if the record is another move's, or at another step."""
    old = current(coord, dpid)
    if old is None or old.id != move_id or old.step not in set(expect):
        return False
    new = Move(owner=writer, term=old.term, dpid=dpid, id=move_id, source=old.source,
               target=old.target, step=step)
    return coord.topology.compare_and_set(old, new)
