"""Initial and incremental sync through the real path, against the COPY pipe (and dlt, if installed).

    python benchmarks/sync_bench.py [--rows 1000000] [--runs 3] [--changes 1000]

Real path: the store on PostgreSQL, the Redis broker, one `tablesync worker` process (1 thread),
`tablesync sync --wait`; the job's own start/finish times are the measure. Baseline in the same run:
psycopg's `COPY … TO STDOUT` piped into `COPY … FROM STDIN` between the same two databases. dlt
(`pip install -e '.[bench]'`) runs its `sql_database` source into its `postgres` destination with
the pyarrow backend. Prints a table and, last, one line of JSON with medians and ratios.

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379; creates and
drops its own databases and Redis namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql+psycopg://postgres@127.0.0.1:5432/{}"
REDIS = "redis://127.0.0.1:6379/0"
COLUMNS = "number, name, email, phone, city, country, credit_limit, segment, created_on"
SOURCE_DDL = """CREATE TABLE customers (id int PRIMARY KEY, number text NOT NULL, name text NOT NULL, email text,
  phone text, city text, country text, credit_limit numeric(12,2), segment int, created_on date,
  modified_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON customers (modified_at, id)"""
TARGET_DDL = """CREATE TABLE accounts (account_id uuid PRIMARY KEY DEFAULT gen_random_uuid(), number text NOT NULL,
  name text NOT NULL, email text, phone text, city text, country text, credit_limit numeric(12,2), segment int,
  created_on date, modifiedon timestamptz NOT NULL DEFAULT now())"""
FILL = """INSERT INTO customers (id, number, name, email, phone, city, country, credit_limit, segment, created_on, modified_at)
SELECT g, 'C' || lpad(g::text, 8, '0'), 'Customer ' || g, 'customer' || g || '@example.com', '+45 ' || (10000000 + g),
  'City ' || (g % 500), (ARRAY['DK','SE','NO','DE'])[1 + g % 4], (g % 100000) / 4.0, g % 7, date '2020-01-01' + g % 1500,
  now() - interval '1 second' * g
FROM generate_series(1, :n) g"""
CONFIG = """apps:
  src: {{url: "{src}"}}
  dst: {{url: "{dst}"}}
mappings:
  - name: CUSTOMER
    local:       {{app: src, table: customers, key: id, modified: modified_at}}
    integration: {{app: dst, table: accounts, key: account_id, modified: modifiedon}}
    direction: {direction}
    schedule: "every 1d"
    deletion_scan: every 10m                # big table: scan coupled keys for deletions every 10 min, not every job
    fields:
"""
FIELDS = "".join(f"      - {{local: {c.strip()}, integration: {c.strip()}}}\n" for c in COLUMNS.split(","))


@contextmanager
def databases(*names: str) -> Iterator[dict[str, str]]:
    admin = sa.create_engine(PG.format("postgres"), isolation_level="AUTOCOMMIT")
    real = {n: f"bench_{n}_{uuid.uuid4().hex[:8]}" for n in names}
    with admin.connect() as conn:
        for db in real.values():
            conn.execute(sa.text(f'CREATE DATABASE "{db}"'))
    try:
        yield {n: PG.format(db) for n, db in real.items()}
    finally:
        with admin.connect() as conn:
            for db in real.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


def execute(url: str, sql: str, **params: Any) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in sql.split(";\n"):
            conn.execute(sa.text(statement), params)
    engine.dispose()


def plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def copy_pipe(src: str, dst: str) -> float:
    """The physical baseline: rows streamed between the two databases by COPY, no per-row work."""
    execute(dst, "TRUNCATE accounts")
    started = time.perf_counter()
    with psycopg.connect(plain(src)) as a, psycopg.connect(plain(dst)) as b:
        with a.cursor().copy(f"COPY (SELECT {COLUMNS} FROM customers) TO STDOUT") as out, \
                b.cursor().copy(f"COPY accounts ({COLUMNS}) FROM STDIN") as into:
            for block in out:
                into.write(block)
    took = time.perf_counter() - started
    execute(dst, "TRUNCATE accounts")
    return took


def with_password(url: str) -> str:
    """dlt's postgres credentials insist on a password; trust authentication ignores it."""
    return plain(url).replace("postgres@", "postgres:unused@")


def dlt_run(src: str, dst: str, backend: str, run: int = 0) -> float | None:
    try:
        import dlt  # type: ignore[import-not-found]
        from dlt.sources.sql_database import sql_table  # type: ignore[import-not-found]
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DLT_DATA_DIR"] = tmp
        pipeline = dlt.pipeline(pipeline_name=f"bench_{backend}", destination=dlt.destinations.postgres(credentials=with_password(dst)),
                                dataset_name=f"dlt_{backend}_{run}", pipelines_dir=tmp)
        source = sql_table(credentials=plain(src), table="customers", backend=backend)
        started = time.perf_counter()
        pipeline.run(source, loader_file_format="parquet" if backend == "pyarrow" else None)
        took = time.perf_counter() - started
    counts = []
    for url, table in ((src, "customers"), (dst, f"dlt_{backend}_{run}.customers")):
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            counts.append(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar())
        engine.dispose()
    execute(dst, f"DROP SCHEMA dlt_{backend}_{run} CASCADE")  # the next run starts from an empty destination
    if counts[0] != counts[1]:
        raise RuntimeError(f"dlt ({backend}) loaded {counts[1]} of {counts[0]} rows")
    return took


class Tablesync:
    """One worker process and the CLI, against a store of their own."""

    def __init__(self, urls: dict[str, str], tmp: Path, config: str | None = None, processes: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        ns = f"bench-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "TABLESYNC_STORE_URL": urls["store"], "TABLESYNC_BROKER_URL": REDIS,
                    "TABLESYNC_BROKER_NAMESPACE": ns, "TABLESYNC_QUEUE": ns, "TABLESYNC_CONFIG": str(tmp / "t.yaml"),
                    "PYTHONPATH": str(ROOT), **(env or {})}
        (tmp / "t.yaml").write_text(config or CONFIG.format(src=urls["src"], dst=urls["dst"], direction="to_integration") + FIELDS)
        self.store = sa.create_engine(urls["store"], poolclass=sa.pool.NullPool)
        self.cli("db", "upgrade")
        self.cli("config", "apply")
        log = open(tmp / "worker.log", "w")
        self.worker = subprocess.Popen([sys.executable, "-m", "tablesync.console.cli", "worker", "--processes", str(processes),
                                        "--threads", "1"],
                                       env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.peak_rss_mb = 0.0

    def cli(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "tablesync.console.cli", *args], env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            log = self.tmp / "worker.log"
            raise RuntimeError(f"tablesync {' '.join(args)}: {proc.stderr}\n{log.read_text()[-3000:] if log.exists() else ''}")
        return proc.stdout

    def sync(self, *extra: str) -> dict[str, Any]:
        """`tablesync sync`, then the job row polled from the store with one query per 0.2 s: a
        `tablesync job` process per poll would take a core's share from the job it measures."""
        job_id = int(self.cli("sync", "CUSTOMER", *extra).strip())
        from tablesync.store.schema import jobs

        while True:
            with self.store.connect() as conn:
                job = dict(conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()._mapping)
            self.peak_rss_mb = max(self.peak_rss_mb, self._rss_mb())
            if job["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)
        if job["status"] != "succeeded" or job["failed"]:
            raise RuntimeError(f"job failed: {job}")
        job["seconds"] = (job["finished_at"] - job["started_at"]).total_seconds()
        return job

    def _rss_mb(self) -> float:
        """Peak resident set (VmHWM) over the worker's process tree."""
        peak = 0
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            if int(fields.get("PPid", "0").strip()) == self.worker.pid or status.parent.name == str(self.worker.pid):
                peak = max(peak, int(fields.get("VmHWM", "0 kB").split()[0]))
        return peak / 1024

    def stop(self) -> None:
        os.killpg(self.worker.pid, signal.SIGTERM)
        self.worker.wait(timeout=30)


def measure(rows: int, runs: int, changes: int, tmp: Path, baselines: bool) -> dict[str, list[float]]:
    """Every path `runs` times on one `rows`-row source: seconds per path, and the worker's peak RSS."""
    out: dict[str, list[float]] = {"pipe": [], "initial": [], "incremental": [], "dlt_pyarrow": [], "dlt_default": [], "rss": []}
    with databases("src", "dst") as urls:
        execute(urls["src"], SOURCE_DDL)
        execute(urls["src"], FILL, n=rows)
        execute(urls["dst"], TARGET_DDL)
        for run in range(runs):
            if baselines:
                out["pipe"].append(copy_pipe(urls["src"], urls["dst"]))
            with databases("store") as store:
                ts = Tablesync({**urls, "store": store["store"]}, tmp)
                try:
                    job = ts.sync()
                    assert job["inserted"] == rows, job
                    out["initial"].append(job["seconds"])
                    execute(urls["src"], "UPDATE customers SET phone = phone || 'x', modified_at = now() "
                                         "WHERE id IN (SELECT id FROM customers ORDER BY random() LIMIT :k)", k=changes)
                    job = ts.sync()
                    assert job["modified"] == changes, job
                    out["incremental"].append(job["seconds"])
                    out["rss"].append(ts.peak_rss_mb)
                finally:
                    ts.stop()
            execute(urls["dst"], "TRUNCATE accounts")
            if baselines:
                for backend, key in (("pyarrow", "dlt_pyarrow"), ("sqlalchemy", "dlt_default")):
                    took = dlt_run(urls["src"], urls["dst"], backend, run)
                    if took is not None:
                        out[key].append(took)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--changes", type=int, default=1000)
    args = ap.parse_args()
    small_rows = max(args.rows // 10, args.changes)
    with tempfile.TemporaryDirectory() as tmp:
        big = measure(args.rows, args.runs, args.changes, Path(tmp), baselines=True)
        small = measure(small_rows, args.runs, args.changes, Path(tmp), baselines=False)
    med = {k: statistics.median(v) for k, v in big.items() if v}
    inc_small = statistics.median(small["incremental"])
    rate = {"copy_pipe": args.rows / med["pipe"], "tablesync": args.rows / med["initial"]}
    for key in ("dlt_pyarrow", "dlt_default"):
        if key in med:
            rate[key] = args.rows / med[key]
    peak = max(big["rss"])

    def runs(key: str) -> str:
        return ", ".join(f"{t:.2f}" for t in big[key])

    print(f"{args.rows:,} rows, {args.runs} runs each, medians")
    print(f"  {'path':<30} {'seconds':>9} {'rows/s':>10}   runs")
    print(f"  {'COPY pipe (baseline)':<30} {med['pipe']:9.2f} {rate['copy_pipe']:10,.0f}   {runs('pipe')}")
    for key, label in (("dlt_pyarrow", "dlt, pyarrow backend, parquet"), ("dlt_default", "dlt, default backend")):
        if key in med:
            print(f"  {label:<30} {med[key]:9.2f} {rate[key]:10,.0f}   {runs(key)}")
    print(f"  {'tablesync initial sync':<30} {med['initial']:9.2f} {rate['tablesync']:10,.0f}   {runs('initial')}")
    print(f"  tablesync incremental, {args.changes:,} changed rows: {med['incremental']:.3f} s in {args.rows:,} "
          f"({runs('incremental')}), {inc_small:.3f} s in {small_rows:,}: ratio {med['incremental'] / inc_small:.2f}")
    print(f"  tablesync / COPY pipe: {rate['tablesync'] / rate['copy_pipe']:.3f}"
          + (f"   tablesync / dlt pyarrow: {rate['tablesync'] / rate['dlt_pyarrow']:.3f}" if "dlt_pyarrow" in rate else ""))
    print(f"  worker peak RSS: {peak:.0f} MB")
    result = {"rows": args.rows, "runs": args.runs, "copy_pipe_s": med["pipe"], "tablesync_initial_s": med["initial"],
              "tablesync_incremental_s": med["incremental"], "tablesync_incremental_small_s": inc_small,
              "small_rows": small_rows, "incremental_ratio_big_vs_small": med["incremental"] / inc_small,
              "changes": args.changes, "rows_per_s": rate, "ratio_tablesync_vs_copy": rate["tablesync"] / rate["copy_pipe"],
              "worker_peak_rss_mb": peak}
    if "dlt_pyarrow" in rate:
        result["ratio_tablesync_vs_dlt"] = rate["tablesync"] / rate["dlt_pyarrow"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
