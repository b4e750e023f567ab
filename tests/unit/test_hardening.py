"""Hostile and careless input, class by class: each reproduced case, then a property over many.

1. stored values (deep JSON, NaN, non-UTF-8, TEXT rows): logged and skipped, never raised;
2. the embedded store's hand-edited rows never wedge its watch;
3. secrets (URL password, secret options) never shown;
4. numbers (options, ports, ryu.conf, coordctl flags): one-line errors, not tracebacks;
5. names (member ids, election names): one validation, short one-line errors.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import coordination
from coordination import (
    BadURLError,
    ConfigurationError,
    Coordinator,
    InvalidRecordError,
    MemberInfo,
    Snapshot,
    Switch,
    parse_url,
)
from coordination.loader import load_driver
from coordination.names import validate_election_name, validate_member_id
from coordination.options import COMMON_OPTIONS, Option, resolve_options
from coordination.testing import Recorder
from ryu_integration import frameworks
from ryu_integration.cli import main as coordctl
from ryu_integration.cli import table
from tests.requirements import missing

WAIT = 10.0
PROPERTY = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
_names = itertools.count()

BAD_VALUES = {
    "deep": b"[" * 1000,
    "deep-object": b'{"a":' * 2000,
    "nan": b'{"schema":1,"kind":"switch","dpid":9,"term":NaN}',
    "not-utf8": b'{"schema":1,"kind":"switch","owner":"\xff"}',
    "huge": b"[" + b"1," * 600_000 + b"1]",
}


def has_switch(dpid: int) -> Callable[[list[Any]], bool]:
    """Predicate for a Recorder of topology events: switch `dpid` was reported (in a snapshot or
    a change), whichever way the watch's first read and the put raced."""
    def check(events: list[Any]) -> bool:
        for event in events:
            records = event.records if isinstance(event, Snapshot) else (event.record,)
            if any(getattr(r, "dpid", None) == dpid for r in records):
                return True
        return False

    return check


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text[-3000:]
    return lines[0]


# ---- 1. stored values are logged and skipped ------------------------------------------------


@pytest.fixture(params=["memory", "embedded"])
def coord(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Coordinator]:
    url = (f"memory://hardening-{next(_names)}" if request.param == "memory"
           else f"embedded://{tmp_path}/store")
    with coordination.connect(url, "m1") as coordinator:
        yield coordinator


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_a_bad_stored_value_is_skipped_by_list_get_and_watches(coord: Coordinator,
                                                               bad: str) -> None:
    before, after = Recorder("before"), Recorder("after")
    coord.topology.watch(before)
    coord.topology.put(Switch(dpid=1, owner="m1", term=1))
    coord._driver_record_store().create("switch/0000000000000009", BAD_VALUES[bad])

    assert [r.dpid for r in coord.topology.list()] == [1]
    assert coord.topology.get("switch", "0000000000000009") is None
    coord.topology.watch(after)  # started after the bad value: still gets its Snapshot
    snapshot = after.wait_count(1, WAIT)[0]
    assert isinstance(snapshot, Snapshot) and [r.dpid for r in snapshot.records] == [1]

    coord.topology.put(Switch(dpid=2, owner="m1", term=1))  # later puts reach both watches
    for recorder in (before, after):
        recorder.wait_for(has_switch(2), WAIT)
    assert coord.topology.put(Switch(dpid=9, owner="m1", term=1))  # and a bad one is repaired
    assert [r.dpid for r in coord.topology.list()] == [1, 2, 9]


def test_coordctl_lists_and_watches_around_a_deeply_nested_record(capsys) -> None:
    url = f"memory://hardening-{next(_names)}"
    with coordination.connect(url, "m1") as coordinator:
        coordinator.topology.put(Switch(dpid=1, owner="m1", term=1))
        coordinator._driver_record_store().create("switch/0000000000000009", b"[" * 1000)
        assert coordctl(["--url", url, "--json", "topology"]) == 0
        assert '"0000000000000001"' in capsys.readouterr().out
        assert coordctl(["--url", url, "watch", "--count", "1", "--timeout", "10"]) == 0
        assert "event=snapshot records=1" in capsys.readouterr().out


