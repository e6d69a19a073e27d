"""Coupling rows seen from one sync direction (source/target instead of local/integration).

Every function is set-based: one query per 1,000 keys for reads, one executemany for writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from store.config_model import source_side, target_side
from store.db import utcnow
from store.schema import UNFINISHED, couplings
from workers import pg_bulk
from workers.apps import IN_CHUNK, key_batch, key_in
from workers.decide import CouplingState
from workers.fieldmap import DirectionPlan


@dataclass(frozen=True)
class Sides:
    """Column names of the coupling table for one direction."""

    source_key: str
    target_key: str
    source_hash: str
    target_hash: str
    source_modified: str

    @classmethod
    def of(cls, direction: str) -> "Sides":
        s, t = source_side(direction), target_side(direction)
        return cls(f"{s}_key", f"{t}_key", f"{s}_hash", f"{t}_hash", f"{s}_modified")


def _state(row: Any, sides: Sides) -> CouplingState:
    m = row._mapping
    return CouplingState(
        id=m["id"], source_key=m[sides.source_key], target_key=m[sides.target_key], state=m["state"],
        source_hash=m[sides.source_hash], target_hash=m[sides.target_hash], last_result=m["last_result"],
        skipped=m["skipped"], last_job_id=m["last_job_id"], snapshot=m.get("last_values"), origin=m["origin"],
    )


_STATE_COLUMNS = ("id", "local_key", "integration_key", "state", "local_hash", "integration_hash", "last_result",
                  "skipped", "last_job_id", "origin")


def by_source_keys(conn: sa.Connection, mapping: str, direction: str, keys: Sequence[str],
                   snapshot: bool = False) -> dict[str, CouplingState]:
    """Couplings by source key; the per-field snapshot (only bidirectional merges need it) on request."""
    sides = Sides.of(direction)
    col = couplings.c[sides.source_key]
    out: dict[str, CouplingState] = {}
    step = key_batch(conn.dialect.name)
    columns = [couplings.c[c] for c in _STATE_COLUMNS] + ([couplings.c.last_values] if snapshot else [])
    for i in range(0, len(keys), step):
        q = sa.select(*columns).where(couplings.c.mapping == mapping, key_in(col, list(keys[i:i + step]), conn.dialect.name))
        for row in conn.execute(q):
            state = _state(row, sides)
            out[str(state.source_key)] = state
    return out


def retry_keys(conn: sa.Connection, mapping: str, direction: str) -> list[str]:
    """Source keys of couplings whose last attempt failed or never finished, and are not skipped."""
    sides = Sides.of(direction)
    col = couplings.c[sides.source_key]
    q = sa.select(col).where(  # UNFINISHED is the predicate of a partial index: only those rows are read
        couplings.c.mapping == mapping, UNFINISHED, col.is_not(None), couplings.c.state != "uncoupled",
    ).order_by(col)
    return [str(k) for k in conn.execute(q).scalars()]


def retry_pairs(conn: sa.Connection, mapping: str) -> list[tuple[str, str]]:
    """(side, key) of every unfinished or failed coupling of a bidirectional mapping, by the side to
    read it from: a pending insert from the side it copies, anything else from its local key."""
    q = sa.select(couplings.c.local_key, couplings.c.integration_key, couplings.c.state, couplings.c.origin).where(
        couplings.c.mapping == mapping, UNFINISHED, couplings.c.state != "uncoupled",
    ).order_by(couplings.c.id)
    out = []
    for local_key, integration_key, state, origin in conn.execute(q):
        side = origin if state == "pending" and origin else ("local" if local_key is not None else "integration")
        key = local_key if side == "local" else integration_key
        if key is not None:
            out.append((side, str(key)))
    return out


def insert_intents(
    conn: sa.Connection, mapping: str, direction: str, items: Sequence[tuple[str, str | None]], job_id: int
) -> dict[str, int]:
    """Record, before the target write, that these source keys are being inserted (and under which key)."""
    if not items:
        return {}
    sides = Sides.of(direction)
    now = utcnow()
    if pg_bulk.usable(conn):  # keys go in by COPY: one stream instead of escaped array parameters
        pg_bulk.staging(conn, "intents_in", [("s", "text"), ("t", "text")], items)
        rows = conn.execute(sa.text(
            f"INSERT INTO couplings (mapping, {sides.source_key}, {sides.target_key}, state, origin, failures, skipped, "
            "created_at, last_job_id) SELECT :m, s, t, 'pending', :origin, 0, false, :now, :job "
            f"FROM intents_in RETURNING id, {sides.source_key}"
        ), {"m": mapping, "now": now, "job": job_id, "origin": source_side(direction)})
        out = {str(sk): int(i) for i, sk in rows}
        conn.execute(sa.text("DROP TABLE intents_in"))
        return out
    rows = [
        {"mapping": mapping, sides.source_key: sk, sides.target_key: tk, "state": "pending",
         "origin": source_side(direction), "failures": 0,
         "skipped": False, "created_at": now, "last_job_id": job_id}
        for sk, tk in items
    ]
    result = conn.execute(
        sa.insert(couplings).returning(couplings.c.id, sort_by_parameter_order=True), rows
    )
    return {sk: i for (sk, _), i in zip(items, result.scalars())}


def set_target_keys(conn: sa.Connection, direction: str, pairs: Sequence[tuple[int, str | None]]) -> None:
    if not pairs:
        return
    col = Sides.of(direction).target_key
    conn.execute(
        sa.update(couplings).where(couplings.c.id == sa.bindparam("_id")).values({col: sa.bindparam("_tk")}),
        [{"_id": i, "_tk": k} for i, k in pairs],
    )


@dataclass
class Outcome:
    """What to write back to one coupling after its record was handled."""

    coupling_id: int
    success: bool
    target_key: str | None = None
    source_hash: str | None = None
    target_hash: str | None = None
    source_modified: Any = None
    values: dict[str, Any] | None = None
    error_id: int | None = None


def write_outcomes(
    conn: sa.Connection, direction: str, job_id: int, outcomes: Iterable[Outcome], skip_after_failures: int = 3
) -> list[int]:
    """Write successes and failures in bulk; returns the ids of couplings this call skipped.

    A success resets the failure count; the `skip_after_failures`-th consecutive failure skips the
    coupling (reason `failures`) until an operator acts on it.
    """
    sides = Sides.of(direction)
    now = utcnow()
    outcomes = list(outcomes)
    ok = [o for o in outcomes if o.success]
    bad = [o for o in outcomes if not o.success]
    if ok and pg_bulk.usable(conn):
        pg_bulk.staging(conn, "outcomes_in", [("id", "bigint"), ("tk", "text"), ("sh", "text"), ("th", "text"),
                                              ("sm", "text"), ("lv", "json")],
                        ((o.coupling_id, o.target_key, o.source_hash, o.target_hash, _modified_text(o.source_modified),
                          json.dumps(o.values, default=str) if o.values is not None else None) for o in ok))
        conn.execute(sa.text(
            f"UPDATE couplings AS c SET {sides.target_key} = u.tk, {sides.source_hash} = u.sh, "
            f"{sides.target_hash} = u.th, {sides.source_modified} = u.sm, last_values = u.lv, "
            "state = 'synced', last_result = 'success', failures = 0, last_job_id = :job, last_synced_at = :now "
            "FROM outcomes_in AS u WHERE c.id = u.id"
        ), {"job": job_id, "now": now})
        conn.execute(sa.text("DROP TABLE outcomes_in"))
    elif ok:
        conn.execute(
            sa.update(couplings).where(couplings.c.id == sa.bindparam("_id")).values({
                sides.target_key: sa.bindparam("_tk"), sides.source_hash: sa.bindparam("_sh"),
                sides.target_hash: sa.bindparam("_th"), sides.source_modified: sa.bindparam("_sm"),
                "last_values": sa.bindparam("_lv"), "state": "synced", "last_result": "success", "failures": 0,
                "last_job_id": job_id, "last_synced_at": now,
            }),
            [{"_id": o.coupling_id, "_tk": o.target_key, "_sh": o.source_hash, "_th": o.target_hash,
              "_sm": _modified_text(o.source_modified), "_lv": o.values} for o in ok],
        )
    if not bad:
        return []
    reached = couplings.c.failures + 1 >= skip_after_failures
    conn.execute(
        sa.update(couplings).where(couplings.c.id == sa.bindparam("_id")).values(
            last_result="failure", failures=couplings.c.failures + 1, last_job_id=job_id,
            last_error_id=sa.bindparam("_err"),
            skipped=sa.case((reached, sa.true()), else_=couplings.c.skipped),
            skip_reason=sa.case((sa.and_(reached, couplings.c.skipped.is_(False)), "failures"), else_=couplings.c.skip_reason),
        ),
        [{"_id": o.coupling_id, "_err": o.error_id} for o in bad],
    )
    ids = [o.coupling_id for o in bad]
    return [int(i) for i in conn.execute(sa.select(couplings.c.id).where(
        couplings.c.id.in_(ids), couplings.c.skipped.is_(True), couplings.c.last_job_id == job_id,
        couplings.c.skip_reason == "failures")).scalars()]


def skip_couplings(conn: sa.Connection, job_id: int, items: Sequence[tuple[int, int]], reason: str) -> None:
    """Skip (coupling id, error id) pairs with `reason`: sync leaves them alone until an operator acts."""
    if items:
        conn.execute(
            sa.update(couplings).where(couplings.c.id == sa.bindparam("_id")).values(
                skipped=True, skip_reason=reason, last_error_id=sa.bindparam("_err"), last_job_id=job_id,
                last_result="failure"),
            [{"_id": cid, "_err": eid} for cid, eid in items],
        )


def delete_intents(conn: sa.Connection, ids: Sequence[int]) -> None:
    """Forget insert intents whose source record disappeared before it was ever synced."""
    for i in range(0, len(ids), IN_CHUNK):
        conn.execute(sa.delete(couplings).where(couplings.c.id.in_(ids[i:i + IN_CHUNK]), couplings.c.state == "pending"))


def translate(conn: sa.Connection, mapping: str, direction: str, keys: Sequence[str]) -> dict[str, str]:
    """{source key: target key} of `mapping`'s synced couplings: how a child's parent key crosses over."""
    sides = Sides.of(direction)
    src, tgt = couplings.c[sides.source_key], couplings.c[sides.target_key]
    out: dict[str, str] = {}
    step = key_batch(conn.dialect.name)
    for i in range(0, len(keys), step):
        q = sa.select(src, tgt).where(couplings.c.mapping == mapping, couplings.c.state == "synced", tgt.is_not(None),
                                      key_in(src, list(keys[i:i + step]), conn.dialect.name))
        out.update({str(s): str(t) for s, t in conn.execute(q)})
    return out


def parent_refs(conn: sa.Connection, plan: DirectionPlan, rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """Translations for the parent fields of these source rows (one query per parent field)."""
    out: dict[str, dict[str, str]] = {}
    for rule in plan.rules:
        if rule.parent is not None and rule.source is not None:
            keys = sorted({str(r[rule.source]) for r in rows if r.get(rule.source) is not None})
            out[rule.target] = translate(conn, rule.parent, plan.direction, keys) if keys else {}
    return out


def coupled_target_keys(conn: sa.Connection, mapping: str, direction: str, keys: Sequence[str]) -> set[str]:
    col = couplings.c[Sides.of(direction).target_key]
    found: set[str] = set()
    step = key_batch(conn.dialect.name)
    for i in range(0, len(keys), step):
        found.update(conn.execute(sa.select(col).where(couplings.c.mapping == mapping,
                                                       key_in(col, list(keys[i:i + step]), conn.dialect.name))).scalars())
    return found


def _modified_text(value: Any) -> str | None:
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)
