"""coordctl against the in-process backend: tables, JSON, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import coordination
from coordination.errors import ConfigurationError
from coordination.testing import Recorder
from ryu_integration.cli import main, parse_listen, table, url_from_config
from ryu_integration.mastership.config import DEFAULT_BACKEND_URL
from ryu_integration.webview.model import LiveView

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


@pytest.mark.parametrize("argv", [
    ["--url", URL, "--json", "masters"],
    ["masters", "--url", URL, "--json"],
    ["--url", URL, "masters", "--json"],
    ["--json", "masters", "--url", URL],
])
def test_global_flags_before_or_after_the_command(argv: list[str],
                                                  network: coordination.Coordinator,
                                                  capsys) -> None:
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["master"] for r in rows] == ["c1"]


def test_global_flag_after_the_command_overrides(network: coordination.Coordinator,
                                                 capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COORDINATION_URL", "nosuch://x")
    assert main(["members", "--url", URL, "--connect-timeout", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[0].split()[0] == "member_id"


def test_config_file_unset_backend_url_means_the_coord_manager_default(tmp_path: Path) -> None:
    conf = tmp_path / "ryu.conf"
    conf.write_text("[coordination]\nmember_id = c1\n")
    assert url_from_config(str(conf)) == DEFAULT_BACKEND_URL


@pytest.mark.parametrize("text, fragment", [
    ("[coordination]\nbackend_url = memory://x\nsession_timeout = abc\n",
     "[coordination] session_timeout: could not convert string to float: 'abc'"),
    ("[coordination]\nbackend_url = memory://x\npriority = -5\n", "[coordination] priority"),
    ("[coordination]\nbackend_url = memory://x\nrole_request_timeout = nan\n",
     "must be a finite number of seconds"),
    ("[coordination]\nbackend_url = bogus\n", "[coordination] backend_url: backend URL 'bogus'"),
    ("[coordination]\nbackend_url = memory://x\nmember_id = a/b\n", "member_id must not"),
])
def test_config_file_is_validated_as_coord_manager_does(tmp_path: Path, text: str,
                                                        fragment: str, capsys) -> None:
    conf = tmp_path / "ryu.conf"
    conf.write_text(text)
    assert main(["--config-file", str(conf), "members"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"coordctl: error: {conf}: ") and fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_config_file_needs_no_ryu(tmp_path: Path, network: coordination.Coordinator) -> None:
    """coordctl reads ryu.conf with Ryu and os-ken unimportable (only oslo.config)."""
    conf = tmp_path / "ryu.conf"
    conf.write_text("[coordination]\nbackend_url = zookeeper://127.0.0.1:2181/x\n")
    code = ("import sys; sys.modules['ryu'] = None; sys.modules['os_ken'] = None; "
            "sys.modules['eventlet'] = None; from ryu_integration.cli import url_from_config; "
            f"print(url_from_config({str(conf)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "zookeeper://127.0.0.1:2181/x"


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8780", ("127.0.0.1", 8780)), ("[::1]:0", ("::1", 0)),
    ("localhost:65535", ("localhost", 65535)),
])
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8780", ":80", "host:", "host:http", "h:70000", "h:-1",
                                  "h:\u0661\u0662"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ConfigurationError, match="--listen must be host:port"):
        parse_listen(text)


def test_live_view_pushes_leader_topology_and_members(network: coordination.Coordinator) -> None:
    """The model behind `coordctl serve`, on the in-process backend: state, then events in
    order, from the store's own listeners."""
    with coordination.connect(URL, "viewer") as viewer:
        view = LiveView(viewer, backend=URL)
        view.start(timeout=10)
        try:
            events = Recorder()
            state, unsubscribe = view.subscribe(events)
            assert [m["election"] for m in state["masters"]] == ["dpid-0000000000000001"]
            assert state["masters"][0]["leader"] == "c1" and state["masters"][0]["confirmed"]
            assert {m["member_id"] for m in state["members"]} == {"c1", "c2"}  # not the viewer
            network.election("dpid-0000000000000001").resign()
            events.wait_for(lambda items: any(e["type"] == "leader" and e["leader"] == "c2"
                                              for e in items))
            network.topology.put(coordination.Switch(dpid=7, owner="c1", term=0))
            events.wait_for(lambda items: any(e["type"] == "topology" and e["key"] ==
                                              "0000000000000007" for e in items))
            seqs = [e["seq"] for e in events.items]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
            assert seqs[0] == state["seq"] + 1
            unsubscribe()
            assert view.election("dpid-0000000000000001")["candidates"] == [
                {"member_id": "c2", "priority": 0}]
            assert view.election("no such/name") is None
        finally:
            view.close()


def test_web_server_errors_headers_and_host_check(network: coordination.Coordinator) -> None:
    """The aiohttp app over the in-process backend: JSON one-line errors, security headers,
    and a loopback server refusing other Host names (DNS rebinding)."""
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from ryu_integration.webview.server import allowed_hosts, build_app

    async def scenario(view: LiveView) -> None:
        async with TestClient(TestServer(build_app(view, allowed_hosts("127.0.0.1")))) as client:
            page = await client.get("/")
            assert page.status == 200 and "script-src 'self'" in \
                page.headers["Content-Security-Policy"]
            assert page.headers["X-Content-Type-Options"] == "nosniff"
            masters = await client.get("/api/masters", headers={"Host": "localhost:8780"})
            assert masters.status == 200 and (await masters.json())[0]["leader"] == "c1"
            for method, path, status in [("POST", "/api/masters", 405),
                                         ("GET", "/api/nothing", 404),
                                         ("GET", "/static/../server.py", 404),
                                         ("GET", "/api/elections/a%0Ab", 404)]:
                response = await client.request(method, path)
                body = await response.json()
                assert response.status == status and list(body) == ["error"], (path, body)
                assert "\n" not in body["error"]
            rebound = await client.get("/api/members", headers={"Host": "evil.example:8780"})
            assert rebound.status == 421 and "localhost" in (await rebound.json())["error"]

    with coordination.connect(URL, "viewer") as viewer:
        view = LiveView(viewer, backend=URL)
        view.start(timeout=10)
        try:
            asyncio.run(scenario(view))
        finally:
            view.close()
    assert allowed_hosts("0.0.0.0") is None and "::1" in allowed_hosts("::1")
