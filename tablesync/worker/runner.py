"""Running one job: the lock, the status rules that make redelivery harmless, the heartbeat.

Dramatiq delivers at least once. The rules below decide, from the job row alone, whether a delivery
is new work (queued), a redo after a crash (running, yet the mapping lock was free), a retry after a
transient app failure (failed, and the message carries more retries than the job has seen) or a
duplicate (anything else), which is dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tablesync.config.load import ConfigError, expand_env
from tablesync.config.model import AppSpec, source_side, target_side
from tablesync.db.engine import create_engine, redact_url, utcnow
from tablesync.store.jobs import COUNTERS, Counters, finish_job, get_job, heartbeat
from tablesync.config.logs import job_fields
from tablesync.store.mappings import StoredMapping, get_mapping
from tablesync.store.schema import jobs
from tablesync.config.settings import Settings
from tablesync.sync import metrics
from tablesync.sync.actions import ACTION_KINDS, ActionRefused, run_action, sync_record
from tablesync.apps.table import AppError, AppTable, AppUnavailable, app_failure
from tablesync.sync.two_way import run_bidirectional
from tablesync.store.couplings import promote_intents
from tablesync.sync.dry_run import default_record_side
from tablesync.sync.one_way import RunContext, run_direction
from tablesync.sync.plan import compile_plan
from tablesync.store.locks import MappingLock

log = logging.getLogger("tablesync.worker")
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
SYNC_KINDS = ("sync", "full_sync")

_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()


class RetryLater(Exception):
    """A transient failure (app unreachable): Dramatiq retries the message with backoff."""


def app_engine(name: str, app: AppSpec) -> sa.Engine:
    """One pooled engine per app URL per process; the URL is expanded here, never stored."""
    url = expand_env(app.url, f"app {name}, url")
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            try:
                engine = _engines[url] = create_engine(url)
            except (ValueError, sa.exc.ArgumentError) as exc:
                raise JobRefused(f"app {name}: {redact_url(url)}: {exc}") from None
        return engine


@dataclass
class Heartbeat:
    store: sa.Engine
    job_id: int
    lock: MappingLock
    every: float

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._last = 0.0
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._last < self.every / 2:
            return
        self._last = now
        with self.store.begin() as conn:
            heartbeat(conn, self.job_id)
        self.lock.renew()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.beat()
            except Exception:  # a missed beat is retried; the reaper tolerates several
                log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_job(store: sa.Engine, settings: Settings, job_id: int, retries: int = 0) -> str | None:
    """Run job `job_id` if this delivery should; returns the final status, or None when dropped."""
    with store.connect() as conn:
        job = get_job(conn, job_id)
    if job is None:
        log.warning("job %s does not exist in this worker's store; message dropped (was it sent by a process on "
                    "another store? check TABLESYNC_STORE_URL, TABLESYNC_BROKER_URL and TABLESYNC_QUEUE)", job_id)
        return None
    if not _deliverable(job, retries):  # decided before locking: a duplicate must never hold the lock
        log.info("job %s is already %s; duplicate delivery dropped", job_id, job.status)
        return None
    with store.connect() as conn:
        blocking = _dependencies_active(conn, job)
    if blocking and (utcnow() - job.enqueued_at).total_seconds() < settings.dependency_wait_seconds:
        log.info("job %s (%s) waits for %s to sync first", job_id, job.mapping, ", ".join(blocking))
        return DEFERRED
    lock = MappingLock(store, job.mapping, lease_seconds=settings.heartbeat_timeout_seconds)
    if job.kind in ACTION_KINDS:  # an operator's action waits for a running sync instead of racing it
        if not _await_lock(lock, settings.dependency_wait_seconds):
            raise RetryLater(f"mapping {job.mapping} stayed locked; action job {job_id} will be retried")
    elif not _acquire(store, lock, job_id):
        with store.begin() as conn:
            other = _running_other(conn, job.mapping, job_id)
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == "queued").values(
                status="dropped", finished_at=utcnow(),
                message=f"dropped: mapping {job.mapping} is already running" + (f" in job {other}" if other else "")))
        metrics.job_ended(job.mapping, job.kind, "dropped", None)
        log.info("job %s (%s): mapping is locked by another job; delivery dropped", job_id, job.mapping)
        return None
    beat: Heartbeat | None = None
    try:
        with store.begin() as conn:
            job = get_job(conn, job_id)
            assert job is not None
            if not _deliverable(job, retries):
                log.info("job %s is already %s; duplicate delivery dropped", job_id, job.status)
                return None
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(
                status="running", started_at=utcnow(), heartbeat_at=utcnow(), finished_at=None,
                attempts=retries + 1, worker=WORKER_NAME, message=None,
            ))
        beat = Heartbeat(store, job_id, lock, settings.heartbeat_seconds)
        beat.start()
        started = time.monotonic()
        log.info("job %s started: mapping=%s kind=%s attempt=%s", job_id, job.mapping, job.kind, retries + 1,
                 extra=job_fields(job, event="job_started", attempt=retries + 1, worker=WORKER_NAME))
        try:
            counters, summary = _run(store, settings, job, beat)
        except ActionRefused as exc:
            _ended(store, job, "failed", str(exc), started)
            return "failed"
        except AppUnavailable as exc:
            more = retries < settings.max_retries
            note = f"app unavailable: {exc}" + (f"; retrying (attempt {retries + 2} of {settings.max_retries + 1})" if more else "")
            _ended(store, job, "failed", note, started)
            if more:
                raise RetryLater(note) from exc
            return "failed"
        except (ConfigError, JobRefused, AppError) as exc:
            _ended(store, job, "failed", str(exc), started)
            return "failed"
        except Exception as exc:
            log.exception("job %s failed with an internal error", job_id, extra=job_fields(job, event="job_error"))
            _ended(store, job, "failed", f"internal error: {type(exc).__name__}: {exc}"[:2000], started)
            return "failed"
        message = summary if not counters.failed else f"{counters.failed} record(s) failed; see the job's errors"
        _ended(store, job, "succeeded", message, started)
        return "succeeded"
    finally:
        if beat is not None:
            beat.stop()
        lock.release()


def _ended(store: sa.Engine, job: sa.Row, status: str, message: str | None, started: float) -> None:  # type: ignore[type-arg]
    """Record the job's end, count it (its records were counted as their batches committed) and
    log its one end line with the job row's counters: for a failed job, those of the batches it
    committed before failing."""
    seconds = time.monotonic() - started
    with store.begin() as conn:
        finish_job(conn, job.id, status, message)
        row = get_job(conn, job.id)
    metrics.job_ended(job.mapping, job.kind, status, seconds)
    counters = {k: getattr(row, k) for k in COUNTERS if getattr(row, k)} if row is not None else {}
    log.log(logging.INFO if status == "succeeded" else logging.WARNING,
            "job %s %s in %.2fs: mapping=%s kind=%s%s%s", job.id, status, seconds, job.mapping, job.kind,
            "".join(f" {k}={v}" for k, v in counters.items()), f" ({message})" if message else "",
            extra=job_fields(job, event="job_ended", status=status, duration_seconds=round(seconds, 3),
                             counters=counters, job_message=message))


LOCK_GRACE_SECONDS = 10.0
DEFERRED = "deferred"  # run_job's answer when the job must wait for its depends_on mappings: send it again later


def _dependencies_active(conn: sa.Connection, job: sa.Row) -> list[str]:  # type: ignore[type-arg]
    """`depends_on` mappings with a sync job enqueued no later than this one and not yet finished:
    within a tick (or after a manual sync of the parent) the parent's records are coupled first."""
    if job.kind not in SYNC_KINDS:
        return []
    stored = get_mapping(conn, job.mapping)
    if stored is None or not stored.spec.depends_on:
        return []
    return sorted(set(conn.execute(sa.select(jobs.c.mapping).where(
        jobs.c.mapping.in_(stored.spec.depends_on), jobs.c.status.in_(("queued", "running")),
        jobs.c.kind.in_(SYNC_KINDS), jobs.c.enqueued_at <= job.enqueued_at)).scalars()))


