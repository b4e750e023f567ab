"""Typed, versioned topology records and their JSON encoding.

Every record names its `owner` (the member that wrote it) and the owner's `term` in the election
of the switch the record belongs to (`domain`). The store refuses a write whose term is older than
the stored record's term in the same domain, so a deposed master cannot overwrite its successor.
Records are validated when built and when read back: a malformed value in the store becomes an
`InvalidRecordError`, which readers log and skip.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from .codec import decode_json
from .errors import InvalidRecordError
from .names import printable, shown
from .types import MAX_TERM

#: Version of the encoding below. Readers refuse (skip) records with a newer schema.
SCHEMA_VERSION = 1

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_MAX_DPID = 2**64 - 1
_MAX_PORT = 2**32 - 1


def _check_int(name: str, value: Any, maximum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise InvalidRecordError(f"{name} must be an integer in 0..{maximum}, got {shown(value)}")


def _check_str(name: str, value: Any) -> None:
    if not isinstance(value, str):
        raise InvalidRecordError(f"{name} must be a string, got {shown(value)}")


def _normalise_mac(value: Any) -> str:
    if not isinstance(value, str) or not _MAC.match(value.lower()):
        raise InvalidRecordError(f"bad MAC address {shown(value)} (want aa:bb:cc:dd:ee:ff)")
    return value.lower()


@dataclass(frozen=True)
class Port:
    """A switch port and its state."""

    port_no: int
    name: str = ""
    hw_addr: str = ""
    up: bool = True

    def __post_init__(self) -> None:
        _check_int("port_no", self.port_no, _MAX_PORT)
        _check_str("port name", self.name)
        if self.hw_addr:
            object.__setattr__(self, "hw_addr", _normalise_mac(self.hw_addr))
        if not isinstance(self.up, bool):
            raise InvalidRecordError(f"port up must be a boolean, got {shown(self.up)}")


@dataclass(frozen=True)
class _Record:
    KIND: ClassVar[str] = ""
    owner: str = ""
    term: int = 0

    def _check_common(self) -> None:
        _check_str("owner", self.owner)
        _check_int("term", self.term, MAX_TERM)

    @property
    def key(self) -> str:
        raise NotImplementedError

    @property
    def domain(self) -> int:
        """The datapath whose election `term` belongs to."""
        raise NotImplementedError


@dataclass(frozen=True)
class Switch(_Record):
    """A datapath, its OpenFlow channel address and its ports."""

    KIND: ClassVar[str] = "switch"
    dpid: int = 0
    address: str = ""
    ports: tuple[Port, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self._check_common()
        _check_int("dpid", self.dpid, _MAX_DPID)
        _check_str("address", self.address)
        ports = tuple(p if isinstance(p, Port) else Port(**p) for p in self.ports)
        object.__setattr__(self, "ports", tuple(sorted(ports, key=lambda p: p.port_no)))

    @property
    def key(self) -> str:
        return dpid_key(self.dpid)

    @property
    def domain(self) -> int:
        return self.dpid


@dataclass(frozen=True)
class Link(_Record):
    """A unidirectional link `src -> dst`, written by the master of `dst_dpid`: LLDP sent out
    of `src` arrives as a packet-in from `dst`, which only `dst`'s master receives."""

    KIND: ClassVar[str] = "link"
    src_dpid: int = 0
    src_port: int = 0
    dst_dpid: int = 0
    dst_port: int = 0

    def __post_init__(self) -> None:
        self._check_common()
        _check_int("src_dpid", self.src_dpid, _MAX_DPID)
        _check_int("dst_dpid", self.dst_dpid, _MAX_DPID)
        _check_int("src_port", self.src_port, _MAX_PORT)
        _check_int("dst_port", self.dst_port, _MAX_PORT)

    @property
    def key(self) -> str:
        return f"{dpid_key(self.src_dpid)}-{self.src_port}-{dpid_key(self.dst_dpid)}-{self.dst_port}"

    @property
    def domain(self) -> int:
        return self.dst_dpid


