"""Three-way, field-level merge of one coupled record of a bidirectional mapping.

Each coupling keeps a snapshot of both sides' mapped values as they were after the last sync. A field
changed on one side only flows to the other; changed on both sides to the same value is no conflict;
changed on both to different values is an update conflict, settled by `on_update_conflict`. Fields
without a conflict merge in every case, so a conflict on `phone` never holds back a change to `city`.

The snapshot is also what each side's stored hash is computed over: after a clean sync it equals the
records (so the next run sees an unchanged pair at the cost of two hashes); after an unresolved
conflict it keeps the old values of the conflicting fields, so the conflict is still seen when an
operator retries the record.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tablesync.apps.values import canonical, content_hash
from tablesync.errors import RecordError
from tablesync.store.couplings import CouplingState
from tablesync.sync.decide import FAIL, SKIP, UNCHANGED, UPDATE, Action
from tablesync.sync.plan import PairPlan, Refs, target_values

CONFLICT: Action = "conflict"  # an update conflict left unresolved (the merged fields are still written)


@dataclass(frozen=True)
class Conflict:
    """A field both sides changed to different values; a composite parent key's columns conflict together."""

    local_columns: tuple[str, ...]
    integration_columns: tuple[str, ...]
    local_value: Any
    integration_value: Any

    def describe(self) -> str:
        return (f"{', '.join(self.local_columns)}: local {self.local_value!r} ≠ integration "
                f"{', '.join(self.integration_columns)} {self.integration_value!r}")


@dataclass
class PairDecision:
    action: Action  # unchanged | update | conflict | skip | fail
    coupling: CouplingState  # oriented local → integration
    to_local: dict[str, Any] = field(default_factory=dict)  # local column → value to write
    to_integration: dict[str, Any] = field(default_factory=dict)
    changes_local: dict[str, list[Any]] = field(default_factory=dict)  # column → [old, new], canonical
    changes_integration: dict[str, list[Any]] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    resolved_by: str | None = None  # the side that won the conflicts a strategy settled
    snapshot: dict[str, dict[str, Any]] | None = None
    local_hash: str | None = None
    integration_hash: str | None = None
    message: str | None = None

    @property
    def local_key(self) -> str:
        return str(self.coupling.source_key)

    @property
    def integration_key(self) -> str:
        return str(self.coupling.target_key)

    def conflict_message(self) -> str:
        return "update conflict: " + "; ".join(c.describe() for c in self.conflicts)


def side_hash(values: Mapping[str, Any], columns: tuple[str, ...]) -> str:
    return content_hash([values.get(c) for c in columns])


