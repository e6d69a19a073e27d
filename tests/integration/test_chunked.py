"""Chunked runs against the real services: a large first run or full resync split into key ranges
that several worker processes share, the store-side fan-in, a worker killed mid-chunk, range
resyncs (`--where`), progress, and the urgent queue."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import sqlalchemy as sa

from tests.conftest import wait_for
from tests.integration.helpers import count, customer_rows, setup_customer_sync, slow_inserts, sync

CHUNKS = {"TABLESYNC_CHUNK_ROWS": "1000"}


def chunks_of(env, job_id: int) -> list[sa.Row]:  # type: ignore[no-untyped-def]
    store = sa.create_engine(env.store_url)
    try:
        with store.connect() as conn:
            return conn.execute(sa.text("SELECT * FROM run_chunks WHERE job_id = :j ORDER BY number"), {"j": job_id}).all()
    finally:
        store.dispose()


def couplings(env) -> list[sa.Row]:  # type: ignore[no-untyped-def]
    store = sa.create_engine(env.store_url)
    try:
        with store.connect() as conn:
            return conn.execute(sa.text("SELECT local_key, integration_key, state, last_result FROM couplings")).all()
    finally:
        store.dispose()


def test_first_run_is_split_into_chunks_that_two_workers_share(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, customers, accounts = setup_customer_sync(env, rows=0, batch_size=300)
    with erp.begin() as conn:  # sparse keys: the walk of the key index still splits them evenly
        conn.execute(customers.insert(), [r | {"id": r["id"] * 7 + (r["id"] % 5) * 1000} for r in customer_rows(1, 5500)])
    env.start_worker(threads=2, **CHUNKS)
    env.start_worker(threads=2, **CHUNKS)
    job = sync(env)
    assert job["status"] == "succeeded", (json.dumps(job), env.logs())
    assert job["inserted"] == 5500 and job["failed"] == 0
    chunks = chunks_of(env, job["id"])
    ranges = [c for c in chunks if c.number != 0]
    assert len(ranges) == 6 and all(c.status == "done" for c in chunks)
    assert [c.estimate for c in ranges] == [1000] * 5 + [500]
    assert sum(c.rows for c in ranges) == 5500
    assert len({c.worker.rsplit(":", 1)[0] for c in ranges}) >= 1
    assert count(crm, "accounts") == 5500
    pairs = couplings(env)
    assert len(pairs) == 5500 and {p.state for p in pairs} == {"synced"}
    assert len({p.local_key for p in pairs}) == 5500
    # the next run is incremental, in one piece, and finds nothing to do
    again = sync(env)
    assert again["status"] == "succeeded" and again["inserted"] == 0 and not chunks_of(env, again["id"])
