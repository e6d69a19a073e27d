"""sync.one_way: a one-way run inserts, recognises its own echo, updates only what changed, and
fails a bad record alone, retrying it until it is skipped."""

from __future__ import annotations

from tests.unit.sync.conftest import Rig


def test_first_run_inserts_then_an_echo_is_unchanged_and_an_edit_updates_one_record(rig: Rig) -> None:
    rig.add_customers(*({"id": i, "name": f"C{i}", "email": f"c{i}@x.dk", "city": "Aarhus"} for i in range(1, 6)))
    stored = rig.mapping()
    first = rig.run(stored)
    assert (first.inserted, first.failed) == (5, 0)
    assert [(r["name"], r["city"]) for r in rig.rows(rig.crm, "accounts", "account_id")] == [(f"C{i}", "Aarhus") for i in range(1, 6)]

    again = rig.run(stored, full=True)  # every row compared: nothing travels back and forth
    assert (again.inserted, again.modified, again.unchanged) == (0, 0, 5)

    rig.edit(rig.erp, "customers", "id", 3, city="Odense")
    third = rig.run(stored)
    assert (third.modified, third.inserted) == (1, 0)
    assert [r["city"] for r in rig.rows(rig.crm, "accounts", "account_id")] == ["Aarhus", "Aarhus", "Odense", "Aarhus", "Aarhus"]
    assert rig.scalar("SELECT count(*) FROM couplings WHERE state = 'synced' AND last_result = 'success'") == 5


def test_a_bad_record_fails_alone_is_retried_and_skipped_after_three_failures(rig: Rig) -> None:
    rig.add_customers({"id": 1, "name": "Ok", "email": "ok@x.dk", "city": "Aarhus"},
                      {"id": 2, "name": "Bad", "email": "bad@x.dk", "city": "Copenhagen-Frederiksberg"})  # city: 10 max
    stored = rig.mapping()
    first = rig.run(stored)
    assert (first.inserted, first.failed) == (1, 1)
    assert rig.scalar("SELECT message FROM job_errors WHERE source_key = '2'").startswith("field city → city:")
    # tracked although it was never inserted: a pending coupling carries its failures
    assert rig.scalar("SELECT state || ',' || failures FROM couplings WHERE local_key = '2'") == "pending,1"
    for _ in range(2):
        assert rig.run(stored).failed == 1  # retried, changed or not
    assert rig.scalar("SELECT skip_reason FROM couplings WHERE local_key = '2'") == "failures"
    assert rig.run(stored).failed == 0  # skipped: left alone until an operator acts
    rig.edit(rig.erp, "customers", "id", 2, city="Odense")
    assert rig.run(stored).skipped == 1


def test_counters_and_couplings_of_a_batch_commit_together(rig: Rig) -> None:
    """Each batch is recorded in one store transaction: the job's counters always equal what its
    couplings say, batch by batch."""
    rig.add_customers(*({"id": i, "name": f"C{i}", "email": f"c{i}@x.dk", "city": "Aarhus"} for i in range(1, 8)))
    stored = rig.mapping(batch_size=3)
    job = rig.job()
    from tablesync.sync import run as engine

    counters = engine.sync_mapping(rig.store, rig.settings, stored, job)
    assert counters.inserted == 7
    assert rig.scalar("SELECT inserted FROM jobs WHERE id = :j", j=job) == 7
    assert rig.scalar("SELECT count(*) FROM record_events WHERE job_id = :j AND outcome = 'inserted'", j=job) == 7
