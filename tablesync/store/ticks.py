"""Schedule ticks: each due (mapping, tick) is one row, and its insertion is the claim, so that
exactly one scheduler replica enqueues it. A tick claimed while its mapping is paused, or still has a
job queued or running, is noted as skipped (with why) and enqueues nothing."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tablesync.db.engine import utcnow
from tablesync.store.jobs import ACTIVE, active_job, create_job, create_jobs
from tablesync.store.pauses import pause_note, paused
from tablesync.store.schema import jobs, schedule_ticks

log = logging.getLogger("tablesync.scheduler")


def claim_ticks(store: sa.Engine, due: Sequence[tuple[str, datetime]], now: datetime) -> dict[str, int]:
    """Claim these due (mapping, tick) pairs; returns {mapping: the new job's id} of those this
    replica won whose mapping is idle."""
    if store.dialect.name in ("postgresql", "sqlite"):
        return _claim_all(store, due, now)
    return {name: job_id for name, tick in due if (job_id := _claim(store, name, tick, now)) is not None}


def mark_ticks_sent(conn: sa.Connection, job_ids: Sequence[int]) -> None:
    conn.execute(sa.update(schedule_ticks).where(schedule_ticks.c.job_id.in_(list(job_ids))).values(sent_at=utcnow()))


def _claim_all(store: sa.Engine, due: Sequence[tuple[str, datetime]], now: datetime) -> dict[str, int]:
    """Claim every due tick at once: one INSERT … ON CONFLICT DO NOTHING (the ticks another
    replica claimed come back missing), one query for busy mappings, one INSERT of the jobs."""
    insert = postgresql.insert if store.dialect.name == "postgresql" else sqlite.insert
    with store.begin() as conn:
        rows = conn.execute(insert(schedule_ticks).values([{"mapping": m, "tick_at": t, "created_at": now} for m, t in due])
                            .on_conflict_do_nothing(index_elements=["mapping", "tick_at"])
                            .returning(schedule_ticks.c.id, schedule_ticks.c.mapping, schedule_ticks.c.tick_at)).all()
        if not rows:
            return {}
        held = paused(conn, [r.mapping for r in rows])
        busy = {r.mapping: r for r in conn.execute(sa.select(jobs.c.mapping, jobs.c.id, jobs.c.status, jobs.c.chunks).where(
            jobs.c.mapping.in_([r.mapping for r in rows]), jobs.c.status.in_(ACTIVE)))}
        for r in rows:
            if r.mapping in held:
                _skip_tick(conn, r.id, r.mapping, r.tick_at, pause_note(held[r.mapping]), now)
            elif r.mapping in busy:
                _skip_tick(conn, r.id, r.mapping, r.tick_at, _busy_note(busy[r.mapping]), now)
        todo = [r for r in rows if r.mapping not in busy and r.mapping not in held]
        if not todo:
            return {}
        ids = create_jobs(conn, [(r.mapping, {"tick": r.tick_at.isoformat()}) for r in todo], "sync")
        conn.execute(sa.update(schedule_ticks).where(schedule_ticks.c.id == sa.bindparam("_tick")).values(
            job_id=sa.bindparam("_job")), [{"_tick": r.id, "_job": j} for r, j in zip(todo, ids)])
    return {r.mapping: j for r, j in zip(todo, ids)}


def _claim(store: sa.Engine, mapping: str, tick: datetime, now: datetime) -> int | None:
    """One tick at a time, for stores without INSERT … ON CONFLICT … RETURNING."""
    with store.begin() as conn:
        try:
            with conn.begin_nested():
                tick_id = conn.execute(
                    sa.insert(schedule_ticks).values(mapping=mapping, tick_at=tick, created_at=now)
                    .returning(schedule_ticks.c.id)
                ).scalar_one()
        except sa.exc.IntegrityError:
            return None  # another replica claimed this tick
        held = paused(conn, [mapping]).get(mapping)
        busy = active_job(conn, mapping)
        if held is not None or busy is not None:
            _skip_tick(conn, tick_id, mapping, tick, pause_note(held) if held is not None else _busy_note(busy), now)
            return None
        job_id = create_job(conn, mapping, "sync", params={"tick": tick.isoformat()})
        conn.execute(sa.update(schedule_ticks).where(schedule_ticks.c.id == tick_id).values(job_id=job_id))
        return job_id


def _busy_note(busy: Any) -> str:
    if busy.chunks is not None:
        return f"a chunked run is in progress (job {busy.id}, {busy.chunks} chunks)"
    return f"job {busy.id} is still {busy.status}"


def _skip_tick(conn: sa.Connection, tick_id: int, mapping: str, tick: datetime, why: str, now: datetime) -> None:
    """A tick whose mapping is paused, or still has a job queued or running: noted as skipped,
    with why, never enqueued."""
    conn.execute(sa.update(schedule_ticks).where(schedule_ticks.c.id == tick_id).values(note=f"skipped: {why}", sent_at=now))
    log.info("tick %s of %s skipped: %s", tick.isoformat(), mapping, why)
