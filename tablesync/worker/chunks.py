"""Running a chunked run's chunks: the claim, the lease, the done transition, failures and the end.

A run's job plans the ranges (`sync.chunked`), stores them (`store.chunks.create_run`) and sends
up to `max_parallel` chunk messages; its own delivery then ends, and the job stays `running`
until its finalisation ends it. Each chunk message claims ranges of the run (any worker, any
machine) one after another for up to `STREAK_SECONDS`, each under a lease that a thread renews,
through one pipeline, so the next range is read while the last one's writes drain; then it sends
one more message if ranges are left to claim. At most `max_parallel` ranges are worked at once,
and a worker thread is free again within seconds, so a waiting operator action never queues
behind a whole run. The done transition that leaves no range unfinished releases the
finalisation, which the same worker claims at once.

Failures: a chunk whose worker dies or freezes is taken back by the reaper when its lease
expires and redone (its epoch fences the old worker out); an app or the store away gives the chunk
back and retries the message with backoff; anything else fails the run, with the chunk named.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tablesync.apps.failures import is_connection_error
from tablesync.config.settings import Settings
from tablesync.errors import AppUnavailable, BrokerUnavailable, Fenced, JobRefused, RetryLater, StoreUnavailable, TerminalError
from tablesync.store import chunks as chunk_rows
from tablesync.store.chunks import FINAL, Chunk
from tablesync.store.jobs import Counters, finish_job, get_job
from tablesync.store.locks import OWNER
from tablesync.store.mappings import StoredMapping, get_mapping
from tablesync.sync import run as engine
from tablesync.sync.chunked import RangePlan
from tablesync.worker import metrics

log = logging.getLogger("tablesync.worker")
Send = Callable[[int], None]  # sends one chunk message for a run (its job id)


def start_run(store: sa.Engine, job: sa.Row[Any], stored: StoredMapping, plan: RangePlan,
              fence: Callable[[sa.Connection], None], send: Send) -> None:
    """Store the run's ranges (fenced by the planning job's epoch) and send its first messages,
    one fewer than may run at once: the planning worker goes on with a streak of ranges itself
    (`run_chunks`), without waiting for a queue to hand it a message (an idle Redis queue is
    polled once a second). A message the broker does not take is not lost work: the reaper
    sends one for a quiet run."""
    apps = {stored.spec.side(side).app: stored.apps[stored.spec.side(side).app].max_connections
            for side in ("local", "integration")}
    with store.begin() as conn:
        fence(conn)
        chunk_rows.create_run(conn, job.id, job.mapping, plan.ranges, apps, plan.state)
    for _ in range(min(int(plan.state["max_parallel"]), len(plan.ranges)) - 1):  # the planning worker works one streak
        try:
            send(job.id)
        except BrokerUnavailable as exc:
            log.warning("job %s: a chunk message was not sent (%s); the scheduler sends it again", job.id, exc)
            break
    log.info("job %s (%s) runs in %d chunks of about %d rows, %s at once", job.id, job.mapping, len(plan.ranges),
             plan.ranges[0].estimate, plan.state["max_parallel"])


@dataclass
class Lease:
    """A chunk's lease, renewed from a thread of its own; once another worker took the chunk over,
    the next `beat` (between batches) raises Fenced, and `fence` refuses the next store write."""

    store: sa.Engine
    chunk: Chunk
    seconds: float
    fenced: bool = False
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"lease-{self.chunk.id}", daemon=True)
        self._thread.start()

    def beat(self) -> None:
        if self.fenced:
            raise Fenced(f"{self.chunk.label} was taken over: this worker stops")

    def fence(self, conn: sa.Connection) -> None:
        try:
            chunk_rows.fence(conn, self.chunk.id, self.chunk.epoch)
        except Fenced:
            self.fenced = True
            raise

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                with self.store.begin() as conn:
                    if not chunk_rows.renew(conn, self.chunk.id, self.chunk.epoch, self.seconds):
                        self.fenced = True
                        return
            except Exception:  # a missed renewal is retried; the lease outlasts two of them
                log.warning("the lease of %s was not renewed", self.chunk.label, exc_info=True)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


STREAK_SECONDS = 10.0  # how long one message goes on claiming ranges (see `run_chunks`)


@dataclass
class Working:
    """A range this worker claimed and handed to its pipeline."""

    chunk: Chunk
    lease: Lease
    started: float
    run: engine.RangeRun | None = None
    error: BaseException | None = None  # a failure before its batches reached the pipeline
    released: list[bool] = field(default_factory=list)


def run_chunks(store: sa.Engine, settings: Settings, job_id: int, retries: int, send: Send) -> str:
    """One chunk message: claim ranges of run `job_id` one after another for `STREAK_SECONDS`,
    through one pipeline, so that the next range is read while the last one's writes drain (one
    range per message cost a fifth of the throughput in pipeline fill and drain); then end each,
    and run the finalisation if one of them released it. A worker thread is thus free again
    within seconds: an urgent job waits for that, never for the whole run. Returns what happened
    ("none": nothing to claim, "done", "failed", "fenced")."""
    working: list[Working] = []
    final: Chunk | None = None
    deadline = time.monotonic() + STREAK_SECONDS
    away: sa.exc.DBAPIError | None = None
    with engine.chunk_pipeline() as pipe:
        while True:
            try:
                with store.begin() as conn:
                    chunk = chunk_rows.claim(conn, job_id, OWNER, settings.heartbeat_timeout_seconds)
            except sa.exc.DBAPIError as exc:  # the ranges already claimed are ended first
                away = exc
                break
            if chunk is None:
                break
            if chunk.number == FINAL:
                final = chunk
                break
            working.append(_start(store, settings, chunk, pipe))
            if working[-1].error is not None or time.monotonic() > deadline:
                break
    outcomes: list[str] = []
    retry: RetryLater | None = None
    for w in working:
        try:
            outcomes.append(_end(store, settings, w))
        except RetryLater as exc:
            retry = retry or exc
    if final is None and "released" in outcomes:
        with store.begin() as conn:
            final = chunk_rows.claim(conn, job_id, OWNER, settings.heartbeat_timeout_seconds)
    if final is not None:
        outcomes.append(_finalise(store, settings, final))
    if retry is not None:
        raise retry
    if away is not None:
        if not is_connection_error(away):
            raise away
        raise RetryLater(f"job {job_id}: the store is unavailable to claim a chunk: "
                         f"{(str(away.orig).strip().splitlines() or [type(away.orig).__name__])[0]}")
    if outcomes and all(o in ("done", "released") for o in outcomes) and final is None:
        try:
            with store.connect() as conn:
                left = chunk_rows.progress(conn, job_id)
            if left is not None and left.done + left.running + left.failed < left.total:
                send(job_id)  # the run's next ranges, in a message of their own (see the docstring)
        except BrokerUnavailable as exc:
            log.warning("job %s: the next chunk message was not sent (%s); the scheduler sends it again", job_id, exc)
    return "none" if not outcomes else "done" if outcomes[-1] == "released" else outcomes[-1]


def _start(store: sa.Engine, settings: Settings, chunk: Chunk, pipe: Any) -> Working:
    """Claimed: start its lease, read and decide its rows, hand its writes to `pipe`."""
    w = Working(chunk, Lease(store, chunk, settings.heartbeat_timeout_seconds), time.monotonic())

    def done(conn: sa.Connection) -> None:
        w.released.append(chunk_rows.finish(conn, chunk))

    try:
        stored = _mapping(store, chunk)
        w.run = engine.sync_chunk(store, settings, stored, chunk.job_id, chunk.id, chunk.low, chunk.high, chunk.state,
                                  chunk.attempts == 1, _progress(chunk), done, pipe, beat=w.lease.beat, fence=w.lease.fence)
        w.error = w.run.error
    except Exception as exc:  # opening the tables, say: _end handles it as any failure of the range
        w.error = exc
    return w


def _end(store: sa.Engine, settings: Settings, w: Working) -> str:
    """After the pipeline drained: the range's done transition (if its last batch did not carry
    it), or its failure handled (`_failed`)."""
    try:
        if w.error is not None:
            raise w.error
        assert w.run is not None
        counters = engine.end_chunk(w.run)
        log.info("%s done in %.2fs: %s", w.chunk.label, time.monotonic() - w.started,
                 " ".join(f"{k}={v}" for k, v in counters.as_dict().items() if v) or "no rows")
        return "released" if any(w.released) else "done"
    except Exception as exc:
        return _failed(store, settings, w.chunk, exc)
    finally:
        w.lease.stop()


def _finalise(store: sa.Engine, settings: Settings, chunk: Chunk) -> str:
    lease = Lease(store, chunk, settings.heartbeat_timeout_seconds)
    started = time.monotonic()
    try:
        engine.finish_chunks(store, settings, _mapping(store, chunk), chunk.job_id, chunk.id, chunk.state, _progress(chunk),
                             beat=lease.beat, fence=lease.fence)
        return _end_run(store, chunk, lease, started)
    except Exception as exc:
        return _failed(store, settings, chunk, exc)
    finally:
        lease.stop()


def _progress(chunk: Chunk) -> Callable[[sa.Connection, Counters], None]:
    """What each recorded batch of the chunk adds to its row, in the batch's transaction."""
    return lambda conn, delta: chunk_rows.add_progress(conn, chunk.id, delta)


