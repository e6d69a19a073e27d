"""match_on: coupling a new source record to the one uncoupled target record with equal values,
instead of inserting a duplicate. Used by every run (before inserting) and by the operator's
`match` action, which couple by the same rule.

Reading only: the couplings a match makes are written by the sink, before any target write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from tablesync.apps.table import AppTable, match_value
from tablesync.apps.values import canonical
from tablesync.store import couplings as cs
from tablesync.sync.decide import FAIL, INSERT, UNCHANGED, UPDATE, Decision, diff
from tablesync.sync.plan import DirectionPlan, canonical_values

MatchKey = tuple[Any, ...]


def match_key(plan: DirectionPlan, values: Mapping[str, Any]) -> MatchKey | None:
    """The match_on values of a record's target values, normalised (text without case); None
    when one is null: a null matches nothing."""
    key = tuple(match_value(canonical(values.get(c))) for c in plan.match_columns)
    return None if any(v is None for v in key) else key


def counterparts(store: sa.Engine, plan: DirectionPlan, target: AppTable, wanted: Mapping[str, MatchKey]) -> dict[str, list[str]]:
    """For each source key, the keys of the target records whose match_on values equal its own
    and that no coupling of the mapping holds yet."""
    if not wanted:
        return {}
    found = target.find_matches(plan.match_columns, list(dict.fromkeys(wanted.values())))
    with store.connect() as conn:
        taken = cs.coupled_target_keys(conn, plan.mapping, plan.direction, sorted({k for ks in found.values() for k in ks}))
    return {key: [k for k in found.get(values, []) if k not in taken] for key, values in wanted.items()}


def match_decisions(store: sa.Engine, plan: DirectionPlan, target: AppTable, decisions: list[Decision]) -> None:
    """Turn this batch's inserts into couplings where match_on finds exactly one counterpart: the
    decision becomes an update (or unchanged) of that record, marked `matched`.

    Several candidates, or a candidate another record of this batch already took, fail the record
    with an error naming them instead of creating a duplicate."""
    # a record whose key the mapping carries (target_key already set) is matched too: its
    # counterpart may exist under that very key, which an insert would only collide with
    fresh = [d for d in decisions if d.action == INSERT and (d.coupling is None or d.coupling.target_key is None)]
    if not plan.match_columns or not fresh:
        return
    wanted = {d.source_key: key for d in fresh if (key := match_key(plan, d.values)) is not None}
    found = counterparts(store, plan, target, wanted)
    side, columns = plan.target_side(), ", ".join(plan.match_columns)
    claimed: dict[str, str] = {}
    matched: list[Decision] = []
    for d in fresh:
        candidates = found.get(d.source_key, [])
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
    rows = target.fetch([d.target_key for d in matched if d.target_key], plan.target_fields, apply_filter=False)
    for d in matched:
        d.changes = diff(plan, rows.get(d.target_key or "", {}), canonical_values(d.values, plan.target_fields)) or None
        d.action = UPDATE if d.changes else UNCHANGED
