"""A first run from PostgreSQL to PostgreSQL whose mapping copies each column into one of the same
kind passes its rows through as COPY text (`bulk_load.passes_through`). Real rows (sakila's films:
arrays, an enum, a domain, tsvector, fixed timestamps) and hostile text (tabs, line ends,
backslashes, a literal `\\N`) must land exactly as the general path would write them: a full
resync right after finds nothing to change. A refused row fails alone; a crash between the target
write and the couplings leaves nothing written twice."""

from __future__ import annotations

from typing import Any

import pytest

from tablesync.db.keys import encode_key
from tablesync.store import couplings as cs
from tablesync.sync.run import finish_interrupted
from tests.integration.sakila import Sakila, mapping, side

FILM_COLUMNS = ["film_id", "title", "description", "release_year", "language_id", "original_language_id", "rental_duration",
                "rental_rate", "length", "replacement_cost", "rating", "last_update", "special_features", "fulltext"]
HOSTILE = ["tab\there", "line\nend", "carriage\rreturn", "back\\slash", "\\N", "naïve ✓ 日本", ""]


def film_mapping(sakila: Sakila, title_type: str = "varchar(255)", batch_size: int = 200) -> dict[str, Any]:
    sakila.execute(sakila.pg, f"""CREATE TABLE crm_film (crm_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), film_id integer,
        title {title_type} NOT NULL, description text, release_year year, language_id integer NOT NULL, original_language_id integer,
        rental_duration smallint, rental_rate numeric(4,2), length smallint, replacement_cost numeric(5,2), rating mpaa_rating,
        last_update timestamp NOT NULL, special_features text[], fulltext tsvector)""")
    return mapping("FILM", side("pg", "film", "film_id", modified="last_update"), side("pg", "crm_film", "crm_id"),
                   [(c, c) for c in FILM_COLUMNS], batch_size=batch_size)


def add_hostile_films(sakila: Sakila) -> None:
    for i, text in enumerate(HOSTILE):
        sakila.execute(sakila.pg, "INSERT INTO film (film_id, title, description, language_id, fulltext, special_features) "
                                  "VALUES (:id, CAST(:title AS text), CAST(:text AS text), 1, to_tsvector(CAST(:title AS text)), ARRAY[CAST(:text AS text), 'x\"y', NULL])",
                       id=5000 + i, title=f"HOSTILE {i} {text}", text=text)


def hashed(sakila: Sakila, mapping_name: str) -> int:
    """Couplings of the mapping that carry a source hash."""
    return int(sakila.store_rows("SELECT count(*) FROM couplings WHERE mapping = :m AND local_hash IS NOT NULL", m=mapping_name)[0][0])


def test_real_rows_and_hostile_text_pass_through_exactly(sakila: Sakila) -> None:
    films = film_mapping(sakila)
    add_hostile_films(sakila)
    total = sakila.rows(sakila.pg, "SELECT count(*) FROM film")[0][0]
    first = sakila.run(films)
    assert (first.inserted, first.failed) == (total, 0), sakila.job_errors()
    # the pass-through path left the hashes to the first run that reads each record again
    assert hashed(sakila, "FILM") == 0
    listed = ", ".join(c if c != "fulltext" else "fulltext::text" for c in FILM_COLUMNS)
    assert (sakila.rows(sakila.pg, f"SELECT {listed} FROM crm_film ORDER BY film_id")
            == sakila.rows(sakila.pg, f"SELECT {listed} FROM film ORDER BY film_id"))
    hostile = sakila.rows(sakila.pg, "SELECT description, special_features FROM crm_film WHERE film_id >= 5000 ORDER BY film_id")
    assert hostile == [(text, [text, 'x"y', None]) for text in HOSTILE]
    pairs = sakila.couplings("FILM")
    assert len(pairs) == total and {p[0] for p in pairs} == {str(r[0]) for r in sakila.rows(sakila.pg, "SELECT film_id FROM film")}
    assert {p[1] for p in pairs} == {str(r[0]) for r in sakila.rows(sakila.pg, "SELECT crm_id FROM crm_film")}

    # What the general path would have written: a full resync compares every record with its target.
    full = sakila.run(films, full=True)
    assert (full.inserted, full.modified, full.failed) == (0, 0, 0), sakila.job_errors()
    assert hashed(sakila, "FILM") == total

    sakila.execute(sakila.pg, "UPDATE film SET title = title || ' II', last_update = now() WHERE film_id IN (1, 2, 5003)")
    again = sakila.run(films)
    assert (again.inserted, again.modified, again.failed) == (0, 3, 0), sakila.job_errors()
    assert sakila.rows(sakila.pg, "SELECT title FROM crm_film WHERE film_id = 5003") == [("HOSTILE 3 back\\slash II",)]


