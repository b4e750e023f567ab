"""ryu.conf options of the coordination apps: group `[coordination]`.

The mastership app registers them on the framework's `cfg.CONF` when it is imported. They are
config-file options, not CLI options, so registering them after the command line was parsed (as
`ryu-manager` imports app modules) is fine. `load()` turns them into a validated `Settings`.
Framework-free (plain oslo.config, which Ryu and os-ken both wrap), so it is unit-testable.

Errors are for people: `parse()` and `load()` turn a missing, malformed or non-UTF-8 config file
and every bad value (`session_timeout = abc`, `priority = -5`, `nan`, a bad member_id or
backend_url) into ONE `ConfigurationError` line naming the file, the option and the problem,
which `coord-manager` prints before the framework starts (exit status 2, no traceback).
"""

from __future__ import annotations

import glob
import math
import os
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from oslo_config import cfg

from coordination.balancing import Damping
from coordination.connect import check_url
from coordination.detector_policy import DetectorSettings
from coordination.errors import ConfigurationError, CoordinationError
from coordination.names import member_id_problem, printable
from coordination.options import DAY

from .balancer import BalanceSettings, parse_balance
from .fsm import Timing
from .handover import HandoverTiming

GROUP = "coordination"
#: The backend used when `backend_url` is not set: the embedded store (SQLite + unix sockets in
#: a per-user directory), shared by every controller process on this host, nothing to install.
#: Several hosts need zookeeper:// or etcd3://. (`memory://` is per process: one controller only.)
DEFAULT_BACKEND_URL = "embedded://"
#: OpenFlow's IANA port, what Ryu/os-ken listen on when `ofp_tcp_listen_port` is unset.
DEFAULT_OFP_PORT = 6653

# Each default lives once, in the dataclass that uses it; the options below read it from there.
_TIMING, _HANDOVER = Timing(), HandoverTiming()
_BALANCE, _DAMPING = BalanceSettings(), Damping()
_DETECTOR = DetectorSettings()  # the driver applies these when an option is unset

