"""The engine's entry points: one run of a mapping, one record, one operator action, or a dry run.

The worker runtime calls these under the mapping's lock, the console calls `dry_run`; nothing here
knows of Dramatiq, job statuses or the CLI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from tablesync.apps.engines import open_tables
from tablesync.apps.tables import Table
from tablesync.config.model import MappingSpec, source_side, target_side
from tablesync.config.settings import Settings
from tablesync.db.engine import session_name
from tablesync.errors import UsageError
from tablesync.store import couplings as cs
from tablesync.store.chunks import chunk_session
from tablesync.store.jobs import Counters
from tablesync.store.mappings import StoredMapping
from tablesync.sync.actions import Action, record_source, run_action, sync_record
from tablesync.sync.chunked import (
    RangePlan,
    RangeRun,
    check_where,
    chunkable,
    end_range,
    finalise,
    plan_ranges,
    range_pipeline,
    scoped_side,
    sync_range,
)
from tablesync.sync.context import RunContext, Sink
from tablesync.sync.dry_run import DryReport
from tablesync.sync.one_way import Pipeline, run_direction
from tablesync.sync.plan import DirectionPlan, compile_one_way
from tablesync.sync.two_way import run_bidirectional
from tablesync.sync.write import Writer

Beat = Callable[[], None]  # called between batches: the job is alive (it may raise to stop the run)
Fence = Callable[[sa.Connection], None]  # called first in each store transaction that writes for the job


def run_context(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, full: bool = False,
                beat: Beat | None = None, sink: Sink | None = None, fence: Fence | None = None,
                where: str | None = None) -> RunContext:
    return RunContext(store=store, job_id=job_id, batch_size=stored.spec.batch_size or settings.batch_size,
                      overlap_seconds=settings.overlap_seconds, sink=sink or Writer(), full=full, beat=beat or (lambda: None),
                      fence=fence or (lambda conn: None), scoped=where is not None)


def finish_interrupted(store: sa.Engine, mapping: str) -> int:
    """Under the mapping's lock, before anything reads couplings: inserts a crashed job left staged
    become pending couplings, which the next pass finishes (adopting rows that landed). Returns how many."""
    with store.begin() as conn:
        return cs.promote_intents(conn, mapping)


def sync_mapping(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, full: bool = False,
                 beat: Beat | None = None, sink: Sink | None = None, fence: Fence | None = None,
                 where: str | None = None) -> Counters:
    """One run of a mapping (`full`: ignoring the watermarks; `where`: only the source rows it
    selects, a range resync)."""
    spec = scoped(stored.spec, where)
    tables = open_tables(spec, stored.apps, session_name(job_id) if job_id else None)
    ctx = run_context(store, settings, stored, job_id, full, beat, sink, fence, where)
    if spec.direction == "bidirectional":
        return run_bidirectional(ctx, spec, tables["local"], tables["integration"])
    plan = compile_one_way(spec, tables["local"].table, tables["integration"].table)
    return run_direction(ctx, plan, tables[source_side(spec.direction)], tables[target_side(spec.direction)])


def scoped(spec: MappingSpec, where: str | None) -> MappingSpec:
    """The mapping a run with `--where` syncs (its source filter narrowed), or `spec` itself."""
    if where is None:
        return spec
    if spec.direction == "bidirectional":
        raise UsageError(f"mapping {spec.name} is bidirectional: --where resyncs one source side, so it needs a one-way mapping")
    return scoped_side(spec, where)


def check_range(stored: StoredMapping, where: str) -> None:
    """Refuse (UsageError) a `--where` the mapping's source cannot evaluate, before a job is made."""
    spec = scoped(stored.spec, where)
    check_where(open_tables(stored.spec, stored.apps)[source_side(spec.direction)], where)


def plan_chunks(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, full: bool = False,
                where: str | None = None, beat: Beat | None = None, fence: Fence | None = None) -> RangePlan | None:
    """The key ranges of this run if it is to be chunked (a first run or full resync of a large
    one-way mapping), else None: the run goes on in one piece (`sync_mapping`)."""
    spec = scoped(stored.spec, where)
    if not chunkable(spec, store):
        return None
    if where is not None:
        check_range(stored, where)
    ctx, plan, source, target = _one_way(store, settings, stored, job_id, where, full, session_name(job_id), beat, fence)
    return plan_ranges(ctx, plan, source, target, spec.chunk_rows or settings.chunk_rows, spec.max_parallel, where)


