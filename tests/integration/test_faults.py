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
from tests.integration.helpers import count, setup_customer_sync, slow_inserts

pytestmark = pytest.mark.integration
ROWS = 6_000
FAST = {"TABLESYNC_HEARTBEAT_SECONDS": "1", "TABLESYNC_HEARTBEAT_TIMEOUT_SECONDS": "4"}


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
            wait_for(lambda: any(j.status == "succeeded" for j in jobs(store)), timeout=180, what="the redo to finish")
        except AssertionError:
            raise AssertionError(f"{jobs(store)}\n{env.logs()}") from None
    finally:
        os.killpg(frozen.pid, signal.SIGCONT)
    # the woken worker runs into its fence (or its ended app session) at its next step, and stops
    wait_for(lambda: "taken over" in env.logs(), timeout=60, what="the woken worker to stop")
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


def test_a_store_outage_mid_job_is_retried_and_repaired_without_the_reaper(env, own_postgres) -> None:  # type: ignore[no-untyped-def]
    """The store's PostgreSQL stops (immediate) in the middle of a job and comes back: the worker
    logs one line (no traceback), Dramatiq retries the job with backoff, and the retry repairs it
    (no scheduler runs, so no reaper): succeeded, the target exact, the counters exact."""
    env.store_url = own_postgres.create_db("store")
    env.cli("db", "upgrade")
    erp, crm, _, _ = setup_customer_sync(env, rows=ROWS, batch_size=200)
    slow_inserts(crm)
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    env.start_worker(**FAST)
    job = int(env.cli("sync", "CUSTOMER").stdout)
    wait_for(lambda: 0 < count(crm, "accounts"), timeout=120, what="the first rows")
    own_postgres.stop()
    time.sleep(3)
    assert count(crm, "accounts") < ROWS, "the outage came too late to test anything"
    own_postgres.start()

    def status() -> str | None:
        try:
            with store.connect() as conn:
                return str(conn.execute(sa.text("SELECT status FROM jobs WHERE id = :j"), {"j": job}).scalar())
        except sa.exc.OperationalError:
            return None

    wait_for(lambda: status() == "succeeded", timeout=180, what="the job to be retried and succeed")
    rows = jobs(store)
    assert [(j.id, j.status) for j in rows] == [(job, "succeeded")], rows
    assert count(crm, "accounts") == ROWS and rows[0].inserted == ROWS and rows[0].failed == 0
    with crm.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) - count(DISTINCT accountnumber) FROM accounts")).scalar() == 0
    logs = env.logs()
    assert "the store is unavailable" in logs and "retried with backoff" in logs, logs
    assert "Traceback" not in logs and "internal error" not in logs, logs


def test_failures_name_the_app_or_the_store_that_failed(env) -> None:  # type: ignore[no-untyped-def]
    """A connection that drops mid-write names its app and table, never a URL; a store connection
    that drops inside an app's transaction (the bulk path stages its intents there) is the store's."""
    from tablesync.apps.table import AppTable
    from tablesync.config.model import SideSpec
    from tablesync.db.engine import create_engine
    from tablesync.errors import AppUnavailable, StoreUnavailable
    from tablesync.sync.context import RunContext
    from tablesync.sync.write import Writer

    _, crm, _, _ = setup_customer_sync(env, rows=0)
    accounts = AppTable.open(create_engine(env.crm_url), SideSpec(app="crm", table="accounts", key="account_id"))

    def dropped(conn: sa.Connection, part: object) -> None:
        conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))

    with pytest.raises(AppUnavailable) as app_error:
        accounts.write([1], dropped)
    assert str(app_error.value).startswith("app crm (accounts): connection lost while writing: "), app_error.value
    assert "postgresql" not in str(app_error.value)

    ctx = RunContext(store=create_engine(env.store_url), job_id=1, batch_size=10, overlap_seconds=0, sink=Writer())
    with pytest.raises(StoreUnavailable) as store_error:
        with accounts.transaction():
            with ctx.write() as conn:
                conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))
    assert str(store_error.value).startswith("the store: "), store_error.value


