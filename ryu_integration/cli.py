"""`coordctl`: look at a coordination backend as an operator.

    coordctl --url zookeeper://127.0.0.1:2181/sdn masters
    coordctl --config-file /etc/ryu/ryu.conf topology --json
    coordctl --url etcd3://127.0.0.1:2379/sdn watch
    coordctl --config-file /etc/ryu/ryu.conf serve --listen 127.0.0.1:8780

The URL comes from `--url`, else `backend_url` in the `[coordination]` section of
`--config-file` (read and validated by coord-manager's own loader, `ryu_integration.mastership.config`),
else `$COORDINATION_URL`. Output is a table for people, `--json` for scripts. The global flags
go before or after the command. `serve` is the live web page and JSON/HTTP API
(`ryu_integration.webview`).
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from coordination.api import Coordinator
from coordination.connect import connect
from coordination.errors import ConfigurationError, CoordinationError
from coordination.names import printable, shown, validate_election_name
from coordination.options import DAY, Option
from coordination.records import Record
from coordination.topology import Change, Snapshot, TopologyEvent
from coordination.types import Leadership
from coordination.urls import parse_url, redact_raw

from . import signal_wait

DPID_PREFIX = "dpid-"
#: Where `coordctl serve` listens unless told: loopback only (the page has no authentication).
DEFAULT_LISTEN = "127.0.0.1:8780"
#: Longest cell of a table, in characters (member ids are at most 200).
MAX_CELL = 200


def cell(value: Any) -> str:
    """One table cell: store data is untrusted, so control characters (a newline would forge a
    row) are escaped and the text is cut to `MAX_CELL` characters."""
    return "-" if value is None else printable(str(value), MAX_CELL)


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """Align `rows` under `headers` in plain-text columns (cells escaped by `cell`)."""
    cells = [[cell(c) for c in headers]] + [[cell(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def resolve_url(url: str | None, config_file: str | None) -> str:
    """The backend URL: `--url`, else ryu.conf's `[coordination] backend_url` (read and checked
    by the same code as `coord-manager`, so the same default and the same one-line errors),
    else `$COORDINATION_URL`."""
    if url:
        return url
    if config_file:
        return url_from_config(config_file)
    value = os.environ.get("COORDINATION_URL", "").strip()
    if not value:
        raise CoordinationError("no backend: give --url, --config-file, or set COORDINATION_URL")
    return value


def url_from_config(config_file: str) -> str:
    """`backend_url` of `config_file`, through `ryu_integration.mastership.config` (oslo.config only: no
    Ryu or os-ken needed). Every `[coordination]` option is validated, as `coord-manager` does;
    an unset `backend_url` means the same default (`embedded://`)."""
    try:
        from oslo_config import cfg

        from .mastership import config as ryu_config
    except ImportError as exc:  # pragma: no cover - oslo.config is a core dependency
        raise ConfigurationError(
            f"--config-file needs the Python package {exc.name!r}: pip install oslo.config"
        ) from None
    _reject_duplicate_options(config_file)
    conf = cfg.ConfigOpts()
    ryu_config.register(conf)
    ryu_config.parse(conf, ["--config-file", config_file], prog="coordctl",
                     default_config_files=[])
    return ryu_config.load(conf).backend_url


def _reject_duplicate_options(config_file: str) -> None:
    """oslo.config silently keeps the last of two `backend_url = ...` lines; an operator who
    wrote both meant one of them, so say so (one line) instead of guessing. Everything else
    about the file is left to oslo.config."""
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    try:
        with open(config_file, encoding="utf-8") as fh:
            parser.read_file(fh)
    except configparser.DuplicateOptionError as exc:
        raise ConfigurationError(f"{config_file}: malformed: {one_line(exc)}") from None
    except (OSError, UnicodeDecodeError, configparser.Error):
        return  # reported by oslo.config, as coord-manager reports it


def one_line(exc: BaseException | str, limit: int = 500) -> str:
    """An error message on one line, whatever it contains (control characters escaped)."""
    return printable(" ".join(str(exc).split()), limit)


def _elections(coord: Coordinator) -> list[dict[str, Any]]:
    out = []
    for name in coord.elections():
        try:
            validate_election_name(name)
        except ConfigurationError:
            continue  # a foreign key in the store; the driver logs it
        election = coord.election(name)
        leader = election.leader()
        out.append({
            "election": name,
            "leader": leader.member_id if leader else None,
            "term": leader.term if leader else None,
            "candidates": [c.member_id for c in election.candidates()],
            "priorities": [c.priority for c in election.candidates()],
        })
    return out


def cmd_members(coord: Coordinator, _args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    rows = [info.to_dict() for mid, info in coord.members().items() if mid != coord.member_id]
    return rows, ["member_id", "address", "capacity", "started_at"]


def cmd_elections(coord: Coordinator, _args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    return _elections(coord), ["election", "leader", "term", "candidates"]


def cmd_masters(coord: Coordinator, _args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    confirmed = {r.dpid: r for r in coord.topology.list("mastership")}
    rows = []
    for item in _elections(coord):
        if not item["election"].startswith(DPID_PREFIX):
            continue
        dpid = int(item["election"][len(DPID_PREFIX):], 16)
        record = confirmed.get(dpid)
        rows.append({
            "dpid": f"{dpid:016x}",
            "master": item["leader"],
            "term": item["term"],
            "confirmed": bool(record and record.owner == item["leader"]
                              and record.term == item["term"] and not record.hint),
            "candidates": item["candidates"],
            # why the leader is not confirmed, when it said so (e.g. the switch refuses STALE)
            "hint": record.hint if record is not None and record.owner == item["leader"] else "",
        })
    columns = ["dpid", "master", "term", "confirmed", "candidates"]
    return rows, columns + ["hint"] if any(row["hint"] for row in rows) else columns


def _record_row(record: Record) -> dict[str, Any]:
    body = asdict(record)
    owner, term = body.pop("owner"), body.pop("term")
    return {"kind": record.KIND, "key": record.key, "owner": owner, "term": term,
            "data": body}


def cmd_topology(coord: Coordinator, _args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    return [_record_row(r) for r in coord.topology.list()], ["kind", "key", "owner", "term", "data"]


def cmd_serve(coord: Coordinator, args: argparse.Namespace) -> None:
    """Serve the live page and the JSON/HTTP API until interrupted (ryu_integration.webview)."""
    try:
        from .webview.server import serve
    except ImportError as exc:
        raise ConfigurationError(
            f"coordctl serve needs the Python package {exc.name!r}: "
            "pip install 'sdn-coordination[web]'") from None
    host, port = args.listen
    serve(coord, host, port, backend=redact_raw(args.resolved_url))


def cmd_watch(coord: Coordinator, args: argparse.Namespace) -> None:
    """Print every topology change and leader change until interrupted (or --count events)."""
    done = threading.Event()
    printed = [0]
    lock = threading.Lock()

    def emit(doc: dict[str, Any]) -> None:
        with lock:
            text = json.dumps(doc, default=str) if args.json else " ".join(
                f"{k}={cell(v)}" for k, v in doc.items())
            print(text, flush=True)
            printed[0] += 1
            if args.count and printed[0] >= args.count:
                done.set()

    def on_topology(event: TopologyEvent) -> None:
        if isinstance(event, Snapshot):
            emit({"event": "snapshot", "records": len(event.records), "resync": event.resync})
        elif isinstance(event, Change):
            emit({"event": event.op, "kind": event.kind, "key": event.key,
                  "owner": (event.record or event.previous).owner})

    def leader_listener(name: str) -> Callable[[Leadership | None], None]:
        return lambda lead: emit({"event": "leader", "election": name,
                                  "leader": lead.member_id if lead else None,
                                  "term": lead.term if lead else None})

    for name in coord.elections():
        coord.election(name).add_leader_listener(leader_listener(name))
    coord.topology.watch(on_topology)
    coord.add_session_listener(lambda state: emit({"event": "session", "state": state.value}))
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        # the store client's threads may be the ones a signal lands on: wait where it wakes us
        signal_wait.run_waking_for_signals(lambda: done.wait(args.timeout or None))
    except KeyboardInterrupt:
        pass


def cmd_move(coord: Coordinator, args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """Ask for a planned handover of one switch to MEMBER (docs/balancing.md); with --wait,
    wait for its outcome (taken, or an error if aborted)."""
    from .mastership import moves

    dpid = moves.parse_dpid(args.dpid)
    finished = threading.Event()
    outcome: list[Any] = []
    watch = None
    if args.wait:
        def on_move(event: TopologyEvent) -> None:
            records = event.records if isinstance(event, Snapshot) else (event.record,)
            for record in records:
                if getattr(record, "dpid", None) == dpid and outcome and \
                        record.id == outcome[0].id and record.step in moves.FINAL_STEPS:
                    outcome.append(record)
                    finished.set()

        watch = coord.topology.watch(on_move, kinds=["move"])
    record = moves.request_move(coord, dpid, args.member, writer=coord.member_id)
    outcome.append(record)
    if watch is not None:
        current = moves.current(coord, dpid)  # it may have finished before we looked
        if current is not None and current.id == record.id and current.step in moves.FINAL_STEPS:
            outcome.append(current)
        elif not finished.wait(args.wait):
            watch.cancel()
            raise CoordinationError(f"move {record.id} of switch {dpid:016x} not finished within "
                                    f"{args.wait:g} s")
        watch.cancel()
        if outcome[-1].step == "aborted":
            raise CoordinationError(f"move {record.id} of switch {dpid:016x} "
                                    f"({record.source} -> {record.target}) was aborted")
    last = outcome[-1]
    row = {"dpid": f"{dpid:016x}", "move": record.id, "source": record.source,
           "target": record.target, "step": last.step}
    return [row], ["dpid", "move", "source", "target", "step"]


def cmd_balance(coord: Coordinator, args: argparse.Namespace) -> None:
    """Compute the balance plan from the store now (the policy of --config-file, `balanced`
    if it says `first` or none is given) and print it; without --dry-run, ask the cluster's
    balancer to carry it out now (it skips the damping rule)."""
    from coordination.balancing import Policy

    from .mastership import balancer

    settings = balancer.BalanceSettings(policy=Policy.BALANCED)
    if args.config_file:
        settings = _balance_settings(args.config_file)
        if settings.policy is Policy.FIRST:
            settings = balancer.BalanceSettings(Policy.BALANCED, settings.preferred,
                                                settings.damping, settings.max_moves)
    plan = balancer.compute(balancer.gather(coord), settings)
    rows = [{"dpid": f"{balancer.dpid_of(m.election):016x}", "from": m.source, "to": m.target}
            for m in plan.moves]
    load = dict(sorted(plan.load().items()))
    if not args.dry_run:
        balancer.request_rebalance(coord, "coordctl balance", forced=True)
    if args.json:
        print(json.dumps({"policy": settings.policy.value, "moves": rows, "load": load,
                          "requested": not args.dry_run}, indent=2))
        return
    print(table([[r["dpid"], r["from"], r["to"]] for r in rows], ["dpid", "from", "to"])
          if rows else "(no moves: balanced)")
    print("load after: " + ", ".join(f"{cell(m)}={n}" for m, n in load.items()))
    print("dry run: nothing requested" if args.dry_run else
          f"requested: the balancer moves {len(rows)} switch(es) now")


def _balance_settings(config_file: str) -> Any:
    """The `balance_*` options of `config_file`, validated as coord-manager does."""
    from oslo_config import cfg

    from .mastership import config as ryu_config

    conf = cfg.ConfigOpts()
    ryu_config.register(conf)
    ryu_config.parse(conf, ["--config-file", config_file], prog="coordctl",
                     default_config_files=[])
    return ryu_config.load(conf).balance


COMMANDS: dict[str, Callable[..., Any]] = {
    "balance": cmd_balance,
    "move": cmd_move,
    "members": cmd_members,
    "elections": cmd_elections,
    "masters": cmd_masters,
    "topology": cmd_topology,
    "watch": cmd_watch,
    "serve": cmd_serve,
}


def _add_global_flags(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The flags every command takes. They are accepted before and after the command
    (`coordctl --json masters`, `coordctl masters --json`): the subcommand's copies default to
    SUPPRESS, so a flag given only before the command is not reset by the subcommand."""
    default: Any = None if top else argparse.SUPPRESS
    parser.add_argument("--url", default=default,
                        help="backend URL, e.g. zookeeper://127.0.0.1:2181/sdn")
    parser.add_argument("--config-file", default=default,
                        help="ryu.conf: [coordination] backend_url (checked as coord-manager does)")
    parser.add_argument("--json", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="machine-readable output")
    parser.add_argument("--connect-timeout", default="5" if top else argparse.SUPPRESS,
                        help="seconds (default 5)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coordctl", description=__doc__.split("\n\n")[0])
    _add_global_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "members": sub.add_parser("members", help="live controllers"),
        "elections": sub.add_parser("elections", help="every election: leader, term, candidates"),
        "masters": sub.add_parser("masters", help="switch -> master, term, candidates"),
        "topology": sub.add_parser("topology",
                                   help="switches, links, hosts, masterships in the store"),
        "watch": sub.add_parser("watch", help="print live topology, leader and session events"),
        "serve": sub.add_parser("serve", help="live web page + JSON/HTTP API (see docs/webview.md)"),
        "move": sub.add_parser("move", help="hand one switch over to another controller "
                                            "(planned handover, docs/balancing.md)"),
        "balance": sub.add_parser("balance", help="compute the balance plan now, print it and "
                                                  "have the balancer carry it out"),
    }
    for command in commands.values():
        _add_global_flags(command, top=False)
    watch = commands["watch"]
    watch.add_argument("--count", type=int, default=0, help="stop after N events")
    watch.add_argument("--timeout", default="0", help="stop after N seconds (0: never)")
    commands["balance"].add_argument("--dry-run", action="store_true",
                                     help="print the plan only; request nothing")
    move = commands["move"]
    move.add_argument("dpid", help="datapath id: 16 hex digits, 0x<hex> or decimal")
    move.add_argument("member", help="member id of a live controller connected to the switch")
    move.add_argument("--wait", default="0",
                      help="wait up to N seconds for the handover's outcome (0: do not wait)")
    commands["serve"].add_argument(
        "--listen", default=DEFAULT_LISTEN,
        help=f"host:port to serve on (default {DEFAULT_LISTEN}; port 0 picks a free one)")
    return parser


