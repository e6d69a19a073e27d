"""Given source rows, their coupling states and the target rows: what to do with each record.

Pure: no I/O, no clock. The engine feeds it one batch at a time and applies the result in bulk.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tablesync.apps.values import canonical, content_hash
from tablesync.errors import RecordError
from tablesync.store.couplings import CouplingState
from tablesync.sync.plan import DirectionPlan, Refs, canonical_values, copied_values, target_values

Action = Literal["insert", "update", "unchanged", "ignore", "skip", "fail", "conflict"]  # what becomes of one record
INSERT: Action = "insert"
UPDATE: Action = "update"
UNCHANGED: Action = "unchanged"
IGNORE: Action = "ignore"
SKIP: Action = "skip"
FAIL: Action = "fail"


@dataclass
class Decision:
    action: Action
    source_key: str
    coupling: CouplingState | None
    target_key: str | None = None
    values: dict[str, Any] = field(default_factory=dict)  # target column → value to write
    source_values: dict[str, Any] = field(default_factory=dict)  # source column → canonical value (the snapshot)
    source_hash: str | None = None
    target_hash: str | None = None
    changes: dict[str, list[Any]] | None = None  # target column → [old, new]
    message: str | None = None
    completes_insert: bool = False  # a pending intent whose target row already exists (recovery)
    coupling_id: int | None = None  # set once an intent row exists for a decision that had no coupling
    matched: bool = False  # coupled to an existing target record by match_on instead of inserting
    absorbs: bool = False  # matched to a record whose own coupling only tracked its failed match: that one goes
    staged_batch: int | None = None  # its insert intent is in this `insert_intents` batch (the bulk path)

    @property
    def cid(self) -> int | None:
        return self.coupling.id if self.coupling is not None else self.coupling_id


def decide(
    plan: DirectionPlan,
    rows: list[Mapping[str, Any]],
    couplings: Mapping[str, CouplingState],
    targets: Mapping[str, Mapping[str, Any]],
    refs: Refs | None = None,
    prepared: Mapping[str, Prepared] | None = None,
    verify: bool = False,
) -> list[Decision]:
    """One decision per source row, in input order.

    `couplings` is keyed by source key, `targets` by target key (rows of the coupled targets only),
    `refs` translates parent fields' keys, `prepared` (by source key, from `prepare`) saves
    canonicalising and hashing the source rows twice. With `verify` (a full resync), a record
    whose source is unchanged since its last sync is still compared with its target row, so a
    target changed behind tablesync's back is put right.
    """
    prepared = prepared if prepared is not None else prepare(plan, rows)
    return [_decide_one(plan, row, couplings, targets, refs, prepared[plan.source_key(row)], verify) for row in rows]


Prepared = tuple[list[Any], str]  # a source row's canonical values (source_columns order) and their hash


def prepare(plan: DirectionPlan, rows: list[Mapping[str, Any]]) -> dict[str, Prepared]:
    """Canonical values and hash of each source row, by source key: all an unchanged record costs."""
    columns = plan.source_columns
    out = {}
    for row in rows:
        canon = canonical_values(row, columns)
        out[plan.source_key(row)] = (canon, content_hash(canon))
    return out



def settled(coupling: CouplingState | None, source_hash: str) -> bool:
    """Synced, last attempt fine, and the source hashes as at that sync: nothing to do, no target read."""
    return (coupling is not None and coupling.state == "synced" and coupling.last_result == "success"
            and coupling.target_key is not None and source_hash == coupling.source_hash)


def _decide_one(
    plan: DirectionPlan,
    row: Mapping[str, Any],
    couplings: Mapping[str, CouplingState],
    targets: Mapping[str, Mapping[str, Any]],
    refs: Refs | None,
    prepared: Prepared,
    verify: bool = False,
) -> Decision:
    key = plan.source_key(row)
    coupling = couplings.get(key)
    if coupling is not None and coupling.skipped:
        return Decision(SKIP, key, coupling, target_key=coupling.target_key)
    if coupling is not None and coupling.state == "uncoupled":  # an operator or strategy removed the pair
        return Decision(IGNORE, key, coupling)
    source_canon, source_hash = prepared
    if not verify and settled(coupling, source_hash):  # the common case of an incremental run: decided by one hash
        assert coupling is not None
        return Decision(UNCHANGED, key, coupling, target_key=coupling.target_key, source_hash=source_hash,
                        target_hash=coupling.target_hash)
    copied = copied_values(plan, row)
    if copied is not None:  # a field-for-field copy: the source's canonical values and hash serve the target
        values, target_canon, target_hash = copied, source_canon, source_hash
    else:
        try:
            values = target_values(plan, row, refs)
        except RecordError as exc:
            return Decision(FAIL, key, coupling, target_key=coupling.target_key if coupling else None, message=str(exc))
        target_canon = _target_canon(plan, values, source_canon)
        hash_canon = (target_canon if plan.target_hash_columns == plan.target_fields
                      else canonical_values(values, plan.target_hash_columns))
        target_hash = source_hash if hash_canon == source_canon else content_hash(hash_canon)
    base = dict(source_key=key, coupling=coupling, values=values, source_hash=source_hash, target_hash=target_hash,
                source_values=dict(zip(plan.source_columns, source_canon)) if plan.keeps_snapshot else {})

    if coupling is None or (coupling.target_key is None and not plan.key_from_source):
        if plan.sync_only_coupled and (coupling is None or coupling.state != "pending"):
            return Decision(IGNORE, **base)
        return Decision(INSERT, target_key=_source_made_key(plan, values), **base)
    target_key = coupling.target_key if coupling.target_key is not None else _source_made_key(plan, values)
    current = targets.get(target_key) if target_key is not None else None

    if coupling.state == "pending":
        if current is None:
            return Decision(INSERT, target_key=target_key, **base)
        # The insert landed before a crash: finish it, writing only if the content differs.
        decision = _compare(plan, current, target_canon, base, target_key)
        decision.completes_insert = True
        return decision

    if current is None:
        return Decision(
            FAIL, target_key=target_key, message=f"the coupled {plan.target_side()} record {target_key} no longer exists", **base
        )
    if not verify and base["source_hash"] == coupling.source_hash and coupling.last_result == "success":
        return Decision(UNCHANGED, target_key=target_key, **base)
    return _compare(plan, current, target_canon, base, target_key)


def _target_canon(plan: DirectionPlan, values: Mapping[str, Any], source_canon: list[Any]) -> list[Any]:
    """Canonical target values; a plain field's is its source value's, already computed."""
    return [source_canon[i] if i is not None and (v is None or type(v) is r.plain_type) else canonical(v)
            for r, i, v in zip(plan.rules, plan.plain_source_index, map(values.get, plan.target_fields))]


def _compare(
    plan: DirectionPlan, current: Mapping[str, Any], wanted: list[Any], base: dict[str, Any], target_key: str
) -> Decision:
    changes = diff(plan, current, wanted)
    if not changes:
        return Decision(UNCHANGED, target_key=target_key, **base)
    return Decision(UPDATE, target_key=target_key, changes=changes, **base)


def diff(plan: DirectionPlan, current: Mapping[str, Any], wanted: list[Any]) -> dict[str, list[Any]]:
    """{target column: [current, wanted]} for the mapped columns whose canonical values differ."""
    changes: dict[str, list[Any]] = {}
    for column, new in zip(plan.target_fields, wanted):
        old = canonical(current.get(column))
        if old != new:
            changes[column] = [old, new]
    return changes


def _source_made_key(plan: DirectionPlan, values: Mapping[str, Any]) -> str | None:
    return plan.target_key(values)
