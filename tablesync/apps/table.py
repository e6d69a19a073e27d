"""Reading and writing one mapped table of an app, set-based.

Only SELECT, INSERT and UPDATE on the mapped table, DELETE where tablesync deletes (and, on
PostgreSQL, reading `pg_stat_activity`, evaluating the key column's default and, when allowed,
temporary staging tables) are needed: tablesync never changes an app's schema.

Every method translates its own driver errors (`apps.failures`): callers see AppUnavailable or
AppError, never a driver exception, and never wrap a call themselves.
"""

from __future__ import annotations

import json
import operator
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from tablesync.apps.catalog import key_default
from tablesync.apps.failures import is_connection_error, translated, translated_pages, unavailable
from tablesync.apps.schema import category, has_server_key, key_to_db, reflect_table
from tablesync.apps.shape import TableShape
from tablesync.apps.values import canonical
from tablesync.apps.writes import Failure, split_write
from tablesync.config.model import SideSpec
from tablesync.db import pg_bulk
from tablesync.db.engine import name_session
from tablesync.db.keys import decode_key, key_batch, tuple_in
from tablesync.db.keys import key_in as _key_in

T = TypeVar("T")


@dataclass
class AppTable(TableShape):
    sql = True  # the SQL fast paths apply (COPY, staged updates, chunked ranges); `ApiTable` has none
    engine: sa.Engine
    side: SideSpec
    table: sa.Table
    _temp_ok: bool | None = None  # may the app's user create temporary tables (for staged updates)?
    session: str | None = None  # the job's session name, set on each write transaction (PostgreSQL)

    @classmethod
    @translated
    def open(cls, engine: sa.Engine, side: SideSpec, session: str | None = None) -> "AppTable":
        table = _reflect(engine, side)
        # SQLite reflects `INTEGER PRIMARY KEY` as nullable; a record key never is, and SQLAlchemy
        # needs to know that to return database-made keys of a bulk insert in order.
        for name in side.key_columns:
            table.c[name].nullable = False
        return cls(engine=engine, side=side, table=table, session=session)

    def key_values(self, key: str) -> tuple[Any, ...]:
        """A record key's column values, each in its column's type (ValueError for a malformed key)."""
        cols = self.keys
        return tuple(key_to_db(part, col) for part, col in zip(decode_key(key, len(cols)), cols))

    def where_keys(self, keys: list[str]) -> sa.ColumnElement[bool]:
        """`record key IN keys`: one array parameter on PostgreSQL for a one-column key; a row-value
        IN list for a composite key."""
        if not self.composite:
            return key_in(self.key, keys, self.engine.dialect.name)
        cols = self.keys
        return tuple_in(cols, [decode_key(k, len(cols)) for k in keys], self.engine.dialect.name,
                        lambda parts: tuple(key_to_db(p, c) for p, c in zip(parts, cols)))

    @property
    def deleted(self) -> sa.Column[Any] | None:
        return self.table.c[self.side.deleted] if self.side.deleted else None

    def _filtered(self, query: sa.Select[Any]) -> sa.Select[Any]:
        return query.where(sa.text(f"({self.side.filter})")) if self.side.filter else query

    def _live(self, query: sa.Select[Any]) -> sa.Select[Any]:
        """Soft-deleted rows (the side's `deleted:` column set) read as absent everywhere."""
        return query.where(alive(self.deleted)) if self.deleted is not None else query

    def _columns(self, names: Sequence[str], raw: bool = False) -> list[Any]:
        """Key, modified-on and `names`; with `raw`, the mapped columns skip SQLAlchemy's result
        processing, so one malformed value (SQLite stores anything anywhere) fails only its record."""
        fixed = [*self.side.key_columns, *([self.side.modified] if self.side.modified else [])]
        wanted = dict.fromkeys([*fixed, *names])
        return [self.table.c[n] if not raw or n in fixed else sa.type_coerce(self.table.c[n], sa.types.NullType()).label(n)
                for n in wanted]

    def _rows(self, conn: sa.Connection, build: Any) -> list[dict[str, Any]]:
        if pg_bulk.usable(conn):  # the driver's rows as they come: SQLAlchemy's result layer costs a third more
            return pg_bulk.select_dicts(conn, build(False))
        try:
            return _dicts(conn.execute(build(False)))
        except (TypeError, ValueError, ArithmeticError):
            return _dicts(conn.execute(build(True)))

    # -- reading -----------------------------------------------------------------------------

    @translated_pages
    def pages(self, columns: Sequence[str], since: Any, batch_size: int,
              low: str | None = None, high: str | None = None) -> Iterator[list[dict[str, Any]]]:
        """Changed rows in keyset-paginated batches: by (modified, key…) past `since`, else by key;
        with `low`/`high` (record keys), only the keys above `low` up to `high` (a chunk's range)."""
        mod, names = self.modified, self.side.key_columns
        last: tuple[Any, ...] | None = (None, *self.key_values(low)) if low is not None and since is None else None
        upto = self.key_values(high) if high is not None else None
        while True:
            def build(raw: bool, last: tuple[Any, ...] | None = last) -> sa.Select[Any]:
                q = self._page_query(columns, raw, since, last)
                if since is not None and low is not None:
                    q = q.where(self._after(self.keys, self.key_values(low)))
                if upto is not None:
                    q = q.where(sa.not_(self._after(self.keys, upto)))
                return q.limit(batch_size)

            with self.engine.connect() as conn:
                rows = self._rows(conn, build)
            if not rows:
                return
            yield rows
            if len(rows) < batch_size:
                return
            tail = rows[-1]
            last = (tail.get(mod.name) if mod is not None else None, *(tail[n] for n in names))

    def _page_query(self, columns: Sequence[str], raw: bool, since: Any, last: tuple[Any, ...] | None) -> sa.Select[Any]:
        mod, keys = self.modified, self.keys
        q = self._live(self._filtered(sa.select(*self._columns(columns, raw))))
        if since is not None and mod is not None:
            q = q.where(mod >= since)
            if last is not None:
                q = q.where(self._after([mod, *keys], last))
            return q.order_by(mod, *keys)
        if last is not None:
            q = q.where(self._after(keys, last[1:]))
        return q.order_by(*keys)

    def _after(self, cols: list[sa.Column[Any]], values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """Rows past `values` in the order of `cols`: the keyset condition of the next page."""
        if len(cols) == 1:
            return cols[0] > values[0]
        if self.engine.dialect.name == "postgresql":
            # A row comparison is one range of the (modified, key) index; the OR form re-read every
            # row sharing the page's last timestamp (a mass update gives them all one), so each page
            # cost more than the last.
            return sa.tuple_(*cols) > sa.tuple_(*(sa.literal(v, c.type) for c, v in zip(cols, values)))
        # (a, b, c) > (x, y, z) spelled out: what MySQL/MariaDB and SQLite plan as index ranges
        return sa.or_(*(sa.and_(*(c == v for c, v in zip(cols[:i], values[:i])), cols[i] > values[i])
                        for i in range(len(cols))))

    @translated_pages
    def copy_pages(self, columns: Sequence[str], batch_size: int, low: str | None = None,
                   high: str | None = None) -> Iterator[list[bytes]]:
        """`pages` by key (a first run's), as lines of PostgreSQL's COPY text format: the key's
        fields, then `columns` in that order (a column may come twice). No value becomes a Python
        object; the next page starts after the last line's key fields."""
        width = len(self.keys)
        last = self.key_values(low) if low is not None else None
        upto = self.key_values(high) if high is not None else None
        select = [*self.keys, *(self.table.c[c].label(f"_ts_{i}") for i, c in enumerate(columns))]
        while True:
            q = self._live(self._filtered(sa.select(*select)))
            if last is not None:
                q = q.where(self._after(self.keys, last))
            if upto is not None:
                q = q.where(sa.not_(self._after(self.keys, upto)))
            with self.engine.connect() as conn:
                lines = pg_bulk.copy_out(conn, q.order_by(*self.keys).limit(batch_size))
            if not lines:
                return
            yield lines
            if len(lines) < batch_size:
                return
            parts = [pg_bulk.unescape(f) for f in lines[-1].split(b"\t", width)[:width]]
            last = tuple(key_to_db(str(p), c) for p, c in zip(parts, self.keys))

    @translated
    def key_boundaries(self, every: int) -> tuple[list[str], int]:
        """Split the selected rows into key ranges of `every` rows by walking the key's index
        (`key > :b ORDER BY key OFFSET every-1 LIMIT 1`, one index range scan per boundary), so
        sparse or skewed keys split as evenly as dense ones. Returns each range's highest key but
        the last's (whose range is open above) and the number of rows in that last range."""
        highs: list[str] = []
        with self.engine.connect() as conn:
            while True:
                q = self._live(self._filtered(sa.select(*self.keys)))
                if highs:
                    q = q.where(self._after(self.keys, self.key_values(highs[-1])))
                row = conn.execute(q.order_by(*self.keys).offset(every - 1).limit(1)).first()
                if row is None:
                    break
                highs.append(self.key_of(row._mapping))
            tail = self._live(self._filtered(sa.select(sa.literal(1)).select_from(self.table)))
            if highs:
                tail = tail.where(self._after(self.keys, self.key_values(highs[-1])))
            rest = int(conn.execute(sa.select(sa.func.count()).select_from(tail.subquery())).scalar_one())
        if highs and rest == 0:  # the walk ended exactly on the last row: that range is the last one
            highs.pop()
            rest = every
        return highs, rest

    @translated
    def fetch(self, keys: Sequence[str], columns: Sequence[str], apply_filter: bool = True) -> dict[str, dict[str, Any]]:
        """Rows by key (string keys in, string keys out), one query per 1,000 keys."""
        out: dict[str, dict[str, Any]] = {}
        keylist = list(dict.fromkeys(keys))
        step = key_batch(self.engine.dialect.name)
        with self.engine.connect() as conn:
            for i in range(0, len(keylist), step):
                chunk = keylist[i:i + step]

                def build(raw: bool, chunk: list[str] = chunk) -> sa.Select[Any]:
                    q = self._live(sa.select(*self._columns(columns, raw)).where(self.where_keys(chunk)))
                    return self._filtered(q) if apply_filter else q

                for row in self._rows(conn, build):
                    out[self.key_of(row)] = row
        return out

    @translated
    def existing(self, keys: Sequence[str]) -> set[str]:
        """Which of these keys still exist (whatever the filter says): the key column only."""
        found: set[str] = set()
        keylist = [k for k in dict.fromkeys(keys) if k is not None]
        step = key_batch(self.engine.dialect.name)
        with self.engine.connect() as conn:
            for i in range(0, len(keylist), step):
                q = self._live(sa.select(*self.keys).where(self.where_keys(keylist[i:i + step])))
                found.update(self.key_of(r._mapping) for r in conn.execute(q))
        return found

    @translated
    def missing(self, keys: Sequence[str]) -> set[str]:
        """Which of these keys no longer exist (or are soft-deleted).

        On PostgreSQL the keys go as one binary array (no per-element text escaping; a composite
        key is split by the server, as JSON) and the server sends back only the missing ones,
        probing the key index per key: an anti-join on the key tuple. Left to itself the planner
        hashed the whole table for each chunk, which grew with the table (measured: 20k uuid keys
        against 1M rows, 0.21 s hashed, 0.065 s probed). A two-column key costs about 1.3 times
        a one-column key per key (benchmarks/deletion_scan_bench.py: 20,000 keys against 1M rows,
        53-66 ms against 38-46 ms)."""
        keylist = [k for k in dict.fromkeys(keys) if k is not None]
        if not keylist:
            return set()
        if self.engine.dialect.name != "postgresql" or self.engine.dialect.driver != "psycopg":
            return set(keylist) - self.existing(keylist)
        quote = self.engine.dialect.identifier_preparer.quote
        live = "" if self.deleted is None else " AND " + str(
            alive(self.deleted).compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}))
        table, cols = self._qualified(), self.keys
        if len(cols) == 1:
            keys = "unnest(%b::text[]) AS _ts_keys(k)"
            parts = [f"{table}.{quote(cols[0].name)} = CAST(_ts_keys.k AS {cols[0].type.compile(dialect=self.engine.dialect)})"]
        else:  # the server splits each key as JSON: cheaper than splitting and typing 20,000 in Python
            # (measured: parts sent as typed arrays cost twice the one-column key per key, this 1.4 times)
            keys = "(SELECT k, k::jsonb AS j FROM unnest(%b::text[]) AS _k(k)) AS _ts_keys"
            parts = [f"{table}.{quote(c.name)} = CAST(_ts_keys.j ->> {i} AS {c.type.compile(dialect=self.engine.dialect)})"
                     for i, c in enumerate(cols)]
        sql = f"SELECT _ts_keys.k FROM {keys} WHERE NOT EXISTS (SELECT 1 FROM {table} WHERE {' AND '.join(parts)}{live})"
        with self.engine.connect() as conn:  # the keys come back exactly as they went in
            return {row[0] for row in pg_bulk.select_binary(conn, sql, [keylist], nested_loops=True)}

    @translated
    def find_matches(self, columns: Sequence[str], wanted: Sequence[tuple[Any, ...]]) -> dict[tuple[Any, ...], list[str]]:
        """Keys of rows whose `columns` equal each wanted tuple (text compared case-insensitively),
        one query per 500 tuples. Tuples come in and go out normalised by `match_value`."""
        exprs = [sa.func.lower(self.table.c[c]) if category(self.table.c[c].type) == "string" else self.table.c[c]
                 for c in columns]
        found: dict[tuple[Any, ...], list[str]] = {}
        unique = list(dict.fromkeys(wanted))
        with self.engine.connect() as conn:
            for i in range(0, len(unique), 500):
                chunk = unique[i:i + 500]
                cond = exprs[0].in_([t[0] for t in chunk]) if len(exprs) == 1 else sa.tuple_(*exprs).in_(chunk)
                width = len(self.keys)
                q = self._live(sa.select(*self.keys, *[e.label(f"m{j}") for j, e in enumerate(exprs)]).where(cond))
                for row in conn.execute(q):
                    values = tuple(match_value(canonical(v)) for v in row[width:])
                    found.setdefault(values, []).append(self.key_of(row._mapping))
        return found

    @translated
    def find_equal(self, values: Mapping[str, Any], exclude_keys: set[str]) -> str | None:
        """A row whose mapped columns equal `values` and whose key is not in `exclude_keys`."""
        conds = [self.table.c[c] == v if v is not None else self.table.c[c].is_(None) for c, v in values.items()]
        with self.engine.connect() as conn:
            q = self._live(sa.select(*self.keys).where(*conds)).order_by(*self.keys).limit(len(exclude_keys) + 1)
            for row in conn.execute(q):
                if self.key_of(row._mapping) not in exclude_keys:
                    return self.key_of(row._mapping)
        return None

    @translated
    def horizon(self) -> Any:
        """The newest modified-on a concurrent, still-open transaction can no longer write below.

        PostgreSQL and MariaDB report the start of their oldest open transaction; `now()` is the
        transaction start on PostgreSQL, so a row committed late carries a modified-on no older
        than that. SQLite has one writer at a time and no clock we can cast portably: None, and the
        newest modified-on seen is used.
        """
        mod = self.modified
        if mod is None:
            return None
        dialect = self.engine.dialect.name
        with self.engine.connect() as conn:
            if dialect == "postgresql":
                cast_to = mod.type.compile(dialect=self.engine.dialect)
                value = conn.execute(sa.text(
                    "SELECT CAST(COALESCE((SELECT min(xact_start) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND xact_start IS NOT NULL AND pid <> pg_backend_pid() "
                    f"AND backend_type = 'client backend'), now()) AS {cast_to})"
                )).scalar()
                return _in_domain(value, mod) if category(mod.type) in ("datetime", "date") else None
            elif dialect in ("mysql", "mariadb"):
                try:
                    start = conn.execute(sa.text("SELECT MIN(trx_started) FROM information_schema.innodb_trx "
                                                 "WHERE trx_mysql_thread_id <> CONNECTION_ID()")).scalar()
                except sa.exc.DBAPIError:
                    start = None
                now = conn.execute(sa.text("SELECT NOW(6)")).scalar()
                return _in_domain(min(start, now) if start else now, mod)
            return None

    @translated
    def start_mark(self) -> Any:
        """Where a first run's next read starts, taken before it reads anything (a chunked run's
        finalisation reads again from it): the largest modified-on now, the watermark an
        unchunked run would reach by reading every row, but never past the horizon (no
        transaction still open can write a modified-on below it). An app that stamps a change
        with a time older than now (sakila's fixed dates do) is read from its data, not the
        clock. None without a modified-on column."""
        mod = self.modified
        if mod is None:
            return None
        horizon = self.horizon()
        with self.engine.connect() as conn:
            largest = conn.execute(self._live(self._filtered(sa.select(sa.func.max(mod))))).scalar()
        return horizon if largest is None or (horizon is not None and horizon < largest) else largest

    def check_condition(self, condition: str) -> str | None:
        """The database's own complaint about `condition` as a WHERE clause of this table (planned,
        not run: no row is read), or None if it is valid. An app that cannot be reached raises
        AppUnavailable."""
        q = sa.select(sa.literal(1)).select_from(self.table).where(sa.text(f"({condition})")).limit(0)
        try:
            with self.engine.connect() as conn:
                conn.execute(q).all()
        except sa.exc.DBAPIError as exc:
            if is_connection_error(exc):
                raise unavailable(self.label, exc) from exc
            text = str(exc.orig).strip()
            return text.splitlines()[0] if text else type(exc.orig).__name__
        return None

    # -- writing -----------------------------------------------------------------------------

    def key_strategy(self, mapped: Collection[str]) -> str:
        """How new target rows get their key, given the target columns the mapping writes from its
        source: from the source, pre-allocated, or returned by the insert. A composite key's
        columns that no field writes must each have a default (an identity line number, say): the
        insert returns them."""
        unmapped = [c for c in self.keys if c.name not in mapped]
        if not unmapped:
            return "source"
        if self.composite:
            return "returning" if all(has_server_key(c) or c.server_default is not None for c in unmapped) else "none"
        key = self.key
        always = key.identity is not None and bool(key.identity.always)
        if self.engine.dialect.name == "postgresql" and not always and (key.server_default is not None or key.identity is not None):
            return "preallocate"
        if category(key.type) in ("uuid", "string") and key.server_default is None:
            return "uuid"
        if has_server_key(key):
            return "returning"
        return "none"

    @translated
    def preallocate(self, n: int, conn: sa.Connection | None = None) -> list[str]:
        """Ask PostgreSQL for `n` keys from the key column's own default (sequence, identity,
        gen_random_uuid…), on `conn` if given (saving a transaction of its own)."""
        if conn is None:
            with self.engine.begin() as own:
                return self.preallocate(n, own)
        # one array of text: 5,000 rows of a uuid each cost ten times more to fetch and convert
        return list(conn.execute(sa.text(f"SELECT array_agg(CAST({key_default(self.key)} AS text)) FROM generate_series(1, :n)"),
                                 {"n": n}).scalar_one())

    def write(self, items: Sequence[T], fn: Callable[[sa.Connection, Sequence[T]], Sequence[Any] | None],
              ) -> tuple[list[tuple[T, Any]], list[Failure[T]]]:
        """Write `items` with `fn(conn, part)` in transactions of their own, isolating the rows the
        database refuses (`apps.writes`): returns (item, fn's result for it) of those that landed and
        the failures. A lost connection raises AppUnavailable."""
        return split_write(self.engine, self.label, items, fn, self._named)

    def insert_records(self, items: Sequence[T], rows: Sequence[dict[str, Any]], returning: bool,
                       ) -> tuple[list[tuple[T, Any]], list[Failure[T]]]:
        """Insert `rows` (one per item), isolating refused rows: (item, its database-made key or
        None) of those that landed, and the failures."""
        done, failed = self.write(list(zip(items, rows)), lambda conn, part: self.insert(conn, [r for _, r in part], returning))
        return [(i, key) for (i, _), key in done], [Failure(f.item[0], f.message, f.detail) for f in failed]

    def update_records(self, items: Sequence[T], columns: tuple[str, ...], rows: Sequence[dict[str, Any]],
                       ) -> tuple[list[tuple[T, Any]], list[Failure[T]]]:
        """Update rows that change the same `columns` (each carries `_key`), isolating refused rows."""
        done, failed = self.write(list(zip(items, rows)), lambda conn, part: self.update_many(conn, columns, [r for _, r in part]))
        return [(i, None) for (i, _), _ in done], [Failure(f.item[0], f.message, f.detail) for f in failed]

    def delete_records(self, items: Sequence[T], keys: Sequence[str]) -> tuple[list[tuple[T, Any]], list[Failure[T]]]:
        """Delete one record per item (a soft-delete side sets its mark), isolating refusals."""
        done, failed = self.write(list(zip(items, keys)), lambda conn, part: self.delete(conn, [k for _, k in part]))
        return [(i, None) for (i, _), _ in done], [Failure(f.item[0], f.message, f.detail) for f in failed]

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """One transaction on the app's database; a lost connection raises AppUnavailable, any
        other driver error is the caller's to classify (a refused row, say)."""
        try:
            with self.engine.begin() as conn:
                self._named(conn)
                yield conn
        except sa.exc.DBAPIError as exc:
            if is_connection_error(exc):
                raise unavailable(self.label, exc) from exc
            raise

    def _named(self, conn: sa.Connection) -> None:
        """Name this write transaction's session after the job, for its length only: if the job's
        worker freezes mid-transaction, the reaper ends this session, and the rows it holds locked
        stop blocking the redo (`apps.engines.end_sessions`)."""
        if self.session is not None:
            name_session(conn, self.session)

    @translated
    def delete_keys(self, keys: Sequence[str]) -> None:
        """Delete these records now, in a transaction of their own (an operator's Delete records)."""
        with self.engine.begin() as conn:
            self._named(conn)
            self.delete(conn, keys)

    def delete(self, conn: sa.Connection, keys: Sequence[str]) -> None:
        """Delete these records: a soft-delete side only sets its `deleted:` column."""
        cond = self._key_list(keys)
        if self.deleted is None:
            conn.execute(sa.delete(self.table).where(cond))
        else:
            mark = sa.true() if category(self.deleted.type) == "boolean" else sa.func.current_timestamp()
            conn.execute(sa.update(self.table).where(cond).values({self.deleted.name: mark}))

    @translated
    def undelete(self, keys: Sequence[str]) -> set[str]:
        """Clear the `deleted:` mark of these soft-deleted records; returns the keys it revived."""
        if self.deleted is None or not keys:
            return set()
        cond = sa.and_(self._key_list(keys), sa.not_(alive(self.deleted)))
        clear = sa.false() if category(self.deleted.type) == "boolean" else None
        with self.engine.begin() as conn:
            revived = {self.key_of(r._mapping) for r in conn.execute(sa.select(*self.keys).where(cond))}
            if revived:
                conn.execute(sa.update(self.table).where(cond).values({self.deleted.name: clear}))
        return revived

    def _key_list(self, keys: Sequence[str]) -> sa.ColumnElement[bool]:
        """`record key IN (…)` with each key's values bound in the columns' types (a few keys: an action's)."""
        if not self.composite:
            return self.key.in_([key_to_db(k, self.key) for k in keys])
        return sa.tuple_(*self.keys).in_([self.key_values(k) for k in keys])

    def _qualified(self) -> str:
        preparer = self.engine.dialect.identifier_preparer
        name = preparer.quote(self.table.name)
        return f"{preparer.quote(self.table.schema)}.{name}" if self.table.schema else name

    def new_uuid_keys(self, n: int) -> list[str]:
        return [str(uuid.uuid4()) for _ in range(n)]

    def insert(self, conn: sa.Connection, rows: list[dict[str, Any]], returning: bool) -> list[str] | None:
        """Bulk insert; with `returning`, the database-made keys come back in input order."""
        if pg_bulk.usable(conn) and rows and not returning:
            columns = list(rows[0])
            if all(len(r) == len(columns) for r in rows):  # every row writes the same columns
                getter = operator.itemgetter(*columns) if len(columns) > 1 else (lambda r: (r[columns[0]],))
                self.copy_in(conn, columns, map(getter, rows))
                return None
        if not self.composite:
            key = self.key.name
            rows = [{**r, key: key_to_db(r[key], self.key)} if isinstance(r.get(key), str) else r for r in rows]
        if returning:
            result = conn.execute(sa.insert(self.table).returning(*self.keys, sort_by_parameter_order=True), rows)
            return [self.key_of(r._mapping) for r in result]
        conn.execute(sa.insert(self.table), rows)
        return None

    def copy_in(self, conn: sa.Connection, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        """COPY tuples (in `columns` order) into the table, on PostgreSQL.

        SQLAlchemy's bind processors (JSON serialisation and the like) still apply, but not to
        plain scalars, which psycopg dumps exactly as they are (the processor of NUMERIC would go
        through float); a string key goes as text, which PostgreSQL parses into the key's type."""
        procs = [None if c in self.side.key_columns else _copy_processor(self.table.c[c], conn.dialect) for c in columns]
        if any(procs):
            rows = (tuple(v if p is None or v is None else p(v) for v, p in zip(r, procs)) for r in rows)
        pg_bulk.copy_rows(conn, self._qualified(), columns, rows)

    def copy_text(self, conn: sa.Connection, columns: Sequence[str], data: bytes) -> None:
        """COPY lines of PostgreSQL's text format (`copy_pages`'s form) into the table."""
        pg_bulk.copy_text(conn, self._qualified(), columns, data)

    def update_many(self, conn: sa.Connection, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        """One statement for rows that change the same columns; rows carry `_key` plus the columns.

        On PostgreSQL (when the app's user may create temporary tables, which PostgreSQL allows by
        default) the rows go by COPY into a staging table and one UPDATE … FROM applies them;
        elsewhere it is one executemany."""
        if len(rows) > 1 and pg_bulk.usable(conn) and self._may_stage(conn):
            self._update_staged(conn, columns, rows)
            return
        keys = self.keys
        stmt = (
            sa.update(self.table)
            .where(*(k == sa.bindparam(f"_k{i}") for i, k in enumerate(keys)))
            .values({c: sa.bindparam(f"_v_{c}") for c in columns})
        )
        params = [{**{f"_k{i}": v for i, v in enumerate(self.key_values(r["_key"]))}, **{f"_v_{c}": r[c] for c in columns}}
                  for r in rows]
        conn.execute(stmt, params)


    def _may_stage(self, conn: sa.Connection) -> bool:
        if self._temp_ok is None:
            self._temp_ok = bool(conn.execute(sa.text("SELECT has_database_privilege(current_database(), 'TEMP')")).scalar())
        return self._temp_ok

    def _update_staged(self, conn: sa.Connection, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
        quote, dialect = self.engine.dialect.identifier_preparer.quote, self.engine.dialect
        keys = self.keys
        names = [*(f"_k{i}" for i in range(len(keys))), *(f"_v{i}" for i in range(len(columns)))]
        types = [*(k.type.compile(dialect=dialect) for k in keys), *(self.table.c[c].type.compile(dialect=dialect) for c in columns)]
        procs = [_copy_processor(self.table.c[c], dialect) for c in columns]
        pg_bulk.staging(conn, "_ts_updates", list(zip(names, types)),
                        ((*self.key_values(r["_key"]),
                          *(p(r[c]) if p is not None and r[c] is not None else r[c] for c, p in zip(columns, procs)))
                         for r in rows))
        table = self._qualified()
        sets = ", ".join(f"{quote(c)} = s._v{i}" for i, c in enumerate(columns))
        on = " AND ".join(f"{table}.{quote(k.name)} = s._k{i}" for i, k in enumerate(keys))
        conn.execute(sa.text(f"UPDATE {table} SET {sets} FROM _ts_updates AS s WHERE {on}"))
        conn.execute(sa.text("DROP TABLE _ts_updates"))


_SCALARS = frozenset({"string", "integer", "numeric", "float", "boolean", "datetime", "date", "time", "uuid", "binary"})


def _copy_processor(col: sa.Column[Any], dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    """How a value goes into COPY for `col`: plain scalars as they are (psycopg dumps them
    exactly), JSON as its text (COPY cannot adapt a dict or list as json), anything else through
    the type's own bind processor."""
    kind = category(col.type)
    if kind in _SCALARS:
        return None
    if kind == "json":
        return lambda v: json.dumps(v, ensure_ascii=False)
    return col.type.bind_processor(dialect)


def _dicts(result: sa.CursorResult[Any]) -> list[dict[str, Any]]:
    """Rows as dicts; zipping plain tuples costs a fraction of building each Row's mapping."""
    keys = list(result.keys())
    return [dict(zip(keys, r)) for r in result]


_reflected: dict[tuple[str, str | None, str], tuple[str, sa.Table]] = {}


def _reflect(engine: sa.Engine, side: SideSpec) -> sa.Table:
    """The side's table, reflected once per process while its definition stays the same.

    Reflection takes a dozen catalog queries, a good part of a small incremental job; on
    PostgreSQL one query fingerprints the columns (names, types, nullability, defaults, identity)
    and the primary key, and a changed fingerprint reflects again. Other databases reflect per job."""
    if engine.dialect.name != "postgresql":
        return reflect_table(engine, side.table, side.schema_)
    quote = engine.dialect.identifier_preparer.quote
    name = f"{quote(side.schema_)}.{quote(side.table)}" if side.schema_ else quote(side.table)
    with engine.connect() as conn:
        fingerprint = conn.execute(sa.text(
            "SELECT md5(string_agg(concat_ws(':', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull::text, "
            "a.attidentity::text, pg_get_expr(d.adbin, d.adrelid)), ',' ORDER BY a.attnum) "
            "|| coalesce((SELECT conkey::text FROM pg_constraint WHERE conrelid = to_regclass(:t) AND contype = 'p'), '')) "
            "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = to_regclass(:t) AND a.attnum > 0 AND NOT a.attisdropped"), {"t": name}).scalar()
    cache_key = (engine.url.render_as_string(hide_password=False), side.schema_, side.table)
    hit = _reflected.get(cache_key)
    if fingerprint is not None and hit is not None and hit[0] == fingerprint:
        return hit[1]
    table = reflect_table(engine, side.table, side.schema_)
    if fingerprint is not None:
        _reflected[cache_key] = (fingerprint, table)
    return table


def alive(deleted: sa.Column[Any]) -> sa.ColumnElement[bool]:
    """Not soft-deleted: a boolean mark unset, or a deleted-at (any other type) null."""
    if category(deleted.type) == "boolean":
        return sa.not_(sa.func.coalesce(deleted, sa.false()))
    return deleted.is_(None)


def key_in(column: sa.Column[Any], keys: list[str], dialect: str) -> sa.ColumnElement[bool]:
    """`column IN keys` for an app's key column: string keys turned into the column's type."""
    return _key_in(column, keys, dialect, lambda k: key_to_db(k, column))


def match_value(value: Any) -> Any:
    """How a value takes part in match-based coupling: text without case."""
    return value.lower() if isinstance(value, str) else value


def _in_domain(value: Any, col: sa.Column[Any]) -> Any:
    """Keep a horizon comparable with the column: naive for naive columns."""
    if value is None:
        return None
    if category(col.type) == "datetime" and not getattr(col.type, "timezone", False) and getattr(value, "tzinfo", None):
        return value.replace(tzinfo=None)
    return value
