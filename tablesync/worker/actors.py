"""Dramatiq actors. Messages carry only a job id: everything else is read from the store."""

from __future__ import annotations

import sys

import dramatiq
from dramatiq.middleware import CurrentMessage

from tablesync.config.settings import get_settings
from tablesync.errors import RetryLater
from tablesync.worker.broker import installed_broker
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


@dramatiq.actor(queue_name=_settings.queue, max_retries=_settings.max_retries, min_backoff=5_000,
                max_backoff=300_000, retry_when=_retry_when, time_limit=24 * 3600 * 1000)
def sync_job(job_id: int) -> None:
    """Run job `job_id`: a sync, or an operator's action (the job row says which)."""
    message = CurrentMessage.get_current_message()
    retries = int(message.options.get("retries", 0)) if message is not None else 0
    try:
        delivery = run_job(store_engine(), _settings, int(job_id), retries=retries)
    except RetryLater as exc:
        # the runner logged why, in one line: Dramatiq's Retry is retried without another (a traceback)
        raise dramatiq.Retry(str(exc)) from exc
    if delivery is Delivery.DEFERRED:
        # A parent mapping has not synced yet: look again shortly. The job stays queued meanwhile.
        sync_job.send_with_options(args=(int(job_id),), delay=DEFER_MS)


DEFER_MS = 1000
