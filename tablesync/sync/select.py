"""The select stage's shared pieces: how far a run read (watermarks), and the couplings a batch's
rows need besides their own (the parent keys of `parent` fields).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from tablesync.apps.tables import Table
from tablesync.store import couplings as cs
from tablesync.sync.context import RunContext
from tablesync.sync.plan import DirectionPlan, Refs, parent_key


def page_top(table: Table, page: list[dict[str, Any]], max_seen: Any) -> Any:
    """The highest modified-on seen so far, including this page."""
    mod = table.side.modified
    if not mod:
        return max_seen
    top = max((r[mod] for r in page if r.get(mod) is not None), default=None)
    return top if max_seen is None or (top is not None and top > max_seen) else max_seen


def advance_watermark(ctx: RunContext, mapping: str, side: str, watermark: Any, max_seen: Any, horizon: Any) -> None:
    """Move the side's watermark to what this run read, never past the oldest open write
    transaction (`horizon`) and never backwards."""
    new_mark = max_seen if horizon is None or max_seen is None else min(max_seen, horizon)
    if watermark is not None and (new_mark is None or new_mark < watermark):
        new_mark = watermark
    if new_mark is not None:
        ctx.sink.set_watermark(ctx, mapping, side, new_mark)


def parent_refs(conn: sa.Connection, plan: DirectionPlan, rows: Sequence[Mapping[str, Any]]) -> Refs:
    """How these rows' parent keys cross over: for each parent field, {source-side key: target-side
    key} from the parent mapping's couplings (one query per parent field)."""
    out: dict[str, dict[str, str]] = {}
    done: dict[tuple[str, ...], dict[str, str]] = {}  # the columns of a composite parent key are translated once
    for rule in plan.rules:
        if rule.parent is not None and rule.source is not None:
            group = rule.parent_sources or (rule.source,)
            if group not in done:
                keys = sorted({k for r in rows if (k := parent_key(rule, r)) is not None})
                done[group] = cs.translate(conn, rule.parent, plan.direction, keys) if keys else {}
            out[rule.target] = done[group]
    return out
