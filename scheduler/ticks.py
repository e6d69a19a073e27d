"""Enqueueing due ticks exactly once across scheduler replicas.

Each replica computes the same tick instant for a mapping (schedules are pure functions of the
clock); inserting the (mapping, tick) row is the claim, and the unique key lets only one replica win.
The tick row and its job row commit together, then the message is sent and the tick marked sent; a
tick written but never sent (the replica died) is sent again by `resend_unsent`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa

from store.config_model import dependency_order
from store.db import utcnow
from store.jobs import active_job, create_job
from store.mappings import active_mappings
from store.schema import schedule_ticks

log = logging.getLogger("tablesync.scheduler")
Send = Callable[[int], None]


class TickCache:
    """The last tick this replica saw per mapping, so an idle poll costs no store write."""

    def __init__(self) -> None:
        self.seen: dict[str, datetime] = {}


def enqueue_due(store: sa.Engine, send: Send, now: datetime | None = None, cache: TickCache | None = None) -> list[int]:
    """Claim and enqueue every mapping's latest due tick; returns the job ids this replica sent."""
    now = now or utcnow()
    cache = cache or TickCache()
    with store.connect() as conn:
        stored = active_mappings(conn)
    sent: list[int] = []
    for spec in dependency_order([s.spec for s in stored]):
        tick = spec.parsed_schedule().latest_tick(now)
        if cache.seen.get(spec.name) == tick:
            continue
        job_id = _claim(store, spec.name, tick, now)
        cache.seen[spec.name] = tick
        if job_id is None:
            continue
        send(job_id)
        with store.begin() as conn:
            conn.execute(sa.update(schedule_ticks).where(schedule_ticks.c.job_id == job_id).values(sent_at=utcnow()))
        sent.append(job_id)
    return sent


def _claim(store: sa.Engine, mapping: str, tick: datetime, now: datetime) -> int | None:
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
            conn.execute(sa.update(schedule_ticks).where(schedule_ticks.c.id == tick_id).values(
                note=f"skipped: job {busy.id} is still {busy.status}", sent_at=now))
            log.info("tick %s of %s skipped: job %s still %s", tick.isoformat(), mapping, busy.id, busy.status)
            return None
        job_id = create_job(conn, mapping, "sync", params={"tick": tick.isoformat()})
        conn.execute(sa.update(schedule_ticks).where(schedule_ticks.c.id == tick_id).values(job_id=job_id))
        return job_id


def resend_unsent(store: sa.Engine, send: Send, grace_seconds: float = 10.0) -> list[int]:
    """Send ticks whose replica wrote the job but died before handing it to the broker."""
    cutoff = utcnow() - timedelta(seconds=grace_seconds)
    with store.connect() as conn:
        ids = list(conn.execute(sa.select(schedule_ticks.c.job_id).where(
            schedule_ticks.c.sent_at.is_(None), schedule_ticks.c.job_id.is_not(None), schedule_ticks.c.created_at < cutoff,
        )).scalars())
    for job_id in ids:
        with store.begin() as conn:
            claimed = conn.execute(sa.update(schedule_ticks).where(
                schedule_ticks.c.job_id == job_id, schedule_ticks.c.sent_at.is_(None)).values(sent_at=utcnow())).rowcount
        if claimed:
            log.warning("job %s was written but never sent; sending it now", job_id)
            send(job_id)
    return ids
