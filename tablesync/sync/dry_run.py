"""`tablesync sync MAPPING --dry-run`: what a run would do, found by the real read and decide code.

A dry run is a run whose sink (`context.Sink`) is a `DryReport`: every read happens as in a real
run, and every write the run would make (apps, couplings, watermarks, errors, counters) reaches
the report instead, as counts and samples. Nothing is written anywhere, not even a job row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tablesync.apps.tables import Table
from tablesync.apps.values import canonical
from tablesync.store.jobs import Counters
from tablesync.sync.context import RunContext
from tablesync.sync.decide import FAIL, INSERT, SKIP, UNCHANGED, UPDATE, Decision
from tablesync.sync.deletions import Gone
from tablesync.sync.merge import PairDecision
from tablesync.sync.plan import DirectionPlan, PairPlan

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
    """What a run would do, by direction: a count per kind of write, and the first few of each."""

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

    def pairs(self, decisions: list[PairDecision]) -> None:
        """Bidirectional merges (`merge.PairDecision`): each side's writes, conflicts, failures."""
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

    # -- the sink: what a real run would write, reported instead ---------------------------------

    def apply(self, ctx: RunContext, plan: DirectionPlan, source: Table, target: Table,
              decisions: list[Decision], modified_of: dict[str, Any]) -> Counters:
        self.decisions(plan.direction, decisions)
        return Counters()

    def apply_pairs(self, ctx: RunContext, plan: PairPlan, tables: dict[str, Table],
                    decisions: list[PairDecision], modified: dict[str, dict[int, Any]]) -> Counters:
        self.pairs(decisions)
        return Counters()

    def settle_deletions(self, ctx: RunContext, plan: DirectionPlan, source: Table, target: Table,
                         gone: list[Gone], strategy: str, two_way: bool) -> Counters:
        what = "delete" if strategy == "delete" else "restore" if strategy == "restore" else \
            "uncouple" if strategy == "remove_coupling" else "conflict"
        for g in gone:
            deleted = plan.source_side() if not g.source_exists else plan.target_side()
            self.of(plan.direction).add(what, {"source_key": g.source_key, "target_key": g.target_key,
                                               "deleted_side": deleted, "on_deletion_conflict": strategy})
        return Counters()

    def adopt(self, ctx: RunContext, plan: DirectionPlan, found: Sequence[tuple[int, str]]) -> None:
        pass

    def forget_intents(self, ctx: RunContext, ids: Sequence[int]) -> None:
        pass

    def set_watermark(self, ctx: RunContext, mapping: str, side: str, value: Any) -> None:
        pass

    def bulk_loads(self) -> bool:
        return False

    def as_dict(self) -> dict[str, Any]:
        return {"mapping": self.mapping, "dry_run": True,
                "directions": {d: {"counts": r.counts, "samples": r.samples} for d, r in self.directions.items()}}


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    return {k: canonical(v) for k, v in values.items()}
