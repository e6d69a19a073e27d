"""Bidirectional mappings on PostgreSQL: inserts both ways, field-level merge, update conflicts,
deletions both ways, and no ping-pong. The apps stamp modified-on themselves, by trigger, as real ones do."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from tests.integration.helpers import count, sync

pytestmark = pytest.mark.integration

CONFIG = """\
apps:
  erp: {{url: "${{ERP_DATABASE_URL}}"}}
  crm: {{url: "${{CRM_DATABASE_URL}}"}}
mappings:
  - name: CUSTOMER
    local:       {{app: erp, table: customers, key: id, modified: modified_at{local_extra}}}
    integration: {{app: crm, table: accounts, key: account_id, modified: modifiedon{integ_extra}}}
    direction: bidirectional
    schedule: "every 1h"
    on_update_conflict: {update}
    on_deletion_conflict: {delete}
    fields:
      - {{local: name, integration: name}}
      - {{local: city, integration: address1_city}}
      - {{local: phone, integration: telephone1}}
      - {{local: email, integration: emailaddress1, direction: to_integration, transform: lower}}
      - {{local: rating, integration: rating, direction: from_integration}}
      - {{integration: customertypecode, constant: 3, direction: to_integration}}
"""

STAMP = """
CREATE FUNCTION stamp_{col}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.{col} := clock_timestamp(); RETURN NEW; END $$;
CREATE TRIGGER stamp BEFORE INSERT OR UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION stamp_{col}();
"""


def configure(env: Any, update: str = "skip", delete: str = "skip", local_extra: str = "", integ_extra: str = "") -> None:
    (env.tmp / "tablesync.yaml").write_text(CONFIG.format(update=update, delete=delete, local_extra=local_extra,
                                                          integ_extra=integ_extra))
    env.cli("config", "apply")


def setup(env: Any, erp_rows: int = 5, crm_rows: int = 3, **strategies: str) -> tuple[sa.Engine, sa.Engine]:
    erp, crm = sa.create_engine(env.erp_url), sa.create_engine(env.crm_url)
    with erp.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, city text, phone text, "
                             "email text, rating text, modified_at timestamptz NOT NULL DEFAULT now())"))
        conn.execute(sa.text(STAMP.format(col="modified_at", table="customers")))
        for i in range(1, erp_rows + 1):
            conn.execute(sa.text("INSERT INTO customers (name, city, phone, email) VALUES (:n, 'Oslo', :p, :e)"),
                         {"n": f"ERP {i}", "p": f"+47 {i}", "e": f"Erp{i}@Example.com"})
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (account_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, "
                             "address1_city text, telephone1 text, emailaddress1 text, rating text, "
                             "customertypecode int NOT NULL DEFAULT 1, modifiedon timestamptz NOT NULL DEFAULT now())"))
        conn.execute(sa.text(STAMP.format(col="modifiedon", table="accounts")))
        for i in range(1, crm_rows + 1):
            conn.execute(sa.text("INSERT INTO accounts (name, address1_city, telephone1, rating) VALUES (:n, 'Bergen', :p, 'A')"),
                         {"n": f"CRM {i}", "p": f"+47 9{i}"})
    configure(env, **strategies)
    return erp, crm


def rows(engine: sa.Engine, sql: str) -> dict[str, tuple[Any, ...]]:
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(sa.text(sql))}


def local_view(erp: sa.Engine) -> dict[str, tuple[Any, ...]]:
    return rows(erp, "SELECT name, city, phone FROM customers")


def crm_view(crm: sa.Engine) -> dict[str, tuple[Any, ...]]:
    return rows(crm, "SELECT name, address1_city, telephone1 FROM accounts")


def stamps(erp: sa.Engine, crm: sa.Engine) -> tuple[Any, Any]:
    """The latest modified-on of each app: moves whenever anything writes a row."""
    with erp.connect() as a, crm.connect() as b:
        return (a.execute(sa.text("SELECT max(modified_at) FROM customers")).scalar(),
                b.execute(sa.text("SELECT max(modifiedon) FROM accounts")).scalar())


def execute(engine: sa.Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql), params)


def assert_quiet(env: Any, erp: sa.Engine, crm: sa.Engine) -> None:
    """No ping-pong: a run without user changes writes nothing in either app."""
    before = stamps(erp, crm)
    job = sync(env)
    assert (job["status"], job["inserted"], job["modified"], job["deleted"], job["failed"]) == ("succeeded", 0, 0, 0, 0), job
    assert stamps(erp, crm) == before


def test_inserts_both_ways_then_merges_different_fields_both_ways_without_ping_pong(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm = setup(env)
    env.start_worker()
    job = sync(env)
    assert (job["status"], job["inserted"], job["failed"]) == ("succeeded", 8, 0), job["message"]
    assert local_view(erp) == crm_view(crm) and len(local_view(erp)) == 8
    assert rows(crm, "SELECT name, emailaddress1, customertypecode FROM accounts WHERE name = 'ERP 2'") == {"ERP 2": ("erp2@example.com", 3)}
    assert rows(erp, "SELECT name, rating FROM customers WHERE name LIKE 'CRM%'") == {f"CRM {i}": ("A",) for i in (1, 2, 3)}
    assert_quiet(env, erp, crm)  # the echo of every insert is recognised, in both apps

    execute(erp, "UPDATE customers SET city = 'Tromsø' WHERE name = 'ERP 1'")
    execute(crm, "UPDATE accounts SET telephone1 = '+47 111' WHERE name = 'ERP 1'")
    execute(crm, "UPDATE accounts SET rating = 'B', emailaddress1 = 'crm-edit@x.org' WHERE name = 'CRM 1'")
    job = sync(env)
    # ERP 1 written on both sides; CRM 1 in the ERP (rating) and in the CRM, where its record is now
    # looked at and gets the mapping's constant customertypecode.
    assert (job["modified"], job["conflicts"], job["failed"]) == (4, 0, 0), job
    assert rows(crm, "SELECT name, customertypecode FROM accounts WHERE name = 'CRM 1'") == {"CRM 1": (3,)}
    assert local_view(erp)["ERP 1"] == crm_view(crm)["ERP 1"] == ("Tromsø", "+47 111")
    assert rows(erp, "SELECT name, rating FROM customers WHERE name = 'CRM 1'") == {"CRM 1": ("B",)}
    # emailaddress1 flows from the ERP only: the CRM's edit stays until the ERP changes the email.
    assert rows(crm, "SELECT name, emailaddress1 FROM accounts WHERE name = 'CRM 1'") == {"CRM 1": ("crm-edit@x.org",)}
    log = json.loads(env.cli("couplings", "CUSTOMER", "--json").stdout)
    assert len(log) == 8
    assert_quiet(env, erp, crm)


def test_update_conflicts_under_each_strategy(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm = setup(env, erp_rows=4, crm_rows=0)
    env.start_worker()
    assert sync(env)["inserted"] == 4

    def conflict(name: str, crm_first: bool) -> None:
        edits = [(crm, f"UPDATE accounts SET address1_city = 'CRM city' WHERE name = '{name}'"),
                 (erp, f"UPDATE customers SET city = 'ERP city', phone = 'ERP phone' WHERE name = '{name}'")]
        for engine, sql in (edits if crm_first else edits[::-1]):
            execute(engine, sql)

    conflict("ERP 1", crm_first=True)
    job = sync(env)
    assert (job["conflicts"], job["modified"]) == (1, 1), job  # the phone merged; the city is held
    assert crm_view(crm)["ERP 1"] == ("CRM city", "ERP phone")
    assert local_view(erp)["ERP 1"] == ("ERP city", "ERP phone")
    [error] = json.loads(env.cli("errors", "--json").stdout)
    assert error["reason"] == "update_conflict" and error["local_exists"] and error["integration_exists"]
    assert "city: local 'ERP city' ≠ integration address1_city 'CRM city'" in error["message"]
    execute(erp, "UPDATE customers SET name = 'ERP 1 renamed' WHERE name = 'ERP 1'")
    assert sync(env)["skipped"] == 1 and "ERP 1" in crm_view(crm)  # a skipped record stays untouched

    for strategy, name, crm_first, winner in (("local_wins", "ERP 2", False, "ERP city"),
                                              ("integration_wins", "ERP 3", False, "CRM city"),
                                              ("newest_wins", "ERP 4", False, "CRM city")):
        configure(env, update=strategy)
        conflict(name, crm_first)
        job = sync(env)
        assert (job["conflicts"], job["modified"], job["failed"]) == (0, 2 if winner == "CRM city" else 1, 0), (strategy, job)
        assert local_view(erp)[name] == crm_view(crm)[name] == (winner, "ERP phone"), strategy
    assert_quiet(env, erp, crm)


@pytest.mark.parametrize("strategy", ["restore", "delete", "remove_coupling"])
def test_deletions_on_either_side(env, strategy: str) -> None:  # type: ignore[no-untyped-def]
    erp, crm = setup(env, erp_rows=3, crm_rows=3, delete=strategy)
    env.start_worker()
    assert sync(env)["inserted"] == 6
    execute(erp, "DELETE FROM customers WHERE name = 'CRM 1'")
    execute(crm, "DELETE FROM accounts WHERE name = 'ERP 1'")
    job = sync(env)
    assert job["status"] == "succeeded" and job["conflicts"] == 0, job
    if strategy == "restore":
        assert job["inserted"] == 2
        assert local_view(erp) == crm_view(crm) and len(local_view(erp)) == 6
    elif strategy == "delete":
        assert job["deleted"] == 2
        assert set(local_view(erp)) == set(crm_view(crm)) == {"ERP 2", "ERP 3", "CRM 2", "CRM 3"}
    else:
        assert job["uncoupled"] == 2
        assert "ERP 1" in local_view(erp) and "CRM 1" in crm_view(crm)  # survivors stay, uncoupled
        execute(erp, "UPDATE customers SET city = 'Moved' WHERE name = 'ERP 1'")
        assert sync(env)["inserted"] == 0  # ... and are never re-created on the other side
        assert "ERP 1" not in crm_view(crm)
    assert_quiet(env, erp, crm)


def test_a_changed_record_whose_counterpart_was_deleted_is_one_deletion_conflict_not_a_failure(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm = setup(env, erp_rows=3, crm_rows=1)
    env.start_worker()
    assert sync(env)["inserted"] == 4
    execute(crm, "DELETE FROM accounts WHERE name = 'ERP 3'")
    execute(erp, "UPDATE customers SET city = 'Moved' WHERE name = 'ERP 3'")  # read again by this run
    job = sync(env)
    assert (job["status"], job["conflicts"], job["failed"]) == ("succeeded", 1, 0), job
    errors = json.loads(env.cli("errors", "--json").stdout)
    assert [(e["reason"], e["integration_exists"]) for e in errors] == [("deletion_conflict", False)]
    job = sync(env)  # and the next run leaves it to the operator, quietly
    assert (job["conflicts"], job["failed"]) == (0, 0), job


def test_soft_delete_columns_delete_and_restore_by_flag(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm = setup(env, erp_rows=3, crm_rows=2)
    execute(erp, "ALTER TABLE customers ADD COLUMN is_deleted boolean NOT NULL DEFAULT false")
    execute(crm, "ALTER TABLE accounts ADD COLUMN deleted_at timestamptz")
    soft = {"local_extra": ", deleted: is_deleted", "integ_extra": ", deleted: deleted_at"}
    configure(env, delete="delete", **soft)
    env.start_worker()
    assert sync(env)["inserted"] == 5

    execute(erp, "UPDATE customers SET is_deleted = true WHERE name = 'ERP 1'")
    execute(crm, "UPDATE accounts SET deleted_at = now() WHERE name = 'CRM 1'")
    job = sync(env)
    assert (job["deleted"], job["conflicts"], job["inserted"]) == (2, 0, 0), job
    # Deleting on a soft-delete side sets its mark; no row is removed.
    assert rows(crm, "SELECT name, deleted_at IS NOT NULL FROM accounts WHERE name IN ('ERP 1', 'CRM 1')") == {
        "ERP 1": (True,), "CRM 1": (True,)}
    assert rows(erp, "SELECT name, is_deleted FROM customers WHERE name IN ('ERP 1', 'CRM 1')") == {
        "ERP 1": (True,), "CRM 1": (True,)}
    assert count(erp, "customers") == count(crm, "accounts") == 5
    assert_quiet(env, erp, crm)

    configure(env, delete="restore", **soft)
    execute(crm, "UPDATE accounts SET deleted_at = now() WHERE name = 'ERP 2'")
    execute(erp, "UPDATE customers SET city = 'Narvik' WHERE name = 'ERP 2'")
    job = sync(env)
    assert (job["conflicts"], job["inserted"], job["failed"]) == (0, 0, 0), job
    # Restored by clearing the mark, then brought up to date in the same job.
    assert rows(crm, "SELECT name, deleted_at IS NULL, address1_city FROM accounts WHERE name = 'ERP 2'") == {"ERP 2": (True, "Narvik")}
    assert_quiet(env, erp, crm)


def test_a_write_refused_on_one_side_fails_the_record_alone_and_converges_after_the_fix(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm = setup(env, erp_rows=3, crm_rows=0)
    execute(crm, "ALTER TABLE accounts ADD CONSTRAINT no_atlantis CHECK (address1_city <> 'Atlantis')")
    env.start_worker()
    assert sync(env)["inserted"] == 3
    execute(erp, "UPDATE customers SET city = 'Atlantis' WHERE name IN ('ERP 1', 'ERP 2')")
    execute(erp, "UPDATE customers SET city = 'Bodø' WHERE name = 'ERP 3'")
    execute(crm, "UPDATE accounts SET telephone1 = '+47 555' WHERE name = 'ERP 1'")
    job = sync(env)
    # ERP 1: the phone lands in the ERP, the city is refused by the CRM; ERP 2 fails; ERP 3 lands.
    assert (job["failed"], job["modified"]) == (2, 2), job
    errors = json.loads(env.cli("job", str(job["id"]), "--json").stdout)["errors"]
    assert len(errors) == 2 and all("no_atlantis" in e["message"] for e in errors), errors
    assert local_view(erp)["ERP 1"] == ("Atlantis", "+47 555") and crm_view(crm)["ERP 1"] == ("Oslo", "+47 555")
    assert crm_view(crm)["ERP 3"] == ("Bodø", "+47 3")

    execute(erp, "UPDATE customers SET city = 'Atlantida' WHERE city = 'Atlantis'")
    job = sync(env)
    assert (job["failed"], job["modified"], job["conflicts"]) == (0, 2, 0), job
    assert local_view(erp) == crm_view(crm)
    assert_quiet(env, erp, crm)


def test_spec_example_config_checks_and_syncs_both_ways_without_ping_pong(env) -> None:  # type: ignore[no-untyped-def]
    """SPEC §3's own example, verbatim: `transform: upper` on a two-way field applies to_integration
    (its default transform_direction); the CRM's values travel back as they are."""
    from tests.conftest import ROOT

    erp, crm = sa.create_engine(env.erp_url), sa.create_engine(env.crm_url)
    with erp.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, "
                             "credit_limit numeric(12,2), country text, blocked boolean NOT NULL DEFAULT false, "
                             "modified_at timestamptz NOT NULL DEFAULT now())"))
        conn.execute(sa.text(STAMP.format(col="modified_at", table="customers")))
        conn.execute(sa.text("INSERT INTO customers (name, email, credit_limit, country, blocked) VALUES "
                             "('Ann', 'ann@x.org', 100, 'de', false), ('Bo', 'bo@x.org', 200, 'dk', false), "
                             "('Cy', 'cy@x.org', 300, 'no', true)"))
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (account_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL, "
                             "emailaddress1 text, creditlimit numeric(12,2), customertypecode int NOT NULL, country_code text, "
                             "modifiedon timestamptz NOT NULL DEFAULT now())"))
        conn.execute(sa.text(STAMP.format(col="modifiedon", table="accounts")))
        conn.execute(sa.text("INSERT INTO accounts (name, emailaddress1, customertypecode, country_code) VALUES "
                             "('Bo B', 'bo@x.org', 1, 'DK'), ('Dee', 'dee@x.org', 2, 'Fr')"))
    (env.tmp / "tablesync.yaml").write_text((ROOT / "tests" / "data" / "spec_example.yaml").read_text())
    assert "live tables checked" in env.cli("config", "check").stdout
    env.cli("config", "apply")
    env.start_worker()

    first = sync(env)
    assert first["status"] == "succeeded", first
    assert (first["inserted"], first["coupled"]) == (2, 1), first  # Ann → CRM, Dee → ERP; Bo coupled by email
    local = rows(erp, "SELECT email, name, country FROM customers")
    integ = rows(crm, "SELECT emailaddress1, name, country_code, customertypecode FROM accounts")
    assert integ["ann@x.org"] == ("Ann", "DE", 3)  # transformed on the way to the integration
    assert local["dee@x.org"] == ("Dee", "Fr")  # copied back as it is
    assert "cy@x.org" not in integ  # blocked: outside the local filter

    def quiet() -> None:
        job = sync(env)
        assert job["status"] == "succeeded" and job["inserted"] == job["modified"] == job["conflicts"] == 0, job

    quiet()  # no ping-pong: 'de' and 'DE', 'Fr' and 'Fr' are in agreement
    execute(crm, "UPDATE accounts SET country_code = 'it' WHERE emailaddress1 = 'dee@x.org'")
    execute(erp, "UPDATE customers SET country = 'is' WHERE email = 'ann@x.org'")
    job = sync(env)
    # Dee's 'it' to the ERP and, looked at again, the to_integration constant to the CRM; Ann's 'IS'
    assert (job["status"], job["modified"]) == ("succeeded", 3), job
    assert rows(erp, "SELECT email, country FROM customers")["dee@x.org"] == ("it",)
    integ = rows(crm, "SELECT emailaddress1, country_code, customertypecode FROM accounts")
    assert (integ["ann@x.org"], integ["dee@x.org"]) == (("IS", 3), ("it", 3))
    execute(erp, "UPDATE customers SET name = 'Ann A' WHERE email = 'ann@x.org'")  # another field of the pair
    job = sync(env)
    assert (job["status"], job["modified"]) == ("succeeded", 1), job
    assert rows(crm, "SELECT emailaddress1, name, country_code FROM accounts")["ann@x.org"] == ("Ann A", "IS")
    quiet()
