"""One direction of one mapping run, stage by stage:

1. select: every coupling whose last attempt failed or never finished (re-read by key), then the
   source's changes beyond its watermark, keyset-paginated in batches (`AppTable.pages`);
2. decide: per batch, the couplings and the coupled target rows are read and `decide` (pure) says
   what to do with each record; match_on turns inserts into couplings (`matching`);
3. write and record: the run's sink takes the batch (`write.Writer`: `targets` writes the target,
   `record` writes the store in one transaction; a dry run's sink only reports);
4. the side's watermark advances to what was read, never past an open write transaction.

A first run with a PostgreSQL store takes the bulk path (`bulk_load`) instead of 2 and 3.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from tablesync.apps.tables import Table
from tablesync.errors import RecordError
from tablesync.store import couplings as cs
from tablesync.store.jobs import Counters
from tablesync.store.watermarks import get_watermark, minus_overlap
from tablesync.sync import bulk_load
from tablesync.sync.context import RunContext
from tablesync.sync.decide import Decision, decide, prepare, settled
from tablesync.sync.deletions import scan_deletions
from tablesync.sync.matching import match_decisions
from tablesync.sync.plan import DirectionPlan, Refs, target_values
from tablesync.sync.select import advance_watermark, page_top, parent_refs

BULK_PAGES = 4  # an initial load moves pages of this many batches: measured 10 % faster than one, at 2× the memory


STORED: Any = object()  # run_direction's default watermark: the side's, as the store has it


def run_direction(ctx: RunContext, plan: DirectionPlan, source: Table, target: Table, watermark: Any = STORED,
                  reread: bool = True, scan: bool = True) -> Counters:
    """Sync every change of `source` (beyond its watermark) and every unfinished coupling onto
    `target`. A chunked run's finalisation passes its start `watermark` (or, for a source with no
    modified-on column, `reread=False`: its ranges read every row already), and after a first
    run `scan=False` (what it just inserted cannot have been coupled before)."""
    total = Counters()
    side = plan.source_side()
    columns = plan.source_columns
    if not ctx.scoped and scan:
        total.add(scan_deletions(ctx, plan, source, target, plan.on_deletion_conflict, every_seconds=plan.deletion_scan_seconds))
    with ctx.store.connect() as conn:
        if watermark is STORED:
            watermark = None if ctx.full else get_watermark(conn, plan.mapping, side)
        retry = [] if ctx.scoped else cs.retry_keys(conn, plan.mapping, plan.direction, failed_in=ctx.job_id or None)
    horizon = source.horizon()
    since = minus_overlap(watermark, ctx.overlap_seconds)

    for i in range(0, len(retry), ctx.batch_size):
        chunk = retry[i:i + ctx.batch_size]
        rows = source.fetch(chunk, columns)
        _forget_vanished(ctx, plan, [k for k in chunk if k not in rows])
        total.add(process_rows(ctx, plan, source, target, list(rows.values())))
        ctx.beat()

    retried = set(retry)
    max_seen = None
    with ctx.store.connect() as conn:  # a first run: no coupling to look up (pages never repeat a key)
        first = watermark is None and not retry and not cs.has_couplings(conn, plan.mapping)
    bulk = first and ctx.sink.bulk_loads() and bulk_load.usable(plan, target, ctx.store)  # every record an insert
    adding = threading.Lock()

    def add(counters: Counters) -> None:  # from the pipeline's threads
        with adding:
            total.add(counters)

    # Pages by key never repeat a key, so one batch can be written while the next is read and
    # decided; pages by modified-on can (a row changed meanwhile), and match_on claims target
    # records across batches: those go one batch at a time.
    general = (lambda rows: process_rows(ctx, plan, source, target, rows))  # what the bulk path cannot take
    with Pipeline(enabled=(since is None or source.modified is None) and not plan.match_columns, stages=2) as pipe:
        if bulk and reread:  # the first run reads every row, by key: what changes meanwhile, the next run reads again
            max_seen = source.start_mark()
            for _, write, land in bulk_load.page_stages(ctx, plan, source, target, ctx.batch_size * BULK_PAGES, general):
                pipe.submit(lambda write=write: counted(add, *write()), lambda written, land=land: add(land(written)))
                ctx.beat()
        for page in source.pages(columns, since, ctx.batch_size) if reread and not bulk else ():
            max_seen = page_top(source, page, max_seen)
            rows = [r for r in page if source.key_of(r) not in retried]
            decided = decide_rows(ctx, plan, source, target, rows, couplings={} if first else None)
            if decided is not None:
                pipe.submit(lambda decided=decided: add(apply_decided(ctx, plan, source, target, *decided)))
            ctx.beat()
    if not ctx.scoped:  # a range resync read part of the table: how far it read says nothing of the rest
        advance_watermark(ctx, plan.mapping, side, watermark, max_seen, horizon if reread else None)
    if bulk:
        bulk_load.finish(ctx, total)
    return total


class Pipeline:
    """Runs the stages of each submitted batch in background threads, one thread per stage, batches
    in order, so the next batch is read and decided meanwhile: the databases' share of the writes
    overlaps Python's share of the next batch, and a batch's store write overlaps the next one's
    target write. At most two batches are in flight; a failure is raised at the next submit or at
    exit. Disabled, a submit runs its stages at once."""

    def __init__(self, enabled: bool, stages: int = 1) -> None:
        self._pools = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tablesync-write{i}")
                       for i in range(stages)] if enabled else []
        self._pending: list[Future[Any]] = []

    def submit(self, *stages: Callable[[Any], Any]) -> None:
        """`stages[0]()` first, then each next stage with the previous one's result."""
        if not self._pools:
            result = stages[0]()
            for stage in stages[1:]:
                result = stage(result)
            return
        while len(self._pending) >= 2:
            self._pending.pop(0).result()
        future: Future[Any] = self._pools[0].submit(stages[0])
        for pool, stage in zip(self._pools[1:], stages[1:]):
            future = pool.submit(lambda stage=stage, prior=future: stage(prior.result()))
        self._pending.append(future)

    def _wait(self) -> None:
        while self._pending:
            self._pending.pop(0).result()

    def __enter__(self) -> "Pipeline":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._wait()
        finally:
            for pool in self._pools:
                pool.shutdown(wait=True)


