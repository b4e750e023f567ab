"""Real `coord-manager` controller processes for the mastership integration tests.

What: `Controller` runs one `coord-manager` subprocess (its own OpenFlow listen port, ryu.conf,
log file), owned by the test and stopped or killed by PID; a reader thread copies its output to
the log file and parses the app's `KIND key=value ...` lines, so tests *wait on events* (a
condition variable notified per line) instead of sleeping or polling files.
Why: mastership is a property of several real processes, one real switch and one real store;
the controllers' own timestamped lines are the only precise clock for failover.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from tests.requirements import missing
from tests.servers._process import LOOPBACK, pid_alive

FRAMEWORKS = ("os-ken", "ryu")
_PACKAGES = {"os-ken": "os_ken", "ryu": "ryu"}
#: util-linux `setpriv`: kill the controller if the thread that started it dies (pytest killed).
_SETPRIV = shutil.which("setpriv")
_FIELD = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")
_LINE = re.compile(r"^([A-Z_]{4,}) (\w+=.*)$")
#: One condition for every controller's log: notified on each new line, so a test can wait for
#: a state that spans several controllers.
LOG_EVENTS = threading.Condition()


def require_framework(framework: str) -> None:
    """Skip (fail under CI=true) if `framework` is not importable here."""
    if importlib.util.find_spec(_PACKAGES[framework]) is None:
        missing(f"{framework} is not installed in this venv (see docs/ryu.md)")


def coord_manager_argv() -> list[str]:
    """The installed `coord-manager` console script next to this interpreter, else `-m`."""
    script = Path(sys.executable).with_name("coord-manager")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "ryu_integration.manager"]


@dataclass(frozen=True)
class Record:
    """One parsed log line of the apps: `MASTERSHIP dpid=... role=... t=...`."""

    kind: str
    fields: dict[str, str]
    seq: int

    def __getitem__(self, key: str) -> str:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    @property
    def t(self) -> float:
        return float(self.fields["t"])

    @property
    def dpid(self) -> int:
        return int(self.fields["dpid"], 16)

    def matches(self, kind: str, **want: Any) -> bool:
        if self.kind != kind:
            return False
        for key, value in want.items():
            have = self.fields.get(key)
            if key == "dpid" and isinstance(value, int):
                if have is None or int(have, 16) != value:
                    return False
            elif callable(value):
                if have is None or not value(have):
                    return False
            elif have != str(value).lower() if isinstance(value, bool) else have != str(value):
                return False
        return True


def parse_line(line: str, seq: int) -> Record | None:
    match = _LINE.match(line.strip())
    if not match:
        return None
    fields = {k: v.strip("'\"") for k, v in _FIELD.findall(match.group(2))}
    return Record(match.group(1), fields, seq)


def write_conf(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write an ini file (ryu.conf) from {section: {option: value}}."""
    lines: list[str] = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        for key, value in options.items():
            if isinstance(value, bool):
                value = str(value).lower()
            lines.append(f"{key} = {value}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class Controller:
    """One `coord-manager` process; restartable with the same port, member id and config."""

    def __init__(
        self,
        name: str,
        framework: str,
        port: int,
        workdir: Path,
        conf: Mapping[str, Mapping[str, Any]],
        apps: Iterable[str] = ("ryu_integration.mastership",),
    ) -> None:
        self.name = name
        self.framework = framework
        self.port = port
        self.workdir = workdir
        self.member_id = f"{name}:{port}"
        sections = {k: dict(v) for k, v in conf.items()}
        sections.setdefault("coordination", {})["member_id"] = self.member_id
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf_path = write_conf(workdir / f"{name}.conf", sections)
        self.log_path = workdir / f"{name}.log"
        self.apps = list(apps)
        self.records: list[Record] = []
        #: every output line, parsed or not (e.g. the failure detector's log lines)
        self.lines: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.starts = 0

    @property
    def target(self) -> str:
        """How OVS names this controller: `tcp:127.0.0.1:<port>`."""
        return f"tcp:{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self) -> list[str]:
        return [*coord_manager_argv(), "--framework", self.framework,
                "--config-file", str(self.conf_path),
                "--ofp-listen-host", LOOPBACK, "--ofp-tcp-listen-port", str(self.port),
                *self.apps]

    def start(self) -> None:
        """Launch (in its own session, killed if pytest dies); returns at once."""
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        argv = self.argv()
        if _SETPRIV and threading.current_thread() is threading.main_thread():
            argv = [_SETPRIV, "--pdeathsig", "KILL", "--", *argv]  # execs: same PID
        self._proc = subprocess.Popen(
            argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self._proc,),
                                        name=f"log-{self.name}", daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with open(self.log_path, "ab") as log:
            log.write(f"==== start #{self.starts}: {' '.join(self.argv())}\n".encode())
            for raw in proc.stdout:
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", "replace")
                with LOG_EVENTS:
                    self.lines.append(line.rstrip("\n"))
                    record = parse_line(line, len(self.records))
                    if record is not None:
                        self.records.append(record)
                    LOG_EVENTS.notify_all()
        with LOG_EVENTS:
            LOG_EVENTS.notify_all()

    def wait_ready(self, timeout: float = 20.0) -> Record:
        """Until the mastership app has connected to the backend and listens for switches."""
        return self.wait_for(lambda r: r.kind == "READY", timeout, what="mastership app ready")

    def wait_for(self, predicate: Callable[[Record], bool], timeout: float, *,
                 since: int = 0, what: str = "log record") -> Record:
        """The first record (at index >= `since`) satisfying `predicate`; waits for it."""
        deadline = time.monotonic() + timeout
        with LOG_EVENTS:
            while True:
                for record in self.records[since:]:
                    if predicate(record):
                        return record
                if not self.running and self._reader is not None and not self._reader.is_alive():
                    raise AssertionError(f"{self.name} exited ({self.returncode}) while waiting "
                                         f"for {what}\n{self.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: no {what} within {timeout} s\n"
                                         f"{self.log_tail()}")
                LOG_EVENTS.wait(left)

    def find(self, kind: str, since: int = 0, **want: Any) -> list[Record]:
        with LOG_EVENTS:
            return [r for r in self.records[since:] if r.matches(kind, **want)]

    def mark(self) -> int:
        """Index to pass as `since` to only look at what comes next."""
        with LOG_EVENTS:
            return len(self.records)

    def role_of(self, dpid: int) -> Record | None:
        """The latest MASTERSHIP record for `dpid` (this process run's view)."""
        found = self.find("MASTERSHIP", dpid=dpid)
        return found[-1] if found else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def kill(self) -> float:
        """SIGKILL by PID (a crash); returns the wall-clock time the signal was sent."""
        return self._signal(signal.SIGKILL)

    def terminate(self, timeout: float = 10.0) -> float:
        """SIGTERM by PID and wait for the exit; returns when the signal was sent."""
        sent = self._signal(signal.SIGTERM, timeout)
        return sent

    def _signal(self, sig: signal.Signals, timeout: float = 10.0) -> float:
        proc = self._proc
        assert proc is not None and proc.poll() is None, f"{self.name} is not running"
        sent = time.time()
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"{self.name} ignored {sig.name} for {timeout} s\n"
                                 f"{self.log_tail()}") from None
        if self._reader is not None:
            self._reader.join(5)
        return sent

    def close(self) -> None:
        """Teardown: kill by PID if still running."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc is not None and pid_alive(proc.pid):
            os.kill(proc.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError as exc:
            return f"<no log: {exc}>"
        return f"---- last {lines} lines of {self.log_path} ----\n" + "\n".join(text)

    def __repr__(self) -> str:
        return f"<Controller {self.name} {self.framework} port={self.port} pid={self.pid}>"


def master_of(controllers: Iterable[Controller], dpid: int) -> Controller | None:
    """The one running controller whose latest record says it may program `dpid`."""
    masters = [c for c in controllers if c.running and (r := c.role_of(dpid)) is not None
               and r["may_program"] == "true"]
    assert len(masters) <= 1, f"several masters of {dpid:016x}: {masters}"
    return masters[0] if masters else None


def wait_until(check: Callable[[], Any], timeout: float, what: str,
               controllers: Iterable[Controller] = ()) -> Any:
    """Wait (on log events, no polling) until `check()` returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    with LOG_EVENTS:
        while True:
            result = check()
            if result:
                return result
            left = deadline - time.monotonic()
            if left <= 0:
                tails = "\n".join(c.log_tail(20) for c in controllers)
                raise AssertionError(f"not within {timeout} s: {what}\n{tails}")
            LOG_EVENTS.wait(left)


