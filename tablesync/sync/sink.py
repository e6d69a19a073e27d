"""A real run's sink: the write and record stages of every path (see `context.Sink`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tablesync.apps.table import AppTable
from tablesync.store import couplings as cs
from tablesync.store.jobs import Counters
from tablesync.store.watermarks import set_watermark
from tablesync.sync import deletions, one_way, two_way
from tablesync.sync.context import RunContext
from tablesync.sync.decide import Decision
from tablesync.sync.merge import PairDecision
from tablesync.sync.plan import DirectionPlan, PairPlan


class Writer:
    """Writes targets, couplings, watermarks, errors and counters; each batch in one store transaction."""

    def apply(self, ctx: RunContext, plan: DirectionPlan, source: AppTable, target: AppTable,
              decisions: list[Decision], modified_of: dict[str, Any]) -> Counters:
        return one_way.apply_batch(ctx, plan, source, target, decisions, modified_of)

    def apply_pairs(self, ctx: RunContext, plan: PairPlan, tables: dict[str, AppTable],
                    decisions: list[PairDecision], modified: dict[str, dict[int, Any]]) -> Counters:
        return two_way.apply_pairs(ctx, plan, tables, decisions, modified)

    def settle_deletions(self, ctx: RunContext, plan: DirectionPlan, source: AppTable, target: AppTable,
                         gone: list[deletions.Gone], strategy: str, two_way: bool) -> Counters:
        return deletions.settle(ctx, plan, source, target, gone, strategy, two_way)

    def adopt(self, ctx: RunContext, plan: DirectionPlan, found: Sequence[tuple[int, str]]) -> None:
        with ctx.store.begin() as conn:
            cs.set_target_keys(conn, plan.direction, found)

    def forget_intents(self, ctx: RunContext, ids: Sequence[int]) -> None:
        if ids:
            with ctx.store.begin() as conn:
                cs.delete_intents(conn, ids)

    def set_watermark(self, ctx: RunContext, mapping: str, side: str, value: Any) -> None:
        with ctx.store.begin() as conn:
            set_watermark(conn, mapping, side, value)

    def bulk_loads(self) -> bool:
        return True
