"""Job errors and record events: the two things every sync path writes about a record (their SQL)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tablesync.db import pg_bulk
from tablesync.db.engine import utcnow
from tablesync.store.schema import job_errors, record_events


@dataclass(frozen=True)
class RecordRef:
    """One record of one job, as the journal names it."""

    job_id: int
    mapping: str
    direction: str
    coupling_id: int | None
    source_key: str | None
    target_key: str | None

    @classmethod
    def oriented(cls, job_id: int, mapping: str, direction: str, coupling_id: int | None, local_key: str | None,
                 integration_key: str | None) -> "RecordRef":
        """The record given by its local and integration keys, named from `direction`'s source."""
        source, target = (local_key, integration_key) if direction == "to_integration" else (integration_key, local_key)
        return cls(job_id, mapping, direction, coupling_id, source, target)

    @property
    def local_key(self) -> str | None:
        return self.source_key if self.direction == "to_integration" else self.target_key

    @property
    def integration_key(self) -> str | None:
        return self.target_key if self.direction == "to_integration" else self.source_key


def event_row(ref: RecordRef, outcome: str, message: str | None = None, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"job_id": ref.job_id, "mapping": ref.mapping, "coupling_id": ref.coupling_id, "local_key": ref.local_key,
            "integration_key": ref.integration_key, "direction": ref.direction, "outcome": outcome,
            "message": message, "changes": changes, "at": utcnow()}


EVENT_COLUMNS = ("job_id", "mapping", "coupling_id", "local_key", "integration_key", "direction", "outcome",
                 "message", "changes", "at")
EVENT_TYPES = ("int8", "text", "int8", "text", "text", "text", "text", "text", "json", "timestamptz")


def write_events(conn: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Append record events in bulk. An initial sync writes one per record, so on PostgreSQL they go
    through COPY in the caller's transaction: several times cheaper than a multi-row INSERT."""
    if not rows:
        return
    if pg_bulk.usable(conn):
        pg_bulk.copy_rows(conn, "record_events", EVENT_COLUMNS, (tuple(map(r.get, EVENT_COLUMNS)) for r in rows), EVENT_TYPES)
        return
    conn.execute(sa.insert(record_events), list(rows))


def write_errors(conn: sa.Connection, errors: Sequence[tuple[RecordRef, str, str | None]]) -> list[int]:
    """Insert (record, message, detail) errors in one statement; returns their ids in order."""
    if not errors:
        return []
    now = utcnow()
    rows = [{"job_id": ref.job_id, "coupling_id": ref.coupling_id, "direction": ref.direction,
             "source_key": ref.source_key, "destination_key": ref.target_key, "message": message,
             "detail": detail or None, "created_at": now} for ref, message, detail in errors]
    return list(conn.execute(sa.insert(job_errors).returning(job_errors.c.id, sort_by_parameter_order=True), rows).scalars())
