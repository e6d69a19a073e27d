"""tablesync on a real public schema: Sakila, the MySQL original in MariaDB (`mysql`, the local ERP)
and its PostgreSQL port (`pg`, the integration), as issue 15 found them. Each finding has a test
here that fails without its fix; the mappings are those a user would reasonably write."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.integration.sakila import Sakila, mapping, side

SET_ORDER = ["Trailers", "Commentaries", "Deleted Scenes", "Behind the Scenes"]  # as film.special_features declares it


def customer_mapping(**extra: object) -> dict:
    return mapping("CUSTOMER", side("mysql", "customer", "customer_id", modified="last_update"),
                   side("pg", "customer", "customer_id", modified="last_update"),
                   [("first_name", "first_name"), ("last_name", "last_name"), ("email", "email"),
                    ("active", "activebool"), ("store_id", "store_id"), ("address_id", "address_id"),
                    {"local": "create_date", "integration": "create_date", "direction": "from_integration"}],
                   direction="bidirectional", match_on=["email"], **extra)


def film_mapping(**extra: object) -> dict:
    return mapping("FILM", side("mysql", "film", "film_id", modified="last_update"),
                   side("pg", "film", "film_id", modified="last_update"),
                   [("title", "title"), ("description", "description"), ("release_year", "release_year"),
                    ("language_id", "language_id"), ("rental_duration", "rental_duration"), ("rental_rate", "rental_rate"),
                    ("length", "length"), ("replacement_cost", "replacement_cost"), ("rating", "rating"),
                    ("special_features", "special_features")],
                   match_on=["title"], **extra)


def test_mysql_boolean_maps_onto_a_postgresql_boolean_both_ways(sakila: Sakila) -> None:
    """Finding 1: MySQL's BOOLEAN is tinyint(1); it maps onto boolean without a transform, reads
    as a boolean (no false change against the other side) and writes back as 0/1."""
    assert sakila.errors(customer_mapping()) == []
    # create_date flows from the CRM's date: make the ERP's datetimes agree, so that only booleans could differ
    sakila.execute(sakila.mysql, "UPDATE customer SET create_date = DATE(create_date)")
    first = sakila.run(customer_mapping())
    assert (first.coupled, first.inserted, first.failed) == (599, 0, 0), sakila.job_errors()
    assert sakila.run(customer_mapping()).modified == 0  # equal on both sides: nothing to write

    sakila.execute(sakila.mysql, "UPDATE customer SET active = 0, last_update = NOW() WHERE customer_id = 5")
    sakila.execute(sakila.pg, "UPDATE customer SET activebool = false WHERE customer_id = 7")
    run = sakila.run(customer_mapping())
    assert (run.modified, run.failed) == (2, 0), sakila.job_errors()
    assert sakila.rows(sakila.pg, "SELECT activebool FROM customer WHERE customer_id = 5") == [(False,)]
    assert sakila.rows(sakila.mysql, "SELECT active FROM customer WHERE customer_id = 7") == [(0,)]
    assert sakila.run(customer_mapping()).modified == 0  # the writes came back as echoes


def test_new_records_take_keys_from_an_unowned_sequence_and_from_auto_increment(sakila: Sakila) -> None:
    """Finding 2: the PostgreSQL port's keys default to nextval() of a sequence the column does
    not own (pg_get_serial_sequence() is NULL); MariaDB's come from AUTO_INCREMENT."""
    assert sakila.rows(sakila.pg, "SELECT pg_get_serial_sequence('customer', 'customer_id')") == [(None,)]
    sakila.run(customer_mapping())
    sakila.execute(sakila.mysql, "INSERT INTO customer (store_id, first_name, last_name, email, address_id, active, create_date) "
                                 "VALUES (1, 'ADA', 'LOVELACE', 'ada@example.org', 5, 1, CURDATE())")
    sakila.execute(sakila.pg, "INSERT INTO customer (store_id, first_name, last_name, email, address_id, activebool) "
                              "VALUES (2, 'ALAN', 'TURING', 'alan@example.org', 6, false)")
    run = sakila.run(customer_mapping())
    assert (run.inserted, run.failed) == (2, 0), sakila.job_errors()
    # Ada took 600 from MariaDB's AUTO_INCREMENT, Alan 600 from the CRM's sequence; each copy takes the next
    ada = sakila.rows(sakila.pg, "SELECT customer_id, first_name, activebool FROM customer WHERE email = 'ada@example.org'")
    assert ada == [(601, "ADA", True)]
    alan = sakila.rows(sakila.mysql, "SELECT customer_id, first_name, active FROM customer WHERE email = 'alan@example.org'")
    assert alan == [(601, "ALAN", 0)]
    assert {("600", "601"), ("601", "600")} <= set(sakila.couplings("CUSTOMER"))
    # Sakila's own trigger customer_create_date set Ada's create_date to NOW() in the ERP; the field
    # flows from the CRM, whose date now comes back once. Then nothing moves.
    assert sakila.run(customer_mapping()).modified == 1
    assert sakila.run(customer_mapping()).modified == 0


