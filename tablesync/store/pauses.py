"""Paused mappings: an operator stops a mapping's schedule (maintenance of an app, a bad upstream
import) without touching its configuration; the running job finishes, later ticks are skipped
with a note saying who paused it and why, until `resume`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tablesync.db.engine import utcnow
from tablesync.store.schema import mapping_pauses


def pause(conn: sa.Connection, mapping: str, by: str | None, reason: str | None) -> bool:
    """Pause `mapping`; returns False if it was paused already (its first pause is kept)."""
    if conn.execute(sa.select(mapping_pauses.c.mapping).where(mapping_pauses.c.mapping == mapping)).first() is not None:
        return False
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(mapping_pauses).values(mapping=mapping, paused_by=by, paused_at=utcnow(), reason=reason))
    except sa.exc.IntegrityError:  # another operator paused it at the same moment
        return False
    return True


def resume(conn: sa.Connection, mapping: str) -> bool:
    """Resume `mapping`; returns False if it was not paused."""
    return bool(conn.execute(sa.delete(mapping_pauses).where(mapping_pauses.c.mapping == mapping)).rowcount)


def paused(conn: sa.Connection, mappings: Sequence[str] | None = None) -> dict[str, sa.Row[Any]]:
    """{mapping: its pause (paused_by, paused_at, reason)} of the paused ones among `mappings` (all by default)."""
    q = sa.select(mapping_pauses)
    if mappings is not None:
        q = q.where(mapping_pauses.c.mapping.in_(list(mappings)))
    return {r.mapping: r for r in conn.execute(q)}


def pause_note(row: Any) -> str:
    """How a skipped tick and the console say a mapping is paused."""
    return f"paused by {row.paused_by or 'an operator'}" + (f": {row.reason}" if row.reason else "")
