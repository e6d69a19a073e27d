"""sync.actions: an operator's action checks its preconditions on the live records, does its own
step, then syncs the records through the ordinary stages."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from tablesync.errors import ActionRefused
from tablesync.sync import run as engine
from tests.unit.sync.conftest import Rig


def _conflict(rig: Rig) -> tuple[object, int]:
    rig.add_customers({"id": 1, "name": "Anna", "email": "anna@x.dk", "city": "Aarhus"})
    stored = rig.mapping(direction="bidirectional")
    rig.run(stored)
    rig.edit(rig.erp, "customers", "id", 1, city="Odense")
    rig.edit(rig.crm, "accounts", "account_id", 1, city="Oslo")
    assert rig.run(stored).conflicts == 1
    return stored, int(rig.scalar("SELECT id FROM couplings"))


def test_resolve_makes_the_chosen_side_win_and_clears_the_conflict(rig: Rig) -> None:
    stored, coupling = _conflict(rig)
    counters, _ = engine.act(rig.store, rig.settings, stored, rig.job(kind="resolve"), "resolve", {"couplings": [coupling], "use": "integration"})
    assert counters.modified == 1
    assert rig.rows(rig.erp, "customers", "id")[0]["city"] == "Oslo"
    assert rig.scalar("SELECT skipped FROM couplings") == 0
    assert rig.run(stored, full=True).unchanged == 1


def test_uncouple_leaves_a_tombstone_and_couple_refuses_a_coupled_record(rig: Rig) -> None:
    stored, coupling = _conflict(rig)
    engine.act(rig.store, rig.settings, stored, rig.job(kind="uncouple"), "uncouple", {"couplings": [coupling]})
    assert rig.scalar("SELECT state FROM couplings") == "uncoupled"
    assert rig.run(stored, full=True).inserted == 0  # neither record is copied again
    with rig.crm.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts (name, email, city) VALUES ('Anna 2', 'a2@x.dk', 'Oslo')"))
    rig.run(rig.mapping(), full=True)  # one-way now: nothing to insert, the tombstone holds
    engine.act(rig.store, rig.settings, stored, rig.job(kind="couple"), "couple", {"local_key": "1", "integration_key": "1"})
    assert rig.scalar("SELECT state FROM couplings WHERE local_key = '1'") == "synced"
    with pytest.raises(ActionRefused, match="coupling .* already couples local 1 with integration 1"):
        engine.act(rig.store, rig.settings, stored, rig.job(kind="couple"), "couple", {"local_key": "1", "integration_key": "2"})


def test_a_refused_precondition_says_why_and_acts_on_the_rest(rig: Rig) -> None:
    stored, coupling = _conflict(rig)
    with pytest.raises(ActionRefused, match="coupling 999 does not exist in mapping CUSTOMER"):
        engine.act(rig.store, rig.settings, stored, rig.job(kind="retry"), "retry", {"couplings": [coupling, 999]})
    assert rig.scalar("SELECT skipped FROM couplings") == 0  # the existing one was retried
