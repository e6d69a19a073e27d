"""Generates dashboards/grafana/dashboards/tablesync.json, the Grafana dashboard shipped with tablesync.

The JSON is committed (Grafana provisioning reads it as it is); this script is its source, so a
panel is a few lines of Python rather than a hundred of JSON. After editing, run
`python dashboards/build.py`; `python dashboards/build.py --check` fails when the committed JSON
is not what this script makes (the test suite runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "grafana" / "dashboards" / "tablesync.json"
UID = "tablesync-overview"
DS = {"type": "prometheus", "uid": "${datasource}"}
M = 'mapping=~"$mapping"'
RATE = "$__rate_interval"


def target(expr: str, legend: str = "", ref: str = "A", instant: bool = False) -> dict[str, Any]:
    t: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto", "refId": ref}
    if instant:
        t.update(instant=True, range=False, format="table")
    return t


def panel(kind: str, title: str, description: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int],
          unit: str = "short", thresholds: list[tuple[float | None, str]] | None = None,
          options: dict[str, Any] | None = None, custom: dict[str, Any] | None = None) -> dict[str, Any]:
    x, y, w, h = grid
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    return {
        "type": kind, "title": title, "description": description, "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps},
                                     "color": {"mode": "thresholds" if thresholds else "palette-classic"},
                                     "custom": custom or {}},
                        "overrides": []},
        "options": options or {}, "targets": [dict(t, refId=chr(65 + i)) for i, t in enumerate(targets)],
    }


def stat(title: str, description: str, expr: str, x: int, thresholds: list[tuple[float | None, str]],
         unit: str = "short") -> dict[str, Any]:
    return panel("stat", title, description, [target(expr)], (x, 0, 4, 4), unit, thresholds,
                 {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                  "colorMode": "background", "graphMode": "none", "textMode": "value"})


def series(title: str, description: str, targets: list[dict[str, Any]], grid: tuple[int, int, int, int],
           unit: str = "short", stacked: bool = False, bars: bool = False) -> dict[str, Any]:
    custom = {"drawStyle": "bars" if bars else "line", "fillOpacity": 60 if bars else 10, "lineWidth": 1,
              "stacking": {"mode": "normal" if stacked else "none", "group": "A"}, "showPoints": "never"}
    return panel("timeseries", title, description, targets, grid, unit, None,
                 {"legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "max"]},
                  "tooltip": {"mode": "multi", "sort": "desc"}}, custom)


def bars(title: str, description: str, expr: str, legend: str, grid: tuple[int, int, int, int], unit: str,
         thresholds: list[tuple[float | None, str]]) -> dict[str, Any]:
    return panel("bargauge", title, description, [target(expr, legend, instant=True)], grid, unit, thresholds,
                 {"displayMode": "basic", "orientation": "horizontal", "showUnfilled": True,
                  "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})


STALENESS = (f'(time() - max by (mapping) (tablesync_last_success_timestamp_seconds{{{M}}}))'
             f' / max by (mapping) (tablesync_mapping_interval_seconds{{{M}}})')


def panels() -> list[dict[str, Any]]:
    red_if_any = [(None, "green"), (1, "red")]
    return [
        stat("Stale mappings", "Active mappings whose last successful sync is older than 3× their schedule interval "
             "(the TablesyncMappingStale alert).", f"count({STALENESS} > 3) or vector(0)", 0, red_if_any),
        stat("Failed jobs (24 h)", "Jobs that ended failed in the last 24 hours, all kinds.",
             f'sum(increase(tablesync_jobs_total{{status="failed",{M}}}[24h])) or vector(0)', 4,
             [(None, "green"), (1, "orange"), (10, "red")]),
        stat("Skipped couplings", "Records waiting for an operator: the coupled data synchronization errors list.",
             f"sum(max by (mapping, reason) (tablesync_skipped_couplings{{{M}}})) or vector(0)", 8,
             [(None, "green"), (1, "orange")]),
        stat("Dead letters", "Messages Dramatiq gave up on (the .XQ queue).",
             'sum(max by (queue) (tablesync_queue_messages{state="dead"})) or vector(0)', 12, red_if_any),
        stat("Workers up", "Worker metrics endpoints Prometheus reaches.", 'sum(up{job="tablesync-worker"}) or vector(0)',
             16, [(None, "red"), (1, "green")]),
        stat("Messages in progress", "Messages worker threads are running now.",
             "sum(dramatiq_messages_inprogress) or vector(0)", 20, [(None, "blue")]),
        bars("Time since last success", "Per mapping: how long ago its last successful sync ended.",
             f"time() - max by (mapping) (tablesync_last_success_timestamp_seconds{{{M}}})", "{{mapping}}",
             (0, 4, 12, 8), "s", [(None, "green")]),
        bars("Staleness (× schedule interval)", "Time since last success divided by the mapping's schedule "
             "interval: 1 is on time, 3 raises the stale alert.", STALENESS, "{{mapping}}", (12, 4, 12, 8), "x",
             [(None, "green"), (1.5, "orange"), (3, "red")]),
        series("Sync throughput by outcome", "Records per second handled by sync and action jobs, by outcome.",
               [target(f"sum by (outcome) (rate(tablesync_records_total{{{M}}}[{RATE}]))", "{{outcome}}")],
               (0, 12, 12, 8), "rps", stacked=True),
        series("Job outcomes", "Jobs that ended, by status (dropped: the mapping was already running).",
               [target(f"sum by (status) (increase(tablesync_jobs_total{{{M}}}[{RATE}]))", "{{status}}")],
               (12, 12, 12, 8), "short", stacked=True, bars=True),
        series("Job duration p50 / p95", "Wall time of jobs per mapping.",
               [target(f"histogram_quantile({q}, sum by (le, mapping) (rate(tablesync_job_duration_seconds_bucket{{{M}}}[{RATE}])))",
                       f"{{{{mapping}}}} p{int(q * 100)}") for q in (0.5, 0.95)], (0, 20, 12, 8), "s"),
        series("Sync lag p95", "From a change's modified-on at its source to its write on the target.",
               [target(f"histogram_quantile(0.95, sum by (le, mapping, direction) (rate(tablesync_sync_lag_seconds_bucket{{{M}}}[{RATE}])))",
                       "{{mapping}} {{direction}}")], (12, 20, 12, 8), "s"),
        bars("Skipped couplings by mapping and reason", "Couplings skipped until an operator acts on them.",
             f"max by (mapping, reason) (tablesync_skipped_couplings{{{M}}})", "{{mapping}} · {{reason}}",
             (0, 28, 12, 8), "short", [(None, "green"), (1, "orange")]),
        series("Queue depth", "Messages waiting in the broker: ready, delayed (retries, deferred) and dead.",
               [target("max by (queue, state) (tablesync_queue_messages)", "{{queue}} {{state}}")], (12, 28, 12, 8)),
        series("Workers up and messages in progress", "Reachable worker endpoints, and messages being run.",
               [target('sum(up{job="tablesync-worker"})', "workers up"),
                target("sum(dramatiq_messages_inprogress)", "in progress")], (0, 36, 12, 8)),
        series("Scheduler enqueues", "Scheduled sync jobs enqueued, per mapping.",
               [target(f"sum by (mapping) (increase(tablesync_scheduler_enqueued_total{{{M}}}[{RATE}]))", "{{mapping}}")],
               (12, 36, 12, 8), bars=True),
        bars("Chunked runs in progress", "Per mapping, the share of its chunked first run or full resync done "
             "(rows so far of the planned estimate); 1 when none is in progress.",
             f"max by (mapping) (tablesync_run_progress_ratio{{{M}}})", "{{mapping}}", (0, 44, 24, 6), "percentunit",
             [(None, "blue")]),
        series("Jobs woken by changes", "`tablesync listen`: sync jobs sent because a change in the mapping's source "
               "woke it (change_capture: log or poll), per mapping.",
               [target(f"sum by (mapping) (increase(tablesync_capture_jobs_total{{{M}}}[{RATE}]))", "{{mapping}}")],
               (0, 50, 12, 8), bars=True),
        series("Replication slot lag", "WAL each app's replication slot holds back (the disk it takes until the "
               "listener confirms it; alert at 1 GiB), per app.",
               [target("max by (app, slot) (tablesync_capture_slot_lag_bytes)", "{{app}} {{slot}}")], (12, 50, 12, 8),
               "bytes"),
    ]


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID, "title": "tablesync", "tags": ["tablesync"], "timezone": "browser", "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "description": "Is every mapping syncing, how far behind is it, and what is failing.",
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            {"name": "mapping", "label": "Mapping", "type": "query", "datasource": DS,
             "query": {"query": "label_values(tablesync_mapping_interval_seconds, mapping)", "refId": "mapping"},
             "definition": "label_values(tablesync_mapping_interval_seconds, mapping)",
             "multi": True, "includeAll": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1, "hide": 0},
        ]},
        "annotations": {"list": []},
        "links": [],
        "panels": [dict(p, id=i + 1) for i, p in enumerate(panels())],
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON differs from what this makes")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT} is out of date: run python dashboards/build.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
