"""Chunked runs, the engine's half: planning the key ranges, syncing one range, finalising.

A first run or a full resync of a large one-way mapping is split into key ranges so that workers
on many machines share it. The worker runtime stores the plan and hands out the ranges
(`worker.chunks`); here is only what a run does with them:

1. plan (`plan_ranges`): the start watermark first, then the ranges, by walking the source's key
   index (`AppTable.key_boundaries`), so sparse or skewed keys split evenly;
2. sync a range (`sync_range`): the same stages and crash-idempotent writes as an unchunked run
   (a first run's bulk path with its staged intents; otherwise the general path, which reads the
   couplings); the range's done transition commits with its last batch's couplings;
3. finalise (`finalise`): once every range is done, what changed since the start watermark is read
   again, unfinished couplings are retried, the deletion scan runs, and the watermark moves on.

A range redone after a crash takes the general path: what its first attempt wrote is found
coupled (or pending, and finished), so redoing a range twice is harmless.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tablesync.apps.tables import Table
from tablesync.config.model import MappingSpec, source_side
from tablesync.db import pg_bulk
from tablesync.db.engine import utcnow
from tablesync.errors import UsageError
from tablesync.store import couplings as cs
from tablesync.store.chunks import Range
from tablesync.store.jobs import Counters
from tablesync.store.watermarks import decode, encode, get_watermark
from tablesync.sync import bulk_load
from tablesync.sync.context import RunContext
from tablesync.sync.deletions import mark_scanned
from tablesync.sync.one_way import BULK_PAGES, Pipeline, apply_decided, counted, decide_rows, process_rows, run_direction
from tablesync.sync.plan import DirectionPlan


@dataclass(frozen=True)
class RangePlan:
    """A run to be chunked: its ranges, and what every chunk and the finalisation need."""

    ranges: list[Range]
    state: dict[str, Any]  # start watermark (tagged), bulk, scoped (--where), max_parallel


def chunkable(spec: MappingSpec, store: sa.Engine) -> bool:
    """Only one-way runs on a PostgreSQL store are chunked: claims need `SKIP LOCKED`, and a
    two-way merge decides pairs across both sides' changes at once."""
    return spec.direction != "bidirectional" and pg_bulk.usable(store)


def plan_ranges(ctx: RunContext, plan: DirectionPlan, source: Table, target: Table, chunk_rows: int,
                max_parallel: int | None, where: str | None) -> RangePlan | None:
    """The ranges of a run, or None when it runs in one piece: an incremental run, or a source
    with no more than `chunk_rows` rows (selected by its filter and `where`)."""
    if not source.sql:  # an HTTP app is read through its own pages, not in key ranges
        return None
    with ctx.store.connect() as conn:
        mark = get_watermark(conn, plan.mapping, plan.source_side())
        coupled = cs.has_couplings(conn, plan.mapping)
    first = mark is None and not coupled
    if not (first or ctx.full or where):
        return None
    start = source.start_mark()  # before the first range is read: what changes after it, finalise reads again
    highs, tail = source.key_boundaries(chunk_rows)
    if not highs:
        return None
    lows: list[str | None] = [None, *highs]
    ranges = [Range(low, high, chunk_rows) for low, high in zip(lows, highs)] + [Range(highs[-1], None, tail)]
    return RangePlan(ranges, {
        "start": encode(start) if start is not None else None, "planned_at": encode(utcnow()), "reread": source.modified is not None,
        "bulk": first and not where and bulk_load.usable(plan, target, ctx.store), "scoped": bool(where),
        "where": where, "max_parallel": max_parallel or len(ranges),
    })


@dataclass
class RangeRun:
    """A range whose batches went into a pipeline that the worker shares with its next ranges, so
    that the next range is read while this one's last writes drain: what `end_range` needs once
    the pipeline is drained. A failure is kept here, never raised into the shared pipeline."""

    ctx: RunContext
    done: Callable[[sa.Connection], None]
    total: Counters = field(default_factory=Counters)
    handed: bool = False  # was `done` handed to the last batch's record stage?
    error: BaseException | None = None


def range_pipeline() -> Pipeline:
    """The pipeline a worker's consecutive ranges share (`sync_range`)."""
    return Pipeline(enabled=True, stages=2)