def test_identity_keys_and_a_default_nothing_can_evaluate(sakila: Sakila) -> None:
    """Finding 2, the other forms: an identity column makes the key; a key whose default cannot
    key new records is refused by `config check`, not discovered by a failing job."""
    sakila.execute(sakila.pg, "CREATE TABLE crm_actor (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                              "first_name text NOT NULL, last_name text NOT NULL)")
    sakila.execute(sakila.pg, "CREATE TABLE crm_actor_fixed (id integer PRIMARY KEY DEFAULT 0, first_name text NOT NULL, "
                              "last_name text NOT NULL)")
    sakila.execute(sakila.pg, "CREATE FUNCTION no_key() RETURNS integer LANGUAGE plpgsql AS "
                              "$$ BEGIN RAISE EXCEPTION 'keys are issued by the billing system'; END $$")
    sakila.execute(sakila.pg, "CREATE TABLE crm_actor_remote (id integer PRIMARY KEY DEFAULT no_key(), first_name text NOT NULL, "
                              "last_name text NOT NULL)")

    def actors(table: str) -> dict:
        return mapping("ACTOR", side("mysql", "actor", "actor_id"), side("pg", table, "id"),
                       [("first_name", "first_name"), ("last_name", "last_name")])

    assert sakila.errors(actors("crm_actor")) == []
    run = sakila.run(actors("crm_actor"))
    assert (run.inserted, run.failed) == (200, 0), sakila.job_errors()
    assert sakila.rows(sakila.pg, "SELECT min(id), max(id) FROM crm_actor") == [(1, 200)]

    fixed = sakila.errors(actors("crm_actor_fixed"))
    assert len(fixed) == 1 and "key 'id'" in fixed[0] and "same value" in fixed[0] and "0" in fixed[0], fixed
    remote = sakila.errors(actors("crm_actor_remote"))
    assert len(remote) == 1 and "no_key()" in remote[0] and "keys are issued by the billing system" in remote[0], remote


def test_a_not_null_column_a_trigger_fills_is_a_warning_naming_the_trigger(sakila: Sakila) -> None:
    """Finding 3: film.fulltext is NOT NULL with no default; a BEFORE INSERT trigger fills it."""
    problems = sakila.check(film_mapping())
    assert [p for p in problems if p.severity == "error"] == []
    warnings = [str(p) for p in problems if p.severity == "warning" and "trigger" in p.message]
    assert len(warnings) == 1 and "fulltext" in warnings[0] and "film_fulltext_trigger" in warnings[0], warnings
    # and the one type warning: MySQL's length is smallint unsigned, the port's a signed smallint
    assert [p.message for p in problems if p.severity == "warning" and "trigger" not in p.message] == [
        "to integration: length holds -32768..32767, length 0..65535: a value outside fails its record"]

    # a NOT NULL column that no trigger mentions stays refused
    sakila.execute(sakila.pg, "ALTER TABLE film ADD COLUMN sku text")
    sakila.execute(sakila.pg, "UPDATE film SET sku = 'F' || film_id")
    sakila.execute(sakila.pg, "ALTER TABLE film ALTER COLUMN sku SET NOT NULL")
    errors = sakila.errors(film_mapping())
    assert len(errors) == 1 and "'sku' is NOT NULL" in errors[0], errors


def test_set_enum_year_and_datetime_map_without_a_transform(sakila: Sakila) -> None:
    """Finding 4: SET → text[] keeps the SET's declared order, every run and every process; ENUM →
    a PostgreSQL enum, YEAR → an integer domain; a new film gets its fulltext from the trigger."""
    assert sakila.errors(film_mapping()) == []
    sakila.execute(sakila.pg, "UPDATE film SET special_features = ARRAY['Behind the Scenes', 'Trailers'] WHERE film_id = 3")
    first = sakila.run(film_mapping())
    assert (first.coupled, first.failed) == (1000, 0), sakila.job_errors()
    # film 3's features, reordered in the CRM, are back in declared order (a matched record is updated)
    assert sakila.rows(sakila.pg, "SELECT special_features FROM film WHERE film_id = 3") == [(["Trailers", "Deleted Scenes"],)]
    mysql = dict(sakila.rows(sakila.mysql, "SELECT film_id, special_features FROM film"))
    pg = dict(sakila.rows(sakila.pg, "SELECT film_id, special_features FROM film"))
    assert all(pg[k] == [f for f in SET_ORDER if f in (v or "").split(",")] or (v is None and pg[k] is None) for k, v in mysql.items())

    sakila.execute(sakila.mysql, "INSERT INTO film (title, description, release_year, language_id, rating, special_features) "
                                 "VALUES ('ZEN GARDEN', 'A calm film', 2006, 1, 'NC-17', 'Behind the Scenes,Deleted Scenes,Trailers')")
    run = sakila.run(film_mapping())
    assert (run.inserted, run.failed) == (1, 0), sakila.job_errors()
    row = sakila.rows(sakila.pg, "SELECT film_id, release_year, rating::text, special_features, fulltext IS NOT NULL "
                                 "FROM film WHERE title = 'ZEN GARDEN'")
    assert row == [(1001, 2006, "NC-17", ["Trailers", "Deleted Scenes", "Behind the Scenes"], True)]
    assert sakila.run(film_mapping(), full=True).modified == 0


