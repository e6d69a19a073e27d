"""What finding deleted records costs per key, one-column keys against composite keys: the
deletion scan's `AppTable.missing` on PostgreSQL (keys unnested from binary arrays, an anti-join
probing the primary key), 20,000 coupled keys per call against a table of `--rows` rows, of which
1% are gone. The baseline is the one-column key measured in the same run; the composite key is
two integer columns (a link table's), with the same number of rows. Medians of `--runs` runs.

    python benchmarks/deletion_scan_bench.py [--rows 1000000] [--runs 5]

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust). Creates and drops its own database.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import uuid

import sqlalchemy as sa

from tablesync.apps.table import AppTable
from tablesync.config.model import SideSpec
from tablesync.db.engine import create_engine
from tablesync.db.keys import encode_key

ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CHUNK = 20_000  # keys per call, as the scan sends them (deletions.SCAN_CHUNK)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    name = f"ts_bench_scan_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
    try:
        side = 1000  # a × b covers the rows: b runs 1..1000 for each a
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE single (id bigint PRIMARY KEY, v text)"))
            conn.execute(sa.text("CREATE TABLE link (a int, b int, v text, PRIMARY KEY (a, b))"))
            conn.execute(sa.text("INSERT INTO single SELECT g, 'x' FROM generate_series(1, :n) g"), {"n": args.rows})
            conn.execute(sa.text("INSERT INTO link SELECT 1 + (g - 1) / :s, 1 + (g - 1) % :s, 'x' FROM generate_series(1, :n) g"),
                         {"n": args.rows, "s": side})
            conn.execute(sa.text("DELETE FROM single WHERE id % 100 = 0"))
            conn.execute(sa.text("DELETE FROM link WHERE ((a - 1) * :s + b) % 100 = 0"), {"s": side})
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE single"))
            conn.execute(sa.text("VACUUM ANALYZE link"))
        single = AppTable.open(engine, SideSpec(app="a", table="single", key="id"))
        link = AppTable.open(engine, SideSpec(app="a", table="link", key=["a", "b"]))
        rng = random.Random(7)
        results: dict[str, list[float]] = {"one-column key": [], "composite key (2 columns)": []}
        for _ in range(args.runs):
            ids = rng.sample(range(1, args.rows + 1), CHUNK)
            keys = {"one-column key": (single, [str(i) for i in ids]),
                    "composite key (2 columns)": (link, [encode_key([1 + (i - 1) // side, 1 + (i - 1) % side]) for i in ids])}
            for label, (table, batch) in keys.items():
                started = time.perf_counter()
                gone = table.missing(batch)
                results[label].append(time.perf_counter() - started)
                assert len(gone) == sum(1 for i in ids if i % 100 == 0), (label, len(gone))
        base = statistics.median(results["one-column key"])
        print(f"missing() of {CHUNK:,} keys against {args.rows:,} rows, median of {args.runs} runs:")
        for label, times in results.items():
            med = statistics.median(times)
            print(f"  {label:28s} {med * 1000:7.1f} ms  {med / CHUNK * 1e6:5.2f} µs/key  ratio {med / base:4.2f}  "
                  f"(runs: {', '.join(f'{t * 1000:.1f}' for t in times)})")
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
