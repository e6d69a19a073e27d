"""Creating a job row and handing its id to the broker, without importing the actors.

The job row is committed before the message is sent, so a worker never receives an id it cannot
find. `jobs.sent_at` records that a broker took the message. A job whose message no broker took
(its process has no broker, or the broker was down) waits in the store with `sent_at` NULL: a
scheduler or `tablesync run` on the store sends it (`send_waiting`), and `--wait` says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import dramatiq
import pika.exceptions
import redis.exceptions
import sqlalchemy as sa

from tablesync.config.settings import Settings
from tablesync.db.engine import redact_url, utcnow
from tablesync.errors import BrokerUnavailable
from tablesync.store.jobs import (
    claim_waiting,
    create_job,
    fail_unsent,
    get_job,
    is_urgent,
    mark_sent,
    unclaim,
    waiting_jobs,
)

SYNC_ACTOR = "sync_job"
URGENT_ACTOR = "urgent_job"  # operator actions and single-record syncs: a queue and a priority of their own
CHUNK_ACTOR = "sync_chunk"  # one chunk of a chunked run


def queues(settings: Settings) -> dict[str, str]:
    """Each actor's queue. Actions have their own, so a backlog of chunk messages never sits in
    front of them in the broker; in a worker, Dramatiq runs what it fetched by actor priority
    (urgent 0, syncs 50, chunks 100)."""
    return {SYNC_ACTOR: settings.queue, URGENT_ACTOR: f"{settings.queue}.urgent", CHUNK_ACTOR: f"{settings.queue}.chunks"}
# what a broker that is down or unreachable raises: Redis' and pika's own errors, Dramatiq's, sockets'
_OUTAGES = (OSError, dramatiq.errors.BrokerError, redis.exceptions.RedisError, pika.exceptions.AMQPError)
log = logging.getLogger("tablesync.enqueue")


def broker_label(settings: Settings) -> str:
    """Which broker, as logs, errors and the processes table show it: never with a password."""
    if settings.broker_url is None:
        return "in-process"
    label = redact_url(settings.broker_url)
    return f"{label} (namespace {settings.broker_namespace})" if label.startswith("redis") else label


def send_job(broker: dramatiq.Broker, settings: Settings, job_id: int, actor: str = SYNC_ACTOR) -> None:
    """Hand job `job_id` to the broker (to `actor`'s queue); a broker that cannot take it raises
    `BrokerUnavailable`."""
    try:
        broker.enqueue(dramatiq.Message(queue_name=queues(settings)[actor], actor_name=actor, args=(job_id,), kwargs={},
                                        options={}))
    except _OUTAGES as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BrokerUnavailable(f"the broker {broker_label(settings)} did not take job {job_id}: {redact_url(reason)}") from None


def send_stored(store: sa.Engine, broker: dramatiq.Broker, settings: Settings, job_id: int) -> None:
    """Send a job to the actor its kind calls for (`is_urgent`)."""
    with store.connect() as conn:
        job = get_job(conn, job_id)
    urgent = job is not None and is_urgent(job.kind, job.params)
    send_job(broker, settings, job_id, URGENT_ACTOR if urgent else SYNC_ACTOR)


def dispatch(store: sa.Engine, broker: dramatiq.Broker | None, settings: Settings, job_id: int) -> bool:
    """Send a committed job. Without a broker it waits in the store (False). A broker that does
    not take it fails the job at once, saying why: left queued, it would hold back every later
    tick of its mapping and its dependants until the lost-message resend."""
    if broker is None:
        return False
    try:
        send_stored(store, broker, settings, job_id)
    except BrokerUnavailable as exc:
        with store.begin() as conn:
            fail_unsent(conn, job_id, f"not sent, nothing ran: {exc}")
        raise
    with store.begin() as conn:
        mark_sent(conn, [job_id])
    return True


def enqueue_sync(
    store: sa.Engine, broker: dramatiq.Broker | None, settings: Settings, mapping: str, *, full: bool = False,
    operator: str | None = None, params: dict[str, Any] | None = None, where: str | None = None,
) -> int:
    with store.begin() as conn:
        job_id = create_job(conn, mapping, "full_sync" if full else "sync", operator=operator,
                            params={**(params or {}), "full": full, **({"where": where} if where is not None else {})})
    dispatch(store, broker, settings, job_id)
    return job_id


def send_waiting(store: sa.Engine, send: Callable[[int], None], grace_seconds: float = 2.0) -> list[int]:
    """Send the jobs waiting in the store: asked for without a broker, or written by a scheduler
    replica that died (or lost its broker) before sending them. Each is claimed by a conditional
    update, so replicas send it once; a send that fails puts it back for the next pass."""
    with store.connect() as conn:
        ids = waiting_jobs(conn, utcnow() - timedelta(seconds=grace_seconds))
    sent: list[int] = []
    for job_id in ids:
        with store.begin() as conn:
            if not claim_waiting(conn, job_id):
                continue
        try:
            send(job_id)
        except BrokerUnavailable:
            with store.begin() as conn:
                unclaim(conn, job_id)
            raise
        log.info("job %s waited in the store; sent to the broker", job_id)
        sent.append(job_id)
    return sent

