"""`coord-manager`'s command line handling and framework choice, without starting a framework."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from oslo_config import cfg

from ryu_integration import frameworks, lifecycle
from ryu_integration.manager import find_apps, import_apps, pop_framework
from tests.requirements import missing


def ryu_like_conf() -> cfg.ConfigOpts:
    """CLI options like the ones ryu-manager's modules register."""
    conf = cfg.ConfigOpts()
    conf.register_cli_opts([
        cfg.BoolOpt("verbose", default=False),
        cfg.BoolOpt("observe-links", default=False),
        cfg.IntOpt("ofp-tcp-listen-port"),
        cfg.StrOpt("log-file"),
        cfg.ListOpt("app-lists", default=[]),
        cfg.MultiStrOpt("app", positional=True, default=[]),
    ])
    return conf


@pytest.mark.parametrize(("argv", "framework", "rest"), [
    (["--framework", "ryu", "app"], "ryu", ["app"]),
    (["app", "--framework=os-ken"], "os-ken", ["app"]),
    (["--verbose", "app"], None, ["--verbose", "app"]),
])
def test_pop_framework(argv, framework, rest):
    assert pop_framework(argv) == (framework, rest)


def test_pop_framework_needs_a_value():
    with pytest.raises(SystemExit):
        pop_framework(["app", "--framework"])


def test_find_apps_skips_option_values_and_flags():
    args = ["--config-file", "a.conf", "--verbose", "app1", "--ofp-tcp-listen-port", "6653",
            "pkg.app2,pkg.app3", "--observe-links", "--log-file=x.log", "app4",
            "--app-lists", "pkg.app5,pkg.app6", "--noverbose", "app7"]
    names = [name for _, name in find_apps(args, ryu_like_conf())]
    assert names == ["app1", "pkg.app2", "pkg.app3", "app4", "pkg.app5", "pkg.app6", "app7"]


def test_find_apps_after_double_dash():
    assert [n for _, n in find_apps(["--verbose", "--", "-odd"], ryu_like_conf())] == ["-odd"]


def test_import_apps_imports_each_once_and_hands_paths_on_by_module_name(tmp_path):
    path = tmp_path / "my_app.py"
    path.write_text("")
    imported: list[str] = []

    def fake_import(name: str) -> types.ModuleType:
        imported.append(name)
        return types.ModuleType("my_app" if name == str(path) else name)

    args = ["--verbose", str(path), "pkg.other"]
    out = import_apps(args, ryu_like_conf(), fake_import)
    assert imported == [str(path), "pkg.other"]
    assert out == ["--verbose", "my_app", "pkg.other"]


def test_framework_names_and_choice(monkeypatch):
    assert frameworks.normalise("OS_KEN") == frameworks.OS_KEN
    assert frameworks.normalise("osken") == frameworks.OS_KEN
    with pytest.raises(frameworks.FrameworkError):
        frameworks.normalise("nox")
    monkeypatch.delenv(frameworks.ENV_VAR, raising=False)
    installed = [f for f in frameworks.FRAMEWORKS if frameworks.installed(f)]
    if not installed:
        pytest.skip("neither ryu nor os-ken is installed")
    assert frameworks.choose() == installed[0]  # ryu first when both are there
    monkeypatch.setenv(frameworks.ENV_VAR, installed[-1])
    assert frameworks.choose() == installed[-1]
    assert frameworks.choose(installed[0]) == installed[0]  # the flag beats the environment


def test_which_hub(monkeypatch):
    monkeypatch.delenv("OSKEN_HUB_TYPE", raising=False)
    monkeypatch.delenv("RYU_HUB_TYPE", raising=False)
    assert frameworks.wants_eventlet("ryu")
    assert not frameworks.wants_eventlet("os-ken")
    monkeypatch.setenv("OSKEN_HUB_TYPE", "eventlet")
    assert frameworks.wants_eventlet("os-ken")


