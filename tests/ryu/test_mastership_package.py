"""The mastership package's layout: its pure modules import no framework, and the app still
loads by the package's name (what users pass to `coord-manager` and `ryu-manager`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.ryu_helpers import FRAMEWORKS, require_framework

PURE = ("fsm", "handover", "moves", "balancer", "config", "reads")


def run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                          text=True, timeout=120, check=False, env={**os.environ, **env})


def test_the_pure_modules_and_the_config_import_no_framework() -> None:
    """With Ryu, os-ken and eventlet unimportable, the pure modules (`config` among them) import:
    the package's glue names are loaded on first use only."""
    imports = "; ".join(f"import ryu_integration.mastership.{name}" for name in PURE)
    code = ("import sys; sys.modules['ryu'] = None; sys.modules['os_ken'] = None; "
            f"sys.modules['eventlet'] = None; {imports}; import ryu_integration.mastership.config; "
            "import ryu_integration.mastership as m; print(sorted(m.__all__)[:2])")
    out = run(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['CODECS', 'EventMastershipChanged']"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_app_loads_by_the_package_name(framework: str) -> None:
    require_framework(framework)
    package = {"os-ken": "os_ken", "ryu": "ryu"}[framework]
    code = ("import ryu_integration.compat; "  # Ryu 4.34 needs its shims on today's eventlet
            f"from {package}.base.app_manager import AppManager; "
            "cls = AppManager().load_app('ryu_integration.mastership'); "
            "print(cls.__name__, cls.__module__); "
            "import ryu_integration.mastership as m; print(m.is_master.__module__)")
    out = run(code, COORD_FRAMEWORK=framework)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["Mastership ryu_integration.mastership",
                                          "ryu_integration.mastership.guard"]


def test_an_unknown_name_is_an_attribute_error() -> None:
    import ryu_integration.mastership as m

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        m.nope  # noqa: B018
