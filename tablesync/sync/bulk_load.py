"""The first run of a one-way mapping: every source record is new, so each is an insert.

There is nothing to decide per record beyond mapping its values, so this path skips the general
engine's per-record decisions, outcomes and events, and moves each page as three streams: the
mapped rows into the target by COPY, the page's insert intents as one row, and its couplings, in
their final state, by one binary COPY (a bulk insert's record log entry is its coupling, see
`couplings.inserted_by_job`).

Crash safety is the general insert path's: the intents commit before the target rows are written,
and the couplings replace them in one store transaction after; intents a crash leaves behind
become pending couplings at the next job's start and are finished (adopted) like any other.
A record whose values cannot be mapped, or a page the target refuses, goes through the general
path, which isolates the bad records and reports each one.

When both apps are PostgreSQL and the mapping copies each column into one whose text form loads
alike (`passes_through`), a page never becomes Python values: it is read as COPY text
(`AppTable.copy_pages`), only its key fields are looked at, and it is written as COPY text
(`TextPage`). Its couplings are key pairs without hashes: the first run that reads a record again
compares it with its target and records them, which an incremental run does for every changed
record anyway (measured: Python's share of a record 13 → 3 µs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tablesync.apps.schema import category, same_text_form
from tablesync.apps.table import AppTable
from tablesync.apps.values import content_hash
from tablesync.db import pg_bulk
from tablesync.db.keys import encode_key
from tablesync.errors import RecordError
from tablesync.store import couplings as cs
from tablesync.store.jobs import Counters
from tablesync.sync.context import RunContext
from tablesync.sync.plan import DirectionPlan, canonical_values, copied_tuple, target_values
from tablesync.sync.record import Batch, Landing, record
from tablesync.sync.select import parent_refs


@dataclass
class Page:
    """One page, mapped: parallel lists in source row order."""

    rows: list[dict[str, Any]]  # the source rows (for the general path, should the target refuse the page)
    source_keys: list[str]
    target_keys: list[str | None]
    values: list[tuple[Any, ...]]  # in plan.target_fields order
    source_hashes: list[str]
    target_hashes: list[str]
    modified: list[str | None]
    refused: list[dict[str, Any]]  # rows whose values cannot be mapped: the general path reports them


def usable(plan: DirectionPlan, target: AppTable, store: sa.Engine) -> bool:
    """Everything the path needs: a PostgreSQL store (staged intents), target keys known before
    the write, one-way semantics without match_on or sync_only_coupled."""
    return (target.sql and pg_bulk.usable(store) and not plan.keeps_snapshot
            and not plan.match_columns and not plan.sync_only_coupled
            and target.key_strategy(plan.key_mapped) in ("preallocate", "uuid", "source"))


def map_page(plan: DirectionPlan, rows: list[dict[str, Any]], refs: Any) -> Page:
    """The Python half of a page: canonical values, hashes and target values of every row."""
    mod_col, fields = plan.source.modified, plan.target_fields
    page = Page(rows, [], [], [], [], [], [], [])
    from_source = plan.key_from_source
    key_index = [fields.index(c) for c in plan.target_key_columns] if from_source else []
    for row in rows:
        canon = canonical_values(row, plan.source_columns)
        source_hash = content_hash(canon)
        copied = copied_tuple(plan, row)
        if copied is not None:
            mapped, target_hash = copied, source_hash
        else:
            try:
                values = target_values(plan, row, refs)
            except RecordError:
                page.refused.append(row)
                continue
            hash_canon = canonical_values(values, plan.target_hash_columns)
            target_hash = source_hash if hash_canon == canon else content_hash(hash_canon)
            mapped = tuple(map(values.get, fields))
        target_key = None
        if from_source:
            parts = [mapped[i] for i in key_index]
            if any(v is None for v in parts):
                page.refused.append(row)
                continue
            target_key = encode_key(parts)
        page.source_keys.append(plan.source_key(row))
        page.target_keys.append(target_key)
        page.values.append(mapped)
        page.source_hashes.append(source_hash)
        page.target_hashes.append(target_hash)
        page.modified.append(cs.modified_text(row.get(mod_col)) if mod_col else None)
    return page


@dataclass
class Written:
    """A page whose target rows are in: what its landing needs."""

    page: Page
    batch: int
    target_keys: list[str | None]


def insert_page(ctx: RunContext, plan: DirectionPlan, target: AppTable, page: Page,
                general: Callable[[list[dict[str, Any]]], Counters]) -> tuple[Written | None, Counters]:
    """Intents, then the target rows; `general` takes what this path cannot (and its counters
    are returned). The page's couplings are written by `land_page`, possibly in another thread."""
    counters = Counters()
    written = None
    if page.source_keys:
        columns = [target.key.name, *plan.target_fields] if not plan.key_from_source else list(plan.target_fields)

        def write(conn: sa.Connection, keys: list[str | None]) -> None:
            tuples = ((k, *v) for k, v in zip(keys, page.values)) if not plan.key_from_source else page.values
            if pg_bulk.usable(conn):
                target.copy_in(conn, columns, tuples)
            else:
                target.insert(conn, [dict(zip(columns, t)) for t in tuples], returning=False)

        staged = _staged(ctx, plan, target, page.source_keys, page.target_keys, write)
        if staged is None:
            return None, general(page.rows)
        written = Written(page, *staged)
    if page.refused:
        counters.add(general(page.refused))
    return written, counters