def _mapping(store: sa.Engine, chunk: Chunk) -> StoredMapping:
    with store.connect() as conn:
        stored = get_mapping(conn, chunk.mapping)
    if stored is None:
        raise JobRefused(f"mapping {chunk.mapping} is no longer configured")
    return stored


def _failed(store: sa.Engine, settings: Settings, chunk: Chunk, exc: BaseException) -> str:
    """A chunk that failed: taken over (nothing to do), away (given back, and the message retried
    with backoff: raises RetryLater), or for good (the run fails)."""
    if isinstance(exc, Fenced):
        log.warning("%s", exc)
        return "fenced"
    if isinstance(exc, (AppUnavailable, StoreUnavailable, RetryLater, sa.exc.DBAPIError)):
        if isinstance(exc, sa.exc.DBAPIError) and not is_connection_error(exc):
            return _fail_run(store, chunk, f"internal error: {type(exc).__name__}: {exc}")
        if chunk.attempts > settings.max_retries:
            return _fail_run(store, chunk, f"{exc} (after {chunk.attempts} attempts)")
        try:
            with store.begin() as conn:
                chunk_rows.give_back(conn, chunk, str(exc))
        except sa.exc.DBAPIError:
            pass  # the store is away: the lease expires, and the reaper gives the chunk back
        log.warning("%s: %s; it is retried with backoff", chunk.label, exc)
        raise RetryLater(f"{chunk.label}: {exc}") from exc
    if not isinstance(exc, TerminalError):  # a terminal error (an app refusing the job) or an internal one fails the run
        log.error("%s failed with an internal error", chunk.label, exc_info=exc)
    message = str(exc) if isinstance(exc, TerminalError) else f"internal error: {type(exc).__name__}: {exc}"
    return _fail_run(store, chunk, message)


