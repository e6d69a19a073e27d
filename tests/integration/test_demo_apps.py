"""The docker-compose demo without Docker: its seed and simulated users on a real PostgreSQL ERP and
a real MariaDB CRM (or the OData CRM of profile demo-odata), with the compose stack's own tablesync.yaml, synced by a real worker."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tablesync.console.demo_apps import traffic
from tests.integration.helpers import sync
from tests.integration.odata_server import ODataCrm, demo_odata_crm  # noqa: F401  (the fixture)

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_compose_demo_seeds_once_syncs_and_keeps_syncing_under_traffic(env, mariadb_url: str) -> None:  # type: ignore[no-untyped-def]
    urls = {"ERP_DATABASE_URL": env.erp_url, "CRM_DATABASE_URL": mariadb_url}
    assert "created and filled" in env.cli("demo-apps", "seed", "--rows", "50", **urls).stdout
    assert "already exist" in env.cli("demo-apps", "seed", **urls).stdout  # compose may run it again: a no-op
    shutil.copy(ROOT / "compose" / "tablesync.yaml", env.tmp / "tablesync.yaml")
    env.cli("config", "apply", **urls)
    env.start_worker(**urls)
    first = {m: sync(env, m) for m in ("CUSTOMER", "LEAD", "CONTACT")}
    assert {m: j["status"] for m, j in first.items()} == dict.fromkeys(first, "succeeded"), first
    assert (first["CUSTOMER"]["inserted"], first["LEAD"]["inserted"], first["CONTACT"]["inserted"]) == (48, 5, 5)

    rounds = traffic(env.erp_url, mariadb_url, every=0, stop=threading.Event(), rounds=6, seed_value=3)
    assert rounds == 6
    second = {m: sync(env, m) for m in ("CUSTOMER", "LEAD", "CONTACT")}
    assert {m: j["status"] for m, j in second.items()} == dict.fromkeys(second, "succeeded"), second
    assert second["CUSTOMER"]["inserted"] == 1 and second["CUSTOMER"]["modified"] >= 6  # a new customer, 2 edits a round
    assert second["LEAD"]["modified"] >= 1
    assert second["CONTACT"]["modified"] + second["CONTACT"]["conflicts"] >= 1
    with sa.create_engine(mariadb_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM accounts")).scalar() == 49


def test_compose_demo_with_its_odata_crm_seeds_syncs_and_keeps_syncing(env, demo_odata_crm: ODataCrm) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """Profile demo-odata: the CRM is compose/odata-crm's OData service, with compose/tablesync-odata.yaml."""
    urls = {"ERP_DATABASE_URL": env.erp_url, "CRM_ODATA_URL": demo_odata_crm.url}
    assert "created and filled" in env.cli("demo-apps", "seed", "--odata", "--rows", "50", **urls).stdout
    assert "already exist" in env.cli("demo-apps", "seed", "--odata", **urls).stdout
    shutil.copy(ROOT / "compose" / "tablesync-odata.yaml", env.tmp / "tablesync.yaml")
    assert "OK" in env.cli("config", "check", **urls).stdout  # live, against the service's $metadata
    env.cli("config", "apply", **urls)
    env.start_worker(**urls)
    first = {m: sync(env, m) for m in ("CUSTOMER", "LEAD", "CONTACT")}
    assert {m: j["status"] for m, j in first.items()} == dict.fromkeys(first, "succeeded"), first
    assert (first["CUSTOMER"]["inserted"], first["LEAD"]["inserted"], first["CONTACT"]["inserted"]) == (48, 30, 5)
    crm = httpx.Client(base_url=demo_odata_crm.url)
    accounts = crm.get("accounts", params={"$select": "accountid,accountnumber"}).json()["value"]
    contacts = crm.get("contacts").json()["value"]
    by_id = {a["accountid"]: a["accountnumber"] for a in accounts}
    assert sorted(by_id[c["parentcustomerid"]] for c in contacts) == [f"C{10000 + i}" for i in range(1, 6)]

    rounds = traffic(env.erp_url, demo_odata_crm.url, every=0, stop=threading.Event(), rounds=6, seed_value=3)
    assert rounds == 6
    second = {m: sync(env, m) for m in ("CUSTOMER", "LEAD", "CONTACT")}
    assert {m: j["status"] for m, j in second.items()} == dict.fromkeys(second, "succeeded"), second
    assert second["CUSTOMER"]["inserted"] == 1 and second["CUSTOMER"]["modified"] >= 6
    assert second["LEAD"]["modified"] >= 1
    assert second["CONTACT"]["modified"] + second["CONTACT"]["conflicts"] >= 1
    assert len(crm.get("accounts", params={"$select": "accountid"}).json()["value"]) == 49
    with sa.create_engine(env.erp_url).connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM prospects")).scalar() == 30
