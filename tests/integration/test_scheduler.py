"""Scheduler replicas, tick recovery, and one job per mapping at a time."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.conftest import wait_for
from tests.integration.helpers import setup_customer_sync, sync

pytestmark = pytest.mark.integration


def test_two_scheduler_replicas_enqueue_each_tick_once(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=20, schedule="every 2s")
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    env.start_worker()
    env.start_scheduler(TABLESYNC_SCHEDULER_POLL_SECONDS="0.2")
    env.start_scheduler(TABLESYNC_SCHEDULER_POLL_SECONDS="0.2")

    def ticks() -> int:
        with store.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM schedule_ticks WHERE job_id IS NOT NULL")).scalar_one())

    wait_for(lambda: ticks() >= 4, timeout=60, what="four ticks")
    env.stop_all()
    with store.connect() as conn:
        tick_rows = conn.execute(sa.text("SELECT tick_at, job_id, sent_at FROM schedule_ticks ORDER BY tick_at")).all()
        jobs = conn.execute(sa.text("SELECT id, params, status FROM jobs ORDER BY id")).all()
    with_job = [t for t in tick_rows if t.job_id is not None]
    assert len({t.tick_at for t in tick_rows}) == len(tick_rows)  # one row per tick, whichever replica won
    assert len(jobs) == len(with_job) and {j.id for j in jobs} == {t.job_id for t in with_job}
    assert len({j.params["tick"] for j in jobs}) == len(jobs)  # no tick produced two jobs
    assert all(t.sent_at is not None for t in tick_rows)
    gaps = {(b.tick_at - a.tick_at) for a, b in zip(tick_rows, tick_rows[1:])}
    assert gaps <= {timedelta(seconds=2 * k) for k in range(1, 6)}
    assert [j.status for j in jobs].count("succeeded") >= 3


def test_tick_written_but_never_sent_is_sent_by_the_next_scheduler(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=3, schedule="every 1h")
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    from tablesync.db.engine import utcnow
    from tablesync.store.jobs import create_job
    from tablesync.store.schema import schedule_ticks

    with store.begin() as conn:  # what a replica that died right after its commit leaves behind
        job_id = create_job(conn, "CUSTOMER", "sync", params={"tick": "orphan"})
        conn.execute(sa.insert(schedule_ticks).values(mapping="CUSTOMER", tick_at=utcnow() - timedelta(hours=2),
                                                      created_at=utcnow() - timedelta(minutes=1), job_id=job_id))
    env.start_worker()
    env.start_scheduler()

    def status() -> str:
        with store.connect() as conn:
            return str(conn.execute(sa.text("SELECT status FROM jobs WHERE id = :i"), {"i": job_id}).scalar_one())

    assert wait_for(lambda: status() in ("succeeded", "dropped") and status(), timeout=60, what="the orphan job") in ("succeeded", "dropped")


def test_second_job_for_a_running_mapping_is_recorded_and_dropped(env) -> None:  # type: ignore[no-untyped-def]
    _, crm, _, _ = setup_customer_sync(env, rows=15_000, batch_size=300)
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    env.start_worker(threads=2)
    with crm.connect() as blocker:  # the first job's writes wait for this lock: it stays running meanwhile
        blocker.execute(sa.text("LOCK TABLE accounts IN SHARE MODE"))
        first = int(env.cli("sync", "CUSTOMER").stdout)

        def running() -> bool:
            with store.connect() as conn:
                return conn.execute(sa.text("SELECT status FROM jobs WHERE id = :i"), {"i": first}).scalar_one() == "running"

        wait_for(running, timeout=30, what="the first job to run")
        second = sync(env)
        assert second["status"] == "dropped"
        assert second["message"] == f"dropped: mapping CUSTOMER is already running in job {first}"
        blocker.rollback()

    wait_for(lambda: not running(), timeout=120, what="the first job to end")
    # A redelivered message of a finished job changes nothing.
    from tablesync.config.settings import load_settings
    from tablesync.worker.broker import build_broker
    from tablesync.worker.enqueue import send_job

    settings = load_settings(broker_url=env.broker_url, broker_namespace=env.namespace, queue=env.queue)
    with store.connect() as conn:
        before = conn.execute(sa.text("SELECT status, inserted, finished_at FROM jobs WHERE id = :i"), {"i": first}).one()
    send_job(build_broker(settings), settings, first)
    time.sleep(2)
    with store.connect() as conn:
        after = conn.execute(sa.text("SELECT status, inserted, finished_at FROM jobs WHERE id = :i"), {"i": first}).one()
    assert before == after and before.status == "succeeded" and before.inserted == 15_000
    jobs = json.loads(env.cli("jobs", "--json", "--status", "dropped").stdout)
    assert [j["id"] for j in jobs] == [second["id"]]


def test_duplicates_of_an_abandoned_job_never_crowd_out_its_redo(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=3000, batch_size=500)
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    from tablesync.config.settings import load_settings
    from tablesync.store.jobs import create_job, finish_job
    from tablesync.worker.broker import build_broker
    from tablesync.worker.enqueue import send_job

    with store.begin() as conn:
        dead = create_job(conn, "CUSTOMER", "sync")
        finish_job(conn, dead, "abandoned", "abandoned: worker gone")
        redo = create_job(conn, "CUSTOMER", "sync", params={"redo_of": dead})
    settings = load_settings(broker_url=env.broker_url, broker_namespace=env.namespace, queue=env.queue)
    broker = build_broker(settings)
    for job_id in (dead, redo, dead, dead):  # redeliveries of the dead job arrive around the redo
        send_job(broker, settings, job_id)
    env.start_worker(threads=4)

    def status() -> str:
        with store.connect() as conn:
            return str(conn.execute(sa.text("SELECT status FROM jobs WHERE id = :i"), {"i": redo}).scalar_one())

    assert wait_for(lambda: status() in ("succeeded", "dropped", "failed") and status(), timeout=60, what="the redo") == "succeeded"


def test_a_queued_job_whose_message_was_lost_is_sent_again_once_per_interval(env) -> None:  # type: ignore[no-untyped-def]
    """Without this, the job would stay queued for ever and every later tick of its mapping would
    be skipped behind it: the sync would silently stop."""
    from tablesync.scheduler.reaper import resend_queued

    setup_customer_sync(env, rows=5, schedule="every 1s")
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    with store.begin() as conn:  # a job written and sent, whose message the broker then lost
        lost = conn.execute(sa.text("INSERT INTO jobs (mapping, kind, status, params, enqueued_at, sent_at, inserted, "
                                    "modified, deleted, unchanged, coupled, uncoupled, conflicts, skipped, failed, attempts) "
                                    "VALUES ('CUSTOMER', 'sync', 'queued', '{}', now() - interval '20 minutes', "
                                    "now() - interval '20 minutes', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0) RETURNING id")).scalar_one()
    sent: list[int] = []
    assert resend_queued(store, sent.append, 600) == [lost] and resend_queued(store, sent.append, 600) == []  # once
    with store.begin() as conn:  # as if that send was lost too, long ago
        conn.execute(sa.text("UPDATE jobs SET sent_at = now() - interval '20 minutes' WHERE id = :i"), {"i": lost})
    env.start_worker()
    env.start_scheduler(TABLESYNC_QUEUED_RESEND_SECONDS="1", TABLESYNC_DEPENDENCY_WAIT_SECONDS="0")

    def status() -> str:
        with store.connect() as conn:
            return str(conn.execute(sa.text("SELECT status FROM jobs WHERE id = :i"), {"i": lost}).scalar_one())

    wait_for(lambda: status() == "succeeded", timeout=60, what="the lost job to be sent again and run")
    with store.connect() as conn:  # and the mapping's ticks run again behind it
        wait_for(lambda: conn.execute(sa.text("SELECT count(*) FROM jobs WHERE id > :i AND status = 'succeeded'"),
                                      {"i": lost}).scalar_one() >= 1, timeout=30, what="a later tick's job")
