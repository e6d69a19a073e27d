"""Every statement that reads or writes coupling rows for a sync or an operator's action.

Most functions see couplings from one sync direction (source/target instead of local/integration,
`Sides`). Every function is set-based: one query per many keys for reads, one executemany or one
COPY for writes, in the caller's transaction. The console's list queries are in `coupling_queries`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import sqlalchemy as sa

from tablesync.config.model import source_side, target_side
from tablesync.db import pg_bulk
from tablesync.db.engine import utcnow
from tablesync.db.keys import IN_CHUNK, key_batch, key_in
from tablesync.store.schema import UNFINISHED, couplings
from tablesync.store.schema import insert_intents as staged_intents

CouplingStatus = Literal["pending", "synced", "uncoupled"]  # couplings.state


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


@dataclass(frozen=True)
class CouplingState:
    """One coupling as a sync sees it, in its direction's source/target terms."""

    id: int
    source_key: str | None
    target_key: str | None
    state: CouplingStatus  # pending (insert intent not yet confirmed) | synced | uncoupled (removed: never sync again)
    source_hash: str | None
    target_hash: str | None
    last_result: str | None
    skipped: bool = False
    last_job_id: int | None = None
    snapshot: Mapping[str, Any] | None = None  # last_values: {"local": {column: value}, "integration": {...}}
    origin: str | None = None  # side a pending insert copies from

    def flipped(self) -> "CouplingState":
        """The same coupling seen from the opposite direction."""
        return replace(self, source_key=self.target_key, target_key=self.source_key,
                       source_hash=self.target_hash, target_hash=self.source_hash)


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


def has_couplings(conn: sa.Connection, mapping: str) -> bool:
    return conn.execute(sa.select(couplings.c.id).where(couplings.c.mapping == mapping).limit(1)).first() is not None


def retry_keys(conn: sa.Connection, mapping: str, direction: str, failed_in: int | None = None) -> list[str]:
    """Source keys of couplings whose last attempt failed or never finished, and are not skipped;
    but those that failed in job `failed_in` (a chunked run's finalisation retries no record its
    own chunks just failed)."""
    sides = Sides.of(direction)
    col = couplings.c[sides.source_key]
    q = sa.select(col).where(  # UNFINISHED is the predicate of a partial index: only those rows are read
        couplings.c.mapping == mapping, UNFINISHED, col.is_not(None), couplings.c.state != "uncoupled",
    ).order_by(col)
    if failed_in is not None:
        q = q.where(sa.not_(sa.and_(couplings.c.last_job_id == failed_in, couplings.c.last_result == "failure")))
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
    """Record, before the target write, that these source keys are being inserted (and under which
    key), as pending couplings: the general path, for keys the insert itself makes (RETURNING) and
    for stores other than PostgreSQL. `stage_inserts` is the bulk path."""
    if not items:
        return {}
    sides = Sides.of(direction)
    now = utcnow()
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


def stage_inserts(
    conn: sa.Connection, mapping: str, direction: str, items: Sequence[tuple[str, str]], job_id: int, ids: bool = True,
    chunk_id: int | None = None,
) -> tuple[int, dict[str, int]]:
    """Insert intents of records whose target key is known before the write: one `insert_intents`
    row for the batch (PostgreSQL). `land_inserts`/`write_landed` then write each coupling once,
    in its final state. With `ids`, the couplings' ids are taken from their sequence now (for
    events written before the couplings exist). Returns (batch id, {source key: coupling id})."""
    if not items:
        return 0, {}
    taken = conn.execute(sa.text("SELECT array_agg(nextval(CAST(:seq AS regclass))) FROM generate_series(1, :n)"),
                         {"seq": _id_sequence(conn), "n": len(items)}).scalar_one() if ids else [None] * len(items)
    local_first = source_side(direction) == "local"
    records = [[i, sk, tk] if local_first else [i, tk, sk] for i, (sk, tk) in zip(taken, items)]
    batch = conn.execute(sa.insert(staged_intents).values(
        mapping=mapping, origin=source_side(direction), records=records, job_id=job_id, created_at=utcnow(),
        chunk_id=chunk_id,
    ).returning(staged_intents.c.id)).scalar_one()
    return int(batch), ({sk: int(i) for i, (sk, _) in zip(taken, items)} if ids else {})


_sequences: dict[str, str] = {}


def _id_sequence(conn: sa.Connection) -> str:
    """The couplings' id sequence, looked up once per store (per row, the lookup cost more than nextval)."""
    url = str(conn.engine.url)
    if url not in _sequences:
        _sequences[url] = conn.execute(sa.text("SELECT pg_get_serial_sequence('couplings', 'id')")).scalar_one()
    return _sequences[url]


