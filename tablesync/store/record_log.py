"""A record's synchronization log: every job that touched it, and what operators did to it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tablesync.store.schema import couplings, jobs, record_events


def record_log(conn: sa.Connection, mapping: str, key: str, side: str = "local") -> list[sa.Row[Any]]:
    """Events of the record with this key on `side`, oldest first, with their job's kind, status and
    operator. Events are found by key and by the record's couplings (past and present), so events
    written under the other side's key (a failure before the record was coupled) are included.

    A record created by a bulk insert has no `inserted` event row: its coupling says which job
    inserted it and when (`couplings.inserted_by_job`), and that entry is made up from there."""
    key_col = record_events.c[f"{side}_key"]
    coupled = sa.select(couplings.c.id).where(couplings.c.mapping == mapping, couplings.c[f"{side}_key"] == key)
    events = (
        sa.select(record_events.c.job_id, jobs.c.kind, record_events.c.direction, jobs.c.status, record_events.c.outcome,
                  record_events.c.message, jobs.c.operator, record_events.c.at, record_events.c.changes,
                  record_events.c.local_key, record_events.c.integration_key, record_events.c.id.label("seq"))
        .select_from(record_events.join(jobs, jobs.c.id == record_events.c.job_id))
        .where(record_events.c.mapping == mapping, sa.or_(key_col == key, record_events.c.coupling_id.in_(coupled)))
    )
    inserts = (
        sa.select(couplings.c.inserted_by_job, jobs.c.kind,
                  sa.case((couplings.c.origin == "integration", "from_integration"), else_="to_integration"),
                  jobs.c.status, sa.literal("inserted"),
                  sa.null(), jobs.c.operator, couplings.c.created_at, sa.null(),
                  couplings.c.local_key, couplings.c.integration_key, sa.literal(0))
        .select_from(couplings.join(jobs, jobs.c.id == couplings.c.inserted_by_job))
        .where(couplings.c.mapping == mapping, couplings.c[f"{side}_key"] == key)
    )
    union = sa.union_all(events, inserts).subquery()
    return conn.execute(sa.select(*[c for c in union.c if c.name != "seq"]).order_by(union.c.at, union.c.seq)).all()
