"""What an app's database says about a table beyond what reflection gives: how its key default
makes new keys, and which triggers fill columns on insert. `config check` asks so that a mapping
that cannot insert is refused up front, never discovered by a failing job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

_NEXTVAL = re.compile(r"nextval\('[^']+'(::regclass)?\)", re.IGNORECASE)


def key_default(key: sa.Column[Any]) -> str:
    """The SQL that makes a new value of a PostgreSQL key column, as the column itself would.

    An identity column's sequence is found by `pg_get_serial_sequence`. Any other default is
    evaluated as it is written: `nextval('address_address_id_seq'::regclass)` names its sequence
    even when the column does not own it (pg_get_serial_sequence() is NULL then, as in every
    table of the Sakila port), and `gen_random_uuid()` or a function of the app's own is whatever
    the app made it."""
    if key.identity is not None:
        table = key.table
        name = ".".join('"' + p.replace('"', '""') + '"' for p in ([table.schema] if table.schema else []) + [table.name])
        return f"nextval(pg_get_serial_sequence('{_literal(name)}', '{_literal(key.name)}'))"
    assert key.server_default is not None, "only a key with a default is pre-allocated"
    return str(getattr(key.server_default.arg, "text", key.server_default.arg))


def _literal(text: str) -> str:
    return text.replace("'", "''")


def key_default_problem(engine: sa.Engine, key: sa.Column[Any]) -> str | None:
    """Why the key column's default cannot key new records, or None when it can.

    A sequence, identity or AUTO_INCREMENT can; any other default is evaluated twice, in a
    transaction that is rolled back: it must succeed and give two different values (a constant
    `DEFAULT 0` keys one record, then every insert collides)."""
    if key.identity is not None or key.autoincrement is True:
        return None
    if key.server_default is None:
        return None
    expr = key_default(key)
    if _NEXTVAL.fullmatch(expr.strip()):
        return None  # the regclass was resolved when the default was made: the sequence exists
    sql = f"SELECT CAST(({expr}) AS {'CHAR' if engine.dialect.name in ('mysql', 'mariadb') else 'TEXT'}) AS v"
    with engine.connect() as conn:
        tx = conn.begin()
        try:
            values = list(conn.execute(sa.text(f"{sql} UNION ALL {sql}")).scalars())
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0]
            return f"its default {expr} fails when evaluated: {reason}"
        finally:
            tx.rollback()
    if values[0] is None or values[0] == values[1]:
        return f"its default {expr} gives every new record the same value ({values[0]}): it cannot key new records"
    return None


@dataclass(frozen=True)
class Trigger:
    name: str
    text: str  # the definition (and, on PostgreSQL, its function's source): where a column it fills is named

    def mentions(self, column: str) -> bool:
        return re.search(rf"(?<![\w$]){re.escape(column)}(?![\w$])", self.text, re.IGNORECASE) is not None


def before_insert_triggers(engine: sa.Engine, table: sa.Table) -> list[Trigger]:
    """Row triggers that run before an insert into `table` and so may fill its columns (SQLite's
    cannot change the new row: none there)."""
    dialect = engine.dialect.name
    with engine.connect() as conn:
        if dialect == "postgresql":
            quoted = engine.dialect.identifier_preparer.format_table(table)
            rows = conn.execute(sa.text(
                "SELECT t.tgname, pg_get_triggerdef(t.oid) || ' ' || coalesce(p.prosrc, '') FROM pg_trigger t "
                "JOIN pg_proc p ON p.oid = t.tgfoid WHERE t.tgrelid = to_regclass(:t) AND NOT t.tgisinternal "
                "AND t.tgenabled <> 'D' AND (t.tgtype & 7) = 7 ORDER BY t.tgname"), {"t": quoted}).all()  # ROW, BEFORE, INSERT
        elif dialect in ("mysql", "mariadb"):
            rows = conn.execute(sa.text(
                "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS "
                "WHERE EVENT_OBJECT_SCHEMA = COALESCE(:s, DATABASE()) AND EVENT_OBJECT_TABLE = :t "
                "AND ACTION_TIMING = 'BEFORE' AND EVENT_MANIPULATION = 'INSERT' ORDER BY TRIGGER_NAME"),
                {"s": table.schema, "t": table.name}).all()
        else:
            rows = []
    return [Trigger(str(r[0]), str(r[1])) for r in rows]


def mariadb_json_columns(engine: sa.Engine, table: sa.Table) -> set[str]:
    """MariaDB's JSON is LONGTEXT with a `json_valid(col)` check: reflection sees only the text."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return set()
    with engine.connect() as conn:
        clauses = conn.execute(sa.text(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = COALESCE(:s, DATABASE()) AND TABLE_NAME = :t"), {"s": table.schema, "t": table.name}).scalars()
        return {m.group(1) for c in clauses if (m := re.fullmatch(r"\s*json_valid\(`([^`]+)`\)\s*", str(c)))}
