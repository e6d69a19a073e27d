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
from tests.integration.odata_server import ODataCrm, odata_crm  # noqa: F401  (the fixture)

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


def configure(env: Any, crm: ODataCrm, direction: str = "to_integration", update: str = "skip", delete: str = "skip",
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


def run(env: Any, crm: ODataCrm, *extra: str) -> dict[str, Any]:
    """`tablesync sync CUSTOMER --wait --json` (a worker must run), returning the job."""
    proc = env.cli("sync", "CUSTOMER", "--wait", "--json", "--timeout", "120", *extra, check=False, CRM_ODATA_URL=crm.url)
    assert proc.stdout.strip(), f"no output (exit {proc.returncode}): {proc.stderr}\n{env.logs()}"
    return dict(json.loads(proc.stdout))


def worker(env: Any, crm: ODataCrm, **extra: str) -> None:
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
