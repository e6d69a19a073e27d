"""sync.dry_run: a dry run reads and decides like a run, through the same stages, and writes
nothing anywhere: no target row, no coupling, no watermark, no job."""

from __future__ import annotations

from tests.unit.sync.conftest import Rig


def _store_rows(rig: Rig) -> tuple[int, ...]:
    return tuple(rig.scalar(f"SELECT count(*) FROM {t}") for t in ("couplings", "watermarks", "jobs", "job_errors", "record_events"))


def test_a_dry_run_reports_what_a_run_would_do_and_writes_nothing(rig: Rig) -> None:
    from tablesync.sync import run as engine

    rig.add_customers(*({"id": i, "name": f"C{i}", "email": f"c{i}@x.dk", "city": "Aarhus"} for i in range(1, 4)),
                      {"id": 4, "name": "Bad", "email": "bad@x.dk", "city": "Far too long a city"})
    stored = rig.mapping()
    before = _store_rows(rig)
    report = engine.dry_run(rig.store, rig.settings, stored).as_dict()
    assert report["directions"]["to_integration"]["counts"] == {"insert": 3, "fail": 1}
    assert _store_rows(rig) == before and rig.rows(rig.crm, "accounts", "account_id") == []

    rig.run(stored)
    rig.edit(rig.erp, "customers", "id", 2, name="Renamed")
    before = _store_rows(rig)
    one = engine.dry_run(rig.store, rig.settings, stored, record="2").as_dict()["directions"]["to_integration"]
    assert one["counts"] == {"update": 1} and one["samples"]["update"][0]["changes"] == {"name": ["C2", "Renamed"]}
    assert _store_rows(rig) == before
    assert rig.rows(rig.crm, "accounts", "account_id")[1]["name"] == "C2"
