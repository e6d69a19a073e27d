"""PostgreSQL bulk writes through psycopg's COPY, inside the caller's SQLAlchemy transaction.

Measured on an initial sync, psycopg spent most of its time escaping the elements of big text-array
parameters (one regex substitution per element) and executemany costs a round trip per row in
pipeline mode. COPY moves the same rows in one stream with C-level formatting, several times faster.
Everything here runs on the connection's own transaction, so atomicity and crash behaviour are those
of the statement it replaces.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from functools import partial
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.types.json import set_json_dumps

_dumps = partial(json.dumps, default=str)


def usable(conn: sa.Connection | sa.Engine) -> bool:
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg"


def copy_rows(conn: sa.Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
              types: Sequence[str] | None = None) -> None:
    """COPY `rows` (tuples in `columns` order) into `table` (already quoted if it needs to be).

    With `types` (PostgreSQL type names, one per column; JSON columns take Python objects) the
    rows go in binary format with fixed dumpers: measured three times cheaper per row than text,
    which looks up a dumper per value. Text serves app tables, whose values come as they are."""
    raw = conn.connection.driver_connection
    assert raw is not None
    quote = conn.dialect.identifier_preparer.quote
    statement = f"COPY {table} ({', '.join(quote(c) for c in columns)}) FROM STDIN" + (" (FORMAT BINARY)" if types else "")
    try:
        with raw.cursor() as cur:
            if types:
                set_json_dumps(_dumps, cur)
            with cur.copy(statement) as copy:
                if types:
                    copy.set_types(list(types))
                for row in rows:
                    copy.write_row(row)
    except psycopg.Error as exc:  # as SQLAlchemy would raise it, so callers classify it the same way
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def select_binary(conn: sa.Connection, sql: str, params: Sequence[Any], nested_loops: bool = False) -> list[tuple[Any, ...]]:
    """Run `sql` (psycopg placeholders) with binary parameters: a list of 50k keys goes as one
    binary array, without the per-element escaping a text array needs. `nested_loops` keeps the
    planner from hashing a whole big table to probe a few thousand keys (for this transaction only)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        with raw.cursor() as cur:
            if nested_loops:
                cur.execute("SET LOCAL enable_hashjoin = off")
                cur.execute("SET LOCAL enable_mergejoin = off")
            cur.execute(sql, params, binary=True)
            return cur.fetchall()
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


def select_dicts(conn: sa.Connection, query: sa.Select[Any]) -> list[dict[str, Any]]:
    """Run a SELECT on the driver's cursor: rows as dicts by column label. psycopg's own types are
    those SQLAlchemy passes through for PostgreSQL, at a third less cost per row."""
    compiled = query.compile(dialect=conn.dialect)
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        with raw.cursor() as cur:
            cur.execute(str(compiled), compiled.params)
            if cur.description is None:
                return []
            names = [d.name for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(str(compiled), None, exc, psycopg.Error) from exc


def execute_binary(conn: sa.Connection, sql: str, params: Sequence[Any]) -> None:
    """A statement with binary parameters (big id arrays) and no result, in the caller's transaction."""
    raw = conn.connection.driver_connection
    assert raw is not None
    try:
        with raw.cursor() as cur:
            cur.execute(sql, params, binary=True)
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(sql, None, exc, psycopg.Error) from exc


def staging(conn: sa.Connection, name: str, columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]) -> None:
    """A temporary table `name` (dropped at commit) filled with `rows`: the input of one set-based
    INSERT … SELECT or UPDATE … FROM instead of thousands of parameters."""
    conn.execute(sa.text(f"CREATE TEMP TABLE {name} ({', '.join(f'{c} {t}' for c, t in columns)}) ON COMMIT DROP"))
    copy_rows(conn, name, [c for c, _ in columns], rows)
    # Without statistics the planner guesses the staging table's size and may hash the whole
    # (growing) target table to join a few thousand rows; ANALYZE of a temp table costs ~1 ms.
    conn.execute(sa.text(f"ANALYZE {name}"))


# -- COPY text, passed through ---------------------------------------------------------------------
# A first run whose mapping copies each column into a column of the same type moves its rows as
# COPY's text form, never as Python values: read by `COPY (SELECT …) TO STDOUT`, written by `COPY
# … FROM STDIN`, and only the key fields looked at (measured: 13 µs of Python per record down to 3).

_UNESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"b": b"\b", b"f": b"\f", b"v": b"\v"}  # and any other: itself
_UNESCAPE = re.compile(rb"\\(.)", re.DOTALL)
_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
NULL = b"\\N"


def copy_out(conn: sa.Connection, query: sa.Select[Any]) -> list[bytes]:
    """The rows of `query` as lines of COPY's text format (tab-separated fields, escaped, `\\N` for
    NULL), without their line ends. Its parameters are bound client-side: COPY takes none."""
    compiled = query.compile(dialect=conn.dialect)
    raw = conn.connection.driver_connection
    assert raw is not None
    statement = f"COPY ({compiled}) TO STDOUT"
    data = bytearray()
    try:
        with raw.cursor() as cur, cur.copy(statement, compiled.params) as copy:
            for block in copy:
                data += block
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from exc
    lines = bytes(data).split(b"\n")
    lines.pop()  # after the last line end
    return lines


def copy_text(conn: sa.Connection, table: str, columns: Sequence[str], data: bytes) -> None:
    """COPY lines of text format (`data`, each ending in a line end) into `table` (quoted)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    statement = f"COPY {table} ({', '.join(conn.dialect.identifier_preparer.quote(c) for c in columns)}) FROM STDIN"
    try:
        with raw.cursor() as cur, cur.copy(statement) as copy:
            copy.write(data)
    except psycopg.Error as exc:
        raise sa.exc.DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def unescape(field: bytes) -> str | None:
    """A field of COPY's text format as the string it stands for (None for NULL)."""
    if field == NULL:
        return None
    if b"\\" not in field:
        return field.decode()
    return _UNESCAPE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), field).decode()


def escape(value: str | None) -> bytes:
    """A string as a field of COPY's text format."""
    if value is None:
        return NULL
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:  # rare: four scans cost less than translate
        value = value.translate(_ESCAPES)
    return value.encode()
