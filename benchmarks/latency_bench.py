"""Change → visible in the target: how long a change in the source app takes to reach the other app.

    python benchmarks/latency_bench.py [--changes 200] [--runs 3] [--sources postgresql,mariadb] [--modes log,poll,schedule]

For each source (a PostgreSQL server of the benchmark's own with wal_level=logical and wal2json; a
MariaDB server of its own with a ROW binlog) and each way a change is noticed:
- `log`: `tablesync listen` follows the change log (schedule every 1h: only the log wakes the mapping);
- `poll`: `tablesync listen` probes max(modified) (schedule every 1h);
- `schedule`: no listener, the scheduler's `every 1s` ticks (the fastest schedule there is);
the benchmark updates one source row at a time, each with a unique value and its wall-clock time,
and polls the target (PostgreSQL) every 5 ms for the values that arrived. Half the changes come at a
steady rate (5 a second), half in bursts (10 at once, every 2 s). Latency is first seen in the
target minus committed in the source. Real path: store on PostgreSQL, Redis broker, one
`tablesync worker` process with 2 threads, `tablesync listen` or `tablesync scheduler`.
Prints a table and, last, one line of JSON with p50/p95/p99 per source and mode, and the jobs a
minute each mode ran while the changes came (what it costs: `every 1s` runs a job a second per
mapping whether anything changed or not; `log` and `poll` run only when something did).

Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust), Redis on 127.0.0.1:6379, initdb/pg_ctl
with wal2json (Debian postgresql-15-wal2json) and mariadbd (for servers of the benchmark's own).
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
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sync_bench import REDIS, ROOT, databases  # noqa: E402

from tests.conftest import free_port, logical_options, own_mariadb, own_postgres_server  # noqa: E402

ROWS = 50
CONFIG = """apps:
  erp: {{url: "{src}", change_capture: {capture}}}
  crm: {{url: "{dst}"}}
mappings:
  - name: CUSTOMER
    local:       {{app: erp, table: customers, key: id, modified: modified_at}}
    integration: {{app: crm, table: accounts, key: id, modified: modified_at}}
    direction: to_integration
    schedule: "{schedule}"
    fields:
      - {{local: id, integration: id, direction: to_integration}}
      - {{local: name, integration: name}}
"""


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


@contextmanager
def source_database(kind: str) -> Iterator[str]:
    """A database on a server of the benchmark's own, with its change log on."""
    if kind == "postgresql":
        server = own_postgres_server(logical_options())
        pg = next(server)
        try:
            yield pg.create_db("erp")
        finally:
            server.close()
    else:
        servers = own_mariadb()
        maria = next(servers)
        try:
            yield maria.create_db("erp")
        finally:
            servers.close()


