"""Pausing a mapping: its ticks are skipped (and say who paused it and why), the console and the
metrics show it, the staleness alert ignores it (dashboards/prometheus/alerts.test.yml), and
`resume` brings the schedule back. From the CLI and from the web console and API."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.conftest import free_port, wait_for
from tests.integration.helpers import count, setup_customer_sync
from tests.integration.test_metrics import scrape
from tests.integration.web_helpers import bearer, csrf_of, logged_in, make_app

pytestmark = pytest.mark.integration


def ticks(store: sa.Engine) -> list[tuple[int | None, str | None]]:
    with store.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text("SELECT job_id, note FROM schedule_ticks ORDER BY id"))]


def test_a_paused_mapping_skips_its_ticks_until_resumed(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=20, schedule="every 1s")
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    out = env.cli("pause", "CUSTOMER", "--reason", "ERP maintenance until 14:00", "--operator", "alice").stdout
    assert "CUSTOMER: paused by alice" in out
    assert "already paused" in env.cli("pause", "CUSTOMER").stdout  # the first pause is kept
    [m] = json.loads(env.cli("mappings", "--json").stdout)
    assert m["paused"]["by"] == "alice" and m["paused"]["reason"] == "ERP maintenance until 14:00" and m["next_run_at"] is None
    assert "paused by alice: ERP maintenance until 14:00" in env.cli("mappings").stdout
    unknown = env.cli("pause", "NOPE", check=False)
    assert unknown.returncode == 2 and "unknown mapping 'NOPE'" in unknown.stderr

    port = free_port()
    env.start_worker()
    env.start_scheduler(TABLESYNC_SCHEDULER_METRICS_PORT=str(port))
    wait_for(lambda: len(ticks(store)) >= 2, timeout=60, what="two ticks")
    assert all(job is None and note == "skipped: paused by alice: ERP maintenance until 14:00" for job, note in ticks(store))
    assert count(crm, "accounts") == 0
    samples = wait_for(lambda: scrape(port), timeout=30, what="the scheduler's metrics")
    assert samples[("tablesync_mapping_paused", frozenset({("mapping", "CUSTOMER")}))] == 1.0

    assert "resumed" in env.cli("resume", "CUSTOMER").stdout
    wait_for(lambda: count(crm, "accounts") == 20, timeout=60, what="the resumed schedule to sync")
    assert any(job is not None for job, _ in ticks(store))
    assert json.loads(env.cli("mappings", "--json").stdout)[0]["paused"] is None
    assert "was not paused" in env.cli("resume", "CUSTOMER").stdout


def test_pause_and_resume_from_the_console_and_the_api(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=0)
    app = make_app(env)
    api = logged_in(app, "bob")
    paused = api.post("/api/mappings/CUSTOMER/pause", headers=bearer(app, "bob"), json={"reason": "CRM upgrade"})
    assert paused.status_code == 200 and paused.json()["paused"]["by"] == "bob", paused.text
    page = api.get("/")
    assert "paused by bob: CRM upgrade" in page.text and ">Resume<" in page.text
    resumed = api.post("/mappings/CUSTOMER/resume", data={"csrf_token": csrf_of(page.text)})
    assert resumed.status_code == 303
    assert json.loads(env.cli("mappings", "--json").stdout)[0]["paused"] is None
    page = api.get("/")
    assert ">Pause<" in page.text
    again = api.post("/mappings/CUSTOMER/pause", data={"csrf_token": csrf_of(page.text), "reason": ""})
    assert again.status_code == 303
    assert json.loads(env.cli("mappings", "--json").stdout)[0]["paused"] == {
        "by": "bob", "at": json.loads(env.cli("mappings", "--json").stdout)[0]["paused"]["at"], "reason": None}
    assert api.post("/api/mappings/NOPE/pause", headers=bearer(app, "bob"), json={}).status_code == 404