def settled(controllers: Iterable[Controller], dpid: int) -> Controller | None:
    """The master of `dpid` if exactly one running controller may program it and every other
    running one holds a confirmed SLAVE role; else None."""
    running = [c for c in controllers if c.running]
    views = {c.name: c.role_of(dpid) for c in running}
    masters = [c for c in running if (v := views[c.name]) and v["may_program"] == "true"]
    slaves = [c for c in running if (v := views[c.name]) and v["role"] == "slave"]
    if len(masters) == 1 and len(slaves) == len(running) - 1:
        return masters[0]
    return None


def wait_settled(controllers: list[Controller], dpids: Iterable[int],
                 timeout: float) -> dict[int, Controller]:
    """Wait until every switch has one master and only confirmed slaves besides;
    return {dpid: master}."""
    dpids = list(dpids)

    def check() -> dict[int, Controller] | None:
        found = {dpid: settled(controllers, dpid) for dpid in dpids}
        return found if all(found.values()) else None  # type: ignore[return-value]

    return wait_until(check, timeout, f"one master and slaves for {len(dpids)} switches",
                      controllers)


def print_measurements(config: Any, title: str, measured: list[tuple[str, float]]) -> None:
    """Write a module's measured times (from the controllers' logs) to the terminal, past
    pytest's output capture, so every run shows its figures."""
    plugins = config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if not measured or reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_sep("-", title)
        for what, seconds in measured:
            reporter.write_line(f"{what:<72} {seconds * 1000:8.1f} ms")


