"""Move records (ryu_integration/mastership/moves.py, `TopologyStore.compare_and_set`), the handover
options in ryu.conf, and `coordctl move`'s refusals, on the memory and embedded stores."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import coordination
from coordination.api import Coordinator
from coordination.records import Move, Switch
from coordination.testing import Recorder
from ryu_integration import cli
from ryu_integration.mastership import config, moves
from tests.ryu.test_mastership_config import make_conf

_names = itertools.count()
WAIT = 10.0


@pytest.fixture(params=["memory", "embedded"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return (f"memory://moves-{next(_names)}" if request.param == "memory"
            else f"embedded://{tmp_path}/store")


@pytest.fixture
def pair(url: str) -> Iterator[tuple[Coordinator, Coordinator]]:
    """Two members campaigning for switch 1: a leads, b follows."""
    with coordination.connect(url, "a") as a, coordination.connect(url, "b") as b:
        a.election("dpid-0000000000000001").campaign(0)
        b.election("dpid-0000000000000001").campaign(0)
        yield a, b


def move(step: str = "requested", move_id: int = 5, owner: str = "x") -> Move:
    return Move(owner=owner, term=1, dpid=1, id=move_id, source="a", target="b", step=step)


def test_compare_and_set_writes_only_over_the_expected_record(url: str) -> None:
    with coordination.connect(url, "m") as coord:
        topo = coord.topology
        assert topo.compare_and_set(None, move())
        assert not topo.compare_and_set(None, move(move_id=6))  # exists: not created again
        assert not topo.compare_and_set(move(move_id=6), move(step="ready"))  # other move
        assert topo.compare_and_set(move(), move(step="ready"))
        assert not topo.compare_and_set(move(), move(step="aborted"))  # stale expectation
        assert topo.get("move", "0000000000000001") == move(step="ready")
        assert topo.compare_and_set(move(step="ready"), None)  # delete
        assert topo.get("move", "0000000000000001") is None
        assert topo.compare_and_set(None, None, kind="move", key="0000000000000001")
        with pytest.raises(coordination.CoordinationError):
            topo.compare_and_set(move(), Switch(dpid=1))


def test_moves_are_not_topology(url: str) -> None:
    """Default listings and watches cover the topology kinds only; `kinds=["move"]` sees moves."""
    with coordination.connect(url, "m") as coord:
        everything, only_moves = Recorder("all"), Recorder("moves")
        coord.topology.watch(everything)
        coord.topology.watch(only_moves, kinds=["move"])
        coord.topology.compare_and_set(None, move())
        coord.topology.put(Switch(dpid=1, owner="m", term=1))
        only_moves.wait_for(lambda items: any(_change(e, "move") for e in items), WAIT)
        everything.wait_for(lambda items: any(_change(e, "switch") for e in items), WAIT)
        assert not any(_change(e, "move") for e in everything.items)
        assert [r.KIND for r in coord.topology.list()] == ["switch"]
        assert coord.topology.list("move") == [move()]


def _change(event: object, kind: str) -> bool:
    """`event` brings a record of `kind` (a watch may start after the write: its snapshot)."""
    if isinstance(event, coordination.Snapshot):
        return any(r.KIND == kind for r in event.records)
    return isinstance(event, coordination.Change) and event.kind == kind


def test_a_malformed_move_record_is_skipped(url: str) -> None:
    with coordination.connect(url, "m") as coord:
        coord._driver_record_store().create("move/0000000000000001",
                                            b'{"schema":1,"kind":"move","dpid":1,"step":"x"}')
        assert moves.current(coord, 1) is None
        assert coord.topology.list("move") == []


def test_request_and_advance(pair: tuple[Coordinator, Coordinator]) -> None:
    a, b = pair
    record = moves.request_move(a, 1, "b", writer="ctl")
    assert (record.source, record.target, record.step) == ("a", "b", "requested")
    assert record.term == a.election("dpid-0000000000000001").leader().term
    with pytest.raises(coordination.CoordinationError, match="in progress"):
        moves.request_move(a, 1, "b", writer="ctl")
    assert moves.advance(b, 1, record.id, "ready", {"requested"}, "b")
    assert not moves.advance(b, 1, record.id, "ready", {"requested"}, "b")  # already ready
    assert not moves.advance(b, 1, record.id + 1, "aborted", {"ready"}, "b")  # another move
    assert moves.advance(a, 1, record.id, "aborted", {"ready"}, "a")
    again = moves.request_move(a, 1, "b", writer="ctl")  # a finished move may be replaced
    assert again.id != record.id


@pytest.mark.parametrize(("dpid", "target", "message"), [
    ("zz", "b", "bad DPID"),
    ("0000000000000001", "nobody", "is not live"),
    ("0000000000000002", "b", "no controller is connected"),
    ("0000000000000001", "a", "already masters"),
])
def test_coordctl_move_refusals_are_one_line(pair, url, capsys, dpid, target, message) -> None:
    assert cli.main(["--url", url, "move", dpid, target]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_coordctl_move_writes_a_request(pair, url, capsys) -> None:
    a, _b = pair
    assert cli.main(["--url", url, "--json", "move", "1", "b"]) == 0
    assert moves.current(a, 1).step == "requested"
    assert '"target": "b"' in capsys.readouterr().out
    # nobody carries it out here: --wait reports that on one line
    moves.advance(a, 1, moves.current(a, 1).id, "aborted", {"requested"}, "a")
    assert cli.main(["--url", url, "move", "1", "b", "--wait", "0.2"]) == 2
    assert "not finished within" in capsys.readouterr().err


def test_handover_options(tmp_path: Path) -> None:
    s = config.load(make_conf(tmp_path, "[coordination]\nhandover_step_timeout = 0.5\n"
                                        "handover_max_buffer = 7\n"
                                        "handover_marker_hard_timeout = 3\n"
                                        "handover_on_stop = false\n"))
    assert (s.handover.step_timeout, s.handover.max_buffer, s.handover.marker_hard_timeout) \
        == (0.5, 7, 3)
    assert not s.handover_on_stop
    defaults = config.load(make_conf(tmp_path, "[coordination]\n"))
    assert defaults.handover.step_timeout == 5.0 and defaults.handover_on_stop


@pytest.mark.parametrize("line", ["handover_step_timeout = 0", "handover_step_timeout = nan",
                                  "handover_max_buffer = -1", "handover_marker_hard_timeout = 0"])
def test_bad_handover_options_are_refused(tmp_path: Path, line: str) -> None:
    conf = make_conf(tmp_path, f"[coordination]\n{line}\n")
    with pytest.raises(coordination.ConfigurationError, match=line.split()[0]):
        config.load(conf)


def test_every_handover_input_has_one_handler() -> None:
    import inspect

    from ryu_integration import mastership
    from ryu_integration.mastership import handover_inputs

    handled: dict[type, int] = {}
    for _name, method in inspect.getmembers(mastership.Mastership, inspect.isfunction):
        for ev_cls in getattr(method, "callers", {}):
            handled[ev_cls] = handled.get(ev_cls, 0) + 1
    kinds = [cls for _, cls in inspect.getmembers(handover_inputs, inspect.isclass)
             if cls.__module__ == handover_inputs.__name__]
    assert len(kinds) == 7
    assert {cls: handled.get(cls, 0) for cls in kinds} == dict.fromkeys(kinds, 1)


# ---- coordctl balance ---------------------------------------------------------------------------


@pytest.fixture
def cluster(url: str) -> Iterator[list[Coordinator]]:
    """Three controllers (candidates of the balancer election) connected to switches 1-6, all
    led by the first: the first-candidate rule's imbalance."""
    from ryu_integration.mastership.balancer import BALANCER_ELECTION

    coords = [coordination.connect(url, f"c{i}") for i in range(3)]
    try:
        for coord in coords:
            coord.election(BALANCER_ELECTION).campaign(0)
            for dpid in range(1, 7):
                coord.election(f"dpid-{dpid:016x}").campaign(0)
        yield coords
    finally:
        for coord in coords:
            coord.close()