@dataclass(frozen=True)
class Host(_Record):
    """A host learned on a switch port."""

    KIND: ClassVar[str] = "host"
    mac: str = ""
    ips: tuple[str, ...] = field(default_factory=tuple)
    dpid: int = 0
    port_no: int = 0

    def __post_init__(self) -> None:
        self._check_common()
        object.__setattr__(self, "mac", _normalise_mac(self.mac))
        _check_int("dpid", self.dpid, _MAX_DPID)
        _check_int("port_no", self.port_no, _MAX_PORT)
        if isinstance(self.ips, str) or not all(isinstance(ip, str) for ip in self.ips):
            raise InvalidRecordError(f"ips must be a list of strings, got {shown(self.ips)}")
        try:
            ips = tuple(sorted({str(ipaddress.ip_address(ip)) for ip in self.ips}))
        except ValueError as exc:
            raise InvalidRecordError(f"bad IP address in {shown(self.ips)}: {exc}") from None
        object.__setattr__(self, "ips", ips)

    @property
    def key(self) -> str:
        return self.mac.replace(":", "")

    @property
    def domain(self) -> int:
        return self.dpid


@dataclass(frozen=True)
class Mastership(_Record):
    """Who masters a datapath (`owner`) and under which term, as confirmed by the switch.

    `hint` (optional, empty by default, so records without it decode as before): non-empty means
    the switch has NOT confirmed `owner`, the election's leader under `term`; it says why and
    what to do (e.g. the switch refuses every role request as STALE).
    """

    KIND: ClassVar[str] = "mastership"
    dpid: int = 0
    hint: str = ""

    def __post_init__(self) -> None:
        self._check_common()
        _check_int("dpid", self.dpid, _MAX_DPID)
        _check_str("hint", self.hint)

    @property
    def key(self) -> str:
        return dpid_key(self.dpid)

    @property
    def domain(self) -> int:
        return self.dpid


#: Steps of a move record, in order (`aborted` may follow any of them; see docs/balancing.md).
MOVE_STEPS = ("requested", "ready", "released", "taken", "aborted")
_MAX_MOVE_ID = 2**56 - 1


@dataclass(frozen=True)
class Move(_Record):
    """A planned handover of a datapath from `source` (its master) to `target`: one record per
    switch (`moves/<dpid>`), rewritten only by compare-and-set (`TopologyStore.compare_and_set`)
    as the two controllers advance `step`. `owner` is the last writer; `term` the source's term
    when the move was requested. Not a topology kind: default watches and views leave it out."""

    KIND: ClassVar[str] = "move"
    dpid: int = 0
    id: int = 0
    source: str = ""
    target: str = ""
    step: str = "requested"

    def __post_init__(self) -> None:
        self._check_common()
        _check_int("dpid", self.dpid, _MAX_DPID)
        _check_int("id", self.id, _MAX_MOVE_ID)
        _check_str("source", self.source)
        _check_str("target", self.target)
        if self.step not in MOVE_STEPS:
            raise InvalidRecordError(f"step must be one of {', '.join(MOVE_STEPS)}, got "
                                     f"{shown(self.step)}")

    @property
    def key(self) -> str:
        return dpid_key(self.dpid)

    @property
    def domain(self) -> int:
        return self.dpid


