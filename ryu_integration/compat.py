"""The one place that imports Ryu or os-ken: pick a framework and re-export what apps need.

Why: Ryu 4.34 is unmaintained (it needs old build pins and an eventlet fix on Python 3.11) and
os-ken is its maintained fork with the same layout under another package name. Every other module
of `ryu_integration` imports from here, so supporting both is this one file.

Choice, made once when this module is first imported:
1. the environment variable `COORD_FRAMEWORK` = `ryu` | `os-ken` (`coord-manager --framework`
   sets it before importing anything);
2. else `ryu` if it is importable, else `os-ken`. Ryu first, because the drop-in story is "replace
   `ryu-manager` with `coord-manager`": someone who has Ryu installed runs Ryu apps, which import
   `ryu.*` and would not register with os-ken's app manager.

Exports: `FRAMEWORK`, `RyuApp` (the app base class), `app_manager`, `ofp_event`, `set_ev_cls`,
`register_service`, `HANDSHAKE_DISPATCHER`, `CONFIG_DISPATCHER`, `MAIN_DISPATCHER`,
`DEAD_DISPATCHER`, `ofproto_v1_3`, `ofproto_v1_3_parser`, `ofproto_v1_0` (with the Nicira
extension's constants), `ofproto_v1_0_parser`, `ofproto_v1_2`, `ofproto_v1_4`, `ofproto_v1_5`
(the role messages of every version), `hub`, `cfg`, `EventBase`,
`packet`, `ethernet`, `ether_types` (packet library), `uses_eventlet()`, `version()`,
`framework_module()`.

Importing this module does not monkey-patch anything: `coord-manager` (or ryu-manager) patches
for eventlet before importing it.
"""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType
from typing import Any

from .frameworks import ENV_VAR, FRAMEWORKS, OS_KEN, PACKAGES, RYU, FrameworkError, choose

__all__ = [
    "CONFIG_DISPATCHER",
    "DEAD_DISPATCHER",
    "ENV_VAR",
    "FRAMEWORK",
    "FRAMEWORKS",
    "HANDSHAKE_DISPATCHER",
    "MAIN_DISPATCHER",
    "OS_KEN",
    "PACKAGE",
    "PACKAGES",
    "RYU",
    "EventBase",
    "FrameworkError",
    "RyuApp",
    "app_manager",
    "apply_os_ken_fixes",
    "apply_ryu_fixes",
    "cfg",
    "ether_types",
    "ethernet",
    "framework_module",
    "hub",
    "ofp_event",
    "ofproto_v1_0",
    "ofproto_v1_0_parser",
    "ofproto_v1_2",
    "ofproto_v1_3",
    "ofproto_v1_3_parser",
    "ofproto_v1_4",
    "ofproto_v1_5",
    "other_framework_loaded",
    "packet",
    "register_service",
    "set_ev_cls",
    "skip_thread_lookups_in_logs",
    "uses_eventlet",
    "version",
]


def apply_ryu_fixes() -> None:
    """Make Ryu 4.34 importable with current eventlet (idempotent).

    `ryu.app.wsgi` (imported by `ryu.cmd.manager`) does `from eventlet.wsgi import ALREADY_HANDLED`,
    a sentinel eventlet removed (its websocket handler now returns an empty body and flags the
    request as handled itself). An empty, immutable iterable is what the server expects there.
    """
    import eventlet.wsgi

    if not hasattr(eventlet.wsgi, "ALREADY_HANDLED"):
        eventlet.wsgi.ALREADY_HANDLED = ()


def apply_os_ken_fixes() -> None:
    """Make os-ken notice a dropped switch connection at once (idempotent; the launcher calls
    it).

    `Datapath.serve()` joins its send thread once the receive loop ends, and stops it with
    `hub.kill()`, a no-op on os-ken's native hub (threads cannot be killed). The send thread
    sits in `send_q.get()` until something is sent, so the switch's DEAD state (and with it the
    end of this controller's candidacy) waited for the next message to that switch: up to
    `reassert_interval`, 30 s, with the switch masterless meanwhile. When the receive loop ends,
    a close request now wakes the send loop, which ends as it does after any close.
    """
    datapath = _import("controller.controller").Datapath
    if getattr(datapath, "_coord_wakes_sender", False):
        return
    receive = datapath._recv_loop

    def _recv_loop(self: Any) -> None:
        try:
            receive(self)
        finally:
            self.send(b"", close_socket=True)  # discarded (logged) if sending already ended

    datapath._recv_loop = _recv_loop
    datapath._coord_wakes_sender = True


