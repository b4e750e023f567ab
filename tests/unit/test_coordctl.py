"""coordctl against the in-process backend: tables, JSON, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import coordination
from coordination.cli import main, table
from coordination.testing import Recorder

URL = "memory://coordctl-unit"


@pytest.fixture
def network() -> coordination.Coordinator:
    c1 = coordination.connect(URL, "c1", address="127.0.0.1:6653")
    c2 = coordination.connect(URL, "c2")
    elected = Recorder()
    c1.election("dpid-0000000000000001").campaign(on_elected=elected)
    lead = elected.wait_count(1)[0]
    c2.election("dpid-0000000000000001").campaign()
    c1.topology.put(coordination.Mastership(dpid=1, owner="c1", term=lead.term))
    c1.topology.put(coordination.Switch(dpid=1, owner="c1", term=lead.term))
    yield c1
    c2.close()
    c1.close()


def test_masters_table_and_json(network: coordination.Coordinator, capsys) -> None:
    assert main(["--url", URL, "masters"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["dpid", "master", "term", "confirmed", "candidates"]
    assert "0000000000000001  c1" in out and "True" in out
    assert main(["--url", URL, "--json", "masters"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["master"] == "c1" and rows[0]["candidates"] == ["c1", "c2"]


def test_members_topology_elections(network: coordination.Coordinator, capsys) -> None:
    assert main(["--url", URL, "--json", "members"]) == 0
    members = json.loads(capsys.readouterr().out)
    assert [m["member_id"] for m in members] == ["c1", "c2"]  # coordctl itself is not listed
    assert main(["--url", URL, "--json", "topology"]) == 0
    kinds = sorted(r["kind"] for r in json.loads(capsys.readouterr().out))
    assert kinds == ["mastership", "switch"]
    assert main(["--url", URL, "elections"]) == 0
    assert "dpid-0000000000000001" in capsys.readouterr().out


def test_watch_prints_events(network: coordination.Coordinator, capsys) -> None:
    assert main(["--url", URL, "watch", "--count", "1", "--timeout", "10"]) == 0
    assert "event=snapshot records=2" in capsys.readouterr().out


def test_url_from_ryu_conf(tmp_path: Path, network: coordination.Coordinator, capsys) -> None:
    conf = tmp_path / "ryu.conf"
    conf.write_text(f"[DEFAULT]\nofp_tcp_listen_port = 6653\n[coordination]\nbackend_url = {URL}\n")
    assert main(["--config-file", str(conf), "--json", "members"]) == 0
    assert json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("argv, fragment", [
    (["--url", "nosuch://x", "members"], "no coordination backend named 'nosuch'"),
    (["--url", "zookeeper://127.0.0.1:1/x", "--connect-timeout", "0.5", "members"],
     "could not connect to zookeeper at 127.0.0.1:1"),
    (["--url", "bogus", "members"], "has no scheme"),
    (["--config-file", "/nonexistent/ryu.conf", "members"], "cannot read config file"),
])
def test_errors_are_one_clear_line(argv: list[str], fragment: str, capsys,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COORDINATION_URL", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("coordctl: error:") and fragment in err
    assert "Traceback" not in err


def test_table_alignment() -> None:
    text = table([["a", None], ["bbb", 2]], ["x", "y"])
    assert text.splitlines() == ["x    y", "---  -", "a    -", "bbb  2"]
