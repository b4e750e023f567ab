"""Real etcd servers for tests: one member (optionally TLS and/or auth) or a 3-member cluster.

What: Debian's etcd 3.4 on free loopback client/peer ports with temp data dirs; readiness via
HTTP ``/health``; leader lookup via the grpc-gateway ``/v3/maintenance/status``. Why: the etcd
backend must meet real leases, revisions, watches, auth tokens and quorum loss.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from ._process import (
    LOOPBACK,
    ManagedProcess,
    ServerError,
    ServerGroup,
    clean_env,
    free_ports,
    make_temp_dir,
    remove_temp_dir,
    wait_until,
)

ROOT_USER = "root"


# -- TLS material -----------------------------------------------------------------------------
def make_tls_material(directory: str | os.PathLike[str]) -> tuple[Path, Path, Path]:
    """Create a self-signed CA and a cert/key for 127.0.0.1 + localhost in ``directory``.

    The leaf has both serverAuth and clientAuth usages, so the same pair serves etcd and can be
    presented by clients when ``client_cert_auth`` is on. Returns (ca_file, cert_file, key_file).
    Uses the ``cryptography`` package when importable, else the ``openssl`` CLI.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    ca, cert, key = d / "ca.crt", d / "server.crt", d / "server.key"
    try:
        _make_tls_cryptography(ca, cert, key)
    except ImportError:
        _make_tls_openssl(d, ca, cert, key)
    return ca, cert, key


def _make_tls_cryptography(ca_file: Path, cert_file: Path, key_file: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "coordination test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_file.chmod(0o600)


def _make_tls_openssl(d: Path, ca_file: Path, cert_file: Path, key_file: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerError(
            "neither the cryptography package nor openssl (Debian package: openssl) found"
        )
    ca_key = d / "ca.key"
    csr = d / "server.csr"
    ext = d / "server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "keyUsage=critical,digitalSignature,keyAgreement\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    cmds = [
        [openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(ca_key)],
        [
            openssl,
            "req",
            "-x509",
            "-new",
            "-key",
            str(ca_key),
            "-sha256",
            "-days",
            "2",
            "-subj",
            "/CN=coordination test CA",
            "-out",
            str(ca_file),
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        ],
        [openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key_file)],
        [openssl, "req", "-new", "-key", str(key_file), "-subj", "/CN=127.0.0.1", "-out", str(csr)],
        [
            openssl,
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca_file),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            str(ext),
            "-out",
            str(cert_file),
        ],
    ]
    for cmd in cmds:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        if res.returncode != 0:
            raise ServerError(f"{' '.join(cmd)} failed: {res.stderr}")
    key_file.chmod(0o600)