class Deployment:
    """Store, worker and listener (or scheduler) processes of their own for one measurement."""

    def __init__(self, urls: dict[str, str], tmp: Path, config: str, mode: str) -> None:
        ns = f"lat-{uuid.uuid4().hex[:8]}"
        self.env = {**os.environ, "TABLESYNC_STORE_URL": urls["store"], "TABLESYNC_BROKER_URL": REDIS,
                    "TABLESYNC_BROKER_NAMESPACE": ns, "TABLESYNC_QUEUE": ns, "TABLESYNC_CONFIG": str(tmp / "t.yaml"),
                    "PYTHONPATH": str(ROOT), "TABLESYNC_WORKER_METRICS_PORT": str(free_port()),
                    "TABLESYNC_SCHEDULER_METRICS_PORT": str(free_port()), "TABLESYNC_LISTEN_METRICS_PORT": str(free_port())}
        self.tmp = tmp
        (tmp / "t.yaml").write_text(config)
        self.cli("db", "upgrade")
        self.cli("config", "apply")
        self.processes = [self.start("worker", "--processes", "1", "--threads", "2")]
        self.cli("sync", "CUSTOMER", "--wait")  # the initial sync, outside the measure
        self.processes.append(self.start("scheduler") if mode == "schedule" else self.start("listen"))

    def jobs(self) -> int:
        """Jobs the store has made so far: what each way of noticing changes costs."""
        engine = sa.create_engine(self.env["TABLESYNC_STORE_URL"], poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            count = int(conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())
        engine.dispose()
        return count

    def cli(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "tablesync.console.cli", *args], env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"tablesync {' '.join(args)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{args[0]}.log", "w")
        return subprocess.Popen([sys.executable, "-m", "tablesync.console.cli", *args], env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        for p in self.processes:
            os.killpg(p.pid, signal.SIGTERM)
        for p in self.processes:
            p.wait(timeout=30)


def create_tables(src: str, dst: str) -> None:
    for url, name, modified in ((src, "customers", "modified_at"), (dst, "accounts", "modified_at")):
        engine = sa.create_engine(url)
        md = sa.MetaData()
        table = sa.Table(name, md, sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
                         sa.Column("name", sa.String(100), nullable=False),
                         sa.Column(modified, sa.DateTime(timezone=True), nullable=False, index=True,
                                   server_default=sa.func.now()))
        md.create_all(engine)
        if name == "customers":
            at = datetime.now(timezone.utc) - timedelta(minutes=1)
            if engine.dialect.name != "postgresql":
                at = at.replace(tzinfo=None)  # a DATETIME holds UTC without its zone
            with engine.begin() as conn:
                conn.execute(table.insert(), [{"id": i, "name": f"customer {i}", modified: at} for i in range(1, ROWS + 1)])
        engine.dispose()


def measure(src: str, dst: str, changes: int) -> dict[str, list[float]]:
    """Update source rows (half steadily, half in bursts); returns the latencies (s) per pattern."""
    written: dict[str, tuple[str, float]] = {}
    seen: dict[str, float] = {}
    done = threading.Event()

    def watch() -> None:
        engine = sa.create_engine(dst, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            while not done.is_set() or len(seen) < len(written):
                for (name,) in conn.execute(sa.text("SELECT name FROM accounts WHERE name LIKE 'v%'")):
                    seen.setdefault(name, time.time())
                conn.commit()
                if done.is_set() and time.time() - last_write[0] > 60:
                    break  # what never arrives is reported missing
                time.sleep(0.005)

    last_write = [time.time()]
    watcher = threading.Thread(target=watch)
    watcher.start()
    engine = sa.create_engine(src, poolclass=sa.pool.NullPool)
    now = "now(6)" if engine.dialect.name in ("mysql", "mariadb") else "now()"
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")

        def change(n: int, pattern: str) -> None:
            value = f"v{n}-{uuid.uuid4().hex[:6]}"
            conn.execute(sa.text(f"UPDATE customers SET name = :v, modified_at = {now} WHERE id = :id"),
                         {"v": value, "id": n % ROWS + 1})
            written[value] = (pattern, time.time())
            last_write[0] = time.time()

        steady = changes // 2
        for n in range(steady):
            change(n, "steady")
            time.sleep(0.2)
        n = steady
        while n < changes:
            for _ in range(min(10, changes - n)):
                change(n, "burst")
                n += 1
            time.sleep(2.0)
    done.set()
    watcher.join()
    engine.dispose()
    out: dict[str, list[float]] = {"steady": [], "burst": [], "missing": []}
    for value, (pattern, at) in written.items():
        if value in seen:
            out[pattern].append(seen[value] - at)
        else:
            out["missing"].append(at)
    return out


def stats(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    return {"p50": round(percentile(latencies, 50), 3), "p95": round(percentile(latencies, 95), 3),
            "p99": round(percentile(latencies, 99), 3), "max": round(max(latencies), 3)}


def one_run(src: str, mode: str, changes: int) -> dict[str, Any]:
    """One measure of one mode on a fresh store and target: its latencies' percentiles."""
    with ExitStack() as stack:
        urls = stack.enter_context(databases("store", "dst"))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        engine = sa.create_engine(src)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS customers"))
        engine.dispose()
        create_tables(src, urls["dst"])
        config = CONFIG.format(src=src, dst=urls["dst"], capture="schedule" if mode == "schedule" else mode,
                               schedule="every 1s" if mode == "schedule" else "every 1h")
        deployment = Deployment(urls, tmp, config, mode)
        stack.callback(deployment.stop)
        time.sleep(3)  # the listener follows (or the scheduler ticks) before the first change
        jobs_before, started = deployment.jobs(), time.monotonic()
        latencies = measure(src, urls["dst"], changes)
        jobs_per_minute = (deployment.jobs() - jobs_before) / (time.monotonic() - started) * 60
    return {"all": stats(latencies["steady"] + latencies["burst"]), "steady": stats(latencies["steady"]),
            "burst": stats(latencies["burst"]), "missing": len(latencies["missing"]), "jobs_per_minute": round(jobs_per_minute, 1)}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs (missing: their sum)."""
    out: dict[str, Any] = {"missing": sum(r["missing"] for r in runs),
                           "jobs_per_minute": round(statistics.median(r["jobs_per_minute"] for r in runs), 1)}
    for part in ("all", "steady", "burst"):
        keys = set().union(*(r[part] for r in runs))
        out[part] = {k: round(statistics.median(r[part][k] for r in runs if k in r[part]), 3) for k in sorted(keys)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--sources", default="postgresql,mariadb")
    parser.add_argument("--modes", default="log,poll,schedule")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measure; each figure is their median")
    args = parser.parse_args()
    results: dict[str, dict[str, Any]] = {}
    for source in args.sources.split(","):
        with source_database(source) as src:
            for mode in args.modes.split(","):
                runs = [one_run(src, mode, args.changes) for _ in range(args.runs)]
                results[f"{source}/{mode}"] = r = median_run(runs)
                print(f"{source:10} {mode:8} p50 {r['all'].get('p50', '-'):>6} s  p95 {r['all'].get('p95', '-'):>6} s  "
                      f"p99 {r['all'].get('p99', '-'):>6} s  (steady p50 {r['steady'].get('p50', '-')}, burst p50 "
                      f"{r['burst'].get('p50', '-')}, missing {r['missing']}; {r['jobs_per_minute']} jobs/min)", flush=True)
    print(json.dumps({"changes": args.changes, "runs": args.runs, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