def _deliverable(job: sa.Row, retries: int) -> bool:  # type: ignore[type-arg]
    """New work (queued), a redo after a crash (running), or a genuine Dramatiq retry of a failure."""
    return job.status in ("queued", "running") or (job.status == "failed" and job.attempts <= retries)


def _running_other(conn: sa.Connection, mapping: str, job_id: int) -> int | None:
    return conn.execute(sa.select(jobs.c.id).where(jobs.c.mapping == mapping, jobs.c.status == "running",
                                                  jobs.c.id != job_id)).scalar()


def _acquire(store: sa.Engine, lock: MappingLock, job_id: int) -> bool:
    """Take the mapping lock. While another job of the mapping is running, give up at once (the
    caller drops this job); if the lock is busy but nothing runs (a job just ending, a duplicate
    delivery being checked), wait a few seconds for it rather than dropping real work."""
    deadline = time.monotonic() + LOCK_GRACE_SECONDS
    while not lock.acquire():
        with store.connect() as conn:
            if _running_other(conn, lock.mapping, job_id) is not None or time.monotonic() > deadline:
                return False
        time.sleep(0.2)
    return True


class JobRefused(Exception):
    """The job cannot run as asked (unknown mapping, unsupported kind); the message says why."""


def _await_lock(lock: MappingLock, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not lock.acquire():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _run(store: sa.Engine, settings: Settings, job: sa.Row, beat: Heartbeat) -> tuple[Counters, str | None]:  # type: ignore[type-arg]
    if job.kind not in SYNC_KINDS and job.kind not in ACTION_KINDS:
        raise JobRefused(f"job kind {job.kind!r} is not supported by this worker")
    with store.connect() as conn:
        stored = get_mapping(conn, job.mapping)
    if stored is None:
        raise JobRefused(f"mapping {job.mapping} is not configured (run `tablesync config apply`)")
    with store.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == job.id).values(mapping_version=stored.version,
                                                                       direction=stored.spec.direction))
        # Under the lock, before anything reads couplings: inserts a crashed job left staged
        # become pending couplings, which this job finishes (adopting rows that landed).
        promoted = promote_intents(conn, stored.spec.name)
    if promoted:
        log.info("mapping %s: %d unfinished inserts of an interrupted job will be finished", stored.spec.name, promoted)
    params = job.params or {}
    if job.kind in ACTION_KINDS:
        ctx = run_context(store, settings, stored, job.id, beat=beat.beat)
        return run_action(ctx, stored.spec, open_tables(stored), job.kind, params)
    if params.get("record") is not None:
        ctx = run_context(store, settings, stored, job.id, beat=beat.beat)
        side = params.get("side") or default_record_side(stored.spec.direction)
        return sync_record(ctx, stored.spec, open_tables(stored), str(params["record"]), side), None
    full = job.kind == "full_sync" or bool(params.get("full"))
    return sync_mapping(store, settings, stored, job.id, full=full, beat=beat.beat), None


