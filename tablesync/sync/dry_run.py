"""`tablesync sync MAPPING --dry-run`: what a run would do, found by the real read and decide code.

The engine runs with a `DryReport` in its context: every read happens as in a real run, and at
each point where a run would write (apps, couplings, watermarks, errors, counters), the engine
hands its decisions to the report instead. Nothing is written anywhere, not even a job row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tablesync.store.mappings import StoredMapping
from tablesync.config.settings import Settings
from tablesync.sync.decide import FAIL, INSERT, SKIP, UNCHANGED, UPDATE, Decision

SAMPLE = 5


@dataclass
class DirectionReport:
    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, what: str, sample: dict[str, Any]) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1
        items = self.samples.setdefault(what, [])
        if len(items) < SAMPLE:
            items.append(sample)


@dataclass
class DryReport:
    mapping: str
    directions: dict[str, DirectionReport] = field(default_factory=dict)

    def of(self, direction: str) -> DirectionReport:
        return self.directions.setdefault(direction, DirectionReport())

    def decisions(self, direction: str, decisions: list[Decision]) -> None:
        r = self.of(direction)
        for d in decisions:
            if d.action == INSERT:
                r.add("insert", {"source_key": d.source_key, "values": _plain(d.values)})
            elif d.matched:
                r.add("couple", {"source_key": d.source_key, "target_key": d.target_key, "changes": d.changes})
            elif d.action == UPDATE:
                r.add("update", {"source_key": d.source_key, "target_key": d.target_key, "changes": d.changes})
            elif d.action == FAIL:
                r.add("fail", {"source_key": d.source_key, "target_key": d.target_key, "message": d.message})
            elif d.action == SKIP:
                r.add("skipped", {"source_key": d.source_key, "target_key": d.target_key})
            elif d.action == UNCHANGED:
                r.counts["unchanged"] = r.counts.get("unchanged", 0) + 1

    def pairs(self, decisions: list[Any]) -> None:
        """Bidirectional merges (workers.merge.PairDecision): each side's writes, conflicts, failures."""
        for d in decisions:
            keys = {"local_key": d.local_key, "integration_key": d.integration_key}
            if d.to_integration:
                self.of("to_integration").add("update", {**keys, "changes": d.changes_integration})
            if d.to_local:
                self.of("from_integration").add("update", {**keys, "changes": d.changes_local})
            if d.action == "conflict":
                self.of("bidirectional").add("conflict", {**keys, "message": d.conflict_message()})
            elif d.action == FAIL:
                self.of("bidirectional").add("fail", {**keys, "message": d.message})
            elif d.action == SKIP:
                self.of("bidirectional").add("skipped", keys)
            elif not (d.to_integration or d.to_local):
                counts = self.of("bidirectional").counts
                counts["unchanged"] = counts.get("unchanged", 0) + 1

    def deletion(self, direction: str, source_key: str, target_key: str, deleted: str, strategy: str) -> None:
        what = "delete" if strategy == "delete" else "restore" if strategy == "restore" else \
            "uncouple" if strategy == "remove_coupling" else "conflict"
        self.of(direction).add(what, {"source_key": source_key, "target_key": target_key, "deleted_side": deleted,
                                      "on_deletion_conflict": strategy})

    def as_dict(self) -> dict[str, Any]:
        return {"mapping": self.mapping, "dry_run": True,
                "directions": {d: {"counts": r.counts, "samples": r.samples} for d, r in self.directions.items()}}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    from tablesync.apps.values import canonical

    return {k: canonical(v) for k, v in values.items()}


def dry_run(store: sa.Engine, settings: Settings, stored: StoredMapping, full: bool = False, record: str | None = None,
            side: str | None = None) -> DryReport:
    """What a run would do: the whole mapping (`full` ignores the watermarks, as `sync --full`
    does), or one record as `sync --record KEY [--side S]` would sync it."""
    from tablesync.sync.actions import Action, record_source
    from tablesync.worker.runner import open_tables, run_context, sync_mapping

    report = DryReport(stored.spec.name)
    if record is None:
        sync_mapping(store, settings, stored, job_id=0, full=full, report=report)
        return report
    spec = stored.spec
    tables = open_tables(stored)
    ctx = run_context(store, settings, stored, 0, full, report=report)
    side, key = record_source(ctx, spec, tables, record, side or default_record_side(spec.direction))
    Action(ctx, spec, tables).sync_keys(side, [key])
    return report


def default_record_side(direction: str) -> str:
    """The side `--record KEY` names when `--side` is not given."""
    return "integration" if direction == "from_integration" else "local"