class RoleProbe:
    """A minimal OpenFlow 1.3 controller on a loopback port that only claims roles.

    What: accepts a switch's connection, exchanges HELLOs, answers echo requests, and sends
    OFPT_ROLE_REQUEST with any generation_id, returning the switch's answer. Why: to put a real
    switch into states a coordination store cannot produce on demand (a generation_id far above
    the store's terms, as after a move from another store), without a second framework.
    """

    VERSION = 4  # OpenFlow 1.3
    ROLES: ClassVar[dict[str, int]] = {"equal": 1, "master": 2, "slave": 3}
    _HEADER = "!BBHI"

    def __init__(self, timeout: float = 20.0) -> None:
        import socket

        self.timeout = timeout
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(timeout)
        self.port: int = self._listener.getsockname()[1]
        self._conn: Any = None
        self._xid = 0x5000

    @property
    def target(self) -> str:
        return f"tcp:{LOOPBACK}:{self.port}"

    def accept(self) -> None:
        """Wait (bounded) for the switch to connect and exchange HELLOs."""
        import struct

        self._conn, _ = self._listener.accept()
        self._conn.settimeout(self.timeout)
        self._conn.sendall(struct.pack(self._HEADER, self.VERSION, 0, 8, 1))

    def _recv_exact(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self._conn.recv(size - len(data))
            if not chunk:
                raise AssertionError("the switch closed the probe's connection")
            data += chunk
        return data

    def _recv(self) -> tuple[int, int, bytes]:
        import struct

        _version, kind, length, xid = struct.unpack(self._HEADER, self._recv_exact(8))
        return kind, xid, self._recv_exact(length - 8)

    def claim(self, role: str, generation_id: int) -> tuple[str, int]:
        """Send ROLE_REQUEST; returns ("reply", generation_id) or ("error", code) (type 11:
        ROLE_REQUEST_FAILED; code 0 is STALE)."""
        import struct

        self._xid += 1
        body = struct.pack("!I4xQ", self.ROLES[role], generation_id)
        self._conn.sendall(struct.pack(self._HEADER, self.VERSION, 24, 8 + len(body), self._xid)
                           + body)
        while True:
            kind, xid, body = self._recv()
            if kind == 2:  # ECHO_REQUEST
                self._conn.sendall(struct.pack(self._HEADER, self.VERSION, 3, 8 + len(body), xid)
                                   + body)
            elif kind == 25 and xid == self._xid:  # ROLE_REPLY
                _role, gen = struct.unpack_from("!I4xQ", body)
                return "reply", gen
            elif kind == 1 and xid == self._xid:  # ERROR
                err_type, code = struct.unpack_from("!HH", body)
                assert err_type == 11, f"unexpected error type {err_type}, code {code}"
                return "error", code

    def close(self) -> None:
        for sock in (self._conn, self._listener):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
