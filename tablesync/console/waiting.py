"""`--wait`: block until a job ends, and say why when nothing picks it up.

A job can sit queued for reasons the operator can fix: nothing sends it (it waits in the store and
no scheduler or `tablesync run` is up), no worker of this store listens on its queue and broker,
or it waits behind others. The processes table (store.processes) tells which, after a few
seconds, in one line on stderr, instead of a silent wait until the timeout.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import sqlalchemy as sa

from tablesync.config.settings import Settings
from tablesync.console import views
from tablesync.store.jobs import FINISHED, get_job
from tablesync.store.processes import RUNNERS, SENDERS, live, liveness_window
from tablesync.worker.enqueue import broker_label

FIRST_LOOK = 5.0  # seconds before a queued job is explained
STILL_QUEUED = 30.0  # seconds before a queued job with live workers is mentioned


def wait_for_job(engine: sa.Engine, settings: Settings, job_id: int, timeout: float) -> dict[str, Any] | None:
    """The finished job object, or None after `timeout` (having said why, if it was known)."""
    started = time.monotonic()
    said: set[str] = set()
    while True:
        obj = views.job_detail(engine, job_id)
        assert obj is not None
        if obj["status"] in FINISHED:
            return obj
        waited = time.monotonic() - started
        if waited > timeout:
            print(f"tablesync: job {job_id} still {obj['status']} after {timeout:.0f}s", file=sys.stderr)
            return None
        if obj["status"] == "queued" and waited >= FIRST_LOOK:
            with engine.connect() as conn:
                why = why_queued(conn, settings, job_id, waited)
            if why and why not in said:
                said.add(why)
                print(f"tablesync: {why}", file=sys.stderr, flush=True)
        time.sleep(0.2)


def senders_alive(conn: sa.Connection, settings: Settings) -> bool:
    """Whether a scheduler or `tablesync run` is up to send the jobs waiting in this store."""
    return bool(live(conn, SENDERS, liveness_window(settings.heartbeat_seconds)))


def why_queued(conn: sa.Connection, settings: Settings, job_id: int, waited: float) -> str | None:
    """Why job `job_id` is still queued, from the live processes of this store; None if it is
    simply about to run."""
    job = get_job(conn, job_id)
    if job is None or job.status != "queued":
        return None
    within = liveness_window(settings.heartbeat_seconds)
    if job.sent_at is None:
        if senders_alive(conn, settings):
            return None  # a scheduler or `tablesync run` sends it on its next pass
        return (f"job {job_id} waits in the store and nothing sends it: no scheduler and no `tablesync run` is running "
                "on this store. Start `tablesync run` here (all in one), or a scheduler and workers with a broker "
                "(TABLESYNC_BROKER_URL)")
    ours = broker_label(settings)
    runners = live(conn, RUNNERS, within)
    listening = [p for p in runners if p.queue == settings.queue and p.broker == ours]
    if listening:
        if waited < STILL_QUEUED:
            return None
        return (f"job {job_id} is still queued after {waited:.0f}s though {len(listening)} worker process(es) listen on "
                f"queue {settings.queue}: it waits behind other jobs, or for a depends_on mapping to sync first")
    hint = ("start `tablesync worker` with the same TABLESYNC_STORE_URL, TABLESYNC_BROKER_URL and TABLESYNC_QUEUE "
            "(a worker on another store takes the message and finds no such job)")
    if runners:
        seen = ", ".join(sorted({f"queue {p.queue} of {p.broker}" for p in runners}))
        return f"no worker of this store listens on queue {settings.queue} of {ours}; its workers listen on {seen}: {hint}"
    return f"no worker of this store is running (none reported in the last {within:.0f}s): {hint}"
