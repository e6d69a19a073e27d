"""The engine's metrics (SPEC §7): records by outcome and the sync lag. Labels name mappings,
directions and outcomes, never a record. The jobs' own metrics are the worker runtime's (`worker.metrics`).

Under `tablesync worker` these are Prometheus multiprocess metrics: the command points
PROMETHEUS_MULTIPROC_DIR at an emptied directory before the worker processes start (so
prometheus_client picks file-backed values at import), and Dramatiq's exposition server serves
them together with its own on TABLESYNC_WORKER_METRICS_PORT. Elsewhere (tests, `tablesync run`)
they are ordinary in-process metrics.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from prometheus_client import Counter, Histogram

from tablesync.apps.clock import clock_offset
from tablesync.store.jobs import Counters

SYNC_LAG = Histogram(
    "tablesync_sync_lag_seconds", "From a change's modified-on at its source to its write on the target.",
    ["mapping", "direction"], buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600, float("inf")),
)
RECORDS = Counter("tablesync_records", "Records a job handled, by outcome.", ["mapping", "direction", "outcome"])

def observe_lag(mapping: str, direction: str, modified: list[Any], source: sa.Engine) -> None:
    """The lag of records just written, from their modified-on at `source`. A value with a time
    zone compares with UTC now; a naive one is the source database's local time, so it compares
    with that database's clock. The first run's bulk load observes none: an initial load is not
    a change."""
    stamps = [m for m in modified if isinstance(m, datetime)]
    if not stamps:
        return
    now = datetime.now(timezone.utc)
    offset = clock_offset(source) if any(m.tzinfo is None for m in stamps) else None
    child = SYNC_LAG.labels(mapping, direction)
    for m in stamps:
        if m.tzinfo is not None:
            child.observe(max(0.0, (now - m).total_seconds()))
        elif offset is not None:
            child.observe(max(0.0, (now.replace(tzinfo=None) + offset - m).total_seconds()))


# Counters field → the outcome label SPEC §7 names.
OUTCOMES = {"inserted": "inserted", "modified": "modified", "deleted": "deleted", "unchanged": "unchanged",
            "coupled": "coupled", "uncoupled": "uncoupled", "conflicts": "conflict", "failed": "failed",
            "skipped": "skipped"}


def records(mapping: str, direction: str, counters: Counters) -> None:
    """Count records once their batch committed, so a job that fails halfway still counts what
    it wrote and a rolled-back batch counts nothing (the same rule as the job row's counters).
    `direction` is the one the records travelled; "both" for outcomes of a bidirectional pair
    that belong to neither direction (unchanged, conflict, skipped, failed)."""
    for field, outcome in OUTCOMES.items():
        n = getattr(counters, field)
        if n:
            RECORDS.labels(mapping, direction, outcome).inc(n)
