"""What the failure detector puts on the wire and in member records: endpoints, the
advertised metadata (`liveness`, `liveness_id`) and frames. Everything read from a peer or a
member record is validated here; a malformed value is a ValueError saying why."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .names import shown

#: Longest frame accepted; a peer sending more is cut off (never declared dead for it).
MAX_FRAME = 4096


def parse_endpoint(value: object) -> tuple[str, int]:
    """(host, port) of a `host:port` / `[v6]:port` text; ValueError saying why not."""
    if not isinstance(value, str) or not 3 <= len(value) <= 300 or not value.isprintable():
        raise ValueError(f"expected 'host:port', got {shown(value)}")
    host, sep, port_text = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or any(c.isspace() for c in host) \
            or not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"expected 'host:port', got {shown(value)}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port must be 1-65535, got {port}")
    return host, port


def parse_bind_address(value: object) -> tuple[str, int]:
    """(host, port) to listen on, from `host`, `host:port` or `[v6]:port` (port 0: any free
    one); ValueError saying why not."""
    text = str(value).strip()
    if text and not text.endswith("]") and text.count(":") != 1 and not text.startswith("["):
        text = f"[{text}]:0" if ":" in text else f"{text}:0"
    elif text and (":" not in text or text.endswith("]")):
        text += ":0"
    if not text or not text.isprintable() or len(text) > 300:
        raise ValueError("expected 'host' or 'host:port'")
    host, _, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or any(c.isspace() for c in host) or not port_text.isascii() \
            or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError("expected 'host' or 'host:port' with a port in 0-65535")
    return host, int(port_text)


def format_endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_of(member_id: str, metadata: Mapping[str, Any]) -> tuple[tuple[str, int], str] | None:
    """(endpoint, incarnation) a member record advertises; None if it has no detector;
    ValueError if what it advertises is malformed."""
    if "liveness" not in metadata:
        return None
    endpoint = parse_endpoint(metadata.get("liveness"))
    incarnation = metadata.get("liveness_id")
    if not isinstance(incarnation, str) or not 1 <= len(incarnation) <= 64 \
            or not incarnation.isalnum() or not incarnation.isascii():
        raise ValueError(f"liveness_id must be 1-64 ASCII letters or digits, got "
                         f"{shown(incarnation)}")
    return endpoint, incarnation


def encode(frame: dict[str, Any]) -> bytes:
    """One frame: a JSON line."""
    return json.dumps(frame, separators=(",", ":")).encode() + b"\n"
