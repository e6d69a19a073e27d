"""What every stage of one run shares: the store, the job, the batch size, and the sink its
decisions go to.

The sink is where a run's writes happen, and the only place: a real run's `write.Writer` writes the
targets and records each batch in the store (`record`); a dry run's `dry_run.DryReport` takes the
same calls and only reports them. The reading and deciding code is the same for both, with no
"is this a dry run?" test anywhere in it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa

from tablesync.apps.failures import is_connection_error
from tablesync.apps.tables import Table
from tablesync.errors import StoreUnavailable
from tablesync.store.jobs import Counters

if TYPE_CHECKING:  # the stages' types, for the protocol's signatures only
    from tablesync.sync.decide import Decision
    from tablesync.sync.deletions import Gone
    from tablesync.sync.merge import PairDecision
    from tablesync.sync.plan import DirectionPlan, PairPlan


class Sink(Protocol):
    """Everything a run writes, anywhere: targets, couplings, watermarks, errors, counters."""

    def apply(self, ctx: "RunContext", plan: "DirectionPlan", source: Table, target: Table,
              decisions: list["Decision"], modified_of: dict[str, Any]) -> Counters:
        """One one-way batch: insert, update and couple on the target, then record the batch."""

    def apply_pairs(self, ctx: "RunContext", plan: "PairPlan", tables: dict[str, Table],
                    decisions: list["PairDecision"], modified: dict[str, dict[int, Any]]) -> Counters:
        """One batch of merged pairs: each side's updates, then record the batch."""

    def settle_deletions(self, ctx: "RunContext", plan: "DirectionPlan", source: Table, target: Table,
                         gone: list["Gone"], strategy: str, two_way: bool) -> Counters:
        """Deleted records found by the scan, handled by `on_deletion_conflict`."""

    def adopt(self, ctx: "RunContext", plan: "DirectionPlan", found: Sequence[tuple[int, str]]) -> None:
        """Insert intents whose row turned out to exist after a crash: (coupling id, target key)."""

    def forget_intents(self, ctx: "RunContext", ids: Sequence[int]) -> None:
        """Insert intents whose source record is gone before it was ever copied."""

    def set_watermark(self, ctx: "RunContext", mapping: str, side: str, value: Any) -> None:
        """How far this run read a side."""

    def bulk_loads(self) -> bool:
        """May a first run take the bulk path (`bulk_load`), which writes as it reads?"""


@dataclass
class RunContext:
    store: sa.Engine
    job_id: int
    batch_size: int
    overlap_seconds: float
    sink: Sink
    full: bool = False
    beat: Callable[[], None] = lambda: None
    # Called first in every store transaction that writes for this job: the worker runtime's
    # fencing check, which raises once the job was taken over (its epoch moved on). The engine
    # knows only that it must ask; what is checked is the runtime's.
    fence: Callable[[sa.Connection], None] = lambda conn: None
    # A chunked run's range (`chunked`): the chunk its staged inserts belong to, the progress each
    # recorded batch adds to it, and, set for the range's last batch only, the done transition
    # that commits with that batch's couplings (`record` calls it once, then clears it).
    chunk_id: int | None = None
    on_record: Callable[[sa.Connection, Counters], None] = lambda conn, counters: None
    closing: Callable[[sa.Connection], None] | None = None
    scoped: bool = False  # a range resync (`--where`): it moves no watermark and scans no deletions
    handled: set[int] = field(default_factory=set)  # couplings decided in this job (bidirectional: decide once)
    # (direction, source key) of bulk inserts this job rolled back: a target row found under such a
    # record's key was there before, so finishing its insert couples it rather than inserts it
    collided: set[tuple[str, str]] = field(default_factory=set)

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A store transaction that writes for this job: fenced first, so a job that was taken
        over writes nothing (and stops, before it touches an app again). A lost store connection
        is a StoreUnavailable, named as the store even inside an app's transaction (the bulk
        path stages its intents inside the target's), where it would read as the app's."""
        try:
            with self.store.begin() as conn:
                self.fence(conn)
                yield conn
        except sa.exc.DBAPIError as exc:
            if is_connection_error(exc):
                text = str(exc.orig).strip()
                raise StoreUnavailable(f"the store: {text.splitlines()[0] if text else type(exc.orig).__name__}") from exc
            raise
