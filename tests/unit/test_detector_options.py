"""Failure detector options: validation (one-line errors), the bound kept within the session
timeout, the `[coordination]` ryu.conf options, and which drivers run a detector."""

from __future__ import annotations

from pathlib import Path

import pytest
from oslo_config import cfg

import coordination
from coordination import ConfigurationError
from coordination.detector_link import detector_settings
from coordination.options import COMMON_OPTIONS, resolve_options
from ryu_integration.mastership import config


@pytest.mark.parametrize(("name", "value"), [
    ("heartbeat_interval", "abc"), ("heartbeat_interval", "0"), ("heartbeat_interval", "nan"),
    ("heartbeat_misses", "0"), ("heartbeat_misses", "1.5"), ("detector", "maybe"),
    ("liveness_address", "a b"), ("liveness_address", "127.0.0.1:70000"),
    ("liveness_address", ""), ("damping_window", "-1"), ("damping_backoff", "inf"),
])
def test_bad_values_are_one_line_errors(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        resolve_options(COMMON_OPTIONS, {name: value}, {})
    assert name in str(info.value) and "\n" not in str(info.value)


def test_defaults_and_the_bound_within_the_session() -> None:
    options = resolve_options(COMMON_OPTIONS, {}, {})
    settings = detector_settings(options)
    assert options["detector"] is True
    assert (settings.interval, settings.misses, settings.host, settings.port) == (
        0.1, 10, "127.0.0.1", 0)
    # 3 x 1 s would outlive half a 2 s session: the interval is lowered to fit
    tight = detector_settings(resolve_options(COMMON_OPTIONS, {}, {
        "session_timeout": 2, "heartbeat_interval": 1.0}))
    assert tight.bound <= 1.0 + 1e-9
    assert detector_settings(resolve_options(COMMON_OPTIONS, {}, {
        "liveness_address": "::1"})).host == "::1"


def test_in_process_drivers_run_no_detector() -> None:
    with coordination.connect("memory://det-opts", "a") as coord:
        assert coord.failure_detector is None
        assert "liveness" not in coord.info.metadata


def test_ryu_conf_options_pass_through(tmp_path: Path) -> None:
    conf = cfg.ConfigOpts()
    config.register(conf)
    path = tmp_path / "ryu.conf"
    path.write_text("[coordination]\nbackend_url = memory://x\nmember_id = c1\n"
                    "detector = false\nheartbeat_interval = 0.05\nheartbeat_misses = 4\n"
                    "liveness_address = 127.0.0.1:0\n")
    conf(args=["--config-file", str(path)], project="test", default_config_files=[])
    options = config.load(conf).connect_options()
    assert options == {"detector": False, "heartbeat_interval": 0.05, "heartbeat_misses": 4,
                       "liveness_address": "127.0.0.1:0"}


def test_ryu_conf_bad_liveness_address_is_one_line(tmp_path: Path) -> None:
    conf = cfg.ConfigOpts()
    config.register(conf)
    path = tmp_path / "ryu.conf"
    path.write_text("[coordination]\nbackend_url = memory://x\nliveness_address = a b\n")
    conf(args=["--config-file", str(path)], project="test", default_config_files=[])
    with pytest.raises(ConfigurationError, match="liveness_address") as info:
        config.load(conf)
    assert "\n" not in str(info.value)