def merge(plan: PairPlan, coupling: CouplingState, local: Mapping[str, Any], integration: Mapping[str, Any],
          refs: Mapping[str, Refs] | None = None) -> PairDecision:
    """Decide one coupled record with both sides in view. `coupling` is oriented local → integration;
    `refs` holds each direction's parent-key translations."""
    if coupling.skipped:
        return PairDecision(SKIP, coupling)
    cur_l = {c: canonical(local.get(c)) for c in plan.local_columns}
    cur_i = {c: canonical(integration.get(c)) for c in plan.integration_columns}
    lh, ih = side_hash(cur_l, plan.local_columns), side_hash(cur_i, plan.integration_columns)
    if lh == coupling.source_hash and ih == coupling.target_hash and coupling.last_result == "success":
        return PairDecision(UNCHANGED, coupling, local_hash=lh, integration_hash=ih)
    try:
        want_i = target_values(plan.to_integration, local, (refs or {}).get("to_integration"))
        want_l = target_values(plan.from_integration, integration, (refs or {}).get("from_integration"))
    except RecordError as exc:
        return PairDecision(FAIL, coupling, message=str(exc))

    snap = coupling.snapshot or {}
    snap_l, snap_i = snap.get("local"), snap.get("integration")
    # Without a snapshot of a side (a coupling made before this mapping was bidirectional), any field
    # of a side whose hash moved counts as changed there.
    l_moved, i_moved = lh != coupling.source_hash, ih != coupling.target_hash

    def changed_l(col: str) -> bool:
        return l_moved if not isinstance(snap_l, dict) else cur_l.get(col) != snap_l.get(col)

    def changed_i(col: str) -> bool:
        return i_moved if not isinstance(snap_i, dict) else cur_i.get(col) != snap_i.get(col)

    def differ(want: Mapping[str, Any], cur: Mapping[str, Any], cols: tuple[str, ...]) -> list[str]:
        return [c for c in cols if canonical(want[c]) != cur[c]]

    d = PairDecision(UPDATE, coupling)
    for f in plan.fields:
        lc, ic = f.local, f.integration  # one column each, or a composite parent key's columns
        if f.direction == "to_integration" and ic:
            if f.constant or any(map(changed_l, lc)):
                d.to_integration.update((c, want_i[c]) for c in differ(want_i, cur_i, ic))
        elif f.direction == "from_integration" and lc:
            if f.constant or any(map(changed_i, ic)):
                d.to_local.update((c, want_l[c]) for c in differ(want_l, cur_l, lc))
        elif lc and ic:
            if not differ(want_i, cur_i, ic) or not differ(want_l, cur_l, lc):
                # In agreement already (both sides may have changed to the same value). With a
                # transform one way, either pass may be the one that made them agree: local "de"
                # copied as "DE", or integration "Fr" copied back as is; writing again would ping-pong.
                continue
            lchg, ichg = any(map(changed_l, lc)), any(map(changed_i, ic))
            if not (lchg or ichg):
                continue  # as the last sync left it: a difference it accepted (a transform's) is no change
            if lchg and not ichg:
                d.to_integration.update((c, want_i[c]) for c in differ(want_i, cur_i, ic))
            elif ichg and not lchg:
                d.to_local.update((c, want_l[c]) for c in differ(want_l, cur_l, lc))
            else:
                d.conflicts.append(Conflict(lc, ic, _value(local, lc), _value(integration, ic)))

    if d.conflicts:
        d.resolved_by = _winner(plan, local, integration)
        for c in d.conflicts:
            if d.resolved_by == "local":
                d.to_integration.update((col, want_i[col]) for col in c.integration_columns)
            elif d.resolved_by == "integration":
                d.to_local.update((col, want_l[col]) for col in c.local_columns)

    new_l = {**cur_l, **{c: canonical(v) for c, v in d.to_local.items()}}
    new_i = {**cur_i, **{c: canonical(v) for c, v in d.to_integration.items()}}
    if d.conflicts and d.resolved_by is None:
        d.action = CONFLICT
        for c in d.conflicts:  # keep the pre-conflict values, so the conflict is seen again on retry
            for col in c.local_columns:
                new_l[col] = snap_l.get(col) if isinstance(snap_l, dict) else None
            for col in c.integration_columns:
                new_i[col] = snap_i.get(col) if isinstance(snap_i, dict) else None
    elif not d.to_local and not d.to_integration:
        d.action = UNCHANGED
    d.changes_local = {c: [cur_l.get(c), new_l[c]] for c in d.to_local}
    d.changes_integration = {c: [cur_i.get(c), new_i[c]] for c in d.to_integration}
    d.snapshot = {"local": new_l, "integration": new_i}
    d.local_hash, d.integration_hash = side_hash(new_l, plan.local_columns), side_hash(new_i, plan.integration_columns)
    return d


def _value(row: Mapping[str, Any], columns: tuple[str, ...]) -> Any:
    """A field's value as a conflict shows it: a column's value, or a composite key's values."""
    return row.get(columns[0]) if len(columns) == 1 else tuple(row.get(c) for c in columns)


def _winner(plan: PairPlan, local: Mapping[str, Any], integration: Mapping[str, Any]) -> str | None:
    strategy = plan.on_update_conflict
    if strategy == "local_wins":
        return "local"
    if strategy == "integration_wins":
        return "integration"
    if strategy == "newest_wins" and plan.local_modified and plan.integration_modified:
        lm, im = _instant(local.get(plan.local_modified)), _instant(integration.get(plan.integration_modified))
        if lm is not None and im is not None and lm != im:
            return "local" if lm > im else "integration"
    return None  # skip, or newest_wins without two distinct modified-on values


def _instant(value: Any) -> datetime | None:
    text = canonical(value)
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None