def test_a_row_the_target_refuses_fails_alone(sakila: Sakila) -> None:
    films = film_mapping(sakila, "varchar(30)")  # sakila's titles are shorter; this one is not
    sakila.execute(sakila.pg, "INSERT INTO film (film_id, title, language_id, fulltext) "
                              "VALUES (4000, 'A TITLE FAR TOO LONG FOR THE CRM COLUMN', 1, '')")
    total = sakila.rows(sakila.pg, "SELECT count(*) FROM film")[0][0]
    run = sakila.run(films)
    assert (run.inserted, run.failed) == (total - 1, 1), sakila.job_errors()
    errors = sakila.job_errors()
    assert len(errors) == 1 and "title" in errors[0] and "30" in errors[0], errors
    assert sakila.rows(sakila.pg, "SELECT count(*) FROM crm_film WHERE film_id = 4000") == [(0,)]


def test_a_composite_source_key_is_coupled_as_the_general_path_keys_it(sakila: Sakila) -> None:
    sakila.execute(sakila.pg, "CREATE TABLE crm_film_actor (crm_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), "
                              "actor_id smallint NOT NULL, film_id smallint NOT NULL, last_update timestamp NOT NULL)")
    links = mapping("FILM_ACTOR", side("pg", "film_actor", ["actor_id", "film_id"], modified="last_update"),
                    side("pg", "crm_film_actor", "crm_id"), [("actor_id", "actor_id"), ("film_id", "film_id"),
                                                             ("last_update", "last_update")], batch_size=500)
    run = sakila.run(links)
    assert (run.inserted, run.failed) == (5462, 0), sakila.job_errors()
    assert hashed(sakila, "FILM_ACTOR") == 0
    keys = {p[0] for p in sakila.couplings("FILM_ACTOR")}
    assert keys == {encode_key([a, f]) for a, f in sakila.rows(sakila.pg, "SELECT actor_id, film_id FROM film_actor")}
    full = sakila.run(links, full=True)
    assert (full.inserted, full.modified, full.failed) == (0, 0, 0), sakila.job_errors()


def test_a_crash_between_the_target_rows_and_their_couplings_writes_nothing_twice(
        sakila: Sakila, monkeypatch: pytest.MonkeyPatch) -> None:
    """The third page's target rows are in when the worker dies, before its couplings: its intents
    are left. The next run finishes them as pending couplings (finding their rows) and goes on."""
    films = film_mapping(sakila, batch_size=50)  # pages of 200 rows: five
    landed = cs.write_landed_keys
    calls = {"n": 0}

    def dies_on_third(*args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemExit("worker killed")
        landed(*args, **kwargs)

    monkeypatch.setattr(cs, "write_landed_keys", dies_on_third)
    with pytest.raises(SystemExit):  # the text path's couplings were being written (not the rows' path)
        sakila.run(films)
    monkeypatch.setattr(cs, "write_landed_keys", landed)
    assert finish_interrupted(sakila.store, "FILM") == 200  # what the crash left staged, as a worker finds it
    again = sakila.run(films)
    assert again.failed == 0, sakila.job_errors()
    assert sakila.rows(sakila.pg, "SELECT count(*), count(DISTINCT film_id) FROM crm_film") == [(1000, 1000)]
    pairs = sakila.couplings("FILM")
    assert len(pairs) == 1000 and len({p[1] for p in pairs}) == 1000
    with sakila.store.connect() as conn:
        assert conn.execute(cs.staged_intents.select()).first() is None
