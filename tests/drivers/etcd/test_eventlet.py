"""The etcd driver in an eventlet-patched process, as ryu-manager runs it: `auto` picks the
grpc-gateway transport there (gRPC would hang), handover and a topology watch work, and many
elections share one watch (one HTTP connection) per member. Each case runs in a subprocess
against a real etcd server."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.requirements import missing
from tests.servers.etcd import EtcdServer

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


EVENTLET_SCRIPT = r'''
import eventlet
eventlet.monkey_patch()
import json, sys, threading, time
import coordination
from coordination import Change, SessionState, Switch

url = sys.argv[1]
out = {}
a = coordination.connect(url, "a", lease_ttl=2)
b = coordination.connect(url, "b", lease_ttl=2)
out["transports"] = [a.transport, b.transport]
changed = threading.Event()
a.add_session_listener(lambda state: changed.set())
elected = {"a": threading.Event(), "b": threading.Event()}
terms = {}

def on_elected(name):
    def callback(lead):
        terms[name] = lead.term
        elected[name].set()
    return callback

a.election("dp-1").campaign(on_elected=on_elected("a"))
assert elected["a"].wait(15), "a was not elected"
b.election("dp-1").campaign(on_elected=on_elected("b"))
# the lease must be kept alive by the green keep-alive thread: no state change for 1.5 TTL
out["session_changed"] = changed.wait(3.0)
out["session"] = a.session_state.value
events = []
got_snapshot, got_change = threading.Event(), threading.Event()

def on_topology(event):
    events.append(type(event).__name__)
    got_snapshot.set()
    if isinstance(event, Change):
        got_change.set()

b.topology.watch(on_topology)
assert got_snapshot.wait(15), "no snapshot arrived"  # else the put below may land in it
started = time.monotonic()
a.election("dp-1").resign()
assert elected["b"].wait(15), "b was not elected after a resigned"
out["handover_ms"] = (time.monotonic() - started) * 1000
a.topology.put(Switch(dpid=1, owner="a", term=terms["a"]))
assert got_change.wait(15), "no topology change arrived"
out["terms"] = [terms["a"], terms["b"]]
out["events"] = events
out["leader"] = b.election("dp-1").leader().member_id
out["grpc_imported"] = "grpc" in sys.modules
a.close()
b.close()
print("RESULT " + json.dumps(out))
'''


@pytest.mark.parametrize("transport", ["auto", "gateway"])
def test_eventlet_process_hands_over_and_watches(etcd: EtcdServer, transport: str) -> None:
    """ryu-manager's situation: eventlet.monkey_patch() first, then the driver (auto picks the
    gateway there; gRPC would hang). Handover and a topology watch must work."""
    require_module("eventlet")
    url = f"etcd3://{etcd.endpoint}/eventlet-{uuid.uuid4().hex[:8]}?transport={transport}"
    proc = subprocess.run([sys.executable, "-c", EVENTLET_SCRIPT, url], capture_output=True,
                          text=True, timeout=90, cwd=str(ROOT), check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["transports"] == ["gateway", "gateway"]
    assert out["session_changed"] is False and out["session"] == "connected"
    assert out["terms"][1] > out["terms"][0]
    assert out["leader"] == "b"
    assert out["events"] == ["Snapshot", "Change"]
    assert out["grpc_imported"] is False


EVENTLET_SCALE_SCRIPT = r'''
import eventlet
eventlet.monkey_patch()
import json, sys, threading, time
import coordination
from coordination import CampaignRequest

url, count = sys.argv[1], int(sys.argv[2])
names = [f"dp-{i}" for i in range(count)]
a = coordination.connect(url, "a", lease_ttl=3)
b = coordination.connect(url, "b", lease_ttl=3)
terms = {"a": {}, "b": {}}
done = {"a": threading.Event(), "b": threading.Event()}
b_watching = threading.Event()
b_watch = b.client.watch

def watch(*args, **kwargs):  # tells when b's one watch for all its elections has started
    handle = b_watch(*args, **kwargs)
    b_watching.set()
    return handle
b.client.watch = watch

def on_elected(member, name):
    def callback(lead):
        terms[member][name] = lead.term
        if len(terms[member]) == count:
            done[member].set()
    return callback

for member, coordinator in (("a", a), ("b", b)):
    coordinator.campaign_many(CampaignRequest(n, on_elected=on_elected(member, n)) for n in names)
    if member == "a":
        assert done["a"].wait(30), f"a led {len(terms['a'])} of {count}"
b_watching.wait(10)  # b's watch starts right after its candidacies are in
out = {"watches": [a.status()["watches"], b.status()["watches"]]}
a.close()  # resigns every election at once; b takes all of them over
assert done["b"].wait(30), f"b led {len(terms['b'])} of {count}"
out["grew"] = all(terms["b"][n] > terms["a"][n] for n in names)
out["grpc_imported"] = "grpc" in sys.modules
b.close()
print("RESULT " + json.dumps(out))
'''


def test_eventlet_process_many_elections_over_one_connection(etcd: EtcdServer) -> None:
    """ryu-manager with many switches: the gateway transport batches under eventlet too, and a
    member holds one watch (one HTTP connection) for all its elections, not one per election."""
    require_module("eventlet")
    url = f"etcd3://{etcd.endpoint}/eventlet-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run([sys.executable, "-c", EVENTLET_SCALE_SCRIPT, url, "600"],
                          capture_output=True, text=True, timeout=120, cwd=str(ROOT), check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
    out = json.loads(lines[-1][len("RESULT "):])
    assert out == {"watches": [1, 1], "grew": True, "grpc_imported": False}


def require_module(name: str) -> None:
    """Check that `name` is installed (without importing it here), or skip the test (fail
    under CI=true, like every missing requirement)."""
    if importlib.util.find_spec(name) is None:
        missing(f"python module {name!r} is not installed; run `make setup`")
