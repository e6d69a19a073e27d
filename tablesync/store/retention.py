"""Retention: old jobs, errors and record events go; what an open error still needs stays.

The latest error of every skipped coupling is what the coupled data synchronization errors list
shows, so that error, its job (and the job's errors and events) are kept however old. Active jobs
are never removed. Rows go in chunks, so a first cleanup of a large store does not hold long locks.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from tablesync.db.engine import utcnow
from tablesync.store.jobs import FINISHED
from tablesync.store.schema import couplings, job_errors, jobs, record_events, schedule_ticks

CHUNK = 10_000


def cleanup(store: sa.Engine, older_than: timedelta, now: datetime | None = None) -> dict[str, int]:
    """Delete what is older than `older_than`; returns how many rows of each kind went."""
    cutoff = (now or utcnow()) - older_than
    open_errors = sa.select(couplings.c.last_error_id).where(couplings.c.skipped.is_(True), couplings.c.last_error_id.is_not(None))
    kept_jobs = sa.select(job_errors.c.job_id).where(job_errors.c.id.in_(open_errors))
    removed = {"record_events": 0, "job_errors": 0, "jobs": 0, "schedule_ticks": 0}
    targets = (
        ("record_events", record_events, record_events.c.id,
         sa.and_(record_events.c.at < cutoff, record_events.c.job_id.not_in(kept_jobs))),
        ("job_errors", job_errors, job_errors.c.id,
         sa.and_(job_errors.c.created_at < cutoff, job_errors.c.job_id.not_in(kept_jobs))),
        ("jobs", jobs, jobs.c.id,
         sa.and_(sa.func.coalesce(jobs.c.finished_at, jobs.c.enqueued_at) < cutoff, jobs.c.status.in_(FINISHED),
                 jobs.c.id.not_in(kept_jobs))),
        ("schedule_ticks", schedule_ticks, schedule_ticks.c.id,
         sa.and_(schedule_ticks.c.created_at < cutoff, schedule_ticks.c.sent_at.is_not(None))),
    )
    for name, table, id_col, condition in targets:
        while True:
            with store.begin() as conn:
                ids = list(conn.execute(sa.select(id_col).where(condition).limit(CHUNK)).scalars())
                if ids:
                    if table is jobs:  # events keep no foreign key (see store.schema): their job's go with it
                        conn.execute(sa.delete(record_events).where(record_events.c.job_id.in_(ids)))
                    conn.execute(sa.delete(table).where(id_col.in_(ids)))
            removed[name] += len(ids)
            if len(ids) < CHUNK:
                break
    return removed
