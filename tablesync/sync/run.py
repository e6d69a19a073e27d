"""The engine's entry points: one run of a mapping, one record, one operator action, or a dry run.

The worker runtime calls these under the mapping's lock, the console calls `dry_run`; nothing here
knows of Dramatiq, job statuses or the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tablesync.apps.engines import open_tables
from tablesync.config.model import source_side, target_side
from tablesync.config.settings import Settings
from tablesync.db.engine import session_name
from tablesync.store import couplings as cs
from tablesync.store.jobs import Counters
from tablesync.store.mappings import StoredMapping
from tablesync.sync.actions import Action, record_source, run_action, sync_record
from tablesync.sync.context import RunContext, Sink
from tablesync.sync.dry_run import DryReport
from tablesync.sync.one_way import run_direction
from tablesync.sync.plan import compile_one_way
from tablesync.sync.two_way import run_bidirectional
from tablesync.sync.write import Writer

Beat = Callable[[], None]  # called between batches: the job is alive (it may raise to stop the run)
Fence = Callable[[sa.Connection], None]  # called first in each store transaction that writes for the job


def run_context(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, full: bool = False,
                beat: Beat | None = None, sink: Sink | None = None, fence: Fence | None = None) -> RunContext:
    return RunContext(store=store, job_id=job_id, batch_size=stored.spec.batch_size or settings.batch_size,
                      overlap_seconds=settings.overlap_seconds, sink=sink or Writer(), full=full, beat=beat or (lambda: None),
                      fence=fence or (lambda conn: None))


def finish_interrupted(store: sa.Engine, mapping: str) -> int:
    """Under the mapping's lock, before anything reads couplings: inserts a crashed job left staged
    become pending couplings, which the next pass finishes (adopting rows that landed). Returns how many."""
    with store.begin() as conn:
        return cs.promote_intents(conn, mapping)


def sync_mapping(store: sa.Engine, settings: Settings, stored: StoredMapping, job_id: int, full: bool = False,
                 beat: Beat | None = None, sink: Sink | None = None, fence: Fence | None = None) -> Counters:
    """One run of a mapping (`full`: ignoring the watermarks)."""
    spec = stored.spec
    tables = open_tables(spec, stored.apps, session_name(job_id) if job_id else None)
    ctx = run_context(store, settings, stored, job_id, full, beat, sink, fence)
    if spec.direction == "bidirectional":
        return run_bidirectional(ctx, spec, tables["local"], tables["integration"])
    plan = compile_one_way(spec, tables["local"].table, tables["integration"].table)
    return run_direction(ctx, plan, tables[source_side(spec.direction)], tables[target_side(spec.direction)])


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
            side: str | None = None) -> DryReport:
    """What a run would do: the whole mapping (`full` ignores the watermarks, as `sync --full`
    does), or one record as `sync --record KEY [--side S]` would sync it."""
    report = DryReport(stored.spec.name)
    if record is None:
        sync_mapping(store, settings, stored, job_id=0, full=full, sink=report)
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