@pytest.mark.parametrize("pg_type", ["timestamp", "timestamptz"])
def test_datetime_maps_onto_timestamp_with_and_without_time_zone(sakila: Sakila, pg_type: str) -> None:
    sakila.execute(sakila.pg, f"CREATE TABLE crm_rental (rental_id integer PRIMARY KEY, rental_date {pg_type} NOT NULL, "
                              f"return_date {pg_type})")
    rentals = mapping("RENTAL", side("mysql", "rental", "rental_id"), side("pg", "crm_rental", "rental_id"),
                      [("rental_id", "rental_id"), ("rental_date", "rental_date"), ("return_date", "return_date")])
    assert sakila.errors(rentals) == []
    run = sakila.run(rentals)
    assert (run.inserted, run.failed) == (16044, 0), sakila.job_errors()
    zone = " AT TIME ZONE 'UTC'" if pg_type == "timestamptz" else ""
    got = sakila.rows(sakila.pg, f"SELECT rental_date{zone}, return_date{zone} FROM crm_rental WHERE rental_id = 1")
    assert got == sakila.rows(sakila.mysql, "SELECT rental_date, return_date FROM rental WHERE rental_id = 1")
    assert sakila.run(rentals, full=True).modified == 0


def actor_mapping(**extra: object) -> dict:
    return mapping("ACTOR", side("mysql", "actor", "actor_id", modified="last_update"),
                   side("pg", "actor", "actor_id", modified="last_update"),
                   [("actor_id", "actor_id"), ("first_name", "first_name"), ("last_name", "last_name")],
                   match_on=["actor_id"], **extra)


def test_a_delete_the_target_refuses_is_a_failed_record(sakila: Sakila) -> None:
    """Finding 7: the CRM's film_actor rows refuse the delete of their actor (ON DELETE RESTRICT).
    That record failed (a job error with the database's message), it is no conflict: retried by
    each scan, skipped after skip_after_failures with reason `failures`."""
    actors = actor_mapping(on_deletion_conflict="delete", skip_after_failures=2)
    assert sakila.run(actors).coupled == 200
    sakila.execute(sakila.mysql, "DELETE FROM film_actor WHERE actor_id IN (1, 2)")
    sakila.execute(sakila.mysql, "DELETE FROM actor WHERE actor_id IN (1, 2)")
    sakila.execute(sakila.pg, "DELETE FROM film_actor WHERE actor_id = 2")  # actor 2 has nothing left in the CRM
    run = sakila.run(actors)
    assert (run.deleted, run.failed, run.conflicts) == (1, 1, 0), sakila.job_errors()
    [error] = sakila.job_errors()
    assert "deleting the integration record 1 failed" in error and "film_actor" in error, error
    assert sakila.rows(sakila.pg, "SELECT actor_id FROM actor WHERE actor_id IN (1, 2)") == [(1,)]
    again = sakila.run(actors)
    assert (again.failed, again.conflicts) == (1, 0)
    with sakila.store.connect() as conn:
        skipped = conn.execute(sa.text("SELECT skipped, skip_reason, failures FROM couplings WHERE mapping = 'ACTOR' "
                                       "AND local_key = '1'")).one()
    assert tuple(skipped) == (True, "failures", 2)
    assert sakila.run(actors).failed == 0  # skipped: left to an operator (Delete records, once film_actor allows)


def names_mapping(**extra: object) -> dict:
    return {**mapping("ACTOR", side("mysql", "actor", "actor_id", modified="last_update"),
                      side("pg", "actor", "actor_id", modified="last_update"),
                      [("first_name", "first_name"), ("last_name", "last_name")],
                      direction="bidirectional", match_on=["first_name", "last_name"]), **extra}


