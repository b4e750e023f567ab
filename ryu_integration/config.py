"""ryu.conf options of the coordination apps: group `[coordination]`.

The mastership app registers them on the framework's `cfg.CONF` when it is imported. They are
config-file options, not CLI options, so registering them after the command line was parsed (as
`ryu-manager` imports app modules) is fine. `load()` turns them into a validated `Settings`.
Framework-free (plain oslo.config, which Ryu and os-ken both wrap), so it is unit-testable.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

from oslo_config import cfg

from .mastership_fsm import Timing

GROUP = "coordination"
#: The backend used when `backend_url` is not set: the embedded store (SQLite + unix sockets in
#: a per-user directory), shared by every controller process on this host, nothing to install.
#: Several hosts need zookeeper:// or etcd3://. (`memory://` is per process: one controller only.)
DEFAULT_BACKEND_URL = "embedded://"
#: OpenFlow's IANA port, what Ryu/os-ken listen on when `ofp_tcp_listen_port` is unset.
DEFAULT_OFP_PORT = 6653

OPTS = [
    cfg.StrOpt("backend_url", default=DEFAULT_BACKEND_URL,
               help="Coordination backend: zookeeper://h1:2181,h2:2181/sdn, etcd3://h1:2379/sdn, "
                    "embedded:///var/lib/sdn (one host, the default: embedded:// in a per-user "
                    "directory) or memory:// (one process). Query options such as "
                    "?session_timeout=4 go to the driver."),
    cfg.StrOpt("member_id", default=None,
               help="This controller's identity in elections; must differ between controllers. "
                    "Default: <hostname>:<ofp_tcp_listen_port>."),
    cfg.FloatOpt("session_timeout", default=None, min=0.1,
                 help="Seconds before the backend declares a silent controller dead; bounds "
                      "failover after a crash. Unset: the URL's value or the driver default."),
    cfg.IntOpt("priority", default=0, min=0, max=999_999,
               help="Election priority (higher wins; ties go to the earliest candidate). A "
                    "higher-priority controller takes mastership over from a lower one."),
    cfg.FloatOpt("role_request_timeout", default=3.0, min=0.05,
                 help="Seconds to wait for a ROLE_REPLY before re-sending the request."),
    cfg.FloatOpt("role_retry_max", default=5.0, min=0.05,
                 help="Longest pause, in seconds, between retries of a refused role request "
                      "(backoff doubles from 0.2 s up to this)."),
    cfg.FloatOpt("reassert_interval", default=30.0, min=0.1,
                 help="Seconds between periodic re-assertions of each switch's role."),
    cfg.BoolOpt("hold_on_suspend", default=True,
                help="While the backend connection is down but the session may live "
                     "(SUSPENDED): true = masters stop programming until it returns; false = "
                     "keep programming and rely on the switch to fence a deposed master."),
    cfg.BoolOpt("publish_mastership", default=True,
                help="Write a Mastership record to the topology store once the switch confirms."),
]


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

    def connect_options(self) -> dict[str, Any]:
        """Keyword options for `coordination.connect` (only those set, so URL values apply)."""
        return {} if self.session_timeout is None else {"session_timeout": self.session_timeout}


def default_member_id(ofp_port: int | None) -> str:
    """`<hostname>:<OpenFlow listen port>`: unique per controller process on one host."""
    return f"{socket.gethostname()}:{ofp_port or DEFAULT_OFP_PORT}"


def load(conf: cfg.ConfigOpts) -> Settings:
    """Read and validate the `[coordination]` options (and the OpenFlow port for the default
    member id)."""
    group = conf[GROUP]
    ofp_port = getattr(conf, "ofp_tcp_listen_port", None)  # NoSuchOptError is an AttributeError
    member_id = (group.member_id or "").strip() or default_member_id(ofp_port)
    timing = Timing(
        role_request_timeout=group.role_request_timeout,
        retry_initial=min(0.2, group.role_retry_max),
        retry_max=group.role_retry_max,
        reassert_interval=group.reassert_interval,
        hold_on_suspend=group.hold_on_suspend,
    )
    return Settings(
        backend_url=(group.backend_url or DEFAULT_BACKEND_URL).strip(),
        member_id=member_id,
        session_timeout=group.session_timeout,
        priority=group.priority,
        timing=timing,
        publish_mastership=group.publish_mastership,
    )
