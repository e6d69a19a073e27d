"""match_on: coupling a new source record to the one uncoupled target record with equal values,
instead of inserting a duplicate. Used by every run (before inserting) and by the operator's
`match` action, which couple by the same rule.

Reading only: the couplings a match makes are written by the sink, before any target write.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tablesync.apps.table import match_value
from tablesync.apps.tables import Table
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


@dataclass(frozen=True)
class Candidates:
    """The records that make a source record's match ambiguous or not: target records whose
    match_on values equal its own (`free` ones no coupling holds; `waiting` ones a coupling holds
    only for their own failed or ambiguous match), and `rivals`, the other source records with
    the same values, which would claim the same counterpart."""

    free: list[str]
    waiting: list[str]
    rivals: list[str]

    @property
    def all(self) -> list[str]:
        return [*self.free, *self.waiting]

    def ambiguity(self, columns: str, source: str, target: str) -> str | None:
        """Why this record cannot be coupled by match_on, if it cannot (None: one clear counterpart,
        or none at all)."""
        if not self.all:
            return None
        if len(self.all) > 1:
            return (f"match_on ({columns}) is ambiguous: {len(self.all)} uncoupled {target} records match "
                    f"({', '.join(self.all[:5])}); nothing is created on either side: couple one manually or make the values unique")
        if self.rivals:
            return (f"match_on ({columns}) is ambiguous: the {target} record {self.all[0]} also matches the {source} "
                    f"record(s) {', '.join(self.rivals[:5])}; nothing is created on either side: couple one manually "
                    "or make the values unique")
        return None


NONE = Candidates([], [], [])


def counterparts(store: sa.Engine, plan: DirectionPlan, source: Table, target: Table,
                 wanted: Mapping[str, MatchKey]) -> dict[str, Candidates]:
    """For each source key, its match_on candidates on the target side, and its rivals on its own.

    Both sides are looked up, so an ambiguity on either side is seen whichever side's pass comes
    first: two source records matching one target record are as ambiguous as one matching two."""
    if not wanted:
        return {}
    keys = list(dict.fromkeys(wanted.values()))
    found = target.find_matches(plan.match_columns, keys)
    if not any(found.get(k) for k in keys):
        return {key: NONE for key in wanted}
    same = source.find_matches(plan.source_match_columns, keys) if plan.source_match_columns else {}
    reverse = "from_integration" if plan.direction == "to_integration" else "to_integration"
    with store.connect() as conn:
        held = cs.target_holders(conn, plan.mapping, plan.direction, sorted({k for ks in found.values() for k in ks}))
        rivals_held = cs.target_holders(conn, plan.mapping, reverse, sorted({k for ks in same.values() for k in ks}))
    out = {}
    for key, values in wanted.items():
        hits = found.get(values, [])
        out[key] = Candidates([k for k in hits if k not in held], [k for k in hits if held.get(k) is False],
                              [k for k in same.get(values, []) if k != key and rivals_held.get(k) is not True])
    return out


def match_decisions(store: sa.Engine, plan: DirectionPlan, source: Table, target: Table, decisions: list[Decision]) -> None:
    """Turn this batch's inserts into couplings where match_on finds exactly one counterpart: the
    decision becomes an update (or unchanged) of that record, marked `matched`.

    An ambiguity creates nothing, on either side (SPEC §4): several candidates, or other source
    records matching the same candidate, fail the record with an error naming them, instead of
    inserting or guessing. A candidate waiting for its own failed match counts as a candidate, so
    that a bidirectional run's second pass does not copy the records the first pass found
    ambiguous; once the ambiguity is gone, the two waiting records are coupled to each other."""
    # a record whose key the mapping carries (target_key already set) is matched too: its
    # counterpart may exist under that very key, which an insert would only collide with
    fresh = [d for d in decisions if d.action == INSERT and (d.coupling is None or d.coupling.target_key is None)]
    if not plan.match_columns or not fresh:
        return
    wanted = {d.source_key: key for d in fresh if (key := match_key(plan, d.values)) is not None}
    found = counterparts(store, plan, source, target, wanted)
    side, columns = plan.target_side(), ", ".join(plan.match_columns)
    claimed: dict[str, str] = {}
    matched: list[Decision] = []
    for d in fresh:
        candidates = found.get(d.source_key, NONE)
        why = candidates.ambiguity(columns, plan.source_side(), side)
        if not candidates.all:
            continue
        if why is not None:
            d.action = FAIL
            d.message = why
        elif candidates.all[0] in claimed:
            d.action = FAIL
            d.message = (f"match_on ({columns}): {side} record {candidates.all[0]} also matches {plan.source_side()} "
                         f"record {claimed[candidates.all[0]]}, which was coupled to it")
        else:
            claimed[candidates.all[0]] = d.source_key
            d.target_key, d.matched, d.absorbs = candidates.all[0], True, bool(candidates.waiting)
            matched.append(d)
    if not matched:
        return
    rows = target.fetch([d.target_key for d in matched if d.target_key], plan.target_fields, apply_filter=False)
    for d in matched:
        d.changes = diff(plan, rows.get(d.target_key or "", {}), canonical_values(d.values, plan.target_fields)) or None
        d.action = UPDATE if d.changes else UNCHANGED
