"""Chunked runs against the real services: a large first run or full resync split into key ranges
that several worker processes share, the store-side fan-in, a worker killed mid-chunk, range
resyncs (`--where`), progress, and the urgent queue."""

from __future__ import annotations

import json
import os
import signal

import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.conftest import wait_for
from tests.integration.helpers import count, customer_rows, setup_customer_sync, slow_inserts, sync
from tests.integration.web_helpers import bearer, logged_in, make_app

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


def test_worker_sigkilled_mid_chunk_the_chunk_is_redone_and_the_run_converges(env) -> None:  # type: ignore[no-untyped-def]
    """A worker dies inside a chunk (its intents staged, rows maybe written): the reaper takes the
    chunk back when its lease expires and another worker redoes it. Meanwhile the schedule's ticks
    are skipped, noted as a chunked run in progress. No record is lost or written twice."""
    erp, crm, customers, accounts = setup_customer_sync(env, rows=4000, batch_size=250, schedule="every 2s")
    slow_inserts(crm, 0.4)
    fast = {**CHUNKS, "TABLESYNC_HEARTBEAT_TIMEOUT_SECONDS": "6"}
    doomed = env.start_worker(threads=2, **fast)
    env.start_scheduler(**fast)
    store = sa.create_engine(env.store_url)

    def busy_chunk() -> bool:
        with store.connect() as conn:
            return bool(conn.execute(sa.text("SELECT count(*) FROM insert_intents WHERE chunk_id IS NOT NULL")).scalar())

    wait_for(busy_chunk, timeout=60, what="a chunk with staged inserts")
    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    env.start_worker(threads=2, **fast)
    with store.connect() as conn:
        job_id = conn.execute(sa.text("SELECT job_id FROM run_chunks LIMIT 1")).scalar_one()

    def ended() -> bool:
        with store.connect() as conn:
            return conn.execute(sa.text("SELECT status FROM jobs WHERE id = :j"), {"j": job_id}).scalar() != "running"

    wait_for(ended, timeout=240, what=f"the chunked job {job_id} to end")
    with store.connect() as conn:
        job = conn.execute(sa.text("SELECT * FROM jobs WHERE id = :j"), {"j": job_id}).one()
        notes = conn.execute(sa.text("SELECT note FROM schedule_ticks WHERE note IS NOT NULL")).scalars().all()
    store.dispose()
    chunks = chunks_of(env, job_id)
    assert job.status == "succeeded", (job, env.logs())
    assert all(c.status == "done" for c in chunks)
    assert any(c.attempts > 1 for c in chunks), "no chunk was redone: the kill came too late"
    assert count(crm, "accounts") == 4000  # none twice
    pairs = couplings(env)
    assert len(pairs) == 4000 and {p.state for p in pairs} == {"synced"}
    with crm.connect() as conn:
        assert conn.execute(sa.text("SELECT count(DISTINCT accountnumber) FROM accounts")).scalar() == 4000
    assert any(f"a chunked run is in progress (job {job_id}, 4 chunks)" in n for n in notes), notes


CAPPED_CONFIG = """\
apps:
  erp: {url: "${ERP_DATABASE_URL}", max_connections: 1}
  crm: {url: "${CRM_DATABASE_URL}"}
mappings:
  - name: CUSTOMER
    local:       {app: erp, table: customers, key: id, modified: modified_at}
    integration: {app: crm, table: accounts, key: account_id, modified: modifiedon}
    direction: to_integration
    schedule: "every 1h"
    batch_size: 200
    chunk_rows: 500
    fields:
      - {local: number, integration: accountnumber}
      - {local: name, integration: name}
      - {integration: customertypecode, constant: 3}
  - name: CUSTOMER_COPY
    local:       {app: erp, table: customers, key: id, modified: modified_at}
    integration: {app: crm, table: accounts_copy, key: account_id, modified: modifiedon}
    direction: to_integration
    schedule: "every 1h"
    fields:
      - {local: number, integration: accountnumber}
      - {local: name, integration: name}
      - {integration: customertypecode, constant: 3}
"""


def test_max_connections_caps_the_chunks_on_an_app_and_urgent_jobs_pass_the_run(env) -> None:  # type: ignore[no-untyped-def]
    """`max_connections: 1` on the ERP: two workers of two threads work one chunk at a time. A
    single-record sync asked for meanwhile (another mapping, same worker pool) is done long before
    the run: it never queues behind the run's chunk messages."""
    erp, crm, customers, accounts = setup_customer_sync(env, rows=6000)
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts_copy (LIKE accounts INCLUDING ALL)"))
    slow_inserts(crm, 0.5)
    (env.tmp / "tablesync.yaml").write_text(CAPPED_CONFIG)
    env.cli("config", "apply")
    env.start_worker(threads=2)
    env.start_worker(threads=2)
    job_id = json.loads(env.cli("sync", "CUSTOMER", "--json").stdout)
    store = sa.create_engine(env.store_url)

    def started() -> bool:
        with store.connect() as conn:
            return bool(conn.execute(sa.text("SELECT count(*) FROM run_chunks WHERE status = 'done'")).scalar())

    wait_for(started, timeout=60, what="a first chunk done")
    one = sync(env, "CUSTOMER_COPY", "--record", "7")
    assert one["status"] == "succeeded" and one["inserted"] == 1, one
    with store.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM run_chunks WHERE job_id = :j AND status IN ('pending', 'running')"),
                            {"j": job_id}).scalar()
    assert left >= 2, "the run ended before the single-record sync: nothing was shown"
    wait_for(lambda: json.loads(env.cli("job", str(job_id), "--json").stdout)["status"] != "running", timeout=240,
             what="the chunked run to end")
    done = json.loads(env.cli("job", str(job_id), "--json").stdout)
    assert done["status"] == "succeeded" and done["inserted"] == 6000, done
    spans = sorted((c.started_at, c.finished_at) for c in chunks_of(env, job_id) if c.number != 0)
    assert len(spans) == 12
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans  # never two at once
    store.dispose()