def _staged(ctx: RunContext, plan: DirectionPlan, target: AppTable, source_keys: list[str],
            target_keys: list[str | None], write: Callable[[sa.Connection, list[str | None]], None],
            ) -> tuple[int, list[str | None]] | None:
    """In one target transaction: the keys' defaults (unless they come from the source), the
    intents (committed in the store before any row is written), then `write(conn, keys)`.
    Returns the intents' batch and the target keys; or None when the target refused a row: the
    intents are then pending couplings, for the general path to insert record by record."""
    batch = None
    try:
        with target.transaction() as conn:  # one target transaction: its key defaults, then the rows
            keys = target_keys
            if not plan.key_from_source:  # a failing key default fails the job (AppError), not a record
                keys = list(target.preallocate(len(keys), conn) if target.key_strategy(plan.key_mapped) == "preallocate"
                            else target.new_uuid_keys(len(keys)))
            with ctx.write() as store:  # committed before the rows are
                batch, _ = cs.stage_inserts(store, plan.mapping, plan.direction, list(zip(source_keys, keys)),
                                            ctx.job_id, ids=False, chunk_id=ctx.chunk_id)
            write(conn, keys)
        return batch, keys
    except sa.exc.DBAPIError:
        if batch is None:  # the store refused the intents: nothing was written, the job fails as it is
            raise
        # Some row is refused: the intents become pending couplings, and the general path
        # inserts the page record by record where it must, failing only the bad ones.
        with ctx.write() as store:
            cs.promote_intents(store, plan.mapping, batch, drop=True)
        ctx.collided.update((plan.direction, k) for k in source_keys)
        return None


def land_page(ctx: RunContext, plan: DirectionPlan, written: Written | None) -> Counters:
    """The couplings of a written page, and its count, in one store transaction (`record`)."""
    if written is None:
        return Counters()
    page = written.page
    batch = Batch(ctx.job_id, plan.mapping, plan.direction, counters=Counters(inserted=len(page.source_keys)))
    batch.landings.append(Landing(written.batch, (
        (None, sk, tk, sh, th, None, sm) for sk, tk, sh, th, sm
        in zip(page.source_keys, written.target_keys, page.source_hashes, page.target_hashes, page.modified))))
    record(ctx, batch)
    return batch.counters


# -- passed through as COPY text -----------------------------------------------------------------

_KEY_CATEGORIES = ("integer", "string", "uuid")  # whose COPY text is the record key's string (`str` of the value)


def passes_through(plan: DirectionPlan, source: AppTable, target: AppTable) -> bool:
    """Can a first run's pages go from source to target as COPY text? Both apps PostgreSQL; every
    field copies one source column as it is (no transform, constant or parent key) into a column
    whose text form loads alike (`schema.same_text_form`: arrays, enums, tsvector of one type
    included); the source key is its primary key (never NULL) and every key column, either side,
    one whose text is the record key's string; a target key from the source is one column."""
    if not (source.sql and target.sql and pg_bulk.usable(source.engine) and pg_bulk.usable(target.engine)):
        return False
    if not all(r.source is not None and r.transform is None and r.parent is None and r.constant is None for r in plan.rules):
        return False
    if not all(c.primary_key and category(c.type) in _KEY_CATEGORIES for c in source.keys):
        return False
    if plan.key_from_source and (target.composite or category(target.key.type) not in _KEY_CATEGORIES):
        return False
    dialect = target.engine.dialect
    return all(same_text_form(source.table.c[r.source], target.table.c[r.target], dialect) for r in plan.rules)


@dataclass
class TextPage:
    """One page as COPY text: per record, the target fields' part of its line, its source key,
    and, when the source writes the target key, that key's field."""

    lines: list[bytes]
    source_keys: list[str]
    target_fields: list[bytes] | None


