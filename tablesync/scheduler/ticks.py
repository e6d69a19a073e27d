"""Enqueueing due ticks exactly once across scheduler replicas.

Each replica computes the same tick instant for a mapping (schedules are pure functions of the
clock); inserting the (mapping, tick) row is the claim, and the unique key lets only one replica win.
The tick row and its job row commit together, then the message is sent and the tick and job marked
sent; a job written but never sent (the replica died, or the broker was down) waits in the store and
is sent by the next pass of any replica (`worker.enqueue.send_waiting`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

import sqlalchemy as sa

from tablesync.config.model import MappingSpec, dependency_order
from tablesync.config.schedule import Schedule
from tablesync.db.engine import utcnow
from tablesync.scheduler.metrics import ENQUEUED
from tablesync.store.jobs import mark_sent
from tablesync.store.mappings import active_mappings, active_versions
from tablesync.store.ticks import claim_ticks, mark_ticks_sent

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
    claimed = claim_ticks(store, due, now)
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
                mark_ticks_sent(conn, sent)
                mark_sent(conn, sent)
    return sent
