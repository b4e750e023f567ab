"""The mastership app: per-switch elections in the coordination store -> OpenFlow roles.

Each connected switch has an election in the store; its leader asks the switch for MASTER with
`generation_id = term` (OpenFlow 1.2+, so the switch fences a stale master), the others for
SLAVE. Load it by this package's name:

    coord-manager --config-file ryu.conf ryu_integration.mastership my_app

Pure, and framework-free store code, kept outside this package so that code without a
framework (`config`, `coordctl`) imports them without importing Ryu or os-ken (importing this
package loads the app):
- `ryu_integration.mastership_fsm`: the per-switch state machine (no Ryu, no I/O, no clock);
- `ryu_integration.handover`: the planned-handover machines (source and target);
- `coordination.balancing`: the balancing policies and the damping rule;
- `ryu_integration.moves` / `ryu_integration.balancer`: move records and the balancer's reads
  and plan, over the public store API.

Ryu / os-ken glue (this package):
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
"""

from __future__ import annotations

from . import app as _app
from .app import STOP_TIMEOUT, TICK, raise_open_file_limit
from .guard import (
    EventMastershipChanged,
    coordinator,
    count_records_with,
    election_name,
    instance,
    is_master,
    only_master,
    send_if_master,
)
from .roles import CODECS, RoleCodec, codec_of

__all__ = [
    "CODECS",
    "STOP_TIMEOUT",
    "TICK",
    "EventMastershipChanged",
    "Mastership",
    "RoleCodec",
    "codec_of",
    "coordinator",
    "count_records_with",
    "election_name",
    "instance",
    "is_master",
    "only_master",
    "raise_open_file_limit",
    "send_if_master",
]


class Mastership(_app.Mastership):
    """`ryu_integration.mastership.app.Mastership`, loadable by this package's name.

    Ryu and os-ken load only the apps *defined* in the module named on the command line
    (`cls.__module__ == module.__name__`), so a re-export would load nothing. The class name,
    and so the app name other apps look up ("Mastership"), is unchanged; handlers, `_EVENTS` and
    the instance registration are inherited."""