def _end_run(store: sa.Engine, chunk: Chunk, lease: Lease, started: float) -> str:
    """The finalisation is done: it and the job end in one transaction."""
    with store.begin() as conn:
        lease.fence(conn)
        chunk_rows.finish(conn, chunk)
        job = get_job(conn, chunk.job_id)
        assert job is not None
        message = (f"{job.failed} record(s) failed; see the job's errors" if job.failed
                   else f"ran in {chunk.total} chunks")
        finish_job(conn, job.id, "succeeded", message, epoch=job.epoch)
    seconds = _job_seconds(store, job.id)
    metrics.job_ended(job.mapping, job.kind, "succeeded", seconds)
    log.info("job %s succeeded in %.2fs: mapping=%s kind=%s (%s; finalised in %.2fs)", job.id, seconds or 0.0, job.mapping,
             job.kind, message, time.monotonic() - started)
    return "done"


def _job_seconds(store: sa.Engine, job_id: int) -> float | None:
    with store.connect() as conn:
        job = get_job(conn, job_id)
    if job is None or job.started_at is None or job.finished_at is None:
        return None
    return (job.finished_at - job.started_at).total_seconds()


def _fail_run(store: sa.Engine, chunk: Chunk, error: str) -> str:
    """One chunk failed for good: the run and its job fail, naming the chunk."""
    message = f"{chunk.label} failed: {error}"[:2000]
    with store.begin() as conn:
        if not chunk_rows.fail_run(conn, chunk, error):
            return "fenced"
        job = get_job(conn, chunk.job_id)
        assert job is not None
        finish_job(conn, job.id, "failed", message, epoch=job.epoch)
    metrics.job_ended(job.mapping, job.kind, "failed", _job_seconds(store, job.id))
    log.warning("job %s failed: %s", job.id, message)
    return "failed"
