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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

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
    return (pg_bulk.usable(store) and not plan.keeps_snapshot
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
        batch = None
        try:
            with target.transaction() as conn:  # one target transaction: its key defaults, then the rows
                keys = page.target_keys
                if not plan.key_from_source:  # a failing key default fails the job (AppError), not a record
                    keys = (target.preallocate(len(keys), conn) if target.key_strategy(plan.key_mapped) == "preallocate"
                            else target.new_uuid_keys(len(keys)))
                with ctx.write() as store:  # committed before the rows are
                    batch, _ = cs.stage_inserts(store, plan.mapping, plan.direction, list(zip(page.source_keys, keys)),
                                                ctx.job_id, ids=False, chunk_id=ctx.chunk_id)
                columns = [target.key.name, *plan.target_fields] if not plan.key_from_source else list(plan.target_fields)
                tuples = ((k, *v) for k, v in zip(keys, page.values)) if not plan.key_from_source else page.values
                if pg_bulk.usable(conn):
                    target.copy_in(conn, columns, tuples)
                else:
                    target.insert(conn, [dict(zip(columns, t)) for t in tuples], returning=False)
            written = Written(page, batch, keys)
        except sa.exc.DBAPIError:
            if batch is None:  # the store refused the intents: nothing was written, the job fails as it is
                raise
            # Some row is refused: the intents become pending couplings, and the general path
            # inserts the page record by record where it must, failing only the bad ones.
            with ctx.write() as store:
                cs.promote_intents(store, plan.mapping, batch, drop=True)
            ctx.collided.update((plan.direction, k) for k in page.source_keys)
            return None, general(page.rows)
    if page.refused:
        counters.add(general(page.refused))
    return written, counters


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


def finish(ctx: RunContext, total: Counters) -> None:
    """After a bulk load: planner statistics of a table just grown by COPY lag until autovacuum
    comes by; until then the next job's key lookups may scan every coupling (measured: 0.3 s for
    1,000 keys among 1M, 2 ms with statistics)."""
    if total.inserted >= ANALYZE_AFTER:
        with ctx.write() as conn:
            cs.analyze(conn)


ANALYZE_AFTER = 10_000  # couplings a bulk load adds before it refreshes the planner's statistics
