"""The moving parts of topology sync, without Ryu: threads, store I/O, the watch, the dump file.

`TopologyRuntime` wires the pure pieces (`TopologyView`, `Publisher`, `Janitor`) to a
`coordination.Coordinator`. The Ryu app (`app.TopologySync`) only feeds it observations and turns
the view changes it reports into Ryu events, so everything here can be exercised with the
`memory://` backend and no framework.

Threads (plain `threading`; under Ryu, coord-manager monkey-patches them into green threads):
- the coordinator's callback thread runs the watch callback: it applies each store event to the
  main view (what `topology()` returns, always the freshest) and queues it for the notifier; it
  never blocks (it also carries the mastership app's election callbacks);
- the *writer* owns the publisher and the janitor and does every store write, in batches: the
  first observation after a quiet spell is written at once; what arrives within `batch_delay`
  of a flush (or while one is being written) is collected, then one `plan()` turns it into the
  writes that are still needed (a link that went down and up in between costs nothing), and
  `TopologyStore.apply` makes them in two round trips;
- the *notifier* applies the queued store events to a second view, the one applications have
  been told about, and hands the visible changes to `on_changes` (the Ryu app sends events
  there), then rewrites the dump file. If it falls more than `max_backlog` events behind, the
  queue is replaced by one snapshot of the main view (flagged resync, and logged), so it catches
  up in one step and applications get the difference, not the history.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import coordination
from coordination.records import Host, Link, Mastership, Port, Switch
from coordination.topology import (
    Change,
    DeleteRecord,
    PutRecord,
    Snapshot,
    TopologyEvent,
    TopologyWatch,
)

from .janitor import BY_MASTERSHIP, Janitor
from .publisher import Delete, Forget, LocalHost, LocalSwitch, Op, Publisher, Put
from .view import LinkId, Topology, TopologyView, ViewChange, describe

LOG = logging.getLogger("ryu_integration.topology")
#: The election whose leader runs the janitor.
JANITOR_ELECTION = "topology-janitor"
#: Environment variable naming the view dump file (overrides the config option).
DUMP_ENV = "COORD_TOPOLOGY_DUMP"


@dataclass(frozen=True)
class TopologySettings:
    """Knobs of topology sync (the `[coordination] topology_*` options; seconds)."""

    batch_delay: float = 0.005
    reconcile_window: float = 10.0
    grace_period: float = 30.0
    janitor: bool = True
    janitor_ownership: str = BY_MASTERSHIP
    resync_interval: float = 0.0  # off: every input and store change marks what it touches
    retry_delay: float = 1.0
    max_backlog: int = 10_000
    dump_file: str | None = None

    def __post_init__(self) -> None:
        for name in ("batch_delay", "reconcile_window", "grace_period", "retry_delay",
                     "resync_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if self.max_backlog < 1:
            raise ValueError("max_backlog must be >= 1")


ChangesCallback = Callable[[list[ViewChange], bool], None]
CoordinatorProvider = Callable[[], "coordination.Coordinator | None"]


def dpids_of(event: Change) -> set[int]:
    """The switches whose records a store change touches."""
    out: set[int] = set()
    for record in (event.record, event.previous):
        if isinstance(record, Switch | Mastership | Host):
            out.add(record.dpid)
        elif isinstance(record, Link):
            out.update((record.src_dpid, record.dst_dpid))
    return out


class TopologyRuntime:
    """Publishes this controller's observations and replays the store as view changes."""

    def __init__(
        self,
        member_id: str,
        settings: TopologySettings | None = None,
        *,
        on_changes: ChangesCallback | None = None,
        on_forget: Callable[[Forget], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        progress: threading.Condition | None = None,
    ) -> None:
        self.member_id = member_id
        self.settings = settings or TopologySettings()
        self.view = TopologyView()
        self.publisher = Publisher(member_id, self.settings.reconcile_window)
        self.janitor = Janitor(self.settings.grace_period, self.settings.janitor_ownership)
        self._on_changes = on_changes
        self._on_forget = on_forget
        self._clock = clock
        self._coord: coordination.Coordinator | None = None
        self._watch: TopologyWatch | None = None
        self._inputs: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...]]] = queue.Queue()
        self._inbox: deque[TopologyEvent] = deque()
        self._inbox_lock = threading.Lock()
        self._wake_notifier = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._janitor_leader = False
        self._emitted = TopologyView()  # what applications have been told
        self._attached = threading.Event()
        self._synced = threading.Event()
        #: Notified after every step the runtime takes (an input batch handled, a store event
        #: applied, changes delivered); `wait_until` sleeps on it. Runtimes may share one.
        self.progress = progress or threading.Condition()
        #: Called with the seconds from the first observation of a batch to its store writes
        #: done (e.g. a metrics histogram); on the writer thread, must be quick.
        self.publish_observer: Callable[[float], None] | None = None
        #: Counters, for tests and logs.
        self.stats = {"puts": 0, "unchanged": 0, "deletes": 0, "refused": 0, "errors": 0,
                      "flushes": 0, "resyncs": 0, "overflows": 0, "events": 0}

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self, coordinator: coordination.Coordinator | CoordinatorProvider) -> None:
        """Start the threads. `coordinator` may be a callable that returns None until the
        coordinator exists (the mastership app creates it in its own `start()`)."""
        if isinstance(coordinator, coordination.Coordinator):
            coord = coordinator

            def provider() -> coordination.Coordinator | None:
                return coord
        else:
            provider = coordinator
        for name, target in (("writer", self._writer_loop), ("notifier", self._notifier_loop)):
            thread = threading.Thread(target=target, args=(provider,) if name == "writer" else (),
                                      name=f"topology-{name}[{self.member_id}]", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Flush what is queued (bounded by `timeout`), cancel the watch, leave the janitor
        election. Idempotent."""
        if self._stopping.is_set():
            return
        self._inputs.put((self._flush_now, ()))
        self._stopping.set()
        self._wake_notifier.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        if self._watch is not None:
            self._watch.cancel()
        coord = self._coord
        if coord is not None and not coord.closed:
            with contextlib.suppress(coordination.CoordinationError):
                coord.election(JANITOR_ELECTION).resign()

    def wait_synced(self, timeout: float) -> bool:
        """Block until the first store snapshot reached applications (tests, tools)."""
        return self._synced.wait(timeout)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until `predicate()` holds, re-checking after each step a runtime sharing
        `progress` takes (tests, tools); False on timeout."""
        with self.progress:
            return self.progress.wait_for(predicate, timeout)

    def flush(self, timeout: float) -> bool:
        """Publish what the inputs given so far call for, now, without waiting for the batch
        delay; True once done (the writes were made or found unnecessary)."""
        done = threading.Event()
        self._call(self._flush_now)
        self._call(done.set)
        return done.wait(timeout)

    def _observe_publish(self, lag: float) -> None:
        observer = self.publish_observer
        if observer is not None:
            try:
                observer(lag)
            except Exception:
                LOG.exception("topology: the publish observer failed")

    def _progressed(self) -> None:
        with self.progress:
            self.progress.notify_all()

    # ---- inputs (any thread) -------------------------------------------------------------------

    def _call(self, func: Callable[..., Any], *args: Any) -> None:
        if not self._stopping.is_set():
            self._inputs.put((func, args))

    def set_master(self, dpid: int, term: int | None) -> None:
        """We may program `dpid` under `term` now (None: we may not)."""
        self._call(self._set_master, dpid, term)

    def switch_up(self, dpid: int, address: str, ports: list[Port]) -> None:
        self._call(self.publisher.switch_up, dpid, address, ports)

    def switch_down(self, dpid: int) -> None:
        self._call(self.publisher.switch_down, dpid)

    def port_up(self, dpid: int, port: Port) -> None:
        self._call(self.publisher.port_up, dpid, port)

    def port_deleted(self, dpid: int, port_no: int) -> None:
        self._call(self.publisher.port_deleted, dpid, port_no)

    def link_added(self, lid: LinkId) -> None:
        self._call(self.publisher.link_added, lid)

    def link_deleted(self, lid: LinkId) -> None:
        self._call(self.publisher.link_deleted, lid)

    def host_seen(self, mac: str, dpid: int, port_no: int, ips: list[str]) -> None:
        self._call(self.publisher.host_seen, mac, dpid, port_no, ips)

    def replace_local(self, switches: dict[int, LocalSwitch], links: set[LinkId],
                      hosts: list[LocalHost]) -> None:
        self._call(self.publisher.replace_local, switches, links, hosts)

    # ---- outputs -------------------------------------------------------------------------------

    def topology(self) -> Topology:
        """The global view now (every controller's, master or standby)."""
        return self.view.topology()

    def emitted_port(self, dpid: int, port_no: int) -> Port | None:
        """A port as applications have been told about it (for building their events)."""
        switch = self._emitted.switch(dpid)
        if switch is None:
            return None
        return next((p for p in switch.ports if p.port_no == port_no), None)

    @property
    def janitor_leader(self) -> bool:
        return self._janitor_leader

    # ---- the watch (coordinator callback thread) -----------------------------------------------

    def _on_store_event(self, event: TopologyEvent) -> None:
        self.view.apply(event)
        if isinstance(event, Snapshot):
            if event.resync:
                self.stats["resyncs"] += 1
                LOG.warning("topology: member %s resynchronised from a store snapshot "
                            "(%d records)", self.member_id, len(event.records))
            self._call(self.publisher.mark_all)
            self._call(self.janitor.recheck_all)
        else:
            dpids = dpids_of(event)
            self._call(self.publisher.stored_changed, dpids, (f"{event.kind}/{event.key}",))
            self._call(self.janitor.touched, dpids)
            if event.record is not None:
                self._call(self.janitor.ownership_written, event.record)
        with self._inbox_lock:
            self._inbox.append(event)
            if len(self._inbox) > self.settings.max_backlog:
                behind = len(self._inbox)
                self._inbox.clear()
                self._inbox.append(Snapshot(tuple(self.view.records()), resync=True))
                LOG.warning("topology: member %s: applications fell %d store events behind; "
                            "resynchronising them from a snapshot of the view", self.member_id,
                            behind)
                self.stats["overflows"] += 1
        self._wake_notifier.set()
        self._progressed()

    # ---- the notifier ----------------------------------------------------------------------------

    def _notifier_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake_notifier.wait(1.0)
            self._wake_notifier.clear()
            try:
                self._notify()
            except Exception:  # never let the notifier die: applications would go blind
                LOG.exception("topology: updating applications failed")
            self._progressed()

    def _notify(self) -> None:
        """Deliver what the store reported since the last call, then dump and log."""
        with self._inbox_lock:
            events = list(self._inbox)
            self._inbox.clear()
        if not events:
            return
        changes: list[ViewChange] = []
        resync = False
        for event in events:
            if isinstance(event, Snapshot) and event.resync:
                resync = True
                before = len(changes)
                changes.extend(self._emitted.apply(event))
                LOG.warning("topology: member %s: view resynchronised from a snapshot "
                            "(%d records, %d visible changes)", self.member_id,
                            len(event.records), len(changes) - before)
            else:
                changes.extend(self._emitted.apply(event))
        self.stats["events"] += len(changes)
        for change in changes:
            LOG.debug("topology: %s", describe(change))
        if changes and self._on_changes is not None:
            try:
                self._on_changes(changes, resync)
            except Exception:
                LOG.exception("topology: delivering view changes failed")
        self._dump()
        self._synced.set()
        # One parseable line per delivered batch: when this controller's applications
        # (and the dump file) reached which view.
        view = self._emitted.summary()
        LOG.info("TOPOLOGY member=%s revision=%d switches=%d links=%d hidden_links=%d "
                 "hosts=%d masters=%d changes=%d resync=%s owners=%s t=%.6f",
                 self.member_id, view.revision, view.switches, view.links, view.hidden_links,
                 view.hosts, view.masters, len(changes), str(resync).lower(),
                 ",".join(sorted(view.owners)) or "-", time.time())

    def _dump(self) -> None:
        """Write the whole picture to the dump file, if one is configured (only then is it
        built: the log line needs counts only)."""
        path = self.settings.dump_file
        if not path:
            return
        topology = self._emitted.topology()
        body = {"member": self.member_id, "updated_at": time.time(), **topology.to_dict()}
        target = Path(path)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(body, sort_keys=True))
            os.replace(tmp, target)
        except OSError as exc:
            LOG.warning("topology: cannot write the view dump %s: %s", path, exc)

    # ---- the writer ------------------------------------------------------------------------------

    def _set_master(self, dpid: int, term: int | None) -> None:
        self.publisher.set_master(dpid, term, self._clock())

    def _flush_now(self) -> None:
        self._flush(self._clock())

    def _attach(self, provider: CoordinatorProvider) -> bool:
        coord = provider()
        if coord is None:
            return False
        try:
            self._watch = coord.topology.watch(self._on_store_event)
        except coordination.CoordinationError as exc:
            LOG.warning("topology: cannot watch the topology store yet: %s", exc)
            return False
        self._coord = coord
        if self.settings.janitor:
            try:
                coord.election(JANITOR_ELECTION).campaign(
                    on_elected=lambda _lead: self._call(self._set_janitor, True),
                    on_revoked=lambda _lead: self._call(self._set_janitor, False))
            except coordination.CoordinationError as exc:
                LOG.warning("topology: cannot join the janitor election: %s", exc)
        self._attached.set()
        LOG.info("topology: member %s watching the topology store", self.member_id)
        return True

    def _set_janitor(self, leader: bool) -> None:
        self._janitor_leader = leader
        LOG.info("topology: member %s %s the janitor", self.member_id,
                 "is now" if leader else "is no longer")

    def _writer_loop(self, provider: CoordinatorProvider) -> None:
        started, warned = time.monotonic(), False
        while not self._stopping.is_set() and not self._attach(provider):
            time.sleep(0.05)
            if not warned and time.monotonic() - started > 10.0:
                warned = True
                LOG.warning("topology: still no coordinator after 10 s (is the mastership app "
                            "running?)")
        batch_due: float | None = None
        resync = self.settings.resync_interval
        next_resync = self._clock() + resync if resync else None
        next_janitor = self._clock()
        retry_at: float | None = None
        pending_since: float | None = None
        last_flush = -float("inf")
        while True:
            now = self._clock()
            deadlines = [next_resync, next_janitor if self._janitor_leader else None, batch_due,
                         self.publisher.next_deadline(), retry_at]
            soonest = min((d for d in deadlines if d is not None), default=now + 1.0)
            try:
                func, args = self._inputs.get(timeout=max(0.0, min(soonest - now, 1.0)))
            except queue.Empty:
                func = None
            stopping = self._stopping.is_set()
            while func is not None:
                try:
                    func(*args)
                except Exception:
                    LOG.exception("topology: input %s failed", getattr(func, "__name__", func))
                try:
                    func, args = self._inputs.get_nowait()
                except queue.Empty:
                    func = None
            now = self._clock()
            if self.publisher.pending and batch_due is None:
                # the first change after a quiet spell goes out at once; what follows within
                # `batch_delay` of a flush is collected into the next one
                batch_due = max(now, last_flush + self.settings.batch_delay, retry_at or 0.0)
                if pending_since is None:
                    pending_since = now
            window = self.publisher.next_deadline()
            due = (batch_due is not None and now >= batch_due) or (
                window is not None and now >= window and (retry_at is None or now >= retry_at))
            if next_resync is not None and now >= next_resync:
                self.publisher.mark_all()  # opt-in self-repair: a plan for every switch
                next_resync = now + resync
                due = True
            if due or stopping:
                batch_due, last_flush = None, now
                try:
                    ok = self._flush(now)
                except Exception:  # never let the writer die: nothing would be published
                    LOG.exception("topology: publishing failed; retrying")
                    self.publisher.mark_all()
                    ok = False
                retry_at = None if ok else now + self.settings.retry_delay
                if ok and pending_since is not None:
                    self._observe_publish(self._clock() - pending_since)
                    pending_since = None
            if self._janitor_leader and now >= next_janitor and not stopping:
                try:
                    self._run_janitor(now)
                except Exception:
                    LOG.exception("topology: janitor pass failed")
                next_janitor = now + max(0.1, min(self.settings.grace_period / 4, 1.0))
            # what inputs and the plan left to forget, every step, master of the switch or not
            self._hand_over_forgotten()
            self._progressed()
            if stopping:
                return

    def _flush(self, now: float) -> bool:
        """Plan and perform the writes; False if some failed for a reason worth retrying."""
        coord = self._coord
        if coord is None or coord.closed:
            return True  # not attached yet, or shutting down: the next master re-publishes
        if self.view.snapshots == 0:
            # Before the first snapshot the view is empty: plans would adopt nothing and miss
            # stale records. The snapshot's arrival marks every switch for a new plan.
            return True
        ops = self.publisher.plan(self.view, now)
        ok = True
        if ops:
            self.stats["flushes"] += 1
            ok = self._perform(coord, ops, now)
        return ok

    def _hand_over_forgotten(self) -> None:
        """Pass on at once what local discovery should forget: a link forgotten late could
        be one it has found again since."""
        for forget in self.publisher.take_forgotten():
            if self._on_forget is not None:
                try:
                    self._on_forget(forget)
                except Exception:
                    LOG.exception("topology: forgetting %s failed", forget)

    def _perform(self, coord: coordination.Coordinator, ops: list[Op], now: float) -> bool:
        """Make the writes of one plan, all at once (`TopologyStore.apply`: two round trips
        for the batch where the backend allows); False if some failed for a reason worth
        retrying. Deletes go first: watchers then learn what went away (a cut link) before
        what merely changed (its port's state), in one transaction's order."""
        ops = sorted(ops, key=lambda op: isinstance(op, Put))
        try:
            outcomes = coord.topology.apply([
                PutRecord(op.record) if isinstance(op, Put) else
                DeleteRecord(op.record.KIND, op.record.key, term=op.term, domain=op.record.domain)
                for op in ops])
        except coordination.ClosedError:
            return True  # shutting down
        except coordination.CoordinationError as exc:
            self.stats["errors"] += 1
            LOG.warning("topology: %d writes (%s, ...) failed: %s", len(ops), ops[0].path, exc)
            for op in ops:
                self.publisher.failed(op)
            return False
        ok = True
        for op, outcome in zip(ops, outcomes, strict=True):
            ok = self._settle(op, outcome, now) and ok
        return ok

    def _settle(self, op: Op, outcome: bool | coordination.CoordinationError, now: float) -> bool:
        """Account for one write's outcome; False if it failed for a reason worth retrying."""
        term = op.record.term if isinstance(op, Put) else op.term
        if isinstance(outcome, coordination.StaleTermError):
            # The store holds a newer term for this switch: we were deposed ("I was deposed").
            if self.publisher.deposed(op.dpid, term):
                LOG.warning("topology: member %s deposed as publisher of %016x: %s",
                            self.member_id, op.dpid, outcome)
            self.stats["refused"] += 1  # last: a reader of the stats finds the rest done
            return True
        if isinstance(outcome, coordination.CoordinationError):
            self.stats["errors"] += 1
            LOG.warning("topology: %s of %s failed: %s", type(op).__name__.lower(), op.path,
                        outcome)
            self.publisher.failed(op)
            return False
        if isinstance(op, Put):
            self.stats["puts" if outcome else "unchanged"] += 1
        else:
            self.stats["deletes"] += int(outcome)
        # One line per store write (the audit trail); a no-op only at debug level.
        LOG.log(logging.INFO if outcome else logging.DEBUG, "topology: %s %s term=%d (%s)",
                ("put" if isinstance(op, Put) else "delete") if outcome else "unchanged",
                op.path, term, op.reason)
        self.publisher.done(op, now)
        return True

    def _run_janitor(self, now: float) -> None:
        coord = self._coord
        if coord is None or coord.closed:
            return
        try:
            live = set(coord.members())
        except coordination.CoordinationError as exc:
            LOG.info("topology: janitor cannot list members: %s", exc)
            return
        deletes: list[Delete] = self.janitor.plan(self.view, live, now)
        for op in deletes:
            LOG.info("topology: janitor removes %s (switch %016x %s)", op.path, op.dpid,
                     op.reason)
            try:
                if coord.topology.delete(op.record.KIND, op.record.key, term=op.term,
                                         domain=op.record.domain):
                    self.stats["deletes"] += 1
            except coordination.StaleTermError as exc:
                LOG.info("topology: janitor left %s alone: %s", op.path, exc)
            except coordination.CoordinationError as exc:
                LOG.warning("topology: janitor could not delete %s: %s", op.path, exc)
