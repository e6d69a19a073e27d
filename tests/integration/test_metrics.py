"""Metrics of a real worker process, scraped over HTTP after real syncs: exact values per mapping and outcome."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, wait_for
from tests.integration.helpers import setup_customer_sync, sync, write_config

pytestmark = pytest.mark.integration


LISTENER = "tablesync_capture_"  # the metrics of `tablesync listen`


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
    # the three changed records' lag (the first run's bulk load is not a change)
    assert value(samples, "tablesync_sync_lag_seconds_count", mapping="CUSTOMER", direction="to_integration") == 3
    assert sum(v for (name, _), v in samples.items() if name == "dramatiq_messages_total") == 2
    # No record key is ever a label: the only label names are these.
    names = {k for (name, labels) in samples if name.startswith("tablesync_") for k, _ in labels}
    assert names <= {"mapping", "kind", "status", "direction", "outcome", "le"}


def test_a_restarted_worker_starts_from_an_empty_metrics_directory(env) -> None:  # type: ignore[no-untyped-def]
    """Files of a killed worker's processes never leak into its successor's figures."""
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


def test_scheduler_exports_enqueues_queue_depth_and_store_figures(env) -> None:  # type: ignore[no-untyped-def]
    """Ticks enqueued per mapping; ready messages in Redis (no worker runs, so they wait); skipped
    couplings and the last success read from the store at scrape time."""
    setup_customer_sync(env, rows=3)
    env.start_worker()
    first = sync(env)  # a success to report
    for p in env.processes:  # the worker goes: the scheduler's jobs stay ready in the queue
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=30)
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE couplings SET skipped = true, skip_reason = 'update_conflict' WHERE local_key = '1'"))
    write_config(env.tmp, schedule="every 1s")
    env.cli("config", "apply")
    port = free_port()
    env.start_scheduler(TABLESYNC_SCHEDULER_METRICS_PORT=str(port))
    wait_for(lambda: (scrape_or_none(port) or {}).get(("tablesync_scheduler_enqueued_total",
                                                        frozenset({("mapping", "CUSTOMER")}))) == 1,
             timeout=30, what="the scheduler's first enqueue")
    time.sleep(1.5)  # a second tick finds the first job still queued: skipped, not enqueued
    samples = scrape(port)
    assert value(samples, "tablesync_scheduler_enqueued_total", mapping="CUSTOMER") == 1
    assert value(samples, "tablesync_queue_messages", queue=env.queue, state="ready") == 1
    assert value(samples, "tablesync_queue_messages", queue=env.queue, state="dead") == 0
    assert value(samples, "tablesync_skipped_couplings", mapping="CUSTOMER", reason="update_conflict") == 1
    assert value(samples, "tablesync_mapping_interval_seconds", mapping="CUSTOMER") == 1.0
    with store.connect() as conn:
        finished = conn.execute(sa.text("SELECT finished_at FROM jobs WHERE id = :i"), {"i": first["id"]}).scalar_one()
    assert value(samples, "tablesync_last_success_timestamp_seconds", mapping="CUSTOMER") == pytest.approx(finished.timestamp())


def scrape_or_none(port: int) -> dict[Any, float] | None:
    try:
        return scrape(port)
    except OSError:
        return None


LOCAL_TIME_STAMP = """
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.{col} := localtimestamp; RETURN NEW; END $$;
CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION stamp();
DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET timezone = %L', current_database(), '{zone}'); END $$;
"""


def test_bidirectional_records_per_direction_and_the_lag_of_naive_local_times(env) -> None:  # type: ignore[no-untyped-def]
    """Both apps stamp `timestamp without time zone` in their own, far apart, time zones (UTC+14
    and UTC-9/-8): the lag is still seconds, measured against each database's own clock. Writes
    count under the direction they travelled; a conflict, under "both"."""
    from tests.integration.test_bidirectional import configure, execute

    erp, crm = sa.create_engine(env.erp_url), sa.create_engine(env.crm_url)
    with erp.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, city text, phone text, "
                             "email text, rating text, modified_at timestamp NOT NULL DEFAULT localtimestamp)"))
        conn.execute(sa.text(LOCAL_TIME_STAMP.format(col="modified_at", table="customers", zone="Pacific/Kiritimati")))
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (account_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, "
                             "address1_city text, telephone1 text, emailaddress1 text, rating text, "
                             "customertypecode int NOT NULL DEFAULT 1, modifiedon timestamp NOT NULL DEFAULT localtimestamp)"))
        conn.execute(sa.text(LOCAL_TIME_STAMP.format(col="modifiedon", table="accounts", zone="America/Anchorage")))
    erp.dispose(), crm.dispose()  # new sessions take the databases' time zones
    for i in (1, 2, 3):
        execute(erp, "INSERT INTO customers (name, city, phone) VALUES (:n, 'Oslo', :p)", n=f"ERP {i}", p=f"+47 {i}")
    execute(crm, "INSERT INTO accounts (name, telephone1) VALUES ('CRM 1', '+47 91'), ('CRM 2', '+47 92')")
    configure(env)
    port = free_port()
    env.start_worker(TABLESYNC_WORKER_METRICS_PORT=str(port))
    first = sync(env)
    assert (first["inserted"], first["failed"]) == (5, 0), first
    execute(erp, "UPDATE customers SET city = 'Tromsø' WHERE name = 'ERP 1'")
    execute(crm, "UPDATE accounts SET telephone1 = '+47 333' WHERE name = 'ERP 3'")
    execute(erp, "UPDATE customers SET phone = '+47 L' WHERE name = 'ERP 2'")
    execute(crm, "UPDATE accounts SET telephone1 = '+47 I' WHERE name = 'ERP 2'")
    second = sync(env)
    assert (second["modified"], second["conflicts"], second["failed"]) == (2, 1, 0), second

    wait_for(lambda: scrape_or_none(port) is not None, timeout=30, what="the worker's metrics endpoint")
    samples = scrape(port)
    records = {(dict(labels)["direction"], dict(labels)["outcome"]): v for (name, labels), v in samples.items()
               if name == "tablesync_records_total" and dict(labels)["mapping"] == "CUSTOMER"}
    unchanged = first["unchanged"] + second["unchanged"]
    assert records == {k: v for k, v in {
        ("to_integration", "inserted"): 3, ("from_integration", "inserted"): 2,
        ("to_integration", "modified"): 1, ("from_integration", "modified"): 1,
        ("both", "conflict"): 1, ("both", "unchanged"): unchanged}.items() if v}
    for direction, written in (("to_integration", 4), ("from_integration", 3)):
        labels = {"mapping": "CUSTOMER", "direction": direction}
        assert value(samples, "tablesync_sync_lag_seconds_count", **labels) == written
        # seconds, not the 14 or 9 hours a naive comparison with UTC would make of it
        assert 0 < value(samples, "tablesync_sync_lag_seconds_sum", **labels) < 60 * written  # type: ignore[operator]
        assert value(samples, "tablesync_sync_lag_seconds_bucket", le="60.0", **labels) == written


def test_dashboard_and_alerts_read_only_metrics_the_processes_export(env) -> None:  # type: ignore[no-untyped-def]
    """Every metric name in the shipped PromQL is in a live scrape of a worker and a scheduler that
    synced, saw a change, skipped a coupling and enqueued a tick (only `up` comes from Prometheus)."""
    from tests.dashboards import PROMETHEUS_OWN, expressions, metric_names

    erp, _, _, _ = setup_customer_sync(env, rows=5)
    worker_port, scheduler_port = free_port(), free_port()
    env.start_worker(TABLESYNC_WORKER_METRICS_PORT=str(worker_port))
    sync(env)
    with erp.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET name = 'renamed', modified_at = now() WHERE id = 1"))
    assert sync(env)["modified"] == 1
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE couplings SET skipped = true, skip_reason = 'deletion_conflict' WHERE local_key = '2'"))
    write_config(env.tmp, schedule="every 1s")
    env.cli("config", "apply")
    env.start_scheduler(TABLESYNC_SCHEDULER_METRICS_PORT=str(scheduler_port))
    wait_for(lambda: any(name == "tablesync_scheduler_enqueued_total" for name, _ in scrape_or_none(scheduler_port) or {}),
             timeout=30, what="the scheduler's first enqueue")
    exported = {name for port in (worker_port, scheduler_port) for name, _ in scrape(port)} | PROMETHEUS_OWN
    for where, expr in expressions().items():
        names = {n for n in metric_names(expr) if not n.startswith(LISTENER)}  # test_listen scrapes the listener's
        assert not names - exported, f"{where} reads metrics nothing exports: {names - exported}"
