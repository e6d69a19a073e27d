"""Running one job: the delivery rules that make redelivery harmless, the lock, the heartbeat.

Dramatiq delivers at least once. The rules below decide, from the job row alone, whether a delivery
is new work (queued), a redo after a crash (running, yet the mapping lock was free), a retry after a
transient app failure (failed, and the message carries more retries than the job has seen) or a
duplicate (anything else), which is dropped. The work itself is the engine's (`sync.run`).
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tablesync.apps.failures import is_connection_error
from tablesync.config.logs import job_fields
from tablesync.config.settings import Settings
from tablesync.db.engine import utcnow
from tablesync.errors import ActionRefused, AppUnavailable, Fenced, JobRefused, RetryLater, StoreUnavailable, TerminalError
from tablesync.store import chunks as chunk_rows
from tablesync.store import jobs as job_rows
from tablesync.store.jobs import COUNTERS, SYNC_KINDS, Counters, fence, finish_job, get_job, heartbeat
from tablesync.store.locks import MappingLock
from tablesync.store.mappings import get_mapping
from tablesync.sync import run as engine
from tablesync.sync.actions import ACTION_KINDS
from tablesync.worker import chunks, metrics

log = logging.getLogger("tablesync.worker")
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
LOCK_GRACE_SECONDS = 10.0


class Delivery(enum.StrEnum):
    """What became of one delivery of a job's message."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEFERRED = "deferred"  # its depends_on mappings must sync first: send it again later
    CHUNKED = "chunked"  # planned as a chunked run: its chunks go on, and its finalisation ends the job
    DROPPED = "dropped"  # a duplicate, a job of another store, or its mapping is running in another job


@dataclass
class Heartbeat:
    """The job's sign of life, from a thread of its own and between the engine's batches, under
    the job's epoch: once the reaper took the job over, the next beat finds out, and the engine's
    next `beat()` raises Fenced, so a worker that woke up late stops before its next batch."""

    store: sa.Engine
    job_id: int
    epoch: int
    lock: MappingLock
    every: float

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._last = 0.0
        self.fenced = False
        self._store_away = False
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def beat(self) -> None:
        if self.fenced:
            raise Fenced(f"job {self.job_id} was taken over (abandoned and redone): this worker stops")
        now = time.monotonic()
        if now - self._last < self.every / 2:
            return
        self._last = now
        with self.store.begin() as conn:
            alive = heartbeat(conn, self.job_id, self.epoch)
        if not alive:
            self.fenced = True
            raise Fenced(f"job {self.job_id} was taken over (abandoned and redone): this worker stops")
        self.lock.renew()

    def fence(self, conn: sa.Connection) -> None:
        """The engine's check before each store write of the job (`RunContext.fence`)."""
        try:
            fence(conn, self.job_id, self.epoch)
        except Fenced:
            self.fenced = True
            raise

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.beat()
            except Fenced:
                return
            except sa.exc.DBAPIError as exc:  # the store is away: the job's own next write says so
                if not is_connection_error(exc):
                    log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)
                elif not self._store_away:
                    self._store_away = True
                    log.warning("heartbeat of job %s: the store is unavailable (%s)", self.job_id,
                                str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__)
            except Exception:  # a missed beat is retried; the reaper tolerates several
                log.warning("heartbeat of job %s failed", self.job_id, exc_info=True)
            else:
                self._store_away = False

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def run_job(store: sa.Engine, settings: Settings, job_id: int, retries: int = 0,
            send_chunk: chunks.Send | None = None) -> Delivery:
    """Run job `job_id` if this delivery should. A store that cannot be reached, at any step, is a
    transient failure: one log line and a Dramatiq retry with backoff; the retry is a redo that
    repairs the job's state once the store is back (no waiting for the reaper)."""
    try:
        return _run_job(store, settings, job_id, retries, send_chunk)
    except (sa.exc.DBAPIError, StoreUnavailable) as exc:
        if isinstance(exc, sa.exc.DBAPIError) and not is_connection_error(exc):
            raise
        orig = getattr(exc, "orig", exc)
        reason = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        log.warning("job %s: the store is unavailable (%s): the job is retried with backoff", job_id, reason)
        raise RetryLater(f"store unavailable: {reason}") from exc


