"""`coord-manager`: ryu-manager's command line, for Ryu 4.34 or os-ken, with a graceful stop.

    coord-manager [--framework ryu|os-ken] [ryu-manager options...] APP [APP...]

A ryu-manager user switches by changing only the command name: the same options
(`--config-file`, `--ofp-tcp-listen-port`, `--observe-links`, `--verbose`, `--log-file`, ...)
and app modules (dotted names or .py paths) are accepted. The mastership app is always loaded.

What it adds:
- Framework choice (`--framework`, else `$COORD_FRAMEWORK`, else ryu if installed, else os-ken;
  see `compat`). os-ken ships no manager at all; this is one, mirroring ryu-manager.
- Ryu 4.34 on Python 3.11 / current eventlet: the `eventlet.wsgi.ALREADY_HANDLED` fix is applied
  before `ryu.cmd.manager` is imported.
- App modules are imported *before* the command line is parsed, so options they register with
  `register_cli_opts` are accepted (ryu-manager imports them after parsing). A `.py` path is
  imported once and handed on by module name, because a second import would register its
  options again and fail.
- The configuration is checked before the framework starts (before any log output): a
  missing, malformed or non-UTF-8 config file, or a bad `[coordination]` value, is one line on
  stderr naming the file, the option and the problem, and exit status 2 (as is a backend that
  cannot be named or reached).
- Under os-ken's native hub, one I/O thread serves every plain-TCP switch connection
  (`switch_io`) instead of two OS threads per switch; `COORD_SWITCH_IO=threads` keeps os-ken's.
- The garbage collector runs young collections less often (`GC_THRESHOLDS`), so a large
  controller does not stop for a second at a time; and what start-up created (the framework's
  and the apps' modules, ~200,000 objects) is frozen out of its full collections, which
  therefore cost what the network's state holds rather than ~80 ms more each.
- SIGTERM and SIGINT: the shutdown hooks (`lifecycle`) run first, so the mastership app resigns
  every election while its OpenFlow connections are still up and successors take over at once;
  then the process exits (status 0). Like ryu-manager on SIGTERM, other apps' `close()` is not
  awaited. A second signal exits immediately. Under os-ken's native hub the main thread waits
  so that a signal delivered to any thread wakes it, and under eventlet the hub does
  (`signal_wait`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from . import frameworks, signal_wait, switch_io

FRAMEWORK_FLAG = "--framework"
#: Always loaded: an app that only calls `is_master()` would otherwise never program anything.
MASTERSHIP_APP = "ryu_integration.mastership"
#: Seconds the shutdown hooks may take before the process exits anyway.
SHUTDOWN_TIMEOUT = 5.0
#: The cyclic garbage collector's thresholds (Python's defaults: 700, 10, 10). With thousands of
#: switches the defaults ran a full collection every ~2 s that stopped the process for 0.3-1.5 s
#: (measured at 5,000 switches x 3 controllers): the store's heartbeats and the failure
#: detector's stopped with it, and peers declared a live controller dead. Young collections
#: run every 100,000 allocations instead and full ones ten times rarer; no pause over 0.15 s
#: remained.
GC_THRESHOLDS = (100_000, 50, 100)
#: `threads` keeps os-ken's two threads per switch connection instead of the shared I/O loop
#: (`switch_io`), should the loop ever misbehave with some switch.
SWITCH_IO_ENV = "COORD_SWITCH_IO"
#: The CLI options ryu-manager registers itself (os-ken has no manager to register them).
_MANAGER_OPTS = ("app-lists", "app", "pid-file", "enable-debugger", "user-flags")


def pop_framework(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """Remove `--framework X` / `--framework=X` from `argv`; return (X or None, the rest)."""
    rest: list[str] = []
    framework = None
    items = list(argv)
    i = 0
    while i < len(items):
        arg = items[i]
        if arg == FRAMEWORK_FLAG:
            if i + 1 >= len(items):
                raise SystemExit(f"{FRAMEWORK_FLAG} needs a value: ryu or os-ken")
            framework = items[i + 1]
            i += 2
            continue
        if arg.startswith(FRAMEWORK_FLAG + "="):
            framework = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return framework, rest


def _flag_names(conf: Any) -> tuple[set[str], set[str]]:
    """(options that take no value, options that take one) among `conf`'s CLI options."""
    flags = {"-h", "--help", "--version"}
    valued: set[str] = set()
    for opt, group in conf._all_cli_opts():
        prefix = f"{group.name}-" if group is not None else ""
        names = [opt.name] + [d.name for d in getattr(opt, "deprecated_opts", []) if d.name]
        for name in names:
            long = f"--{prefix}{name}".replace("_", "-")
            if getattr(opt, "positional", False):
                continue
            if type(opt).__name__ == "BoolOpt":
                flags.update({long, f"--{prefix}no{name}".replace("_", "-")})
            else:
                valued.add(long)
            if getattr(opt, "short", None):
                (flags if type(opt).__name__ == "BoolOpt" else valued).add(f"-{opt.short}")
    return flags, valued


