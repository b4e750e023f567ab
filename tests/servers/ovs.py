"""A private Open vSwitch (ovsdb-server + ovs-vswitchd, userspace dummy datapath) for tests.

What: both daemons run in the foreground as our own children with OVS_RUNDIR / OVS_DBDIR /
OVS_LOGDIR / OVS_SYSCONFDIR pointing at one temp dir, and every ovs-* command gets that
environment (and the explicit db socket) passed in. Bridges use ``datapath_type=dummy``, so no
kernel module is needed. Why: real OpenFlow switches enforcing roles and generation_id, without
ever touching a system Open vSwitch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from ._process import (
    LOOPBACK,
    ManagedProcess,
    ServerError,
    clean_env,
    log_tail_of,
    make_temp_dir,
    pid_alive,
    remove_temp_dir,
    wait_pid_gone,
)

SCHEMA_CANDIDATES = (
    Path("/usr/share/openvswitch/vswitch.ovsschema"),
    Path("/usr/local/share/openvswitch/vswitch.ovsschema"),
)
OVS_TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
COMMAND_TIMEOUT = 20.0  # seconds, bound for every ovs-* command


class OvsCommandError(ServerError):
    """An ovs-* command failed (message has the command, exit status and stderr)."""


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")
    if path is None:
        raise ServerError(f"{name} not found (Debian package: openvswitch-switch)")
    return path


def _atom(value: Any) -> Any:
    """Decode one OVSDB JSON atom/set/map as printed by ``ovs-vsctl --format=json``."""
    if isinstance(value, list) and len(value) == 2 and value[0] in ("set", "map", "uuid"):
        kind, inner = value
        if kind == "uuid":
            return inner
        if kind == "map":
            return {k: _atom(v) for k, v in inner}
        items = [_atom(v) for v in inner]
        if not items:
            return None
        return items[0] if len(items) == 1 else items
    return value


class OvsInstance:
    """One private ovsdb-server + ovs-vswitchd pair rooted at ``tmpdir``.

    Call ``start()`` (or use as a context manager), then build bridges. ``stop()`` ends both
    daemons by the PIDs in their pidfiles and waits until they are gone.
    """

    def __init__(self, tmpdir: str | os.PathLike[str] | None = None) -> None:
        self._owns_dir = tmpdir is None
        self.dir = Path(tmpdir) if tmpdir is not None else make_temp_dir("ovs-")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.dir / "conf.db"
        self.db_sock = self.dir / "db.sock"
        self.ovsdb_pidfile = self.dir / "ovsdb-server.pid"
        self.vswitchd_pidfile = self.dir / "ovs-vswitchd.pid"
        self.ovsdb_log = self.dir / "ovsdb-server.log"
        self.vswitchd_log = self.dir / "ovs-vswitchd.log"
        self.env: dict[str, str] = clean_env(
            {
                "OVS_RUNDIR": str(self.dir),
                "OVS_DBDIR": str(self.dir),
                "OVS_LOGDIR": str(self.dir),
                "OVS_SYSCONFDIR": str(self.dir),
                "OVS_PKGDATADIR": "/usr/share/openvswitch",
            },
            drop_prefixes=("OVS_",),
        )
        self._ovsdb: ManagedProcess | None = None
        self._vswitchd: ManagedProcess | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def vswitchd_pid(self) -> int | None:
        """PID of ovs-vswitchd (None if not running)."""
        return self._vswitchd.pid if self._vswitchd and self._vswitchd.running else None

    @property
    def ovsdb_pid(self) -> int | None:
        """PID of ovsdb-server (None if not running)."""
        return self._ovsdb.pid if self._ovsdb and self._ovsdb.running else None

    @property
    def ctl_path(self) -> Path:
        """ovs-vswitchd's unixctl socket: ``$OVS_RUNDIR/ovs-vswitchd.<pid>.ctl``."""
        if self.vswitchd_pid is None:
            raise ServerError("ovs-vswitchd is not running")
        return self.dir / f"ovs-vswitchd.{self.vswitchd_pid}.ctl"

    @property
    def running(self) -> bool:
        """True while both daemons are alive."""
        return bool(
            self._ovsdb and self._ovsdb.running and self._vswitchd and self._vswitchd.running
        )

    def start(self, timeout: float = 20.0) -> float:
        """Create the database if needed, start both daemons, wait until they answer.

        Returns seconds taken.
        """
        t0 = time.monotonic()
        if not self.db_path.exists():
            schema = next((p for p in SCHEMA_CANDIDATES if p.exists()), None)
            if schema is None:
                raise ServerError(
                    "vswitch.ovsschema not found (Debian package: openvswitch-common)"
                )
            self._run([_tool("ovsdb-tool"), "create", str(self.db_path), str(schema)])
        self._ovsdb = ManagedProcess(
            "ovsdb-server",
            [
                _tool("ovsdb-server"),
                str(self.db_path),
                f"--remote=punix:{self.db_sock}",
                f"--pidfile={self.ovsdb_pidfile}",
                f"--log-file={self.ovsdb_log}",
                f"--unixctl={self.dir / 'ovsdb-server.ctl'}",
                "--no-chdir",
                "-vconsole:off",
            ],
            cwd=self.dir,
            log_path=self.dir / "ovsdb-server.stderr",
            env=self.env,
        )
        self._ovsdb.start()
        try:
            self._ovsdb.wait_ready(self._db_sock_ready, timeout, "listening on db.sock")
            self.vsctl("--no-wait", "init")
            self._vswitchd = ManagedProcess(
                "ovs-vswitchd",
                [
                    _tool("ovs-vswitchd"),
                    f"unix:{self.db_sock}",
                    "--enable-dummy",
                    "--disable-system",
                    f"--pidfile={self.vswitchd_pidfile}",
                    f"--log-file={self.vswitchd_log}",
                    "--no-chdir",
                    "-vconsole:off",
                ],
                cwd=self.dir,
                log_path=self.dir / "ovs-vswitchd.stderr",
                env=self.env,
            )
            self._vswitchd.start()
            self._vswitchd.wait_ready(
                self._vswitchd_ready, timeout, "answering on its control socket"
            )
            # A (non --no-wait) vsctl returns once vswitchd has applied the db: fully up.
            self.vsctl("set", "Open_vSwitch", ".", "external_ids:coordination-tests=ready")
        except BaseException:
            self.stop()
            raise
        return time.monotonic() - t0

    def _db_sock_ready(self) -> bool:
        if not self.db_sock.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(self.db_sock))
        return True

    def _vswitchd_ready(self) -> bool:
        if not self.ctl_path.exists():
            return False
        res = subprocess.run(
            [_tool("ovs-appctl"), "-t", str(self.ctl_path), "-T", "2", "version"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return res.returncode == 0

    def stop(self, timeout: float = 10.0) -> None:
        """Stop ovs-vswitchd, then ovsdb-server, by their pidfile PIDs; wait until both are gone."""
        for proc, pidfile in (
            (self._vswitchd, self.vswitchd_pidfile),
            (self._ovsdb, self.ovsdb_pidfile),
        ):
            if proc is None:
                continue
            file_pid = _read_pid(pidfile)
            proc.stop(timeout)
            # The pidfile PID is our child's PID (no --detach); if it ever differs, end it too.
            if file_pid is not None and file_pid != proc.pid and pid_alive(file_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(file_pid, signal.SIGTERM)
                if not wait_pid_gone(file_pid, timeout):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(file_pid, signal.SIGKILL)
                    wait_pid_gone(file_pid, timeout)

    def kill(self) -> None:
        """SIGKILL both daemons (crash)."""
        for proc in (self._vswitchd, self._ovsdb):
            if proc is not None:
                proc.kill()

    def close(self) -> None:
        """Stop, and remove the directory if this object created it."""
        self.stop()
        if self._owns_dir:
            remove_temp_dir(self.dir)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<OvsInstance {self.dir} vswitchd={self.vswitchd_pid} ovsdb={self.ovsdb_pid}>"

    def log_tail(self, lines: int = 30) -> str:
        """Tails of both daemons' logs."""
        return log_tail_of(self.vswitchd_log, lines) + "\n" + log_tail_of(self.ovsdb_log, lines)

    # -- commands ----------------------------------------------------------------------------
    def _run(self, argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
        try:
            res = subprocess.run(
                list(argv),
                env=self.env,
                cwd=self.dir,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise OvsCommandError(
                f"{' '.join(argv)} timed out after {timeout}s\n{self.log_tail(10)}"
            ) from exc
        if res.returncode != 0:
            raise OvsCommandError(
                f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}"
            )
        return res.stdout

    def vsctl(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """``ovs-vsctl --db=unix:<private sock> ARGS`` (bounded); returns stdout."""
        return self._run(
            [_tool("ovs-vsctl"), f"--db=unix:{self.db_sock}", f"--timeout={int(timeout)}", *args],
            timeout + 5,
        )

    def ofctl(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """``ovs-ofctl -O OpenFlow13 ARGS``; a bridge name reaches ``$OVS_RUNDIR/<br>.mgmt``."""
        return self._run(
            [_tool("ovs-ofctl"), "-O", "OpenFlow13", f"--timeout={int(timeout)}", *args],
            timeout + 5,
        )

    def appctl(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        """``ovs-appctl -t $OVS_RUNDIR/ovs-vswitchd.<pid>.ctl ARGS``."""
        return self._run(
            [_tool("ovs-appctl"), "-t", str(self.ctl_path), "-T", str(int(timeout)), *args],
            timeout + 5,
        )

    # -- topology ----------------------------------------------------------------------------
    @staticmethod
    def _bridge_args(
        idx: int,
        name: str,
        dpid: int,
        controller_ports: Sequence[int],
        protocols: str,
        max_backoff_ms: int | None,
        inactivity_probe_ms: int | None,
    ) -> list[str]:
        args = [
            "--",
            "add-br",
            name,
            "--",
            "set",
            "bridge",
            name,
            "datapath_type=dummy",
            f"protocols={protocols}",
            f"other-config:datapath-id={dpid:016x}",
            "other-config:disable-in-band=true",
            "fail-mode=secure",
        ]
        ids = []
        for j, port in enumerate(controller_ports):
            cid = f"@c{idx}_{j}"
            ids.append(cid)
            args += ["--", f"--id={cid}", "create", "controller", f'target="tcp:{LOOPBACK}:{port}"']
            if max_backoff_ms is not None:
                args.append(f"max_backoff={max_backoff_ms}")
            if inactivity_probe_ms is not None:
                args.append(f"inactivity_probe={inactivity_probe_ms}")
        if ids:
            args += ["--", "set", "bridge", name, f"controller=[{','.join(ids)}]"]
        return args

    def add_bridge(
        self,
        name: str,
        dpid: int,
        controller_ports: Sequence[int] = (),
        protocols: str = "OpenFlow13",
        *,
        max_backoff_ms: int | None = 1000,
        inactivity_probe_ms: int | None = None,
    ) -> None:
        """Add a dummy-datapath bridge (fail-mode secure, in-band off) with its controllers.

        ``max_backoff_ms`` (default 1 s, OVS's own default is 8 s) bounds how long the switch
        waits before re-dialling a controller that went away, which keeps restart tests short.
        """
        self.add_bridges(
            [(name, dpid, controller_ports, protocols)],
            max_backoff_ms=max_backoff_ms,
            inactivity_probe_ms=inactivity_probe_ms,
        )

    def add_bridges(
        self,
        specs: Iterable[
            tuple[str, int, Sequence[int]] | tuple[str, int, Sequence[int], str] | Mapping[str, Any]
        ],
        *,
        max_backoff_ms: int | None = 1000,
        inactivity_probe_ms: int | None = None,
    ) -> None:
        """Add many bridges in ONE ovs-vsctl transaction.

        Each spec is ``(name, dpid, controller_ports[, protocols])`` or a mapping with those
        keys (``name``, ``dpid``, ``controller_ports``, optional ``protocols``).
        """
        args: list[str] = []
        count = 0
        for idx, spec in enumerate(specs):
            count += 1
            if isinstance(spec, Mapping):
                name, dpid = spec["name"], spec["dpid"]
                ports, protocols = (
                    spec.get("controller_ports", ()),
                    spec.get("protocols", "OpenFlow13"),
                )
            else:
                name, dpid, ports = spec[0], spec[1], spec[2]
                protocols = spec[3] if len(spec) > 3 else "OpenFlow13"  # type: ignore[misc]
            args += self._bridge_args(
                idx, name, int(dpid), list(ports), protocols, max_backoff_ms, inactivity_probe_ms
            )
        if args:
            self.vsctl(*args, timeout=max(COMMAND_TIMEOUT, 0.1 * count))

    def add_host_port(
        self, bridge: str, name: str, ofport: int, *, tx_pcap: bool = False
    ) -> Path | None:
        """Add a ``type=dummy`` port (a "host") with a fixed OpenFlow port number.

        With ``tx_pcap=True`` whatever the bridge sends out of it is written to a pcap file,
        whose path is returned (read it with ``ovs-pcap``).
        """
        args = [
            "add-port",
            bridge,
            name,
            "--",
            "set",
            "interface",
            name,
            "type=dummy",
            f"ofport_request={ofport}",
        ]
        pcap = None
        if tx_pcap:
            pcap = self.dir / f"{name}.pcap"
            args.append(f"options:tx_pcap={pcap}")
        self.vsctl(*args)
        return pcap

    def add_patch_link(
        self,
        br_a: str,
        port_a_no: int,
        br_b: str,
        port_b_no: int,
        *,
        name_a: str | None = None,
        name_b: str | None = None,
    ) -> tuple[str, str]:
        """Join two bridges with a pair of patch ports; returns the two port names."""
        name_a = name_a or f"{br_a}-to-{br_b}"
        name_b = name_b or f"{br_b}-to-{br_a}"
        self.vsctl(
            "add-port",
            br_a,
            name_a,
            "--",
            "set",
            "interface",
            name_a,
            "type=patch",
            f"options:peer={name_b}",
            f"ofport_request={port_a_no}",
            "--",
            "add-port",
            br_b,
            name_b,
            "--",
            "set",
            "interface",
            name_b,
            "type=patch",
            f"options:peer={name_a}",
            f"ofport_request={port_b_no}",
        )
        return name_a, name_b

    def del_port(self, bridge: str, port: str) -> None:
        """Delete a port (cuts a patch link cleanly: port-status DELETE on the switch)."""
        self.vsctl("del-port", bridge, port)

    def del_bridge(self, bridge: str) -> None:
        """Delete a bridge (its controllers see the connection close)."""
        self.vsctl("del-br", bridge)

    def controllers(self, bridge: str) -> list[dict[str, Any]]:
        """The bridge's controllers as ``{"target", "role", "is_connected", "uuid"}`` dicts.

        ``role`` is ``master``/``slave``/``other`` or None; it (and ``is_connected``) lags the
        OpenFlow state by a few seconds: fine for "who is master now" once settled, not timing.
        """
        br = json.loads(
            self.vsctl("--format=json", "--columns=controller", "list", "bridge", bridge)
        )
        refs = _atom(br["data"][0][0]) if br["data"] else None
        uuids = set(refs if isinstance(refs, list) else [refs] if refs else [])
        table = json.loads(
            self.vsctl(
                "--format=json", "--columns=_uuid,target,role,is_connected", "list", "controller"
            )
        )
        heads = table["headings"]
        out = []
        for row in table["data"]:
            rec = {h: _atom(v) for h, v in zip(heads, row, strict=True)}
            if rec["_uuid"] in uuids:
                out.append(
                    {
                        "target": rec["target"],
                        "role": rec["role"],
                        "is_connected": bool(rec["is_connected"]),
                        "uuid": rec["_uuid"],
                    }
                )
        return sorted(out, key=lambda c: c["target"])

    def wait_controller(
        self, bridge: str, condition: str = "is_connected=true", timeout: float = 15.0
    ) -> None:
        """Block (``ovs-vsctl wait-until``, no polling) until every controller of ``bridge``
        satisfies ``condition`` (e.g. ``role=master``); raises OvsCommandError on timeout.
        """
        for ctl in self.controllers(bridge):
            self.vsctl("wait-until", "controller", ctl["uuid"], condition, timeout=timeout)

    def inject(self, iface: str, packet: str, length: int | None = None) -> None:
        """Make ``iface`` receive a packet (raw hex or datapath flow syntax) via netdev-dummy."""
        args = ["netdev-dummy/receive", iface, packet]
        if length is not None:
            args += ["--len", str(length)]
        self.appctl(*args)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