def _run_job(store: sa.Engine, settings: Settings, job_id: int, retries: int, send_chunk: chunks.Send | None) -> Delivery:
    with store.connect() as conn:
        job = get_job(conn, job_id)
    if job is None:
        log.warning("job %s does not exist in this worker's store; message dropped (was it sent by a process on "
                    "another store? check TABLESYNC_STORE_URL, TABLESYNC_BROKER_URL and TABLESYNC_QUEUE)", job_id)
        return Delivery.DROPPED
    if not _deliverable(job, retries):  # decided before locking: a duplicate must never hold the lock
        log.info("job %s is already %s; duplicate delivery dropped", job_id, job.status)
        return Delivery.DROPPED
    with store.connect() as conn:
        blocking = _dependencies_active(conn, job)
    if blocking and (utcnow() - job.enqueued_at).total_seconds() < settings.dependency_wait_seconds:
        log.info("job %s (%s) waits for %s to sync first", job_id, job.mapping, ", ".join(blocking))
        return Delivery.DEFERRED
    lock = MappingLock(store, job.mapping, lease_seconds=settings.heartbeat_timeout_seconds, job_id=job_id)
    if job.kind in ACTION_KINDS:  # an operator's action waits for a running sync instead of racing it
        if not _await_lock(lock, settings.dependency_wait_seconds):
            raise RetryLater(f"mapping {job.mapping} stayed locked; action job {job_id} will be retried")
    else:
        other = _acquire(store, lock, job_id)
        if other is not None:
            with store.begin() as conn:
                job_rows.drop_job(conn, job_id, f"dropped: mapping {job.mapping} is already running in job {other}")
            metrics.job_ended(job.mapping, job.kind, "dropped", None)
            log.info("job %s (%s): mapping is locked by job %s; delivery dropped", job_id, job.mapping, other)
            return Delivery.DROPPED
        if not lock.held:  # locked, yet no job runs: an abandoned job's worker, not yet gone
            raise RetryLater(f"mapping {job.mapping} is still locked by a job that no longer runs; job {job_id} will be retried")
    beat: Heartbeat | None = None
    try:
        with store.connect() as conn:
            chunked = chunk_rows.in_progress(conn, job.mapping)
        if chunked is not None and chunked != job_id:  # the mapping's one job is that run, worked in chunks
            if job.kind in SYNC_KINDS and (job.params or {}).get("record") is None:
                with store.begin() as conn:
                    job_rows.drop_job(conn, job_id, f"dropped: mapping {job.mapping} is running in chunks in job {chunked}")
                metrics.job_ended(job.mapping, job.kind, "dropped", None)
                log.info("job %s (%s): a chunked run (job %s) is in progress; delivery dropped", job_id, job.mapping, chunked)
                return Delivery.DROPPED
            raise RetryLater(f"mapping {job.mapping} is running in chunks in job {chunked}; job {job_id} will be retried")
        with store.begin() as conn:
            job = get_job(conn, job_id)
            assert job is not None
            if not _deliverable(job, retries):
                log.info("job %s is already %s; duplicate delivery dropped", job_id, job.status)
                return Delivery.DROPPED
            epoch = job_rows.mark_running(conn, job_id, retries + 1, WORKER_NAME)
        beat = Heartbeat(store, job_id, epoch, lock, settings.heartbeat_seconds)
        beat.start()
        started = time.monotonic()
        log.info("job %s started: mapping=%s kind=%s attempt=%s", job_id, job.mapping, job.kind, retries + 1,
                 extra=job_fields(job, event="job_started", attempt=retries + 1, worker=WORKER_NAME))
        try:
            result = _run(store, settings, job, beat, send_chunk)
            if result is None:
                return Delivery.CHUNKED
            counters, summary = result
        except Fenced as exc:
            metrics.job_ended(job.mapping, job.kind, "abandoned", time.monotonic() - started)
            log.warning("job %s: %s", job_id, exc, extra=job_fields(job, event="job_fenced"))
            return Delivery.DROPPED
        except ActionRefused as exc:
            return _ended(store, job, epoch, Delivery.FAILED, str(exc), started)
        except AppUnavailable as exc:
            more = retries < settings.max_retries
            note = (f"app unavailable: {exc} (mapping {job.mapping})"
                    + (f"; retrying (attempt {retries + 2} of {settings.max_retries + 1})" if more else ""))
            if _ended(store, job, epoch, Delivery.FAILED, note, started) is Delivery.DROPPED:
                return Delivery.DROPPED  # taken over meanwhile: the redo owns the mapping now
            if more:
                raise RetryLater(note) from exc
            return Delivery.FAILED
        except TerminalError as exc:
            return _ended(store, job, epoch, Delivery.FAILED, str(exc), started)
        except StoreUnavailable:
            raise  # run_job's one line and a retry; nothing can be recorded now
        except sa.exc.DBAPIError as exc:
            if is_connection_error(exc):
                raise  # the store: run_job's one line and a retry; nothing can be recorded now
            log.exception("job %s failed with an internal error", job_id, extra=job_fields(job, event="job_error"))
            return _ended(store, job, epoch, Delivery.FAILED, f"internal error: {type(exc).__name__}: {exc}"[:2000], started)
        except Exception as exc:
            log.exception("job %s failed with an internal error", job_id, extra=job_fields(job, event="job_error"))
            return _ended(store, job, epoch, Delivery.FAILED, f"internal error: {type(exc).__name__}: {exc}"[:2000], started)
        message = summary if not counters.failed else f"{counters.failed} record(s) failed; see the job's errors"
        return _ended(store, job, epoch, Delivery.SUCCEEDED, message, started)
    finally:
        if beat is not None:
            beat.stop()
        try:
            lock.release()
        except sa.exc.DBAPIError:  # its connection is gone (a store restart, the reaper): so is the lock
            log.info("job %s: the mapping lock's connection was already gone", job_id)


