"""Record validation and encoding: what goes in and out of the store is checked both ways."""

from __future__ import annotations

import json

import pytest

from coordination import SCHEMA_VERSION, Host, InvalidRecordError, Link, Port, Switch
from coordination.records import decode, encode, record_path


def test_round_trip_every_kind() -> None:
    for record in (
        Switch(dpid=2**64 - 1, address="10.0.0.1:1", ports=(Port(1, "a", "00:00:00:00:00:01"),),
               owner="c1", term=5),
        Link(src_dpid=1, src_port=2, dst_dpid=3, dst_port=4, owner="c1", term=1),
        Host(mac="00:00:00:00:00:0A", ips=("10.0.0.2", "fe80::1"), dpid=1, port_no=3),
    ):
        assert decode(record_path(record), encode(record)) == record


def test_encoding_carries_schema_and_kind() -> None:
    body = json.loads(encode(Switch(dpid=1)))
    assert body["schema"] == SCHEMA_VERSION and body["kind"] == "switch"


@pytest.mark.parametrize("path, data, fragment", [
    ("switch/0000000000000001", b"\xff\xfe", "not valid JSON"),
    ("switch/0000000000000001", b"[1]", "JSON object"),
    ("switch/0000000000000001", b'{"schema": 2, "kind": "switch", "dpid": 1}', "schema 2"),
    ("switch/0000000000000001", b'{"schema": 1, "kind": "link", "dpid": 1}', "kind does not match"),
    ("switch/0000000000000002", b'{"schema": 1, "kind": "switch", "dpid": 1}', "key"),
    ("switch/0000000000000001", b'{"schema": 1, "kind": "switch", "dpid": 1, "x": 1}', "unknown"),
    ("switch/0000000000000001", b'{"schema": 1, "kind": "switch", "dpid": "1"}', "dpid"),
    ("router/1", b"{}", "unknown record kind"),
    ("host/000000000001", b'{"schema":1,"kind":"host","mac":"00:00:00:00:00:01","ips":"10.0.0.1"}',
     "ips"),
])
def test_malformed_values_are_reported(path: str, data: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRecordError, match=fragment):
        decode(path, data)


def test_validation_on_the_way_in() -> None:
    with pytest.raises(InvalidRecordError, match="term"):
        Switch(dpid=1, term=2**64)
    with pytest.raises(InvalidRecordError, match="port_no"):
        Port(-1)
    with pytest.raises(InvalidRecordError, match="up"):
        Port(1, up="yes")  # type: ignore[arg-type]
