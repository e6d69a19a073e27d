"""sync.two_way and sync.merge together: new records go each way, edits of different fields merge
both ways without ping-pong, and edits of one field in both apps are an update conflict."""

from __future__ import annotations

from tests.unit.sync.conftest import Rig

TWO_WAY = {"direction": "bidirectional"}


def test_records_go_both_ways_and_different_fields_merge_without_ping_pong(rig: Rig) -> None:
    rig.add_customers({"id": 1, "name": "Anna", "email": "anna@x.dk", "city": "Aarhus"})
    stored = rig.mapping(**TWO_WAY)
    assert rig.run(stored).inserted == 1
    with rig.crm.begin() as conn:
        conn.exec_driver_sql("INSERT INTO accounts (name, email, city) VALUES ('Bo', 'bo@x.dk', 'Oslo')")
    assert rig.run(stored).inserted == 1
    assert [r["name"] for r in rig.rows(rig.erp, "customers", "id")] == ["Anna", "Bo"]

    rig.edit(rig.erp, "customers", "id", 1, city="Odense")
    rig.edit(rig.crm, "accounts", "account_id", 1, email="anna@crm.dk")
    merged = rig.run(stored)
    assert (merged.modified, merged.conflicts) == (2, 0)
    erp = rig.rows(rig.erp, "customers", "id")[0]
    crm = rig.rows(rig.crm, "accounts", "account_id")[0]
    assert (erp["city"], erp["email"]) == (crm["city"], crm["email"]) == ("Odense", "anna@crm.dk")
    quiet = rig.run(stored, full=True)
    assert (quiet.modified, quiet.inserted, quiet.unchanged) == (0, 0, 2)


def test_one_field_changed_in_both_apps_is_an_update_conflict_until_an_operator_acts(rig: Rig) -> None:
    rig.add_customers({"id": 1, "name": "Anna", "email": "anna@x.dk", "city": "Aarhus"})
    stored = rig.mapping(**TWO_WAY)
    rig.run(stored)
    rig.edit(rig.erp, "customers", "id", 1, city="Odense")
    rig.edit(rig.crm, "accounts", "account_id", 1, city="Oslo", name="Anna B")
    run = rig.run(stored)
    assert (run.conflicts, run.modified) == (1, 1)  # the name still merges; the city waits
    assert rig.rows(rig.erp, "customers", "id")[0]["name"] == "Anna B"
    assert rig.scalar("SELECT skip_reason FROM couplings") == "update_conflict"
    assert "city: local 'Odense' ≠ integration city 'Oslo'" in rig.scalar("SELECT message FROM job_errors")
    assert rig.run(stored, full=True).skipped == 1