@pytest.mark.parametrize("info, fragment", [
    (b"[" * 1000, "nested"),
    ('{"member_id": "a\\nforged"}', "control characters"),
    ('{"member_id": ".."}', "'..'"),
    ('{"member_id": "' + "x" * 10_000 + '"}', "1-200 characters"),
    ('{"member_id": "a", "started_at": NaN}', "NaN"),
    ('{"member_id": "a", "capacity": true}', "capacity"),
    ('{"member_id": "a", "address": 5}', "address"),
    ('{"member_id": "a", "metadata": []}', "metadata"),
    ("[]", "JSON object"),
    (b"\xff", "not UTF-8"),
    (7, "bytes or text"),
])
def test_member_records_are_validated(info: Any, fragment: str) -> None:
    with pytest.raises(InvalidRecordError, match=fragment) as caught:
        MemberInfo.decode(info, "member record 'a'")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_a_valid_member_record_decodes_from_bytes_or_text() -> None:
    info = MemberInfo("c1", "10.0.0.1:6653", 3, 12.5, {"k": [1]})
    text = json.dumps(info.to_dict())
    assert MemberInfo.decode(text, "m") == info == MemberInfo.decode(text.encode(), "m")


# ---- 2. the embedded store: hand-edited rows --------------------------------------------------


