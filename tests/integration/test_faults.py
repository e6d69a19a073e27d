"""Faults that real clusters have: a worker frozen past the heartbeat timeout (the fencing
problem), a store that goes away mid-job, a worker whose clock is off. Real processes are frozen
and real servers stopped; nothing is mocked. A test that stops a server starts its own."""

from __future__ import annotations

import os
import signal
import time

import pytest
import sqlalchemy as sa

from tests.conftest import wait_for
from tests.integration.helpers import count, setup_customer_sync

pytestmark = pytest.mark.integration
ROWS = 6_000
FAST = {"TABLESYNC_HEARTBEAT_SECONDS": "1", "TABLESYNC_HEARTBEAT_TIMEOUT_SECONDS": "4"}


def slow_inserts(crm: sa.Engine, seconds: float = 0.2) -> None:
    """Each insert statement of the CRM takes `seconds` more: the job is still running when frozen."""
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ "
                             f"BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$"))
        conn.execute(sa.text("CREATE TRIGGER slow AFTER INSERT ON accounts FOR EACH STATEMENT EXECUTE FUNCTION slow()"))


def jobs(store: sa.Engine) -> list[sa.Row]:  # type: ignore[type-arg]
    with store.connect() as conn:
        return conn.execute(sa.text("SELECT id, status, inserted, failed, epoch, message FROM jobs ORDER BY id")).all()


def test_a_frozen_worker_is_fenced_and_its_mapping_is_not_held(env) -> None:  # type: ignore[no-untyped-def]
    """SIGSTOP a worker mid-job past the heartbeat timeout: the reaper abandons the job, frees the
    mapping lock its frozen session still holds, and the redo runs at once on another worker.
    Woken up, the frozen worker writes nothing more: the job stays `abandoned`, the target is
    exact, and the jobs' counters add up to the rows."""
    erp, crm, _, _ = setup_customer_sync(env, rows=ROWS, batch_size=200)
    slow_inserts(crm)
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    frozen = env.start_worker(**FAST)
    first = int(env.cli("sync", "CUSTOMER").stdout)
    wait_for(lambda: 0 < count(crm, "accounts"), timeout=120, what="the first rows")
    os.killpg(frozen.pid, signal.SIGSTOP)
    try:
        assert count(crm, "accounts") < ROWS, "the freeze came too late to test anything"
        env.start_worker(**FAST)
        env.start_scheduler(**FAST)
        try:
            wait_for(lambda: any(j.status == "succeeded" for j in jobs(store)), timeout=60, what="the redo to finish")
        except AssertionError:
            raise AssertionError(f"{jobs(store)}\n{env.logs()}") from None
        redo_took = time.monotonic()
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    # the woken worker runs into its fence at its next store write or beat, and stops
    time.sleep(4)
    rows = jobs(store)
    assert rows[0].id == first and rows[0].status == "abandoned", rows
    assert "sent no heartbeat" in rows[0].message
    assert not any("already running" in (j.message or "") for j in rows), rows  # no redo was dropped for the lock
    assert count(crm, "accounts") == ROWS
    with crm.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) - count(DISTINCT accountnumber) FROM accounts")).scalar() == 0
    assert sum(j.inserted for j in rows) == ROWS, rows
    with store.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*), count(DISTINCT integration_key) FROM couplings "
                                    "WHERE state = 'synced' AND last_result = 'success'")).one() == (ROWS, ROWS)
    assert "taken over" in env.logs() and redo_took