OPTS = [
    cfg.StrOpt("backend_url", default=DEFAULT_BACKEND_URL,
               help="Coordination backend: zookeeper://h1:2181,h2:2181/sdn, etcd3://h1:2379/sdn, "
                    "embedded:///var/lib/sdn (one host, the default: embedded:// in a per-user "
                    "directory) or memory:// (one process). Query options such as "
                    "?session_timeout=4 go to the driver."),
    cfg.StrOpt("member_id", default=None,
               help="This controller's identity in elections; must differ between controllers. "
                    "Default: <hostname>:<ofp_tcp_listen_port>."),
    cfg.FloatOpt("session_timeout", default=None, min=0.1, max=DAY,
                 help="Seconds before the backend declares a silent controller dead; bounds "
                      "failover after a crash. Unset: the URL's value or the driver default."),
    cfg.IntOpt("priority", default=0, min=0, max=999_999,
               help="Election priority (higher wins; ties go to the earliest candidate). A "
                    "higher-priority controller takes mastership over from a lower one."),
    cfg.FloatOpt("role_request_timeout", default=_TIMING.role_request_timeout, min=0.05, max=DAY,
                 help="Seconds to wait for a ROLE_REPLY before re-sending the request."),
    cfg.FloatOpt("role_retry_max", default=_TIMING.retry_max, min=0.05, max=DAY,
                 help="Longest pause, in seconds, between retries of a refused role request "
                      f"(backoff doubles from {_TIMING.retry_initial} s up to this)."),
    cfg.FloatOpt("reassert_interval", default=_TIMING.reassert_interval, min=0.0, max=DAY,
                 help="Seconds between periodic re-assertions of each switch's role; 0 "
                      "(default): none, roles are re-asserted on every event that may have "
                      "changed them (a session reconnect, STALE, IS_SLAVE, ROLE_STATUS, an "
                      "unanswered request)."),
    cfg.BoolOpt("hold_on_suspend", default=_TIMING.hold_on_suspend,
                help="While the backend connection is down but the session may live "
                     "(SUSPENDED): true = masters stop programming until it returns; false = "
                     "keep programming and rely on the switch to fence a deposed master."),
    cfg.BoolOpt("publish_mastership", default=True,
                help="Write a Mastership record to the topology store once the switch confirms."),
    cfg.IntOpt("metrics_port", default=None, min=0, max=65535,
               help="Serve Prometheus metrics on this TCP port (0: any free port, logged). "
                    "Unset: no metrics endpoint. See docs/operations.md, Metrics."),
    cfg.HostAddressOpt("metrics_address", default="127.0.0.1",
                       help="Address the metrics endpoint listens on (default loopback only)."),
    # the peer failure detector (docs/failure-detector.md); unset: the URL's value or default
    cfg.BoolOpt("detector", default=None,
                help="Run the peer failure detector (zookeeper, etcd3): a crashed controller's "
                     "switches move in well under a second instead of a session timeout."),
    cfg.FloatOpt("heartbeat_interval", default=None, min=0.005, max=60.0,
                 help=f"Seconds between two failure detector heartbeats (default {_DETECTOR.interval})."),
    cfg.IntOpt("heartbeat_misses", default=None, min=1, max=100,
               help="Heartbeats missed before a silent controller is declared dead "
                    f"(default {_DETECTOR.misses})."),
    cfg.StrOpt("liveness_address", default=None,
               help="host[:port] of this controller's liveness endpoint; other controllers must "
                    f"reach it (default {_DETECTOR.host}:{_DETECTOR.port}, i.e. one host only)."),
    cfg.FloatOpt("damping_window", default=None, min=0.0, max=DAY,
                 help="Seconds within which a second declaration of one controller counts as "
                      f"flapping (default {_DETECTOR.damping_window:g})."),
    cfg.FloatOpt("damping_backoff", default=None, min=0.0, max=DAY,
                 help=f"Seconds a flapping controller is not evicted (default "
                      f"{_DETECTOR.damping_backoff:g})."),
    # planned handover (docs/balancing.md)
    cfg.FloatOpt("handover_step_timeout", default=_HANDOVER.step_timeout, min=0.01, max=DAY,
                 help="Longest wait, in seconds, for each step of a planned handover (the peer "
                      "controller, the switch); then the handover aborts."),
    cfg.IntOpt("handover_max_buffer", default=_HANDOVER.max_buffer, min=0, max=10_000_000,
               help="Packet-ins the new master keeps between the cut and its confirmation; "
                    "more are dropped and logged."),
    cfg.IntOpt("handover_marker_hard_timeout", default=_HANDOVER.marker_hard_timeout, min=1, max=65535,
               help="Hard timeout (seconds) of the handover's marker flow, a safety net: the "
                    "old master deletes it at once."),
    # balancing (docs/balancing.md)
    cfg.StrOpt("balance_policy", default=_BALANCE.policy.value,
               help="Who masters which switch: first (the election's pick, no moves), balanced "
                    "(each live controller its capacity-weighted share) or preferred (per-switch "
                    "or per-group ordered lists, the rest balanced)."),
    cfg.MultiStrOpt("balance_preferred", default=[],
                    help="One per line: DPID=member,member,... or @GROUP=member,... (ordered)."),
    cfg.MultiStrOpt("balance_group", default=[],
                    help="One per line: GROUP=DPID,DPID,... (a switch in one group at most)."),
    cfg.FloatOpt("balance_settle", default=_DAMPING.settle, min=0.0, max=DAY,
                 help="Seconds of quiet membership before an automatic rebalance; also "
                      "how long switch connections must be quiet (at most twice this) before "
                      "the balancer plans for them, and the least time between such plans."),
    cfg.FloatOpt("balance_min_interval", default=_DAMPING.min_interval, min=0.0, max=DAY,
                 help="Seconds between two automatic rebalances."),
    cfg.IntOpt("balance_flap_count", default=_DAMPING.flap_count, min=2, max=1000,
               help="Joins + leaves within balance_flap_window that make a controller flapping "
                    "(balancing gives it nothing until the window has passed)."),
    cfg.FloatOpt("balance_flap_window", default=_DAMPING.flap_window, min=0.0, max=DAY,
                 help="Seconds of the flapping window."),
    cfg.IntOpt("balance_max_moves", default=_BALANCE.max_moves, min=1, max=100_000,
               help="Planned handovers in flight at once while rebalancing (the rest queue)."),
    cfg.BoolOpt("handover_on_stop", default=True,
                help="On SIGTERM, hand each mastered switch over to another connected "
                     "controller (planned handover, no packet-in lost) before resigning."),
]
#: `[coordination]` options passed to the driver as they are, when set.
DETECTOR_OPTIONS = ("detector", "heartbeat_interval", "heartbeat_misses", "liveness_address",
                    "damping_window", "damping_backoff")


