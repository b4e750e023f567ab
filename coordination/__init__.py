"""Coordination for multi-controller SDN: elections with fencing terms and a shared topology.

    import coordination
    with coordination.connect("zookeeper://127.0.0.1:2181/sdn", member_id="c1") as coord:
        coord.election("dp-1").campaign(on_elected=lambda lead: print("master, term", lead.term))
"""

from .api import Coordinator
from .connect import connect
from .election import MAX_PRIORITY, CampaignRequest, Election
from .errors import (
    BackendConnectionError,
    BadURLError,
    ClosedError,
    ConfigurationError,
    ConflictError,
    CoordinationError,
    InvalidRecordError,
    NotLeaderError,
    NotSupportedError,
    OperationTimeoutError,
    SessionLostError,
    StaleTermError,
    UnknownBackendError,
)
from .loader import installed_backends
from .records import SCHEMA_VERSION, Host, Link, Mastership, Port, Record, Switch
from .topology import (
    Change,
    DeleteRecord,
    PutRecord,
    Snapshot,
    TopologyEvent,
    TopologyStore,
    TopologyWatch,
)
from .types import Candidate, Leadership, MemberInfo, SessionState
from .urls import BackendURL, parse_url

__all__ = [
    "MAX_PRIORITY",
    "SCHEMA_VERSION",
    "BackendConnectionError",
    "BackendURL",
    "BadURLError",
    "CampaignRequest",
    "Candidate",
    "Change",
    "ClosedError",
    "ConfigurationError",
    "ConflictError",
    "CoordinationError",
    "Coordinator",
    "DeleteRecord",
    "Election",
    "Host",
    "InvalidRecordError",
    "Leadership",
    "Link",
    "Mastership",
    "MemberInfo",
    "NotLeaderError",
    "NotSupportedError",
    "OperationTimeoutError",
    "Port",
    "PutRecord",
    "Record",
    "SessionLostError",
    "SessionState",
    "Snapshot",
    "StaleTermError",
    "Switch",
    "TopologyEvent",
    "TopologyStore",
    "TopologyWatch",
    "UnknownBackendError",
    "connect",
    "installed_backends",
    "parse_url",
]