def test_embedded_text_rows_never_wedge_the_watch(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with coordination.connect(f"embedded://{store}", "m1") as c1, \
            coordination.connect(f"embedded://{store}", "m2") as c2:
        before = Recorder("before")
        c1.topology.watch(before)
        c2.topology.put(Switch(dpid=1, owner="m2", term=1))
        before.wait_for(has_switch(1), WAIT)
        c1.election("dpid-0000000000000001").campaign()

        # what a hand "fix" with the sqlite3 shell writes: TEXT where BLOBs belong
        db = sqlite3.connect(store / "store.db", isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            rev = int(db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()[0])
            db.execute("UPDATE records SET value = ? WHERE path = ?",
                       ('{"schema":1,"kind":"switch","dpid":1}', "switch/0000000000000001"))
            db.execute("INSERT INTO records (path, value, version) VALUES (?, ?, ?)",
                       ("switch/0000000000000009", "[" * 1000, rev + 1))
            db.execute("INSERT INTO changes (rev, path, value) VALUES (?, ?, ?)",
                       (rev + 1, "switch/0000000000000009", "[" * 1000))
            db.execute("UPDATE meta SET value = ? WHERE key = 'revision'", (rev + 1,))
            db.execute("UPDATE members SET info = ? WHERE member_id = 'm2'", ("[" * 1000,))
            db.execute("UPDATE candidates SET priority = 'high'")
            db.execute("INSERT INTO elections (name, leader_token, leader_member, leader_seq, "
                       "term, rev) VALUES ('..', NULL, NULL, NULL, 'x', ?)", (rev + 1,))
            db.execute("COMMIT")
        finally:
            db.close()

        after = Recorder("after")
        c1.topology.watch(after)  # its snapshot must come, without the TEXT rows
        snapshot = after.wait_count(1, WAIT)[0]
        assert isinstance(snapshot, Snapshot) and snapshot.records == ()
        assert c1.topology.list() == [] and c1.topology.get("switch", "0000000000000001") is None
        assert set(c1.members()) == {"m1"}  # m2's row is malformed: skipped, not raised
        assert c1.election("dpid-0000000000000001").candidates() == []
        assert ".." not in c1.elections()

        c2.topology.put(Switch(dpid=2, owner="m2", term=1))  # later valid puts are delivered
        for recorder in (before, after):
            recorder.wait_for(has_switch(2), WAIT)
        assert c2.topology.put(Switch(dpid=1, owner="m2", term=2))  # a TEXT row is repairable
        assert [r.dpid for r in c1.topology.list()] == [1, 2]


# ---- 3. secrets ---------------------------------------------------------------------------------

SECRET = "S3CR3TPW"


@pytest.mark.parametrize("url, password, hosts, path", [
    (f"etcd3://root:{SECRET}@h1:2379", SECRET, (("h1", 2379),), ""),
    (f"etcd3://root:p@ss/w:rd{SECRET}@h1:2379,h2/sdn", f"p@ss/w:rd{SECRET}",
     (("h1", 2379), ("h2", None)), "/sdn"),
    (f"etcd3://root:p%40ss%2F{SECRET}@h1:2379/sdn", f"p@ss/{SECRET}", (("h1", 2379),), "/sdn"),
    (f"etcd3://root:{SECRET}@@h1?lease_ttl=3", f"{SECRET}@", (("h1", None),), ""),
    (f"zookeeper://h1:2181/sdn?auth=user:{SECRET}", None, (("h1", 2181),), "/sdn"),
    (f"zookeeper://h1/sdn?auth=user:p@{SECRET}", None, (("h1", None),), "/sdn"),
    (f"etcd3://h1/x?password={SECRET}&user=root", None, (("h1", None),), "/x"),
    (f"etcd3://h1/x?api_token={SECRET}&client_secret={SECRET}", None, (("h1", None),), "/x"),
])
def test_urls_parse_passwords_and_never_show_secrets(url: str, password: str | None,
                                                     hosts: tuple, path: str) -> None:
    parsed = parse_url(url)
    assert (parsed.password, parsed.hosts, parsed.path) == (password, hosts, path)
    for text in (str(parsed), repr(parsed), f"{parsed}", "%s" % (parsed,),  # noqa: UP031
                 str(parsed.with_subpath("x")), parsed.redact(f"failed: {url} {password}")):
        assert SECRET not in text, text
    assert "***" in str(parsed)


@pytest.mark.parametrize("url", [
    f"etcd3://root:{SECRET}@h 1:2379",
    f"etcd3://root:{SECRET}@h1:abc",
    f"zookeeper://h1:abc/x?auth=u:{SECRET}",
    f"zookeeper://h1?auth={SECRET}&auth=2",
    f"zookeeper://h1?auth={SECRET}&&x",
    f"zookeeper://h1?auth={SECRET}&=x",
    f"root:{SECRET}@h1:2379",
    f"nosuch://root:{SECRET}@h1",
])
def test_url_errors_never_show_secrets(url: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        coordination.connect(url, "m1")
    assert SECRET not in str(caught.value) and "\n" not in str(caught.value)


def test_option_errors_never_echo_a_secret_value() -> None:
    specs = {"api_token": Option(int, 0, "a number that is a secret"),
             "password": Option(lambda v: int(v), 0, "a custom converter"),
             "session_timeout": COMMON_OPTIONS["session_timeout"]}
    for name in ("api_token", "password"):
        with pytest.raises(ConfigurationError, match=name) as caught:
            resolve_options(specs, {name: SECRET}, {})
        assert SECRET not in str(caught.value)


@pytest.mark.parametrize("argv", [
    ["--url", f"zookeeper://127.0.0.1:1/x?auth=user:{SECRET}", "--connect-timeout", "0.5",
     "members"],
    ["--url", f"zookeeper://127.0.0.1:1/x?auth=user:{SECRET}&session_timeout=nan", "members"],
    ["--url", f"zookeeper://u:{SECRET}@127.0.0.1:1/x?bogus=1", "members"],
    ["--url", f"etcd3://root:{SECRET}@127.0.0.1:99999/x", "members"],
    ["--url", f"etcd3://127.0.0.1:2379/x?password={SECRET}&lease_ttl=nan", "members"],
])
def test_coordctl_errors_never_show_secrets(argv: list[str], capsys) -> None:
    assert coordctl(argv) == 2
    err = capsys.readouterr().err
    assert SECRET not in err and "Traceback" not in err
    assert one_line(err).startswith("coordctl: error:")


url_text = st.text(alphabet=st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789._-"),
                   min_size=1, max_size=10)
secret_middle = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                               blacklist_characters="?#&="), max_size=20)


@PROPERTY
@given(st.lists(st.tuples(url_text, st.none() | st.integers(1, 65535)), min_size=1, max_size=3),
       secret_middle, st.booleans(), url_text, st.sampled_from(["auth", "password", "token",
                                                                "db_password", "my_secret"]),
       st.sampled_from(["", "/sdn", "/a/b"]), st.booleans())
def test_random_urls_never_show_their_secrets(hosts: list, middle: str, encode: bool,
                                              user: str, option: str, path: str,
                                              break_port: bool) -> None:
    password = f"{SECRET}{middle}Z9Q"
    typed = quote(password, safe="") if encode else password.replace("%", "%25")
    host_list = ",".join(f"{h}:{p}" if p else h for h, p in hosts)
    if break_port:
        host_list += ":x"
    url = f"etcd3://{user}:{typed}@{host_list}{path}?{option}=O{SECRET}Z9Q&lease_ttl=3"
    try:
        parsed = parse_url(url)
    except BadURLError as exc:
        assert break_port
        texts = [str(exc)]
    else:
        assert not break_port
        assert parsed.password == password and parsed.options[option] == f"O{SECRET}Z9Q"
        assert parsed.hosts == tuple((h, p) for h, p in hosts)
        texts = [str(parsed), repr(parsed), parsed.redact(f"{url} {password}")]
    for text in texts:
        assert SECRET not in text and "Z9Q" not in text, text


# ---- 4. numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value, fragment", [
    ("session_timeout", "nan", "finite"),
    ("session_timeout", "inf", "finite"),
    ("session_timeout", "-Infinity", "finite"),
    ("session_timeout", "1e308", "must be <="),
    ("session_timeout", float("nan"), "finite"),
    ("session_timeout", 10**400, "out of range"),
    ("connect_timeout", "\u0663", "ASCII"),     # ARABIC-INDIC DIGIT THREE: float() takes it
    ("retry_attempts", "\u0663", "ASCII"),      # ... and so does int()
    ("retry_attempts", "1_0", "ASCII"),
    ("retry_attempts", "2.5", "ASCII"),
    ("retry_attempts", 2.5, "whole number"),
    ("retry_attempts", True, "boolean"),
    ("retry_attempts", "9" * 5000, "ASCII"),
    ("capacity", "-1", "must be >="),
    ("address", "host\nforged", "printable"),
    ("address", "x" * 5000, "printable"),
])
def test_bad_numbers_are_one_line_configuration_errors(name: str, value: Any,
                                                       fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as caught:
        resolve_options(COMMON_OPTIONS, {}, {name: value})
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_etcd_lease_ttl_nan_is_refused() -> None:
    try:
        driver = load_driver("etcd3")
    except ConfigurationError:
        missing("the etcd3 driver is not installed")
    with pytest.raises(ConfigurationError, match="lease_ttl"):
        resolve_options({**COMMON_OPTIONS, **driver.OPTIONS}, {"lease_ttl": "nan"}, {})


@pytest.mark.parametrize("port", ["\u0662\u0661\u0668\u0661", "\u00b2", "\uff12\uff11", "0",
                                  "65536", "-1", "+1", "21 81", "99999999999999999999"])
def test_ports_are_ascii_digits_in_range(port: str) -> None:
    with pytest.raises(BadURLError, match="bad port"):
        parse_url(f"zookeeper://h1:{port}/x")


def _all_options() -> dict[str, Option]:
    specs = dict(COMMON_OPTIONS)
    for scheme in coordination.installed_backends():
        specs.update(load_driver(scheme).OPTIONS)
    return specs


ALL_OPTIONS = _all_options()


@PROPERTY
@given(st.sampled_from(sorted(ALL_OPTIONS)),
       st.text(max_size=30) | st.from_regex(r"[+-]?[0-9.eE]{1,30}", fullmatch=True)
       | st.sampled_from(["nan", "inf", "-inf", "1e308", "\u0663", "1_000", "0x10"]))
def test_random_option_strings_parse_or_raise_configuration_error(name: str, text: str) -> None:
    try:
        value = resolve_options(ALL_OPTIONS, {name: f"{SECRET}{text}"
                                              if "password" in name or name == "auth"
                                              else text}, {})[name]
    except ConfigurationError as exc:
        assert "\n" not in str(exc) and SECRET not in str(exc)
        return
    if isinstance(value, float):
        assert math.isfinite(value)


def test_coordctl_refuses_bad_timeouts_in_one_line(capsys) -> None:
    for argv in (["--connect-timeout", "nan"], ["--connect-timeout", "-1"],
                 ["--connect-timeout", "0"], ["--connect-timeout", "inf"],
                 ["--connect-timeout", "\u0663"], ["--connect-timeout", "1e308"]):
        assert coordctl(["--url", "memory://x", *argv, "members"]) == 2
        assert "--connect-timeout" in one_line(capsys.readouterr().err)
    assert coordctl(["--url", "memory://x", "watch", "--timeout", "nan"]) == 2
    assert "--timeout" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("text, fragment", [
    (b"[coordination\nbackend_url = memory://x\n", "malformed"),
    (b"garbage\n", "malformed"),
    (b"[coordination]\nbackend_url = memory://x\nmember_id = \xff\xfe\n", "not UTF-8"),
    (b"[coordination]\nbackend_url = memory://x\nbackend_url = memory://y\n", "malformed"),
])
def test_coordctl_bad_config_file_is_one_line(tmp_path: Path, text: bytes, fragment: str,
                                              capsys) -> None:
    conf = tmp_path / "ryu.conf"
    conf.write_bytes(text)
    assert coordctl(["--config-file", str(conf), "members"]) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("coordctl: error:") and fragment in line and str(conf) in line


# ---- 5. names ------------------------------------------------------------------------------


@pytest.mark.parametrize("member_id", [".", "..", "a\nb", "a\x00b", "x" * 10_000, "", "  ",
                                       "a/b", "tab\there", "\u2028", 5, None])
def test_bad_member_ids_are_refused_in_one_short_line(member_id: Any) -> None:
    with pytest.raises(ConfigurationError, match="member_id") as caught:
        coordination.connect(f"memory://names-{next(_names)}", member_id)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize("member_id", ["c1", "coordctl@host:123", "ctl ü", "a.b", "...",
                                       "x" * 200])
def test_good_member_ids_connect(member_id: str) -> None:
    with coordination.connect(f"memory://names-{next(_names)}", member_id) as coordinator:
        assert set(coordinator.members()) == {member_id}


@pytest.mark.parametrize("name", [".", "..", "a/b", "a b", "x" * 201, "", "dpid\n1", 1])
def test_bad_election_names(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="election name") as caught:
        validate_election_name(name)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300
    with coordination.connect(f"memory://names-{next(_names)}", "m1") as coordinator, \
            pytest.raises(ConfigurationError, match="election name"):
        coordinator.election(name)  # every driver's elections go through the same check


@pytest.mark.parametrize("name", ["dpid-0000000000000001", "a.b", "...", "x:y_z-1", "x" * 200])
def test_good_election_names(name: str) -> None:
    assert validate_election_name(name) == name


@PROPERTY
@given(st.text(max_size=300) | st.binary(max_size=20) | st.integers())
def test_random_names_validate_or_raise_configuration_error(value: Any) -> None:
    for validate in (validate_member_id, validate_election_name):
        try:
            assert validate(value) == value
        except ConfigurationError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 400
            continue
        assert isinstance(value, str) and 1 <= len(value) <= 200 and value not in (".", "..")
        assert value.isprintable() and "/" not in value


def test_untrusted_strings_cannot_forge_table_rows(capsys) -> None:
    text = table([["c1\nc2  forged  row", None], ["x\x1b[2J", "y" * 1000]], ["member", "b"])
    assert len(text.splitlines()) == 4 and "\x1b" not in text and len(text) < 1000
    url = f"memory://hardening-{next(_names)}"
    with coordination.connect(url, "m1") as coordinator:
        coordinator.topology.put(Switch(dpid=1, owner="m1\n0000000000000002  evil", term=1))
        assert coordctl(["--url", url, "topology"]) == 0
        assert len(capsys.readouterr().out.strip().splitlines()) == 3  # header, rule, one row


# ---- subprocesses: coord-manager and coordctl with a bad ryu.conf -----------------------------

BAD_CONFS = {
    "malformed": b"[coordination\nbackend_url = memory://x\n",
    "not-utf8": b"[coordination]\nbackend_url = memory://x\nmember_id = \xff\xfe\n",
    "abc": b"[coordination]\nbackend_url = memory://x\nsession_timeout = abc\n",
    "negative": b"[coordination]\nbackend_url = memory://x\npriority = -5\n",
    "nan": b"[coordination]\nbackend_url = memory://x\nsession_timeout = nan\n",
    "member": b"[coordination]\nbackend_url = memory://x\nmember_id = ..\n",
    "secret": f"[coordination]\nbackend_url = zookeeper://h:2181/x?auth=u:{SECRET}"
              f"&session_timeout=inf\n".encode(),
}


def _exe(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent))
    assert exe, f"{name} is not installed in the venv"
    return exe


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "COORDINATION_URL"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                          env=env)


