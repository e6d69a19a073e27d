"""depends_on and parent fields: a child mapping waits for its parent's job, translates parent keys
through the parent's couplings, and a child whose parent is not coupled fails alone."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.integration.helpers import setup_customer_sync, sync

pytestmark = pytest.mark.integration

CONTACT = """
  - name: CONTACT
    local:       {app: erp, table: contacts, key: id, modified: modified_at}
    integration: {app: crm, table: crm_contacts, key: contactid, modified: modifiedon}
    direction: to_integration
    schedule: "every 1h"
    depends_on: [CUSTOMER]
    fields:
      - {local: customer_id, integration: parentcustomerid, parent: CUSTOMER}
      - {local: name, integration: fullname}
"""


def test_child_waits_for_parent_job_and_translates_parent_keys(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, customers, _ = setup_customer_sync(env, rows=6000, filter="blocked = false")
    with erp.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET blocked = true WHERE id = 13"))
        conn.execute(sa.text("CREATE TABLE contacts (id int PRIMARY KEY, customer_id int, name text NOT NULL, "
                             "modified_at timestamptz NOT NULL DEFAULT now())"))
        conn.execute(sa.text("INSERT INTO contacts (id, customer_id, name) SELECT g, g, 'Contact ' || g FROM generate_series(1, 20) g"))
        conn.execute(sa.text("INSERT INTO contacts (id, customer_id, name) VALUES (21, NULL, 'Orphan')"))
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE TABLE crm_contacts (contactid serial PRIMARY KEY, parentcustomerid uuid, "
                             "fullname text NOT NULL, modifiedon timestamptz NOT NULL DEFAULT now())"))
    config = env.tmp / "tablesync.yaml"
    config.write_text(config.read_text() + CONTACT)
    env.cli("config", "apply")
    env.start_worker(threads=4)

    env.cli("sync", "CUSTOMER")  # enqueued first: CONTACT, enqueued after it, must wait for it
    job = sync(env, "CONTACT")
    assert (job["status"], job["inserted"], job["failed"]) == ("succeeded", 20, 1), job
    parent = json.loads(env.cli("jobs", "--mapping", "CUSTOMER", "--json").stdout)[0]
    assert parent["status"] == "succeeded" and parent["finished_at"] <= job["started_at"]

    with crm.connect() as conn:
        linked = dict(conn.execute(sa.text(
            "SELECT c.fullname, a.accountnumber FROM crm_contacts c LEFT JOIN accounts a ON a.account_id = c.parentcustomerid")).all())
    assert linked["Contact 7"] == "C000007" and linked["Orphan"] is None
    assert "Contact 13" not in linked  # its customer is filtered out, so never coupled
    [error] = json.loads(env.cli("job", str(job["id"]), "--json").stdout)["errors"]
    assert error["source_key"] == "13"
    assert "the parent record 13 of mapping CUSTOMER is not coupled yet" in error["message"]

    with erp.begin() as conn:
        conn.execute(customers.update().where(customers.c.id == 13).values(blocked=False, modified_at=sa.func.now()))
    sync(env, "CUSTOMER")
    job = sync(env, "CONTACT")  # the failed child is retried and now finds its parent
    assert (job["inserted"], job["failed"]) == (1, 0), job