def test_an_ambiguous_match_on_either_side_creates_nothing_on_either_side(sakila: Sakila) -> None:
    """Finding 5: SUSAN DAVIS is actor 101 and 110 on both sides. The local pass reports the
    ambiguity; the integration pass must not then copy the two CRM records into the ERP."""
    first = sakila.run(names_mapping(skip_after_failures=5))
    assert (first.coupled, first.inserted, first.failed) == (198, 0, 4), sakila.job_errors()
    errors = sakila.job_errors()
    assert any("2 uncoupled integration records match (101, 110)" in e for e in errors), errors
    assert any("2 uncoupled local records match (101, 110)" in e for e in errors), errors
    for _ in range(2):  # the failed records are retried each run, and stay ambiguous
        again = sakila.run(names_mapping(skip_after_failures=5))
        assert (again.inserted, again.coupled) == (0, 0)
    assert sakila.rows(sakila.mysql, "SELECT count(*) FROM actor") == [(200,)]
    assert sakila.rows(sakila.pg, "SELECT count(*) FROM actor") == [(200,)]

    # one SUSAN DAVIS renamed in the CRM: each side now has one candidate left for the other
    sakila.execute(sakila.pg, "UPDATE actor SET first_name = 'SUSAN B' WHERE actor_id = 110")
    sakila.execute(sakila.mysql, "UPDATE actor SET first_name = 'SUSAN B', last_update = NOW() WHERE actor_id = 110")
    run = sakila.run(names_mapping(skip_after_failures=5))
    assert (run.inserted, run.failed, run.coupled) == (0, 0, 2), sakila.job_errors()
    assert {("101", "101"), ("110", "110")} <= set(sakila.couplings("ACTOR"))
    assert len(sakila.couplings("ACTOR")) == 200  # the records' own failure couplings were folded into the pairs


def test_two_source_records_matching_one_target_record_are_ambiguous_too(sakila: Sakila) -> None:
    sakila.execute(sakila.pg, "DELETE FROM film_actor WHERE actor_id = 110")
    sakila.execute(sakila.pg, "DELETE FROM actor WHERE actor_id = 110")
    one_way = names_mapping(direction="to_integration")
    run = sakila.run(one_way)
    assert (run.coupled, run.inserted, run.failed) == (198, 0, 2), sakila.job_errors()
    assert all("also matches the local record(s)" in e for e in sakila.job_errors())
    assert sakila.rows(sakila.pg, "SELECT count(*) FROM actor WHERE first_name = 'SUSAN' AND last_name = 'DAVIS'") == [(1,)]


def test_the_match_action_matches_from_both_sides_of_a_bidirectional_mapping(sakila: Sakila) -> None:
    """The local pass sees only the local records inside its filter; the integration pass then
    couples the CRM records whose ERP counterparts it left out, as a run would."""
    from tablesync.sync import run as engine

    mapping = names_mapping(local=side("mysql", "actor", "actor_id", modified="last_update", filter="actor_id <= 150"))
    stored = sakila.stored(mapping)
    with sakila.store.begin() as conn:
        job = __import__("tablesync.store.jobs", fromlist=["create_job"]).create_job(conn, "ACTOR", "match")
    counters, summary = engine.act(sakila.store, sakila.settings, stored, job, "match", {})
    assert counters.coupled == 198 and summary == "coupled 198, unmatched 0, ambiguous 4", summary
    couplings = sakila.couplings("ACTOR")
    assert ("200", "200") in couplings and ("150", "150") in couplings and not any("101" in c for c in couplings)


def film_actor_mapping(**extra: object) -> dict:
    return mapping("FILM_ACTOR", side("mysql", "film_actor", ["actor_id", "film_id"], modified="last_update"),
                   side("pg", "film_actor", ["actor_id", "film_id"], modified="last_update"),
                   [{"local": "actor_id", "integration": "actor_id", "parent": "ACTOR"},
                    {"local": "film_id", "integration": "film_id", "parent": "FILM"}],
                   **{"depends_on": ["ACTOR", "FILM"], "on_deletion_conflict": "delete", **extra})


