"""Mappings whose CRM is an OData v4 service (SAP CAP, `odata_crm`), driven through the CLI as a
user would: a PostgreSQL ERP synced into it and back, conflicts by ETag, deletions, refused
records, an outage mid-run, and the operator's actions on the errors."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

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
