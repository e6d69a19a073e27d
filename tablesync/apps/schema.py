"""What an app's table looks like, read by reflection, and how values are made to fit its columns.

Values are coerced to the target column's Python type before they are written, so the value read
back on the next run compares equal to what we wrote (no false "changed" and no ping-pong), and a
value that cannot fit fails that one record with a message naming the field.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

Category = Literal["string", "integer", "numeric", "float", "boolean", "datetime", "date", "time", "uuid", "binary", "json",
                   "array", "other"]


def reflect_table(engine: sa.Engine, name: str, schema: str | None = None) -> sa.Table:
    """The table as its database describes it, with MySQL's conventions read as what they mean."""
    table = sa.Table(name, sa.MetaData(), autoload_with=engine, schema=schema)
    for col in table.columns:
        if isinstance(col.type, mysql.TINYINT) and col.type.display_width == 1:
            # MySQL has no boolean type: BOOLEAN is a synonym of tinyint(1), which every MySQL app
            # uses as its boolean. Read as True/False (so it compares equal to a real boolean on
            # the other side) and written as 1/0.
            col.type = sa.Boolean(create_constraint=False)
        elif isinstance(col.type, mysql.SET):
            col.type = OrderedSet(*col.type.values)
    return table


class OrderedSet(sa.TypeDecorator[list[str]]):
    """A MySQL SET read as a list in the SET's declared order, the order MySQL itself prints and
    the PostgreSQL port stores in its text[]: the driver's Python set iterates in an order that
    changes with every process (string hashing is randomised), which rewrote arrays every run."""

    impl = mysql.SET
    cache_ok = True

    def __init__(self, *values: str) -> None:
        super().__init__(*values)
        self.values = tuple(values)

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        return None if value is None else set(value)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> list[str] | None:
        return None if value is None else self.ordered(value)

    def ordered(self, value: Any) -> list[str]:
        """`value` (a set, list or comma-separated text) as a list in declared order; an element
        the SET does not declare raises ValueError naming it."""
        items = set(value.split(",") if isinstance(value, str) else value) - {""}
        unknown = items.difference(self.values)
        if unknown:
            raise Unfit(f"{', '.join(sorted(map(repr, unknown)))} is not one of the SET's values {list(self.values)}")
        return [v for v in self.values if v in items]


_CATEGORIES: dict[int, tuple[sa.types.TypeEngine[Any], str]] = {}


def category(col_type: sa.types.TypeEngine[Any]) -> str:
    """The kind of values a column holds; cached per type object, as coercion asks once per value."""
    hit = _CATEGORIES.get(id(col_type))
    if hit is not None and hit[0] is col_type:
        return hit[1]
    cat = _category(col_type)
    _CATEGORIES[id(col_type)] = (col_type, cat)
    return cat


def _category(t: sa.types.TypeEngine[Any]) -> str:
    if isinstance(t, postgresql.DOMAIN):  # a domain holds its base type's values (sakila's `year`)
        return _category(t.data_type)
    if isinstance(t, (OrderedSet, mysql.SET, sa.ARRAY)):
        return "array"
    if isinstance(t, mysql.YEAR):
        return "integer"
    if isinstance(t, sa.Uuid) or type(t).__name__.upper() == "UUID":
        return "uuid"
    if isinstance(t, sa.Boolean):
        return "boolean"
    if isinstance(t, sa.Integer):
        return "integer"
    if isinstance(t, sa.Float):
        return "float"
    if isinstance(t, sa.Numeric):
        return "numeric"
    if isinstance(t, sa.DateTime):
        return "datetime"
    if isinstance(t, sa.Date):
        return "date"
    if isinstance(t, sa.Time):
        return "time"
    if isinstance(t, (sa.String, sa.Enum)):
        return "string"
    if isinstance(t, sa.LargeBinary):
        return "binary"
    if isinstance(t, sa.JSON):
        return "json"
    return "other"


_WIDENING = {
    ("integer", "numeric"), ("integer", "float"), ("numeric", "float"), ("float", "numeric"),
    ("boolean", "integer"), ("date", "datetime"), ("uuid", "string"), ("string", "uuid"),
}


def compatible(source: str, target: str) -> bool:
    """Can values of category `source` be stored in a `target` column without loss or guessing?"""
    return source == target or target in ("string", "other") or source == "other" or (source, target) in _WIDENING


class Unfit(ValueError):
    """A value that cannot fit its column, with a message that already says why."""


def coerce(value: Any, col: sa.Column[Any]) -> Any:
    """Fit `value` to `col`'s type; raise ValueError naming what did not fit."""
    if value is None:
        return None
    cat = category(col.type)
    try:
        if cat == "array":
            if isinstance(col.type, OrderedSet):
                return col.type.ordered(value)
            if isinstance(value, (list, tuple, set, frozenset)):
                return list(value)
            raise Unfit(f"{value!r} is not a list for column {col.name}")
        if cat == "string":
            text = (value.isoformat() if isinstance(value, (dt.date, dt.time))
                    else ",".join(map(str, value)) if isinstance(value, list) else str(value))
            length = getattr(col.type, "length", None)
            if length is not None and len(text) > length:
                raise Unfit(f"{len(text)} characters do not fit {col.name} ({length} max)")
            return text
        if cat == "integer":
            if isinstance(value, bool):
                return int(value)
            if isinstance(value, (float, Decimal)) and value != int(value):
                raise ValueError(f"{value!r} is not a whole number")
            return int(value)
        if cat == "numeric":
            number = value if isinstance(value, Decimal) else Decimal(str(value))
            scale = getattr(col.type, "scale", None)
            return number.quantize(Decimal(1).scaleb(-scale)) if scale is not None else number
        if cat == "float":
            return float(value)
        if cat == "boolean":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("true", "t", "yes", "y", "1"):
                    return True
                if lowered in ("false", "f", "no", "n", "0"):
                    return False
                raise ValueError(f"{value!r} is not a boolean")
            return bool(value)
        if cat == "datetime":
            if isinstance(value, str):
                value = dt.datetime.fromisoformat(value)
            if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
                value = dt.datetime.combine(value, dt.time())
            if not getattr(col.type, "timezone", False) and value.tzinfo is not None:
                value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
            elif getattr(col.type, "timezone", False) and value.tzinfo is None:
                value = value.replace(tzinfo=dt.timezone.utc)  # a naive time is UTC, not the session's zone
            return value
        if cat == "date":
            if isinstance(value, dt.datetime):
                return value.date()
            return dt.date.fromisoformat(value) if isinstance(value, str) else value
        if cat == "uuid":
            if isinstance(col.type, sa.Uuid) and not getattr(col.type, "as_uuid", True):
                return str(uuid.UUID(str(value)))
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except Unfit:
        raise
    except (TypeError, ValueError, InvalidOperation, ArithmeticError):
        raise ValueError(f"cannot convert {value!r} to {cat} for column {col.name}") from None
    return value


def key_to_db(key: str, col: sa.Column[Any]) -> Any:
    """Store keys are strings; turn one back into the key column's type for a query."""
    return coerce(key, col)


def has_server_key(col: sa.Column[Any]) -> bool:
    """Does the database make up this key on insert (serial, identity, auto-increment, default)?"""
    return (
        col.server_default is not None
        or col.identity is not None
        or (col.autoincrement is True)
        or (col.autoincrement == "auto" and category(col.type) == "integer" and col.primary_key
            and len(col.table.primary_key.columns) == 1)
    )