def split_text(plan: DirectionPlan, lines: list[bytes]) -> TextPage:
    """A page of `AppTable.copy_pages` lines (the source key's fields, then each field's source
    column, in target field order) cut into what the writes need. Only the key fields are decoded."""
    width = len(plan.source_key_columns)
    if width == 1:
        heads, rests = zip(*(line.split(b"\t", 1) for line in lines))
        keys = [f.decode() if b"\\" not in f else str(pg_bulk.unescape(f)) for f in heads]
    else:
        cut = [line.split(b"\t", width) for line in lines]
        rests = tuple(c[width] for c in cut)
        keys = [encode_key([pg_bulk.unescape(f) for f in c[:width]]) for c in cut]
    target_fields = None
    if plan.key_from_source:
        at = plan.target_fields.index(plan.target_key_columns[0])
        target_fields = [rest.split(b"\t", at + 1)[at] for rest in rests]
    return TextPage(list(rests), keys, target_fields)


@dataclass
class WrittenText:
    """A text page whose target rows are in: its couplings' key pairs."""

    batch: int
    source_keys: list[str]
    target_keys: list[str]


def insert_text(ctx: RunContext, plan: DirectionPlan, source: AppTable, target: AppTable, page: TextPage,
                general: Callable[[list[dict[str, Any]]], Counters]) -> tuple[WrittenText | None, Counters]:
    """`insert_page` for a text page: the target rows go as the COPY text they came as, each
    prefixed with its new key unless the source writes it. A page the target refuses is read
    again as rows, for the general path."""
    fields = page.target_fields
    columns = list(plan.target_fields) if fields is not None else [target.key.name, *plan.target_fields]

    def write(conn: sa.Connection, keys: list[str | None]) -> None:
        data = (b"\n".join(page.lines) + b"\n" if fields is not None
                else b"".join([pg_bulk.escape(k) + b"\t" + line + b"\n" for k, line in zip(keys, page.lines)]))
        target.copy_text(conn, columns, data)

    keys = [pg_bulk.unescape(f) for f in fields] if fields is not None else [None] * len(page.lines)
    staged = _staged(ctx, plan, target, page.source_keys, keys, write)
    if staged is None:
        return None, general(list(source.fetch(page.source_keys, plan.source_columns).values()))
    batch, made = staged
    return WrittenText(batch, page.source_keys, [str(k) for k in made]), Counters()


def land_text(ctx: RunContext, plan: DirectionPlan, written: WrittenText | None) -> Counters:
    """`land_page` for a text page: its key pairs, and its count, in one store transaction."""
    if written is None:
        return Counters()
    batch = Batch(ctx.job_id, plan.mapping, plan.direction, counters=Counters(inserted=len(written.source_keys)))
    batch.landings.append(Landing(written.batch, (), keys=(written.source_keys, written.target_keys)))
    record(ctx, batch)
    return batch.counters


Stages = tuple[int, Callable[[], tuple[Any, Counters]], Callable[[Any], Counters]]
"""A page of a first run: its number of rows, its write stage (what it wrote, its counters) and
its landing stage (given what was written: the couplings, in the store)."""


def page_stages(ctx: RunContext, plan: DirectionPlan, source: AppTable, target: AppTable, size: int,
                general: Callable[[list[dict[str, Any]]], Counters], low: str | None = None,
                high: str | None = None) -> Iterator[Stages]:
    """The pages of a first run (of a key range, with `low`/`high`), each read and mapped, its
    writes left to the caller's pipeline: as COPY text when it `passes_through`, else as rows."""
    if passes_through(plan, source, target):
        for lines in source.copy_pages([str(r.source) for r in plan.rules], size, low, high):
            text = split_text(plan, lines)
            yield (len(lines), lambda text=text: insert_text(ctx, plan, source, target, text, general),
                   lambda written: land_text(ctx, plan, written))
        return
    for rows in source.pages(plan.source_columns, None, size, low, high):
        with ctx.store.connect() as conn:
            page = map_page(plan, rows, parent_refs(conn, plan, rows))
        yield (len(rows), lambda page=page: insert_page(ctx, plan, target, page, general),
               lambda written: land_page(ctx, plan, written))


def finish(ctx: RunContext, total: Counters) -> None:
    """After a bulk load: planner statistics of a table just grown by COPY lag until autovacuum
    comes by; until then the next job's key lookups may scan every coupling (measured: 0.3 s for
    1,000 keys among 1M, 2 ms with statistics)."""
    if total.inserted >= ANALYZE_AFTER:
        with ctx.write() as conn:
            cs.analyze(conn)


ANALYZE_AFTER = 10_000  # couplings a bulk load adds before it refreshes the planner's statistics
