"""coordctl, the installed command, against real backends: what an operator would run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

import coordination
from coordination import Mastership, Switch
from coordination.testing import Recorder

pytestmark = pytest.mark.integration
WAIT = 15.0


def _coordctl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("coordctl", path=str(Path(sys.executable).parent))
    assert exe, "coordctl is not installed in this environment (pip install -e .)"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=False)


def _zookeeper(request: pytest.FixtureRequest) -> str:
    return f"zookeeper://{request.getfixturevalue('zookeeper').hosts}/ctl-{uuid.uuid4().hex[:8]}"


def _etcd(request: pytest.FixtureRequest) -> str:
    return f"etcd3://{request.getfixturevalue('etcd').endpoint}/ctl-{uuid.uuid4().hex[:8]}"


def _embedded(request: pytest.FixtureRequest) -> str:
    return f"embedded://{request.getfixturevalue('tmp_path')}/store"


URLS: dict[str, Callable[[pytest.FixtureRequest], str]] = {
    "zookeeper": _zookeeper, "etcd3": _etcd, "embedded": _embedded,
}


@pytest.fixture(params=list(URLS))
def url(request: pytest.FixtureRequest) -> str:
    return URLS[request.param](request)


def test_coordctl_reports_masters_members_and_topology(url: str, tmp_path: Path) -> None:
    with coordination.connect(url, "c1", address="127.0.0.1:6653") as c1, \
            coordination.connect(url, "c2", address="127.0.0.1:6654") as c2:
        elected = Recorder()
        c1.election("dpid-0000000000000001").campaign(on_elected=elected)
        term = elected.wait_count(1, WAIT)[0].term
        c2.election("dpid-0000000000000001").campaign()
        c1.topology.put(Mastership(dpid=1, owner="c1", term=term))
        c1.topology.put(Switch(dpid=1, owner="c1", term=term))

        masters = _coordctl("--url", url, "--json", "masters")
        assert masters.returncode == 0, masters.stderr
        rows = json.loads(masters.stdout)
        assert rows == [{"dpid": "0000000000000001", "master": "c1", "term": term,
                         "confirmed": True, "candidates": ["c1", "c2"], "hint": ""}]

        conf = tmp_path / "ryu.conf"
        conf.write_text(f"[coordination]\nbackend_url = {url}\nmember_id = c9\n")
        members = _coordctl("--config-file", str(conf), "--json", "members")
        assert members.returncode == 0, members.stderr
        assert {m["member_id"]: m["address"] for m in json.loads(members.stdout)} == {
            "c1": "127.0.0.1:6653", "c2": "127.0.0.1:6654"}

        table = _coordctl("--url", url, "topology")
        assert table.returncode == 0, table.stderr
        assert table.stdout.splitlines()[0].split() == ["kind", "key", "owner", "term", "data"]
        assert sum(line.startswith(("switch", "mastership")) for line in
                   table.stdout.splitlines()) == 2

        watch = _coordctl("--url", url, "watch", "--count", "1", "--timeout", "20")
        assert watch.returncode == 0, watch.stderr
        assert "event=snapshot records=2" in watch.stdout


def test_coordctl_names_an_unreachable_server() -> None:
    from tests.servers._process import free_port

    port = free_port()
    out = _coordctl("--url", f"etcd3://127.0.0.1:{port}", "--connect-timeout", "1", "members")
    assert out.returncode == 2
    assert out.stderr.startswith("coordctl: error:") and f"127.0.0.1:{port}" in out.stderr
    assert "Traceback" not in out.stderr


def test_flags_after_the_command_as_the_readme_writes_them(url: str) -> None:
    with coordination.connect(url, "c1") as c1:
        elected = Recorder()
        c1.election("dpid-0000000000000001").campaign(on_elected=elected)
        term = elected.wait_count(1, WAIT)[0].term
        out = _coordctl("masters", "--url", url, "--json")
        assert out.returncode == 0, out.stderr
        assert [(r["master"], r["term"]) for r in json.loads(out.stdout)] == [("c1", term)]


@pytest.mark.parametrize("text", [
    "[coordination]\nbackend_url = memory://x\nsession_timeout = abc\n",
    "[coordination]\nbackend_url = bogus\n",
    "[coordination]\nbackend_url = memory://x\npriority = 1000000\n",
    "[coordination\nbackend_url = memory://x\n",
])
def test_config_errors_are_those_of_coord_manager(tmp_path: Path, text: str) -> None:
    """coordctl reads ryu.conf with coord-manager's loader: the same one-line error."""
    manager = shutil.which("coord-manager", path=str(Path(sys.executable).parent))
    assert manager, "coord-manager is not installed in this environment (pip install -e .)"
    conf = tmp_path / "ryu.conf"
    conf.write_text(text)
    ctl = _coordctl("--config-file", str(conf), "members")
    ran = subprocess.run([manager, "--config-file", str(conf), "ryu_integration.mastership"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert ctl.returncode == ran.returncode == 2
    assert ctl.stderr.startswith("coordctl: error: ") and "Traceback" not in ctl.stderr
    assert ctl.stderr.removeprefix("coordctl: error: ") == \
        ran.stderr.removeprefix("coord-manager: error: ")