def test_coordctl_balance_dry_run_prints_the_plan_and_requests_nothing(cluster, url, capsys):
    assert cli.main(["--url", url, "--json", "balance", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["policy"] == "balanced" and not out["requested"]
    assert out["load"] == {"c0": 2, "c1": 2, "c2": 2}
    assert len(out["moves"]) == 4 and all(m["from"] == "c0" for m in out["moves"])
    assert cluster[0].topology.list("rebalance") == []


def test_coordctl_balance_asks_the_balancer(cluster, url, capsys):
    assert cli.main(["--url", url, "balance"]) == 0
    text = capsys.readouterr().out
    assert "load after: c0=2, c1=2, c2=2" in text and "requested" in text
    [request] = cluster[0].topology.list("rebalance")
    assert request.forced and request.reason == "coordctl balance"


def test_gather_counts_only_controllers_and_switch_elections(cluster) -> None:
    from ryu_integration.mastership import balancer

    inputs = balancer.gather(cluster[0])
    assert [m.member_id for m in inputs.members] == ["c0", "c1", "c2"]
    assert set(inputs.leaders) == {f"dpid-{d:016x}" for d in range(1, 7)}
    assert set(inputs.leaders.values()) == {"c0"}


def test_balance_options(tmp_path: Path) -> None:
    s = config.load(make_conf(tmp_path, "[coordination]\nbalance_policy = preferred\n"
                                        "balance_group = edge=0000000000000001,2\n"
                                        "balance_preferred = @edge=c1:6653,c2:6653\n"
                                        "balance_preferred = 0000000000000002=c3:6653\n"
                                        "balance_settle = 1\nbalance_max_moves = 4\n"))
    assert s.balance.policy.value == "preferred" and s.balance.max_moves == 4
    assert s.balance.damping.settle == 1.0
    assert s.balance.preferred == {"dpid-0000000000000001": ("c1:6653", "c2:6653"),
                                   "dpid-0000000000000002": ("c3:6653",)}  # per switch wins
    assert config.load(make_conf(tmp_path, "[coordination]\n")).balance.policy.value == "first"


@pytest.mark.parametrize(("line", "name"), [
    ("balance_policy = fair", "balance_policy"),
    ("balance_preferred = @nope=a", "balance_preferred"),
    ("balance_preferred = x", "balance_preferred"),
    ("balance_group = g=zz", "balance_group"),
    (("balance_group = g=1\nbalance_group = h=1\nbalance_preferred = @g=a\n"
     "balance_preferred = @h=b"), "balance_group"),
    ("balance_flap_count = 1", "balance_flap_count"),
    ("balance_settle = -1", "balance_settle"),
])
def test_bad_balance_options_are_one_line_errors(tmp_path: Path, line: str, name: str) -> None:
    with pytest.raises(coordination.ConfigurationError) as err:
        config.load(make_conf(tmp_path, f"[coordination]\n{line}\n"))
    text = str(err.value)
    assert "\n" not in text and name in text and "ryu.conf" in text
