"""The shipped dashboard, Prometheus config and alert rules: generated as committed, valid for
promtool, alerts behaving as their unit tests say, every expression parseable PromQL."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import require_tool
from tests.dashboards import DASHBOARD, ROOT, expressions, metric_names

PROM = ROOT / "dashboards" / "prometheus"
GRAFANA = ROOT / "dashboards" / "grafana"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = require_tool("promtool", "prometheus")
    return subprocess.run([exe, *args], cwd=PROM, capture_output=True, text=True, timeout=120)


def test_committed_dashboard_is_what_build_makes() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "dashboards" / "build.py"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_dashboard_has_fixed_uid_datasource_variable_and_a_clean_grid() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "tablesync-overview"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        assert p["datasource"]["uid"] == "${datasource}" and all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
    titles = " ".join(p["title"] for p in board["panels"]).lower()
    for wanted in ("throughput by outcome", "job outcomes", "p50 / p95", "lag p95", "skipped couplings by mapping",
                   "time since last success", "queue depth", "workers up and messages in progress", "scheduler enqueues"):
        assert wanted in titles


def test_every_expression_is_promql_naming_only_tablesync_dramatiq_or_up() -> None:
    for where, expr in expressions().items():
        names = metric_names(expr)  # raises on a syntax error
        assert names, where
        assert all(n.startswith(("tablesync_", "dramatiq_")) or n == "up" for n in names), (where, names)


def test_prometheus_config_and_rules_pass_promtool() -> None:
    for args in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml")):
        proc = promtool(*args)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_alert_rules_unit_tests() -> None:
    proc = promtool("test", "rules", "alerts.test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize("path", sorted((GRAFANA / "provisioning").rglob("*.yml")), ids=lambda p: p.name)
def test_grafana_provisioning_parses(path) -> None:  # type: ignore[no-untyped-def]
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == 1 and (doc.get("datasources") or doc.get("providers"))
