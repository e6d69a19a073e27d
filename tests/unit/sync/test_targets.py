"""sync.targets: insert intents are committed before the target write, so a worker that dies at
any point of a batch leaves nothing the next run duplicates or loses."""

from __future__ import annotations

import pytest

from tablesync.apps.table import AppTable
from tablesync.sync import write
from tests.unit.sync.conftest import Rig


class Died(BaseException):
    """A worker's death at a chosen line: nothing after it runs, nothing catches it."""


def die(*_: object, **__: object) -> None:
    raise Died()


@pytest.mark.parametrize("where", ["before the target write", "after the target write, before the record"])
def test_a_death_mid_batch_is_finished_by_the_next_run_without_duplicates(rig: Rig, monkeypatch: pytest.MonkeyPatch,
                                                                          where: str) -> None:
    rig.add_customers(*({"id": i, "name": f"C{i}", "email": f"c{i}@x.dk", "city": "Aarhus"} for i in range(1, 6)))
    stored = rig.mapping()
    with monkeypatch.context() as patch:
        if where == "before the target write":
            patch.setattr(AppTable, "insert", die)
        else:
            patch.setattr(write, "record", die)
        with pytest.raises(Died):
            rig.run(stored)
    assert rig.scalar("SELECT count(*) FROM couplings WHERE state = 'pending'") == 5  # the intents were there first
    redo = rig.run(stored)
    assert redo.inserted == 5
    assert [r["email"] for r in rig.rows(rig.crm, "accounts", "account_id")] == [f"c{i}@x.dk" for i in range(1, 6)]
    assert rig.scalar("SELECT count(*) FROM couplings WHERE state = 'synced' AND integration_key IS NOT NULL") == 5
    assert rig.run(stored, full=True).unchanged == 5
