"""Bidirectional incremental: changes on both sides, some conflicting, merged in one job.

    python benchmarks/bidirectional_bench.py [--rows 100000] [--changes 1000] [--conflicts 50] [--runs 3]

Both tables start coupled (an initial bidirectional sync of `--rows` ERP records, its echo, and one
small change per side so that the overlap window no longer covers the bulk load). Then each side
changes `--changes` random records in different fields, `--conflicts` of them changed on both
sides in the same field. The job must merge the rest both ways and report exactly the conflicts.
Real path: PostgreSQL store, Redis, a worker process. Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sync_bench import CONFIG, FILL, SOURCE_DDL, TARGET_DDL, Tablesync, databases, execute  # noqa: E402

FIELDS = "".join(f"      - {{local: {c}, integration: {c}}}\n" for c in ("number", "name", "email", "phone", "city"))
CHANGE_LOCAL = """UPDATE customers SET phone = phone || 'L', modified_at = now()
WHERE id IN (SELECT id FROM customers WHERE id > :k ORDER BY random() LIMIT :n)"""
CHANGE_REMOTE = """UPDATE accounts SET city = city || 'R', modifiedon = now()
WHERE number IN (SELECT number FROM accounts WHERE number > (SELECT 'C' || lpad(CAST(:k AS text), 8, '0')) ORDER BY random() LIMIT :n)"""
CONFLICT_LOCAL = "UPDATE customers SET name = name || ' (ERP)', modified_at = now() WHERE id <= :k"
CONFLICT_REMOTE = """UPDATE accounts SET name = name || ' (CRM)', modifiedon = now()
WHERE number <= (SELECT 'C' || lpad(CAST(:k AS text), 8, '0'))"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--conflicts", type=int, default=50)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    times = []
    for _ in range(args.runs):
        with databases("src", "dst", "store") as urls, tempfile.TemporaryDirectory() as tmp:
            execute(urls["src"], SOURCE_DDL)
            execute(urls["src"], FILL, n=args.rows)
            execute(urls["src"], "CREATE SEQUENCE customers_id_seq START 100000000;\n"  # records may be created here too
                                 "ALTER TABLE customers ALTER COLUMN id SET DEFAULT nextval('customers_id_seq')")
            execute(urls["dst"], TARGET_DDL)
            ts = Tablesync(urls, Path(tmp), CONFIG.format(src=urls["src"], dst=urls["dst"], direction="bidirectional") + FIELDS)
            try:
                assert ts.sync()["inserted"] == args.rows
                ts.sync()  # the echo of the initial inserts, once
                # One small change per side moves both watermarks past the bulk load, whose last
                # seconds the overlap would otherwise re-read: the measured job is a steady-state one.
                execute(urls["src"], "UPDATE customers SET modified_at = now() WHERE id = 1")
                execute(urls["dst"], "UPDATE accounts SET modifiedon = now() WHERE number = 'C00000001'")
                ts.sync()
                k, n = args.conflicts, args.changes - args.conflicts
                execute(urls["src"], CONFLICT_LOCAL, k=k)
                execute(urls["dst"], CONFLICT_REMOTE, k=k)
                execute(urls["src"], CHANGE_LOCAL, k=k, n=n)
                execute(urls["dst"], CHANGE_REMOTE, k=k, n=n)
                job = ts.sync()
                assert job["conflicts"] == args.conflicts, job
                times.append(job["seconds"])
            finally:
                ts.stop()
    median = statistics.median(times)
    print(f"bidirectional incremental: {args.rows:,} coupled records, {args.changes} changes per side, "
          f"{args.conflicts} conflicting; {args.runs} runs")
    print(f"  job: {median:.3f} s median   runs: {', '.join(f'{t:.3f}' for t in times)}")
    print(json.dumps({"rows": args.rows, "changes_per_side": args.changes, "conflicts": args.conflicts,
                      "runs": args.runs, "job_s_median": median, "job_s": times}))


if __name__ == "__main__":
    main()
