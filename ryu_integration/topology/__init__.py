"""Topology sync: every controller sees the whole network, standbys included.

Pure, no threads and no Ryu (tested alone):
- `view`: the store's records as a `Topology`, and the `ViewChange`s between two states;
- `publisher`: what this controller must write so the store matches what it sees of the
  switches it masters (and nothing else);
- `janitor`: which records nobody owns any more.

Threads, no Ryu:
- `runtime`: the writer and notifier threads around those three, against a `Coordinator`.

Ryu / os-ken glue:
- `ryu_objects`: records to `ryu.topology` objects and events;
- `app`: the Ryu app (loaded as `ryu_integration.topology_sync`);
- `config`: its `[coordination] topology_*` options.
"""
