"""The chaos suite: faults against three real controllers, real switches, a 3-member store.

Short form (default, part of ``make test``): every fault kind once per backend. Long form:
``CHAOS_SOAK=1`` (``make chaos SOAK=1``) runs ``CHAOS_FAULTS`` faults per backend (default 500,
so 1,000 over both), in a seeded random order (``CHAOS_SEED``). ``CHAOS_BACKENDS`` picks the
backends (default ``zookeeper,etcd``). The run fails on any invariant violation (see
tests/chaos/monitor.py) or when the rig does not settle again after a fault; the table of
counts, violations and longest masterless intervals is printed either way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.ryu_helpers import require_framework
from tests.servers.ovs import OvsInstance

from . import scenarios
from .rig import ChaosRig, Timing

pytestmark = pytest.mark.integration



def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw.strip() else default
    except ValueError:
        raise pytest.UsageError(f"{name}={raw!r}: expected an integer") from None


SOAK = os.environ.get("CHAOS_SOAK", "") not in ("", "0")
FAULT_COUNT = _int_env("CHAOS_FAULTS", 500) if SOAK else 0
SEED = _int_env("CHAOS_SEED", 1)
BACKENDS = [b.strip() for b in os.environ.get("CHAOS_BACKENDS", "zookeeper,etcd").split(",")
            if b.strip()]
#: A subset of fault kinds (comma-separated, as in the table) for the short form.
KINDS = [k.strip() for k in os.environ.get("CHAOS_KINDS", "").split(",") if k.strip()]
FRAMEWORK = os.environ.get("CHAOS_FRAMEWORK", "os-ken")
#: pytest-timeout's 300 s (pytest.ini) fits the short form; a soak gets ~20 s per fault.
TIMEOUT = FAULT_COUNT * 20 + 600 if SOAK else 300
STORE_FIXTURES = {"zookeeper": "zookeeper_ensemble", "etcd": "etcd_cluster"}


def _write(config: pytest.Config, text: str) -> None:
    """Show ``text`` on the terminal past pytest's capture (the table is the run's result)."""
    plugins = config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(text)


@pytest.fixture(params=BACKENDS)
def rig(request: pytest.FixtureRequest, ovs: OvsInstance, tmp_path: Path) -> Iterator[ChaosRig]:
    if request.param not in STORE_FIXTURES:
        pytest.fail(f"CHAOS_BACKENDS names unknown backend {request.param!r}; "
                    f"known: {', '.join(STORE_FIXTURES)}")
    unknown = [k for k in KINDS if k not in scenarios.SHORT]
    if unknown:
        pytest.fail(f"CHAOS_KINDS names unknown fault kinds {unknown}; known: "
                    f"{', '.join(scenarios.SHORT)}", pytrace=False)
    require_framework(FRAMEWORK)
    store = request.getfixturevalue(STORE_FIXTURES[request.param])
    made = ChaosRig(request.param, store, ovs, tmp_path, framework=FRAMEWORK)
    try:
        made.start()
        yield made
    finally:
        made.close()


@pytest.mark.timeout(TIMEOUT)
def test_chaos_invariants_hold(rig: ChaosRig, request: pytest.FixtureRequest) -> None:
    """Every fault kind (short form) or a soak of them: no packet delivered twice, no write
    accepted from a non-master, no switch masterless beyond the fault's bound, and the rig
    settles again after each fault."""
    config: Any = request.config
    try:
        scenarios.run(rig, KINDS or scenarios.plan(FAULT_COUNT, SEED),
                      lambda line: _write(config, line), table_every=50 if SOAK else 0)
    finally:
        table = scenarios.table(rig)
        _write(config, "\n" + table)
    violations = "\n".join(str(v) for v in rig.monitor.violations)
    assert not rig.monitor.violations, f"invariant violations:\n{violations}\n{table}"


def test_master_cut_from_switches_under_os_ken_default_reassert(
        request: pytest.FixtureRequest, ovs: OvsInstance, tmp_path: Path) -> None:
    """os-ken's native hub cannot kill the send thread Datapath.serve() joins, so a dropped
    switch connection was noticed only at the next send (up to reassert_interval: 10 s here,
    30 s by default) and the switch stayed masterless; compat.apply_os_ken_fixes wakes the send
    loop. reassert_interval 10 s, os-ken, ZooKeeper: cutting the master's OpenFlow connections
    (the store still reachable) must hand its switches over within the fault's bound (4 s)."""
    require_framework("os-ken")
    store = request.getfixturevalue("zookeeper_ensemble")
    rig = ChaosRig("zookeeper", store, ovs, tmp_path, bridges=1,
                   timing=Timing(reassert_interval=10.0))
    try:
        rig.start()
        scenarios.run(rig, ["master cut from switches"])
    finally:
        _write(request.config, "\n" + scenarios.table(rig))
        rig.close()
    violations = "\n".join(str(v) for v in rig.monitor.violations)
    assert not rig.monitor.violations, f"invariant violations:\n{violations}"
