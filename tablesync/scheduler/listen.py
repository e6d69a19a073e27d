"""`tablesync listen`: a change in a mapping's source wakes the mapping within a second.

One thread per source app whose `change_capture` is `log` or `poll`, each the leader for its app by
a lock in the store (replicas of `listen` stand by and take over when the leader dies):
- `log`: follows the database's change log (`apps.changelog`: PostgreSQL logical decoding;
  `apps.binlog`: the MariaDB/MySQL binlog) and records a wake-up for each mapping whose source
  table changed, before the log moves on;
- `poll`: probes max(modified) of the source tables, one statement per app, every 0.5 s while
  changes flow, backing off to the mapping's schedule period when idle.
The main thread turns due wake-ups into jobs (`store.wakeups`: debounce, one follow-up after a
running job) and sends them. Nothing here decides what a job syncs: a woken job selects by
watermark like a scheduled one, so a missed or doubled wake-up costs a delay or an empty run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter, Gauge

from tablesync.apps.binlog import Binlog, Position
from tablesync.apps.changelog import ChangeLogError, Lag, PgChangeLog, drop_slot, slot_name
from tablesync.apps.engines import app_engine, open_table
from tablesync.config.load import expand_env
from tablesync.config.model import AppSpec, SideSpec
from tablesync.config.settings import Settings
from tablesync.db.engine import normalize_url, redact_url, utcnow
from tablesync.errors import BrokerUnavailable, ConfigError, JobRefused
from tablesync.store.capture import forget_slot, register_slot, registered_slots, save_position, slot_of
from tablesync.store.jobs import mark_sent
from tablesync.store.locks import MappingLock
from tablesync.store.mappings import StoredMapping, active_mappings, active_versions
from tablesync.store.wakeups import claim_due_wakes, next_due, request_wakes
from tablesync.store.watermarks import get_watermark
from tablesync.worker.enqueue import send_waiting

log = logging.getLogger("tablesync.listen")
FAST_PROBE_SECONDS = 0.5
DISPATCH_SECONDS = 0.05  # how often due wake-ups are looked for while some are pending
IDLE_CHECK_SECONDS = 1.0  # … and when none is known: another replica's, or left by a dead leader
BINLOG_HEARTBEAT_SECONDS = 0.1  # the binlog server's heartbeat when idle: the end of a burst is seen within it

WAKEUPS = Counter("tablesync_capture_wakeups", "Wake-ups recorded for a mapping by a change in its source.", ["mapping"])
WOKEN_JOBS = Counter("tablesync_capture_jobs", "Sync jobs sent because a change woke their mapping.", ["mapping"])
FOLLOWING = Gauge("tablesync_capture_following", "1 while this listener is the leader following the app's changes.",
                  ["app", "mode"])
SLOT_LAG_BYTES = Gauge("tablesync_capture_slot_lag_bytes",
                       "WAL the app's replication slot holds back: written but not yet confirmed by the listener.",
                       ["app", "slot"])
LAG_SECONDS = Gauge("tablesync_capture_lag_seconds",
                    "How far behind the change log the listener reads (heartbeat round trip, or the oldest unanswered one).",
                    ["app"])
PROBES = Counter("tablesync_capture_probes", "Polling probes of max(modified) run (one statement per app).", ["app"])


@dataclass(frozen=True)
class Watched:
    """A source table: its modified column, the (mapping, side) pairs that read it, and their
    shortest schedule period (how far polling backs off when the table is idle)."""

    modified: str | None
    readers: tuple[tuple[str, str], ...]
    period: float

    @property
    def mappings(self) -> set[str]:
        return {m for m, _ in self.readers}


@dataclass(frozen=True)
class Source:
    """A source app as the listener follows it: which tables wake which mappings."""

    app: str
    spec: AppSpec
    tables: Mapping[tuple[str | None, str], Watched]  # by (schema or None, table)

    def mappings_of(self, schema: str | None, table: str) -> set[str]:
        hit = self.tables.get((schema, table)) or self.tables.get((None, table))
        return hit.mappings if hit else set()


def capture_plan(stored: list[StoredMapping]) -> dict[str, Source]:
    """The sources to follow, by app, for the active mappings."""
    found: dict[str, tuple[AppSpec, dict[tuple[str | None, str], Watched]]] = {}
    for m in stored:
        period = m.spec.parsed_schedule().period_seconds
        for side_name in m.spec.read_sides():
            side = m.spec.side(side_name)
            app = m.apps[side.app]
            if app.change_capture == "schedule":
                continue
            tables = found.setdefault(side.app, (app, {}))[1]
            key = (side.schema_, side.table)
            seen = tables.get(key, Watched(side.modified, (), period))
            tables[key] = Watched(seen.modified, (*seen.readers, (m.spec.name, side_name)), min(seen.period, period))
    return {app: Source(app, spec, tables) for app, (spec, tables) in found.items()}


class Listener:
    """The `tablesync listen` process: its source threads and the dispatch of wake-ups."""

    def __init__(self, store: sa.Engine, send: Callable[[int], None], settings: Settings) -> None:
        self.store = store
        self.send = send
        self.settings = settings
        self.threads: dict[str, SourceThread] = {}
        self.woken = threading.Event()
        self._versions: dict[str, int] | None = None
        self.plan: dict[str, Source] = {}

    def run(self, stop: threading.Event) -> None:
        log.info("listen started")
        last_check = 0.0
        due_at: datetime | None = None
        while not stop.is_set():
            try:
                if time.monotonic() - last_check >= IDLE_CHECK_SECONDS:
                    last_check = time.monotonic()
                    self.refresh()
                    # a job made but not sent (a listener killed between the two, a broker away)
                    # would hold back its mapping's wake-ups as "queued": send it, as a scheduler does
                    send_waiting(self.store, self.send)
                    with self.store.connect() as conn:
                        due_at = next_due(conn)
                if self.woken.is_set():
                    self.woken.clear()
                    with self.store.connect() as conn:
                        due_at = next_due(conn)
                if due_at is not None and due_at <= utcnow():
                    self.dispatch()
                    with self.store.connect() as conn:
                        due_at = next_due(conn)
            except sa.exc.OperationalError as exc:
                log.error("store unavailable, retrying: %s", str(exc.orig).strip().splitlines()[0])
            except BrokerUnavailable as exc:
                log.error("%s; the woken jobs wait in the store, where a scheduler sends them", exc)
            except Exception:
                log.exception("listen iteration failed; continuing")
            stop.wait(DISPATCH_SECONDS)
        for thread in self.threads.values():
            thread.stop.set()
        for thread in self.threads.values():
            thread.join(timeout=10)
        log.info("listen stopped")

    def refresh(self) -> None:
        """Follow what the active mappings need now: new sources get a thread, changed ones a new
        one, gone ones are stopped and their slots dropped."""
        with self.store.connect() as conn:
            versions = active_versions(conn)
            if versions == self._versions:
                return
            self.plan = capture_plan(active_mappings(conn))
        self._versions = versions
        for app, thread in list(self.threads.items()):
            if self.plan.get(app) != thread.source:
                thread.stop.set()
                thread.join(timeout=30)
                del self.threads[app]
        for app, source in self.plan.items():
            if app not in self.threads:
                self.threads[app] = SourceThread(self, source)
                self.threads[app].start()
        drop_unused_slots(self.store, self.plan)

    def dispatch(self) -> list[int]:
        """Turn due wake-ups into jobs and send them (a job the broker does not take waits in the
        store for the scheduler's `send_waiting`)."""
        claimed = claim_due_wakes(self.store, utcnow(), self.settings.listen_min_interval_seconds)
        sent: list[int] = []
        try:
            for mapping, job_id in claimed.items():
                self.send(job_id)  # a broker that is down raises: the rest wait in the store
                WOKEN_JOBS.labels(mapping).inc()
                sent.append(job_id)
        finally:
            if sent:
                with self.store.begin() as conn:
                    mark_sent(conn, sent)
                log.info("woken: %s", ", ".join(f"{m} (job {j})" for m, j in claimed.items() if j in sent))
        return sent

    def wake(self, mappings: set[str], conn: sa.Connection | None = None) -> None:
        """Record wake-ups (before the caller lets its change log move on), in `conn`'s
        transaction if given."""
        if not mappings:
            return
        if conn is None:
            with self.store.begin() as own:
                request_wakes(own, mappings, utcnow(), self.settings.listen_debounce_seconds)
        else:
            request_wakes(conn, mappings, utcnow(), self.settings.listen_debounce_seconds)
        for m in mappings:
            WAKEUPS.labels(m).inc()
        self.woken.set()


class SourceThread(threading.Thread):
    """One source app: the leader follows its log or polls it; a replica waits for the lock."""

    def __init__(self, listener: Listener, source: Source) -> None:
        super().__init__(name=f"listen-{source.app}", daemon=True)
        self.listener = listener
        self.source = source
        self.stop = threading.Event()

    @property
    def mode(self) -> str:
        return self.source.spec.change_capture

    def run(self) -> None:
        backoff = 1.0
        while not self.stop.is_set():
            lock = MappingLock(self.listener.store, f"listen:{self.source.app}", lease_seconds=60)
            try:
                if not lock.acquire():
                    self.stop.wait(2.0)  # another listener leads this app
                    continue
                FOLLOWING.labels(self.source.app, self.mode).set(1)
                if self.mode == "log":
                    self.follow(lock)
                else:
                    self.poll(lock)
                backoff = 1.0
            except (ChangeLogError, ConfigError, JobRefused, sa.exc.DBAPIError) as exc:
                log.error("%s (%s): %s; again in %.0fs", self.source.app, self.mode, _short(exc), backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception:  # a bug or a library's surprise must not end the thread: the app would go unheard
                log.exception("%s (%s) failed; again in %.0fs", self.source.app, self.mode, backoff)
                self.stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                FOLLOWING.labels(self.source.app, self.mode).set(0)
                lock.release()

    def follow(self, lock: MappingLock) -> None:
        url = expand_env(self.source.spec.address, f"app {self.source.app}, url")
        backend = sa.engine.make_url(normalize_url(url)).get_backend_name()
        if backend == "postgresql":
            self.follow_postgresql(url, lock)
        elif backend in ("mysql", "mariadb"):
            self.follow_binlog(url, lock)
        else:
            raise ChangeLogError(f"{backend} has no change log to follow: use change_capture: poll")

    def wake_tables(self, pairs: set[tuple[str, str]], conn: sa.Connection | None = None) -> None:
        self.listener.wake({m for schema, table in pairs for m in self.source.mappings_of(schema, table)}, conn)

    def follow_postgresql(self, url: str, lock: MappingLock) -> None:
        app = self.source.app
        changelog = PgChangeLog(url, self.source.spec.slot or slot_name(app), frozenset(self.source.tables),
                                self.source.spec.publication)
        if changelog.ensure_slot():
            log.info("%s: replication slot %s created", app, changelog.slot)
        with self.listener.store.begin() as conn:
            register_slot(conn, app, "postgresql", changelog.slot, self.source.spec.address)
        log.info("%s: following %s, %d table(s)", app, changelog.label, len(self.source.tables))

        def on_lag(lag: Lag) -> None:
            lock.renew()
            if lag.bytes is not None:
                SLOT_LAG_BYTES.labels(app, changelog.slot).set(lag.bytes)
            if lag.seconds is not None:
                LAG_SECONDS.labels(app).set(lag.seconds)

        changelog.follow(self.wake_tables, self.stop, self.listener.settings.listen_heartbeat_seconds, on_lag)

    def follow_binlog(self, url: str, lock: MappingLock) -> None:
        """The binlog from the stored position (the first time: from now), each batch's wake-ups
        and the position after it stored in one transaction."""
        app = self.source.app
        binlog = Binlog(url, frozenset(self.source.tables))
        with self.listener.store.begin() as conn:
            stored = slot_of(conn, app)
            start = Position.decode(stored.position) if stored is not None and stored.position else binlog.current()
            register_slot(conn, app, "binlog", "binlog", self.source.spec.address, start.encode())
        log.info("%s: following %s from %s, %d table(s)", app, binlog.label, start.encode(), len(self.source.tables))

        def on_changes(pairs: set[tuple[str, str]], position: Position) -> None:
            lock.renew()
            with self.listener.store.begin() as conn:
                self.wake_tables(pairs, conn)
                save_position(conn, app, position.encode())

        try:
            binlog.follow(start, on_changes, self.stop, BINLOG_HEARTBEAT_SECONDS)
        except ChangeLogError as exc:
            if "purged" in str(exc):  # what changed since is found by waking every mapping, once
                with self.listener.store.begin() as conn:
                    self.listener.wake({m for w in self.source.tables.values() for m in w.mappings}, conn)
                    save_position(conn, app, None)
            raise

    def poll(self, lock: MappingLock) -> None:
        """Probe max(modified) of the due tables: fast while they change, backing off when idle."""
        probe = Prober(self.source, self.listener.store)
        log.info("%s: polling %d table(s)", self.source.app, len(self.source.tables))
        while not self.stop.is_set():
            self.listener.wake(probe.run_due(time.monotonic()))
            lock.renew()
            self.stop.wait(max(0.01, probe.next_at() - time.monotonic()))


class Prober:
    """Adaptive polling of one app: each table is probed every 0.5 s after a change was seen, then
    twice as long after each idle probe, up to its mappings' schedule period (when the scheduled
    tick runs anyway). The due tables of an app are probed in one statement. The first probe
    compares with each reader's watermark, so that a change made while no listener ran wakes too."""

    def __init__(self, source: Source, store: sa.Engine) -> None:
        self.source = source
        self.store = store
        self.last: dict[tuple[str | None, str], Any] = {}
        self.interval = dict.fromkeys(source.tables, FAST_PROBE_SECONDS)
        self.due = dict.fromkeys(source.tables, 0.0)

    def next_at(self) -> float:
        return min(self.due.values(), default=time.monotonic() + 1.0)

    def run_due(self, now: float) -> set[str]:
        keys = [k for k, at in self.due.items() if at <= now]
        if not keys:
            return set()
        values = self.probe(keys)
        PROBES.labels(self.source.app).inc()
        woken: set[str] = set()
        for key, value in zip(keys, values):
            watched = self.source.tables[key]
            if key not in self.last:
                readers = self._behind(watched, value)
            else:
                readers = watched.mappings if value is not None and value != self.last[key] else set()
            self.last[key] = value
            woken |= readers
            self.interval[key] = (FAST_PROBE_SECONDS if readers
                                  else min(self.interval[key] * 2, max(watched.period, FAST_PROBE_SECONDS)))
            self.due[key] = now + self.interval[key]
        return woken

    def _behind(self, watched: Watched, value: Any) -> set[str]:
        """The readers whose watermark is below the table's newest modified-on."""
        if value is None:
            return set()
        with self.store.connect() as conn:
            marks = {(m, side): get_watermark(conn, m, side) for m, side in watched.readers}
        behind = set()
        for (mapping, _), mark in marks.items():
            try:
                if mark is None or mark < value:
                    behind.add(mapping)
            except TypeError:  # naive vs aware, number vs date: not comparable, so wake to be sure
                behind.add(mapping)
        return behind

    def probe(self, keys: list[tuple[str | None, str]]) -> list[Any]:
        spec = self.source.spec
        if spec.http:
            return [open_table(self.source.app, spec, self._side(key)).start_mark() for key in keys]
        columns = []
        for i, (schema, table) in enumerate(keys):
            modified = str(self.source.tables[(schema, table)].modified)
            t = sa.table(table, sa.column(modified), schema=schema)
            columns.append(sa.select(sa.func.max(t.c[modified])).scalar_subquery().label(f"p{i}"))
        with app_engine(self.source.app, spec).connect() as conn:
            return list(conn.execute(sa.select(*columns)).one())

    def _side(self, key: tuple[str | None, str]) -> SideSpec:
        schema, table = key
        return SideSpec.model_validate({"app": self.source.app, "table": table, "key": "_", "schema": schema,
                                        "modified": self.source.tables[key].modified})


def drop_unused_slots(store: sa.Engine, plan: Mapping[str, Source] | None = None) -> list[str]:
    """Drop the replication slots tablesync made that no active mapping follows any more (a
    forgotten slot keeps WAL until the disk fills). Returns what was dropped, as "app: slot"."""
    with store.connect() as conn:
        if plan is None:
            plan = capture_plan(active_mappings(conn))
        registered = registered_slots(conn)
    dropped = []
    for row in registered:
        source = plan.get(row.app)
        if source is not None and source.spec.change_capture == "log":
            continue
        url = row.url
        try:
            if row.kind == "postgresql":  # a binlog position is ours only: nothing to drop on the server
                url = expand_env(row.url, f"app {row.app}, url")
                drop_slot(url, row.slot)
        except (ChangeLogError, ConfigError, sa.exc.DBAPIError) as exc:
            log.error("%s: cannot drop replication slot %s on %s: %s", row.app, row.slot, redact_url(url), _short(exc))
            continue
        with store.begin() as conn:
            forget_slot(conn, row.app, row.slot)
        log.info("%s: %s dropped (no mapping follows it)", row.app,
                 f"replication slot {row.slot}" if row.kind == "postgresql" else "binlog position")
        dropped.append(f"{row.app}: {row.slot}")
    return dropped


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(exc).__name__])[0]
