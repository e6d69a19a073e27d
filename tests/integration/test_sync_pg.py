"""One-way sync through the real path: PostgreSQL store and apps, Redis broker, a worker process."""

from __future__ import annotations

import json
import uuid

import pytest
import sqlalchemy as sa

from tests.integration.helpers import (
    count,
    customer_rows,
    now,
    setup_customer_sync,
    sync,
)

pytestmark = pytest.mark.integration

JOB_KEYS = {"id", "mapping", "kind", "direction", "status", "operator", "trigger", "enqueued_at", "started_at", "finished_at",
            "inserted", "modified", "deleted", "unchanged", "coupled", "uncoupled", "conflicts", "skipped", "failed",
            "message"}


def test_insert_update_unchanged_and_echo(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, customers, accounts = setup_customer_sync(env, rows=120, batch_size=50)
    env.start_worker()

    first = sync(env)
    assert first["status"] == "succeeded", first
    assert (first["inserted"], first["modified"], first["failed"]) == (120, 0, 0)
    assert count(crm, "accounts") == 120
    with crm.connect() as conn:
        row = conn.execute(sa.select(accounts).where(accounts.c.accountnumber == "C000007")).one()
    assert isinstance(row.account_id, uuid.UUID)  # key made by PostgreSQL's gen_random_uuid()
    assert (row.name, row.emailaddress1, row.customertypecode) == ("Customer 7", "customer7@example.com", 3)

    # Nothing changed: the overlap re-reads rows, hashes recognise them, nothing is written.
    second = sync(env)
    assert (second["inserted"], second["modified"]) == (0, 0)
    xmin = "SELECT xmin::text FROM accounts WHERE accountnumber = 'C000006'"
    with crm.connect() as conn:
        before = conn.execute(sa.text(xmin)).scalar()

    with erp.begin() as conn:
        conn.execute(customers.update().where(customers.c.id.in_([3, 4, 5])).values(name=customers.c.name + " ApS", modified_at=now()))
        conn.execute(customers.update().where(customers.c.id == 6).values(modified_at=now()))  # touched, same values
        conn.execute(customers.insert(), customer_rows(121, 2))
    third = sync(env)
    assert (third["inserted"], third["modified"], third["failed"]) == (2, 3, 0), third
    assert third["unchanged"] >= 1
    with crm.connect() as conn:
        names = dict(conn.execute(sa.select(accounts.c.accountnumber, accounts.c.name)
                                  .where(accounts.c.accountnumber.in_(["C000003", "C000006"]))).all())
        after = conn.execute(sa.text(xmin)).scalar()
    assert names == {"C000003": "Customer 3 ApS", "C000006": "Customer 6"}
    assert after == before  # touched in the ERP with equal values: the CRM row was not rewritten

    # A full run compares every row and finds nothing to do.
    full = sync(env, "CUSTOMER", "--full")
    assert (full["kind"], full["inserted"], full["modified"], full["unchanged"]) == ("full_sync", 0, 0, 122)

    jobs = json.loads(env.cli("jobs", "--json").stdout)
    assert [j["id"] for j in jobs] == sorted((j["id"] for j in jobs), reverse=True)
    assert set(jobs[0]) == JOB_KEYS and jobs[0]["enqueued_at"].endswith("Z")
    mappings = json.loads(env.cli("mappings", "--json").stdout)
    assert mappings == [{"name": "CUSTOMER", "direction": "to_integration", "schedule": "every 1h",
                         "last_run_at": jobs[0]["finished_at"], "last_status": "succeeded",
                         "next_run_at": mappings[0]["next_run_at"], "skipped": 0, "paused": None}]


def test_bad_record_fails_alone_and_is_retried(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, customers, accounts = setup_customer_sync(env, rows=0, batch_size=1000)
    rows = customer_rows(1, 500)
    rows[136]["credit_limit"] = -5  # violates the CRM's check constraint
    rows[401]["name"] = "x" * 150  # too long for the CRM's name column: fails in coercion
    with erp.begin() as conn:
        conn.execute(customers.insert(), rows)
    env.start_worker()

    job = sync(env)
    assert job["status"] == "succeeded"
    assert (job["inserted"], job["failed"]) == (498, 2)
    assert count(crm, "accounts") == 498
    detail = json.loads(env.cli("job", str(job["id"]), "--json").stdout)
    errors = {e["source_key"]: e for e in detail["errors"]}
    assert set(errors) == {"137", "402"}
    assert "creditlimit_positive" in errors["137"]["message"] and errors["137"]["detail"]
    assert errors["402"]["message"] == "field name → name: 150 characters do not fit name (100 max)"
    assert errors["137"]["direction"] == "to_integration"

    # Unchanged and not re-read by the watermark, the failed records are still retried; still bad, still failing.
    again = sync(env)
    assert (again["inserted"], again["failed"]) == (0, 2)

    with erp.begin() as conn:  # fixing the data without touching modified_at: the retry alone picks it up
        conn.execute(customers.update().where(customers.c.id == 137).values(credit_limit=5))
        conn.execute(customers.update().where(customers.c.id == 402).values(name="Short again"))
    fixed = sync(env)
    assert (fixed["inserted"], fixed["failed"]) == (2, 0)
    assert count(crm, "accounts") == 500
    with env_store(env).connect() as conn:
        states = conn.execute(sa.text("SELECT state, last_result, count(*) FROM couplings GROUP BY 1, 2")).all()
    assert states == [("synced", "success", 500)]


def test_from_integration_with_serial_target_key(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm = sa.create_engine(env.erp_url), sa.create_engine(env.crm_url)
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE TABLE leads (lead_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), fullname text, "
                             "modifiedon timestamptz NOT NULL DEFAULT now())"))
        conn.execute(sa.text("INSERT INTO leads (fullname) SELECT 'Lead ' || g FROM generate_series(1, 40) g"))
    with erp.begin() as conn:
        conn.execute(sa.text("CREATE TABLE prospects (id serial PRIMARY KEY, name varchar(50) NOT NULL, "
                             "modified_at timestamptz NOT NULL DEFAULT now())"))
    (env.tmp / "tablesync.yaml").write_text(
        'apps:\n  erp: {url: "${ERP_DATABASE_URL}"}\n  crm: {url: "${CRM_DATABASE_URL}"}\n'
        "mappings:\n  - name: LEAD\n"
        "    local: {app: erp, table: prospects, key: id, modified: modified_at}\n"
        "    integration: {app: crm, table: leads, key: lead_id, modified: modifiedon}\n"
        "    direction: from_integration\n"
        "    fields:\n      - {local: name, integration: fullname, transform: upper}\n"
    )
    env.cli("config", "apply")
    env.start_worker()
    job = sync(env, "LEAD")
    assert (job["status"], job["direction"], job["inserted"]) == ("succeeded", "from_integration", 40)
    with erp.connect() as conn:
        ids = conn.execute(sa.text("SELECT id, name FROM prospects ORDER BY id")).all()
    assert [i for i, _ in ids] == list(range(1, 41))  # serial keys reserved from the ERP's own sequence
    assert ids[0][1].startswith("LEAD ")
    with crm.begin() as conn:
        conn.execute(sa.text("UPDATE leads SET fullname = 'Renamed', modifiedon = now() WHERE fullname = 'Lead 1'"))
    job = sync(env, "LEAD")
    assert (job["inserted"], job["modified"]) == (0, 1)
    assert count(erp, "prospects", "name = 'RENAMED'") == 1


def test_unreachable_app_fails_the_job_with_a_clear_message_and_no_skips(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=5)
    env.start_worker(TABLESYNC_MAX_RETRIES="0", CRM_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    job = sync(env)
    assert job["status"] == "failed"
    assert job["message"].startswith("app unavailable: app crm (postgresql+psycopg://postgres@127.0.0.1:1/nowhere)")
    with env_store(env).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM couplings WHERE skipped")).scalar() == 0


def test_secrets_never_reach_the_store(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=1)
    with env_store(env).connect() as conn:
        definition = conn.execute(sa.text("SELECT definition FROM mappings")).scalar_one()
    assert definition["apps"]["crm"]["url"] == "${CRM_DATABASE_URL}"


def env_store(env) -> sa.Engine:  # type: ignore[no-untyped-def]
    return sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)


def test_config_apply_versions_mappings_and_deactivates_removed_ones(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=0)
    assert env.cli("config", "apply").stdout.strip() == "unchanged: CUSTOMER"
    path = env.tmp / "tablesync.yaml"
    path.write_text(path.read_text().replace("every 1h", "every 10m"))
    assert env.cli("config", "apply").stdout.strip() == "updated: CUSTOMER"
    assert json.loads(env.cli("mappings", "--json").stdout)[0]["schedule"] == "every 10m"
    path.write_text(path.read_text().split("mappings:")[0] + "mappings: []\n")
    assert env.cli("config", "apply").stdout.strip() == "deactivated: CUSTOMER"
    assert json.loads(env.cli("mappings", "--json").stdout) == []
    refused = env.cli("sync", "CUSTOMER", check=False)
    assert refused.returncode == 2 and "mapping 'CUSTOMER' is deactivated" in refused.stderr  # said as it is
    assert env.cli("jobs", "--mapping", "CUSTOMER").returncode == 0  # its history stays readable
    with env_store(env).connect() as conn:
        versions = conn.execute(sa.text("SELECT version, active, applied_by IS NOT NULL FROM mappings ORDER BY version")).all()
    assert versions == [(1, True, True), (2, True, True), (3, False, True)]


def test_skip_after_failures_and_the_errors_list(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, customers, accounts = setup_customer_sync(env, rows=0)
    rows = customer_rows(1, 10)
    rows[2]["credit_limit"] = -1  # record 3 always fails (CRM check constraint)
    rows[4]["credit_limit"] = -2  # record 5 fails once, then is fixed
    with erp.begin() as conn:
        conn.execute(customers.insert(), rows)
    env.start_worker()

    first = sync(env)
    assert (first["inserted"], first["failed"]) == (8, 2)
    with erp.begin() as conn:
        conn.execute(customers.update().where(customers.c.id == 5).values(credit_limit=2))
    second = sync(env)
    assert (second["inserted"], second["failed"]) == (1, 1)
    third = sync(env)  # record 3's third consecutive failure skips it
    assert third["failed"] == 1
    fourth = sync(env)  # skipped: no longer retried
    assert (fourth["failed"], fourth["inserted"]) == (0, 0)
    with erp.begin() as conn:  # even a fresh change to a skipped record is left alone
        conn.execute(customers.update().where(customers.c.id == 3).values(name="Still bad", modified_at=now()))
    fifth = sync(env)
    assert (fifth["skipped"], fifth["failed"], fifth["inserted"]) == (1, 0, 0)
    assert count(crm, "accounts") == 9

    errors = json.loads(env.cli("errors", "--json").stdout)
    assert len(errors) == 1
    e = errors[0]
    assert (e["mapping"], e["local_key"], e["integration_key"], e["reason"]) == ("CUSTOMER", "3", e["integration_key"], "failures")
    assert (e["local_exists"], e["integration_exists"]) == (True, False)  # the insert never landed
    assert "creditlimit_positive" in e["message"] and e["failed_on"].endswith("Z")
    other = env.cli("errors", "--json", "--mapping", "OTHER", check=False)  # a typo is refused, never an empty list
    assert other.returncode == 2 and "unknown mapping 'OTHER'" in other.stderr and other.stdout == ""
    table = env.cli("errors").stdout
    assert "Coupled data synchronization errors (1)" in table and "failures" in table

    skipped = json.loads(env.cli("couplings", "CUSTOMER", "--skipped", "--json").stdout)
    assert [(c["coupling_id"], c["local_key"], c["skipped"], c["reason"]) for c in skipped] == [(e["coupling_id"], "3", True, "failures")]
    one = json.loads(env.cli("couplings", "CUSTOMER", "--local", "5", "--json").stdout)
    assert len(one) == 1 and one[0]["skipped"] is False and one[0]["last_synced_at"]
    with env_store(env).connect() as conn:  # a success resets the count
        assert conn.execute(sa.text("SELECT failures FROM couplings WHERE local_key = '5'")).scalar() == 0
        events = conn.execute(sa.text("SELECT outcome FROM record_events WHERE local_key = '3' ORDER BY id")).scalars().all()
    assert events == ["failed", "failed", "failed", "skipped"]


def test_match_on_couples_existing_records_instead_of_duplicating(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, customers, accounts = setup_customer_sync(env, rows=0)
    path = env.tmp / "tablesync.yaml"
    path.write_text(path.read_text().replace("    fields:", "    match_on: [email]\n    fields:"))
    env.cli("config", "apply")
    with erp.begin() as conn:
        conn.execute(customers.insert(), customer_rows(1, 6))
    with crm.begin() as conn:  # the CRM already holds some of these customers, emails in another case
        conn.execute(accounts.insert(), [
            {"accountnumber": "OLD-1", "name": "Old name 1", "emailaddress1": "customer1@example.com", "customertypecode": 1},
            {"accountnumber": "C000002", "name": "Customer 2", "emailaddress1": "CUSTOMER2@EXAMPLE.COM", "creditlimit": 2,
             "customertypecode": 3},
            {"accountnumber": "DUP-A", "name": "Twin", "emailaddress1": "customer3@example.com", "customertypecode": 3},
            {"accountnumber": "DUP-B", "name": "Twin", "emailaddress1": "Customer3@Example.com", "customertypecode": 3},
        ])
    env.start_worker()
    job = sync(env)
    assert (job["coupled"], job["inserted"], job["failed"]) == (2, 3, 1), job
    assert count(crm, "accounts") == 7  # 4 existing + customers 4, 5, 6; no duplicate of 1 or 2
    with crm.connect() as conn:
        one = conn.execute(sa.select(accounts).where(accounts.c.emailaddress1 == "customer1@example.com")).one()
    assert (one.accountnumber, one.name, one.customertypecode) == ("C000001", "Customer 1", 3)  # coupled, then updated
    detail = json.loads(env.cli("job", str(job["id"]), "--json").stdout)
    [error] = detail["errors"]
    assert error["source_key"] == "3"
    assert error["message"].startswith("match_on (emailaddress1) is ambiguous: 2 uncoupled integration records match")
    with env_store(env).connect() as conn:
        events = dict(conn.execute(sa.text("SELECT local_key, outcome FROM record_events WHERE outcome = 'coupled'")).all())
    assert events == {"1": "coupled", "2": "coupled"}
    again = sync(env)  # the ambiguous record keeps failing rather than creating a third twin
    assert (again["coupled"], again["inserted"], again["failed"]) == (0, 0, 1)
    with crm.begin() as conn:  # the operator removes one twin: the retried record now couples to the other
        conn.execute(accounts.delete().where(accounts.c.accountnumber == "DUP-B"))
    resolved = sync(env)
    assert (resolved["coupled"], resolved["inserted"], resolved["failed"]) == (1, 0, 0)
    assert count(crm, "accounts", "accountnumber = 'C000003'") == 1 and count(crm, "accounts") == 6
