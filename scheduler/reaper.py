"""Jobs whose worker stopped heart-beating are marked `abandoned`, and their work is enqueued again.

The update is conditional on the job still being stale, so several scheduler replicas reaping at
once abandon (and replace) each job once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from store.db import utcnow
from store.jobs import create_job, stale_running
from store.schema import jobs

log = logging.getLogger("tablesync.scheduler")


def reap(store: sa.Engine, send: Callable[[int], None], timeout_seconds: float) -> list[int]:
    """Returns the ids of the replacement jobs."""
    with store.connect() as conn:
        stale = stale_running(conn, timeout_seconds)
    replacements: list[int] = []
    for job in stale:
        cutoff = utcnow() - timedelta(seconds=timeout_seconds)
        with store.begin() as conn:
            won = conn.execute(sa.update(jobs).where(
                jobs.c.id == job.id, jobs.c.status == "running",
                sa.func.coalesce(jobs.c.heartbeat_at, jobs.c.started_at) < cutoff,
            ).values(status="abandoned", finished_at=utcnow(),
                     message=f"abandoned: worker {job.worker} sent no heartbeat for {timeout_seconds:.0f}s")).rowcount
            if not won:
                continue
            new_id = create_job(conn, job.mapping, job.kind, operator=job.operator,
                                params={**(job.params or {}), "redo_of": job.id})
        log.warning("job %s abandoned (worker %s silent); its work is redone as job %s", job.id, job.worker, new_id)
        send(new_id)
        replacements.append(new_id)
    return replacements
