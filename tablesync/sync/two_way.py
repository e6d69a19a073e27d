"""One run of a bidirectional mapping: changes of both sides read first, each coupling decided once.

1. Deletions: the coupled-key scan, with every `on_deletion_conflict` strategy allowed both ways.
2. Both sides' changed keys beyond their watermarks are collected (keys and modified-on only) before
   anything is written, plus every unfinished or failed coupling. Rows written by this run carry
   later modified-on values, so they are not in these sets: this run never re-reads its own writes,
   and the next run sees them as echoes (equal hashes) and writes nothing.
3. Local keys, then integration keys, in batches. An uncoupled record (or an unfinished insert
   copied from this side) goes through the one-way insert/match path toward the other side. A
   coupled record is read on both sides and merged field by field (`merge`); a coupling already
   decided in this run (its other side changed too) is not decided twice. The run's sink writes
   and records each batch (`apply_pairs`).
4. Each side's watermark advances to what step 2 read, capped by the oldest open write transaction.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tablesync.apps.tables import Table
from tablesync.config.model import MappingSpec
from tablesync.store import couplings as cs
from tablesync.store.jobs import Counters
from tablesync.store.watermarks import get_watermark, minus_overlap
from tablesync.sync.context import RunContext
from tablesync.sync.decide import FAIL, SKIP
from tablesync.sync.deletions import scan_deletions
from tablesync.sync.merge import PairDecision, merge
from tablesync.sync.one_way import process_rows
from tablesync.sync.plan import PairPlan, compile_pair_plan
from tablesync.sync.select import advance_watermark, page_top, parent_refs

KEY_PAGE = 20_000  # keys per page while collecting changes: only key and modified-on are read
SIDES = ("local", "integration")


def run_bidirectional(ctx: RunContext, spec: MappingSpec, local: Table, integration: Table) -> Counters:
    tables = {"local": local, "integration": integration}
    plan = compile_pair_plan(spec, local.table, integration.table)
    total = Counters()
    total.add(scan_deletions(ctx, plan.to_integration, local, integration, spec.on_deletion_conflict, two_way=True,
                             every_seconds=spec.deletion_scan_seconds()))

    with ctx.store.connect() as conn:
        marks = {side: None if ctx.full else get_watermark(conn, spec.name, side) for side in SIDES}
        retry = cs.retry_pairs(conn, spec.name)
    horizons = {side: tables[side].horizon() for side in SIDES}
    keys: dict[str, list[str]] = {side: [] for side in SIDES}
    tops: dict[str, Any] = {}
    for side in SIDES:
        table, top = tables[side], None
        for page in table.pages([], minus_overlap(marks[side], ctx.overlap_seconds), KEY_PAGE):
            top = page_top(table, page, top)
            keys[side].extend(table.key_of(r) for r in page)
            ctx.beat()
        tops[side] = top
    for side, key in retry:
        keys[side].append(key)

    for side in SIDES:
        todo = list(dict.fromkeys(keys[side]))
        for i in range(0, len(todo), ctx.batch_size):
            total.add(sync_batch(ctx, plan, side, tables, todo[i:i + ctx.batch_size]))
            ctx.beat()
    for side in SIDES:
        advance_watermark(ctx, spec.name, side, marks[side], tops[side], horizons[side])
    return total


def sync_batch(ctx: RunContext, plan: PairPlan, side: str, tables: dict[str, Table], keys: list[str]) -> Counters:
    """Changed records of one side: new ones go one way, coupled ones are merged with their counterpart."""
    one_way = plan.one_way(side)
    source, target = tables[side], tables["integration" if side == "local" else "local"]
    rows = source.fetch(keys, one_way.source_columns)
    with ctx.store.connect() as conn:
        couplings = cs.by_source_keys(conn, plan.mapping, one_way.direction, keys, snapshot=True)
    new_rows: list[dict[str, Any]] = []
    pairs: list[tuple[dict[str, Any], cs.CouplingState]] = []
    for key in keys:
        row, c = rows.get(key), couplings.get(key)
        if c is not None and c.id in ctx.handled:
            continue
        if c is None or c.state == "uncoupled" or (c.state == "pending" and c.origin in (None, side)):
            if row is not None:
                new_rows.append(row)
        elif c.state == "synced" and row is not None:
            pairs.append((row, c))
        # else: an insert copied from the other side (its pass handles it), or a row that left the
        # table or its filter (the deletion scan handles coupled ones)
    counters = process_rows(ctx, one_way, source, target, new_rows, couplings)
    if pairs:
        counters.add(_merge_pairs(ctx, plan, side, tables, pairs))
    return counters


def _merge_pairs(ctx: RunContext, plan: PairPlan, side: str, tables: dict[str, Table],
                 pairs: list[tuple[dict[str, Any], cs.CouplingState]], winner: str | None = None) -> Counters:
    """Merge coupled records read on `side` with their counterparts. With `winner`, the pairs are
    merged as if nothing were known of their past: every differing field goes `winner`'s way (the
    operator's Synchronize action)."""
    if winner is not None:
        plan = replace(plan, on_update_conflict=f"{winner}_wins")
        pairs = [(row, replace(c, snapshot=None, source_hash=None, target_hash=None, last_result=None, skipped=False))
                 for row, c in pairs]
    local_side = side == "local"
    other = "integration" if local_side else "local"
    columns = plan.integration_columns if local_side else plan.local_columns
    others = tables[other].fetch([str(c.target_key) for _, c in pairs], columns, apply_filter=False)
    with ctx.store.connect() as conn:
        mine = [row for row, _ in pairs]
        theirs = list(others.values())
        refs = {"to_integration": parent_refs(conn, plan.to_integration, mine if local_side else theirs),
                "from_integration": parent_refs(conn, plan.from_integration, theirs if local_side else mine)}
    decisions: list[PairDecision] = []
    missing: list[PairDecision] = []
    for row, c in pairs:
        oriented = c if local_side else c.flipped()  # merge sees every coupling local → integration
        counterpart = others.get(str(c.target_key))
        if counterpart is None and oriented.skipped:  # a deletion conflict waiting for an operator: not a failure
            decisions.append(PairDecision(SKIP, oriented))
            continue
        if counterpart is None:
            missing.append(PairDecision(FAIL, oriented, message=f"the coupled {other} record {c.target_key} no longer exists"))
            continue
        local_row, integration_row = (row, counterpart) if local_side else (counterpart, row)
        decisions.append(merge(plan, oriented, local_row, integration_row, refs))
    decisions.extend(missing)
    modified: dict[str, dict[int, Any]] = {}  # by direction: each coupling's modified-on at that direction's source
    for direction, column, read_here in (("to_integration", plan.local_modified, local_side),
                                         ("from_integration", plan.integration_modified, not local_side)):
        rows = {c.id: row if read_here else others.get(str(c.target_key), {}) for row, c in pairs}
        modified[direction] = {cid: r.get(column) for cid, r in rows.items()} if column else {}
    counters = ctx.sink.apply_pairs(ctx, plan, tables, decisions, modified)
    ctx.handled.update(d.coupling.id for d in decisions)
    return counters


def resolve_pairs(ctx: RunContext, plan: PairPlan, tables: dict[str, Table], local_keys: list[str], winner: str) -> Counters:
    """Force `winner`'s values onto the other side for these coupled local records."""
    rows = tables["local"].fetch(local_keys, plan.local_columns, apply_filter=False)
    with ctx.store.connect() as conn:
        couplings = cs.by_source_keys(conn, plan.mapping, "to_integration", local_keys, snapshot=True)
    pairs = [(rows[k], c) for k, c in couplings.items() if k in rows and c.state == "synced"]
    return _merge_pairs(ctx, plan, "local", tables, pairs, winner) if pairs else Counters()
