"""URL parsing, option resolution and driver loading: clear errors for bad input."""

from __future__ import annotations

import pytest

import coordination
from coordination import BadURLError, ConfigurationError, UnknownBackendError, parse_url
from coordination.options import COMMON_OPTIONS, resolve_options


def test_parses_hosts_path_and_options() -> None:
    url = parse_url("zookeeper://h1:2181,h2,[::1]:2182/sdn/prod?session_timeout=4&auth=u:p")
    assert url.scheme == "zookeeper"
    assert url.hosts == (("h1", 2181), ("h2", None), ("::1", 2182))
    assert url.path == "/sdn/prod"
    assert url.options == {"session_timeout": "4", "auth": "u:p"}
    assert url.host_string(2181) == "h1:2181,h2:2181,[::1]:2182"


def test_userinfo_is_parsed_and_never_shown() -> None:
    url = parse_url("etcd3://root:s3cret@h1:2379")
    assert (url.username, url.password) == ("root", "s3cret")
    assert "s3cret" not in str(url)


@pytest.mark.parametrize("bad, fragment", [
    ("", "non-empty"),
    ("localhost:2181", "no scheme"),
    ("zookeeper://h1:99999", "bad port"),
    ("zookeeper://h1:abc", "bad port"),
    ("zookeeper://h1:2181?a=1&a=2", "twice"),
    ("zookeeper://h 1:2181", "bad host"),
])
def test_bad_urls_say_what_is_wrong(bad: str, fragment: str) -> None:
    with pytest.raises(BadURLError, match=fragment):
        parse_url(bad)


def test_unknown_scheme_lists_installed_backends() -> None:
    with pytest.raises(UnknownBackendError) as info:
        coordination.connect("nosuch://h", member_id="a")
    assert "memory" in info.value.installed and "zookeeper" in info.value.installed
    assert "memory" in str(info.value)


def test_options_merge_url_and_keywords_keywords_win() -> None:
    merged = resolve_options(COMMON_OPTIONS, {"session_timeout": "4", "capacity": "2"},
                             {"session_timeout": 6})
    assert merged["session_timeout"] == 6.0 and merged["capacity"] == 2
    assert merged["retry_attempts"] == COMMON_OPTIONS["retry_attempts"].default


@pytest.mark.parametrize("options, fragment", [
    ({"sesion_timeout": "4"}, "unknown option 'sesion_timeout'; known options"),
    ({"session_timeout": "soon"}, "session_timeout='soon' is invalid"),
    ({"session_timeout": "0"}, "must be >="),
])
def test_bad_options_are_named(options: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        resolve_options(COMMON_OPTIONS, options, {})


def test_bad_member_id_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="member_id"):
        coordination.connect("memory://x", member_id="")


def test_connect_returns_a_started_context_manager() -> None:
    with coordination.connect("memory://unit-ctx", member_id="a") as coord:
        assert coord.session_state is coordination.SessionState.CONNECTED
        assert set(coord.members()) == {"a"}
    assert coord.closed
    with pytest.raises(coordination.ClosedError):
        coord.members()
