"""A chunked first run with 1, 2 and 4 worker processes, against the same run unchunked.

    python benchmarks/scale_bench.py [--rows 1000000] [--runs 3] [--chunk-rows 50000]

Each configuration syncs the same `rows`-row source into an empty target through the real path
(`sync_bench.Tablesync`: a store on PostgreSQL, the Redis broker, `tablesync worker` with one
thread per process), `runs` times, interleaved, so that the machine's drift hits all alike:

- `unchunked`: one process, TABLESYNC_CHUNK_ROWS above the row count (the run in one piece);
- `chunked_N`: N processes, chunks of `chunk_rows`.

Reported: medians of seconds and rows/s, each chunked figure's ratio to `chunked_1`, and
`chunked_1 / unchunked` (the cost of chunking). And the CPU split of a chunked run: CPU seconds of
the worker processes against those of the rest of the machine (PostgreSQL above all: the source
read, the target COPY, the store) per chunk, which says how far N machines of workers would go
before the databases bound it. Last, one line of JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from sync_bench import FILL, SOURCE_DDL, TARGET_DDL, Tablesync, databases, execute  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (all cores, /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICK


def tree_cpu(root: int) -> float:
    """CPU seconds of process `root` and its children (the Dramatiq worker processes)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parts = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(stat.parent.name), int(parts[1])
        if pid == root or ppid == root:
            total += (int(parts[11]) + int(parts[12])) / TICK  # utime, stime
    return total


def one(urls: dict[str, str], tmp: Path, rows: int, processes: int, chunk_rows: int) -> dict[str, Any]:
    execute(urls["dst"], "TRUNCATE accounts")
    with databases("store") as store:
        ts = Tablesync({**urls, "store": store["store"]}, tmp, processes=processes,
                       env={"TABLESYNC_CHUNK_ROWS": str(chunk_rows)})
        try:
            busy, worker = machine_busy(), tree_cpu(ts.worker.pid)
            job = ts.sync()
            worker_cpu = tree_cpu(ts.worker.pid) - worker
            total_cpu = machine_busy() - busy
            assert job["inserted"] == rows, job
            return {"seconds": job["seconds"], "chunks": job["chunks"] or 1, "worker_cpu": worker_cpu,
                    "other_cpu": max(total_cpu - worker_cpu, 0.0), "rss": ts.peak_rss_mb}
        finally:
            ts.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chunk-rows", type=int, default=50_000)
    args = ap.parse_args()
    configs = {"unchunked": (1, args.rows * 10), "chunked_1": (1, args.chunk_rows), "chunked_2": (2, args.chunk_rows),
               "chunked_4": (4, args.chunk_rows)}
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in configs}
    with tempfile.TemporaryDirectory() as tmp, databases("src", "dst") as urls:
        execute(urls["src"], SOURCE_DDL)
        execute(urls["src"], FILL, n=args.rows)
        execute(urls["dst"], TARGET_DDL)
        for _ in range(args.runs):
            for name, (processes, chunk_rows) in configs.items():
                out[name].append(one(urls, Path(tmp), args.rows, processes, chunk_rows))
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in out.items()}
    rate = {k: args.rows / s for k, s in med.items()}
    split = out["chunked_1"]
    chunks = split[0]["chunks"]
    worker_per_chunk = statistics.median(r["worker_cpu"] for r in split) / chunks
    other_per_chunk = statistics.median(r["other_cpu"] for r in split) / chunks
    print(f"{args.rows:,} rows, chunks of {args.chunk_rows:,} ({chunks} chunks), {args.runs} runs each, medians")
    print(f"  {'configuration':<14} {'seconds':>8} {'rows/s':>9} {'vs chunked_1':>13}   runs")
    for name in configs:
        runs = ", ".join(f"{r['seconds']:.2f}" for r in out[name])
        print(f"  {name:<14} {med[name]:8.2f} {rate[name]:9,.0f} {rate[name] / rate['chunked_1']:13.2f}   {runs}")
    print(f"  chunked_1 / unchunked: {rate['chunked_1'] / rate['unchunked']:.3f}")
    print(f"  per chunk of {args.chunk_rows:,} rows: worker CPU {worker_per_chunk:.2f} s, the rest of the machine "
          f"(PostgreSQL: source, target, store) {other_per_chunk:.2f} s")
    print(f"  peak RSS of one worker process tree: {max(r['rss'] for v in out.values() for r in v):.0f} MB")
    result = {"rows": args.rows, "runs": args.runs, "chunk_rows": args.chunk_rows, "chunks": chunks, "seconds": med,
              "rows_per_s": rate, "ratio_to_chunked_1": {k: rate[k] / rate["chunked_1"] for k in configs},
              "ratio_chunked_1_vs_unchunked": rate["chunked_1"] / rate["unchunked"],
              "worker_cpu_s_per_chunk": worker_per_chunk, "other_cpu_s_per_chunk": other_per_chunk,
              "peak_rss_mb": max(r["rss"] for v in out.values() for r in v)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
