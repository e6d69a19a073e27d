"""sync.record: one batch, one store transaction. Whatever fails while a batch is recorded, none
of it is: no counter without its coupling, no coupling without its counter."""

from __future__ import annotations

import pytest

from tablesync.store.jobs import Counters
from tablesync.sync import record as record_stage
from tablesync.sync.record import Batch, Failed
from tests.unit.sync.conftest import Rig


def test_a_batch_is_recorded_whole_or_not_at_all(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    job = rig.job()
    batch = Batch(job, "CUSTOMER", "to_integration", counters=Counters(failed=1))
    batch.failures.append(Failed(batch.ref(None, "7", None), "field city → city: 30 characters do not fit city (10 max)"))

    def broken(conn: object, rows: object) -> None:
        raise RuntimeError("the store went away mid-batch")

    monkeypatch.setattr(record_stage, "write_events", broken)
    with pytest.raises(RuntimeError):
        record_stage.record(rig.context(job), batch)
    counts = [rig.scalar(f"SELECT count(*) FROM {t}") for t in ("couplings", "job_errors", "record_events")]
    assert counts == [0, 0, 0] and rig.scalar("SELECT failed FROM jobs WHERE id = :j", j=job) == 0

    monkeypatch.undo()
    intents = record_stage.record(rig.context(job), batch)
    assert rig.scalar("SELECT failed FROM jobs WHERE id = :j", j=job) == 1
    # the record failed before it was ever coupled: it is tracked from now on, never dropped
    assert rig.scalar("SELECT state || ',' || failures || ',' || local_key FROM couplings") == "pending,1,7"
    assert intents == {"7": rig.scalar("SELECT id FROM couplings")}
    assert [rig.scalar(f"SELECT count(*) FROM record_events WHERE outcome = '{o}'") for o in ("failed", "skipped")] == [1, 0]


def test_a_job_taken_over_records_nothing(rig: Rig) -> None:
    """The runtime's fence (the job's epoch moved on) refuses the batch before any of it is written."""
    from tablesync.errors import Fenced

    job = rig.job()
    batch = Batch(job, "CUSTOMER", "to_integration", counters=Counters(failed=1))
    batch.failures.append(Failed(batch.ref(None, "7", None), "a record that failed"))

    def taken_over(conn: object) -> None:
        raise Fenced(f"job {job} is abandoned")

    with pytest.raises(Fenced):
        record_stage.record(rig.context(job, fence=taken_over), batch)
    assert rig.scalar("SELECT count(*) FROM couplings") == 0
    assert rig.scalar("SELECT count(*) FROM job_errors") == 0
    assert rig.scalar("SELECT failed FROM jobs WHERE id = :j", j=job) == 0
