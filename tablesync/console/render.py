"""Readable tables for people, exact JSON for machines (SPEC §5 objects)."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.table import Table

from tablesync.store.jobs import COUNTERS

JOB_FIELDS = ("id", "mapping", "kind", "direction", "status", "operator", "enqueued_at", "started_at", "finished_at",
              *COUNTERS, "message")


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def parse_iso(value: str | None) -> datetime | None:
    """The inverse of `iso`."""
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def ago(value: datetime | None, now: datetime | None = None) -> str:
    if value is None:
        return "—"
    seconds = ((now or datetime.now(timezone.utc)) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            text = f"{int(seconds // size)} {unit}"
            break
    else:
        text = f"{int(seconds)} s"
    return f"in {text}" if future else f"{text} ago"


def job_object(row: Any) -> dict[str, Any]:
    m = row._mapping
    out = {k: m[k] for k in JOB_FIELDS}
    for k in ("enqueued_at", "started_at", "finished_at"):
        out[k] = iso(out[k])
    out["trigger"] = trigger(m["operator"], m["params"])
    return out


def trigger(operator: str | None, params: Any) -> str | None:
    """Why a job was made: an operator asked, a schedule tick came, or a change in the mapping's
    source woke it (`tablesync listen`); None for the others (a takeover, a dependency's redo)."""
    params = params if isinstance(params, dict) else {}
    if operator:
        return "operator"
    if params.get("wake"):
        return "change"
    return "schedule" if "tick" in params else None


def error_object(row: Any) -> dict[str, Any]:
    m = row._mapping
    return {"id": m["id"], "direction": m["direction"], "source_key": m["source_key"],
            "destination_key": m["destination_key"], "message": m["message"], "detail": m["detail"],
            "created_at": iso(m["created_at"])}


def note_cut(shown: int, total: int, what: str, narrow: str) -> None:
    """A list cut by --limit says so on stderr (stdout stays one table or one JSON document)."""
    if total > shown:
        print(f"tablesync: showing {shown:,} of {total:,} {what}; {total - shown:,} left out: raise --limit, or {narrow}",
              file=sys.stderr)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def console() -> Console:
    """Wide enough for a jobs table when piped (rich would assume 80 columns)."""
    return Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


def jobs_table(jobs: list[dict[str, Any]], title: str | None = "Jobs") -> Table:
    rows = []
    for j in jobs:
        duration = ""
        if j["started_at"] and j["finished_at"]:
            d = (parse_iso(j["finished_at"]) - parse_iso(j["started_at"])).total_seconds()  # type: ignore[operator]
            duration = f"{d:.2f}s"
        status = f"{j['status']}, {j['failed']} failed" if j["status"] == "succeeded" and j["failed"] else j["status"]
        rows.append([j["id"], j["mapping"], j["kind"], status, ago(parse_iso(j["enqueued_at"])), duration, j["inserted"], j["modified"],
                     j["deleted"], j["unchanged"], j["conflicts"], j["skipped"], j["failed"], j["message"] or ""])
    return table(title, ["id", "mapping", "kind", "status", "enqueued", "took", "ins", "mod", "del", "unch", "confl", "skip", "fail",
                         "message"], rows)


def print_dry_run(report: Any, mapping: str, record: str | None = None, full: bool = False) -> None:
    """A dry run's report (`sync.dry_run.DryReport`) for people: per direction, its counts on a
    line of their own (as a table title they wrapped to the width of a narrow table), then samples."""
    from tablesync.sync.dry_run import SAMPLE

    out = console()
    out.print(f"[bold]Dry run of {mapping}[/]" + (f", record {record}" if record is not None else "")
              + (", every row (--full)" if full else "") + ": nothing was written")
    if not report.directions:
        out.print("no changes: a run now would do nothing")
    for direction, r in report.directions.items():
        out.print(f"{direction}: " + ", ".join(f"{k} {v}" for k, v in sorted(r.counts.items())), soft_wrap=True)
        if not r.samples:
            continue
        if sum(len(items) for items in r.samples.values()) < sum(r.counts.get(what, 0) for what in r.samples):
            out.print(f"[dim]samples: up to {SAMPLE} of each kind[/]")
        out.print(table(None, ["would", "record", "detail"],
                        [[what, " / ".join(str(s.get(k)) for k in ("source_key", "local_key", "target_key", "integration_key")
                                           if s.get(k) is not None), _sample_detail(s)]
                         for what, items in r.samples.items() for s in items]))


def _sample_detail(sample: dict[str, Any]) -> str:
    if sample.get("changes"):
        return ", ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in sample["changes"].items())
    if sample.get("values"):
        return ", ".join(f"{k}={v!r}" for k, v in sample["values"].items())
    if sample.get("deleted_side"):
        return f"the {sample['deleted_side']} record was deleted (on_deletion_conflict: {sample['on_deletion_conflict']})"
    return str(sample.get("message") or "")


def errors_table(errors: list[dict[str, Any]]) -> Table:
    """The coupled data synchronization errors, as `tablesync errors` prints them."""
    def yes(v: bool | None) -> str:
        return "?" if v is None else "yes" if v else "[red]no[/]"

    return table(f"Coupled data synchronization errors ({len(errors)})",
                 ["coupling", "mapping", "local key", "exists", "integration key", "exists", "reason", "failed", "message"],
                 [[e["coupling_id"], e["mapping"], e["local_key"], yes(e["local_exists"]), e["integration_key"],
                   yes(e["integration_exists"]), e["reason"], ago(parse_iso(e["failed_on"])), e["message"]] for e in errors])


def progress_line(obj: dict[str, Any]) -> str:
    """One line on a chunked run: chunks, rows, the share done and the time left at its pace."""
    p = obj["progress"]
    eta = p["eta_seconds"]
    left = "" if eta is None else f", about {_duration(eta)} left"
    running = f", {p['chunks_running']} running" if p["chunks_running"] else ""
    return (f"job {obj['id']} ({obj['mapping']}): {p['chunks_done']} of {p['chunks']} chunks done{running}; "
            f"{p['rows']:,} of about {p['rows_estimated']:,} rows ({p['ratio'] * 100:.1f} %){left}; "
            f"finalisation {p['finalisation']}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600} h {seconds % 3600 // 60} min" if seconds >= 3600 else \
        f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