def counted(add: Callable[[Counters], None], result: Any, counters: Counters) -> Any:
    add(counters)
    return result


def process_rows(ctx: RunContext, plan: DirectionPlan, source: Table, target: Table, rows: list[dict[str, Any]],
                 couplings: dict[str, Any] | None = None) -> Counters:
    """Decide and apply one batch of source rows one way (`couplings` by source key, if already read)."""
    decided = decide_rows(ctx, plan, source, target, rows, couplings)
    return Counters() if decided is None else apply_decided(ctx, plan, source, target, *decided)


def decide_rows(ctx: RunContext, plan: DirectionPlan, source: Table, target: Table, rows: list[dict[str, Any]],
                couplings: dict[str, Any] | None = None) -> tuple[list[Decision], dict[str, Any]] | None:
    """The reading half of `process_rows`: decisions and each record's modified-on (None: no rows)."""
    if not rows:
        return None
    keys = [source.key_of(r) for r in rows]
    with ctx.store.connect() as conn:
        if couplings is None:
            couplings = cs.by_source_keys(conn, plan.mapping, plan.direction, keys)
        refs = parent_refs(conn, plan, rows)
    couplings = _recover_unkeyed(ctx, plan, target, rows, couplings, refs)
    prepared = prepare(plan, rows)
    wanted = [c.target_key for k, c in couplings.items() if c.target_key is not None and not c.skipped
              and (ctx.full or not settled(c, prepared[k][1] if k in prepared else ""))]
    targets = target.fetch(wanted, plan.target_fields, apply_filter=False)
    decisions = decide(plan, rows, couplings, targets, refs, prepared, verify=ctx.full)
    match_decisions(ctx.store, plan, source, target, decisions)
    modified_of = {source.key_of(r): r.get(source.side.modified) if source.side.modified else None for r in rows}
    return decisions, modified_of


def apply_decided(ctx: RunContext, plan: DirectionPlan, source: Table, target: Table, decisions: list[Decision],
                  modified_of: dict[str, Any]) -> Counters:
    """Hand a decided batch to the run's sink; every coupling it decided is handled for this job."""
    counters = ctx.sink.apply(ctx, plan, source, target, decisions, modified_of)
    ctx.handled.update(d.cid for d in decisions if d.cid is not None)
    return counters


def _recover_unkeyed(ctx: RunContext, plan: DirectionPlan, target: Table, rows: list[dict[str, Any]],
                     couplings: dict[str, Any], refs: Refs) -> dict[str, Any]:
    """Intents interrupted while the database was making their key: find the row they may have made."""
    suspects = [c for c in couplings.values() if c.state == "pending" and c.target_key is None and c.last_result is None]
    if not suspects:
        return couplings
    by_key = {plan.source_key(r): r for r in rows}
    adopted: list[tuple[int, str]] = []
    taken: set[str] = set()
    for c in suspects:
        row = by_key.get(c.source_key)
        if row is None:
            continue
        try:
            values = target_values(plan, row, refs)
        except RecordError:
            continue
        found = target.find_equal(values, taken)
        if found is not None:
            with ctx.store.connect() as conn:
                if cs.target_holders(conn, plan.mapping, plan.direction, [found]):
                    continue
            adopted.append((c.id, found))
            taken.add(found)
    if adopted:
        ctx.sink.adopt(ctx, plan, adopted)
        with ctx.store.connect() as conn:
            couplings = cs.by_source_keys(conn, plan.mapping, plan.direction, list(by_key))
    return couplings


def _forget_vanished(ctx: RunContext, plan: DirectionPlan, keys: list[str]) -> None:
    """Retry keys whose source row is gone: an unconfirmed insert intent has nothing left to insert."""
    if not keys:
        return
    with ctx.store.connect() as conn:
        states = cs.by_source_keys(conn, plan.mapping, plan.direction, keys)
    ctx.sink.forget_intents(ctx, [c.id for c in states.values() if c.state == "pending" and c.target_key is None])