def land_inserts(conn: sa.Connection, mapping: str, direction: str, job_id: int, batch: int,
                 landed: Iterable["LandedRow"], failed: Sequence[int] = ()) -> None:
    """A staged batch's target writes are done: couplings of the `landed` rows, synced, by one
    binary COPY; the `failed` coupling ids become pending couplings that carry their failure; the
    batch row goes. In the caller's transaction.

    A landed coupling names this job in `inserted_by_job`, which is its record log's `inserted`
    entry: no record event is written for it."""
    if failed:
        promote_intents(conn, mapping, batch, only=set(failed))
    write_landed(conn, mapping, direction, job_id, batch, landed)


LandedRow = tuple[int | None, str, str | None, str | None, str | None, Any, str | None]
"""(coupling id or None for the sequence's next, source key, target key, source hash, target hash, snapshot or None, source modified-on as text)"""


def write_landed(conn: sa.Connection, mapping: str, direction: str, job_id: int, batch: int,
                 rows: Iterable[LandedRow]) -> None:
    """Couplings of a staged batch whose target rows are in, synced, by one binary COPY; then the
    batch row goes. In the caller's transaction."""
    sides = Sides.of(direction)
    now, origin = utcnow(), source_side(direction)
    columns = ["mapping", sides.source_key, sides.target_key, "state", "origin", sides.source_hash,
               sides.target_hash, "last_values", sides.source_modified, "last_result", "failures", "skipped",
               "last_job_id", "last_synced_at", "created_at", "inserted_by_job"]
    types = ["text", "text", "text", "text", "text", "text", "text", "json", "text", "text", "int4", "bool",
             "int8", "timestamptz", "timestamptz", "int8"]
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        conn.execute(sa.delete(staged_intents).where(staged_intents.c.id == batch))
        return
    if first[0] is not None:  # ids taken when the batch was staged
        columns, types = ["id", *columns], ["int8", *types]
    pg_bulk.copy_rows(conn, "couplings", columns, (
        (*((cid,) if cid is not None else ()), mapping, sk, tk, "synced", origin, sh, th, lv, sm, "success", 0, False,
         job_id, now, now, job_id)
        for cid, sk, tk, sh, th, lv, sm in itertools.chain([first], rows)), types)
    conn.execute(sa.delete(staged_intents).where(staged_intents.c.id == batch))


def write_landed_keys(conn: sa.Connection, mapping: str, direction: str, job_id: int, batch: int,
                      source_keys: Sequence[str], target_keys: Sequence[str]) -> None:
    """`write_landed` for a first run that passed its rows through (`bulk_load.TextPage`): only
    the key pairs, with no hash yet (the first run that reads a record again compares it with its
    target and records them). In target key order: a random key (a uuid) then lands in its index
    page after page, measured 10 % less of the store's CPU."""
    now, origin = utcnow(), source_side(direction)
    local_first = origin == "local"
    pg_bulk.copy_rows(conn, "couplings", [
        "mapping", "local_key", "integration_key", "state", "origin", "last_result", "failures", "skipped", "last_job_id",
        "last_synced_at", "created_at", "inserted_by_job"], (
        (mapping, *((sk, tk) if local_first else (tk, sk)), "synced", origin, "success", 0, False, job_id, now, now, job_id)
        for tk, sk in sorted(zip(target_keys, source_keys))),
        ["text", "text", "text", "text", "text", "text", "int4", "bool", "int8", "timestamptz", "timestamptz", "int8"])
    conn.execute(sa.delete(staged_intents).where(staged_intents.c.id == batch))


