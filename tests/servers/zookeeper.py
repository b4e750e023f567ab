"""Real ZooKeeper servers for tests: one standalone node or a 3-node quorum on loopback.

What: each server is one JVM (Debian's ``zookeeper`` package, run via QuorumPeerMain; no system
service), with its own temp data dir, free client/peer/election ports and tickTime=500 so client
sessions can be as short as 1 s. Why: the ZooKeeper backend must be tested against the real
server's session, watch and quorum behaviour, not a fake.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from ._process import (
    LOOPBACK,
    ManagedProcess,
    ServerError,
    ServerGroup,
    free_ports,
    make_temp_dir,
    remove_temp_dir,
    wait_until,
)

JAVA_DIR = Path("/usr/share/java")
#: zookeeper.jar's manifest Class-Path already lists its own dependencies (jute, netty,
#: slf4j-api, metrics, commons-cli, ...); only an slf4j binding must be added.
ZOOKEEPER_JAR = JAVA_DIR / "zookeeper.jar"
SLF4J_BINDING_JAR = JAVA_DIR / "slf4j-simple.jar"
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
DEFAULT_JVM_OPTS = ("-Xmx128m", "-XX:+UseSerialGC")


def zookeeper_classpath() -> str:
    """Classpath for the Debian ZooKeeper 3.8 jars (raises ServerError if missing)."""
    missing = [str(p) for p in (ZOOKEEPER_JAR, SLF4J_BINDING_JAR) if not p.exists()]
    if missing:
        raise ServerError(f"missing jars {missing} (Debian packages: zookeeper, libslf4j-java)")
    return f"{ZOOKEEPER_JAR}:{SLF4J_BINDING_JAR}"


def four_letter(host: str, port: int, cmd: str, timeout: float = 2.0) -> str:
    """Send a four-letter command (``ruok``, ``srvr``, ``mntr``...) and return the reply."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(cmd.encode("ascii"))
        sock.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


def server_mode(host: str, port: int, timeout: float = 1.0) -> str | None:
    """``leader`` / ``follower`` / ``standalone`` from ``srvr``; None if not serving/reachable."""
    try:
        reply = four_letter(host, port, "srvr", timeout)
    except OSError:
        return None
    for line in reply.splitlines():
        if line.startswith("Mode:"):
            return line.split(":", 1)[1].strip()
    return None


