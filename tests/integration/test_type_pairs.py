"""The live type check and the values, for the column type pairs real apps meet between MariaDB
(local) and PostgreSQL (integration): what maps as it is, what is refused (and what a transform
fixes), what is a warning because a value that does not fit fails its record alone. The table in
docs/configuration.md, "Type pairs", is this test's."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

from tests.integration.sakila import Sakila, mapping, side

MARIADB = """CREATE TABLE kinds (id int PRIMARY KEY, flag tinyint(1) NOT NULL DEFAULT 0, amount decimal(10,2), precise decimal(10,4),
  note varchar(100), big bigint, doc JSON, doc_text longtext, blob_ blob, ref char(36), at_time time, secs int,
  modified timestamp(6) NOT NULL DEFAULT current_timestamp(6) ON UPDATE current_timestamp(6))"""
POSTGRES = """CREATE TABLE kinds (id int PRIMARY KEY, flag boolean NOT NULL DEFAULT false, amount numeric(10,2), precise numeric(10,2),
  note varchar(10), big integer, doc jsonb, doc_text jsonb, blob_ bytea, ref uuid, at_time time, span interval,
  modified timestamptz NOT NULL DEFAULT now())"""
PAIRS = [("id", "id"), ("flag", "flag"), ("amount", "amount"), ("note", "note"), ("big", "big"), ("doc", "doc"),
         ("doc_text", "doc_text"), ("blob_", "blob_"), ("ref", "ref"), ("at_time", "at_time"),
         {"local": "secs", "integration": "span", "direction": "from_integration", "transform": "seconds"}]


def kinds(pairs: list[Any] = PAIRS) -> dict[str, Any]:
    return mapping("KINDS", side("mysql", "kinds", "id", modified="modified"), side("pg", "kinds", "id", modified="modified"),
                   pairs, direction="bidirectional")


def test_type_pairs_config_check(sakila: Sakila) -> None:
    sakila.execute(sakila.mysql, MARIADB)
    sakila.execute(sakila.pg, POSTGRES)
    problems = sakila.check(kinds([*PAIRS[:-1], ("precise", "precise"),
                                   {"local": "secs", "integration": "span", "direction": "from_integration"}]))
    errors = sorted(p.message for p in problems if p.severity == "error")
    warnings = sorted(p.message for p in problems if p.severity == "warning")
    assert len(errors) == 2, errors
    assert "incompatible types: integration span is interval (INTERVAL), local secs is integer (INTEGER); give the field a " \
           "transform (`seconds` for a duration)" in errors[0]
    assert errors[1] == ("to integration: precise keeps 2 decimal(s) and precise has 4: values would be rounded; "
                         "widen the target's scale or give the field a transform that rounds")
    assert warnings == [
        "from integration: precise holds 6 integer digit(s), precise 8: a larger value fails its record",
        "to integration: big holds -2147483648..2147483647, big -9223372036854775808..9223372036854775807: "
        "a value outside fails its record",
        "to integration: note holds 10 characters, note 100: a longer value fails its record"]
    assert [p for p in sakila.check(kinds()) if p.severity == "error"] == []


def test_type_pairs_sync_both_ways_and_converge(sakila: Sakila) -> None:
    sakila.execute(sakila.mysql, MARIADB)
    sakila.execute(sakila.pg, POSTGRES)
    ref = uuid.uuid4()
    sakila.execute(sakila.mysql, "INSERT INTO kinds (id, flag, amount, note, big, doc, doc_text, blob_, ref, at_time) VALUES "
                                 "(1, 1, 12.50, 'short', 42, '{\"a\": [1, 2], \"b\": \"x\"}', '{\"n\": 1}', x'00ff10', :ref, '13:45:10'), "
                                 "(2, 0, NULL, 'a note far longer than ten', 1, NULL, NULL, NULL, NULL, NULL), "
                                 "(3, 0, NULL, 'big', 9999999999, NULL, NULL, NULL, NULL, NULL)", ref=str(ref))
    first = sakila.run(kinds())
    assert (first.inserted, first.failed) == (1, 2), sakila.job_errors()
    errors = sakila.job_errors()
    assert any("26 characters do not fit note (10 max)" in e for e in errors), errors
    assert any("out of range" in e for e in errors), errors
    row = sakila.rows(sakila.pg, "SELECT flag, amount, note, big, doc, doc_text, blob_, ref, at_time FROM kinds WHERE id = 1")
    assert row == [(True, Decimal("12.50"), "short", 42, {"a": [1, 2], "b": "x"}, {"n": 1}, b"\x00\xff\x10", ref,
                    dt.time(13, 45, 10))]

    sakila.execute(sakila.pg, "UPDATE kinds SET flag = false, doc = '{\"a\": [3]}', doc_text = '[true, null]', "
                              "at_time = '08:00', ref = :r, span = interval '1 hour 30 seconds', modified = now() WHERE id = 1",
                   r=str(uuid.UUID(int=1)))
    back = sakila.run(kinds())
    assert (back.modified, back.failed) == (1, 2), sakila.job_errors()
    got = sakila.rows(sakila.mysql, "SELECT flag, doc, doc_text, at_time, ref, secs FROM kinds WHERE id = 1")[0]
    assert got[0] == 0 and got[3] == dt.timedelta(hours=8) and got[4] == str(uuid.UUID(int=1)) and got[5] == 3630
    assert json.loads(got[1]) == {"a": [3]} and json.loads(got[2]) == [True, None]
    for _ in range(2):
        quiet = sakila.run(kinds(), full=True)
    assert (quiet.modified, quiet.inserted) == (0, 0)