def test_the_link_table_film_actor_syncs_by_its_composite_key(sakila: Sakila) -> None:
    """Finding 6: `key: [actor_id, film_id]` on both sides. The first run takes the bulk path
    (the CRM's link table is empty), parents translate each part, deletions are found by an
    anti-join on the key tuple, and a record's key is one string: ["1","23"]."""
    sakila.run(actor_mapping())
    sakila.run(film_mapping())
    sakila.execute(sakila.pg, "DELETE FROM film_actor")
    deps = (actor_mapping(), film_mapping())
    assert sakila.errors(film_actor_mapping(), *deps) == []
    first = sakila.run(film_actor_mapping(), *deps)
    assert (first.inserted, first.failed) == (5462, 0), sakila.job_errors()
    assert sakila.rows(sakila.pg, "SELECT count(*) FROM film_actor") == [(5462,)]
    assert ('["1","1"]', '["1","1"]') in sakila.couplings("FILM_ACTOR")
    with sakila.store.connect() as conn:  # the bulk path landed them: a staged batch, not one intent per row
        assert conn.execute(sa.text("SELECT count(*) FROM couplings WHERE mapping = 'FILM_ACTOR' AND inserted_by_job IS NOT NULL")
                            ).scalar() == 5462

    sakila.execute(sakila.mysql, "DELETE FROM film_actor WHERE actor_id = 1 AND film_id IN (1, 23)")
    sakila.execute(sakila.mysql, "INSERT INTO film_actor (actor_id, film_id) VALUES (1, 2), (200, 1000)")
    run = sakila.run(film_actor_mapping(), *deps)
    assert (run.inserted, run.deleted, run.failed) == (2, 2, 0), sakila.job_errors()
    assert sakila.rows(sakila.pg, "SELECT actor_id, film_id FROM film_actor WHERE actor_id = 1 AND film_id IN (1, 2, 23) "
                                  "ORDER BY film_id") == [(1, 2)]
    assert sakila.run(film_actor_mapping(), *deps, full=True).modified == 0
    assert sakila.rows(sakila.pg, "SELECT count(*) FROM film_actor") == sakila.rows(sakila.mysql, "SELECT count(*) FROM film_actor")


def test_composite_keys_in_operator_actions_and_reads(sakila: Sakila) -> None:
    """An operator names a composite record by its JSON array, typed loosely or exactly."""
    from tablesync.console import views
    from tablesync.errors import UsageError
    from tablesync.store.jobs import create_job
    from tablesync.store.mappings import apply_config
    from tablesync.sync import run as engine

    deps = (actor_mapping(), film_mapping())
    apply_config(sakila.store, sakila.config(film_actor_mapping(), *deps), applied_by="test")
    sakila.run(actor_mapping())
    sakila.run(film_mapping())
    sakila.execute(sakila.pg, "DELETE FROM film_actor WHERE actor_id = 1")
    stored = sakila.stored(film_actor_mapping(), *deps)

    def act(kind: str, **params: object) -> tuple:
        with sakila.store.begin() as conn:
            job = create_job(conn, "FILM_ACTOR", kind)
            params = {k: views.record_key(conn, "FILM_ACTOR", "local" if k != "integration_key" else "integration", str(v))
                      if k.endswith("key") or k == "record" else v for k, v in params.items()}
        return engine.act(sakila.store, sakila.settings, stored, job, kind, params)

    with sakila.store.connect() as conn:
        assert views.record_key(conn, "FILM_ACTOR", "local", '[1, 23]') == '["1","23"]'
        with pytest.raises(UsageError, match=r"not a key of 2 columns.*\[\"1\",\"2\"\]"):
            views.record_key(conn, "FILM_ACTOR", "local", "1")
    counters, _ = act("couple", local_key='[2, 3]', integration_key='["2","3"]', use=None)
    assert counters.coupled == 1
    with sakila.store.begin() as conn:
        job = create_job(conn, "FILM_ACTOR", "sync")
    one = engine.sync_one(sakila.store, sakila.settings, stored, job, '["1","23"]', "local")
    assert (one.inserted, one.failed) == (1, 0)
    assert sakila.rows(sakila.pg, "SELECT actor_id, film_id FROM film_actor WHERE actor_id = 1") == [(1, 23)]
    with sakila.store.connect() as conn:
        out, total = views.coupling_objects(conn, "FILM_ACTOR", local="[1,23]")
        assert total == 1 and out[0]["integration_key"] == '["1","23"]'
        log = views.log_objects(conn, "FILM_ACTOR", '[ 1, "23" ]', "local")
    assert [e["outcome"] for e in log] == ["inserted"]

    # deletion conflicts of composite records, settled by Restore records and Delete records
    skipping = sakila.stored(film_actor_mapping(on_deletion_conflict="skip"), *deps)
    sakila.run(film_actor_mapping(on_deletion_conflict="skip"), *deps)
    sakila.execute(sakila.pg, "DELETE FROM film_actor WHERE actor_id = 1 AND film_id = 23")
    sakila.execute(sakila.mysql, "DELETE FROM film_actor WHERE actor_id = 2 AND film_id = 3")
    run = sakila.run(film_actor_mapping(on_deletion_conflict="skip"), *deps)
    assert run.conflicts == 2, sakila.job_errors()
    with sakila.store.connect() as conn:
        ids = dict(conn.execute(sa.text("SELECT local_key, id FROM couplings WHERE mapping = 'FILM_ACTOR' AND skipped")).all())
    assert set(ids) == {'["1","23"]', '["2","3"]'}
    for kind, key in (("restore", '["1","23"]'), ("delete", '["2","3"]')):
        with sakila.store.begin() as conn:
            job = create_job(conn, "FILM_ACTOR", kind)
        counters, _ = engine.act(sakila.store, sakila.settings, skipping, job, kind, {"couplings": [ids[key]]})
        assert counters.failed == 0, sakila.job_errors()
    assert sakila.rows(sakila.pg, "SELECT count(*) FROM film_actor WHERE (actor_id, film_id) IN ((1, 23), (2, 3))") == [(1,)]
    assert sakila.rows(sakila.pg, "SELECT actor_id, film_id FROM film_actor WHERE actor_id = 1 AND film_id = 23") == [(1, 23)]