@dataclass(frozen=True)
class Rebalance(_Record):
    """A request to the cluster's balancer: `forced` (coordctl balance, `rebalance/forced`)
    skips the damping rule; otherwise (`rebalance/request`) it says membership or switch
    connections changed (`reason`, e.g. a controller joined). Forced requests have a key of
    their own, so a controller's notice written a moment later cannot overwrite one before the
    balancer reads it (a store may report only the newest value of a key). `id` tells two
    requests apart. `term` is unused (0)."""

    KIND: ClassVar[str] = "rebalance"
    id: int = 0
    reason: str = ""
    forced: bool = False
    #: the writer (`owner`) is leaving the cluster (a graceful stop, after its handovers)
    leaving: bool = False

    def __post_init__(self) -> None:
        self._check_common()
        _check_int("id", self.id, _MAX_MOVE_ID)
        _check_str("reason", self.reason)
        for name in ("forced", "leaving"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidRecordError(f"{name} must be a boolean, got "
                                         f"{shown(getattr(self, name))}")

    @property
    def key(self) -> str:
        return "forced" if self.forced else "request"

    @property
    def domain(self) -> int:
        return 0


Record = Switch | Link | Host | Mastership | Move | Rebalance
RECORD_TYPES: dict[str, type[_Record]] = {
    cls.KIND: cls for cls in (Switch, Link, Host, Mastership, Move, Rebalance)}
#: Every kind a driver stores (the ZooKeeper driver keeps one directory per kind).
KINDS: tuple[str, ...] = tuple(RECORD_TYPES)
#: The topology kinds: what watches and listings without a `kinds` argument cover (not moves).
TOPOLOGY_KINDS: tuple[str, ...] = ("switch", "link", "host", "mastership")


def dpid_key(dpid: int) -> str:
    return f"{dpid:016x}"


def record_path(record: Record) -> str:
    """Where a record lives in the store, relative to the topology root: `kind/key`."""
    return f"{record.KIND}/{record.key}"


def encode(record: Record) -> bytes:
    """Serialise a record as JSON, tagged with its kind and the schema version."""
    body = asdict(record)
    if isinstance(record, Mastership) and not record.hint:
        del body["hint"]  # optional: a record without a hint reads the same in older code
    return json.dumps(
        {"schema": SCHEMA_VERSION, "kind": record.KIND, **body}, sort_keys=True, separators=(",", ":")
    ).encode()


def decode(path: str, data: bytes) -> Record:
    """Parse and validate a stored record; anything malformed raises `InvalidRecordError`.

    The JSON goes through `codec.decode_json` (bounded size and depth, strict UTF-8, no NaN), so
    nothing but `InvalidRecordError` leaves this function, whatever `path` and `data` hold.
    """
    label = printable(str(path), 200)
    kind, _, key = str(path).partition("/")
    cls = RECORD_TYPES.get(kind)
    if cls is None:
        raise InvalidRecordError(f"{label}: unknown record kind {shown(kind)}")
    body = decode_json(data, label)
    if not isinstance(body, dict):
        raise InvalidRecordError(f"{label}: expected a JSON object, got {type(body).__name__}")
    schema = body.pop("schema", None)
    if schema != SCHEMA_VERSION:
        raise InvalidRecordError(
            f"{label}: schema {shown(schema)} is not {SCHEMA_VERSION}, the version this code reads"
        )
    if body.pop("kind", None) != kind:
        raise InvalidRecordError(f"{label}: record kind does not match its location")
    names = {f.name for f in fields(cls)}
    unknown = set(body) - names
    if unknown:
        raise InvalidRecordError(f"{label}: unknown fields {shown(sorted(unknown))}")
    try:
        if cls is Switch and not isinstance(body.get("ports", []), list):
            raise InvalidRecordError(f"ports must be a list, got {shown(body['ports'])}")
        if cls is Host:
            if not isinstance(body.get("ips", []), list):
                raise InvalidRecordError(f"ips must be a list, got {shown(body['ips'])}")
            body["ips"] = tuple(body.get("ips", ()))
        if cls is Switch:
            body["ports"] = tuple(_port(p) for p in body.get("ports", ()))
        record = cls(**body)
    except (InvalidRecordError, TypeError, ValueError) as exc:
        raise InvalidRecordError(f"{label}: {printable(str(exc), 200)}") from None
    if record.key != key:
        raise InvalidRecordError(
            f"{label}: record key {shown(record.key)} does not match its location")
    return record  # type: ignore[return-value]


def _port(item: Any) -> Port:
    if not isinstance(item, dict):
        raise InvalidRecordError(f"a port must be a JSON object, got {shown(item)}")
    unknown = set(item) - {f.name for f in fields(Port)}
    if unknown:
        raise InvalidRecordError(f"unknown port fields {shown(sorted(unknown))}")
    return Port(**item)
