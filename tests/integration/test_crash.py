"""A worker SIGKILLed in the middle of an initial sync: the redo leaves no duplicate and no orphan."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from tests.conftest import wait_for
from tests.integration.helpers import count, setup_customer_sync, slow_inserts

pytestmark = pytest.mark.integration
ROWS = 20_000
FAST = {"TABLESYNC_HEARTBEAT_TIMEOUT_SECONDS": "3"}


def kill_then_redo(env, store: sa.Engine, worker, kill_at: int, partial: Callable[[], bool],  # type: ignore[no-untyped-def]
                   **extra: str) -> None:
    """SIGKILL `worker` once `kill_at` couplings exist (`partial` must then still hold: the kill came
    mid-sync), then start a worker and a scheduler whose reaper abandons the dead job and enqueues
    its redo; wait for the redo to finish."""
    def progress() -> int:
        with store.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM couplings")).scalar_one())

    wait_for(lambda: progress() >= kill_at, timeout=120, what=f"{kill_at} intents")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert partial(), "the kill came too late to test anything"
    env.start_worker(**FAST, **extra)
    env.start_scheduler(**FAST)

    def finished() -> bool:
        with store.connect() as conn:
            rows = conn.execute(sa.text("SELECT status FROM jobs ORDER BY id")).scalars().all()
        return "succeeded" in rows and not {"queued", "running"} & set(rows)

    wait_for(finished, timeout=180, what="the redo to finish")


@pytest.mark.parametrize("kill_at", [3_000, 11_000])
def test_sigkill_mid_initial_sync_converges_exactly(env, kill_at: int) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=ROWS, batch_size=500)
    slow_inserts(crm)  # the bulk path once finished all 20,000 rows between two polls of the kill
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    worker = env.start_worker(**FAST)
    job_id = int(env.cli("sync", "CUSTOMER").stdout)
    kill_then_redo(env, store, worker, kill_at, lambda: count(crm, "accounts") < ROWS)
    with store.connect() as conn:
        jobs = conn.execute(sa.text("SELECT id, status, inserted, failed FROM jobs WHERE mapping = 'CUSTOMER' ORDER BY id")).all()
        states = conn.execute(sa.text("SELECT state, last_result, count(*), count(DISTINCT integration_key) "
                                      "FROM couplings GROUP BY 1, 2")).all()
        keys = conn.execute(sa.text("SELECT integration_key FROM couplings")).scalars().all()
    with crm.connect() as conn:
        target_keys = {str(k) for k in conn.execute(sa.text("SELECT account_id FROM accounts")).scalars()}
        duplicates = conn.execute(sa.text("SELECT count(*) - count(DISTINCT accountnumber) FROM accounts")).scalar()

    assert count(crm, "accounts") == ROWS and duplicates == 0
    assert states == [("synced", "success", ROWS, ROWS)], states
    assert set(keys) == target_keys  # every coupling points at a real row, every row is coupled
    assert jobs[0].id == job_id and jobs[0].status in ("abandoned", "succeeded")
    assert sum(j.inserted for j in jobs) == ROWS, jobs  # counted exactly once across the dead run and the redo
    assert all(j.failed == 0 for j in jobs)


@pytest.mark.parametrize("kill_at", [2_500, 9_000])
def test_sigkill_mid_bidirectional_initial_sync_converges_exactly(env, kill_at: int) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.test_bidirectional import setup

    per_side = 6_000
    erp, crm = setup(env, erp_rows=0, crm_rows=0)
    with erp.begin() as conn:
        conn.execute(sa.text("INSERT INTO customers (name, city) SELECT 'ERP ' || g, 'Oslo' FROM generate_series(1, :n) g"),
                     {"n": per_side})
    with crm.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts (name, address1_city) SELECT 'CRM ' || g, 'Bergen' FROM generate_series(1, :n) g"),
                     {"n": per_side})
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    worker = env.start_worker(**FAST, TABLESYNC_BATCH_SIZE="500")
    env.cli("sync", "CUSTOMER")
    kill_then_redo(env, store, worker, kill_at,
                   lambda: count(erp, "customers") + count(crm, "accounts") < 4 * per_side, TABLESYNC_BATCH_SIZE="500")
    with store.connect() as conn:
        inserted = conn.execute(sa.text("SELECT sum(inserted), sum(failed) FROM jobs")).one()
        states = conn.execute(sa.text("SELECT state, last_result, count(*), count(DISTINCT local_key), "
                                      "count(DISTINCT integration_key) FROM couplings GROUP BY 1, 2")).all()
    for engine, table in ((erp, "customers"), (crm, "accounts")):
        assert count(engine, table) == 2 * per_side
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT count(*) - count(DISTINCT name) FROM {table}")).scalar() == 0
    assert states == [("synced", "success", 2 * per_side, 2 * per_side, 2 * per_side)], states
    assert tuple(inserted) == (2 * per_side, 0), inserted


class Died(BaseException):
    """A worker's death at a chosen line: nothing after it runs, nothing catches it."""


def test_death_after_the_target_write_of_a_bulk_page_is_finished_by_the_redo(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The initial load's window between a page's target rows (committed) and its couplings (not):
    the redo makes the staged intents pending couplings, adopts the rows and inserts the rest."""
    from tablesync.config.settings import load_settings
    from tablesync.store.jobs import create_job
    from tablesync.sync import bulk_load
    from tablesync.worker import runner

    erp, crm, _, _ = setup_customer_sync(env, rows=5_000, batch_size=250)  # bulk pages of 1,000
    monkeypatch.setenv("ERP_DATABASE_URL", env.erp_url)
    monkeypatch.setenv("CRM_DATABASE_URL", env.crm_url)
    settings = load_settings(store_url=env.store_url)
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    with store.begin() as conn:
        job_id = create_job(conn, "CUSTOMER", "sync")
    land, landed = bulk_load.land_page, []

    def dies_at_the_third(ctx, plan, written):  # type: ignore[no-untyped-def]
        if len(landed) == 2:
            raise Died()
        landed.append(written)
        return land(ctx, plan, written)

    monkeypatch.setattr(bulk_load, "land_page", dies_at_the_third)
    with pytest.raises(Died):
        runner.run_job(store, settings, job_id)
    with store.connect() as conn:
        staged = conn.execute(sa.text("SELECT count(*) FROM insert_intents")).scalar_one()
    assert staged >= 1 and count(crm, "accounts") >= 3_000 > count(store, "couplings") == 2_000

    monkeypatch.setattr(bulk_load, "land_page", land)
    assert runner.run_job(store, settings, job_id) is runner.Delivery.SUCCEEDED  # the redo of the job still `running`
    with store.connect() as conn:
        job = conn.execute(sa.text("SELECT inserted, failed FROM jobs WHERE id = :i"), {"i": job_id}).one()
        couplings = conn.execute(sa.text("SELECT state, last_result, count(*), count(DISTINCT integration_key) "
                                         "FROM couplings GROUP BY 1, 2")).all()
        keys = set(conn.execute(sa.text("SELECT integration_key FROM couplings")).scalars())
    with crm.connect() as conn:
        target_keys = {str(k) for k in conn.execute(sa.text("SELECT account_id FROM accounts")).scalars()}
        duplicates = conn.execute(sa.text("SELECT count(*) - count(DISTINCT accountnumber) FROM accounts")).scalar()
    assert (count(crm, "accounts"), duplicates, count(store, "insert_intents")) == (5_000, 0, 0)
    assert couplings == [("synced", "success", 5_000, 5_000)] and keys == target_keys
    assert (job.inserted, job.failed) == (5_000, 0)
