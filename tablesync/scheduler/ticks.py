"""Enqueueing due ticks exactly once across scheduler replicas.

Each replica computes the same tick instant for a mapping (schedules are pure functions of the
clock); inserting the (mapping, tick) row is the claim, and the unique key lets only one replica win.
The tick row and its job row commit together, then the message is sent and the tick and job marked
sent; a job written but never sent (the replica died, or the broker was down) waits in the store and
is sent by the next pass of any replica (`workers.enqueue.send_waiting`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from sqlalchemy.dialects import postgresql, sqlite

from tablesync.scheduler.metrics import ENQUEUED
from tablesync.config.model import MappingSpec, dependency_order
from tablesync.db.engine import utcnow
from tablesync.store.jobs import ACTIVE, active_job, create_job, create_jobs
from tablesync.store.mappings import active_mappings, active_versions
from tablesync.config.schedule import Schedule
from tablesync.store.schema import jobs, schedule_ticks
from tablesync.worker.enqueue import mark_sent

log = logging.getLogger("tablesync.scheduler")
Send = Callable[[int], None]


class TickCache:
    """What this replica knows between polls: the last tick it saw per mapping, so an idle poll
    costs no store write, and the active mappings in dependency order with their parsed schedules,
    read and validated again only when a mapping's version changes (1,000 definitions per poll
    cost the scheduler most of its CPU)."""

    def __init__(self) -> None:
        self.seen: dict[str, datetime] = {}
        self._versions: dict[str, int] | None = None
        self._mappings: list[tuple[MappingSpec, Schedule]] = []

    def mappings(self, conn: sa.Connection) -> list[tuple[MappingSpec, Schedule]]:
        versions = active_versions(conn)
        if versions != self._versions:
            stored = active_mappings(conn)
            self._mappings = [(spec, spec.parsed_schedule()) for spec in dependency_order([s.spec for s in stored])]
            self._versions = {s.spec.name: s.version for s in stored}
        return self._mappings


def enqueue_due(store: sa.Engine, send: Send, now: datetime | None = None, cache: TickCache | None = None) -> list[int]:
    """Claim and enqueue every mapping's latest due tick; returns the job ids this replica sent."""
    now = now or utcnow()
    cache = cache or TickCache()
    with store.connect() as conn:
        due = [(spec.name, tick) for spec, schedule in cache.mappings(conn)
               if cache.seen.get(spec.name) != (tick := schedule.latest_tick(now))]
    if not due:
        return []
    claimed = _claim_all(store, due, now) if store.dialect.name in ("postgresql", "sqlite") else {
        name: job_id for name, tick in due if (job_id := _claim(store, name, tick, now)) is not None}
    sent: list[int] = []
    try:
        for name, tick in due:  # in dependency order: a parent's job is enqueued before its children's
            cache.seen[name] = tick
            job_id = claimed.get(name)
            if job_id is not None:
                send(job_id)  # a broker that is down raises: the jobs not sent wait in the store (send_waiting)
                ENQUEUED.labels(name).inc()
                sent.append(job_id)
    finally:
        if sent:
            with store.begin() as conn:
                conn.execute(sa.update(schedule_ticks).where(schedule_ticks.c.job_id.in_(sent)).values(sent_at=utcnow()))
                mark_sent(conn, sent)
    return sent


def _claim_all(store: sa.Engine, due: list[tuple[str, datetime]], now: datetime) -> dict[str, int]:
    """Claim every due tick at once: one INSERT … ON CONFLICT DO NOTHING (the ticks another
    replica claimed come back missing), one query for busy mappings, one INSERT of the jobs."""
    insert = postgresql.insert if store.dialect.name == "postgresql" else sqlite.insert
    with store.begin() as conn:
        rows = conn.execute(insert(schedule_ticks).values([{"mapping": m, "tick_at": t, "created_at": now} for m, t in due])
                            .on_conflict_do_nothing(index_elements=["mapping", "tick_at"])
                            .returning(schedule_ticks.c.id, schedule_ticks.c.mapping, schedule_ticks.c.tick_at)).all()
        if not rows:
            return {}
        busy = {r.mapping: r for r in conn.execute(sa.select(jobs.c.mapping, jobs.c.id, jobs.c.status).where(
            jobs.c.mapping.in_([r.mapping for r in rows]), jobs.c.status.in_(ACTIVE)))}
        for r in rows:
            if r.mapping in busy:
                _skip_tick(conn, r.id, r.mapping, r.tick_at, busy[r.mapping], now)
        todo = [r for r in rows if r.mapping not in busy]
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
        busy = active_job(conn, mapping)
        if busy is not None:
            _skip_tick(conn, tick_id, mapping, tick, busy, now)
            return None
        job_id = create_job(conn, mapping, "sync", params={"tick": tick.isoformat()})
        conn.execute(sa.update(schedule_ticks).where(schedule_ticks.c.id == tick_id).values(job_id=job_id))
        return job_id


def _skip_tick(conn: sa.Connection, tick_id: int, mapping: str, tick: datetime, busy: Any, now: datetime) -> None:
    """A tick whose mapping still has a job queued or running: noted as skipped, never enqueued."""
    conn.execute(sa.update(schedule_ticks).where(schedule_ticks.c.id == tick_id).values(
        note=f"skipped: job {busy.id} is still {busy.status}", sent_at=now))
    log.info("tick %s of %s skipped: job %s still %s", tick.isoformat(), mapping, busy.id, busy.status)
