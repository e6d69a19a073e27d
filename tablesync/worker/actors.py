"""Dramatiq actors. Messages carry only a job id: everything else is read from the store."""

from __future__ import annotations

import sys
from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from tablesync.config.settings import get_settings
from tablesync.errors import BrokerUnavailable, RetryLater
from tablesync.worker.broker import installed_broker
from tablesync.worker.chunks import run_chunks
from tablesync.worker.enqueue import CHUNK_ACTOR, SYNC_ACTOR, URGENT_ACTOR, queues, send_job
from tablesync.worker.runner import Delivery, run_job
from tablesync.worker.store_engine import store_engine

if installed_broker() is None:
    raise RuntimeError("call tablesync.worker.broker.setup_broker() before importing tablesync.worker.actors")

_settings = get_settings()

# A job's write threads (sync.one_way.Pipeline) wait on the databases between short bursts of
# Python; at the default 5 ms switch interval each reply waits up to that long for the interpreter
# while the deciding thread computes. 1 ms measured 8 % faster on an initial sync, with no cost elsewhere.
sys.setswitchinterval(0.001)


def _retry_when(retries: int, exc: BaseException) -> bool:
    """Only transient failures are retried: an app's (the runner stops asking after max_retries)
    or the store's (asked until it is back, the backoff capped at max_backoff)."""
    return isinstance(exc, (RetryLater, dramatiq.Retry))


_QUEUES = queues(_settings)
_OPTIONS: dict[str, Any] = dict(max_retries=_settings.max_retries, min_backoff=5_000, max_backoff=300_000,
                                retry_when=_retry_when, time_limit=24 * 3600 * 1000)


def _retries() -> int:
    message = CurrentMessage.get_current_message()
    return int(message.options.get("retries", 0)) if message is not None else 0


def _send_chunk(job_id: int) -> None:
    send_job(installed_broker(), _settings, job_id, CHUNK_ACTOR)


def _job(job_id: int, again: dramatiq.Actor[[int], None]) -> None:
    try:
        delivery = run_job(store_engine(), _settings, int(job_id), retries=_retries(), send_chunk=_send_chunk)
    except RetryLater as exc:
        # the runner logged why, in one line: Dramatiq's Retry is retried without another (a traceback)
        raise dramatiq.Retry(str(exc)) from exc
    if delivery is Delivery.CHUNKED:  # planned: this worker works the run's first streak of ranges itself
        try:
            run_chunks(store_engine(), _settings, int(job_id), 0, _send_chunk)
        except RetryLater:  # logged; the streak is a chunk message's to retry, not this job's
            try:
                _send_chunk(int(job_id))
            except BrokerUnavailable:
                pass  # the scheduler sends a quiet run's message again
    if delivery is Delivery.DEFERRED:
        # A parent mapping has not synced yet: look again shortly. The job stays queued meanwhile.
        again.send_with_options(args=(int(job_id),), delay=DEFER_MS)


@dramatiq.actor(queue_name=_QUEUES[SYNC_ACTOR], priority=50, **_OPTIONS)
def sync_job(job_id: int) -> None:
    """Run job `job_id`: a sync of a mapping (the job row says which)."""
    _job(job_id, sync_job)


@dramatiq.actor(queue_name=_QUEUES[URGENT_ACTOR], priority=0, **_OPTIONS)
def urgent_job(job_id: int) -> None:
    """Run job `job_id`: an operator's action or a single-record sync, ahead of any sync or chunk."""
    _job(job_id, urgent_job)


@dramatiq.actor(queue_name=_QUEUES[CHUNK_ACTOR], priority=100, **_OPTIONS)
def sync_chunk(job_id: int) -> None:
    """Claim and sync one chunk of the chunked run of job `job_id` (`worker.chunks`)."""
    try:
        run_chunks(store_engine(), _settings, int(job_id), _retries(), _send_chunk)
    except RetryLater as exc:
        raise dramatiq.Retry(str(exc)) from exc


DEFER_MS = 1000
