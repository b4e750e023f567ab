"""Backend URLs: `scheme://[user[:password]@]host1:port1,host2:port2/path?option=value`.

Secrets never leave a `BackendURL` as text: `str()` and `repr()` show the password and every
secret option (`is_secret`: `auth`, `password`, `token`, `*secret*`, ...) as `***`, and so does
every error `parse_url` raises. `BackendURL.redact(text)` does the same to any other text (an error
message from a client library, say) before it is shown.

The userinfo ends at the last `@` before the host list, so a password may contain `@`, `/` and
`:` as typed (or percent-encoded, `%40 %2F %3A`). An `@` after the query has begun (after a
`?...=`) belongs to an option value. A `#`, or a `?` followed by `=` or `&`, in a password must be
percent-encoded (`%23`, `%3F`): written raw it cannot be told from the query.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote

from .errors import BadURLError
from .names import printable, shown

#: What a secret is replaced by wherever a URL or its options are shown.
SECRET = "***"
MAX_PORT = 65535

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.\-]*)://")
_SECRET_NAMES = frozenset({"auth", "pass", "pwd", "key", "apikey", "api_key"})
_SECRET_PARTS = ("password", "passwd", "secret", "token", "credential")
#: A host list as it may follow the userinfo's `@`: ends at the path, the query or the end.
_HOST_LIST = re.compile(r"[A-Za-z0-9.\-_:%\[\],]*(?:[/?]|\Z)")
_HOST = re.compile(r"[A-Za-z0-9.\-_:%]+")
_PORT = re.compile(r"[0-9]{1,5}")  # ASCII digits only: int() would take any Unicode digit
_QUERY_SEP = re.compile(r"[=&]")
_MIN_SCRUBBED = 3  # shorter secrets are not scrubbed from free text (it would garble it)


def is_secret(name: str) -> bool:
    """Whether an option called `name` holds a secret whose value must never be shown."""
    lowered = str(name).lower()
    return lowered in _SECRET_NAMES or lowered.endswith("_auth") \
        or any(part in lowered for part in _SECRET_PARTS)


@dataclass(frozen=True)
class BackendURL:
    """A parsed backend URL. `hosts` keeps the order given; `options` are the raw query values.

    Shown (`str`, `repr`, f-strings, %s in logs) with the password and secret options masked.
    """

    scheme: str
    hosts: tuple[tuple[str, int | None], ...] = ()
    path: str = ""
    options: dict[str, str] = field(default_factory=dict, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    raw: str = field(default="", repr=False)

    def host_string(self, default_port: int) -> str:
        """Hosts as `h1:p1,h2:p2`, filling in `default_port` where none was given."""
        return ",".join(_join_host(h, p or default_port) for h, p in self.hosts)

    def with_subpath(self, suffix: str) -> BackendURL:
        """The same URL with `suffix` appended to its path (used to isolate namespaces)."""
        base = self.path.rstrip("/")
        return replace(self, path=f"{base}/{suffix.strip('/')}")

    def secrets(self) -> tuple[str, ...]:
        """Every secret this URL carries (the password, secret options' values), longest first."""
        values = {self.password or ""} | {v for k, v in self.options.items() if is_secret(k)}
        if self.raw:  # also as typed, in case a message quotes the unparsed URL
            userinfo, _ = _split_userinfo(_after_scheme(self.raw))
            if userinfo and ":" in userinfo:
                values.add(userinfo.partition(":")[2])
            values |= {v for k, v in _raw_pairs(self.raw) if is_secret(unquote(k))}
        return tuple(sorted((v for v in values if v), key=len, reverse=True))

    def redact(self, text: str) -> str:
        """`text` with every secret of this URL (3 characters or more) replaced by `***`."""
        for secret in self.secrets():
            if len(secret) >= _MIN_SCRUBBED:
                text = text.replace(secret, SECRET)
        return text

    def __str__(self) -> str:
        userinfo = ""
        if self.username is not None:
            userinfo = quote(self.username, safe="")
            userinfo += f":{SECRET}@" if self.password is not None else "@"
        hosts = ",".join(_join_host(h, p) if p else (f"[{h}]" if ":" in h else h)
                         for h, p in self.hosts)
        path = quote(self.path, safe="/:@,+~=")
        query = "&".join(
            f"{quote(k, safe=':,')}={SECRET if is_secret(k) else quote(v, safe=':/,@+*')}"
            for k, v in self.options.items())
        return f"{self.scheme}://{userinfo}{hosts}{path}{'?' + query if query else ''}"

    def __repr__(self) -> str:
        return f"BackendURL({str(self)!r})"


def _join_host(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _after_scheme(url: str) -> str:
    match = _SCHEME.match(url)
    return url[match.end():] if match else url


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """(userinfo or None, the rest) of what follows `scheme://`: split at the last `@` that is
    not inside an option value and is followed by something shaped like a host list (else at
    the last such `@` anyway, so that a malformed host list never shows a password)."""
    query = rest.find("?")
    stop = len(rest)
    if query >= 0:
        value = _QUERY_SEP.search(rest, query)
        stop = value.start() if value else stop
    ats = [i for i in range(stop) if rest[i] == "@"]
    if not ats:
        return None, rest
    for at in reversed(ats):
        if _HOST_LIST.match(rest, at + 1):
            return rest[:at], rest[at + 1:]
    return rest[:ats[-1]], rest[ats[-1] + 1:]


def _raw_pairs(url: str) -> list[tuple[str, str]]:
    _, rest = _split_userinfo(_after_scheme(url))
    _, _, query = rest.partition("?")
    pairs = []
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        pairs.append((key, value if eq else ""))
    return pairs


def redact_raw(url: str) -> str:
    """An unparsed (maybe malformed) URL as it may be shown: userinfo password and secret
    option values masked, non-printable characters escaped, cut to 200 characters."""
    match = _SCHEME.match(url)
    prefix = url[:match.end()] if match else ""
    userinfo, rest = _split_userinfo(url[len(prefix):])
    shown_userinfo = ""
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        shown_userinfo = f"{user}:{SECRET}@" if colon else f"{user}@"
    location, q, query = rest.partition("?")
    if q:
        parts = []
        for part in query.split("&"):
            key, eq, _value = part.partition("=")
            masked = not eq or not key or is_secret(unquote(key))
            parts.append(f"{key}={SECRET}" if masked else part)
        location += "?" + "&".join(parts)
    return printable(prefix + shown_userinfo + location, 200)


def parse_url(url: str) -> BackendURL:
    """Parse a backend URL, raising `BadURLError` that says what is wrong (never its secrets)."""
    if not isinstance(url, str) or not url.strip():
        raise BadURLError(f"backend URL must be a non-empty string, got {shown(url)}")
    url = url.strip()
    match = _SCHEME.match(url)
    if not match:
        raise BadURLError(
            f"backend URL {redact_raw(url)!r} has no scheme; expected e.g. "
            "'zookeeper://host:2181/prefix', 'etcd3://host:2379', 'memory://'"
        )
    scheme = match.group(1).lower()
    userinfo, rest = _split_userinfo(url[match.end():])
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    path = "/" + unquote(path) if slash else ""
    if not path.isprintable():
        raise BadURLError(f"backend URL {redact_raw(url)!r}: the path has control characters")
    username = password = None
    if userinfo is not None:
        user, colon, pw = userinfo.partition(":")
        username = unquote(user)
        password = unquote(pw) if colon and pw else None
    hosts = tuple(_parse_host(part, url) for part in netloc.split(",") if part) if netloc else ()
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise BadURLError(
            f"backend URL {redact_raw(url)!r} has a malformed query (want name=value&...)"
        ) from None
    for key, value in pairs:
        if key in options:
            raise BadURLError(f"backend URL {redact_raw(url)!r} sets option {shown(key)} twice")
        options[key] = value
    return BackendURL(scheme, hosts, path.rstrip("/") if path != "/" else "", options,
                      username, password, url)


def _parse_host(part: str, url: str) -> tuple[str, int | None]:
    where = f"backend URL {redact_raw(url)!r}"
    if part.startswith("["):
        host, _, tail = part[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
        if tail and not tail.startswith(":"):
            raise BadURLError(f"bad host {shown(part)} in {where}")
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise BadURLError(f"empty host name in {shown(part)} of {where}")
    if not _HOST.fullmatch(host):
        raise BadURLError(f"bad host name {shown(host)} in {where}")
    if not port_text:
        return host, None
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) <= MAX_PORT:
        raise BadURLError(f"bad port {shown(port_text)} for host {shown(host)} in {where} "
                          f"(want 1-{MAX_PORT}, ASCII digits)")
    return host, int(port_text)
