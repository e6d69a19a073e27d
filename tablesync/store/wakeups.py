"""Wake-ups: a change seen in a mapping's source turns into one job, soon, whatever the burst.

`tablesync listen` records a wake-up per mapping before it acknowledges the change log, so a change
it has let go of is always either in a job or in this table. The first change of a burst sets when
the job is due (debounce); later changes of the burst only count. A due wake-up becomes a job unless
the mapping already has one: a queued job has not read yet and will see the change (the wake-up is
dropped); a running one may have read before the change, so the wake-up waits and becomes exactly
one follow-up job when it ends. Correctness never depends on wake-ups: a woken job selects by
watermark like a scheduled one, so a lost or doubled wake-up costs a delay or an empty run.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tablesync.store.jobs import ACTIVE, create_jobs
from tablesync.store.mappings import known_mappings
from tablesync.store.pauses import paused
from tablesync.store.schema import jobs, wakeups

RUNNING_RECHECK = timedelta(seconds=0.2)  # how soon a wake-up that waits for a running job is looked at again


def request_wakes(conn: sa.Connection, mappings: Iterable[str], now: datetime, debounce_seconds: float) -> None:
    """Wake `mappings`: due `debounce_seconds` after the first change of their burst."""
    rows = [{"mapping": m, "first_change_at": now, "due_at": now + timedelta(seconds=debounce_seconds), "changes": 1}
            for m in sorted(set(mappings))]
    if not rows:
        return
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(wakeups).values(rows)
    pending = wakeups.c.due_at.is_not(None)
    conn.execute(statement.on_conflict_do_update(index_elements=["mapping"], set_={
        "changes": sa.case((pending, wakeups.c.changes + 1), else_=1),
        "due_at": sa.case((pending, wakeups.c.due_at), else_=statement.excluded.due_at),
        "first_change_at": sa.case((pending, wakeups.c.first_change_at), else_=statement.excluded.first_change_at)}))


def next_due(conn: sa.Connection) -> datetime | None:
    """When the earliest wake-up is due (None: there is none)."""
    return conn.execute(sa.select(sa.func.min(wakeups.c.due_at))).scalar()


def claim_due_wakes(store: sa.Engine, now: datetime, min_interval_seconds: float = 0.0) -> dict[str, int]:
    """Turn the due wake-ups into jobs; returns {mapping: new job id}. A mapping whose last woken
    job was enqueued less than `min_interval_seconds` ago waits out the rest: under a steady
    stream of changes a mapping then runs at most that often, not once per job length. Run by any
    number of listeners at once: the rows are claimed under lock (SKIP LOCKED on PostgreSQL)."""
    with store.begin() as conn:
        query = sa.select(wakeups.c.mapping, wakeups.c.last_job_at).where(wakeups.c.due_at <= now).order_by(wakeups.c.mapping)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        due = dict(conn.execute(query).all())
        if not due:
            return {}
        held = paused(conn, list(due))
        active = known_mappings(conn)
        held.update({m: None for m in due if not active.get(m)})  # deactivated since: nothing to run
        status: dict[str, str] = {}
        for r in conn.execute(sa.select(jobs.c.mapping, jobs.c.status).where(jobs.c.mapping.in_(list(due)),
                                                                             jobs.c.status.in_(ACTIVE))):
            if status.get(r.mapping) != "running":  # a running job outweighs a queued one
                status[r.mapping] = r.status
        gap = timedelta(seconds=min_interval_seconds)
        soon = {m: last + gap for m, last in due.items() if last is not None and last + gap > now}
        # paused: its runs after the resume read the change; queued: that job has not read yet
        dropped = [m for m in due if m in held or status.get(m) == "queued"]
        todo = [m for m in due if m not in held and m not in status and m not in soon]
        later = {m: when for m, when in soon.items() if m not in dropped}
        # a running job's follow-up is looked at again shortly, not at every pass of the dispatcher
        later.update({m: now + RUNNING_RECHECK for m in due if status.get(m) == "running" and m not in held})
        for mapping, when in later.items():
            conn.execute(sa.update(wakeups).where(wakeups.c.mapping == mapping).values(due_at=when))
        if dropped:
            conn.execute(sa.update(wakeups).where(wakeups.c.mapping.in_(dropped)).values(due_at=None, first_change_at=None))
        if not todo:
            return {}
        conn.execute(sa.update(wakeups).where(wakeups.c.mapping.in_(todo)).values(
            due_at=None, first_change_at=None, last_job_at=now))
        ids = create_jobs(conn, [(m, {"wake": True}) for m in todo], "sync")
    return dict(zip(todo, ids))