def test_heartbeats_use_the_store_clock_so_a_skewed_worker_is_not_reaped(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A worker whose clock is ten minutes slow (or fast) beats on the store's clock: the reaper
    neither abandons a healthy job nor keeps a silent one alive for ten minutes longer."""
    import datetime as dt

    from tablesync.db.engine import create_engine
    from tablesync.store import jobs as job_rows

    store = create_engine(env.store_url)
    for skew in (dt.timedelta(minutes=-10), dt.timedelta(minutes=10)):
        real = job_rows.utcnow
        monkeypatch.setattr(job_rows, "utcnow", lambda skew=skew: real() + skew)  # the worker's clock
        with store.begin() as conn:
            job = job_rows.create_job(conn, "M", "sync")
            epoch = job_rows.mark_running(conn, job, 1, "skewed")
            assert job_rows.heartbeat(conn, job, epoch)
        monkeypatch.setattr(job_rows, "utcnow", real)  # the reaper's
        with store.connect() as conn:
            assert job not in [j.id for j in job_rows.stale_running(conn, 60)], skew
        with store.begin() as conn:
            conn.execute(sa.text("UPDATE jobs SET heartbeat_at = now() - interval '61 seconds' WHERE id = :j"), {"j": job})
        with store.connect() as conn:
            assert job in [j.id for j in job_rows.stale_running(conn, 60)], skew
        with store.begin() as conn:
            assert job_rows.finish_job(conn, job, "succeeded", epoch=epoch)


def test_a_lock_no_running_job_holds_delays_a_job_but_never_drops_it(env) -> None:  # type: ignore[no-untyped-def]
    """The mapping lock held by a session whose job no longer runs (a frozen worker the reaper has
    not reached yet): the new job is retried with backoff, not dropped, and runs once it is free."""
    from tablesync.db.engine import create_engine
    from tablesync.store.locks import MappingLock

    setup_customer_sync(env, rows=50)
    store = create_engine(env.store_url)
    stuck = MappingLock(store, "CUSTOMER", job_id=999)
    assert stuck.acquire()
    env.start_worker()
    job = int(env.cli("sync", "CUSTOMER").stdout)
    time.sleep(14)  # past the lock grace (10 s): the old runner dropped the job here
    assert [(j.id, j.status) for j in jobs(store)] == [(job, "queued")], jobs(store)
    stuck.release()
    wait_for(lambda: jobs(store)[0].status == "succeeded", timeout=120, what="the job to run once the lock is free")
    assert jobs(store)[0].inserted == 50


def test_every_connection_has_keepalives_so_a_partitioned_peer_is_noticed_in_seconds(mariadb_url) -> None:  # type: ignore[no-untyped-def]
    """Both ends of a PostgreSQL session, and MariaDB's socket: a dead peer ends the session within
    about 30 s instead of the kernel's two hours (a partitioned worker's mapping lock with it)."""
    import socket

    from tablesync.db.engine import create_engine
    from tests.conftest import PG_ADMIN

    with create_engine(PG_ADMIN + "?options=-c%20search_path%3Dpublic").connect() as conn:
        server = {k: conn.execute(sa.text(f"SHOW {k}")).scalar() for k in ("tcp_keepalives_idle", "tcp_keepalives_count",
                                                                           "tcp_user_timeout", "search_path")}
        client = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
    assert server == {"tcp_keepalives_idle": "10", "tcp_keepalives_count": "4", "tcp_user_timeout": "30000",
                      "search_path": "public"}  # the URL's own options are kept
    assert client.get("keepalives_idle") == "10" and client.get("tcp_user_timeout") == "30000"
    with create_engine(mariadb_url).connect() as conn:
        sock = conn.connection.dbapi_connection._sock  # type: ignore[union-attr]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 30000
