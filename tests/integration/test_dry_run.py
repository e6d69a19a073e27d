"""`sync --dry-run` reports what a run would do and writes nothing: apps and store compared before/after."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.helpers import sync
from tests.integration.test_bidirectional import execute, setup

pytestmark = pytest.mark.integration


def dump(engine: sa.Engine) -> dict[str, Any]:
    """Every row of every table: the whole state of a database (but the store's processes, whose
    rows are the live workers' beats)."""
    md = sa.MetaData()
    md.reflect(engine)
    with engine.connect() as conn:
        return {name: sorted(map(repr, conn.execute(sa.select(t)).all())) for name, t in md.tables.items()
                if name != "processes"}


def test_dry_run_reports_every_kind_of_change_and_writes_nothing(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm = setup(env, erp_rows=4, crm_rows=1)
    env.start_worker()
    sync(env)
    execute(erp, "UPDATE customers SET city = 'ERP city', phone = 'ERP phone' WHERE name = 'ERP 1'")
    execute(crm, "UPDATE accounts SET address1_city = 'CRM city' WHERE name = 'ERP 1'")
    execute(crm, "UPDATE accounts SET telephone1 = '+47 000' WHERE name = 'ERP 2'")
    execute(erp, "INSERT INTO customers (name, city) VALUES ('New ERP', 'Hamar')")
    execute(crm, "DELETE FROM accounts WHERE name = 'ERP 3'")
    store = sa.create_engine(env.store_url)
    before = (dump(erp), dump(crm), dump(store))

    report = json.loads(env.cli("sync", "CUSTOMER", "--dry-run", "--json").stdout)
    d = report["directions"]
    assert d["to_integration"]["counts"] == {"insert": 1, "update": 1, "conflict": 1}, d
    assert d["from_integration"]["counts"]["update"] == 1
    assert d["bidirectional"]["counts"]["conflict"] == 1
    [insert] = d["to_integration"]["samples"]["insert"]
    assert insert["values"]["name"] == "New ERP" and insert["values"]["customertypecode"] == 3
    [update] = d["from_integration"]["samples"]["update"]
    assert update["changes"] == {"phone": ["+47 2", "+47 000"]}
    assert "city: local 'ERP city' ≠ integration address1_city 'CRM city'" in d["bidirectional"]["samples"]["conflict"][0]["message"]
    [gone] = d["to_integration"]["samples"]["conflict"]
    assert (gone["deleted_side"], gone["on_deletion_conflict"]) == ("integration", "skip")
    human = env.cli("sync", "CUSTOMER", "--dry-run").stdout
    assert "Dry run of CUSTOMER" in human and "'+47 2' → '+47 000'" in human

    assert (dump(erp), dump(crm), dump(store)) == before  # not a row, coupling, watermark or job written
    job = sync(env)  # and the real run does what the dry run said
    assert (job["inserted"], job["modified"], job["conflicts"]) == (1, 2, 2), job
