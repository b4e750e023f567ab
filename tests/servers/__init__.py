"""Real-server test fixtures: ZooKeeper, etcd, a TCP fault proxy and private Open vSwitch."""
