"""The jobs' metrics (SPEC §7), counted by the worker runtime as each job ends.

Multiprocess under `tablesync worker`, like the engine's (`sync.metrics`, where the why is told).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

JOBS = Counter("tablesync_jobs", "Jobs that ended, by mapping, kind and final status.", ["mapping", "kind", "status"])
JOB_DURATION = Histogram(
    "tablesync_job_duration_seconds", "Wall time of a job, from its start to its end.", ["mapping"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
)


def job_ended(mapping: str, kind: str, status: str, seconds: float | None) -> None:
    """Count one ended job; `seconds` is None for a job that never started."""
    JOBS.labels(mapping, kind, status).inc()
    if seconds is not None:
        JOB_DURATION.labels(mapping).observe(seconds)
