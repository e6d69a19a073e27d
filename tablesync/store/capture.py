"""The change logs `tablesync listen` follows, as the store remembers them: which replication slot
it made in which app (so that `config apply` and `listen --drop-slots` can drop a slot no mapping
needs any more, even once its app is gone from the config), and a binlog's position."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from tablesync.db.engine import utcnow
from tablesync.store.schema import capture_slots


def register_slot(conn: sa.Connection, app: str, kind: str, slot: str, url: str, position: str | None = None) -> None:
    """Remember that `slot` (in the database `url`, a template) is tablesync's, for `app`; a
    binlog's starting `position` is kept only if none is stored yet."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    values = {"app": app, "kind": kind, "slot": slot, "url": url, "updated_at": utcnow()}
    conn.execute(insert(capture_slots).values({**values, "position": position}).on_conflict_do_update(
        index_elements=["app"], set_={**{k: v for k, v in values.items() if k != "app"},
                                      "position": sa.func.coalesce(capture_slots.c.position, position)}))


def registered_slots(conn: sa.Connection) -> list[sa.Row[Any]]:
    return list(conn.execute(sa.select(capture_slots).order_by(capture_slots.c.app)))


def forget_slot(conn: sa.Connection, app: str, slot: str) -> None:
    conn.execute(sa.delete(capture_slots).where(capture_slots.c.app == app, capture_slots.c.slot == slot))


def slot_of(conn: sa.Connection, app: str) -> sa.Row[Any] | None:
    return conn.execute(sa.select(capture_slots).where(capture_slots.c.app == app)).first()


def save_position(conn: sa.Connection, app: str, position: str | None) -> None:
    """Where `app`'s binlog has been read up to: every change before it is in a wake-up or a job."""
    conn.execute(sa.update(capture_slots).where(capture_slots.c.app == app).values(position=position, updated_at=utcnow()))
