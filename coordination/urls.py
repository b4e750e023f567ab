"""Backend URLs: `scheme://host1:port1,host2:port2/path?option=value`."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, unquote

from .errors import BadURLError

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")


@dataclass(frozen=True)
class BackendURL:
    """A parsed backend URL. `hosts` keeps the order given; `options` are the raw query values."""

    scheme: str
    hosts: tuple[tuple[str, int | None], ...] = ()
    path: str = ""
    options: dict[str, str] = field(default_factory=dict)
    username: str | None = None
    password: str | None = None
    raw: str = ""

    def host_string(self, default_port: int) -> str:
        """Hosts as `h1:p1,h2:p2`, filling in `default_port` where none was given."""
        return ",".join(_join_host(h, p or default_port) for h, p in self.hosts)

    def with_subpath(self, suffix: str) -> BackendURL:
        """The same URL with `suffix` appended to its path (used to isolate namespaces)."""
        base = self.path.rstrip("/")
        return replace(self, path=f"{base}/{suffix.strip('/')}")

    def __str__(self) -> str:  # never show a password
        return _redact(self.raw) if self.raw else f"{self.scheme}://..."


def _join_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _redact(raw: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", raw)


def parse_url(url: str) -> BackendURL:
    """Parse a backend URL, raising `BadURLError` that says what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise BadURLError(f"backend URL must be a non-empty string, got {url!r}")
    url = url.strip()
    match = _SCHEME.match(url)
    if not match:
        raise BadURLError(
            f"backend URL {_redact(url)!r} has no scheme; expected e.g. "
            "'zookeeper://host:2181/prefix', 'etcd3://host:2379', 'memory://'"
        )
    scheme = match.group(1).lower()
    rest = url[match.end():]
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    path = "/" + unquote(path) if slash else ""
    username = password = None
    if "@" in netloc:
        creds, _, netloc = netloc.rpartition("@")
        user, _, pw = creds.partition(":")
        username, password = unquote(user), unquote(pw) if pw else None
    hosts = tuple(_parse_host(part, url) for part in netloc.split(",") if part) if netloc else ()
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise BadURLError(f"backend URL {_redact(url)!r} has a malformed query: {exc}") from None
    for key, value in pairs:
        if key in options:
            raise BadURLError(f"backend URL {_redact(url)!r} sets option {key!r} twice")
        options[key] = value
    return BackendURL(scheme, hosts, path.rstrip("/") if path != "/" else "", options,
                      username, password, url)


def _parse_host(part: str, url: str) -> tuple[str, int | None]:
    if part.startswith("["):
        host, _, tail = part[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
        if tail and not tail.startswith(":"):
            raise BadURLError(f"bad host {part!r} in backend URL {_redact(url)!r}")
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise BadURLError(f"empty host name in {part!r} of backend URL {_redact(url)!r}")
    if not re.fullmatch(r"[A-Za-z0-9.\-_:%]+", host):
        raise BadURLError(f"bad host name {host!r} in backend URL {_redact(url)!r}")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadURLError(f"bad port {port_text!r} for host {host!r} in backend URL {_redact(url)!r}")
    return host, int(port_text)
