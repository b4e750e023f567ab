"""The failure detector, wired to a coordinator.

`DetectorLink` advertises the detector's endpoint in the member record, feeds it the store's
member list (pushed by the driver's member watch where it has one, and after every new
session), and turns its evictions into the driver's `_driver_evict_member`. Store calls run on
a thread of their own, never on the detector's loop nor on a client library's thread.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

from .detector import FailureDetector
from .detector_policy import DetectorSettings
from .detector_wire import parse_bind_address
from .dispatch import SerialExecutor
from .errors import ConfigurationError, CoordinationError
from .options import COMMON_OPTIONS
from .types import SessionState

if TYPE_CHECKING:
    from collections.abc import Callable

    from .api import Coordinator

LOG = logging.getLogger(__name__)


def detector_settings(options: dict[str, Any]) -> DetectorSettings:
    """The detector's thresholds from coordinator options. The detection bound (interval x
    misses) is kept within half the session timeout: a detector slower than the session
    would be of no use."""
    def option(name: str) -> Any:  # the declared default where a caller passed none
        value = options.get(name)
        return COMMON_OPTIONS[name].default if value is None else value

    interval = float(option("heartbeat_interval"))
    misses = int(option("heartbeat_misses"))
    session = float(option("session_timeout"))
    if interval * misses > session / 2:
        interval = session / 2 / misses
        LOG.info("heartbeat_interval lowered to %.3f s: %d misses must fit in half the %g s "
                 "session timeout", interval, misses, session)
    host, port = parse_bind_address(option("liveness_address"))
    return DetectorSettings(interval=interval, misses=misses, host=host, port=port,
                            damping_window=float(option("damping_window")),
                            damping_backoff=float(option("damping_backoff")),
                            ceiling=session)


class DetectorLink:
    """One coordinator's detector and the glue around it (see the module docstring)."""

    def __init__(self, coordinator: Coordinator, settings: DetectorSettings) -> None:
        self.co = coordinator
        self.worker = SerialExecutor(f"coord-detector-work[{coordinator.member_id}]")
        self.detector = FailureDetector(coordinator.member_id, settings, self._evict,
                                        run=self.worker.submit)
        self._refresh_queued = False
        self._lock = threading.Lock()
        self._unwatch: Callable[[], None] | None = None

    @classmethod
    def create(cls, coordinator: Coordinator) -> DetectorLink | None:
        """A link if the detector is on and the driver can evict a member, else None."""
        if not coordinator.options.get("detector", True) or not coordinator.EVICTS:
            return None
        return cls(coordinator, detector_settings(coordinator.options))

    def listen(self) -> None:
        """Bind the endpoint and put it in the member record (before it is registered)."""
        try:
            self.detector.start()
        except OSError as exc:
            self.worker.stop(0)
            settings = self.detector.settings
            raise ConfigurationError(
                f"option liveness_address={settings.host}:{settings.port}: cannot listen "
                f"there ({exc.strerror or exc})") from None
        self.co.info.metadata.update(self.detector.advertised())

    def attach(self) -> None:
        """Start following the member list (once the session is up)."""
        self._unwatch = self.co._driver_watch_members(self.refresh)
        self.co.add_session_listener(self._on_session)
        self.refresh()

    def refresh(self) -> None:
        """Re-read the member list soon (any thread; repeated requests coalesce)."""
        with self._lock:
            if self._refresh_queued:
                return
            self._refresh_queued = True
        self.worker.submit(self._refresh)

    def _refresh(self) -> None:
        with self._lock:
            self._refresh_queued = False
        if self.co.closed:
            return
        try:
            members = self.co._driver_members()
        except CoordinationError as exc:
            LOG.info("member %s: detector could not read the member list (%s); next session "
                     "or member change tries again", self.co.member_id, exc)
            return
        self.detector.update_members(members)

    def _on_session(self, state: SessionState) -> None:
        if state is SessionState.CONNECTED:
            self.refresh()

    def _evict(self, member_id: str, incarnation: str) -> None:
        if self.co.closed:
            return
        try:
            self.co._driver_evict_member(member_id, incarnation)
        except CoordinationError as exc:
            LOG.warning("member %s: evicting %s failed (%s); its session timeout decides",
                        self.co.member_id, member_id, exc)

    def stop(self) -> None:
        """Say goodbye to the peers and stop (idempotent)."""
        self.detector.stop()
        if self._unwatch is not None:
            try:
                self._unwatch()
            except CoordinationError:
                LOG.debug("cancelling the member watch failed", exc_info=True)
        try:
            self.co.remove_session_listener(self._on_session)
        except ValueError:
            pass
        self.worker.stop(1.0)