def register(conf: cfg.ConfigOpts) -> None:
    """Register the options on `conf` (the framework's CONF); safe to repeat."""
    conf.register_opts(OPTS, group=GROUP)


@dataclass(frozen=True)
class Settings:
    """The `[coordination]` options, resolved."""

    backend_url: str
    member_id: str
    session_timeout: float | None
    priority: int
    timing: Timing
    publish_mastership: bool
    #: where to serve Prometheus metrics; port None: not at all
    metrics_address: str = "127.0.0.1"
    metrics_port: int | None = None
    #: the failure detector options that are set (`DETECTOR_OPTIONS`)
    detector_options: dict[str, Any] = field(default_factory=dict)
    #: planned handover knobs (`handover_*` options)
    handover: HandoverTiming = field(default_factory=HandoverTiming)
    #: hand switches over before resigning on SIGTERM
    handover_on_stop: bool = True
    #: balancing policy and knobs (`balance_*` options)
    balance: BalanceSettings = field(default_factory=BalanceSettings)

    def connect_options(self) -> dict[str, Any]:
        """Keyword options for `coordination.connect` (only those set, so URL values apply)."""
        options = dict(self.detector_options)
        if self.session_timeout is not None:
            options["session_timeout"] = self.session_timeout
        return options


def default_member_id(ofp_port: int | None) -> str:
    """`<hostname>:<OpenFlow listen port>`: unique per controller process on one host."""
    return f"{socket.gethostname()}:{ofp_port or DEFAULT_OFP_PORT}"


def load(conf: cfg.ConfigOpts) -> Settings:
    """Read and validate the `[coordination]` options (and the OpenFlow port for the default
    member id). Every option of the group is checked, whichever app registered it; the first
    problem is a `ConfigurationError` naming the file, the option and what is wrong."""
    check_group(conf)
    group = conf[GROUP]
    ofp_port = _value(conf, None, "ofp_tcp_listen_port")
    member_id = (group.member_id or "").strip() or default_member_id(ofp_port)
    problem = member_id_problem(member_id)
    if problem is not None:
        raise ConfigurationError(f"{_where(conf, 'member_id')}: [{GROUP}] member_id {problem}")
    session_timeout = group.session_timeout
    backend_url = (group.backend_url or DEFAULT_BACKEND_URL).strip()
    detector_options = {name: group[name] for name in DETECTOR_OPTIONS
                        if group[name] is not None}
    try:
        check_url(backend_url, **({} if session_timeout is None
                                  else {"session_timeout": session_timeout}), **detector_options)
    except CoordinationError as exc:
        raise ConfigurationError(
            f"{_where(conf, 'backend_url')}: [{GROUP}] backend_url: {_one_line(exc)}") from None
    timing = Timing(
        role_request_timeout=group.role_request_timeout,
        retry_initial=min(0.2, group.role_retry_max),
        retry_max=group.role_retry_max,
        reassert_interval=group.reassert_interval,
        hold_on_suspend=group.hold_on_suspend,
    )
    return Settings(
        backend_url=backend_url,
        member_id=member_id,
        session_timeout=session_timeout,
        priority=group.priority,
        timing=timing,
        publish_mastership=group.publish_mastership,
        metrics_address=group.metrics_address,
        metrics_port=group.metrics_port,
        detector_options=detector_options,
        handover=HandoverTiming(step_timeout=group.handover_step_timeout,
                                marker_hard_timeout=group.handover_marker_hard_timeout,
                                max_buffer=group.handover_max_buffer),
        handover_on_stop=group.handover_on_stop,
        balance=_balance(conf, group),
    )


def _balance(conf: cfg.ConfigOpts, group: Any) -> BalanceSettings:
    try:
        damping = Damping(settle=group.balance_settle, min_interval=group.balance_min_interval,
                          flap_count=group.balance_flap_count,
                          flap_window=group.balance_flap_window)
    except ValueError as exc:
        raise ConfigurationError(f"{_where(conf, 'balance_settle')}: [{GROUP}] {exc}") from None
    try:
        return parse_balance(group.balance_policy, group.balance_preferred,
                             group.balance_group, damping, group.balance_max_moves)
    except ConfigurationError as exc:
        name = str(exc).partition("] ")[2].partition(":")[0].split()[0] or "balance_policy"
        raise ConfigurationError(f"{_where(conf, name)}: {_one_line(exc)}") from None


