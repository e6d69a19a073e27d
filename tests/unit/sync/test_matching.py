"""sync.matching: match_on couples a new record to its one uncoupled counterpart instead of
inserting a duplicate, and refuses to guess between several."""

from __future__ import annotations

import sqlalchemy as sa

from tests.unit.sync.conftest import Rig


def test_match_on_couples_existing_records_and_an_ambiguous_one_fails_naming_the_candidates(rig: Rig) -> None:
    with rig.crm.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts (name, email, city) VALUES ('Anna', 'ANNA@x.dk', 'Aarhus'), "
                             "('Bo', 'bo1@x.dk', 'Oslo'), ('Bo', 'bo2@x.dk', 'Oslo')"))
    rig.add_customers({"id": 1, "name": "Anna", "email": "anna@x.dk", "city": "Odense"},
                      {"id": 2, "name": "Bo", "email": None, "city": "Oslo"},
                      {"id": 3, "name": "Cai", "email": "cai@x.dk", "city": "Oslo"})
    stored = rig.mapping(match_on=["name"])
    run = rig.run(stored)
    assert (run.coupled, run.inserted, run.failed) == (1, 1, 1)
    accounts = rig.rows(rig.crm, "accounts", "account_id")
    assert [(a["name"], a["city"]) for a in accounts] == [("Anna", "Odense"), ("Bo", "Oslo"), ("Bo", "Oslo"), ("Cai", "Oslo")]
    assert rig.scalar("SELECT integration_key FROM couplings WHERE local_key = '1'") == "1"
    message = rig.scalar("SELECT message FROM job_errors WHERE source_key = '2'")
    assert message.startswith("match_on (name) is ambiguous: 2 uncoupled integration records match (2, 3)")


def test_the_match_action_couples_by_the_same_rule(rig: Rig) -> None:
    from tablesync.sync import run as engine

    with rig.crm.begin() as conn:
        conn.execute(sa.text("INSERT INTO accounts (name, email, city) VALUES ('Anna', 'anna@x.dk', 'Aarhus'), "
                             "('Bo', 'b1@x.dk', 'Oslo'), ('Bo', 'b2@x.dk', 'Oslo')"))
    rig.add_customers({"id": 1, "name": "anna", "email": "anna@x.dk", "city": "Aarhus"}, {"id": 2, "name": "Bo", "email": None, "city": "X"},
                      {"id": 3, "name": "Nobody", "email": None, "city": "X"})
    stored = rig.mapping(match_on=["email"])
    counters, summary = engine.act(rig.store, rig.settings, stored, rig.job(kind="match"), "match", {})
    assert summary == "coupled 1, unmatched 2, ambiguous 0" and counters.coupled == 1
    stored = rig.mapping(match_on=["name"])
    _, summary = engine.act(rig.store, rig.settings, stored, rig.job(kind="match"), "match", {})
    assert summary == "coupled 0, unmatched 1, ambiguous 1"  # Bo: two candidates; anna: already coupled
