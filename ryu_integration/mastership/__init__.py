"""Mastership: per-switch elections in the coordination store -> OpenFlow roles.

Each connected switch has an election in the store; its leader asks the switch for MASTER with
`generation_id = term` (OpenFlow 1.2+, so the switch fences a stale master), the others for
SLAVE. Load the app by this package's name:

    coord-manager --config-file ryu.conf ryu_integration.mastership my_app

Pure, framework-free (importable and tested without Ryu or os-ken):
- `fsm`: the per-switch state machine (no Ryu, no I/O, no clock);
- `handover`: the planned-handover machines (source and target);
- `moves`, `balancer`: move records, and the balancer's reads and plan over the public store API
  (also used by `coordctl`); the policies themselves are `coordination.balancing`;
- `config`: the ryu.conf `[coordination]` options, parsed and validated into `Settings`;
- `reads`: where a switch's leader read is answered from (a listener's report, the store).

Ryu / os-ken glue:
- `roles`: the per-version OpenFlow role messages (`RoleCodec`, `CODECS`, `codec_of`);
- `inputs`, `handover_inputs`, `balancer_inputs`: the typed events that carry coordination
  callbacks and store results to the app's event loop, one class per kind;
- `guard`: the API for other apps (`EventMastershipChanged`, `is_master`, `only_master`,
  `send_if_master`, `coordinator`, `instance`, `election_name`, `count_records_with`);
- `tap`: sorts a switch's packet-ins at a handover's cut before other apps see them;
- `handover_glue`, `balancer_glue`: move records and OpenFlow -> the handover machines; the
  cluster's balancer;
- `app`: the Ryu app: Ryu events -> state machines, their actions -> OpenFlow and store work.

Other apps: listen for `EventMastershipChanged`, or call `is_master(dpid)`, or decorate a handler
with `@only_master` / send with `send_if_master(datapath, msg)`; all importable from here.

Importing this package imports no framework: the glue names above, and the app class, are
loaded on first use (PEP 562), so the pure modules can live here.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the glue module that defines it (imported on first use)
_GLUE = {
    "STOP_TIMEOUT": "app", "TICK": "app", "raise_open_file_limit": "app",
    "EventMastershipChanged": "guard", "coordinator": "guard", "count_records_with": "guard",
    "election_name": "guard", "instance": "guard", "is_master": "guard",
    "only_master": "guard", "send_if_master": "guard",
    "CODECS": "roles", "RoleCodec": "roles", "codec_of": "roles",
}

__all__ = [  # noqa: RUF022 (grouped as `_GLUE`)
    "STOP_TIMEOUT", "TICK", "raise_open_file_limit",
    "EventMastershipChanged", "coordinator", "count_records_with", "election_name", "instance",
    "is_master", "only_master", "send_if_master",
    "CODECS", "RoleCodec", "codec_of",
    "Mastership",
]


def __getattr__(name: str) -> Any:
    if name == "Mastership":
        value: Any = _loadable_app()
    elif name in _GLUE:
        value = getattr(importlib.import_module(f"{__name__}.{_GLUE[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def _loadable_app() -> type:
    """`app.Mastership`, as a class of this module: Ryu and os-ken load only the apps *defined*
    in the module named on the command line (`cls.__module__ == module.__name__`), and find
    them by listing the module (`dir`), so this runs when `coord-manager` loads the package.
    The class name, and so the app name other apps look up ("Mastership"), is unchanged;
    handlers, `_EVENTS` and the instance registration are inherited."""
    from .app import Mastership as Base

    return type("Mastership", (Base,), {"__module__": __name__, "__qualname__": "Mastership",
                                        "__doc__": Base.__doc__})
