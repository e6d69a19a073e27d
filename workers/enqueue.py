"""Creating a job row and handing its id to the broker, without importing the actors.

The job row is committed before the message is sent, so a worker never receives an id it cannot
find; a crash in between leaves a queued job that `tablesync sync` or the scheduler's tick recovery
sends again.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import sqlalchemy as sa

from store.jobs import create_job
from store.settings import Settings

SYNC_ACTOR = "sync_job"


def send_job(broker: dramatiq.Broker, settings: Settings, job_id: int, actor: str = SYNC_ACTOR) -> None:
    broker.enqueue(dramatiq.Message(queue_name=settings.queue, actor_name=actor, args=(job_id,), kwargs={}, options={}))


def enqueue_sync(
    store: sa.Engine, broker: dramatiq.Broker, settings: Settings, mapping: str, *, full: bool = False,
    operator: str | None = None, params: dict[str, Any] | None = None,
) -> int:
    with store.begin() as conn:
        job_id = create_job(conn, mapping, "full_sync" if full else "sync", operator=operator,
                            params={**(params or {}), "full": full})
    send_job(broker, settings, job_id)
    return job_id