def promote_intents(conn: sa.Connection, mapping: str, batch: int | None = None, only: set[int] | None = None,
                    drop: bool = False, chunk: int | None = None) -> int:
    """Staged records (the mapping's, one chunk's, or one batch's `only` ids) become pending
    couplings, which every path knows how to finish: after a crash, before the next job (or the
    redo of a chunk) reads anything; and for a staged insert that failed. A batch's row stays
    unless `drop` (its landing deletes it). Returns how many."""
    cond = staged_intents.c.mapping == mapping
    if batch is not None:
        cond = sa.and_(cond, staged_intents.c.id == batch)
    if chunk is not None:
        cond = sa.and_(cond, staged_intents.c.chunk_id == chunk)
    rows = conn.execute(sa.select(staged_intents).where(cond)).all()
    pending = [
        {**({"id": i} if i is not None else {}), "mapping": mapping, "local_key": lk, "integration_key": ik,
         "state": "pending", "origin": r.origin, "failures": 0, "skipped": False, "created_at": r.created_at,
         "last_job_id": r.job_id}
        for r in rows for i, lk, ik in r.records if only is None or i in only
    ]
    for with_id in (True, False):  # an executemany takes rows of one shape
        part = [p for p in pending if ("id" in p) is with_id]
        if part:
            conn.execute(sa.insert(couplings), part)
    if rows and (batch is None or drop):
        conn.execute(sa.delete(staged_intents).where(staged_intents.c.id.in_([r.id for r in rows])))
    return len(pending)


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
    if ok and pg_bulk.usable(conn):  # columns as binary arrays: no temporary table to create, fill and analyze
        pg_bulk.execute_binary(conn, (
            f"UPDATE couplings AS c SET {sides.target_key} = u.tk, {sides.source_hash} = u.sh, "
            f"{sides.target_hash} = u.th, {sides.source_modified} = u.sm, last_values = u.lv::json, "
            "state = 'synced', last_result = 'success', failures = 0, last_job_id = %s, last_synced_at = %s "
            "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) "
            "AS u(id, tk, sh, th, sm, lv) WHERE c.id = u.id"),
            [job_id, now, [o.coupling_id for o in ok], [o.target_key for o in ok], [o.source_hash for o in ok],
             [o.target_hash for o in ok], [modified_text(o.source_modified) for o in ok],
             [json.dumps(o.values, default=str) if o.values is not None else None for o in ok]])
    elif ok:
        conn.execute(
            sa.update(couplings).where(couplings.c.id == sa.bindparam("_id")).values({
                sides.target_key: sa.bindparam("_tk"), sides.source_hash: sa.bindparam("_sh"),
                sides.target_hash: sa.bindparam("_th"), sides.source_modified: sa.bindparam("_sm"),
                "last_values": sa.bindparam("_lv"), "state": "synced", "last_result": "success", "failures": 0,
                "last_job_id": job_id, "last_synced_at": now,
            }),
            [{"_id": o.coupling_id, "_tk": o.target_key, "_sh": o.source_hash, "_th": o.target_hash,
              "_sm": modified_text(o.source_modified), "_lv": o.values} for o in ok],
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


def _waiting(direction: str) -> sa.ColumnElement[bool]:
    """A coupling that only tracks the failure of its target-side record, with no counterpart: a
    failed (or ambiguous) match or insert. An insert still in flight, whose key is not known yet,
    has no result yet and is not one."""
    sides = Sides.of(direction)
    return sa.and_(couplings.c[sides.source_key].is_(None), couplings.c.state == "pending",
                   couplings.c.last_result == "failure")


def drop_waiting(conn: sa.Connection, mapping: str, direction: str, target_keys: Sequence[str]) -> None:
    """Delete the failure-tracking couplings of these target-side records (`_waiting`): a match
    now couples each to a record of the other side, under that record's coupling."""
    if target_keys:
        col = couplings.c[Sides.of(direction).target_key]
        conn.execute(sa.delete(couplings).where(couplings.c.mapping == mapping, col.in_(list(target_keys)), _waiting(direction)))


def target_holders(conn: sa.Connection, mapping: str, direction: str, keys: Sequence[str]) -> dict[str, bool]:
    """Which of these target-side keys a coupling of the mapping holds: True when it pairs the
    record with a counterpart (or is a tombstone that keeps it apart), False when it only tracks
    that record's own failure, waiting for a counterpart (a failed or ambiguous match, an insert
    whose key is not known yet). A record held either way is never coupled to another; one held
    only for its failure still counts as a candidate when match_on decides whether a match is
    ambiguous."""
    sides = Sides.of(direction)
    col = couplings.c[sides.target_key]
    paired = sa.not_(_waiting(direction))
    found: dict[str, bool] = {}
    step = key_batch(conn.dialect.name)
    for i in range(0, len(keys), step):
        q = sa.select(col, paired).where(couplings.c.mapping == mapping, key_in(col, list(keys[i:i + step]), conn.dialect.name))
        found.update((str(k), bool(p)) for k, p in conn.execute(q))
    return found


def modified_text(value: Any) -> str | None:
    """A source modified-on as the coupling keeps it: text, whatever the column type."""
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


# -- the deletion scan ---------------------------------------------------------------------------


def synced_page(conn: sa.Connection, mapping: str, direction: str, after_id: int, limit: int) -> list[tuple[int, str, str]]:
    """(id, source key, target key) of synced, non-skipped couplings past `after_id`, by id: one
    chunk of the deletion scan."""
    sides = Sides.of(direction)
    rows = conn.execute(
        sa.select(couplings.c.id, couplings.c[sides.source_key], couplings.c[sides.target_key])
        .where(couplings.c.mapping == mapping, couplings.c.state == "synced", couplings.c.skipped.is_(False),
               couplings.c.id > after_id)
        .order_by(couplings.c.id).limit(limit)
    ).all()
    return [(r[0], r[1], r[2]) for r in rows]


def forget(conn: sa.Connection, ids: Sequence[int]) -> None:
    """Delete these couplings: their records are gone, or an operator deleted the pair."""
    for i in range(0, len(ids), IN_CHUNK):
        conn.execute(sa.delete(couplings).where(couplings.c.id.in_(list(ids[i:i + IN_CHUNK]))))


def tombstone(conn: sa.Connection, job_id: int, ids: Sequence[int], lost_side: str) -> None:
    """Removed couplings whose record on the other side survives: the row stays as `uncoupled`
    with the survivor's key only, so the survivor is never synced (re-inserted) again."""
    if ids:
        conn.execute(sa.update(couplings).where(couplings.c.id.in_(list(ids)))
                     .values({f"{lost_side}_key": None, "state": "uncoupled", "last_job_id": job_id}))


def clear_result(conn: sa.Connection, ids: Sequence[int]) -> None:
    """Forget the last result: the next pass compares the records again (an undeleted record)."""
    if ids:
        conn.execute(sa.update(couplings).where(couplings.c.id.in_(list(ids))).values(last_result=None))


def reopen(conn: sa.Connection, ids: Sequence[int], lost_side: str, origin: str, job_id: int | None = None) -> None:
    """Back to an insert intent from the surviving side (`origin`): the record lost on `lost_side`
    is re-created by the next pass over these couplings. With the `job_id` of an operator's
    Restore, the skip and the failure count are cleared too."""
    if not ids:
        return
    values: dict[str, Any] = {f"{lost_side}_key": None, "state": "pending", "origin": origin, "last_result": None}
    if job_id is not None:
        values.update(skipped=False, skip_reason=None, failures=0, last_job_id=job_id)
    conn.execute(sa.update(couplings).where(couplings.c.id.in_(list(ids))).values(values))


# -- operators' actions ----------------------------------------------------------------------------


def by_ids(conn: sa.Connection, mapping: str, ids: Sequence[int]) -> dict[int, Any]:
    """The mapping's coupling rows with these ids (another mapping's are not returned)."""
    return {r.id: r for r in conn.execute(sa.select(couplings).where(couplings.c.id.in_(list(ids)),
                                                                     couplings.c.mapping == mapping))}


def counterpart_key(conn: sa.Connection, mapping: str, side: str, key: str) -> str | None:
    """The key on the other side of the record `key` of `side`, if it is coupled."""
    other = "integration" if side == "local" else "local"
    found = conn.execute(sa.select(couplings.c[f"{other}_key"]).where(
        couplings.c.mapping == mapping, couplings.c[f"{side}_key"] == key)).scalar()
    return None if found is None else str(found)


def touching(conn: sa.Connection, mapping: str, local_key: str, integration_key: str) -> list[Any]:
    """Couplings (tombstones included) of either record: what a manual couple must not collide with."""
    return list(conn.execute(sa.select(couplings).where(couplings.c.mapping == mapping, sa.or_(
        couplings.c.local_key == local_key, couplings.c.integration_key == integration_key)).order_by(couplings.c.id)).all())


def clear_skip(conn: sa.Connection, job_id: int, ids: Sequence[int]) -> None:
    """An operator's Retry or Synchronize: the couplings are synced again, from a clean slate."""
    if ids:
        conn.execute(sa.update(couplings).where(couplings.c.id.in_(list(ids))).values(
            skipped=False, skip_reason=None, failures=0, last_result=None, last_job_id=job_id))


def uncouple(conn: sa.Connection, job_id: int, ids: Sequence[int]) -> None:
    """An operator's Remove coupling: a tombstone, so neither record is synced (or re-created) again."""
    if ids:
        conn.execute(sa.update(couplings).where(couplings.c.id.in_(list(ids))).values(
            state="uncoupled", skipped=False, skip_reason=None, failures=0, last_job_id=job_id))


def insert_synced(conn: sa.Connection, mapping: str, job_id: int, pairs: Sequence[tuple[str, str]]) -> list[int]:
    """Synced couplings of (local key, integration key) with nothing known of their past (a manual
    or match-based couple): the first sync compares the records. Ids in input order."""
    now = utcnow()
    rows = [{"mapping": mapping, "local_key": lk, "integration_key": ik, "state": "synced", "failures": 0,
             "skipped": False, "created_at": now, "last_job_id": job_id} for lk, ik in pairs]
    return list(conn.execute(sa.insert(couplings).returning(couplings.c.id, sort_by_parameter_order=True), rows).scalars())


def analyze(conn: sa.Connection) -> None:
    """Refresh the planner's statistics of the couplings table (PostgreSQL), after a bulk load."""
    conn.execute(sa.text("ANALYZE couplings"))