FRAMEWORK: str = choose()
#: Top-level package of the chosen framework (`ryu` / `os_ken`).
PACKAGE: str = PACKAGES[FRAMEWORK]


def _import(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGES[FRAMEWORK]}.{name}")


if FRAMEWORK == RYU:
    apply_ryu_fixes()

hub: Any = _import("lib.hub")
cfg: Any = _import("cfg")
app_manager: Any = _import("base.app_manager")
ofp_event: Any = _import("controller.ofp_event")
ofproto_v1_3: Any = _import("ofproto.ofproto_v1_3")
ofproto_v1_3_parser: Any = _import("ofproto.ofproto_v1_3_parser")
ofproto_v1_0: Any = _import("ofproto.ofproto_v1_0")
ofproto_v1_0_parser: Any = _import("ofproto.ofproto_v1_0_parser")
ofproto_v1_2: Any = _import("ofproto.ofproto_v1_2")
ofproto_v1_4: Any = _import("ofproto.ofproto_v1_4")
ofproto_v1_5: Any = _import("ofproto.ofproto_v1_5")
packet: Any = _import("lib.packet.packet")
ethernet: Any = _import("lib.packet.ethernet")
ether_types: Any = _import("lib.packet.ether_types")
_handler: Any = _import("controller.handler")
_event: Any = _import("controller.event")

#: The application base class (`ryu.base.app_manager.RyuApp` / `os_ken...OSKenApp`).
RyuApp: Any = app_manager.RyuApp if FRAMEWORK == RYU else app_manager.OSKenApp
EventBase: Any = _event.EventBase
set_ev_cls: Any = _handler.set_ev_cls
#: `register_service(module)`: apps consuming events of the calling module auto-load `module`.
#: Re-exported unwrapped: it inspects its caller's frame.
register_service: Any = _handler.register_service
HANDSHAKE_DISPATCHER: str = _handler.HANDSHAKE_DISPATCHER
CONFIG_DISPATCHER: str = _handler.CONFIG_DISPATCHER
MAIN_DISPATCHER: str = _handler.MAIN_DISPATCHER
DEAD_DISPATCHER: str = _handler.DEAD_DISPATCHER


def uses_eventlet() -> bool:
    """True when the framework's hub is eventlet (green threads, monkey-patched stdlib).

    Ryu always runs on eventlet; os-ken only with `OSKEN_HUB_TYPE=eventlet` (its default is
    native OS threads). Code that blocks must know which: under eventlet a blocking call that is
    not green stalls every app in the process.
    """
    return getattr(hub, "HUB_TYPE", "eventlet") == "eventlet"


def skip_thread_lookups_in_logs() -> bool:
    """Under eventlet, stop every log record from asking `threading.current_thread()`, unless a
    configured handler's format shows the thread (`%(thread)d`, `%(threadName)s`); True if it
    was stopped. Call once logging is configured.

    eventlet's patched `current_thread` swaps modules in `sys.modules` on every call: measured
    at a sixth of a Ryu controller's CPU while it took 1,700 switches over from a dead peer
    (five log lines per switch). Under native threads the lookup is cheap and is kept.
    """
    if not uses_eventlet():
        return False
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values()
                                      if isinstance(lg, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            fmt = getattr(handler.formatter, "_fmt", None) or ""
            if "thread" in fmt.lower():
                return False
    logging.logThreads = False
    return True


def framework_module(suffix: str) -> ModuleType:
    """Import `<framework package>.<suffix>` (e.g. `controller.controller`) for the launcher."""
    return _import(suffix)


def version() -> str:
    """`ryu 4.34` / `os-ken 4.2.2` (the installed distribution's version)."""
    from importlib import metadata

    try:
        return f"{FRAMEWORK} {metadata.version(FRAMEWORK)}"
    except metadata.PackageNotFoundError:
        return f"{FRAMEWORK} (unknown version)"


def other_framework_loaded() -> str | None:
    """The *other* framework's name if something imported it, else None.

    Apps written for Ryu import `ryu.*`; run under os-ken they would silently never start.
    The launcher checks this after importing the apps and says which `--framework` to use.
    """
    for framework, package in PACKAGES.items():
        if framework != FRAMEWORK and package in sys.modules:
            return framework
    return None
