"""The topology sync Ryu app under the name users give `coord-manager` (or `ryu-manager`):

    coord-manager --observe-links --config-file ryu.conf ryu_integration.topology_sync my_app

The app lives in `ryu_integration.topology.app`; see the `ryu_integration.topology` package for
the pure parts it is glue around. Ryu loads the apps *defined* in the module it is given, hence
the subclass here rather than a re-export.
"""

from __future__ import annotations

from .topology import app as _app
from .topology.app import get_topology, instance

__all__ = ["TopologySync", "get_topology", "instance"]


class TopologySync(_app.TopologySync):
    """`ryu_integration.topology.app.TopologySync`, loadable by this module's name."""
