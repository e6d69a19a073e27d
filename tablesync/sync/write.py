"""The write and record stages of a real run: a `Writer` is the sink (`context.Sink`) that writes
the targets (`targets`) and records each batch in the store in one transaction (`record`).

The select and decide stages (`one_way`, `two_way`, `deletions`) hand it their batches; a dry run
hands the same batches to a `dry_run.DryReport` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tablesync.apps.tables import Table
from tablesync.apps.values import canonical
from tablesync.store import couplings as cs
from tablesync.store.jobs import Counters
from tablesync.store.journal import RecordRef
from tablesync.store.watermarks import set_watermark
from tablesync.sync import deletions
from tablesync.sync.context import RunContext
from tablesync.sync.decide import FAIL, INSERT, SKIP, UNCHANGED, UPDATE, Decision
from tablesync.sync.merge import CONFLICT, PairDecision
from tablesync.sync.plan import DirectionPlan, PairPlan
from tablesync.sync.record import Batch, Conflicted, Failed, Landing, record
from tablesync.sync.targets import cid, couple_matched, insert_new, update_targets


class Writer:
    """Writes targets, couplings, watermarks, errors and counters; each batch in one store transaction."""

    def apply(self, ctx: RunContext, plan: DirectionPlan, source: Table, target: Table,
              decisions: list[Decision], modified_of: dict[str, Any]) -> Counters:
        return apply_batch(ctx, plan, source, target, decisions, modified_of)

    def apply_pairs(self, ctx: RunContext, plan: PairPlan, tables: dict[str, Table],
                    decisions: list[PairDecision], modified: dict[str, dict[int, Any]]) -> Counters:
        return apply_pairs(ctx, plan, tables, decisions, modified)

    def settle_deletions(self, ctx: RunContext, plan: DirectionPlan, source: Table, target: Table,
                         gone: list[deletions.Gone], strategy: str, two_way: bool) -> Counters:
        return deletions.settle(ctx, plan, source, target, gone, strategy, two_way)

    def adopt(self, ctx: RunContext, plan: DirectionPlan, found: Sequence[tuple[int, str]]) -> None:
        with ctx.write() as conn:
            cs.set_target_keys(conn, plan.direction, found)

    def forget_intents(self, ctx: RunContext, ids: Sequence[int]) -> None:
        if ids:
            with ctx.write() as conn:
                cs.delete_intents(conn, ids)

    def set_watermark(self, ctx: RunContext, mapping: str, side: str, value: Any) -> None:
        with ctx.write() as conn:
            set_watermark(conn, mapping, side, value)

    def bulk_loads(self) -> bool:
        return True


def apply_batch(ctx: RunContext, plan: DirectionPlan, source: Table, target: Table, decisions: list[Decision],
                modified_of: dict[str, Any]) -> Counters:
    """Write a decided batch to the target, then record it."""
    failures: list[tuple[Decision, str, str]] = []
    couple_matched(ctx, plan, [d for d in decisions if d.matched])
    inserted = insert_new(ctx, plan, target, [d for d in decisions if d.action == INSERT], failures)
    updated = update_targets(target, [d for d in decisions if d.action == UPDATE], failures)

    batch = Batch(ctx.job_id, plan.mapping, plan.direction, plan.skip_after_failures)
    counters = batch.counters
    for d in decisions:
        already_counted = d.coupling is not None and d.coupling.last_job_id == ctx.job_id and d.coupling.last_result == "success"
        if d.action == SKIP:
            counters.skipped += 1
        elif d.action == UNCHANGED:
            if d.matched:
                counters.coupled += 1
                _event(batch, d, "coupled")
            elif d.completes_insert:
                outcome = "coupled" if (plan.direction, d.source_key) in ctx.collided else "inserted"
                setattr(counters, outcome, getattr(counters, outcome) + 1)
                _event(batch, d, outcome)
            elif not already_counted:
                counters.unchanged += 1
            if d.matched or d.completes_insert or _needs_refresh(d):
                batch.successes.append(_success(plan, d, modified_of))
        elif d.action == FAIL:
            failures.append((d, d.message or "failed", ""))
    landed: dict[int, list[cs.LandedRow]] = {}
    for d in inserted:
        counters.inserted += 1
        if d.staged_batch is not None:  # its coupling is its record log's entry (couplings.inserted_by_job)
            o = _success(plan, d, modified_of)
            landed.setdefault(d.staged_batch, []).append((o.coupling_id, d.source_key, o.target_key, o.source_hash,
                                                          o.target_hash, o.values, cs.modified_text(o.source_modified)))
        else:
            batch.successes.append(_success(plan, d, modified_of))
            _event(batch, d, "inserted")
    for d in updated:
        outcome = ("coupled" if d.matched or (d.completes_insert and (plan.direction, d.source_key) in ctx.collided)
                   else "inserted" if d.completes_insert else "modified")
        setattr(counters, outcome, getattr(counters, outcome) + 1)
        batch.successes.append(_success(plan, d, modified_of))
        _event(batch, d, outcome)
    counters.failed += len(failures)
    # a staged insert that failed becomes a pending coupling, which carries failures and retries
    batch.landings = [Landing(b, landed.get(b, []), [cid(d) for d, _, _ in failures if d.staged_batch == b])
                      for b in dict.fromkeys(d.staged_batch for d in decisions if d.staged_batch is not None)]
    batch.failures = [Failed(_ref(batch, d), message, detail) for d, message, detail in failures]
    batch.lag = [(plan.direction, [modified_of.get(d.source_key) for d in (*inserted, *updated)], source.engine)]
    intents = record(ctx, batch)
    for d, _, _ in failures:  # a record that failed before it was ever coupled is tracked from now on
        if d.cid is None:
            d.coupling_id = intents[d.source_key]
    return counters


def apply_pairs(ctx: RunContext, plan: PairPlan, tables: dict[str, Table], decisions: list[PairDecision],
                modified: dict[str, dict[int, Any]]) -> Counters:
    """Write both directions' updates, then record every outcome, error, event and counter in one
    store transaction."""
    batch = Batch(ctx.job_id, plan.mapping, "to_integration", plan.to_integration.skip_after_failures)
    counters = batch.counters
    failures: list[tuple[PairDecision, str, str]] = [(d, d.message or "failed", "") for d in decisions if d.action == FAIL]
    written = [d for d in decisions if d.action in (UPDATE, CONFLICT)]
    landed: dict[int, set[str]] = {}
    for direction, target, values_of, changes_of, key_of, target_key_of in (
        ("to_integration", tables["integration"], lambda d: d.to_integration, lambda d: d.changes_integration,
         lambda d: d.local_key, lambda d: d.integration_key),
        ("from_integration", tables["local"], lambda d: d.to_local, lambda d: d.changes_local,
         lambda d: d.integration_key, lambda d: d.local_key),
    ):
        todo = [d for d in written if values_of(d)]
        shim_list = [Decision(UPDATE, key_of(d), d.coupling, target_key=target_key_of(d), values=values_of(d),
                              changes=changes_of(d)) for d in todo]
        by_shim = {id(s): d for s, d in zip(shim_list, todo)}
        failed: list[tuple[Decision, str, str]] = []
        for s in update_targets(target, shim_list, failed):
            landed.setdefault(by_shim[id(s)].coupling.id, set()).add(direction)
        failures.extend((by_shim[id(s)], msg, detail) for s, msg, detail in failed)

    failed_ids = {d.coupling.id for d, _, _ in failures}
    conflicts: list[PairDecision] = []
    for d in decisions:
        cid = d.coupling.id
        for direction in sorted(landed.get(cid, ())):  # a write that landed counts even if the other side's failed
            counters.modified += 1
            resolved = f"update conflict settled: {d.resolved_by} wins" if d.resolved_by else None
            changes = d.changes_integration if direction == "to_integration" else d.changes_local
            batch.event(_pair_ref(batch, d, direction), "modified", resolved, changes)
        if d.action == SKIP:
            counters.skipped += 1
            continue
        if cid in failed_ids or d.action == FAIL:
            continue  # the snapshot stays as it was: the next run merges again, and a landed write reads as agreed
        if d.action == UNCHANGED and d.snapshot is None:
            if not (d.coupling.last_job_id == ctx.job_id and d.coupling.last_result == "success"):
                counters.unchanged += 1
            continue
        batch.successes.append(cs.Outcome(
            coupling_id=cid, success=True, target_key=d.integration_key, source_hash=d.local_hash,
            target_hash=d.integration_hash, source_modified=modified["to_integration"].get(cid), values=d.snapshot))
        if d.action == CONFLICT:
            conflicts.append(d)
        elif not landed.get(cid):
            counters.unchanged += 1
    counters.failed += len(failures)
    counters.conflicts += len(conflicts)
    batch.failures = [Failed(_pair_ref(batch, d, "to_integration"), message, detail) for d, message, detail in failures]
    batch.conflicts = [Conflicted(_pair_ref(batch, d, "to_integration"), d.conflict_message(), "update_conflict") for d in conflicts]
    batch.counted = [(direction, Counters(modified=sum(1 for ds in landed.values() if direction in ds)))
                     for direction in ("to_integration", "from_integration")]
    batch.counted.append(("both", replace(counters, modified=0)))
    batch.lag = [(direction, [modified[direction].get(cid) for cid, ds in landed.items() if direction in ds], source.engine)
                 for direction, source in (("to_integration", tables["local"]), ("from_integration", tables["integration"]))]
    record(ctx, batch)
    return counters


def _needs_refresh(d: Decision) -> bool:
    c = d.coupling
    return c is None or c.last_result != "success" or c.state != "synced" or c.source_hash != d.source_hash or c.target_hash != d.target_hash


def _success(plan: DirectionPlan, d: Decision, modified_of: dict[str, Any]) -> cs.Outcome:
    # The per-field snapshot serves the three-way merge of bidirectional mappings; one-way ones
    # decide by hashes alone and save its encoding and storage.
    snapshot = ({plan.source_side(): d.source_values, plan.target_side(): {k: canonical(v) for k, v in d.values.items()}}
                if plan.keeps_snapshot else None)
    return cs.Outcome(
        coupling_id=cid(d), success=True, target_key=d.target_key, source_hash=d.source_hash,
        target_hash=d.target_hash, source_modified=modified_of.get(d.source_key), values=snapshot,
    )


def _ref(batch: Batch, d: Decision) -> RecordRef:
    return batch.ref(d.cid, d.source_key, d.target_key)


def _event(batch: Batch, d: Decision, outcome: str) -> None:
    batch.event(_ref(batch, d), outcome, None, d.changes if outcome in ("modified", "coupled") else None)


def _pair_ref(batch: Batch, d: PairDecision, direction: str) -> RecordRef:
    return RecordRef.oriented(batch.job_id, batch.mapping, direction, d.coupling.id, d.local_key, d.integration_key)