_SECONDS = Option(float, 0.0, "seconds", 0.0, DAY)


def _seconds(flag: str, text: str, *, positive: bool) -> float:
    """A command-line duration: ASCII decimal, finite, within (0 or [0) .. a day]."""
    bounds = f"{'(' if positive else '['}0, {DAY:.0f}]"
    try:
        value = _SECONDS.parse(flag, text)
    except ConfigurationError:
        value = None
    if value is None or (positive and value <= 0):
        raise ConfigurationError(f"{flag} must be a number of seconds in {bounds}, "
                                 f"got {shown(text)}")
    return value


def check_args(args: argparse.Namespace) -> None:
    """Numbers argparse cannot bound: durations finite (ASCII digits, no nan/inf) and in range,
    the connect timeout positive, counts not negative."""
    args.connect_timeout = _seconds("--connect-timeout", args.connect_timeout, positive=True)
    if args.command == "watch":
        args.timeout = _seconds("--timeout", args.timeout, positive=False)
        if args.count < 0:
            raise ConfigurationError(f"--count must not be negative, got {args.count}")
    if args.command == "serve":
        args.listen = parse_listen(args.listen)
    if args.command == "move":
        args.wait = _seconds("--wait", args.wait, positive=False)


def parse_listen(text: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); anything else is a one-line error."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isascii() or not port.isdigit() \
            or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"--listen must be host:port (port 0-65535), got {shown(text)}")
    return host, int(port)


def _redacted(exc: BaseException, url: str | None) -> str:
    """The error, on one line, with every secret of `url` masked (whoever wrote the message)."""
    text = str(exc)
    if url:
        try:
            text = parse_url(url).redact(text)
        except CoordinationError:
            pass
        if url in text:
            text = text.replace(url, redact_raw(url))
    return one_line(text)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    url = None
    try:
        check_args(args)
        url = args.resolved_url = resolve_url(args.url, args.config_file)
        member = f"coordctl@{socket.gethostname()}:{os.getpid()}"
        # an observer, never a peer: controllers' failure detectors need not dial it
        with connect(url, member, connect_timeout=args.connect_timeout,
                     detector=False) as coord:
            result = COMMANDS[args.command](coord, args)
            if result is not None:
                rows, columns = result
                if args.json:
                    print(json.dumps(rows, indent=2, default=str))
                else:
                    print(table([[r.get(c) for c in columns] for r in rows], columns)
                          if rows else f"(no {args.command})")
    except CoordinationError as exc:
        print(f"coordctl: error: {_redacted(exc, url)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
