"""ZooKeeper driver (kazoo): `zookeeper://h1:2181,h2:2181/prefix?session_timeout=4`.

Layout under the prefix (default `/coordination`):
    members/<member>                                      ephemeral, JSON MemberInfo
    elections/<name>/candidates/c-<rank>-<member>-<seq>   ephemeral sequential
    elections/<name>/leader                               persistent, JSON {member_id, candidate, term}
    topology/<kind>/<key>                                 persistent, JSON record

Modules: `coordinator` (the kazoo session and its policy, membership), `election` (elections,
run in batches; terms), `store` (topology records and watches), `client` (kazoo with deadlines,
pipelines and transactions).
"""

from .coordinator import ZooKeeperCoordinator
from .election import candidate_prefix, parse_candidate

__all__ = ["ZooKeeperCoordinator", "candidate_prefix", "parse_candidate"]