def sync_chunk(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, chunk_id: int,
               low: str | None, high: str | None, state: Mapping[str, Any], first_attempt: bool,
               progress: Callable[[sa.Connection, Counters], None], done: Callable[[sa.Connection], None],
               pipe: Pipeline, beat: Beat | None = None, fence: Fence | None = None) -> RangeRun:
    """One key range of a chunked run, its writes handed to `pipe` (`chunked.sync_range`; once
    the pipeline is drained, `end_range`). Its first attempt at a first run takes the bulk path; a
    redo finishes what an earlier attempt staged, then takes the general path, which finds what
    that attempt wrote. `progress` runs in each batch's store transaction, `done` in the last's."""
    ctx, plan, source, target = _one_way(store, settings, stored, job_id, state.get("where"), True,
                                         chunk_session(chunk_id), beat, fence)
    ctx.chunk_id, ctx.on_record = chunk_id, progress
    if not first_attempt:
        with ctx.write() as conn:
            cs.promote_intents(conn, plan.mapping, chunk=chunk_id)
    return sync_range(ctx, plan, source, target, low, high, bool(state.get("bulk")) and first_attempt, done, pipe)


chunk_pipeline = range_pipeline
end_chunk = end_range


def finish_chunks(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, chunk_id: int,
                  state: Mapping[str, Any], progress: Callable[[sa.Connection, Counters], None],
                  beat: Beat | None = None, fence: Fence | None = None) -> Counters:
    """A chunked run's finalisation, once every range is done (`chunked.finalise`)."""
    ctx, plan, source, target = _one_way(store, settings, stored, job_id, state.get("where"), False,
                                         chunk_session(chunk_id), beat, fence)
    ctx.on_record = progress
    with ctx.write() as conn:  # a finalisation redone after a crash: what it staged becomes pending
        cs.promote_intents(conn, plan.mapping)
    return finalise(ctx, plan, source, target, dict(state))


def _one_way(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, where: str | None, full: bool,
             session: str, beat: Beat | None, fence: Fence | None) -> tuple[RunContext, DirectionPlan, Table, Table]:
    """What each step of a chunked run works with: its context, the compiled plan, the source and
    target tables (write transactions named `session`, which the reaper ends if it must)."""
    spec = scoped(stored.spec, where)
    tables = open_tables(spec, stored.apps, session)
    ctx = run_context(store, settings, stored, job_id, full, beat, fence=fence, where=where)
    plan = compile_one_way(spec, tables["local"].table, tables["integration"].table)
    return ctx, plan, tables[source_side(spec.direction)], tables[target_side(spec.direction)]


def sync_one(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, key: str, side: str | None,
             beat: Beat | None = None, fence: Fence | None = None) -> Counters:
    """`sync MAPPING --record KEY [--side S]`: one record, now."""
    ctx = run_context(store, settings, stored, job_id, beat=beat, fence=fence)
    return sync_record(ctx, stored.spec, open_tables(stored.spec, stored.apps, session_name(job_id)), key,
                       side or default_record_side(stored.spec.direction))


def act(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, kind: str, params: dict[str, Any],
        beat: Beat | None = None, fence: Fence | None = None) -> tuple[Counters, str | None]:
    """One operator action (`actions`); returns its counters and the job's summary."""
    ctx = run_context(store, settings, stored, job_id, beat=beat, fence=fence)
    return run_action(ctx, stored.spec, open_tables(stored.spec, stored.apps, session_name(job_id)), kind, params)


def dry_run(store: sa.Engine, settings: Settings, stored: StoredMapping, full: bool = False, record: str | None = None,
            side: str | None = None, where: str | None = None) -> DryReport:
    """What a run would do: the whole mapping (`full` ignores the watermarks, as `sync --full`
    does), or one record as `sync --record KEY [--side S]` would sync it."""
    report = DryReport(stored.spec.name)
    if record is None:
        sync_mapping(store, settings, stored, job_id=0, full=full, sink=report, where=where)
        return report
    spec = stored.spec
    tables = open_tables(spec, stored.apps)
    ctx = run_context(store, settings, stored, 0, full, sink=report)
    side, key = record_source(ctx, spec, tables, record, side or default_record_side(spec.direction))
    Action(ctx, spec, tables).sync_keys(side, [key])
    return report


def default_record_side(direction: str) -> str:
    """The side `--record KEY` names when `--side` is not given."""
    return "integration" if direction == "from_integration" else "local"