def test_range_resync_with_where_is_chunked_checked_and_leaves_the_rest_alone(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, customers, accounts = setup_customer_sync(env, rows=300)
    env.start_worker(threads=2, TABLESYNC_CHUNK_ROWS="50")
    first = sync(env)
    assert first["status"] == "succeeded" and first["inserted"] == 300 and first["progress"]["chunks"] == 6
    with crm.begin() as conn:  # drift in the CRM, inside and outside the range
        conn.execute(sa.text("UPDATE accounts SET name = 'drifted' WHERE accountnumber BETWEEN 'C000040' AND 'C000200'"))
    store = sa.create_engine(env.store_url)
    with store.connect() as conn:
        marks = conn.execute(sa.text("SELECT side, value FROM watermarks ORDER BY side")).all()

    bad = env.cli("sync", "CUSTOMER", "--where", "nosuchcolumn > 1", check=False)
    assert bad.returncode == 2 and "nosuchcolumn" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    two = env.cli("sync", "CUSTOMER", "--where", "id > 1; DELETE FROM customers", check=False)
    assert two.returncode == 2 and "without ';'" in two.stderr, two.stderr

    proc = env.cli("sync", "CUSTOMER", "--range", "id BETWEEN 100 AND 250", "--wait", "--json", check=False)
    job = json.loads(proc.stdout)
    assert proc.returncode == 0 and job["status"] == "succeeded", (proc.stderr, env.logs())
    assert job["modified"] == 101 and job["unchanged"] == 50 and job["inserted"] == 0, job
    assert job["progress"]["chunks"] == 4 and job["progress"]["ratio"] == 1.0
    assert "chunks done" in proc.stderr  # --wait's plain progress lines, stdout being a pipe
    assert count(crm, "accounts", "name = 'drifted'") == 60  # C000040..C000099 were outside the range
    with store.connect() as conn:
        assert conn.execute(sa.text("SELECT side, value FROM watermarks ORDER BY side")).all() == marks  # none moved
    text = env.cli("job", str(job["id"])).stdout
    assert "4 of 4 chunks done" in text and "finalisation done" in text, text
    store.dispose()


def test_progress_ratio_metric_of_a_chunked_run_in_progress(env) -> None:  # type: ignore[no-untyped-def]
    from tablesync.scheduler.metrics import StoreCollector
    from tablesync.store import chunks
    from tablesync.store.jobs import Counters, create_job

    store = sa.create_engine(env.store_url)
    with store.begin() as conn:
        job_id = create_job(conn, "CUSTOMER", "sync", status="running")
        chunks.create_run(conn, job_id, "CUSTOMER", [chunks.Range(None, "100", 100), chunks.Range("100", None, 300)],
                          {"erp": None}, {"max_parallel": 2})
        claimed = chunks.claim(conn, job_id, "test", 60)
        assert claimed is not None and claimed.number == 1
        chunks.add_progress(conn, claimed.id, Counters(inserted=100))
        assert chunks.finish(conn, claimed) is False  # one range left: the finalisation waits
    families = {f.name: f for f in StoreCollector(store).collect()}
    samples = families["tablesync_run_progress_ratio"].samples
    assert [(s.labels, s.value) for s in samples] == [({"mapping": "CUSTOMER"}, 0.25)]
    app = make_app(env)  # the web job page and the API say the same
    page = logged_in(app).get(f"/jobs/{job_id}").text
    assert "1 of 2 chunks done" in page and "100 of about 400 rows (25.0 %)" in page and "finalisation" in page, page
    api = TestClient(app).get(f"/api/jobs/{job_id}", headers=bearer(app)).json()
    assert api["progress"]["ratio"] == 0.25 and [c["status"] for c in api["progress"]["items"]] == ["done", "pending", "waiting"]
    with store.begin() as conn:
        last = chunks.claim(conn, job_id, "test", 60)
        assert last is not None and last.number == 2
        assert chunks.finish(conn, last) is True  # the last range releases the finalisation
        final = chunks.claim(conn, job_id, "test", 60)
        assert final is not None and final.number == chunks.FINAL
    store.dispose()
