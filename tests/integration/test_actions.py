"""Operator actions through the CLI, run by a real worker: effects, refusals, groups, the record log,
and an action racing a running sync."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest
import sqlalchemy as sa

from tablesync.config.settings import Settings
from tablesync.worker.broker import build_broker
from tablesync.worker.enqueue import send_job
from tests.conftest import wait_for
from tests.integration.helpers import count, setup_customer_sync, slow_inserts, sync
from tests.integration.test_bidirectional import crm_view, execute, local_view, setup

pytestmark = pytest.mark.integration


def act(env: Any, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    """Run an action with --wait --json: (exit status, job object, stderr)."""
    proc = env.cli(*args, "--wait", "--json", check=False)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr


def errors(env: Any, *extra: str) -> list[dict[str, Any]]:
    return json.loads(env.cli("errors", "--json", *extra).stdout)


def test_conflict_retry_resolve_and_the_record_log_as_an_audit_trail(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm = setup(env, erp_rows=2, crm_rows=0)
    env.start_worker()
    sync(env)
    execute(erp, "UPDATE customers SET phone = '+47 1000' WHERE name = 'ERP 1'")
    sync(env)
    execute(erp, "UPDATE customers SET city = 'ERP city' WHERE name = 'ERP 1'")
    execute(crm, "UPDATE accounts SET address1_city = 'CRM city' WHERE name = 'ERP 1'")
    sync(env)
    [error] = errors(env)
    cid, key = str(error["coupling_id"]), error["local_key"]

    status, job, _ = act(env, "retry", cid, "--operator", "alice")
    assert status == 0 and job is not None and (job["kind"], job["operator"], job["status"]) == ("retry", "alice", "succeeded")
    assert errors(env) == []
    assert sync(env)["conflicts"] == 1  # still conflicting: skipped again, as it should be

    status, job, _ = act(env, "resolve", cid, "--use", "integration", "--operator", "bob")
    assert status == 0 and job is not None and job["modified"] == 1, job
    assert local_view(erp)["ERP 1"] == crm_view(crm)["ERP 1"] == ("CRM city", "+47 1000")
    assert errors(env) == []
    execute(erp, "UPDATE customers SET phone = '+47 2222' WHERE name = 'ERP 1'")
    assert sync(env)["modified"] == 1  # synced normally again

    log = json.loads(env.cli("log", "CUSTOMER", key, "--json").stdout)
    trail = [(e["kind"], e["outcome"], e["operator"]) for e in log]
    assert [t[:2] for t in trail[:3]] == [("sync", "inserted"), ("sync", "modified"), ("sync", "conflict")], trail
    assert log[1]["changes"] == {"telephone1": ["+47 1", "+47 1000"]}
    assert ("retry", "retried", "alice") in trail and ("resolve", "resolved", "bob") in trail
    resolved_at = trail.index(("resolve", "resolved", "bob"))
    assert trail[resolved_at + 1][:2] == ("resolve", "modified")
    assert log[resolved_at + 1]["changes"] == {"city": ["ERP city", "CRM city"]}
    assert log[-1]["kind"] == "sync" and log[-1]["changes"] == {"telephone1": ["+47 1000", "+47 2222"]}
    human = env.cli("log", "CUSTOMER", key).stdout
    assert "Synchronization log of local record" in human and "alice" in human and "'ERP city' → 'CRM city'" in human


def test_refusals_say_why_and_what_to_do(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=5)
    env.start_worker()
    sync(env)
    execute(crm, "DELETE FROM accounts WHERE accountnumber = 'C000002'")
    sync(env)
    [error] = errors(env)
    cid = str(error["coupling_id"])

    status, job, _ = act(env, "retry", cid)
    assert status == 1 and job is not None and job["status"] == "failed"
    assert "the integration record" in job["message"] and "use `tablesync restore`" in job["message"]
    status, job, _ = act(env, "resolve", cid, "--use", "integration")
    assert status == 1 and job is not None, job  # the side named is the one a to_integration mapping never writes
    assert "its local records are never written to, so the integration values cannot win; use --use local" in job["message"]
    with sa.create_engine(env.store_url).connect() as conn:
        other = str(conn.execute(sa.text("SELECT id FROM couplings WHERE local_key = '3'")).scalar())
    status, job, _ = act(env, "restore", other)
    assert status == 1 and job is not None and "both records exist, so there is no deletion to settle" in job["message"]
    with crm.connect() as conn:
        account = str(conn.execute(sa.text("SELECT account_id FROM accounts WHERE accountnumber = 'C000004'")).scalar())
    status, job, _ = act(env, "couple", "CUSTOMER", "5", account)
    assert status == 1 and job is not None and "already couples local 4" in job["message"]
    proc = env.cli("retry", "999999", check=False)
    assert proc.returncode == 2 and "no coupling 999999" in proc.stderr
    assert len(errors(env)) == 1  # nothing was changed by the refusals


def test_restore_delete_and_uncouple_settle_deletion_conflicts(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=6)
    env.start_worker()
    sync(env)
    execute(crm, "DELETE FROM accounts WHERE accountnumber IN ('C000001', 'C000002')")
    execute(erp, "DELETE FROM customers WHERE id = 3")
    sync(env)
    by_key = {e["local_key"]: str(e["coupling_id"]) for e in errors(env)}
    assert set(by_key) == {"1", "2", "3"}

    status, job, _ = act(env, "restore", by_key["1"])
    assert status == 0 and job is not None and job["inserted"] == 1, job
    assert count(crm, "accounts", "accountnumber = 'C000001'") == 1
    refused = env.cli("delete", by_key["3"], check=False)  # no terminal to ask and no --yes: nothing happens
    assert refused.returncode == 2 and "confirm with --yes" in refused.stderr and "Traceback" not in refused.stderr
    assert f"coupling {by_key['3']} (CUSTOMER): crm accounts account_id=" in refused.stdout  # which app loses what
    assert count(crm, "accounts", "accountnumber = 'C000003'") == 1
    status, job, preview = act(env, "delete", by_key["3"], "--yes")
    assert status == 0 and job is not None and job["deleted"] == 1, job
    assert "1 record(s) will be deleted" in preview and "crm accounts account_id=" in preview  # on stderr with --json
    assert count(crm, "accounts", "accountnumber = 'C000003'") == 0
    status, job, _ = act(env, "uncouple", by_key["2"])
    assert status == 0 and job is not None and job["uncoupled"] == 1
    assert errors(env) == []
    execute(erp, "UPDATE customers SET name = 'Changed', modified_at = now() WHERE id IN (1, 2)")
    job = sync(env)
    assert (job["inserted"], job["modified"], job["conflicts"]) == (0, 1, 0), job  # 2 is no longer synced
    assert count(crm, "accounts") == 4


def test_match_and_couple_existing_records(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, accounts = setup_customer_sync(env, rows=5)
    config = env.tmp / "tablesync.yaml"
    config.write_text(config.read_text().replace("    fields:", "    sync_only_coupled: true\n    match_on: [email]\n    fields:"))
    env.cli("config", "apply")
    with crm.begin() as conn:
        conn.execute(accounts.insert(), [{"name": f"CRM {i}", "emailaddress1": f"customer{i}@example.com", "customertypecode": 1}
                                         for i in (1, 2, 3, 4, 4)])
        conn.execute(accounts.insert(), [{"name": "Lonely", "emailaddress1": "nobody@example.com", "customertypecode": 1}])
    env.start_worker()
    status, job, _ = act(env, "match", "CUSTOMER")
    assert status == 0 and job is not None, job
    assert job["coupled"] == 3 and job["message"] == "coupled 3, unmatched 1, ambiguous 1", job
    assert count(crm, "accounts", "name = 'Customer 2' AND customertypecode = 3") == 1  # synced at once
    with crm.connect() as conn:
        lonely = str(conn.execute(sa.text("SELECT account_id FROM accounts WHERE name = 'Lonely'")).scalar())
    status, job, _ = act(env, "couple", "CUSTOMER", "5", lonely)
    assert status == 0 and job is not None and (job["coupled"], job["modified"]) == (1, 1), job
    assert count(crm, "accounts", "name = 'Customer 5'") == 1
    assert count(crm, "accounts") == 6  # nothing inserted


def test_retry_a_group_of_errors_now(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, customers, _ = setup_customer_sync(env, rows=6)
    with erp.begin() as conn:
        conn.execute(customers.update().where(customers.c.id.in_([2, 4, 6])).values(credit_limit=-5))
    env.start_worker()
    for _ in range(3):
        sync(env)
    groups = json.loads(env.cli("errors", "--group", "--json").stdout)
    assert [(g["reason"], g["count"]) for g in groups] == [("failures", 3)], groups
    assert "violates check constraint" in groups[0]["message"]
    with erp.begin() as conn:
        conn.execute(customers.update().where(customers.c.id.in_([2, 4, 6])).values(credit_limit=5))
    status, job, _ = act(env, "retry", "--group", groups[0]["signature"], "--now")
    assert status == 0 and job is not None and (job["inserted"], job["failed"]) == (3, 0), job  # never inserted before
    assert errors(env) == [] and count(crm, "accounts", "creditlimit = 5 AND accountnumber IN ('C000002', 'C000004', 'C000006')") == 3


def test_an_action_waits_for_a_running_sync_of_its_mapping(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=3)
    env.start_worker(threads=2)
    sync(env)
    execute(crm, "DELETE FROM accounts WHERE accountnumber = 'C000001'")
    sync(env)
    [error] = errors(env)
    with erp.begin() as conn:
        conn.execute(sa.text("INSERT INTO customers (id, number, name, email, credit_limit, modified_at) "
                             "SELECT g, 'C' || g, 'Bulk ' || g, 'b' || g || '@x.org', 1, now() FROM generate_series(10, 30000) g"))
    slow_inserts(crm, 1.0)  # the sync runs long enough for the action to be asked for while it holds the lock
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    sync_id = int(env.cli("sync", "CUSTOMER").stdout)

    def sync_status() -> str:
        with store.connect() as conn:
            return str(conn.execute(sa.text("SELECT status FROM jobs WHERE id = :j"), {"j": sync_id}).scalar())

    wait_for(lambda: sync_status() == "running", timeout=60, what="the sync to start")  # the action is asked for while the sync holds the lock
    status, job, _ = act(env, "restore", str(error["coupling_id"]))
    assert status == 0 and job is not None and job["inserted"] == 1, job
    running = json.loads(env.cli("job", str(sync_id), "--json").stdout)
    assert running["status"] == "succeeded" and running["finished_at"] <= job["started_at"], (running, job)


def test_sync_one_record_now_by_either_key(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=4)
    execute(erp, "UPDATE customers SET modified_at = now() - interval '1 hour' * (1 + id % 2)")  # 1 and 3 below the watermark
    env.start_worker()
    sync(env)
    # A change that incremental selection cannot see: the app did not touch modified_at.
    execute(erp, "UPDATE customers SET name = 'Quietly renamed' WHERE id IN (1, 3)")
    assert sync(env)["modified"] == 0
    job = sync(env, "CUSTOMER", "--record", "1")
    assert (job["kind"], job["modified"]) == ("sync", 1), job
    with crm.connect() as conn:
        key3 = str(conn.execute(sa.text("SELECT account_id FROM accounts WHERE accountnumber = 'C000003'")).scalar())
    job = sync(env, "CUSTOMER", "--record", key3, "--side", "integration")  # found through its coupling
    assert job["modified"] == 1, job
    assert count(crm, "accounts", "name = 'Quietly renamed'") == 2
    job = sync(env, "CUSTOMER", "--record", "999")
    assert job["status"] == "failed" and "local record 999 does not exist" in job["message"], job


def test_a_redelivered_action_message_does_nothing_twice(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=3)
    worker = env.start_worker(threads=1)
    sync(env)
    execute(crm, "DELETE FROM accounts WHERE accountnumber = 'C000001'")
    sync(env)
    [error] = errors(env)
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait()
    job_id = int(env.cli("restore", str(error["coupling_id"])).stdout)
    settings = Settings(broker_url=env.broker_url, broker_namespace=env.namespace, queue=env.queue, store_url=env.store_url)
    send_job(build_broker(settings), settings, job_id)  # at-least-once delivery: the same message twice
    env.start_worker(threads=1)  # one thread: restore, its duplicate, then the sync below, in order
    sync(env)
    job = json.loads(env.cli("job", str(job_id), "--json").stdout)
    assert (job["status"], job["inserted"]) == ("succeeded", 1), job
    assert count(crm, "accounts", "accountnumber = 'C000001'") == 1
