"""The PromQL of the shipped dashboard and alert rules, and the metric names it reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import promql_parser
import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboards" / "grafana" / "dashboards" / "tablesync.json"
ALERTS = ROOT / "dashboards" / "prometheus" / "alerts.yml"
PROMETHEUS_OWN = {"up"}  # made by Prometheus for every target, not exported by a process
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$mapping": ".*"}


def expressions() -> dict[str, str]:
    """{where: PromQL} for every dashboard target, variable and alert rule, Grafana's variables filled in."""
    board = json.loads(DASHBOARD.read_text())
    found = {f"panel {p['title']!r} {t['refId']}": t["expr"] for p in board["panels"] for t in p["targets"]}
    for var in board["templating"]["list"]:
        if var["type"] == "query":  # label_values(METRIC, label): Grafana's, not PromQL
            found[f"variable {var['name']}"] = var["definition"].removeprefix("label_values(").split(",")[0]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        found.update({f"alert {r['alert']}": r["expr"] for r in group["rules"]})
    for where, expr in found.items():
        for name, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(name, value)
        found[where] = expr
    return found


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()
    _walk(promql_parser.parse(expr), names)
    return names


def _walk(node: Any, names: set[str]) -> None:
    if type(node).__name__ == "VectorSelector":
        assert node.name, f"a selector without a metric name: {node}"
        names.add(node.name)
        return
    for attr in ("lhs", "rhs", "expr", "param", "vector_selector"):
        child = getattr(node, attr, None)
        if child is not None:
            _walk(child, names)
    for arg in getattr(node, "args", None) or ():
        _walk(arg, names)
