"""ryu.conf options of topology sync: `[coordination] topology_*`.

Config-file options (not CLI), registered on the framework's `cfg.CONF` when this module is
imported, next to the mastership options (`mastership/config.py`) in the same group. `load()`
resolves them into a `SyncSettings`. The view dump file can also be named by the environment variable
`COORD_TOPOLOGY_DUMP`, which wins (handy when several controllers share one config file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..compat import cfg
from ..mastership.config import GROUP
from .janitor import BY_MASTERSHIP, BY_SWITCH_OWNER
from .runtime import DUMP_ENV, TopologySettings

_DEFAULTS = TopologySettings()

OPTS = [
    cfg.FloatOpt("topology_batch_delay", default=_DEFAULTS.batch_delay, min=0.0,
                 help="Shortest time between two batches of topology writes. The first "
                      "observation after a quiet spell is written at once; later ones are "
                      "collected until this long after the last batch (a link that flaps "
                      "within it costs no store write). Whatever arrives while a batch is "
                      "being written joins the next one."),
    cfg.FloatOpt("topology_reconcile_window", default=_DEFAULTS.reconcile_window, min=0.0,
                 help="After a failover, seconds the new master keeps the links and hosts its "
                      "predecessor published, while its own discovery confirms them; the "
                      "unconfirmed are then deleted. Keep it above Ryu's link timeout (10 s)."),
    cfg.FloatOpt("topology_grace_period", default=_DEFAULTS.grace_period, min=0.0,
                 help="Seconds a switch may stay without any owner (no live controller masters "
                      "it) before its records are removed from the store."),
    cfg.BoolOpt("topology_janitor", default=_DEFAULTS.janitor,
                help="Take part in the election of the controller that removes records of "
                     "unowned switches after the grace period."),
    cfg.FloatOpt("topology_resync_interval", default=_DEFAULTS.resync_interval, min=0.0,
                 help="Seconds between comparisons of everything this master sees with its view "
                      "of the store (a safety net: every change already triggers the comparison "
                      "of what it touches; costs a plan per mastered switch, no store reads). "
                      "0: off."),
    cfg.FloatOpt("topology_scan_interval", default=0.0, min=0.0,
                 help="Seconds between full re-reads of Ryu's own discovery state (a safety "
                      "net: it is read once at start, then followed through its events and "
                      "its host table). 0: off."),
    cfg.IntOpt("topology_max_backlog", default=_DEFAULTS.max_backlog, min=1,
               help="Store events applications may fall behind before they are resynchronised "
                    "from a snapshot of the view (logged)."),
    cfg.StrOpt("topology_dump_file", default=None,
               help="If set, the view is written there as JSON after every change (tests, "
                    "debugging). The environment variable COORD_TOPOLOGY_DUMP wins."),
    cfg.BoolOpt("topology_takeover_events", default=True,
                help="Make the sync app the only source of ryu.topology events (they then "
                     "describe the global view on every controller, standbys included) instead "
                     "of the local switches app."),
    cfg.BoolOpt("topology_serve_api", default=True,
                help="Answer ryu.topology.api get_switch/get_link/get_host from the global view."),
    cfg.BoolOpt("topology_discovery_master_only", default=True,
                help="Send LLDP only out of switches this controller masters (a slave's "
                     "packet-outs are refused by the switch anyway)."),
    cfg.FloatOpt("topology_lldp_pace", default=1.0, min=0.0,
                 help="Under os-ken's native hub, whose timed waits never time out, wake the "
                      "discovery loops every this many seconds so LLDP repeats and dead links "
                      "age out. 0: off. Ignored under eventlet."),
]


def register(conf: Any = None) -> None:
    """Register the options on `conf` (default: the framework's CONF); safe to repeat."""
    (conf or cfg.CONF).register_opts(OPTS, group=GROUP)


register()


@dataclass(frozen=True)
class SyncSettings:
    """The app's settings: the runtime's, plus what only the Ryu glue uses."""

    runtime: TopologySettings
    scan_interval: float
    takeover_events: bool
    serve_api: bool
    discovery_master_only: bool
    lldp_pace: float


def load(conf: Any = None, publish_mastership: bool = True) -> SyncSettings:
    """Read and validate the options. Without Mastership records (`publish_mastership =
    false`) the janitor judges ownership by the owner of each switch's record."""
    conf = conf or cfg.CONF
    group = conf[GROUP]
    dump = os.environ.get(DUMP_ENV) or group.topology_dump_file
    runtime = TopologySettings(
        batch_delay=group.topology_batch_delay,
        reconcile_window=group.topology_reconcile_window,
        grace_period=group.topology_grace_period,
        janitor=group.topology_janitor,
        janitor_ownership=BY_MASTERSHIP if publish_mastership else BY_SWITCH_OWNER,
        resync_interval=group.topology_resync_interval,
        max_backlog=group.topology_max_backlog,
        dump_file=dump or None,
    )
    return SyncSettings(
        runtime=runtime,
        scan_interval=group.topology_scan_interval,
        takeover_events=group.topology_takeover_events,
        serve_api=group.topology_serve_api,
        discovery_master_only=group.topology_discovery_master_only,
        lldp_pace=group.topology_lldp_pace,
    )