def _ended(store: sa.Engine, job: sa.Row[Any], epoch: int, status: Delivery, message: str | None, started: float) -> Delivery:
    """Record the job's end, count it (its records were counted as their batches committed) and
    log its one end line with the job row's counters: for a failed job, those of the batches it
    committed before failing. A job taken over meanwhile keeps the reaper's `abandoned`."""
    seconds = time.monotonic() - started
    with store.begin() as conn:
        if not finish_job(conn, job.id, status.value, message, epoch=epoch):
            log.warning("job %s ended (%s) after it was taken over; its row keeps the takeover's status", job.id, status.value)
            return Delivery.DROPPED
        row = get_job(conn, job.id)
    metrics.job_ended(job.mapping, job.kind, status.value, seconds)
    counters = {k: getattr(row, k) for k in COUNTERS if getattr(row, k)} if row is not None else {}
    log.log(logging.INFO if status is Delivery.SUCCEEDED else logging.WARNING,
            "job %s %s in %.2fs: mapping=%s kind=%s%s%s", job.id, status.value, seconds, job.mapping, job.kind,
            "".join(f" {k}={v}" for k, v in counters.items()), f" ({message})" if message else "",
            extra=job_fields(job, event="job_ended", status=status.value, duration_seconds=round(seconds, 3),
                             counters=counters, job_message=message))
    return status


def _dependencies_active(conn: sa.Connection, job: sa.Row[Any]) -> list[str]:
    """`depends_on` mappings with a sync job enqueued no later than this one and not yet finished:
    within a tick (or after a manual sync of the parent) the parent's records are coupled first."""
    if job.kind not in SYNC_KINDS:
        return []
    stored = get_mapping(conn, job.mapping)
    if stored is None or not stored.spec.depends_on:
        return []
    return job_rows.unfinished_syncs(conn, stored.spec.depends_on, job.enqueued_at)


def _deliverable(job: sa.Row[Any], retries: int) -> bool:
    """New work (queued), a redo after a crash (running), or a genuine Dramatiq retry of a failure;
    never a job whose run went on in chunks (its chunks are redone, not the job)."""
    if job.chunks is not None:
        return False
    return job.status in ("queued", "running") or (job.status == "failed" and job.attempts <= retries)


def _acquire(store: sa.Engine, lock: MappingLock, job_id: int) -> int | None:
    """Take the mapping lock. While another job of the mapping is running, give up at once and
    return its id (the caller drops this job: that job syncs the mapping anyway). If the lock is
    busy but nothing runs (a job just ending, a duplicate delivery being checked, an abandoned
    job's frozen worker), wait a few seconds; then the caller retries later. Real work is never
    dropped because of a job that no longer runs."""
    deadline = time.monotonic() + LOCK_GRACE_SECONDS
    while not lock.acquire():
        with store.connect() as conn:
            other = job_rows.running_other(conn, lock.mapping, job_id)
        if other is not None:
            return int(other)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)
    return None


def _await_lock(lock: MappingLock, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not lock.acquire():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def _run(store: sa.Engine, settings: Settings, job: sa.Row[Any], beat: Heartbeat,
         send_chunk: chunks.Send | None) -> tuple[Counters, str | None] | None:
    """The job's work; None when it goes on as a chunked run."""
    if job.kind not in SYNC_KINDS and job.kind not in ACTION_KINDS:
        raise JobRefused(f"job kind {job.kind!r} is not supported by this worker")
    with store.connect() as conn:
        stored = get_mapping(conn, job.mapping)
    if stored is None:
        raise JobRefused(f"mapping {job.mapping} is not configured (run `tablesync config apply`)")
    with store.begin() as conn:
        job_rows.set_definition(conn, job.id, stored.version, stored.spec.direction)
    promoted = engine.finish_interrupted(store, stored.spec.name)
    if promoted:
        log.info("mapping %s: %d unfinished inserts of an interrupted job will be finished", stored.spec.name, promoted)
    params = job.params or {}
    if job.kind in ACTION_KINDS:
        return engine.act(store, settings, stored, job.id, job.kind, params, beat=beat.beat, fence=beat.fence)
    if params.get("record") is not None:
        return engine.sync_one(store, settings, stored, job.id, str(params["record"]), params.get("side"), beat=beat.beat,
                               fence=beat.fence), None
    full = job.kind == "full_sync" or bool(params.get("full"))
    where = params.get("where")
    if send_chunk is not None:
        plan = engine.plan_chunks(store, settings, stored, job.id, full, where, beat=beat.beat, fence=beat.fence)
        if plan is not None:
            chunks.start_run(store, job, stored, plan, beat.fence, send_chunk)
            return None
    return engine.sync_mapping(store, settings, stored, job.id, full=full, beat=beat.beat, fence=beat.fence,
                               where=where), None
