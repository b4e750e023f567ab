"""etcd v3 driver: `etcd3://h1:2379,h2:2379/prefix?lease_ttl=4`.

Layout under the prefix (default `/coordination`):
    members/<member>                              on the member's lease, JSON MemberInfo
    elections/<name>/candidates/<rank>/<lease>    on the member's lease, JSON {member_id, priority}
    elections/<name>/leader                       no lease, JSON {member_id, candidate, create_revision}
    topology/<kind>/<key>                         no lease, JSON record

Modules: `coordinator` (the lease, its session policy, membership), `election` (elections, run
in batches from `cache`, a mirror of every election kept by one watch; terms), `store`
(topology records and watches), `client` (the client interface) with its two transports
`grpc_transport` (threaded processes) and `gateway_transport` (etcd's JSON gateway, for
eventlet-patched processes such as ryu-manager). See docs/etcd.md.
"""

from .coordinator import EtcdCoordinator, choose_transport, make_client

__all__ = ["EtcdCoordinator", "choose_transport", "make_client"]
