"""Scheduler overhead with many idle mappings, and the cost of an idle run.

    python benchmarks/scheduler_bench.py [--mappings 1000] [--seconds 60]

`--mappings` mappings on 10 s intervals over a small table that never changes, one scheduler
process and one worker process (2 threads), both real, with the store on PostgreSQL and Redis as
broker. Reports the scheduler's CPU use (from /proc, as a share of one core) over the window, the
jobs that ran, and the median duration of an idle job. Prints a final line of JSON.
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
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_bench import REDIS, ROOT, databases, execute  # noqa: E402

MAPPING = """  - name: M{i:04d}
    local:       {{app: src, table: items, key: id, modified: modified_at}}
    integration: {{app: dst, table: items_copy, key: id, modified: modified_at}}
    direction: to_integration
    schedule: "every 10s"
    fields:
      - {{local: id, integration: id}}
      - {{local: name, integration: name}}
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mappings", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with databases("src", "dst", "store") as urls, tempfile.TemporaryDirectory() as tmp:
        execute(urls["src"], "CREATE TABLE items (id int PRIMARY KEY, name text, modified_at timestamptz NOT NULL DEFAULT now());\n"
                             "INSERT INTO items (id, name) SELECT g, 'item ' || g FROM generate_series(1, 100) g")
        # One target table per mapping would be realistic but slow to create; mappings share one
        # source and target: after the first run every mapping's records are coupled and unchanged.
        execute(urls["dst"], "CREATE TABLE items_copy (id int PRIMARY KEY, name text, modified_at timestamptz NOT NULL DEFAULT now())")
        config = Path(tmp) / "t.yaml"
        config.write_text(f'apps:\n  src: {{url: "{urls["src"]}"}}\n  dst: {{url: "{urls["dst"]}"}}\nmappings:\n'
                          + "".join(MAPPING.format(i=i) for i in range(args.mappings)))
        ns = f"bench-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "TABLESYNC_STORE_URL": urls["store"], "TABLESYNC_BROKER_URL": REDIS,
               "TABLESYNC_BROKER_NAMESPACE": ns, "TABLESYNC_QUEUE": ns, "TABLESYNC_CONFIG": str(config),
               "PYTHONPATH": str(ROOT)}
        for cmd in (["db", "upgrade"], ["config", "apply", "--skip-live-check"]):
            subprocess.run([sys.executable, "-m", "tablesync.console.cli", *cmd], env=env, check=True, capture_output=True)
        procs = [subprocess.Popen([sys.executable, "-m", "tablesync.console.cli", *cmd], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
                 for cmd in (["scheduler"], ["worker", "--processes", "1", "--threads", "2"])]
        scheduler = procs[0]
        try:
            time.sleep(15)  # the first round: every mapping's initial sync
            started, cpu0 = time.monotonic(), cpu_seconds(scheduler.pid)
            time.sleep(args.seconds)
            elapsed, cpu = time.monotonic() - started, cpu_seconds(scheduler.pid) - cpu0
        finally:
            for p in procs:
                os.killpg(p.pid, signal.SIGTERM)
            for p in procs:
                p.wait(timeout=30)
        store = sa.create_engine(urls["store"])
        with store.connect() as conn:
            idle = [float(r[0]) for r in conn.execute(sa.text(
                "SELECT extract(epoch FROM finished_at - started_at) FROM jobs WHERE status = 'succeeded' "
                "AND inserted = 0 AND modified = 0"))]
            ticks = conn.execute(sa.text("SELECT count(*) FROM schedule_ticks")).scalar()
        store.dispose()
    share = 100 * cpu / elapsed
    idle_ms = 1000 * statistics.median(idle) if idle else float("nan")
    print(f"{args.mappings} mappings every 10 s, {elapsed:.0f} s window")
    print(f"  scheduler CPU: {share:.1f}% of one core   ticks claimed: {ticks}")
    print(f"  idle jobs run: {len(idle)}   median idle job: {idle_ms:.1f} ms")
    print(json.dumps({"mappings": args.mappings, "window_s": elapsed, "scheduler_cpu_percent": share,
                      "idle_jobs": len(idle), "idle_job_ms_median": idle_ms, "ticks": ticks}))


if __name__ == "__main__":
    main()