def test_shutdown_hooks_run_last_first_and_survive_failures():
    ran: list[str] = []

    def failing(_deadline: float) -> None:
        ran.append("failing")
        raise RuntimeError("boom")

    lifecycle.register("a", lambda _d: ran.append("a"))
    lifecycle.register("failing", failing)
    lifecycle.register("c", lambda _d: ran.append("c"))
    lifecycle.run_all(1.0)
    assert ran == ["c", "failing", "a"]
    lifecycle.run_all(1.0)  # hooks run once
    assert ran == ["c", "failing", "a"]


def test_the_mastership_app_is_always_loaded():
    from ryu_integration.manager import MASTERSHIP_APP, _import_apps_checked

    stub = types.SimpleNamespace(other_framework_loaded=lambda: None, FRAMEWORK="os-ken")
    imported: list[str] = []

    def fake_import(name: str) -> types.ModuleType:
        imported.append(name)
        return types.ModuleType(name)

    app_module = f"{MASTERSHIP_APP}.app"  # what registers the [coordination] options
    out = _import_apps_checked(["--verbose", "app1"], ryu_like_conf(), fake_import, stub)
    assert out == ["--verbose", "app1", MASTERSHIP_APP]
    assert imported == ["app1", MASTERSHIP_APP, app_module]
    imported.clear()
    out = _import_apps_checked([MASTERSHIP_APP], ryu_like_conf(), fake_import, stub)
    assert out == [MASTERSHIP_APP] and imported == [MASTERSHIP_APP, app_module]


def test_an_app_of_the_other_framework_is_named():
    from ryu_integration.manager import _import_apps_checked

    stub = types.SimpleNamespace(other_framework_loaded=lambda: "ryu", FRAMEWORK="os-ken")
    with pytest.raises(SystemExit, match="--framework ryu"):
        _import_apps_checked(["app"], ryu_like_conf(), lambda n: types.ModuleType(n), stub)


@pytest.mark.parametrize("url, fragment", [
    ("nosuch://x", "no coordination backend named 'nosuch'"),
    ("embedded://somehost/dir", "names a host ('somehost')"),
])
def test_a_bad_backend_is_one_clear_line_and_exit_2(tmp_path, url: str, fragment: str) -> None:
    if not frameworks.installed(frameworks.OS_KEN):
        missing("os-ken is not installed (pip install -e '.[os-ken]')")
    exe = shutil.which("coord-manager", path=str(Path(sys.executable).parent))
    conf = tmp_path / "ryu.conf"
    conf.write_text(f"[coordination]\nbackend_url = {url}\n")
    out = subprocess.run([exe, "--framework", "os-ken", "--config-file", str(conf),
                          "--ofp-tcp-listen-port", "0", "ryu_integration.mastership"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("coord-manager: error:") and fragment in last


@pytest.mark.parametrize("framework", [frameworks.OS_KEN, frameworks.RYU])
def test_start_up_objects_are_frozen_out_of_full_collections(tmp_path, framework: str) -> None:
    """What start-up created (modules, classes: ~200,000 objects) is in the collector's
    permanent generation by the time the framework instantiates the apps, so full collections
    do not scan it again (~80 ms each)."""
    if not frameworks.installed(framework):
        missing(f"{framework} is not installed")
    exe = shutil.which("coord-manager", path=str(Path(sys.executable).parent))
    conf = tmp_path / "ryu.conf"
    conf.write_text(f"[coordination]\nbackend_url = embedded://{tmp_path / 'store'}\n")
    app = tmp_path / "report_frozen.py"
    package = "os_ken" if framework == frameworks.OS_KEN else "ryu"
    app.write_text(
        "import gc, os, sys\n"
        f"from {package}.base import app_manager\n\n\n"
        "class ReportFrozen(app_manager.{}):\n".format(
            "OSKenApp" if framework == frameworks.OS_KEN else "RyuApp") +
        "    def __init__(self, *args, **kwargs):\n"
        "        super().__init__(*args, **kwargs)\n"
        "        print(f'frozen={gc.get_freeze_count()}', flush=True)\n"
        "        os._exit(0)\n")
    out = subprocess.run([exe, "--framework", framework, "--config-file", str(conf),
                          "--ofp-tcp-listen-port", "0", str(app)],
                         capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    frozen = int(out.stdout.split("frozen=")[1].split()[0])
    assert frozen > 50_000, out.stdout
