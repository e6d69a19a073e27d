"""Looking rows up by many keys at once, the same way for the store and the apps.

Record keys travel as strings everywhere in tablesync (the store's key columns are text); a lookup
turns them into the column's type only where the database needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

IN_CHUNK = 1000  # keys per `IN (...)` list where every key is a placeholder


def key_batch(dialect: str) -> int:
    """Keys per lookup: one array parameter holds many on PostgreSQL; elsewhere each key is a
    placeholder, and drivers/servers limit those."""
    return 50_000 if dialect == "postgresql" else IN_CHUNK


def key_in(column: sa.Column[Any], keys: list[str], dialect: str,
           to_db: Callable[[str], Any] | None = None) -> sa.ColumnElement[bool]:
    """`column IN keys` for string keys. On PostgreSQL one text array cast to the column's type on
    the server (`= ANY(CAST(:keys AS uuid[]))`): no placeholder per key, no Python conversion per
    key. Elsewhere `to_db` turns each key into the column's type."""
    if dialect == "postgresql":
        array = sa.bindparam(None, keys, type_=postgresql.ARRAY(sa.Text()))
        return column == sa.any_(sa.cast(array, postgresql.ARRAY(column.type)))
    return column.in_([to_db(k) for k in keys] if to_db is not None else keys)
