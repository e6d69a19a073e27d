"""Watermarks: how far incremental selection has safely read, per mapping and side.

Values live in the app's own clock or number domain and are stored as tagged JSON, so a naive
timestamp comes back naive and compares with the column it came from.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from tablesync.db.engine import utcnow
from tablesync.store.schema import watermarks


def get_watermark(conn: sa.Connection, mapping: str, side: str) -> Any:
    value = conn.execute(
        sa.select(watermarks.c.value).where(watermarks.c.mapping == mapping, watermarks.c.side == side)
    ).scalar()
    if isinstance(value, str):
        value = json.loads(value)
    return decode(value)


def set_watermark(conn: sa.Connection, mapping: str, side: str, value: Any) -> None:
    now = utcnow()
    updated = conn.execute(
        sa.update(watermarks).where(watermarks.c.mapping == mapping, watermarks.c.side == side)
        .values(value=encode(value), updated_at=now)
    ).rowcount
    if not updated:
        conn.execute(sa.insert(watermarks).values(mapping=mapping, side=side, value=encode(value), updated_at=now))


def encode(value: Any) -> dict[str, Any]:
    if isinstance(value, dt.datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {"type": "date", "value": value.isoformat()}
    return {"type": "number", "value": value if isinstance(value, (int, float)) else str(value)}


def decode(stored: Any) -> Any:
    if not stored:
        return None
    kind, value = stored.get("type"), stored.get("value")
    if kind == "datetime":
        return dt.datetime.fromisoformat(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    return value


def minus_overlap(value: Any, seconds: float) -> Any:
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=seconds)
    if isinstance(value, dt.date):
        return value - dt.timedelta(days=1)
    return value
