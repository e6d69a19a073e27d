"""The benchmarks run end to end on small data, so they never rot. No timing is asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_sync_benchmark_smoke() -> None:
    out = run("sync_bench.py", "--rows", "10000", "--runs", "1", "--changes", "100")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rows"] == 10000 and result["rows_per_s"]["tablesync"] > 0 and result["worker_peak_rss_mb"] > 0


def test_record_events_benchmark_smoke() -> None:
    out = run("record_events.py", "--rows", "5000", "--runs", "1")
    assert "ratio with/without" in out


def test_bidirectional_benchmark_smoke() -> None:
    out = run("bidirectional_bench.py", "--rows", "5000", "--runs", "1", "--changes", "100", "--conflicts", "10")
    assert json.loads(out.strip().splitlines()[-1])["conflicts"] == 10


def test_console_benchmark_smoke() -> None:
    out = run("console_bench.py", "--errors", "200", "--runs", "1")
    assert "console with 200 skipped couplings" in out and "GET /errors (page)" in out


def test_odata_benchmark_smoke() -> None:
    from tests.integration.odata_server import SERVE

    if not SERVE.exists() and not os.environ.get("CI"):
        pytest.skip("the test OData server is not installed: run `npm ci` in tests/odata_crm")
    out = run("odata_bench.py", "--rows", "200", "--runs", "1", "--changes", "20")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rows"] == 200 and result["initial_records_per_s"]["tablesync"] > 0


def test_latency_benchmark_smoke() -> None:
    out = run("latency_bench.py", "--changes", "6", "--modes", "log", "--runs", "1")
    results = json.loads(out.strip().splitlines()[-1])["results"]
    assert set(results) == {"postgresql/log", "mariadb/log"}
    assert all(r["missing"] == 0 and r["all"]["p50"] > 0 for r in results.values()), results


def test_probe_cost_benchmark_smoke() -> None:
    out = run("probe_cost_bench.py", "--mappings", "20", "--seconds", "2", "--changing", "2", "--warmup", "3")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["mappings"] == 20 and result["probe_statements"] > 0 and result["listen_idle"]["process_core_share"] >= 0