def sync_range(ctx: RunContext, plan: DirectionPlan, source: Table, target: Table, low: str | None,
               high: str | None, bulk: bool, done: Callable[[sa.Connection], None], pipe: Pipeline) -> RangeRun:
    """Read and decide the source rows of one key range, and hand their writes to `pipe`. `done`
    runs in the store transaction of the range's last batch (or, see `end_range`, in one of its
    own, should that batch record nothing)."""
    run = RangeRun(ctx, done)
    adding = threading.Lock()

    def guarded(stage: Callable[..., Any]) -> Callable[..., Any]:
        """A stage of this range: skipped once the range failed, its failure kept in `run`."""
        def call(*args: Any) -> Any:
            if run.error is not None:
                return None
            try:
                return stage(*args)
            except BaseException as exc:  # noqa: BLE001 - kept for end_range, which raises it
                run.error = exc
                return None
        return call

    def add(counters: Counters) -> None:  # from the pipeline's threads
        with adding:
            run.total.add(counters)

    def recorded(stage: Callable[[], Counters], final: bool) -> None:
        """The record stage of a batch: the last one carries the done transition."""
        if final:
            ctx.closing = done
        add(stage())

    def general(rows: list[dict[str, Any]]) -> Counters:
        return process_rows(ctx, plan, source, target, rows)

    def decided_pages(size: int) -> Iterator[bulk_load.Stages]:
        """The general path's pages in the bulk path's form: its one stage, writing and recording, second."""
        for page in source.pages(plan.source_columns, None, size, low, high):
            decided = decide_rows(ctx, plan, source, target, page)
            assert decided is not None  # a page is never empty
            yield len(page), lambda decided=decided: (decided, Counters()), lambda decided: apply_decided(
                ctx, plan, source, target, *decided)

    size = ctx.batch_size * (BULK_PAGES if bulk else 1)
    try:
        pages = bulk_load.page_stages(ctx, plan, source, target, size, general, low, high) if bulk else decided_pages(size)
        for count, write, land in pages:
            if run.error is not None:
                break
            # A short page is the range's last (the reads stop after it): its batch carries the
            # done transition. A range ending on a full page finds out one empty read later.
            final = count < size
            run.handed = run.handed or final
            pipe.submit(guarded(lambda write=write: counted(add, *write())),
                        guarded(lambda written, land=land, final=final: recorded(lambda: land(written), final)))
            ctx.beat()
    except BaseException as exc:  # noqa: BLE001 - a read, a decision, or the lease lost: end_range raises it
        run.error = run.error or exc
    return run


def end_range(run: RangeRun) -> Counters:
    """After the pipeline drained: the range's failure, raised; or its done transition, if no
    batch of the range carried it; and the range's counters."""
    if run.error is not None:
        raise run.error
    if not run.handed or run.ctx.closing is not None:  # an empty range, or a last batch that recorded nothing
        run.ctx.closing = None
        with run.ctx.write() as conn:
            run.done(conn)
    return run.total


def finalise(ctx: RunContext, plan: DirectionPlan, source: Table, target: Table, state: dict[str, Any]) -> Counters:
    """After the last range: read again what changed since the start watermark (the ranges may have
    missed it), retry unfinished couplings, scan for deletions, and move the watermark on. A range
    resync (`--where`) has nothing to add."""
    if state.get("scoped"):
        return Counters()
    start = decode(state["start"]) if state.get("start") is not None else None
    first = bool(state.get("bulk"))
    if first:
        # As after an unchunked bulk load: the planner's statistics of a table just grown by COPY,
        # and the deletion scan counted as done at the start, when nothing was coupled yet (a
        # scan of every key just inserted would find none gone, and cost the finalisation
        # as much as four chunks per million rows).
        with ctx.write() as conn:
            cs.analyze(conn)
        mark_scanned(ctx, plan, decode(state["planned_at"]))
    return run_direction(ctx, plan, source, target, watermark=start, reread=bool(state.get("reread")), scan=not first)


def check_where(source: Table, where: str) -> None:
    """Refuse a `--where` expression the source cannot evaluate (UsageError naming it and the
    database's own message), or one that is more than an expression."""
    text = where.strip()
    if not text:
        raise UsageError("--where is empty: give a condition on the source table, such as \"id BETWEEN 100 AND 900\"")
    if ";" in text or "--" in text or "/*" in text:
        raise UsageError(f"--where {where!r}: give one condition, without ';' or comments")
    problem = source.check_condition(text)
    if problem is not None:
        raise UsageError(f"--where {where!r} is not a valid condition on {source.label}: {problem}")


def scoped_side(spec: MappingSpec, where: str) -> MappingSpec:
    """The mapping with `where` added to its source side's filter (a range resync)."""
    side = source_side(spec.direction)
    current = spec.side(side)
    combined = f"({current.filter}) AND ({where})" if current.filter else where
    return spec.model_copy(update={side: current.model_copy(update={"filter": combined})})
