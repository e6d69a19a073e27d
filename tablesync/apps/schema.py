"""What an app's table looks like, read by reflection, and how values are made to fit its columns.

Values are coerced to the target column's Python type before they are written, so the value read
back on the next run compares equal to what we wrote (no false "changed" and no ping-pong), and a
value that cannot fit fails that one record with a message naming the field.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from tablesync.apps.catalog import mariadb_json_columns

Category = Literal["string", "integer", "numeric", "float", "boolean", "datetime", "date", "time", "uuid", "binary", "json",
                   "array", "other"]


def reflect_table(engine: sa.Engine, name: str, schema: str | None = None) -> sa.Table:
    """The table as its database describes it, with MySQL's conventions read as what they mean."""
    table = sa.Table(name, sa.MetaData(), autoload_with=engine, schema=schema)
    json_columns = mariadb_json_columns(engine, table) if any(isinstance(c.type, mysql.LONGTEXT) for c in table.columns) else set()
    for col in table.columns:
        if col.name in json_columns:
            col.type = mysql.JSON()  # parsed on read, serialised on write, like PostgreSQL's json
        elif isinstance(col.type, mysql.TIME):
            col.type = TimeOfDay()
        elif isinstance(col.type, mysql.TINYINT) and col.type.display_width == 1:
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


class TimeOfDay(sa.TypeDecorator[Any]):
    """MySQL's TIME is a duration (-838:59:59 to 838:59:59) that apps use as a time of day; the
    driver returns a timedelta. Read as a time of day when it is one, so it compares equal to a
    PostgreSQL `time` (a duration outside one day stays a timedelta, and fails its record if it
    must become a time)."""

    impl = mysql.TIME
    cache_ok = True

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if isinstance(value, dt.timedelta) and dt.timedelta(0) <= value < dt.timedelta(days=1):
            return (dt.datetime.min + value).time()
        return value


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
    if isinstance(t, TimeOfDay):
        return "time"
    if isinstance(t, (sa.Interval, postgresql.INTERVAL)):
        return "interval"
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
    ("boolean", "integer"), ("date", "datetime"), ("uuid", "string"), ("string", "uuid"), ("string", "json"),
}


_SAME_TEXT = ("string", "integer", "numeric")  # categories whose text form any column of the same one reads alike


def same_text_form(source: sa.Column[Any], target: sa.Column[Any], dialect: sa.Dialect) -> bool:
    """Does PostgreSQL's text form of a `source` value load into `target` as the value the
    general path would write? True for columns of one type (money aside: its text depends on the
    locale), and within text, integers or decimals (a value the target cannot hold fails there
    as it would anyway). A first run then moves the rows as text (`AppTable.copy_pages`)."""
    first, second = category(source.type), category(target.type)
    if first == second and first in _SAME_TEXT and not isinstance(target.type, sa.Enum):
        return True
    try:
        name = source.type.compile(dialect=dialect).upper()
        return name == target.type.compile(dialect=dialect).upper() and name != "MONEY"
    except sa.exc.CompileError:  # a type SQLAlchemy does not know: nothing to compare
        return False


def compatible(source: str, target: str) -> bool:
    """Can values of category `source` be stored in a `target` column without loss or guessing?
    (Text into JSON is parsed, and a value that is not JSON fails its record.) A duration has no
    agreed form in another type: it needs a transform (`seconds`)."""
    if source == "interval" or target == "interval":
        return source == target
    return source == target or target in ("string", "other") or source == "other" or (source, target) in _WIDENING


