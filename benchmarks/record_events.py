"""What the record log costs a sync that changes every record: 100k rows PostgreSQL → PostgreSQL,
all modified after the initial sync, synced with and without record events (one `modified` event
per record, with its field changes), in one process (no broker), medians of several runs. An
initial sync writes no event rows: a bulk-inserted record's log entry is its coupling.

    python benchmarks/record_events.py [--rows 100000] [--runs 3]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust). Creates and drops its own databases.
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import sqlalchemy as sa

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CONFIG = {
    "name": "CUSTOMER", "direction": "to_integration",
    "local": {"app": "erp", "table": "customers", "key": "id", "modified": "modified_at"},
    "integration": {"app": "crm", "table": "accounts", "key": "account_id", "modified": "modifiedon"},
    "fields": [{"local": "name", "integration": "name"}, {"local": "email", "integration": "emailaddress1"},
               {"local": "city", "integration": "city"}, {"local": "credit_limit", "integration": "creditlimit"}],
}


def create_apps(erp: sa.Engine, crm: sa.Engine, rows: int) -> None:
    """ERP customers with `rows` rows, an empty CRM accounts table: the apps of CONFIG."""
    with erp.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id int PRIMARY KEY, name text, email text, city text, "
                             "credit_limit numeric(12,2), modified_at timestamptz NOT NULL DEFAULT now())"))
        conn.execute(sa.text("INSERT INTO customers (id, name, email, city, credit_limit) SELECT g, 'Customer ' || g, "
                             "'c' || g || '@example.com', 'City ' || (g % 100), g % 1000 FROM generate_series(1, :n) g"),
                     {"n": rows})
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (account_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text, "
                             "emailaddress1 text, city text, creditlimit numeric(12,2), "
                             "modifiedon timestamptz NOT NULL DEFAULT now())"))


@contextmanager
def databases(*names: str) -> Iterator[dict[str, str]]:
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    real = {n: f"bench_{n}_{uuid.uuid4().hex[:8]}" for n in names}
    with admin.connect() as conn:
        for db in real.values():
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    try:
        yield {n: f"postgresql+psycopg://postgres@127.0.0.1:5432/{db}" for n, db in real.items()}
    finally:
        with admin.connect() as conn:
            for db in real.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))


def one_run(rows: int, with_events: bool) -> float:
    from tablesync.config.model import AppSpec, MappingSpec
    from tablesync.config.settings import Settings
    from tablesync.store.mappings import StoredMapping
    from tablesync.store.migrate import upgrade
    from tablesync.sync import record as record_stage
    from tablesync.sync.run import sync_mapping

    with databases("erp", "crm", "store") as urls:
        erp, crm, store = (sa.create_engine(urls[n]) for n in ("erp", "crm", "store"))
        create_apps(erp, crm, rows)
        upgrade(store)
        from tablesync.store.jobs import create_job

        stored = StoredMapping(spec=MappingSpec.model_validate(CONFIG), version=1,
                               apps={"erp": AppSpec(url=urls["erp"]), "crm": AppSpec(url=urls["crm"])})
        settings = Settings(store_url=urls["store"])
        with store.begin() as conn:
            job_id = create_job(conn, "CUSTOMER", "sync")
        assert sync_mapping(store, settings, stored, job_id).inserted == rows
        with erp.begin() as conn:
            conn.execute(sa.text("UPDATE customers SET city = city || ' North', modified_at = now()"))
        with store.begin() as conn:
            job_id = create_job(conn, "CUSTOMER", "sync")
        patch = mock.patch.object(record_stage, "write_events", lambda conn, rows: None) if not with_events else None
        if patch:
            patch.start()
        try:
            started = time.perf_counter()
            counters = sync_mapping(store, settings, stored, job_id)
            took = time.perf_counter() - started
        finally:
            if patch:
                patch.stop()
        assert counters.modified == rows, counters
        for e in (erp, crm, store):
            e.dispose()
        from tablesync.apps.engines import dispose_all

        dispose_all()  # the databases are dropped next: close the pooled connections
        return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.runs):  # interleaved, so drift in the machine's load hits both alike
        for with_events in (False, True):
            times[with_events].append(one_run(args.rows, with_events))
    base, full = statistics.median(times[False]), statistics.median(times[True])
    print(f"sync of {args.rows:,} modified rows, median of {args.runs} runs each")
    print(f"  without record events: {base:7.2f} s  ({args.rows / base:8,.0f} rows/s)  runs: {', '.join(f'{t:.2f}' for t in times[False])}")
    print(f"  with record events:    {full:7.2f} s  ({args.rows / full:8,.0f} rows/s)  runs: {', '.join(f'{t:.2f}' for t in times[True])}")
    print(f"  ratio with/without:    {full / base:7.3f}  (record log cost {100 * (full / base - 1):+.1f}%)")


if __name__ == "__main__":
    main()
