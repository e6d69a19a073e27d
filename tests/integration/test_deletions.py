"""Deleted records on one-way mappings: detection by scanning coupled keys, and on_deletion_conflict."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.integration.helpers import count, setup_customer_sync, sync

pytestmark = pytest.mark.integration


def with_strategy(env, strategy: str) -> None:  # type: ignore[no-untyped-def]
    path = env.tmp / "tablesync.yaml"
    path.write_text(path.read_text().replace("    fields:", f"    on_deletion_conflict: {strategy}\n    fields:"))
    env.cli("config", "apply")


def delete_local(erp: sa.Engine, ids: list[int]) -> None:
    with erp.begin() as conn:
        conn.execute(sa.text("DELETE FROM customers WHERE id = ANY(:ids)"), {"ids": ids})


def delete_crm(crm: sa.Engine, numbers: list[str]) -> None:
    with crm.begin() as conn:
        conn.execute(sa.text("DELETE FROM accounts WHERE accountnumber = ANY(:n)"), {"n": numbers})


def test_skip_reports_deletions_on_either_side_in_the_errors_list(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=20)
    env.start_worker()
    assert sync(env)["inserted"] == 20
    delete_local(erp, [3])
    delete_crm(crm, ["C000007"])
    delete_local(erp, [9])
    delete_crm(crm, ["C000009"])  # both sides gone: nothing left to couple
    job = sync(env)
    assert (job["conflicts"], job["uncoupled"], job["deleted"]) == (2, 1, 0), job
    assert count(crm, "accounts") == 18  # nothing propagated under `skip`
    errors = {e["local_key"]: e for e in json.loads(env.cli("errors", "--json").stdout)}
    assert set(errors) == {"3", "7"}
    assert (errors["3"]["local_exists"], errors["3"]["integration_exists"], errors["3"]["reason"]) == (False, True, "deletion_conflict")
    assert (errors["7"]["local_exists"], errors["7"]["integration_exists"]) == (True, False)
    assert errors["3"]["message"].startswith("the local record 3 (erp customers) was deleted; the integration record")
    assert errors["3"]["message"].endswith("(crm accounts) still exists")
    assert sync(env)["conflicts"] == 0  # skipped couplings are not reported again


def test_delete_propagates_a_source_deletion_and_restore_recreates_a_deleted_target(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=20)
    with_strategy(env, "delete")
    env.start_worker()
    sync(env)
    delete_local(erp, [1, 2])
    job = sync(env)
    assert (job["deleted"], job["conflicts"]) == (2, 0)
    assert count(crm, "accounts") == 18 and count(crm, "accounts", "accountnumber IN ('C000001', 'C000002')") == 0

    with_strategy(env, "restore")
    delete_crm(crm, ["C000005"])
    job = sync(env)
    assert (job["inserted"], job["conflicts"]) == (1, 0), job
    assert count(crm, "accounts", "accountnumber = 'C000005'") == 1
    couplings = json.loads(env.cli("couplings", "CUSTOMER", "--local", "5", "--json").stdout)
    with crm.connect() as conn:
        new_key = conn.execute(sa.text("SELECT account_id::text FROM accounts WHERE accountnumber = 'C000005'")).scalar()
    assert couplings[0]["integration_key"] == new_key


def test_remove_coupling_forgets_the_pair(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=10)
    with_strategy(env, "remove_coupling")
    env.start_worker()
    sync(env)
    delete_crm(crm, ["C000004"])
    job = sync(env)
    assert (job["uncoupled"], job["conflicts"], job["inserted"]) == (1, 0, 0)
    assert json.loads(env.cli("couplings", "CUSTOMER", "--local", "4", "--json").stdout) == []
    with erp.begin() as conn:  # a later change to the uncoupled record is not synced
        conn.execute(sa.text("UPDATE customers SET name = 'Changed', modified_at = now() WHERE id = 4"))
    assert (sync(env)["inserted"], count(crm, "accounts")) == (0, 9)


def test_a_periodic_deletion_scan_runs_once_per_interval(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm, _, _ = setup_customer_sync(env, rows=5)
    path = env.tmp / "tablesync.yaml"
    path.write_text(path.read_text().replace("    fields:", "    deletion_scan: every 1h\n    fields:"))
    env.cli("config", "apply")
    env.start_worker()
    sync(env)  # the first job scans (and finds nothing)
    delete_crm(crm, ["C000001"])
    assert sync(env)["conflicts"] == 0  # within the hour: no scan
    assert sync(env, "CUSTOMER", "--full")["conflicts"] == 1  # a full run always scans