def test_composite_keys_into_mariadb_and_keys_the_target_makes_per_line(sakila: Sakila) -> None:
    """The other way round: the CRM's link table into MariaDB (row-value lookups, the keyset over
    two columns, deletions without PostgreSQL's anti-join). And a composite target key with a
    column no field writes: the insert returns it (an identity line number)."""
    reverse = film_actor_mapping(direction="from_integration", batch_size=1000)
    deps = (actor_mapping(), film_mapping())
    sakila.run(actor_mapping())
    sakila.run(film_mapping())
    # every pair already exists in MariaDB, under the same key: the bulk insert collides, and each
    # record is coupled to the row its key finds (not counted as inserted: nothing was)
    first = sakila.run(reverse, *deps)
    assert (first.coupled, first.inserted, first.failed) == (5462, 0, 0), sakila.job_errors()
    sakila.execute(sakila.pg, "TRUNCATE film_actor")
    sakila.run(reverse, *deps)
    assert sakila.rows(sakila.mysql, "SELECT count(*) FROM film_actor") == [(0,)]  # deletions flow with the mapping
    sakila.execute(sakila.pg, "INSERT INTO film_actor (actor_id, film_id) SELECT a, f FROM generate_series(1, 20) a, "
                              "generate_series(1, 30) f")
    run = sakila.run(reverse, *deps)  # pages of 1,000 over the two key columns
    assert (run.inserted, run.failed) == (600, 0), sakila.job_errors()
    sakila.execute(sakila.pg, "DELETE FROM film_actor WHERE actor_id = 1 AND film_id = 23")
    gone = sakila.run(reverse, *deps)
    assert gone.deleted == 1
    assert sakila.rows(sakila.mysql, "SELECT count(*) FROM film_actor WHERE actor_id = 1 AND film_id = 23") == [(0,)]

    sakila.execute(sakila.pg, "CREATE TABLE crm_cast (film_id integer NOT NULL, line_no integer GENERATED BY DEFAULT AS IDENTITY, "
                              "actor_name text NOT NULL, PRIMARY KEY (film_id, line_no))")
    cast = mapping("CAST", side("mysql", "film_actor", ["actor_id", "film_id"]), side("pg", "crm_cast", ["film_id", "line_no"]),
                   [{"local": "film_id", "integration": "film_id"}, {"local": "actor_id", "integration": "actor_name"}])
    assert sakila.errors(cast) == []
    made = sakila.run(cast)
    assert (made.inserted, made.failed) == (sakila.rows(sakila.mysql, "SELECT count(*) FROM film_actor")[0][0], 0), sakila.job_errors()
    some = sakila.couplings("CAST")[0]
    assert some[0].startswith('["') and some[1].startswith('["')
    assert sakila.run(cast, full=True).modified == 0


def address_mapping() -> dict:
    return mapping("ADDRESS", side("mysql", "address", "address_id", modified="last_update"),
                   side("pg", "address", "address_id", modified="last_update"),
                   [("address_id", "address_id"), ("address", "address"), ("address2", "address2"), ("district", "district"),
                    ("city_id", "city_id"), ("postal_code", "postal_code"), ("phone", "phone")],
                   match_on=["address_id"])


def rental_mapping() -> dict:
    return mapping("RENTAL", side("mysql", "rental", "rental_id", modified="last_update"),
                   side("pg", "rental", "rental_id", modified="last_update"),
                   [("rental_id", "rental_id"), ("rental_date", "rental_date"), ("inventory_id", "inventory_id"),
                    {"local": "customer_id", "integration": "customer_id", "parent": "CUSTOMER"},
                    ("return_date", "return_date"), ("staff_id", "staff_id")],
                   match_on=["rental_id"], depends_on=["CUSTOMER"])