def integer_range(t: sa.types.TypeEngine[Any]) -> tuple[int, int] | None:
    """The values an integer column holds, by its declared size and sign (None: unknown)."""
    if isinstance(t, postgresql.DOMAIN):
        return integer_range(t.data_type)
    if not isinstance(t, sa.Integer):
        return None
    bits = (8 if isinstance(t, mysql.TINYINT) else 16 if isinstance(t, sa.SmallInteger)
            else 24 if isinstance(t, mysql.MEDIUMINT) else 64 if isinstance(t, sa.BigInteger) else 32)
    if getattr(t, "unsigned", False):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def fit_problems(source: sa.Column[Any], target: sa.Column[Any]) -> list[tuple[str, str]]:
    """(severity, message) for values of `source` that `target` cannot hold as they are: fewer
    decimals (refused: the values would be rounded), and, as warnings, since each such value
    fails its record alone: fewer integer digits, a smaller integer range, shorter text."""
    s, t = source.type, target.type
    s_cat, t_cat = category(s), category(t)
    out: list[tuple[str, str]] = []
    if s_cat == t_cat == "numeric":
        s_scale, t_scale = getattr(s, "scale", None), getattr(t, "scale", None)
        if t_scale is not None and (s_scale is None or s_scale > t_scale):
            out.append(("error", f"{target.name} keeps {t_scale} decimal(s) and {source.name} has "
                                 f"{'any number' if s_scale is None else s_scale}: values would be rounded; "
                                 "widen the target's scale or give the field a transform that rounds"))
        s_int, t_int = (getattr(x, "precision", None) and x.precision - (getattr(x, "scale", None) or 0) for x in (s, t))
        if t_int is not None and (s_int is None or s_int > t_int):
            out.append(("warning", f"{target.name} holds {t_int} integer digit(s), {source.name} "
                                   f"{'more' if s_int is None else s_int}: a larger value fails its record"))
    elif s_cat == "float" and t_cat == "numeric" and getattr(t, "scale", None) is not None:
        out.append(("warning", f"{source.name} is a floating-point number: it is rounded to the {t.scale} decimal(s) "  # type: ignore[attr-defined]
                               f"{target.name} keeps"))
    elif s_cat == t_cat == "integer":
        s_range, t_range = integer_range(s), integer_range(t)
        if s_range and t_range and (s_range[0] < t_range[0] or s_range[1] > t_range[1]):
            out.append(("warning", f"{target.name} holds {t_range[0]}..{t_range[1]}, {source.name} "
                                   f"{s_range[0]}..{s_range[1]}: a value outside fails its record"))
    elif t_cat == "string" and s_cat == "string":
        s_len, t_len = getattr(s, "length", None), getattr(t, "length", None)
        if t_len is not None and (s_len is None or s_len > t_len):
            out.append(("warning", f"{target.name} holds {t_len} characters, {source.name} "
                                   f"{'any number' if s_len is None else s_len}: a longer value fails its record"))
    return out


class Unfit(ValueError):
    """A value that cannot fit its column, with a message that already says why."""


def coerce(value: Any, col: sa.Column[Any], source: str | None = None) -> Any:
    """Fit `value` to `col`'s type; raise ValueError naming what did not fit. `source` is the
    category of the column the value comes from, where it decides the form (JSON text or a
    comma-separated list for text)."""
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
        if cat == "json":
            if isinstance(value, str):
                try:
                    return json.loads(value)
                except ValueError:
                    raise Unfit(f"{value[:60]!r} is not JSON for column {col.name}") from None
            return value
        if cat == "time":
            if isinstance(value, dt.timedelta):
                if not dt.timedelta(0) <= value < dt.timedelta(days=1):
                    raise Unfit(f"the duration {value} is not a time of day for column {col.name}")
                return (dt.datetime.min + value).time()
            return dt.time.fromisoformat(value) if isinstance(value, str) else value
        if cat == "string":
            if isinstance(value, (dt.date, dt.time)):
                text = value.isoformat()
            elif isinstance(value, (list, dict)):  # a SET/array as MySQL prints a SET; JSON as its text
                text = (",".join(map(str, value)) if source == "array" and isinstance(value, list)
                        else json.dumps(value, ensure_ascii=False))
            else:
                text = str(value)
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
            if scale is None:
                return number
            fitted = number.quantize(Decimal(1).scaleb(-scale))
            if fitted != number and not isinstance(value, float):  # a float is approximate: rounding it loses nothing real
                raise Unfit(f"{number} has more than the {scale} decimal(s) column {col.name} keeps")
            return fitted
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
