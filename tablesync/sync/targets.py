"""The write stage: records inserted into and updated on a target app.

Insert path and crashes: before any target row is written, an insert *intent* (a coupling row in
state `pending`, or on a PostgreSQL store one `insert_intents` row for the batch, with the target
key when it can be known in advance) is committed to the store. Only then is the target written;
the record stage then confirms the intent. A worker killed anywhere in between leaves intents that
the next run re-selects: if the target row exists it is adopted, else it is inserted, so no
duplicate target row and no orphan coupling can remain.

A write the target refuses is isolated to its records: a SQL table splits a refused batch
(`AppTable.write`), an HTTP app answers per record (`ApiTable`); each record fails alone. An
HTTP app's 412 (the record changed since it was read) is a failure marked `conflict`: the record
is retried by the next run, which reads it again (a two-way mapping merges both changes).
"""

from __future__ import annotations

from typing import Any

from tablesync.apps.tables import Table
from tablesync.db import pg_bulk
from tablesync.store import couplings as cs
from tablesync.sync.context import RunContext
from tablesync.sync.decide import FAIL, INSERT, Decision
from tablesync.sync.plan import DirectionPlan

Failures = list[tuple[Any, str, str]]  # (the decision that failed, message, detail)


def couple_matched(ctx: RunContext, plan: DirectionPlan, matched: list[Decision]) -> None:
    """Couplings of records match_on coupled, before the target write: a crash now is finished by
    the next run instead of matching (or inserting) again."""
    if not matched:
        return
    with ctx.write() as conn:
        cs.drop_waiting(conn, plan.mapping, plan.direction, [str(d.target_key) for d in matched if d.absorbs])
        new = [d for d in matched if d.coupling is None]
        ids = cs.insert_intents(conn, plan.mapping, plan.direction, [(d.source_key, d.target_key) for d in new], ctx.job_id)
        cs.set_target_keys(conn, plan.direction, [(d.coupling.id, d.target_key) for d in matched if d.coupling is not None])
    for d in new:
        d.coupling_id = ids[d.source_key]


def insert_new(ctx: RunContext, plan: DirectionPlan, target: Table, todo: list[Decision], failures: Failures) -> list[Decision]:
    """Insert these records (intents first); returns those that landed, with their target keys.
    A record no key can be found for becomes a FAIL decision."""
    if not todo:
        return []
    strategy = target.key_strategy(plan.key_mapped)
    unkeyed = [d for d in todo if d.target_key is None]
    if unkeyed and strategy in ("preallocate", "uuid"):
        fresh = target.preallocate(len(unkeyed)) if strategy == "preallocate" else target.new_uuid_keys(len(unkeyed))
        for d, k in zip(unkeyed, fresh):
            d.target_key = k
    elif unkeyed and strategy == "none":
        for d in unkeyed:
            d.action = FAIL
            d.message = (f"cannot insert into {plan.target.table}: its key {plan.target.key_label} has no default; "
                         "map a field onto it or give the column a default")
        todo = [d for d in todo if d.action == INSERT]
    returning = strategy == "returning"
    with ctx.write() as conn:
        new = [d for d in todo if d.coupling is None]
        staged = {d.source_key: d.target_key for d in new if d.target_key is not None} if pg_bulk.usable(conn) else {}
        batch, ids = cs.stage_inserts(conn, plan.mapping, plan.direction, list(staged.items()), ctx.job_id,
                                      chunk_id=ctx.chunk_id)
        ids.update(cs.insert_intents(conn, plan.mapping, plan.direction,
                                     [(d.source_key, d.target_key) for d in new if d.source_key not in ids], ctx.job_id))
        cs.set_target_keys(conn, plan.direction, [(d.coupling.id, d.target_key) for d in todo
                                                  if d.coupling is not None and d.coupling.target_key != d.target_key])
    for d in new:
        d.coupling_id = ids[d.source_key]
        d.staged_batch = batch if d.source_key in staged else None

    # a pre-allocated or made-up key goes with the row, as a string: the table converts it
    key_name = None if strategy not in ("preallocate", "uuid") else target.key.name

    rows = [{**d.values, key_name: d.target_key} if key_name and d.target_key is not None else d.values for d in todo]
    done, failed = target.insert_records(todo, rows, returning=returning and any(d.target_key is None for d in todo))
    landed = []
    for d, new_key in done:
        if new_key is not None:
            d.target_key = new_key
        landed.append(d)
    failures.extend((f.item, f.message, f.detail) for f in failed)
    if returning:
        with ctx.write() as conn:  # remember database-made keys at once: a crash now must not orphan them
            cs.set_target_keys(conn, plan.direction, [(cid(d), d.target_key) for d in landed])
    return landed


def update_targets(target: Table, todo: list[Decision], failures: Failures) -> list[Decision]:
    """Write each decision's changed columns: one statement per set of changed columns."""
    groups: dict[tuple[str, ...], list[Decision]] = {}
    for d in todo:
        groups.setdefault(tuple(sorted(d.changes or {})), []).append(d)
    landed: list[Decision] = []
    for cols, items in groups.items():
        done, failed = target.update_records(items, cols, [{"_key": d.target_key, **{c: d.values[c] for c in cols}} for d in items])
        landed.extend(d for d, _ in done)
        failures.extend((f.item, f.message, f.detail) for f in failed)
    return landed


def cid(d: Decision) -> int:
    """The coupling id of a decision that is written: its coupling's, or its fresh intent's."""
    found = d.cid
    assert found is not None, "every written decision has a coupling or an intent"
    return found
