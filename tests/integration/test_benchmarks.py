"""The scale benchmarks' short forms, run as tests: they start, every switch / election gets
a leader, a crash is recovered from, and they report it. Liveness only: figures are printed by
`make bench` and never asserted here (this machine is shared and noisy)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers.pytest_plugin import _require_etcd, _require_zookeeper

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_scale_quick_masters_every_switch_and_recovers_from_a_crash(tmp_path: Path) -> None:
    _require_zookeeper()
    _require_etcd()
    out = tmp_path / "scale.json"
    result = _run(["benchmarks/scale.py", "--quick", "--backends", "zookeeper,etcd,embedded",
                   "--json", str(out)], timeout=300)
    for backend in ("zookeeper", "etcd", "embedded"):  # each store exercised before timing
        assert re.search(rf"{backend}: warmed up for 1 s \([1-9]\d* rounds", result.stdout), \
            result.stdout
    results = json.loads(out.read_text())["results"]
    assert {r["backend"] for r in results} == {"zookeeper", "etcd", "embedded"}
    for r in results:
        assert r["all_mastered_s"] is not None, r  # every switch confirmed MASTER by its reply
        assert r["all_roles_s"] is not None, r  # and every standby confirmed SLAVE
        assert r["kill_at"] == "settled", r  # the failover is measured from rest
        assert r["failover_s"] is not None and r["failover_switches"] > 0, r
        assert sum(r["masters_per_controller"]) == r["switches"], r


def test_scale_quick_topology_discovers_every_link_of_the_fleet(tmp_path: Path) -> None:
    """The fleet's emulated links carry the controllers' LLDP: every view gets every link; each
    cut link leaves every view; after the kill -9 the survivors' views hold the rest again,
    re-published by themselves."""
    out = tmp_path / "scale.json"
    result = _run(["benchmarks/scale.py", "--quick", "--topology", "--backends", "embedded",
                   "--cuts", "5", "--json", str(out)], timeout=300)
    (r,) = json.loads(out.read_text())["results"]
    assert r["links_expected"] == 2 * (r["switches"] - 1), r  # a line, both directions
    assert r["links_all_s"] is not None, r
    assert r["cuts"] == 5 and r["links_after_cuts"] == r["links_expected"] - 10, r
    assert 0 < r["cut_p50_s"] <= r["cut_p90_s"] <= r["cut_p99_s"] <= r["cut_max_s"], r
    assert len(r["cut_s"]) == r["cuts"], r
    assert r["topology_failover_s"] is not None, r
    assert "all links (every view)" in result.stdout


def test_elections_benchmark_leads_every_election_and_recovers_from_a_crash() -> None:
    _require_zookeeper()
    _require_etcd()
    result = _run(["benchmarks/elections.py", "--switches", "300",
                   "--backends", "zookeeper,etcd3,embedded", "--timeout", "60"], timeout=300)
    rows = [line.split() for line in result.stdout.splitlines()  # the final table's rows
            if line.split()[:1] in (["zookeeper"], ["etcd3"], ["embedded"])
            and not line.startswith(" ")]
    assert len(rows) == 3, result.stdout
    for _backend, count, led, moved, first, back in rows:
        assert count == "300" and int(moved) > 0, result.stdout
        assert not any(v.startswith(">") for v in (led, first, back)), result.stdout


def test_failover_benchmark_quick_recovers_every_trial(tmp_path: Path) -> None:
    _require_zookeeper()
    _require_etcd()
    out = tmp_path / "failover.json"
    _run(["benchmarks/failover.py", "--trials", "3", "--off-trials", "1", "--elections", "1,10",
          "--sessions", "2", "--json", str(out)], timeout=300)
    results = json.loads(out.read_text())["results"]
    assert {(r["backend"], r["detector"]) for r in results} == {
        (b, d) for b in ("zookeeper", "etcd3") for d in (True, False)}
    for r in results:  # every trial recovered (a lost one counts as session x 3 + 10 s)
        assert r["trials"] == (3 if r["detector"] else 1), r
        assert r["max_s"] < r["session_s"] * 3 + 10, r
