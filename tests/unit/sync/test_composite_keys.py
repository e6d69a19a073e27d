"""Composite keys through the engine, on SQLite: document headers keyed by (doc_type, doc_no) and
lines keyed by (doc_type, doc_no, line_no) in the ERP, as the reference product keys them; in the
CRM, orders keyed by a number the database makes and lines by (order_id, line_no). The lines'
parent key is two columns on one side and one on the other."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from tablesync.config.model import AppSpec, MappingSpec
from tablesync.store.mappings import StoredMapping
from tests.unit.sync.conftest import Rig


@pytest.fixture
def docs(rig: Rig) -> Rig:
    with rig.erp.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE doc_headers (doc_type TEXT, doc_no INTEGER, customer TEXT NOT NULL, "
                             "modified_at DATETIME NOT NULL, PRIMARY KEY (doc_type, doc_no))")
        conn.exec_driver_sql("CREATE TABLE doc_lines (doc_type TEXT, doc_no INTEGER, line_no INTEGER, item TEXT NOT NULL, "
                             "qty INTEGER NOT NULL, modified_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, PRIMARY KEY (doc_type, doc_no, line_no))")
    with rig.crm.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE orders (order_id INTEGER PRIMARY KEY AUTOINCREMENT, customer TEXT NOT NULL, "
                             "modifiedon DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)")
        conn.exec_driver_sql("CREATE TABLE order_lines (order_id INTEGER NOT NULL REFERENCES orders, line_no INTEGER NOT NULL, "
                             "item TEXT NOT NULL, qty INTEGER NOT NULL, modifiedon DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP, "
                             "PRIMARY KEY (order_id, line_no))")
    return rig


def stored(rig: Rig, data: dict[str, Any]) -> StoredMapping:
    apps = {"erp": AppSpec(url=str(rig.erp.url)), "crm": AppSpec(url=str(rig.crm.url))}
    return StoredMapping(spec=MappingSpec.model_validate(data), apps=apps, version=1)


def orders(rig: Rig) -> StoredMapping:
    return stored(rig, {"name": "ORDER", "direction": "to_integration",
                        "local": {"app": "erp", "table": "doc_headers", "key": ["doc_type", "doc_no"], "modified": "modified_at"},
                        "integration": {"app": "crm", "table": "orders", "key": "order_id", "modified": "modifiedon"},
                        "fields": [{"local": "customer", "integration": "customer"}]})


def lines(rig: Rig, **extra: Any) -> StoredMapping:
    return stored(rig, {"name": "LINE", "direction": "bidirectional", "depends_on": ["ORDER"],
                        "local": {"app": "erp", "table": "doc_lines", "key": ["doc_type", "doc_no", "line_no"],
                                  "modified": "modified_at"},
                        "integration": {"app": "crm", "table": "order_lines", "key": ["order_id", "line_no"],
                                        "modified": "modifiedon"},
                        "fields": [{"local": ["doc_type", "doc_no"], "integration": "order_id", "parent": "ORDER"},
                                   {"local": "line_no", "integration": "line_no"},
                                   {"local": "item", "integration": "item"}, {"local": "qty", "integration": "qty"}],
                        **extra})


def erp(rig: Rig, sql: str, **params: Any) -> None:
    with rig.erp.begin() as conn:
        conn.execute(sa.text(sql), {"at": rig.tick(), **params})


def crm(rig: Rig, sql: str, **params: Any) -> None:
    with rig.crm.begin() as conn:
        conn.execute(sa.text(sql), {"at": rig.tick(), **params})


def test_lines_keyed_by_three_columns_sync_both_ways_under_a_parent_keyed_by_two(docs: Rig) -> None:
    rig = docs
    erp(rig, "INSERT INTO doc_headers VALUES ('SO', 1, 'Anna', :at), ('SO', 2, 'Bo', :at)")
    erp(rig, "INSERT INTO doc_lines VALUES ('SO', 1, 1, 'apple', 3, :at), ('SO', 1, 2, 'pear', 1, :at), "
             "('SO', 2, 1, 'plum', 5, :at), ('SO', 2, 2, 'fig', 2, :at), ('SO', 2, 3, 'lime', 9, :at)")
    assert rig.run(orders(rig)).inserted == 2
    assert rig.scalar("SELECT integration_key FROM couplings WHERE local_key = '[\"SO\",\"2\"]'") == "2"
    first = rig.run(lines(rig, batch_size=2))  # pages of two: the keyset continues over three key columns
    assert (first.inserted, first.failed) == (5, 0)
    assert [tuple(r.values())[:4] for r in rig.rows(rig.crm, "order_lines", "order_id, line_no")][:2] == [
        (1, 1, "apple", 3), (1, 2, "pear", 1)]
    assert rig.scalar("SELECT integration_key FROM couplings WHERE local_key = '[\"SO\",\"2\",\"3\"]'") == '["2","3"]'

    erp(rig, "UPDATE doc_lines SET qty = 4, modified_at = :at WHERE doc_no = 1 AND line_no = 2")
    crm(rig, "UPDATE order_lines SET item = 'plum!', modifiedon = :at WHERE order_id = 2 AND line_no = 1")
    crm(rig, "INSERT INTO order_lines (order_id, line_no, item, qty, modifiedon) VALUES (2, 4, 'kiwi', 7, :at)")
    run = rig.run(lines(rig, batch_size=2))
    assert (run.modified, run.inserted, run.failed) == (2, 1, 0), rig.scalar("SELECT message FROM job_errors ORDER BY id DESC LIMIT 1")
    assert [tuple(r.values())[:5] for r in rig.rows(rig.erp, "doc_lines", "doc_type, doc_no, line_no")] == [
        ("SO", 1, 1, "apple", 3), ("SO", 1, 2, "pear", 4), ("SO", 2, 1, "plum!", 5), ("SO", 2, 2, "fig", 2),
        ("SO", 2, 3, "lime", 9), ("SO", 2, 4, "kiwi", 7)]
    quiet = rig.run(lines(rig), full=True)
    assert (quiet.modified, quiet.inserted, quiet.unchanged) == (0, 0, 6)

    erp(rig, "UPDATE doc_lines SET qty = 10, modified_at = :at WHERE doc_no = 2 AND line_no = 2")
    crm(rig, "UPDATE order_lines SET qty = 20, modifiedon = :at WHERE order_id = 2 AND line_no = 2")
    conflict = rig.run(lines(rig))
    assert conflict.conflicts == 1
    assert "qty: local 10 ≠ integration qty 20" in rig.scalar("SELECT message FROM job_errors ORDER BY id DESC LIMIT 1")


def test_deleted_composite_records_are_found_and_settled(docs: Rig) -> None:
    rig = docs
    erp(rig, "INSERT INTO doc_headers VALUES ('SO', 1, 'Anna', :at)")
    erp(rig, "INSERT INTO doc_lines VALUES ('SO', 1, 1, 'apple', 3, :at), ('SO', 1, 2, 'pear', 1, :at)")
    rig.run(orders(rig))
    rig.run(lines(rig, on_deletion_conflict="delete"))
    erp(rig, "DELETE FROM doc_lines WHERE line_no = 1")
    run = rig.run(lines(rig, on_deletion_conflict="delete"))
    assert run.deleted == 1
    assert [(r["order_id"], r["line_no"]) for r in rig.rows(rig.crm, "order_lines", "line_no")] == [(1, 2)]


def test_a_line_whose_parent_is_not_coupled_yet_waits_for_it(docs: Rig) -> None:
    rig = docs
    erp(rig, "INSERT INTO doc_headers VALUES ('SO', 1, 'Anna', :at)")
    erp(rig, "INSERT INTO doc_lines VALUES ('SO', 1, 1, 'apple', 3, :at)")
    run = rig.run(lines(rig))
    assert run.failed == 1
    assert 'the parent record ["SO","1"] of mapping ORDER is not coupled yet' in rig.scalar("SELECT message FROM job_errors")
    rig.run(orders(rig))
    assert rig.run(lines(rig)).inserted == 1
