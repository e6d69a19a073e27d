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

Category = Literal["string", "integer", "numeric", "float", "boolean", "datetime", "date", "time", "uuid", "binary", "json", "other"]


def reflect_table(engine: sa.Engine, name: str, schema: str | None = None) -> sa.Table:
    return sa.Table(name, sa.MetaData(), autoload_with=engine, schema=schema)


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


def coerce(value: Any, col: sa.Column[Any]) -> Any:
    """Fit `value` to `col`'s type; raise ValueError naming what did not fit."""
    if value is None:
        return None
    cat = category(col.type)
    try:
        if cat == "string":
            text = value.isoformat() if isinstance(value, (dt.date, dt.time)) else str(value)
            length = getattr(col.type, "length", None)
            if length is not None and len(text) > length:
                raise ValueError(f"{len(text)} characters do not fit {col.name} ({length} max)")
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
            return value
        if cat == "date":
            if isinstance(value, dt.datetime):
                return value.date()
            return dt.date.fromisoformat(value) if isinstance(value, str) else value
        if cat == "uuid":
            if isinstance(col.type, sa.Uuid) and not getattr(col.type, "as_uuid", True):
                return str(uuid.UUID(str(value)))
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except (TypeError, ValueError, InvalidOperation, ArithmeticError) as exc:
        if isinstance(exc, ValueError) and "fit" in str(exc):
            raise
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