def _assert_one_line_error(out: subprocess.CompletedProcess[str], prog: str, conf: Path) -> None:
    assert out.returncode == 2, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and SECRET not in out.stderr + out.stdout
    line = one_line(out.stderr)
    assert line.startswith(f"{prog}: error:") and str(conf.name) in line


# every case under os-ken; under Ryu (same code path, slower to start) the two that differ most
MANAGER_CASES = [(frameworks.OS_KEN, case) for case in sorted(BAD_CONFS) if case != "member"] \
    + [(frameworks.RYU, "not-utf8"), (frameworks.RYU, "secret")]


@pytest.mark.parametrize("framework, case", MANAGER_CASES)
def test_coord_manager_bad_conf_is_one_line_exit_2(tmp_path: Path, framework: str,
                                                  case: str) -> None:
    if not frameworks.installed(framework):
        missing(f"{framework} is not installed")
    conf = tmp_path / "ryu.conf"
    conf.write_bytes(BAD_CONFS[case])
    out = _run([_exe("coord-manager"), "--framework", framework, "--config-file", str(conf),
                "--ofp-tcp-listen-port", "0", "ryu_integration.mastership"])
    _assert_one_line_error(out, "coord-manager", conf)


@pytest.mark.parametrize("framework", [frameworks.OS_KEN, frameworks.RYU])
def test_coord_manager_with_its_openflow_port_taken_is_one_line(framework: str) -> None:
    if not frameworks.installed(framework):
        missing(f"{framework} is not installed")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = _run([_exe("coord-manager"), "--framework", framework, "--ofp-listen-host",
                    "127.0.0.1", "--ofp-tcp-listen-port", str(port), "ryu_integration.mastership"])
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert one_line(out.stderr) == (f"coord-manager: error: cannot listen for switches on "
                                    f"127.0.0.1:{port}: Address already in use")


