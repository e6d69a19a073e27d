"""sync.deletions: the scan finds a deleted record whether or not its counterpart changed, and
`on_deletion_conflict` settles it."""

from __future__ import annotations

import sqlalchemy as sa

from tests.unit.sync.conftest import Rig


def _two_synced(rig: Rig, **overrides: object) -> object:
    rig.add_customers({"id": 1, "name": "A", "email": "a@x.dk", "city": "Aarhus"}, {"id": 2, "name": "B", "email": "b@x.dk", "city": "Oslo"})
    stored = rig.mapping(**overrides)
    assert rig.run(stored).inserted == 2
    return stored


def test_skip_lists_a_deleted_target_record_as_a_deletion_conflict(rig: Rig) -> None:
    stored = _two_synced(rig)
    with rig.crm.begin() as conn:
        conn.execute(sa.text("DELETE FROM accounts WHERE account_id = 2"))
    run = rig.run(stored)
    assert run.conflicts == 1
    assert rig.scalar("SELECT skip_reason FROM couplings WHERE local_key = '2'") == "deletion_conflict"
    assert "the integration record 2 (crm accounts) was deleted" in rig.scalar("SELECT message FROM job_errors")


def test_delete_propagates_a_source_deletion_and_restore_recreates_a_deleted_target(rig: Rig) -> None:
    stored = _two_synced(rig, on_deletion_conflict="delete")
    with rig.erp.begin() as conn:
        conn.execute(sa.text("DELETE FROM customers WHERE id = 1"))
    assert rig.run(stored).deleted == 1
    assert [r["name"] for r in rig.rows(rig.crm, "accounts", "account_id")] == ["B"]
    assert rig.scalar("SELECT count(*) FROM couplings") == 1

    restoring = rig.mapping(on_deletion_conflict="restore")
    with rig.crm.begin() as conn:
        conn.execute(sa.text("DELETE FROM accounts"))
    run = rig.run(restoring)
    assert run.inserted == 1 and [r["name"] for r in rig.rows(rig.crm, "accounts", "account_id")] == ["B"]
    assert rig.scalar("SELECT state || ',' || last_result FROM couplings") == "synced,success"
