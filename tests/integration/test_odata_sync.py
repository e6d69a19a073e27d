"""Mappings whose CRM is an OData v4 service (SAP CAP, `odata_crm`), driven through the CLI as a
user would: a PostgreSQL ERP synced into it and back, conflicts by ETag, deletions, refused
records, an outage mid-run, and the operator's actions on the errors."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import wait_for
from tests.integration.helpers import customer_rows, customers_table
from tests.integration.odata_server import ODataCrm, Relay, odata_crm  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration

CONFIG = """\
apps:
  erp: {{url: "${{ERP_DATABASE_URL}}"}}
  crm: {{odata: "${{CRM_ODATA_URL}}"{crm_extra}}}
mappings:
  - name: CUSTOMER
    local:       {{app: erp, table: customers, key: id, modified: modified_at}}
    integration: {{app: crm, table: Accounts, key: ID, modified: modifiedAt}}
    direction: {direction}
    schedule: "every 1h"
    on_update_conflict: {update}
    on_deletion_conflict: {delete}
    fields:
      - {{local: number, integration: accountnumber}}
      - {{local: name, integration: name}}
      - {{local: email, integration: emailaddress1{email_extra}}}
      - {{local: credit_limit, integration: creditlimit}}
"""


def configure(env: Any, crm: ODataCrm | Relay, direction: str = "to_integration", update: str = "skip", delete: str = "skip",
              crm_extra: str = "", email_extra: str = ", transform: lower, direction: to_integration") -> None:
    (env.tmp / "tablesync.yaml").write_text(CONFIG.format(direction=direction, update=update, delete=delete,
                                                          crm_extra=crm_extra, email_extra=email_extra))
    env.cli("config", "apply", CRM_ODATA_URL=crm.url)


def erp_with(env: Any, rows: int) -> tuple[sa.Engine, sa.Table]:
    erp = sa.create_engine(env.erp_url)
    md = sa.MetaData()
    customers = customers_table(md)
    md.create_all(erp)
    if rows:
        with erp.begin() as conn:
            conn.execute(customers.insert(), customer_rows(1, rows))
    return erp, customers


def accounts(crm: ODataCrm) -> dict[str, dict[str, Any]]:
    """Every account of the CRM, by account number."""
    out: dict[str, dict[str, Any]] = {}
    url: str | None = crm.url + "Accounts?$orderby=accountnumber"
    while url:
        body = httpx.get(url, headers={"Accept": "application/json;IEEE754Compatible=true"}).json()
        out.update({a["accountnumber"]: a for a in body["value"]})
        url = body.get("@odata.nextLink") and crm.url + body["@odata.nextLink"]
    return out


def run(env: Any, crm: ODataCrm | Relay, *extra: str) -> dict[str, Any]:
    """`tablesync sync CUSTOMER --wait --json` (a worker must run), returning the job."""
    proc = env.cli("sync", "CUSTOMER", "--wait", "--json", "--timeout", "120", *extra, check=False, CRM_ODATA_URL=crm.url)
    assert proc.stdout.strip(), f"no output (exit {proc.returncode}): {proc.stderr}\n{env.logs()}"
    return dict(json.loads(proc.stdout))


def worker(env: Any, crm: ODataCrm | Relay, **extra: str) -> None:
    env.start_worker(CRM_ODATA_URL=crm.url, TABLESYNC_MAX_RETRIES="3", **extra)


def test_erp_to_odata_crm_initial_and_incremental(env: Any, odata_crm: ODataCrm) -> None:  # noqa: F811
    erp, customers = erp_with(env, 30)
    configure(env, odata_crm)
    worker(env, odata_crm)
    job = run(env, odata_crm)
    assert job["status"] == "succeeded", job
    assert job["inserted"] == 30
    crm = accounts(odata_crm)
    assert len(crm) == 30
    assert crm["C000007"]["name"] == "Customer 7" and crm["C000007"]["emailaddress1"] == "customer7@example.com"
    assert Decimal(crm["C000007"]["creditlimit"]) == 7

    with erp.begin() as conn:
        conn.execute(customers.update().where(customers.c.id == 7).values(name="Renamed", modified_at=sa.func.now()))
        conn.execute(customers.insert(), customer_rows(31, 1))
    job = run(env, odata_crm)
    assert job["status"] == "succeeded", job
    assert (job["inserted"], job["modified"]) == (1, 1), job
    crm = accounts(odata_crm)
    assert len(crm) == 31 and crm["C000007"]["name"] == "Renamed"
    job = run(env, odata_crm)
    assert (job["inserted"], job["modified"]) == (0, 0), job


STAMPED = """
CREATE TABLE customers (id serial PRIMARY KEY, number text, name text, email text, credit_limit numeric(12, 2),
                        modified_at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.modified_at := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION stamp();
"""


def stamped_erp(env: Any, rows: int) -> sa.Engine:
    """An ERP that stamps its own modified-on (a trigger), as real ones do: records can come back from the CRM."""
    erp = sa.create_engine(env.erp_url)
    with erp.begin() as conn:
        conn.exec_driver_sql(STAMPED)
        for i in range(1, rows + 1):
            conn.execute(sa.text("INSERT INTO customers (number, name, email, credit_limit) VALUES (:n, :name, :e, :c)"),
                         {"n": f"E{i}", "name": f"ERP {i}", "e": f"Erp{i}@Example.com", "c": 100 * i})
    return erp


def erp_rows(erp: sa.Engine) -> dict[str, dict[str, Any]]:
    with erp.connect() as conn:
        return {r["number"]: dict(r) for r in conn.execute(sa.text("SELECT * FROM customers")).mappings()}


def post(crm: ODataCrm, **values: Any) -> str:
    answer = httpx.post(crm.url + "Accounts", json=values)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["ID"])


def patch(crm: ODataCrm, key: str, **values: Any) -> None:
    answer = httpx.patch(f"{crm.url}Accounts({key})", json=values, headers={"If-Match": "*"})
    assert answer.status_code in (200, 204), answer.text


def test_bidirectional_merges_fields_and_a_stale_etag_is_merged_not_overwritten(env: Any, odata_crm: ODataCrm) -> None:  # noqa: F811
    erp = stamped_erp(env, 3)
    post(odata_crm, accountnumber="X1", name="CRM 1", creditlimit=10)
    post(odata_crm, accountnumber="X2", name="CRM 2")
    relay = Relay(odata_crm.url)
    try:
        configure(env, relay, direction="bidirectional")
        worker(env, relay)
        job = run(env, relay)
        assert (job["status"], job["inserted"], job["failed"]) == ("succeeded", 5, 0), job
        crm, local = accounts(odata_crm), erp_rows(erp)
        assert set(crm) == set(local) == {"E1", "E2", "E3", "X1", "X2"}
        assert crm["E2"]["emailaddress1"] == "erp2@example.com" and local["X1"]["credit_limit"] == 10

        # Field-level merge: the ERP renames E1 while the CRM raises its credit limit: both land on both sides.
        with erp.begin() as conn:
            conn.execute(sa.text("UPDATE customers SET name = 'ERP one' WHERE number = 'E1'"))
        patch(odata_crm, crm["E1"]["ID"], creditlimit="555.50")
        job = run(env, relay)
        assert (job["modified"], job["conflicts"], job["failed"]) == (2, 0, 0), job
        crm, local = accounts(odata_crm), erp_rows(erp)
        assert (crm["E1"]["name"], Decimal(crm["E1"]["creditlimit"])) == ("ERP one", Decimal("555.50"))
        assert (local["E1"]["name"], local["E1"]["credit_limit"]) == ("ERP one", Decimal("555.50"))

        # A concurrent change: someone edits E2 in the CRM just after tablesync read it and just
        # before its update arrives. The update's If-Match no longer matches (412): the CRM's edit
        # is not overwritten; the record fails alone, and the next run merges both changes.
        e2 = crm["E2"]["ID"]

        def someone_edits(method: str, path: str, body: bytes) -> None:
            if method == "PATCH" and e2 in path:
                relay.before = None
                patch(odata_crm, e2, creditlimit="777.00")

        with erp.begin() as conn:
            conn.execute(sa.text("UPDATE customers SET name = 'ERP two' WHERE number = 'E2'"))
        relay.before = someone_edits
        job = run(env, relay)
        assert (job["failed"], job["modified"]) == (1, 0), job
        errors = json.loads(env.cli("job", str(job["id"]), "--json").stdout)["errors"]
        assert len(errors) == 1 and "changed the record" in errors[0]["message"] and "412" in errors[0]["message"], errors
        assert Decimal(accounts(odata_crm)["E2"]["creditlimit"]) == Decimal("777.00")  # not overwritten
        job = run(env, relay)
        assert (job["failed"], job["conflicts"]) == (0, 0), job
        crm, local = accounts(odata_crm), erp_rows(erp)
        assert (crm["E2"]["name"], Decimal(crm["E2"]["creditlimit"])) == ("ERP two", Decimal("777.00"))
        assert (local["E2"]["name"], local["E2"]["credit_limit"]) == ("ERP two", Decimal("777.00"))
        assert json.loads(env.cli("errors", "--json").stdout) == []
    finally:
        relay.close()


def delete_account(crm: ODataCrm, key: str) -> None:
    assert httpx.delete(f"{crm.url}Accounts({key})", headers={"If-Match": "*"}).status_code == 204


def act(env: Any, crm: ODataCrm | Relay, *args: str) -> dict[str, Any]:
    """An operator action, waited for; its job."""
    proc = env.cli(*args, "--wait", "--json", check=False, CRM_ODATA_URL=crm.url)
    assert proc.stdout.strip(), proc.stderr
    return dict(json.loads(proc.stdout))


def test_deletions_under_each_strategy_and_the_operators_restore_and_delete(env: Any, odata_crm: ODataCrm) -> None:  # noqa: F811
    erp, customers = erp_with(env, 10)
    configure(env, odata_crm, delete="skip")
    worker(env, odata_crm)
    assert run(env, odata_crm)["inserted"] == 10
    keys = {n: a["ID"] for n, a in accounts(odata_crm).items()}

    # skip: a record deleted on either side is listed, nothing is propagated
    with erp.begin() as conn:
        conn.execute(customers.delete().where(customers.c.id == 3))
    delete_account(odata_crm, keys["C000007"])
    job = run(env, odata_crm)
    assert (job["conflicts"], job["deleted"]) == (2, 0), job
    listed = {e["local_key"]: e for e in json.loads(env.cli("errors", "--json", CRM_ODATA_URL=odata_crm.url).stdout)}
    assert set(listed) == {"3", "7"} and listed["7"]["integration_exists"] is False and listed["3"]["integration_exists"] is True
    # the operator: restore the CRM record deleted by mistake, delete the one whose ERP record is gone
    restored = act(env, odata_crm, "restore", str(listed["7"]["coupling_id"]))
    assert (restored["status"], restored["inserted"]) == ("succeeded", 1), restored["message"]
    deleted = act(env, odata_crm, "delete", str(listed["3"]["coupling_id"]), "--yes")
    assert (deleted["status"], deleted["deleted"]) == ("succeeded", 1), deleted
    crm = accounts(odata_crm)
    assert "C000003" not in crm and crm["C000007"]["ID"] != keys["C000007"] and len(crm) == 9
    trail = [(e["kind"], e["outcome"]) for e in json.loads(env.cli("log", "CUSTOMER", "7", "--json", CRM_ODATA_URL=odata_crm.url).stdout)]
    assert trail[0] == ("sync", "inserted") and ("sync", "conflict") in trail and ("restore", "inserted") in trail, trail

    # delete: an ERP deletion deletes the CRM record (through DELETE with If-Match)
    configure(env, odata_crm, delete="delete")
    with erp.begin() as conn:
        conn.execute(customers.delete().where(customers.c.id.in_([1, 2])))
    job = run(env, odata_crm)
    assert (job["deleted"], job["conflicts"], job["failed"]) == (2, 0, 0), job
    assert {"C000001", "C000002"}.isdisjoint(accounts(odata_crm))

    # restore: a CRM deletion re-creates the record from the ERP's, under a new key
    configure(env, odata_crm, delete="restore")
    delete_account(odata_crm, keys["C000005"])
    job = run(env, odata_crm)
    assert (job["inserted"], job["conflicts"]) == (1, 0), job
    assert accounts(odata_crm)["C000005"]["ID"] != keys["C000005"]

    # remove_coupling: the pair is forgotten; later ERP changes to it are not synced
    configure(env, odata_crm, delete="remove_coupling")
    delete_account(odata_crm, keys["C000004"])
    job = run(env, odata_crm)
    assert (job["uncoupled"], job["conflicts"], job["inserted"]) == (1, 0, 0), job
    with erp.begin() as conn:
        conn.execute(customers.update().where(customers.c.id == 4).values(name="Changed", modified_at=sa.func.now()))
    assert run(env, odata_crm)["inserted"] == 0 and "C000004" not in accounts(odata_crm)


def test_a_record_the_service_refuses_fails_alone_with_its_message_and_is_retried(env: Any, odata_crm: ODataCrm) -> None:  # noqa: F811
    erp = stamped_erp(env, 5)
    with erp.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET name = NULL WHERE number = 'E3'"))  # the CRM requires a name
    configure(env, odata_crm, email_extra="")
    worker(env, odata_crm)
    job = run(env, odata_crm)
    assert (job["status"], job["inserted"], job["failed"]) == ("succeeded", 4, 1), job
    [error] = json.loads(env.cli("job", str(job["id"]), "--json", CRM_ODATA_URL=odata_crm.url).stdout)["errors"]
    assert error["source_key"] == str(_id(erp, "E3"))
    # the service's own words (CAP answers 500 with an OData error body for its database's refusal)
    assert error["message"].startswith("app crm (Accounts) refused creating the record: HTTP ") and "name" in error["message"], error
    assert "E3" not in accounts(odata_crm)
    with erp.begin() as conn:  # the operator fixes the ERP record: the next run retries it
        conn.execute(sa.text("UPDATE customers SET name = 'Fixed' WHERE number = 'E3'"))
    job = run(env, odata_crm)
    assert (job["inserted"], job["failed"]) == (1, 0), job
    assert accounts(odata_crm)["E3"]["name"] == "Fixed" and len(accounts(odata_crm)) == 5


def _id(erp: sa.Engine, number: str) -> int:
    with erp.connect() as conn:
        return int(conn.execute(sa.text("SELECT id FROM customers WHERE number = :n"), {"n": number}).scalar_one())


def test_an_outage_mid_run_fails_the_job_which_is_retried_and_converges_without_duplicates(env: Any, odata_crm: ODataCrm) -> None:  # noqa: F811
    """The second $batch of ten creates reaches the service and is made, but its answer is lost
    and the service then stops answering: the job fails as the app's outage (no record error),
    Dramatiq retries it with backoff, and the retry finds the ten records their intents named
    instead of creating them again."""
    erp, _ = erp_with(env, 30)
    posts = 0

    def lose_answer(method: str, path: str) -> bool:
        nonlocal posts
        if method == "POST":
            posts += 1
            if posts == 2:
                relay.down = True
                return True
        return False

    relay = Relay(odata_crm.url, drop=lose_answer)
    try:
        configure(env, relay, crm_extra=", batch_size: 10")
        worker(env, relay)
        job_id = int(env.cli("sync", "CUSTOMER", CRM_ODATA_URL=relay.url).stdout)
        store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)

        def job_row() -> Any:
            with store.connect() as conn:
                return conn.execute(sa.text("SELECT status, message, inserted, failed FROM jobs WHERE id = :j"), {"j": job_id}).one()

        deadline = time.monotonic() + 60
        while not (job_row().status == "failed" and "app unavailable" in str(job_row().message)):
            assert time.monotonic() < deadline, job_row()
            time.sleep(0.2)
        assert "retrying" in str(job_row().message) and len(accounts(odata_crm)) == 20
        relay.down = False
        deadline = time.monotonic() + 90
        while job_row().status != "succeeded":
            assert time.monotonic() < deadline, (job_row(), env.logs())
            time.sleep(0.5)
        crm = accounts(odata_crm)
        assert sorted(crm) == [f"C{i:06d}" for i in range(1, 31)]  # each once: no duplicate of the lost create
        assert job_row().failed == 0
        assert run(env, relay)["inserted"] == 0
    finally:
        relay.close()


def test_config_check_reads_the_services_metadata(env: Any, odata_crm: ODataCrm) -> None:  # noqa: F811
    erp_with(env, 0)
    (env.tmp / "tablesync.yaml").write_text("""\
apps:
  erp: {url: "${ERP_DATABASE_URL}"}
  crm: {odata: "${CRM_ODATA_URL}", auth: {type: basic, username: sync, password: "${CRM_PASSWORD}"}}
  down: {odata: "http://127.0.0.1:9/odata/"}
mappings:
  - name: CUSTOMER
    local:       {app: erp, table: customers, key: id, modified: modified_at}
    integration: {app: crm, table: Accounts, key: ID, modified: modifiedAt}
    direction: to_integration
    fields:
      - {local: number, integration: accountnumber}
      - {local: email, integration: emailaddres1}
      - {local: modified_at, integration: creditlimit}
      - {local: modified_at, integration: createdAt}
  - name: OTHER
    local:       {app: erp, table: customers, key: id}
    integration: {app: crm, table: Acounts, key: ID}
    direction: to_integration
    fields: [{local: name, integration: name}]
  - name: AWAY
    local:       {app: erp, table: customers, key: id}
    integration: {app: down, table: Accounts, key: ID}
    direction: to_integration
    fields: [{local: name, integration: name}]
""")
    proc = env.cli("config", "check", check=False, CRM_ODATA_URL=odata_crm.url, CRM_PASSWORD="pw")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    for expected in [
        "app down: cannot read the OData service's $metadata: app down at http://127.0.0.1:9/odata/: ConnectError",
        "mapping CUSTOMER, field #2 (email ↔ emailaddres1): column 'emailaddres1' does not exist in integration table Accounts",
        "mapping CUSTOMER, field #3 (modified_at ↔ creditlimit): incompatible types: local modified_at is datetime "
        "(TIMESTAMP), integration creditlimit is numeric (Edm.Decimal)",
        "mapping CUSTOMER, field #4 (modified_at ↔ createdAt): integration property 'createdAt' of Accounts is computed by the service",
        "mapping CUSTOMER, integration: column 'name' is NOT NULL without a default and no field maps onto it",
        "mapping OTHER, integration: the OData service has no entity set 'Acounts'; it has: Accounts, Contacts",
    ]:
        assert expected in proc.stderr, f"missing: {expected}\n{proc.stderr}"
    assert "'ID'" not in proc.stderr  # a Guid key no field writes: tablesync makes it

    proc = env.cli("config", "check", check=False, CRM_ODATA_URL=odata_crm.url)
    assert proc.returncode == 2 and "app crm, auth password: environment variable CRM_PASSWORD is not set" in proc.stderr, proc.stderr


def test_two_workers_keep_the_apps_shared_rate_and_wait_out_throttling(env: Any, odata_crm: ODataCrm) -> None:  # noqa: F811
    """Two workers sync two mappings into one CRM at once, under `rate_limit: 5` (requests a second,
    shared through Redis), behind a relay that first answers 429 with Retry-After: both jobs
    succeed with no failed record, and the relay's clock says the two workers kept to the rate together."""
    erp, _ = erp_with(env, 30)
    with erp.begin() as conn:
        conn.execute(sa.text("CREATE TABLE persons (id int PRIMARY KEY, fullname text NOT NULL, email text, "
                             "modified_at timestamptz NOT NULL DEFAULT now())"))
        conn.execute(sa.text("INSERT INTO persons (id, fullname, email) SELECT g, 'Person ' || g, 'p' || g || '@example.com' "
                             "FROM generate_series(1, 30) g"))
    relay = Relay(odata_crm.url, refusals=3)
    try:
        (env.tmp / "tablesync.yaml").write_text(CONFIG.format(direction="to_integration", update="skip", delete="skip",
                                                              crm_extra=", rate_limit: 5, batch_size: 4", email_extra="") + """\
  - name: PERSON
    local:       {app: erp, table: persons, key: id, modified: modified_at}
    integration: {app: crm, table: Contacts, key: ID, modified: modifiedAt}
    direction: to_integration
    schedule: "every 1h"
    fields:
      - {local: fullname, integration: fullname}
      - {local: email, integration: email}
""")
        env.cli("config", "apply", CRM_ODATA_URL=relay.url)
        worker(env, relay)
        worker(env, relay)
        relay.seen.clear()
        relay.refusals = 3
        jobs = [int(env.cli("sync", name, CRM_ODATA_URL=relay.url).stdout) for name in ("CUSTOMER", "PERSON")]

        def job(j: int) -> dict[str, Any]:
            return dict(json.loads(env.cli("job", str(j), "--json").stdout))

        wait_for(lambda: all(job(j)["status"] not in ("queued", "running") for j in jobs), timeout=120, what="both jobs")
        done = [job(j) for j in jobs]
        assert [(j["status"], j["inserted"], j["failed"]) for j in done] == [("succeeded", 30, 0)] * 2, done
        assert [status for _, status in relay.seen[:3]] == [429] * 3
        times = sorted(t for t, status in relay.seen[3:])
        assert len(times) >= 15, len(times)
        # at most 5 a second together, whichever worker sent them (0.2 s of arrival jitter allowed)
        busiest = max(sum(1 for u in times if t <= u < t + 0.8) for t in times)
        assert busiest <= 5, busiest
        assert times[-1] - times[0] >= len(times) / 5 - 1.5
        assert len(accounts(odata_crm)) == 30
    finally:
        relay.close()


def test_polling_an_odata_app_brings_its_changes_within_seconds(env: Any, odata_crm: ODataCrm) -> None:  # noqa: F811
    """change_capture: poll on the HTTP app: the newest modifiedAt is probed (no tick in the hour)."""
    erp = stamped_erp(env, 2)
    configure(env, odata_crm, direction="bidirectional", crm_extra=", change_capture: poll")
    worker(env, odata_crm)
    assert run(env, odata_crm)["inserted"] == 2
    env.start_listener(CRM_ODATA_URL=odata_crm.url)
    wait_for(lambda: "polling" in (env.tmp / f"listen-{len(env.processes) - 1}.log").read_text(), 30, what="polling")
    patch(odata_crm, accounts(odata_crm)["E1"]["ID"], name="Renamed in the CRM")

    def erp_name() -> str:
        with erp.connect() as conn:
            return str(conn.execute(sa.text("SELECT name FROM customers WHERE number = 'E1'")).scalar())

    wait_for(lambda: erp_name() == "Renamed in the CRM", 30, what=f"the CRM's change in the ERP\n{env.logs()}")