@pytest.mark.parametrize("case", ["malformed", "not-utf8"])
def test_coordctl_bad_conf_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    conf = tmp_path / "ryu.conf"
    conf.write_bytes(BAD_CONFS[case])
    _assert_one_line_error(_run([_exe("coordctl"), "--config-file", str(conf), "members"]),
                           "coordctl", conf)


def test_ryu_conf_values_name_file_and_option(tmp_path: Path) -> None:
    from oslo_config import cfg

    from ryu_integration.mastership import config

    for line, fragment in [("session_timeout = nan", "session_timeout"),
                           ("session_timeout = 1e308", "session_timeout"),
                           ("reassert_interval = inf", "reassert_interval"),
                           ("member_id = a/b", "member_id"),
                           ("backend_url = zookeeper://h:\u0663/x", "backend_url"),
                           (f"backend_url = etcd3://u:{SECRET}@h/x?lease_ttl=nan", "backend_url")]:
        path = tmp_path / "ryu.conf"
        path.write_text(f"[coordination]\n{line}\n")
        conf = cfg.ConfigOpts()
        config.register(conf)
        config.parse(conf, ["--config-file", str(path)], project="test")
        with pytest.raises(ConfigurationError) as caught:
            config.load(conf)
        message = str(caught.value)
        assert message.startswith(f"{path}: [coordination] {fragment}"), message
        assert SECRET not in message and "\n" not in message