class ZooKeeperServer:
    """One ZooKeeper JVM. Standalone by default; an ensemble member when ``quorum`` is given.

    ``restart()`` keeps the client port and data dir. ``close()`` stops it and removes the temp
    dir if this object created it. Also a context manager (start / close).
    """

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        tick_time: int = 500,
        max_session_timeout: int = 60_000,
        myid: int | None = None,
        quorum: Mapping[int, tuple[int, int]] | None = None,
        extra_config: Mapping[str, str] | None = None,
        jvm_opts: tuple[str, ...] = DEFAULT_JVM_OPTS,
        name: str = "zookeeper",
    ) -> None:
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else make_temp_dir("zk-")
        self.host = LOOPBACK
        self._auto_port = port is None
        self.port: int = port if port is not None else free_ports(1)[0]
        self.tick_time = tick_time
        self.max_session_timeout = max_session_timeout
        self.myid = myid
        self.quorum = dict(quorum) if quorum else None
        self.extra_config = dict(extra_config or {})
        self.jvm_opts = jvm_opts
        self.name = name
        self.data_dir = self.base_dir / "data"
        self.config_path = self.base_dir / "zoo.cfg"
        self.log_path = self.base_dir / "server.log"
        self._proc: ManagedProcess | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def hosts(self) -> str:
        """Connection string for clients, e.g. ``127.0.0.1:2181``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the JVM (None before the first start)."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        """True while the JVM process is alive."""
        return self._proc is not None and self._proc.running

    # -- config ------------------------------------------------------------------------------
    def write_config(self) -> None:
        """(Re)write zoo.cfg and myid for the current ports."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cfg = {
            "tickTime": str(self.tick_time),
            "initLimit": "10",
            "syncLimit": "5",
            "dataDir": str(self.data_dir),
            "clientPort": str(self.port),
            "clientPortAddress": self.host,
            "maxSessionTimeout": str(self.max_session_timeout),
            "admin.enableServer": "false",
            "4lw.commands.whitelist": "*",
            # Tests do not need durability against power loss; fsync per txn only slows them.
            "forceSync": "no",
            "autopurge.purgeInterval": "0",
        }
        if self.quorum:
            for sid, (peer, election) in sorted(self.quorum.items()):
                cfg[f"server.{sid}"] = f"{self.host}:{peer}:{election}"
        cfg.update(self.extra_config)
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in cfg.items()))
        if self.myid is not None:
            (self.data_dir / "myid").write_text(f"{self.myid}\n")

    # -- lifecycle ---------------------------------------------------------------------------
    def launch(self) -> None:
        """Start the JVM without waiting for readiness (no-op if already running)."""
        if self.running:
            return
        if not self.config_path.exists():
            self.write_config()
        java = shutil.which("java")
        if java is None:
            raise ServerError("java not found (Debian package: default-jre-headless)")
        argv = [
            java,
            *self.jvm_opts,
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
            "-cp",
            zookeeper_classpath(),
            MAIN_CLASS,
            str(self.config_path),
        ]
        self._proc = ManagedProcess(self.name, argv, cwd=self.base_dir, log_path=self.log_path)
        self._proc.start()

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until it serves (``ruok`` -> ``imok`` and ``srvr`` shows a Mode).

        Returns seconds from launch to ready. On the first start with an auto-picked port a
        lost port race ("Address already in use") is retried on fresh ports.
        """
        for attempt in range(3):
            t0 = time.monotonic()
            self.launch()
            try:
                self.wait_ready(timeout)
                return time.monotonic() - t0
            except ServerError:
                if attempt < 2 and self._auto_port and self._lost_port_race():
                    self.kill()
                    self.port = free_ports(1)[0]
                    self.write_config()
                    continue
                self.kill()
                raise
        raise AssertionError("unreachable")

    def _lost_port_race(self) -> bool:
        return self._proc is not None and "Address already in use" in self._proc.log_tail(200)

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Wait until this server answers (imok for standalone, a Mode line for a member)."""
        if self._proc is None:
            raise ServerError(f"{self.name} was never started")
        if self.quorum:
            return self._proc.wait_ready(self.is_serving, timeout, "serving (srvr Mode:)")
        # ruok says imok as soon as the client port listens, which can be before the database
        # is loaded ("not currently serving requests"): also require a Mode line from srvr.
        return self._proc.wait_ready(
            lambda: self.is_ok() and self.is_serving(), timeout, "answering ruok and serving"
        )

    def is_ok(self) -> bool:
        """``ruok`` -> ``imok`` (the process is up; for a member not necessarily in quorum)."""
        try:
            return four_letter(self.host, self.port, "ruok", 1.0).strip() == "imok"
        except OSError:
            return False

    def mode(self) -> str | None:
        """``leader``/``follower``/``standalone``, or None when not serving."""
        return server_mode(self.host, self.port)

    def is_serving(self) -> bool:
        """True when ``srvr`` reports a Mode (i.e. the server serves client requests)."""
        return self.mode() is not None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (SIGKILL after ``timeout`` s) and wait for the JVM to exit."""
        return self._proc.stop(timeout) if self._proc else None

    def kill(self) -> int | None:
        """SIGKILL the JVM (crash) and wait for it to exit."""
        return self._proc.kill() if self._proc else None

    def restart(self, timeout: float = 30.0) -> float:
        """Stop and start again on the same port and data dir; returns seconds to ready."""
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
        """Last lines of the server log."""
        return self._proc.log_tail(lines) if self._proc else "<never started>"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ZooKeeperServer {self.hosts} pid={self.pid} running={self.running}>"


class ZooKeeperEnsemble(ServerGroup):
    """A ``size``-node (default 3) ZooKeeper quorum on loopback, one JVM per member.

    ``members[i]`` is a :class:`ZooKeeperServer` (myid ``i + 1``). Members can be stopped,
    killed and started again individually with the same ports and data.
    """

    restart_timeout = 60.0

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        size: int = 3,
        tick_time: int = 500,
        max_session_timeout: int = 60_000,
        jvm_opts: tuple[str, ...] = DEFAULT_JVM_OPTS,
    ) -> None:
        self._owns_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else make_temp_dir("zk-ens-")
        self.size = size
        self.members: list[ZooKeeperServer] = [
            ZooKeeperServer(
                self.base_dir / f"zk{i + 1}",
                port=0,  # real ports assigned by _assign_ports
                tick_time=tick_time,
                max_session_timeout=max_session_timeout,
                myid=i + 1,
                quorum={1: (0, 0)},
                jvm_opts=jvm_opts,
                name=f"zookeeper-{i + 1}",
            )
            for i in range(size)
        ]
        self._assign_ports()

    def _assign_ports(self) -> None:
        ports = free_ports(3 * self.size)
        quorum = {
            i + 1: (ports[self.size + 2 * i], ports[self.size + 2 * i + 1])
            for i in range(self.size)
        }
        for i, member in enumerate(self.members):
            member.port = ports[i]
            member.quorum = quorum
            member.write_config()

    # -- addresses ---------------------------------------------------------------------------
    @property
    def hosts(self) -> str:
        """Comma-joined client connection string of every member."""
        return ",".join(m.hosts for m in self.members)

    @property
    def ports(self) -> list[int]:
        """Client ports, in member order."""
        return [m.port for m in self.members]

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> float:
        """Start every member and wait until all serve with one leader; returns seconds taken.

        If a member lost a port race on the first start, all ports are re-picked once.
        """
        for attempt in range(2):
            t0 = time.monotonic()
            for member in self.members:
                member.launch()
            try:
                self.wait_serving(timeout)
                return time.monotonic() - t0
            except ServerError:
                lost = any(m._lost_port_race() for m in self.members)
                self.kill()
                if attempt == 0 and lost:
                    self._assign_ports()
                    continue
                raise
        raise AssertionError("unreachable")

    def wait_serving(self, timeout: float = 30.0) -> float:
        """Wait until every running member serves (srvr Mode:) and exactly one is leader."""

        def ready() -> bool:
            running = [m for m in self.members if m.running]
            if not running:
                raise ServerError("no ensemble member is running")
            modes = [m.mode() for m in running]
            return all(modes) and modes.count("leader") == 1

        return wait_until(
            ready, timeout, interval=0.05, what="ZooKeeper ensemble serving", on_timeout=self._tails
        )

    def _tails(self) -> str:
        parts = []
        for i, m in enumerate(self.members):
            parts.append(f"member {i} running={m.running} mode={m.mode() if m.running else None}")
            parts.append(m.log_tail(15))
        return "\n".join(parts)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every member (SIGTERM to all at once, SIGKILL after ``timeout``)."""
        for member in self.members:
            if member._proc is not None:
                member._proc.request_stop()
        for member in self.members:
            member.stop(timeout)

    def start_member(self, i: int, timeout: float = 30.0, wait: bool = True) -> float:
        """Start member ``i`` again (same ports/data); by default wait until it serves."""
        t0 = time.monotonic()
        self.members[i].launch()
        if wait:
            self.members[i].wait_ready(timeout)
        return time.monotonic() - t0

    def leader_index(self) -> int | None:
        """Index of the member whose ``srvr`` says ``Mode: leader`` (None if none right now)."""
        for i, member in enumerate(self.members):
            if member.running and member.mode() == "leader":
                return i
        return None

    def __repr__(self) -> str:
        return f"<ZooKeeperEnsemble {self.hosts}>"