def sakila_mappings() -> list[dict]:
    """What an integrator would write between the two: each mapping after those it depends on."""
    customers = customer_mapping(depends_on=["ADDRESS"])
    customers["fields"][5] = {"local": "address_id", "integration": "address_id", "parent": "ADDRESS"}
    return [address_mapping(), customers, actor_mapping(), film_mapping(), film_actor_mapping(), rental_mapping(),
            names_mapping(name="ACTOR_NAMES", match_on=["first_name", "last_name"],
                          integration=side("pg", "crm_actor", "id", modified="modified_at"))]


def test_the_whole_sakila_configures_without_skipping_the_live_check_syncs_exactly_and_converges(
        sakila: Sakila, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.integration.sakila import as_yaml

    sakila.execute(sakila.pg, "CREATE TABLE crm_actor (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, first_name text NOT NULL, "
                              "last_name text NOT NULL, modified_at timestamptz NOT NULL DEFAULT now())")
    sakila.execute(sakila.mysql, "UPDATE customer SET create_date = DATE(create_date)")  # as the CRM keeps it
    mappings = sakila_mappings()
    (tmp_path / "tablesync.yaml").write_text(as_yaml(*mappings))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("TABLESYNC_")}, "PYTHONPATH": str(ROOT),
           "MYSQL_URL": sakila.mysql_url, "PG_URL": sakila.pg_url, "TABLESYNC_CONFIG": str(tmp_path / "tablesync.yaml")}
    check = subprocess.run([sys.executable, "-m", "tablesync.console.cli", "config", "check"], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    assert "OK (7 mapping(s), 2 app(s), live tables checked, " in check.stdout, check.stdout
    warnings = check.stderr.strip().splitlines()
    assert len(warnings) == int(check.stdout.split("checked, ")[1].split(" ")[0]) and "film_fulltext_trigger" in check.stderr

    def run_all() -> dict[str, tuple[int, int, int]]:
        out = {}
        for m in mappings:
            c = sakila.run(m, *[o for o in mappings if o is not m])
            assert c.failed == 0 or m["name"] == "ACTOR_NAMES", (m["name"], sakila.job_errors()[:3])
            out[m["name"]] = (c.inserted, c.modified, c.deleted)
        return out

    run_all()
    sakila.execute(sakila.mysql, "INSERT INTO address (address, district, city_id, phone) VALUES ('1 Main St', 'North', 1, '555')")
    sakila.execute(sakila.mysql, "INSERT INTO customer (store_id, first_name, last_name, email, address_id, active, create_date) "
                                 "SELECT 1, 'ADA', 'LOVELACE', 'ada@example.org', max(address_id), 1, CURDATE() FROM address")
    sakila.execute(sakila.mysql, "UPDATE customer SET create_date = DATE(create_date) WHERE email = 'ada@example.org'")
    sakila.execute(sakila.pg, "UPDATE customer SET last_name = 'SMITH-JONES' WHERE customer_id = 1")
    sakila.execute(sakila.mysql, "INSERT INTO rental (rental_date, inventory_id, customer_id, staff_id) "
                                 "SELECT NOW(), 1, customer_id, 1 FROM customer WHERE email = 'ada@example.org'")
    sakila.execute(sakila.mysql, "UPDATE film SET rental_rate = 1.99, last_update = NOW() WHERE film_id = 10")
    sakila.execute(sakila.pg, "INSERT INTO crm_actor (first_name, last_name) VALUES ('GRACE', 'HOPPER')")
    changed = run_all()
    assert changed["ADDRESS"] == (1, 0, 0) and changed["RENTAL"] == (1, 0, 0) and changed["FILM"] == (0, 1, 0)
    assert changed["CUSTOMER"][:2] == (1, 1) and changed["ACTOR_NAMES"][0] == 1
    for _ in range(2):  # the CRM's own defaults (create_date) come back once; then nothing moves
        last = run_all()
    assert all(v == (0, 0, 0) for v in last.values()), last

    # exactly: every mapped value equal on both sides
    def same(sql_mysql: str, sql_pg: str) -> None:
        assert sorted(sakila.rows(sakila.mysql, sql_mysql)) == sorted(sakila.rows(sakila.pg, sql_pg))

    same("SELECT first_name, last_name, email, active = 1, address_id FROM customer",
         "SELECT c.first_name, c.last_name, c.email, c.activebool, c.address_id FROM customer c")
    same("SELECT address, district, city_id, phone FROM address", "SELECT address, district, city_id, phone FROM address")
    same("SELECT rental_id, rental_date, inventory_id, customer_id FROM rental",
         "SELECT rental_id, rental_date, inventory_id, customer_id FROM rental")
    same("SELECT actor_id, film_id FROM film_actor", "SELECT actor_id, film_id FROM film_actor")
    same("SELECT film_id, title, rental_rate FROM film", "SELECT film_id, title, rental_rate FROM film")
    same("SELECT first_name, last_name FROM actor", "SELECT first_name, last_name FROM crm_actor")  # Grace came across
    same("SELECT actor_id, first_name, last_name FROM actor", "SELECT actor_id, first_name, last_name FROM actor")


def test_the_bulk_first_run_copies_sets_enums_and_years(sakila: Sakila) -> None:
    """The first run into an empty table takes COPY: arrays, enums and years go through it too."""
    sakila.execute(sakila.pg, "CREATE TABLE crm_film (film_id integer PRIMARY KEY, title text NOT NULL, rating mpaa_rating, "
                              "release_year year, special_features text[], features_text text)")
    films = mapping("FILM_COPY", side("mysql", "film", "film_id"), side("pg", "crm_film", "film_id"),
                    [("film_id", "film_id"), ("title", "title"), ("rating", "rating"), ("release_year", "release_year"),
                     ("special_features", "special_features"), ("special_features", "features_text")])
    assert sakila.errors(films) == []
    run = sakila.run(films)
    assert (run.inserted, run.failed) == (1000, 0), sakila.job_errors()
    with sakila.store.connect() as conn:  # landed by the bulk path
        assert conn.execute(sa.text("SELECT count(*) FROM couplings WHERE inserted_by_job IS NOT NULL")).scalar() == 1000
    assert sakila.rows(sakila.pg, "SELECT rating::text, release_year, special_features, features_text FROM crm_film "
                                  "WHERE film_id = 1") == [("PG", 2006, ["Deleted Scenes", "Behind the Scenes"],
                                                            "Deleted Scenes,Behind the Scenes")]
    assert sakila.run(films, full=True).modified == 0


def test_composite_keys_in_the_web_console_and_api(sakila: Sakila) -> None:
    from types import SimpleNamespace
    from urllib.parse import quote

    from tablesync.store.mappings import apply_config
    from tests.conftest import REDIS_URL, RUN_ID
    from tests.integration.web_helpers import bearer, logged_in, make_app

    deps = (actor_mapping(), film_mapping())
    apply_config(sakila.store, sakila.config(film_actor_mapping(), *deps), applied_by="test")
    for m in deps:
        sakila.run(m)
    sakila.execute(sakila.pg, "DELETE FROM film_actor WHERE actor_id = 1")
    sakila.run(film_actor_mapping(), *deps)
    env = SimpleNamespace(store_url=sakila.settings.store_url, broker_url=REDIS_URL, namespace=f"tablesync-test-{RUN_ID}-web15",
                          queue=f"q{RUN_ID}web15")
    app = make_app(env)
    api = logged_in(app)
    log = api.get(f"/api/records/FILM_ACTOR/local/{quote('[1, 23]')}", headers=bearer(app))
    assert log.status_code == 200 and [e["outcome"] for e in log.json()] == ["inserted"], log.text
    assert log.json()[0]["integration_key"] == '["1","23"]'
    exact = quote('["1","23"]')
    page = api.get(f"/records/FILM_ACTOR/local/{exact}")
    assert page.status_code == 200 and "inserted" in page.text
    bad = api.post("/api/mappings/FILM_ACTOR/couple", headers=bearer(app), json={"local_key": "1", "integration_key": "[1, 2]"})
    assert bad.status_code in (400, 422) and "not a key of 2 columns" in bad.text, bad.text


def test_updates_of_composite_records_are_staged_and_joined_on_every_key_column(sakila: Sakila) -> None:
    """Many updates at once go to PostgreSQL by COPY into a staging table and one UPDATE … FROM,
    joined on both columns of the key."""
    sakila.execute(sakila.pg, "CREATE TABLE crm_film_category (film_id int, category_id int, changed text NOT NULL, "
                              "PRIMARY KEY (film_id, category_id))")
    categories = mapping("FILM_CATEGORY", side("mysql", "film_category", ["film_id", "category_id"], modified="last_update"),
                         side("pg", "crm_film_category", ["film_id", "category_id"]),
                         [("film_id", "film_id"), ("category_id", "category_id"), ("last_update", "changed")])
    assert sakila.run(categories).inserted == 1000
    sakila.execute(sakila.mysql, "UPDATE film_category SET last_update = '2026-01-02 03:04:05' WHERE film_id <= 600")
    run = sakila.run(categories)
    assert (run.modified, run.failed) == (600, 0), sakila.job_errors()
    assert sakila.rows(sakila.pg, "SELECT count(*) FROM crm_film_category WHERE changed = '2026-01-02T03:04:05'") == [(600,)]
    assert sakila.rows(sakila.pg, "SELECT count(*) FROM crm_film_category WHERE changed <> '2026-01-02T03:04:05'") == [(400,)]
