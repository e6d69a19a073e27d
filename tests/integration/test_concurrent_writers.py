"""No lost update: users keep writing to both apps, some in long transactions that commit rows whose
modified-on is older than what a sync already read, while syncs run back to back. Two quiet runs
later both apps hold the same records."""

from __future__ import annotations

import random
import threading
import time

import pytest
import sqlalchemy as sa

from tests.integration.helpers import sync
from tests.integration.test_bidirectional import crm_view, local_view, setup

pytestmark = pytest.mark.integration


def writer(engine: sa.Engine, table: str, column: str, name_prefix: str, stop: threading.Event, seed: int,
           counts: dict[str, int]) -> None:
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        n += 1
        with engine.begin() as conn:
            if n % 7 == 0:  # a new record on this side
                cols = "(name, city, phone)" if table == "customers" else "(name, address1_city, telephone1)"
                conn.execute(sa.text(f"INSERT INTO {table} {cols} VALUES (:n, 'new', 'new')"),
                             {"n": f"{name_prefix} new {seed}-{n}"})
                counts["inserts"] += 1
            else:
                conn.execute(sa.text(f"UPDATE {table} SET {column} = :v WHERE name = :n"),
                             {"v": f"{name_prefix} {seed}-{n}", "n": f"ERP {rng.randint(1, 30)}"})
            if n % 5 == 0:  # a long transaction: its row is stamped now but committed (visible) later
                time.sleep(rng.uniform(0.5, 2.0))
                counts["long"] += 1
        time.sleep(rng.uniform(0.0, 0.05))


def test_no_update_is_lost_while_users_write_to_both_apps_during_syncs(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm = setup(env, erp_rows=30, crm_rows=0, update="local_wins")
    env.start_worker(TABLESYNC_OVERLAP_SECONDS="0")  # no re-read margin: only the transaction horizon protects
    assert sync(env)["inserted"] == 30
    stop = threading.Event()
    counts = {"inserts": 0, "long": 0}
    threads = [threading.Thread(target=writer, args=args + (stop, seed, counts)) for seed, args in enumerate([
        (erp, "customers", "city", "erp"), (erp, "customers", "phone", "erp"),
        (crm, "accounts", "telephone1", "crm"), (crm, "accounts", "address1_city", "crm"),
    ])]
    for t in threads:
        t.start()
    runs = 0
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            job = sync(env)
            assert job["status"] == "succeeded", job
            runs += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert runs >= 3 and counts["long"] >= 4 and counts["inserts"] >= 4, (runs, counts)
    sync(env)
    last = sync(env)
    assert (last["inserted"], last["modified"], last["failed"], last["conflicts"]) == (0, 0, 0, 0), last
    local, remote = local_view(erp), crm_view(crm)
    assert len(local) == 30 + counts["inserts"]
    assert local == remote
