"""Deletion detection: a chunked scan of coupled keys on both sides, then `on_deletion_conflict`.

Every job scans the synced, non-skipped couplings of its mapping in chunks (one store query and one
key lookup per side per chunk), so a deleted record is found whether or not its counterpart changed.

One side deleted, the other still there:
- `delete` deletes the survivor; `restore` re-creates the deleted record from the survivor in the same
  job; `remove_coupling` forgets the pair (the survivor stays, never synced again); `skip` skips it.
- One-way mappings only ever write in their direction, so `restore` of a deleted source and `delete`
  of a surviving source (both would write against the flow) fall back to `skip`.
Both deleted: the coupling is removed.
A skipped coupling carries reason `deletion_conflict` and a job error saying which side is gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tablesync.db.engine import utcnow
from tablesync.store.jobs import Counters, add_counters
from tablesync.store.schema import couplings
from tablesync.store import couplings as cs
from tablesync.sync import metrics
from tablesync.apps.table import AppTable, app_call
from tablesync.sync.plan import DirectionPlan
from tablesync.store.journal import RecordRef, event_row, write_errors, write_events
from tablesync.store.watermarks import get_watermark, set_watermark
from tablesync.apps.writes import split_write

SCAN_CHUNK = 20_000  # keys per store query and per app lookup: few round trips, bounded memory
SCAN_MARK = "deletion_scan"  # the watermarks row holding when the last complete scan started


@dataclass
class Gone:
    coupling_id: int
    source_key: str
    target_key: str
    source_exists: bool
    target_exists: bool


def scan_due(ctx: Any, mapping: str, every_seconds: float) -> bool:
    """Is the periodic scan due? Always for `--full` runs and "every run"; else once per interval."""
    if ctx.full or every_seconds <= 0:
        return True
    with ctx.store.connect() as conn:
        last = get_watermark(conn, mapping, SCAN_MARK)
    return last is None or (utcnow() - last).total_seconds() >= every_seconds


def scan_deletions(ctx: Any, plan: DirectionPlan, source: AppTable, target: AppTable, strategy: str,
                   two_way: bool = False, every_seconds: float = 0.0) -> Counters:
    """Find and settle deleted records of synced couplings; `two_way` allows writing to the source.

    The scan reads every coupled key on both sides, so on big tables it runs once per
    `deletion_scan` interval rather than every job; its time is kept with the watermarks."""
    total = Counters()
    if not scan_due(ctx, plan.mapping, every_seconds):
        return total
    started = utcnow()
    sides = cs.Sides.of(plan.direction)
    src_col, tgt_col = couplings.c[sides.source_key], couplings.c[sides.target_key]
    last_id = 0
    while True:
        with ctx.store.connect() as conn:
            rows = conn.execute(
                sa.select(couplings.c.id, src_col, tgt_col)
                .where(couplings.c.mapping == plan.mapping, couplings.c.state == "synced", couplings.c.skipped.is_(False),
                       couplings.c.id > last_id)
                .order_by(couplings.c.id).limit(max(ctx.batch_size, SCAN_CHUNK))
            ).all()
        if not rows:
            if ctx.report is None:
                with ctx.store.begin() as conn:
                    set_watermark(conn, plan.mapping, SCAN_MARK, started)
            return total
        last_id = rows[-1][0]
        src_gone = app_call(lambda: source.missing([r[1] for r in rows]))
        tgt_gone = app_call(lambda: target.missing([r[2] for r in rows]))
        gone = [Gone(r[0], r[1], r[2], r[1] not in src_gone, r[2] not in tgt_gone)
                for r in rows if r[1] in src_gone or r[2] in tgt_gone]
        if gone and ctx.report is not None:
            for g in gone:
                deleted = plan.source_side() if not g.source_exists else plan.target_side()
                ctx.report.deletion(plan.direction, g.source_key, g.target_key, deleted, strategy)
        elif gone:
            total.add(_resolve(ctx, plan, source, target, gone, strategy, two_way))
        ctx.beat()


def _resolve(ctx: Any, plan: DirectionPlan, source: AppTable, target: AppTable, gone: list[Gone], strategy: str,
             two_way: bool) -> Counters:
    counters = Counters()
    src_side, tgt_side = plan.source_side(), plan.target_side()
    src_name, tgt_name = f"{plan.source.app} {plan.source.table}", f"{plan.target.app} {plan.target.table}"  # as operators know them
    remove: list[Gone] = []
    restore: list[Gone] = []  # re-create the target from the source
    restore_source: list[Gone] = []  # re-create the source from the target (two-way only)
    skip: list[tuple[Gone, str]] = []
    delete_target: list[Gone] = []
    delete_source: list[Gone] = []
    deleted_ids: set[int] = set()
    for g in gone:
        if not g.source_exists and not g.target_exists:
            remove.append(g)
        elif not g.source_exists:
            if strategy == "delete":
                delete_target.append(g)
            elif strategy == "remove_coupling":
                remove.append(g)
            elif strategy == "restore" and two_way:
                restore_source.append(g)
            else:
                skip.append((g, f"the {src_side} record {g.source_key} ({src_name}) was deleted; the {tgt_side} record "
                                f"{g.target_key} ({tgt_name}) still exists"))
        elif strategy == "restore":
            restore.append(g)
        elif strategy == "remove_coupling":
            remove.append(g)
        elif strategy == "delete" and two_way:
            delete_source.append(g)
        else:
            skip.append((g, f"the {tgt_side} record {g.target_key} ({tgt_name}) was deleted; the {src_side} record "
                            f"{g.source_key} ({src_name}) still exists"))

    for table, items, side, key_of in ((target, delete_target, tgt_side, lambda g: g.target_key),
                                       (source, delete_source, src_side, lambda g: g.source_key)):
        if not items:
            continue
        def write(conn: sa.Connection, part: Sequence[Gone], table: AppTable = table, key_of: Any = key_of) -> None:
            table.delete(conn, [key_of(g) for g in part])

        done, failed = split_write(table.engine, items, write)
        deleted = [g for g, _ in done]
        deleted_ids.update(g.coupling_id for g in deleted)
        remove.extend(deleted)
        counters.deleted += len(deleted)
        skip.extend((f.item, f"deleting the {side} record {key_of(f.item)} failed: {f.message}") for f in failed)

    revived = {tgt_side: app_call(lambda: target.undelete([g.target_key for g in restore])),
               src_side: app_call(lambda: source.undelete([g.source_key for g in restore_source]))}
    events: list[dict[str, Any]] = []

    def event(g: Gone, outcome: str, message: str | None = None) -> dict[str, Any]:
        return event_row(_ref(ctx, plan, g), outcome, message)

    sides = cs.Sides.of(plan.direction)
    with ctx.store.begin() as conn:
        if remove:
            # A pair whose records are both gone is forgotten; a removed coupling whose record
            # survives stays as an `uncoupled` tombstone, so the survivor is not synced (re-inserted) again.
            dead = [g.coupling_id for g in remove if g.coupling_id in deleted_ids or not (g.source_exists or g.target_exists)]
            conn.execute(sa.delete(couplings).where(couplings.c.id.in_(dead)))
            for lost_key, survived in ((sides.target_key, True), (sides.source_key, False)):
                ids = [g.coupling_id for g in remove if g.coupling_id not in dead and g.source_exists is survived]
                if ids:  # the tombstone keeps the survivor's key only
                    conn.execute(sa.update(couplings).where(couplings.c.id.in_(ids))
                                 .values({lost_key: None, "state": "uncoupled", "last_job_id": ctx.job_id}))
            counters.uncoupled += sum(1 for g in remove if g.coupling_id not in deleted_ids)
            events.extend(event(g, "deleted" if g.coupling_id in deleted_ids else "uncoupled") for g in remove)
        for items, lost, lost_key, origin in ((restore, tgt_side, sides.target_key, src_side),
                                              (restore_source, src_side, sides.source_key, tgt_side)):
            if revived.get(lost):  # soft-deleted: cleared, then compared and updated by this job's retry pass
                ids = [g.coupling_id for g in items if (g.target_key if lost == tgt_side else g.source_key) in revived[lost]]
                conn.execute(sa.update(couplings).where(couplings.c.id.in_(ids)).values(last_result=None))
                events.extend(event(g, "restoring", f"the soft-deleted {lost} record was undeleted")
                              for g in items if g.coupling_id in ids)
                items = [g for g in items if g.coupling_id not in ids]
            if items:  # back to an insert intent from the survivor: this job's retry pass re-creates the record
                conn.execute(sa.update(couplings).where(couplings.c.id.in_([g.coupling_id for g in items])).values(
                    {lost_key: None, "state": "pending", "origin": origin, "last_result": None}))
                events.extend(event(g, "restoring", f"the {lost} record {g.target_key if lost == tgt_side else g.source_key} "
                                                    "was deleted") for g in items)
        if skip:
            ids = write_errors(conn, [(_ref(ctx, plan, g), msg, None) for g, msg in skip])
            cs.skip_couplings(conn, ctx.job_id, [(g.coupling_id, eid) for (g, _), eid in zip(skip, ids)], "deletion_conflict")
            counters.conflicts += len(skip)
            events.extend(event(g, "conflict", msg) for g, msg in skip)
        write_events(conn, events)
        add_counters(conn, ctx.job_id, counters)
    metrics.records(plan.mapping, plan.direction, counters)
    return counters


def _ref(ctx: Any, plan: DirectionPlan, g: Gone) -> RecordRef:
    return RecordRef(ctx.job_id, plan.mapping, plan.direction, g.coupling_id, g.source_key, g.target_key)