def find_apps(args: Sequence[str], conf: Any) -> list[tuple[int | None, str]]:
    """The app modules named on the command line: positional arguments and `--app-lists`
    values, as (index in args or None for --app-lists entries, name)."""
    flags, valued = _flag_names(conf)
    apps: list[tuple[int | None, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            apps += [(j, a) for j, a in enumerate(args[i + 1:], i + 1)]
            break
        if arg.startswith("-"):
            name, eq, value = arg.partition("=")
            if name == "--app-lists":
                value = value if eq else (args[i + 1] if i + 1 < len(args) else "")
                apps += [(None, a) for a in value.split(",") if a]
            if not eq and name not in flags and (name in valued or name.startswith("--")):
                i += 1  # the option's value
            i += 1
            continue
        apps += [(i, a) for a in arg.split(",") if a]
        i += 1
    return apps


def import_apps(args: list[str], conf: Any, import_module: Any) -> list[str]:
    """Import every app module named in `args` (so its CLI options exist before parsing) and
    replace `.py` paths by the module name they were imported under. Returns new args."""
    out = list(args)
    for index, name in find_apps(args, conf):
        module = import_module(name)
        if index is not None and os.path.exists(name) and module.__name__ != name:
            out[index] = ",".join(module.__name__ if part == name else part
                                  for part in out[index].split(","))
    return out


def _install_signal_handlers(hub: Any) -> None:
    """SIGTERM/SIGINT -> run the shutdown hooks on a hub thread, then exit."""
    from . import lifecycle

    state = {"stopping": False}

    def finish(signum: int) -> None:
        try:
            logging.getLogger(__name__).info("coord-manager: signal %d, shutting down", signum)
            lifecycle.run_all(SHUTDOWN_TIMEOUT)
        finally:
            logging.shutdown()
            os._exit(0)

    def handler(signum: int, _frame: Any) -> None:
        if state["stopping"]:
            os._exit(128 + signum)
        state["stopping"] = True
        # Never block inside a signal handler (under eventlet it runs inside the hub): a hub
        # thread does the work, and SIGALRM (default action: terminate) guarantees the exit if
        # that thread is stuck. No timer thread: under eventlet it would be a green one.
        signal.alarm(int(SHUTDOWN_TIMEOUT) + 2)
        hub.spawn(finish, signum)

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


#: The config file ryu-manager reads by default (if it exists).
RYU_DEFAULT_CONFIG = "/usr/local/etc/ryu/ryu.conf"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No INFO/DEBUG records while the configuration is checked: the frameworks log DEBUG to
    stderr from import time on, and an error must be the only line there."""
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _check_listen_port(conf: Any) -> None:
    """Fail with one line if the OpenFlow port is taken: the frameworks would log READY, then
    die with a traceback that never names the port."""
    host = getattr(conf, "ofp_listen_host", None) or "0.0.0.0"
    port = getattr(conf, "ofp_tcp_listen_port", None)
    if not port:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise SystemExit(f"coord-manager: error: ofp_listen_host {host!r}: {exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the frameworks bind
        try:
            probe.bind(address)
        except OSError as exc:
            raise SystemExit(f"coord-manager: error: cannot listen for switches on {host}:{port}: "
                             f"{exc.strerror or exc}") from None


def _check_ryu_config(conf: Any, args: list[str], version: str) -> None:
    """Parse the command line and config files as ryu-manager is about to, and validate the
    `[coordination]` options, so that a bad file is one line before Ryu logs anything; then
    reset `conf` for ryu-manager's own parse (which must still register its late options)."""
    from .mastership import config

    try:
        with _quiet():
            config.parse(conf, args, optional_files=[RYU_DEFAULT_CONFIG], prog="coord-manager",
                         project="ryu", version=f"ryu-manager {version}")
            config.load(conf)
        _check_listen_port(conf)
    finally:
        conf.clear()


def _freeze_startup_objects() -> None:
    """Collect start-up's garbage, then move every object alive now into the collector's
    permanent generation (`gc.freeze`): modules, classes and parser tables live as long as
    the process, so scanning them in every full collection (~80 ms with os-ken and the apps
    imported) only lengthens the pause. Objects made later (apps, switches) are collected as
    before. Called once, after the apps are imported and before the framework runs them."""
    gc.collect()
    gc.freeze()


def _run_ryu(args: list[str]) -> int:
    from . import compat

    ryu_manager = compat.framework_module("cmd.manager")  # registers ryu-manager's CLI options
    utils = compat.framework_module("utils")
    args = _import_apps_checked(args, compat.cfg.CONF, utils.import_module, compat)
    _check_ryu_config(compat.cfg.CONF, args, getattr(ryu_manager, "version", "?"))
    signal_wait.wake_eventlet_hub()
    _install_signal_handlers(compat.hub)
    _freeze_startup_objects()
    ryu_manager.main(args=args, prog="coord-manager")
    return 0


def _run_os_ken(args: list[str]) -> int:
    from . import compat

    cfg, hub = compat.cfg, compat.hub
    conf = cfg.CONF
    log = compat.framework_module("log")
    log.early_init_log(logging.DEBUG)
    for module in ("flags", "controller.controller", "topology.switches"):
        compat.framework_module(module)  # their CLI options, as ryu-manager gets them
    compat.apply_os_ken_fixes()
    if os.environ.get(SWITCH_IO_ENV, "shared") != "threads":
        switch_io.install(compat.framework_module("controller.controller"), hub)
    registered = {opt.name for opt, _ in conf._all_cli_opts()}
    if "app" not in registered:
        conf.register_cli_opts([
            cfg.ListOpt("app-lists", default=[], help="application module name to run"),
            cfg.MultiStrOpt("app", positional=True, default=[],
                            help="application module name to run"),
            cfg.StrOpt("pid-file", default=None, help="pid file name"),
            cfg.BoolOpt("enable-debugger", default=False,
                        help="don't patch the standard library"),
            cfg.StrOpt("user-flags", default=None,
                       help="additional flags file for user applications"),
        ])
    utils = compat.framework_module("utils")
    args = _import_apps_checked(args, conf, utils.import_module, compat)
    from .mastership import config

    with _quiet():  # a bad file or [coordination] value: one line, before any log output
        config.parse(conf, args, prog="coord-manager", project="os_ken",
                     version=f"coord-manager ({compat.version()})")
        config.load(conf)
    _check_listen_port(conf)
    log.init_log()
    if conf.pid_file:
        with open(conf.pid_file, "w") as fh:
            fh.write(str(os.getpid()))
    apps = list(conf.app_lists) + list(conf.app) or [f"{compat.PACKAGE}.controller.ofp_handler"]
    if getattr(hub, "HUB_TYPE", None) == "native":
        signal_wait.install(hub)  # the main thread's join must wake for SIGTERM
    _install_signal_handlers(hub)
    _freeze_startup_objects()
    compat.app_manager.AppManager.run_apps(apps)
    return 0


def _check_frameworks(compat: Any) -> None:
    other = compat.other_framework_loaded()
    if other is not None:
        raise SystemExit(
            f"coord-manager: running {compat.FRAMEWORK}, but an app imported {other}; "
            f"run with --framework {other} (or make the app use one framework)")


def _import_apps_checked(args: list[str], conf: Any, import_module: Any, compat: Any) -> list[str]:
    """`import_apps` plus the mastership app, turning "this app is for the other framework"
    into a clear message even when importing it failed half way (Ryu does not import without
    its eventlet fix)."""
    if MASTERSHIP_APP not in {name for _, name in find_apps(args, conf)}:
        args = [*args, MASTERSHIP_APP]  # coord-manager always coordinates
    try:
        args = import_apps(args, conf, import_module)
        # the package loads its app module on first use: import it now, so the `[coordination]`
        # options it registers exist before the command line is parsed
        import_module(f"{MASTERSHIP_APP}.app")
    except Exception:
        _check_frameworks(compat)
        raise
    _check_frameworks(compat)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `coord-manager`."""
    framework, args = pop_framework(sys.argv[1:] if argv is None else argv)
    try:
        chosen = frameworks.choose(framework)
    except frameworks.FrameworkError as exc:
        raise SystemExit(f"coord-manager: {exc}") from None
    os.environ[frameworks.ENV_VAR] = chosen
    gc.set_threshold(*GC_THRESHOLDS)
    if frameworks.wants_eventlet(chosen) and "--enable-debugger" not in args:
        # Ryu 4.34 cannot run without eventlet; its import-time deprecation notice is noise.
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        import eventlet

        eventlet.monkey_patch()  # before anything creates threads or locks
    from coordination import CoordinationError

    try:
        if chosen == frameworks.RYU:
            return _run_ryu(args)
        return _run_os_ken(args)
    except CoordinationError as exc:
        # a bad config file or value, a bad backend_url, an unreachable server, refused
        # credentials: say it in one line (messages never carry secrets: coordination.urls)
        text = " ".join(str(exc).split())
        print(f"coord-manager: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
