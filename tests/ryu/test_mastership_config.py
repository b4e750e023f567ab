"""`[coordination]` options: defaults, validation, and the example configs in etc/."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from oslo_config import cfg

import coordination
from ryu_integration.mastership import config

ETC = Path(__file__).resolve().parents[2] / "etc"


def make_conf(tmp_path: Path, text: str | None = None, port: int | None = None,
              files: list[Path] | None = None) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    config.register(conf)
    config.register(conf)  # repeating is harmless (apps may import the module twice)
    conf.register_cli_opts([cfg.IntOpt("ofp-tcp-listen-port")])
    args: list[str] = []
    for path in files or []:
        args += ["--config-file", str(path)]
    if text is not None:
        path = tmp_path / "ryu.conf"
        path.write_text(text)
        args += ["--config-file", str(path)]
    if port is not None:
        args += ["--ofp-tcp-listen-port", str(port)]
    conf(args=args, project="test", default_config_files=[])
    return conf


def test_defaults(tmp_path):
    s = config.load(make_conf(tmp_path))
    assert s.backend_url == config.DEFAULT_BACKEND_URL == "embedded://"
    assert s.member_id == f"{socket.gethostname()}:6653"
    assert s.session_timeout is None and s.connect_options() == {}
    assert s.priority == 0 and s.publish_mastership
    t = s.timing
    assert (t.role_request_timeout, t.retry_max, t.reassert_interval, t.hold_on_suspend) == \
        (3.0, 5.0, 0.0, True)


def test_member_id_follows_the_openflow_port(tmp_path):
    assert config.load(make_conf(tmp_path, port=6654)).member_id.endswith(":6654")


def test_values_from_the_file(tmp_path):
    s = config.load(make_conf(tmp_path, """
[coordination]
backend_url = zookeeper://127.0.0.1:2181/sdn
member_id = ctl-a
session_timeout = 2.5
priority = 7
role_request_timeout = 1.5
role_retry_max = 0.1
reassert_interval = 5
hold_on_suspend = false
publish_mastership = false
"""))
    assert s.backend_url == "zookeeper://127.0.0.1:2181/sdn"
    assert (s.member_id, s.priority) == ("ctl-a", 7)
    assert s.connect_options() == {"session_timeout": 2.5}
    assert s.timing.retry_initial == 0.1 and s.timing.retry_max == 0.1
    assert not s.timing.hold_on_suspend and not s.publish_mastership


@pytest.mark.parametrize("line", ["priority = -1", "priority = 1000000", "session_timeout = 0",
                                  "role_request_timeout = 0", "hold_on_suspend = maybe"])
def test_bad_values_are_refused(tmp_path, line):
    conf = make_conf(tmp_path, f"[coordination]\n{line}\n")
    name = line.split()[0]
    with pytest.raises(coordination.ConfigurationError, match=f"ryu.conf: \\[coordination\\] {name}"):
        config.load(conf)


@pytest.mark.parametrize("name", ["ryu.conf.zookeeper", "ryu.conf.etcd", "ryu.conf.embedded"])
def test_example_configs_load_and_name_a_valid_backend(tmp_path, name):
    s = config.load(make_conf(tmp_path, files=[ETC / name], port=6653))
    url = coordination.parse_url(s.backend_url)
    assert url.scheme in {"zookeeper", "etcd3", "embedded"}
    assert url.scheme in coordination.installed_backends()
