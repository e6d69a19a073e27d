"""The record stage: everything one batch leaves in the store, written in one transaction.

Every path that writes (a one-way batch, a two-way merge, the deletion scan, the bulk first run,
an operator's action) ends its batch here. Counters, coupling outcomes, job errors, skips and record
events commit together, so a batch is counted exactly once however often its job is redone, and a
worker killed between two batches leaves nothing half-recorded. Metrics count the batch only once
its transaction committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa

from tablesync.store import couplings as cs
from tablesync.store.jobs import Counters, add_counters
from tablesync.store.journal import RecordRef, event_row, write_errors, write_events
from tablesync.sync import metrics
from tablesync.sync.context import RunContext


@dataclass
class Failed:
    """A record that failed: a job error, one more consecutive failure on its coupling (skipped at
    `skip_after_failures`), and its events. A record that failed before it was ever coupled
    (`ref.coupling_id` None) gets a pending coupling, so it is retried and never silently dropped."""

    ref: RecordRef
    message: str
    detail: str | None = None


@dataclass
class Conflicted:
    """A record an operator must decide about: a job error, the coupling skipped with `reason`
    (update_conflict, deletion_conflict) and a `conflict` event."""

    ref: RecordRef
    message: str
    reason: str


@dataclass
class Landing:
    """A staged batch of inserts (the `insert_intents` row `batch`) whose target rows are in:
    their couplings, in their final state, and the staged ids whose insert failed."""

    batch: int
    rows: Iterable[cs.LandedRow]
    failed: Sequence[int] = ()
    keys: tuple[Sequence[str], Sequence[str]] | None = None  # instead of rows: (source keys, target keys), no hashes


@dataclass
class Batch:
    """What one batch of one job leaves in the store. Outcomes are oriented by `direction`."""

    job_id: int
    mapping: str
    direction: str
    skip_after_failures: int = 3
    counters: Counters = field(default_factory=Counters)
    successes: list[cs.Outcome] = field(default_factory=list)
    failures: list[Failed] = field(default_factory=list)
    conflicts: list[Conflicted] = field(default_factory=list)
    refusals: list[tuple[RecordRef, str]] = field(default_factory=list)  # job errors of no record's sync (actions)
    events: list[dict[str, Any]] = field(default_factory=list)
    landings: list[Landing] = field(default_factory=list)
    forgotten: list[int] = field(default_factory=list)  # couplings deleted
    tombstones: list[tuple[int, str]] = field(default_factory=list)  # (coupling id, the side whose record is gone)
    revived: list[int] = field(default_factory=list)  # couplings whose soft-deleted record was undeleted
    reopened: list[tuple[int, str, str]] = field(default_factory=list)  # (coupling id, lost side, origin)
    counted: list[tuple[str, Counters]] | None = None  # metrics by direction; default: `counters` under `direction`
    lag: list[tuple[str, list[Any], sa.Engine]] = field(default_factory=list)  # (direction, modified-on values, source)

    def ref(self, coupling_id: int | None, source_key: str | None, target_key: str | None,
            direction: str | None = None) -> RecordRef:
        return RecordRef(self.job_id, self.mapping, direction or self.direction, coupling_id, source_key, target_key)

    def event(self, ref: RecordRef, outcome: str, message: str | None = None, changes: dict[str, Any] | None = None) -> None:
        self.events.append(event_row(ref, outcome, message, changes))


def record(ctx: RunContext, batch: Batch) -> dict[str, int]:
    """Write `batch` in one store transaction (fenced: a job that was taken over records
    nothing); returns the coupling ids given to records that failed before they were ever
    coupled, by source key."""
    intents: dict[str, int] = {}
    with ctx.write() as conn:
        for landing in batch.landings:
            if landing.keys is not None:
                cs.write_landed_keys(conn, batch.mapping, batch.direction, batch.job_id, landing.batch, *landing.keys)
            else:
                cs.land_inserts(conn, batch.mapping, batch.direction, batch.job_id, landing.batch, landing.rows,
                                landing.failed)
        failures = batch.failures
        untracked = [f for f in failures if f.ref.coupling_id is None]
        if untracked:
            intents = cs.insert_intents(conn, batch.mapping, batch.direction,
                                        [(str(f.ref.source_key), f.ref.target_key) for f in untracked], batch.job_id)
            failures = [replace(f, ref=replace(f.ref, coupling_id=intents[str(f.ref.source_key)]))
                        if f.ref.coupling_id is None else f for f in failures]
        error_ids = write_errors(conn, [(f.ref, f.message, f.detail) for f in failures])
        failed = [cs.Outcome(coupling_id=int(f.ref.coupling_id or 0), success=False, error_id=eid)
                  for f, eid in zip(failures, error_ids)]
        newly_skipped = set(cs.write_outcomes(conn, batch.direction, batch.job_id, [*batch.successes, *failed],
                                              batch.skip_after_failures))
        events = list(batch.events)
        for f in failures:
            events.append(event_row(f.ref, "failed", f.message))
        events.extend(event_row(f.ref, "skipped", f"skipped after {batch.skip_after_failures} consecutive failures")
                      for f in failures if f.ref.coupling_id in newly_skipped)
        if batch.conflicts:
            ids = write_errors(conn, [(c.ref, c.message, None) for c in batch.conflicts])
            for reason in dict.fromkeys(c.reason for c in batch.conflicts):
                cs.skip_couplings(conn, batch.job_id, [(int(c.ref.coupling_id or 0), eid) for c, eid in zip(batch.conflicts, ids)
                                                       if c.reason == reason], reason)
            events.extend(event_row(c.ref, "conflict", c.message) for c in batch.conflicts)
        write_errors(conn, [(ref, message, None) for ref, message in batch.refusals])
        cs.forget(conn, batch.forgotten)
        for side in ("local", "integration"):
            cs.tombstone(conn, batch.job_id, [i for i, lost in batch.tombstones if lost == side], side)
        cs.clear_result(conn, batch.revived)
        for lost, origin in dict.fromkeys((lost, origin) for _, lost, origin in batch.reopened):
            cs.reopen(conn, [i for i, l, o in batch.reopened if (l, o) == (lost, origin)], lost, origin)
        write_events(conn, events)
        add_counters(conn, batch.job_id, batch.counters)
        ctx.on_record(conn, batch.counters)
        if ctx.closing is not None:
            closing, ctx.closing = ctx.closing, None
            closing(conn)
    for direction, counters in batch.counted if batch.counted is not None else [(batch.direction, batch.counters)]:
        metrics.records(batch.mapping, direction, counters)
    for direction, modified, source in batch.lag:
        metrics.observe_lag(batch.mapping, direction, modified, source)
    return intents