def check_group(conf: cfg.ConfigOpts, group: str = GROUP) -> None:
    """Read every option registered in `group`: a value of the wrong type or out of its range
    raises `ConfigurationError` (one line: file, option, problem). Every float of the group is
    a duration in seconds, so it must also be finite and at most a day (oslo.config lets `nan`
    through `min`/`max`, and `inf` through `min`)."""
    for name in sorted(conf[group]):
        value = _value(conf, group, name)
        if isinstance(value, float) and not (math.isfinite(value) and value <= DAY):
            raise ConfigurationError(
                f"{_where(conf, name, group)}: [{group}] {name} = {value}: must be a finite "
                f"number of seconds, at most {DAY:.0f}")


def parse(conf: cfg.ConfigOpts, args: Sequence[str], *, optional_files: Iterable[str] = (),
          **kwargs: Any) -> None:
    """`conf(args=args, **kwargs)`, with those of `optional_files` that exist as the default
    config files (ryu-manager's fallback). A config file that is missing, unreadable, malformed
    or not UTF-8 raises one `ConfigurationError` naming it."""
    present = [path for path in optional_files if os.path.isfile(path)]
    if present:
        kwargs["default_config_files"] = present
    try:
        conf(args=list(args), **kwargs)
    except cfg.ConfigFileParseError as exc:
        raise ConfigurationError(f"{exc.config_file}: malformed: {_one_line(exc.msg)}") from None
    except UnicodeDecodeError as exc:
        path = _first_non_utf8([*_config_files(args), *present])
        raise ConfigurationError(
            f"{path or 'a config file'}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} "
            f"at offset {exc.start})") from None
    except cfg.ConfigFilesNotFoundError as exc:
        files = ", ".join(exc.config_files)
        raise ConfigurationError(f"cannot read config file {files}") from None
    except cfg.Error as exc:
        raise ConfigurationError(_one_line(exc)) from None


# ---- helpers --------------------------------------------------------------------------------

_LOCATION = re.compile(r"detail='(?P<file>[^']*)'\)? is not valid: (?P<problem>.*)", re.DOTALL)


def _value(conf: cfg.ConfigOpts, group: str | None, name: str) -> Any:
    """One option's value (None if no such option); a bad value -> ConfigurationError."""
    try:
        return getattr(conf[group] if group else conf, name)
    except cfg.ConfigSourceValueError as exc:
        match = _LOCATION.search(str(exc))
        where = match.group("file") if match else _where(conf, name, group, lookup=False)
        problem = match.group("problem") if match else str(exc)
        raise ConfigurationError(
            f"{where}: [{group or 'DEFAULT'}] {name}: {_one_line(problem)}") from None
    except (cfg.NoSuchOptError, AttributeError):
        return None


def _where(conf: cfg.ConfigOpts, name: str, group: str | None = GROUP, *,
           lookup: bool = True) -> str:
    """The config file that set option `name` (or the files given, or "the configuration")."""
    if lookup:
        try:
            location = conf.get_location(name, group)
        except (cfg.Error, ValueError, AttributeError):
            location = None
        if location is not None and location.detail and os.path.sep in str(location.detail):
            return str(location.detail)
    files = list(getattr(conf, "config_file", None) or [])
    return ", ".join(files) if files else "the configuration"


def _config_files(args: Sequence[str]) -> list[str]:
    """Files named by --config-file and found in --config-dir directories in `args`."""
    out: list[str] = []
    items = list(args)
    for i, arg in enumerate(items):
        for flag in ("--config-file", "--config-dir"):
            value = None
            if arg == flag and i + 1 < len(items):
                value = items[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.partition("=")[2]
            if value is None:
                continue
            if flag == "--config-dir":
                out += sorted(glob.glob(os.path.join(value, "*.conf")))
            else:
                out.append(value)
    return out


def _first_non_utf8(paths: Iterable[str]) -> str | None:
    for path in paths:
        try:
            with open(path, "rb") as fh:
                fh.read().decode("utf-8")
        except UnicodeDecodeError:
            return path
        except OSError:
            continue
    return None


def _one_line(text: object) -> str:
    return printable(" ".join(str(text).split()), 300)
