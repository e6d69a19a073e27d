"""One direction of one mapping run: select changes, decide per batch, apply in bulk.

Insert path and crashes: before any target row is written, an insert *intent* (a coupling row in
state `pending`, with the target key when we can know it in advance) is committed to the store.
Only then is the target written, and then the intent is confirmed. A worker killed anywhere in
between leaves intents that the next run re-selects: if the target row exists it is adopted, else it
is inserted, so no duplicate target row and no orphan coupling can remain.

Counting: each batch's coupling writes, errors, record events and counter increments commit in one
store transaction, so a batch is counted exactly once however often the job is redone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tablesync.store.jobs import Counters, add_counters
from tablesync.sync import bulk_load, metrics
from tablesync.db import pg_bulk
from tablesync.store import couplings as cs
from tablesync.apps.table import AppTable, app_call, app_iter, match_value
from tablesync.sync.decide import (
    FAIL,
    INSERT,
    SKIP,
    UNCHANGED,
    UPDATE,
    Decision,
    decide,
    diff,
    prepare,
    settled,
)
from tablesync.sync.deletions import scan_deletions
from tablesync.sync.plan import (
    DirectionPlan,
    RecordError,
    Refs,
    canonical_values,
    target_values,
)
from tablesync.apps.values import canonical
from tablesync.store.journal import RecordRef, event_row, write_errors, write_events
from tablesync.store.watermarks import get_watermark, minus_overlap, set_watermark
from tablesync.apps.writes import split_write

log = logging.getLogger("tablesync.engine")


@dataclass
class RunContext:
    store: sa.Engine
    job_id: int
    batch_size: int
    overlap_seconds: float
    full: bool = False
    beat: Callable[[], None] = lambda: None
    handled: set[int] = field(default_factory=set)  # couplings decided in this job (bidirectional: decide once)
    report: Any = None  # a workers.dry_run.DryReport: decide everything, write nothing


def run_direction(ctx: RunContext, plan: DirectionPlan, source: AppTable, target: AppTable) -> Counters:
    """Sync every change of `source` (beyond its watermark) and every unfinished coupling onto `target`."""
    total = Counters()
    side = plan.source_side()
    columns = plan.source_columns
    total.add(scan_deletions(ctx, plan, source, target, plan.on_deletion_conflict, every_seconds=plan.deletion_scan_seconds))
    with ctx.store.connect() as conn:
        watermark = None if ctx.full else get_watermark(conn, plan.mapping, side)
        retry = cs.retry_keys(conn, plan.mapping, plan.direction)
    horizon = app_call(source.horizon)
    since = minus_overlap(watermark, ctx.overlap_seconds)

    for i in range(0, len(retry), ctx.batch_size):
        chunk = retry[i:i + ctx.batch_size]
        rows = app_call(lambda: source.fetch(chunk, columns))
        _forget_vanished(ctx, plan, [k for k in chunk if k not in rows])
        total.add(process_rows(ctx, plan, source, target, list(rows.values())))
        ctx.beat()

    retried = set(retry)
    max_seen = None
    with ctx.store.connect() as conn:  # a first run: no coupling to look up (pages never repeat a key)
        first = watermark is None and not retry and not cs.has_couplings(conn, plan.mapping)
    bulk = first and ctx.report is None and bulk_load.usable(plan, target, ctx.store)  # every record an insert
    adding = threading.Lock()

    def add(counters: Counters) -> None:  # from the pipeline's threads
        with adding:
            total.add(counters)

    # Pages by key never repeat a key, so one batch can be written while the next is read and
    # decided; pages by modified-on can (a row changed meanwhile), and match_on claims target
    # records across batches: those go one batch at a time.
    with Pipeline(enabled=(since is None or source.modified is None) and not plan.match_columns, stages=2) as pipe:
        for page in app_iter(source.pages(columns, since, ctx.batch_size * (BULK_PAGES if bulk else 1))):
            max_seen = page_top(source, page, max_seen)
            rows = [r for r in page if str(r[source.side.key]) not in retried]
            if bulk:
                with ctx.store.connect() as conn:
                    page = bulk_load.map_page(plan, rows, cs.parent_refs(conn, plan, rows))
                pipe.submit(lambda page=page: _counted(add, *bulk_load.insert_page(
                    ctx, plan, target, page, lambda rows: process_rows(ctx, plan, source, target, rows))),
                    lambda written: add(bulk_load.land_page(ctx, plan, written)))
            else:
                decided = decide_rows(ctx, plan, source, target, rows, couplings={} if first else None)
                if decided is not None:
                    pipe.submit(lambda decided=decided: add(_apply(ctx, plan, source, target, *decided)))
            ctx.beat()
    advance_watermark(ctx, plan.mapping, side, watermark, max_seen, horizon)
    if bulk and total.inserted >= ANALYZE_AFTER:
        # Planner statistics of a table just grown by COPY lag until autovacuum comes by; until
        # then the next job's key lookups may scan every coupling (measured: 0.3 s for 1,000 keys
        # among 1M, 2 ms with statistics).
        with ctx.store.begin() as conn:
            conn.execute(sa.text("ANALYZE couplings"))
    return total


BULK_PAGES = 4  # an initial load moves pages of this many batches: measured 10 % faster than one, at 2× the memory
ANALYZE_AFTER = 10_000  # couplings a bulk load adds before it refreshes the planner's statistics


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


def _counted(add: Callable[[Counters], None], result: Any, counters: Counters) -> Any:
    add(counters)
    return result


def page_top(table: AppTable, page: list[dict[str, Any]], max_seen: Any) -> Any:
    """The highest modified-on seen so far, including this page."""
    mod = table.side.modified
    if not mod:
        return max_seen
    top = max((r[mod] for r in page if r.get(mod) is not None), default=None)
    return top if max_seen is None or (top is not None and top > max_seen) else max_seen


def advance_watermark(ctx: RunContext, mapping: str, side: str, watermark: Any, max_seen: Any, horizon: Any) -> None:
    """Move the side's watermark to what this run read, never past the oldest open write
    transaction (`horizon`) and never backwards."""
    if ctx.report is not None:
        return
    new_mark = max_seen if horizon is None or max_seen is None else min(max_seen, horizon)
    if watermark is not None and (new_mark is None or new_mark < watermark):
        new_mark = watermark
    if new_mark is not None:
        with ctx.store.begin() as conn:
            set_watermark(conn, mapping, side, new_mark)


def process_rows(ctx: RunContext, plan: DirectionPlan, source: AppTable, target: AppTable, rows: list[dict[str, Any]],
                 couplings: dict[str, Any] | None = None) -> Counters:
    """Decide and apply one batch of source rows one way (`couplings` by source key, if already read)."""
    decided = decide_rows(ctx, plan, source, target, rows, couplings)
    return Counters() if decided is None else _apply(ctx, plan, source, target, *decided)


def decide_rows(ctx: RunContext, plan: DirectionPlan, source: AppTable, target: AppTable, rows: list[dict[str, Any]],
                couplings: dict[str, Any] | None = None) -> tuple[list[Decision], dict[str, Any]] | None:
    """The reading half of `process_rows`: decisions and each record's modified-on, or None when
    there is nothing to write (no rows, or a dry run, whose report took the decisions)."""
    if not rows:
        return None
    keys = [str(r[source.side.key]) for r in rows]
    with ctx.store.connect() as conn:
        if couplings is None:
            couplings = cs.by_source_keys(conn, plan.mapping, plan.direction, keys)
        refs = cs.parent_refs(conn, plan, rows)
    couplings = _recover_unkeyed(ctx, plan, target, rows, couplings, refs)
    prepared = prepare(plan, rows)
    wanted = [c.target_key for k, c in couplings.items()
              if c.target_key is not None and not c.skipped and not settled(c, prepared[k][1] if k in prepared else "")]
    targets = app_call(lambda: target.fetch(wanted, plan.target_fields, apply_filter=False))
    decisions = decide(plan, rows, couplings, targets, refs, prepared)
    if ctx.report is not None:
        _match(ctx, plan, target, [d for d in decisions if d.action == INSERT and d.target_key is None
                                   and (d.coupling is None or d.coupling.target_key is None)])
        ctx.report.decisions(plan.direction, decisions)
        ctx.handled.update(d.cid for d in decisions if d.cid is not None)
        return None
    modified_of = {str(r[source.side.key]): r.get(source.side.modified) if source.side.modified else None for r in rows}
    return decisions, modified_of


def _apply(ctx: RunContext, plan: DirectionPlan, source: AppTable, target: AppTable, decisions: list[Decision],
           modified_of: dict[str, Any]) -> Counters:
    counters = Counters()
    outcomes: list[cs.Outcome] = []
    failures: list[tuple[Decision, str, str]] = []
    events: list[dict[str, Any]] = []

    _match(ctx, plan, target, [d for d in decisions if d.action == INSERT and d.target_key is None
                               and (d.coupling is None or d.coupling.target_key is None)])
    inserted = _insert(ctx, plan, target, [d for d in decisions if d.action == INSERT], failures, modified_of)
    updated = update_targets(target, [d for d in decisions if d.action == UPDATE], failures)

    for d in decisions:
        already_counted = d.coupling is not None and d.coupling.last_job_id == ctx.job_id and d.coupling.last_result == "success"
        if d.action == SKIP:
            counters.skipped += 1
        elif d.action == UNCHANGED:
            if d.matched:
                counters.coupled += 1
                events.append(_event(ctx, plan, d, "coupled"))
            elif d.completes_insert:
                counters.inserted += 1
                events.append(_event(ctx, plan, d, "inserted"))
            elif not already_counted:
                counters.unchanged += 1
            if d.matched or d.completes_insert or _needs_refresh(d):
                outcomes.append(_success(plan, d, modified_of))
        elif d.action == FAIL:
            failures.append((d, d.message or "failed", ""))
    landed: dict[int, list[tuple[str, cs.Outcome]]] = {}
    for d in inserted:
        counters.inserted += 1
        if d.staged_batch is not None:  # its coupling is its record log's entry (couplings.inserted_by_job)
            landed.setdefault(d.staged_batch, []).append((d.source_key, _success(plan, d, modified_of)))
        else:
            outcomes.append(_success(plan, d, modified_of))
            events.append(_event(ctx, plan, d, "inserted"))
    for d in updated:
        outcome = "coupled" if d.matched else "inserted" if d.completes_insert else "modified"
        setattr(counters, outcome, getattr(counters, outcome) + 1)
        outcomes.append(_success(plan, d, modified_of))
        events.append(_event(ctx, plan, d, outcome))
    counters.failed += len(failures)
    if ctx.report is None:
        metrics.observe_lag(plan.mapping, plan.direction, [modified_of.get(d.source_key) for d in (*inserted, *updated)],
                            source.engine)

    with ctx.store.begin() as conn:
        for batch in {d.staged_batch for d in decisions if d.staged_batch is not None}:
            # a staged insert that failed becomes a pending coupling, which carries failures and retries
            cs.land_inserts(conn, plan.mapping, plan.direction, ctx.job_id, batch, landed.get(batch, []),
                            [_cid(d) for d, _, _ in failures if d.staged_batch == batch])
        if failures:
            untracked = [d for d, _, _ in failures if d.cid is None]
            if untracked:  # a record that failed before it was ever coupled is tracked, never dropped
                ids = cs.insert_intents(conn, plan.mapping, plan.direction, [(d.source_key, d.target_key) for d in untracked], ctx.job_id)
                for d in untracked:
                    d.coupling_id = ids[d.source_key]
            error_ids = write_errors(conn, [(_ref(ctx, plan, d), msg, detail) for d, msg, detail in failures])
            for (d, msg, _), eid in zip(failures, error_ids):
                outcomes.append(cs.Outcome(coupling_id=_cid(d), success=False, error_id=eid))
                events.append(_event(ctx, plan, d, "failed", message=msg))
        newly_skipped = cs.write_outcomes(conn, plan.direction, ctx.job_id, outcomes, plan.skip_after_failures)
        if newly_skipped:
            skipped_ids = set(newly_skipped)
            events.extend(_event(ctx, plan, d, "skipped", message=f"skipped after {plan.skip_after_failures} consecutive failures")
                          for d, _, _ in failures if d.cid in skipped_ids)
        write_events(conn, events)
        add_counters(conn, ctx.job_id, counters)
    metrics.records(plan.mapping, plan.direction, counters)
    ctx.handled.update(d.cid for d in decisions if d.cid is not None)
    return counters


def _match(ctx: RunContext, plan: DirectionPlan, target: AppTable, fresh: list[Decision]) -> None:
    """match_on: couple a new source record to exactly one uncoupled target record with equal values.

    Several candidates, or a candidate another record of this batch already took, fail the record
    with an error instead of creating a duplicate. A matched record is then updated like a coupled one.
    """
    if not plan.match_columns or not fresh:
        return
    wanted = {}
    for d in fresh:
        values = tuple(match_value(canonical(d.values.get(c))) for c in plan.match_columns)
        if all(v is not None for v in values):
            wanted[d.source_key] = values
    if not wanted:
        return
    found = app_call(lambda: target.find_matches(plan.match_columns, list(wanted.values())))
    with ctx.store.connect() as conn:
        taken = cs.coupled_target_keys(conn, plan.mapping, plan.direction, sorted({k for ks in found.values() for k in ks}))
    side, columns = plan.target_side(), ", ".join(plan.match_columns)
    claimed: dict[str, str] = {}
    matched: list[Decision] = []
    for d in fresh:
        candidates = [k for k in found.get(wanted.get(d.source_key, ()), []) if k not in taken]
        if not candidates:
            continue
        if len(candidates) > 1:
            d.action = FAIL
            d.message = (f"match_on ({columns}) is ambiguous: {len(candidates)} uncoupled {side} records match "
                         f"({', '.join(candidates[:5])}); couple one manually or make the values unique")
        elif candidates[0] in claimed:
            d.action = FAIL
            d.message = (f"match_on ({columns}): {side} record {candidates[0]} also matches {plan.source_side()} "
                         f"record {claimed[candidates[0]]}, which was coupled to it")
        else:
            claimed[candidates[0]] = d.source_key
            d.target_key, d.matched = candidates[0], True
            matched.append(d)
    if not matched:
        return
    rows = app_call(lambda: target.fetch([d.target_key for d in matched if d.target_key], plan.target_fields, apply_filter=False))
    for d in matched:
        d.changes = diff(plan, rows.get(d.target_key or "", {}), canonical_values(d.values, plan.target_fields)) or None
        d.action = UPDATE if d.changes else UNCHANGED
    if ctx.report is not None:
        return
    with ctx.store.begin() as conn:  # coupled before the target write: a crash now is finished by the next run
        new = [d for d in matched if d.coupling is None]
        ids = cs.insert_intents(conn, plan.mapping, plan.direction, [(d.source_key, d.target_key) for d in new], ctx.job_id)
        cs.set_target_keys(conn, plan.direction, [(d.coupling.id, d.target_key) for d in matched if d.coupling is not None])
    for d in new:
        d.coupling_id = ids[d.source_key]


def _insert(ctx: RunContext, plan: DirectionPlan, target: AppTable, todo: list[Decision], failures: list[tuple[Decision, str, str]],
            modified_of: dict[str, Any]) -> list[Decision]:
    if not todo:
        return []
    strategy = target.key_strategy(plan.key_rule is not None)
    unkeyed = [d for d in todo if d.target_key is None]
    if unkeyed and strategy in ("preallocate", "uuid"):
        fresh = app_call(lambda: target.preallocate(len(unkeyed))) if strategy == "preallocate" else target.new_uuid_keys(len(unkeyed))
        for d, k in zip(unkeyed, fresh):
            d.target_key = k
    elif unkeyed and strategy == "none":
        for d in unkeyed:
            d.action = FAIL
            d.message = (f"cannot insert into {plan.target.table}: its key {plan.target.key} has no default; "
                         "map a field onto it or give the column a default")
        todo = [d for d in todo if d.action == INSERT]
    returning = strategy == "returning"
    with ctx.store.begin() as conn:
        new = [d for d in todo if d.coupling is None]
        staged = {d.source_key: d.target_key for d in new if d.target_key is not None} if pg_bulk.usable(conn) else {}
        batch, ids = cs.stage_inserts(conn, plan.mapping, plan.direction, list(staged.items()), ctx.job_id)
        ids.update(cs.insert_intents(conn, plan.mapping, plan.direction,
                                     [(d.source_key, d.target_key) for d in new if d.source_key not in ids], ctx.job_id))
        cs.set_target_keys(conn, plan.direction, [(d.coupling.id, d.target_key) for d in todo
                                                  if d.coupling is not None and d.coupling.target_key != d.target_key])
    for d in new:
        d.coupling_id = ids[d.source_key]
        d.staged_batch = batch if d.source_key in staged else None

    key_col = target.key

    def write(conn: sa.Connection, part: Sequence[Decision]) -> list[Any] | None:
        # keys go as strings: AppTable.insert converts them where its path needs to
        rows = [{**d.values, key_col.name: d.target_key} if d.target_key is not None else d.values for d in part]
        return target.insert(conn, rows, returning=returning and any(d.target_key is None for d in part))

    done, failed = split_write(target.engine, todo, write)
    landed = []
    for d, new_key in done:
        if new_key is not None:
            d.target_key = new_key
        landed.append(d)
    failures.extend((f.item, f.message, f.detail) for f in failed)
    if returning:
        with ctx.store.begin() as conn:  # remember database-made keys at once: a crash now must not orphan them
            cs.set_target_keys(conn, plan.direction, [(_cid(d), d.target_key) for d in landed])
    return landed


def update_targets(target: AppTable, todo: list[Decision], failures: list[tuple[Decision, str, str]]) -> list[Decision]:
    groups: dict[tuple[str, ...], list[Decision]] = {}
    for d in todo:
        groups.setdefault(tuple(sorted(d.changes or {})), []).append(d)
    landed: list[Decision] = []
    for cols, items in groups.items():
        def write(conn: sa.Connection, part: Sequence[Decision], cols: tuple[str, ...] = cols) -> None:
            target.update_many(conn, cols, [{"_key": d.target_key, **{c: d.values[c] for c in cols}} for d in part])

        done, failed = split_write(target.engine, items, write)
        landed.extend(d for d, _ in done)
        failures.extend((f.item, f.message, f.detail) for f in failed)
    return landed


def _recover_unkeyed(
    ctx: RunContext, plan: DirectionPlan, target: AppTable, rows: list[dict[str, Any]], couplings: dict[str, Any],
    refs: Refs,
) -> dict[str, Any]:
    """Intents interrupted while the database was making their key: find the row they may have made."""
    suspects = [c for c in couplings.values() if c.state == "pending" and c.target_key is None and c.last_result is None]
    if not suspects or ctx.report is not None:
        return couplings
    by_key = {str(r[plan.source_key_column]): r for r in rows}
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
        found = app_call(lambda: target.find_equal(values, taken))
        if found is not None:
            with ctx.store.connect() as conn:
                if cs.coupled_target_keys(conn, plan.mapping, plan.direction, [found]):
                    continue
            adopted.append((c.id, found))
            taken.add(found)
    if adopted:
        with ctx.store.begin() as conn:
            cs.set_target_keys(conn, plan.direction, adopted)
        with ctx.store.connect() as conn:
            couplings = cs.by_source_keys(conn, plan.mapping, plan.direction, list(by_key))
    return couplings


def _cid(d: Decision) -> int:
    cid = d.cid
    assert cid is not None, "every written decision has a coupling or an intent"
    return cid


def _needs_refresh(d: Decision) -> bool:
    c = d.coupling
    return c is None or c.last_result != "success" or c.state != "synced" or c.source_hash != d.source_hash or c.target_hash != d.target_hash


def _success(plan: DirectionPlan, d: Decision, modified_of: dict[str, Any]) -> cs.Outcome:
    # The per-field snapshot serves the three-way merge of bidirectional mappings; one-way ones
    # decide by hashes alone and save its encoding and storage.
    snapshot = ({plan.source_side(): d.source_values, plan.target_side(): {k: canonical(v) for k, v in d.values.items()}}
                if plan.keeps_snapshot else None)
    return cs.Outcome(
        coupling_id=_cid(d), success=True, target_key=d.target_key, source_hash=d.source_hash,
        target_hash=d.target_hash, source_modified=modified_of.get(d.source_key), values=snapshot,
    )


def _ref(ctx: RunContext, plan: DirectionPlan, d: Decision) -> RecordRef:
    return RecordRef(ctx.job_id, plan.mapping, plan.direction, d.cid, d.source_key, d.target_key)


def _event(ctx: RunContext, plan: DirectionPlan, d: Decision, outcome: str, message: str | None = None) -> dict[str, Any]:
    return event_row(_ref(ctx, plan, d), outcome, message, d.changes if outcome in ("modified", "coupled") else None)


def _forget_vanished(ctx: RunContext, plan: DirectionPlan, keys: list[str]) -> None:
    """Retry keys whose source row is gone: an unconfirmed insert intent has nothing left to insert."""
    if not keys or ctx.report is not None:
        return
    with ctx.store.begin() as conn:
        states = cs.by_source_keys(conn, plan.mapping, plan.direction, keys)
        cs.delete_intents(conn, [c.id for c in states.values() if c.state == "pending" and c.target_key is None])
