"""Metrics of a real worker process, scraped over HTTP after real syncs: exact values per mapping and outcome."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for
from tests.integration.helpers import setup_customer_sync, sync

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """{(sample name, labels): value} of one scrape."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_worker_exports_job_and_record_counts_with_dramatiqs_own(env) -> None:  # type: ignore[no-untyped-def]
    erp, _, _, _ = setup_customer_sync(env, rows=50)
    port = free_port()
    env.start_worker(TABLESYNC_WORKER_METRICS_PORT=str(port))
    first = sync(env)
    with erp.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET name = name || ' (renamed)', modified_at = now() WHERE id <= 3"))
    second = sync(env)
    assert (first["inserted"], second["modified"]) == (50, 3)

    def scraped() -> dict[Any, float] | None:
        try:
            return scrape(port)
        except OSError:
            return None

    wait_for(lambda: scraped() is not None, timeout=30, what="the worker's metrics endpoint")
    samples = scrape(port)
    assert value(samples, "tablesync_jobs_total", mapping="CUSTOMER", kind="sync", status="succeeded") == 2
    records = {dict(labels)["outcome"]: v for (name, labels), v in samples.items() if name == "tablesync_records_total"
               and dict(labels)["mapping"] == "CUSTOMER" and dict(labels)["direction"] == "to_integration"}
    # exactly the jobs' own counters (the second job also re-read the first's records: unchanged)
    assert records == {k: v for k, v in {"inserted": 50, "modified": 3, "unchanged": second["unchanged"]}.items() if v}
    assert value(samples, "tablesync_job_duration_seconds_count", mapping="CUSTOMER") == 2
    assert sum(v for (name, _), v in samples.items() if name == "dramatiq_messages_total") == 2
    # No record key is ever a label: the only label names are these.
    names = {k for (name, labels) in samples if name.startswith("tablesync_") for k, _ in labels}
    assert names <= {"mapping", "kind", "status", "direction", "outcome", "le"}


def test_a_restarted_worker_starts_from_an_empty_metrics_directory(env) -> None:  # type: ignore[no-untyped-def]
    """Files of a killed worker's processes never leak into its successor's figures."""
    import os
    import signal

    setup_customer_sync(env, rows=5)
    port = free_port()
    worker = env.start_worker(TABLESYNC_WORKER_METRICS_PORT=str(port))
    sync(env)
    wait_for(lambda: _jobs(port) == 1, timeout=30, what="the first worker's count")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    env.start_worker(TABLESYNC_WORKER_METRICS_PORT=str(port))
    wait_for(lambda: _jobs(port) is not None, timeout=30, what="the second worker's endpoint")
    assert _jobs(port) == 0


def _jobs(port: int) -> float | None:
    try:
        samples = scrape(port)
    except OSError:
        return None
    return sum(v for (name, _), v in samples.items() if name == "tablesync_jobs_total")
