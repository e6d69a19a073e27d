"""Retention: old jobs, errors and events go; an open error's message and job stay."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.integration.helpers import setup_customer_sync, sync
from tests.integration.test_bidirectional import execute

pytestmark = pytest.mark.integration


def test_cleanup_removes_old_history_but_keeps_what_open_errors_need(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, customers, _ = setup_customer_sync(env, rows=5)
    env.start_worker()
    sync(env)
    execute(crm, "DELETE FROM accounts WHERE accountnumber = 'C000002'")
    conflict_job = sync(env)
    with erp.begin() as conn:
        conn.execute(customers.update().where(customers.c.id == 3).values(credit_limit=-1, modified_at=sa.func.now()))
    failed_job = sync(env)  # a record error that is fixed later: nothing open refers to it
    with erp.begin() as conn:
        conn.execute(customers.update().where(customers.c.id == 3).values(credit_limit=1, modified_at=sa.func.now()))
    sync(env)
    store = sa.create_engine(env.store_url)
    with store.begin() as conn:  # everything so far happened 40 days ago
        for table, col in (("jobs", "enqueued_at"), ("jobs", "finished_at"), ("job_errors", "created_at"),
                           ("record_events", "at"), ("schedule_ticks", "created_at")):
            conn.execute(sa.text(f"UPDATE {table} SET {col} = {col} - interval '40 days'"))
    recent = sync(env)

    removed = json.loads(env.cli("cleanup", "--older-than", "30d", "--json").stdout)
    # The failure and its fix: the five initial inserts are logged by their couplings, not as events.
    assert removed["jobs"] == 3 and removed["job_errors"] == 1 and removed["record_events"] == 2, removed
    with store.connect() as conn:
        left = set(conn.execute(sa.text("SELECT id FROM jobs")).scalars())
        kept_events = conn.execute(sa.text("SELECT count(*) FROM record_events WHERE job_id = :j"), {"j": conflict_job["id"]}).scalar()
    assert left == {conflict_job["id"], recent["id"]} and failed_job["id"] not in left
    assert kept_events and kept_events > 0
    [error] = json.loads(env.cli("errors", "--json").stdout)
    assert error["message"].startswith("the integration record") and error["failed_on"] is not None
    assert json.loads(env.cli("cleanup", "--older-than", "30d", "--json").stdout)["jobs"] == 0  # idempotent
    proc = env.cli("cleanup", "--older-than", "soon", check=False)
    assert proc.returncode == 2 and "not a duration" in proc.stderr


def test_the_scheduler_applies_retention_when_it_starts(env) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import wait_for

    setup_customer_sync(env, rows=2)
    env.start_worker()
    old = sync(env)
    store = sa.create_engine(env.store_url)
    with store.begin() as conn:
        conn.execute(sa.text("UPDATE jobs SET enqueued_at = enqueued_at - interval '3 days', "
                             "finished_at = finished_at - interval '3 days'"))
    env.start_scheduler(TABLESYNC_RETENTION="2d")

    def gone() -> bool:
        with store.connect() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM jobs WHERE id = :j"), {"j": old["id"]}).scalar() == 0

    wait_for(gone, timeout=30, what="the scheduler's cleanup")