def open_tables(stored: StoredMapping) -> dict[str, AppTable]:
    """Both sides' tables, reflected; a missing table or an unreachable app says which and where."""
    spec = stored.spec
    tables = {}
    for side in ("local", "integration"):
        side_spec = spec.side(side)
        engine = app_engine(side_spec.app, stored.apps[side_spec.app])
        try:
            tables[side] = AppTable.open(engine, side_spec)
        except sa.exc.NoSuchTableError:
            raise JobRefused(f"mapping {spec.name}: table {side_spec.table} not found in app {side_spec.app} "
                             f"({redact_url(str(engine.url))})") from None
        except sa.exc.DBAPIError as exc:
            failure = app_failure(exc)
            raise type(failure)(f"app {side_spec.app} ({redact_url(str(engine.url))}): {failure}") from exc
    return tables


def run_context(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, full: bool = False,
                beat: Callable[[], None] | None = None, report: Any = None) -> RunContext:
    return RunContext(store=store, job_id=job_id, batch_size=stored.spec.batch_size or settings.batch_size,
                      overlap_seconds=settings.overlap_seconds, full=full, beat=beat or (lambda: None), report=report)


def sync_mapping(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, full: bool = False,
                 beat: Callable[[], None] | None = None, report: Any = None) -> Counters:
    """One run of a mapping; with a dry-run `report`, everything is read and decided, nothing written."""
    spec = stored.spec
    tables = open_tables(stored)
    ctx = run_context(store, settings, stored, job_id, full, beat, report)
    if spec.direction == "bidirectional":
        return run_bidirectional(ctx, spec, tables["local"], tables["integration"])
    source, target = tables[source_side(spec.direction)], tables[target_side(spec.direction)]
    return run_direction(ctx, compile_plan(spec, spec.direction, target.table, source.table), source, target)
