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
A delete the target refuses (its foreign keys, say) fails that record like any refused write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tablesync.apps.tables import Table
from tablesync.db.engine import utcnow
from tablesync.store import couplings as cs
from tablesync.store.jobs import Counters
from tablesync.store.watermarks import get_watermark
from tablesync.sync.context import RunContext
from tablesync.sync.plan import DirectionPlan
from tablesync.sync.record import Batch, Conflicted, Failed, record

SCAN_CHUNK = 20_000  # keys per store query and per app lookup: few round trips, bounded memory
SCAN_MARK = "deletion_scan"  # the watermarks row holding when the last complete scan started


@dataclass
class Gone:
    coupling_id: int
    source_key: str
    target_key: str
    source_exists: bool
    target_exists: bool


def scan_due(ctx: RunContext, mapping: str, every_seconds: float) -> bool:
    """Is the periodic scan due? Always for `--full` runs and "every run"; else once per interval."""
    if ctx.full or every_seconds <= 0:
        return True
    with ctx.store.connect() as conn:
        last = get_watermark(conn, mapping, SCAN_MARK)
    return last is None or (utcnow() - last).total_seconds() >= every_seconds


def scan_deletions(ctx: RunContext, plan: DirectionPlan, source: Table, target: Table, strategy: str,
                   two_way: bool = False, every_seconds: float = 0.0) -> Counters:
    """Find and settle deleted records of synced couplings; `two_way` allows writing to the source.

    The scan reads every coupled key on both sides, so on big tables it runs once per
    `deletion_scan` interval rather than every job; its time is kept with the watermarks."""
    total = Counters()
    if not scan_due(ctx, plan.mapping, every_seconds):
        return total
    started = utcnow()
    last_id = 0
    while True:
        with ctx.store.connect() as conn:
            rows = cs.synced_page(conn, plan.mapping, plan.direction, last_id, max(ctx.batch_size, SCAN_CHUNK))
        if not rows:
            ctx.sink.set_watermark(ctx, plan.mapping, SCAN_MARK, started)
            return total
        last_id = rows[-1][0]
        src_gone = source.missing([r[1] for r in rows])
        tgt_gone = target.missing([r[2] for r in rows])
        gone = [Gone(r[0], r[1], r[2], r[1] not in src_gone, r[2] not in tgt_gone)
                for r in rows if r[1] in src_gone or r[2] in tgt_gone]
        if gone:
            total.add(ctx.sink.settle_deletions(ctx, plan, source, target, gone, strategy, two_way))
        ctx.beat()


def mark_scanned(ctx: RunContext, plan: DirectionPlan, at: Any) -> None:
    """Count the deletion scan as done at `at` (a first run's, when nothing was coupled yet)."""
    ctx.sink.set_watermark(ctx, plan.mapping, SCAN_MARK, at)


def settle(ctx: RunContext, plan: DirectionPlan, source: Table, target: Table, gone: list[Gone], strategy: str,
           two_way: bool) -> Counters:
    """Carry out `strategy` for these deleted records and record the batch: a real run's
    `Sink.settle_deletions`."""
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

    batch = Batch(ctx.job_id, plan.mapping, plan.direction, plan.skip_after_failures)
    counters = batch.counters

    def ref(g: Gone) -> Any:
        return batch.ref(g.coupling_id, g.source_key, g.target_key)

    for table, items, side, key_of in ((target, delete_target, tgt_side, lambda g: g.target_key),
                                       (source, delete_source, src_side, lambda g: g.source_key)):
        if not items:
            continue
        done, failed = table.delete_records(items, [key_of(g) for g in items])
        deleted = [g for g, _ in done]
        deleted_ids.update(g.coupling_id for g in deleted)
        remove.extend(deleted)
        counters.deleted += len(deleted)
        # A delete the target refuses (a foreign key, a trigger) is a failed write like any other
        # (SPEC §4): a job error with the database's message, one more failure on the coupling,
        # retried by the next scan and skipped after `skip_after_failures`; not a conflict, since
        # no operator decision is missing, only the target's consent.
        batch.failures.extend(Failed(ref(f.item), f"deleting the {side} record {key_of(f.item)} failed: {f.message}", f.detail)
                              for f in failed)
        counters.failed += len(failed)

    revived = {tgt_side: target.undelete([g.target_key for g in restore]),
               src_side: source.undelete([g.source_key for g in restore_source])}

    if remove:
        # A pair whose records are both gone is forgotten; a removed coupling whose record
        # survives stays as an `uncoupled` tombstone, so the survivor is not synced (re-inserted) again.
        dead = {g.coupling_id for g in remove if g.coupling_id in deleted_ids or not (g.source_exists or g.target_exists)}
        batch.forgotten = sorted(dead)
        batch.tombstones = [(g.coupling_id, tgt_side if g.source_exists else src_side) for g in remove if g.coupling_id not in dead]
        counters.uncoupled += sum(1 for g in remove if g.coupling_id not in deleted_ids)
        for g in remove:
            batch.event(ref(g), "deleted" if g.coupling_id in deleted_ids else "uncoupled")
    for items, lost, origin in ((restore, tgt_side, src_side), (restore_source, src_side, tgt_side)):
        def lost_key(g: Gone, lost: str = lost) -> str:
            return g.target_key if lost == tgt_side else g.source_key

        undeleted = [g for g in items if lost_key(g) in revived[lost]]
        batch.revived.extend(g.coupling_id for g in undeleted)  # cleared, then compared and updated by this job's retry pass
        for g in undeleted:
            batch.event(ref(g), "restoring", f"the soft-deleted {lost} record was undeleted")
        for g in items:  # back to an insert intent from the survivor: this job's retry pass re-creates the record
            if g not in undeleted:
                batch.reopened.append((g.coupling_id, lost, origin))
                batch.event(ref(g), "restoring", f"the {lost} record {lost_key(g)} was deleted")
    batch.conflicts = [Conflicted(ref(g), message, "deletion_conflict") for g, message in skip]
    counters.conflicts += len(skip)
    record(ctx, batch)
    return counters
