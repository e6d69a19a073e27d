"""What `change_capture: poll` costs: `tablesync listen` probing 1,000 mappings' source tables.

    python benchmarks/probe_cost_bench.py [--mappings 1000] [--seconds 60] [--changing 10]

`--mappings` mappings, each over a source table of its own (one app, PostgreSQL, `change_capture:
poll`, schedule every 1m), and one `tablesync listen` process, with the store on PostgreSQL and
Redis as broker (no worker: the woken jobs wait in the queue, which costs the listener nothing
more). After a warm-up (the first probes, and the wake-ups of mappings that never ran), two windows:
idle (nothing changes: every table's probe backs off to the schedule's minute), then `--changing`
tables updated twice a second (their probes stay at 0.5 s). Reports the listener's CPU (from
/proc, as a share of one core) and the PostgreSQL backends' CPU in each window; baseline, measured
in the same run over the same mappings: `tablesync scheduler` alone (what every deployment runs).
Prints a final line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scheduler_bench import cpu_seconds  # noqa: E402
from sync_bench import REDIS, ROOT, databases  # noqa: E402

from tests.conftest import free_port  # noqa: E402

MAPPING = """  - name: M{i:04d}
    local:       {{app: src, table: t{i:04d}, key: id, modified: modified_at}}
    integration: {{app: dst, table: t{i:04d}, key: id, modified: modified_at}}
    direction: to_integration
    schedule: "every 1m"
    fields:
      - {{local: name, integration: name}}
"""
TABLES = """DO $$ BEGIN FOR i IN 0..{last} LOOP
  EXECUTE 'CREATE TABLE t' || lpad(i::text, 4, '0')
          || ' (id int PRIMARY KEY, name text, modified_at timestamptz NOT NULL DEFAULT now())';
  EXECUTE 'CREATE INDEX ON t' || lpad(i::text, 4, '0') || ' (modified_at)';
END LOOP; END $$"""


def postgres_cpu() -> float:
    """CPU seconds of every PostgreSQL process on the machine (the benchmark is alone on it)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if Path(stat.parent / "comm").read_text().strip() in ("postgres", "postmaster"):
                total += cpu_seconds(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return total


def window(pid: int, seconds: float) -> dict[str, float]:
    """The process's and PostgreSQL's CPU over `seconds`, as shares of one core."""
    mine, theirs, started = cpu_seconds(pid), postgres_cpu(), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return {"process_core_share": round((cpu_seconds(pid) - mine) / elapsed, 4),
            "postgres_core_share": round((postgres_cpu() - theirs) / elapsed, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mappings", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--changing", type=int, default=10)
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds before the listener's windows (default 30)")
    args = ap.parse_args()
    with databases("src", "dst", "store") as urls, tempfile.TemporaryDirectory() as tmp:
        for db in ("src", "dst"):
            engine = sa.create_engine(urls[db])
            with engine.begin() as conn:
                conn.exec_driver_sql(TABLES.format(last=args.mappings - 1))  # one DO block: not split on ";"
            engine.dispose()
        config = Path(tmp) / "t.yaml"
        config.write_text(f'apps:\n  src: {{url: "{urls["src"]}", change_capture: poll}}\n  dst: {{url: "{urls["dst"]}"}}\n'
                          "mappings:\n" + "".join(MAPPING.format(i=i) for i in range(args.mappings)))
        ns = f"bench-{uuid.uuid4().hex[:8]}"
        env = {**os.environ, "TABLESYNC_STORE_URL": urls["store"], "TABLESYNC_BROKER_URL": REDIS,
               "TABLESYNC_BROKER_NAMESPACE": ns, "TABLESYNC_QUEUE": ns, "TABLESYNC_CONFIG": str(config),
               "PYTHONPATH": str(ROOT), "TABLESYNC_LISTEN_METRICS_PORT": str(free_port()),
               "TABLESYNC_SCHEDULER_METRICS_PORT": str(free_port())}
        for command in (["db", "upgrade"], ["config", "apply", "--skip-live-check"]):
            subprocess.run([sys.executable, "-m", "tablesync.console.cli", *command], env=env, check=True,
                           capture_output=True)

        def start(*command: str) -> subprocess.Popen[bytes]:
            log = open(Path(tmp) / f"{command[0]}.log", "w")
            return subprocess.Popen([sys.executable, "-m", "tablesync.console.cli", *command], env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

        scheduler = start("scheduler")
        time.sleep(args.warmup / 2)  # its first pass reads and parses 1,000 definitions
        baseline = window(scheduler.pid, args.seconds)
        os.killpg(scheduler.pid, signal.SIGTERM)
        scheduler.wait(30)

        listener = start("listen")
        time.sleep(args.warmup)  # the first probes, and a wake-up for every mapping that never ran
        idle = window(listener.pid, args.seconds)
        stop = threading.Event()

        def changes() -> None:
            engine = sa.create_engine(urls["src"], poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                n = 0
                while not stop.is_set():
                    for i in range(args.changing):
                        conn.execute(sa.text(f"INSERT INTO t{i:04d} (id, name) VALUES (:n, 'x') ON CONFLICT (id) "
                                             "DO UPDATE SET name = 'y', modified_at = now()"), {"n": n % 10})
                    n += 1
                    stop.wait(0.5)
            engine.dispose()

        writer = threading.Thread(target=changes)
        writer.start()
        time.sleep(min(5.0, args.warmup))
        busy = window(listener.pid, args.seconds)
        stop.set()
        writer.join()
        probes = sum(float(line.split()[-1]) for line in subprocess.run(
            ["curl", "-s", f"http://127.0.0.1:{env['TABLESYNC_LISTEN_METRICS_PORT']}/metrics"], capture_output=True,
            text=True).stdout.splitlines() if line.startswith("tablesync_capture_probes_total"))
        os.killpg(listener.pid, signal.SIGTERM)
        listener.wait(30)
    print(f"scheduler alone, {args.mappings} mappings: {baseline['process_core_share']:.1%} of a core "
          f"(PostgreSQL {baseline['postgres_core_share']:.1%})")
    print(f"listen, poll, idle:             {idle['process_core_share']:.1%} of a core (PostgreSQL "
          f"{idle['postgres_core_share']:.1%})")
    print(f"listen, poll, {args.changing} tables changing: {busy['process_core_share']:.1%} of a core (PostgreSQL "
          f"{busy['postgres_core_share']:.1%}); {probes:.0f} probe statements in all")
    print(json.dumps({"mappings": args.mappings, "seconds": args.seconds, "changing": args.changing,
                      "scheduler": baseline, "listen_idle": idle, "listen_changing": busy, "probe_statements": probes,
                      "listen_idle_vs_scheduler": round(idle["process_core_share"] / max(baseline["process_core_share"], 1e-4), 2)}))


if __name__ == "__main__":
    main()