# -- one member -------------------------------------------------------------------------------
class EtcdServer:
    """One etcd member. Alone by default; part of a cluster when ``initial_cluster`` is given.

    Options: ``tls=True`` serves clients over https with a generated CA (``ca_file``,
    ``cert_file``, ``key_file``; ``client_cert_auth=True`` also requires client certs);
    ``auth=("user", "pass")`` enables authentication with a ``root`` user (``root_password``)
    and that user holding a read-write role over the whole keyspace. ``restart()`` keeps ports
    and data. ``close()`` stops it and removes the temp dir if this object created it.
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        name: str = "n1",
        client_port: int | None = None,
        peer_port: int | None = None,
        tls: bool = False,
        client_cert_auth: bool = False,
        auth: tuple[str, str] | None = None,
        root_password: str = "rootpw",
        auth_token_ttl: int | None = None,
        heartbeat_interval: int = 100,
        election_timeout: int = 1000,
        initial_cluster: str | None = None,
        cluster_token: str = "coordination-tests",
        extra_args: Sequence[str] = (),
    ) -> None:
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else make_temp_dir("etcd-")
        self.name = name
        self.host = LOOPBACK
        self._auto_ports = client_port is None and peer_port is None and initial_cluster is None
        if client_port is None or peer_port is None:
            c, p = free_ports(2)
            client_port = client_port if client_port is not None else c
            peer_port = peer_port if peer_port is not None else p
        self.client_port: int = client_port
        self.peer_port: int = peer_port
        self.tls = tls or client_cert_auth
        self.client_cert_auth = client_cert_auth
        self.auth = auth
        self.root_password = root_password
        self.auth_token_ttl = auth_token_ttl
        self.heartbeat_interval = heartbeat_interval
        self.election_timeout = election_timeout
        self.initial_cluster = initial_cluster
        self.cluster_token = cluster_token
        self.extra_args = list(extra_args)
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "etcd.log"
        self.ca_file: Path | None = None
        self.cert_file: Path | None = None
        self.key_file: Path | None = None
        if self.tls:
            self.ca_file, self.cert_file, self.key_file = make_tls_material(self.base_dir / "tls")
        self._proc: ManagedProcess | None = None
        self._auth_done = False

    # -- addresses ---------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        """``https`` with TLS, else ``http``."""
        return "https" if self.tls else "http"

    @property
    def client_url(self) -> str:
        """e.g. ``http://127.0.0.1:2379``."""
        return f"{self.scheme}://{self.host}:{self.client_port}"

    @property
    def client_urls(self) -> list[str]:
        """``[client_url]`` (same shape as :attr:`EtcdCluster.client_urls`)."""
        return [self.client_url]

    @property
    def peer_url(self) -> str:
        """Peer URL (always plain http on loopback)."""
        return f"http://{self.host}:{self.peer_port}"

    @property
    def endpoint(self) -> str:
        """``127.0.0.1:PORT`` (no scheme)."""
        return f"{self.host}:{self.client_port}"

    @property
    def endpoints(self) -> str:
        """Same as :attr:`endpoint` (comma-joined form, for symmetry with the cluster)."""
        return self.endpoint

    @property
    def port(self) -> int:
        """The client port."""
        return self.client_port

    @property
    def user(self) -> str | None:
        """The normal user's name when auth is on."""
        return self.auth[0] if self.auth else None

    @property
    def password(self) -> str | None:
        """The normal user's password when auth is on."""
        return self.auth[1] if self.auth else None

    @property
    def pid(self) -> int | None:
        """PID of the etcd process (None before the first start)."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self._proc is not None and self._proc.running

    # -- lifecycle ---------------------------------------------------------------------------
    def argv(self) -> list[str]:
        """The etcd command line for the current ports and options."""
        etcd = shutil.which("etcd")
        if etcd is None:
            raise ServerError("etcd not found (Debian package: etcd-server)")
        args = [
            etcd,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.client_url,
            "--advertise-client-urls",
            self.client_url,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            self.initial_cluster or f"{self.name}={self.peer_url}",
            "--initial-cluster-token",
            self.cluster_token,
            "--initial-cluster-state",
            "new",
            "--heartbeat-interval",
            str(self.heartbeat_interval),
            "--election-timeout",
            str(self.election_timeout),
            "--logger",
            "zap",
            "--log-outputs",
            "stderr",
        ]
        if self.tls:
            assert self.cert_file and self.key_file and self.ca_file
            args += ["--cert-file", str(self.cert_file), "--key-file", str(self.key_file)]
            if self.client_cert_auth:
                args += ["--client-cert-auth", "--trusted-ca-file", str(self.ca_file)]
        if self.auth_token_ttl is not None:
            args += ["--auth-token-ttl", str(self.auth_token_ttl)]
        return args + self.extra_args

    def launch(self) -> None:
        """Start etcd without waiting for readiness (no-op if already running)."""
        if self.running:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        env = clean_env(drop_prefixes=("ETCD_", "ETCDCTL_"))
        self._proc = ManagedProcess(
            f"etcd-{self.name}", self.argv(), cwd=self.base_dir, log_path=self.log_path, env=env
        )
        self._proc.start()

    def start(self, timeout: float = 30.0) -> float:
        """Start, wait for ``/health`` to report true, set up auth if asked; returns seconds.

        On the first start with auto-picked ports a lost port race is retried on fresh ports.
        """
        for attempt in range(3):
            t0 = time.monotonic()
            self.launch()
            try:
                self.wait_ready(timeout)
                break
            except ServerError:
                lost = self._proc is not None and "address already in use" in self._proc.log_tail(
                    200
                )
                self.kill()
                if attempt < 2 and self._auto_ports and lost:
                    self.client_port, self.peer_port = free_ports(2)
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                    continue
                raise
        if self.auth and not self._auth_done:
            self._enable_auth()
        return time.monotonic() - t0

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait until ``GET /health`` says ``"health":"true"``."""
        if self._proc is None:
            raise ServerError(f"etcd {self.name} was never started")
        return self._proc.wait_ready(self.is_healthy, timeout, "healthy (/health)")

    def is_healthy(self) -> bool:
        """One ``/health`` probe (true only when the member has a leader and quorum)."""
        try:
            with urllib.request.urlopen(
                f"{self.client_url}/health", timeout=1.0, context=self.ssl_context()
            ) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def peer_serving(self) -> bool:
        """Probe the peer listener (``GET <peer>/members``); it answers before any leader exists."""
        try:
            with urllib.request.urlopen(f"{self.peer_url}/members", timeout=1.0) as resp:
                return resp.status == 200
        except (OSError, ValueError):
            return False

    def wait_peer_serving(self, timeout: float = 30.0) -> float:
        """Wait until the peer listener answers (see :meth:`peer_serving`)."""
        if self._proc is None:
            raise ServerError(f"etcd {self.name} was never started")
        return self._proc.wait_ready(self.peer_serving, timeout, "serving peers (/members)")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout`` s); returns once the old PID is gone."""
        return self._proc.stop(timeout) if self._proc else None

    def kill(self) -> int | None:
        """SIGKILL (crash) and wait for the process to be gone."""
        return self._proc.kill() if self._proc else None

    def restart(self, timeout: float = 30.0) -> float:
        """Stop and start on the same ports/data dir; returns seconds to healthy.

        For a cluster member, "healthy" needs a quorum of running members.
        """
        self.stop()
        t0 = time.monotonic()
        self.launch()
        self.wait_ready(timeout)
        return time.monotonic() - t0

    def close(self) -> None:
        """Stop, and delete the temp dir if this object created it."""
        self.stop()
        if self._owns_dir:
            remove_temp_dir(self.base_dir)

    def log_tail(self, lines: int = 40) -> str:
        """Last lines of the etcd log."""
        return self._proc.log_tail(lines) if self._proc else "<never started>"

    # -- clients -----------------------------------------------------------------------------
    def ssl_context(self) -> ssl.SSLContext | None:
        """SSL context trusting the test CA, with the client cert loaded; None without TLS."""
        if not self.tls:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx

    def etcdctl(
        self,
        *args: str,
        user: str | None = None,
        password: str | None = None,
        timeout: float = 15.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``etcdctl`` (API v3) against this member, adding TLS flags and credentials."""
        exe = shutil.which("etcdctl")
        if exe is None:
            raise ServerError("etcdctl not found (Debian package: etcd-client)")
        cmd = [exe, f"--endpoints={self.client_url}", "--dial-timeout=3s", "--command-timeout=5s"]
        if self.tls:
            cmd += [
                f"--cacert={self.ca_file}",
                f"--cert={self.cert_file}",
                f"--key={self.key_file}",
            ]
        if user is not None:
            cmd += [f"--user={user}:{password or ''}"]
        cmd += list(args)
        env = clean_env({"ETCDCTL_API": "3"}, drop_prefixes=("ETCDCTL_",))
        res = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and res.returncode != 0:
            raise ServerError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def _enable_auth(self) -> None:
        assert self.auth is not None
        user, password = self.auth
        role = f"{user}-rw"
        self.etcdctl("user", "add", f"{ROOT_USER}:{self.root_password}")
        self.etcdctl("user", "grant-role", ROOT_USER, "root")
        self.etcdctl("role", "add", role)
        self.etcdctl("role", "grant-permission", role, "readwrite", "--from-key", "")
        self.etcdctl("user", "add", f"{user}:{password}")
        self.etcdctl("user", "grant-role", user, role)
        self.etcdctl("auth", "enable")
        self._auth_done = True

    def http(
        self,
        path: str,
        payload: dict[str, Any] | None = None,
        token: str | None = None,
        timeout: float = 5.0,
    ) -> Any:
        """POST JSON to the grpc-gateway (e.g. ``/v3/kv/put``) and return the decoded reply."""
        req = urllib.request.Request(
            f"{self.client_url}{path}",
            data=json.dumps(payload or {}).encode(),
            headers={
                "Content-Type": "application/json",
                **({"Authorization": token} if token else {}),
            },
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise ServerError(
                f"POST {path} -> {exc.code}: {exc.read().decode('utf-8', 'replace')}"
            ) from exc

    def auth_token(self, user: str | None = None, password: str | None = None) -> str:
        """Get a gateway auth token (defaults to the configured normal user)."""
        user = user if user is not None else self.user
        password = password if password is not None else self.password
        return str(
            self.http("/v3/auth/authenticate", {"name": user, "password": password})["token"]
        )

    def put(self, key: str, value: str, token: str | None = None) -> dict[str, Any]:
        """Put via the HTTP gateway (keys/values base64-encoded as the gateway requires)."""
        return self.http("/v3/kv/put", {"key": _b64(key), "value": _b64(value)}, token)

    def get(self, key: str, token: str | None = None) -> str | None:
        """Get via the HTTP gateway; None if the key is absent."""
        reply = self.http("/v3/kv/range", {"key": _b64(key)}, token)
        kvs = reply.get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")).decode() if kvs else None

    def status(self, timeout: float = 1.0) -> dict[str, Any]:
        """``/v3/maintenance/status`` of this member (``header.member_id``, ``leader``...)."""
        return dict(self.http("/v3/maintenance/status", {}, timeout=timeout))

    def member_id(self) -> str:
        """This member's id (decimal string, as the gateway encodes uint64)."""
        return str(self.status()["header"]["member_id"])

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EtcdServer {self.name} {self.client_url} pid={self.pid} running={self.running}>"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- a cluster --------------------------------------------------------------------------------
class EtcdCluster(ServerGroup):
    """A ``size``-member (default 3) etcd cluster on loopback (heartbeat 100 ms, election 1 s)."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        size: int = 3,
        heartbeat_interval: int = 100,
        election_timeout: int = 1000,
    ) -> None:
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else make_temp_dir("etcd-cl-")
        self.size = size
        self.heartbeat_interval = heartbeat_interval
        self.election_timeout = election_timeout
        self.members: list[EtcdServer] = []
        self._build_members()

    def _build_members(self) -> None:
        ports = free_ports(2 * self.size)
        names = [f"n{i + 1}" for i in range(self.size)]
        initial = ",".join(f"{n}=http://{LOOPBACK}:{ports[2 * i + 1]}" for i, n in enumerate(names))
        token = f"coordination-tests-{os.getpid()}-{ports[0]}"
        self.members = [
            EtcdServer(
                self.base_dir / n,
                name=n,
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                heartbeat_interval=self.heartbeat_interval,
                election_timeout=self.election_timeout,
                initial_cluster=initial,
                cluster_token=token,
            )
            for i, n in enumerate(names)
        ]

    # -- addresses ---------------------------------------------------------------------------
    @property
    def endpoints(self) -> str:
        """``127.0.0.1:P1,127.0.0.1:P2,...``."""
        return ",".join(m.endpoint for m in self.members)

    @property
    def client_urls(self) -> list[str]:
        """Client URLs in member order."""
        return [m.client_url for m in self.members]

    @property
    def ports(self) -> list[int]:
        """Client ports in member order."""
        return [m.client_port for m in self.members]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> float:
        """Start every member and wait until all are healthy and agree on a leader."""
        for attempt in range(2):
            t0 = time.monotonic()
            try:
                # Staggered: a bootstrapping member asks every peer whether the cluster already
                # exists; a peer whose port is open but not yet serving costs a 1-2 s timeout.
                for m in self.members:
                    m.launch()
                    m.wait_peer_serving(timeout)
                self.wait_serving(timeout)
                return time.monotonic() - t0
            except ServerError:
                lost = any(
                    m._proc and "address already in use" in m._proc.log_tail(200)
                    for m in self.members
                )
                self.kill()
                if attempt == 0 and lost:
                    for m in self.members:  # half-bootstrapped data would pin the old ports
                        shutil.rmtree(m.base_dir, ignore_errors=True)
                    self._build_members()
                    continue
                raise
        raise AssertionError("unreachable")

    def wait_serving(self, timeout: float = 30.0) -> float:
        """Wait until every running member is healthy and all name the same leader."""

        def ready() -> bool:
            running = [m for m in self.members if m.running]
            if not running:
                raise ServerError("no etcd member is running")
            if not all(m.is_healthy() for m in running):
                return False
            leaders = {str(m.status().get("leader")) for m in running}
            return len(leaders) == 1 and "0" not in leaders and "None" not in leaders

        return wait_until(ready, timeout, what="etcd cluster serving", on_timeout=self._tails)

    def _tails(self) -> str:
        return "\n".join(
            f"member {i} running={m.running}\n{m.log_tail(15)}" for i, m in enumerate(self.members)
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every member, followers first: stopping all at once (or the leader first)
        makes etcd attempt leadership transfers to dying peers (~7 s / ~0.1 s per member).
        """
        leader = self.leader_index() if any(m.running for m in self.members) else None
        order = [i for i in range(len(self.members)) if i != leader] + (
            [leader] if leader is not None else []
        )
        for i in order:
            self.members[i].stop(timeout)

    def start_member(self, i: int, timeout: float = 30.0, wait: bool = True) -> float:
        """Start member ``i`` again (same ports/data; any old process is stopped first)."""
        m = self.members[i]
        m.stop()  # no-op unless running; guarantees the old PID is gone before relaunch
        t0 = time.monotonic()
        m.launch()
        if wait:
            m.wait_ready(timeout)
        return time.monotonic() - t0

    def leader_index(self) -> int | None:
        """Index of the member that is leader according to its own status (None if unknown)."""
        for i, m in enumerate(self.members):
            if not m.running:
                continue
            try:
                st = m.status(timeout=1.0)
            except (OSError, ServerError, ValueError):
                continue
            if str(st.get("leader")) == str(st["header"]["member_id"]):
                return i
        return None

    def __repr__(self) -> str:
        return f"<EtcdCluster {self.endpoints}>"
