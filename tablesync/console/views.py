"""The objects every operator surface shows (SPEC §5's JSON): `--json` of the CLI, the web pages
and `/api/` all read them from here, so the three never disagree about a job or an error."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tablesync.config.model import source_side
from tablesync.console.render import error_object, iso, job_object
from tablesync.db.engine import utcnow
from tablesync.db.keys import normalize_key
from tablesync.errors import UnknownMapping, UsageError
from tablesync.store import chunks as chunk_rows
from tablesync.store.coupling_queries import (
    count_couplings,
    couplings_by_id,
    error_signature,
    find_couplings,
    normalized_message,
    skipped_couplings,
    skipped_per_mapping,
)
from tablesync.store.jobs import count_jobs, errors_of, get_job, last_runs, list_jobs
from tablesync.store.mappings import active_mappings, active_versions, get_mapping, known_mappings
from tablesync.store.pauses import paused
from tablesync.store.record_log import record_log

REASONS = ("update_conflict", "deletion_conflict", "failures")
SIDES = ("local", "integration")


def require_mapping(conn: sa.Connection, name: str | None) -> None:
    """Refuse a mapping name that no `config apply` ever stored (SPEC §5): a typo must never read
    as an empty list. A deactivated mapping's history stays readable."""
    if name is None:
        return
    known = known_mappings(conn)
    if name not in known:
        raise UnknownMapping(name, sorted(n for n, active in known.items() if active))


def mapping_objects(engine: sa.Engine) -> list[dict[str, Any]]:
    now = utcnow()
    with engine.connect() as conn:
        stored = active_mappings(conn)
        runs = last_runs(conn)
        skipped = skipped_per_mapping(conn)
        held = paused(conn)
    out = []
    for s in stored:
        run = runs.get(s.spec.name)
        pause = held.get(s.spec.name)
        out.append({
            "name": s.spec.name, "direction": s.spec.direction, "schedule": s.spec.schedule,
            "last_run_at": iso(run.finished_at) if run else None, "last_status": run.status if run else None,
            "next_run_at": None if pause else iso(s.spec.parsed_schedule().next_tick(now)),
            "skipped": int(skipped.get(s.spec.name, 0)),
            "paused": None if pause is None else {"by": pause.paused_by, "at": iso(pause.paused_at), "reason": pause.reason},
        })
    return out


def job_objects(conn: sa.Connection, mapping: str | None = None, status: str | None = None, since: datetime | None = None,
                until: datetime | None = None, limit: int = 50, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """A page of jobs, newest first, and how many match in all."""
    require_mapping(conn, mapping)
    rows = list_jobs(conn, mapping=mapping, status=status, since=since, until=until, limit=limit, offset=offset)
    return [job_object(r) for r in rows], count_jobs(conn, mapping=mapping, status=status, since=since, until=until)


def job_detail(engine: sa.Engine, job_id: int) -> dict[str, Any] | None:
    """The job object plus its errors."""
    with engine.connect() as conn:
        row = get_job(conn, job_id)
        if row is None:
            return None
        obj = job_object(row)
        obj["errors"] = [error_object(e) for e in errors_of(conn, job_id)]
        obj["progress"] = progress_object(conn, row)
    return obj


def progress_object(conn: sa.Connection, job: Any) -> dict[str, Any] | None:
    """A chunked run's progress: chunks done of total, rows so far of the planned estimate, the
    ratio and an ETA at the pace so far, and each chunk (None for a job that ran in one piece)."""
    if job.chunks is None:
        return None
    chunks = chunk_rows.chunks_of(conn, job.id)
    progress = chunk_rows.progress_of(chunks)
    if progress is None:
        return None
    eta = progress.eta_seconds(utcnow()) if job.status == "running" else None
    return {
        "chunks": progress.total, "chunks_done": progress.done, "chunks_running": progress.running,
        "chunks_failed": progress.failed, "rows": progress.rows, "rows_estimated": progress.estimate,
        "ratio": round(progress.ratio, 4), "eta_seconds": None if eta is None else round(eta, 1),
        "finalisation": progress.final,
        "items": [{"number": c.number, "low": c.low, "high": c.high, "status": c.status, "rows": c.rows,
                   "rows_estimated": c.estimate, "attempts": c.attempts, "worker": c.worker,
                   "started_at": iso(c.started_at), "finished_at": iso(c.finished_at), "error": c.error}
                  for c in chunks],
    }


def error_objects(engine: sa.Engine, mapping: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
    """The coupled data synchronization errors: skipped couplings, with both records checked live
    (`*_exists` is None when the app could not be asked), which is what the actions' preconditions
    are judged on."""
    return _errors(engine, mapping, reason)[0]


def _errors(engine: sa.Engine, mapping: str | None, reason: str | None) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """`error_objects`, and the direction of each active mapping (read for the existence checks anyway)."""
    with engine.connect() as conn:
        require_mapping(conn, mapping)
        rows = [r for r in skipped_couplings(conn, mapping) if reason is None or r.skip_reason == reason]
        stored = {m.spec.name: m for m in active_mappings(conn)}
    live = live_records(stored, rows)

    return [{"coupling_id": r.id, "mapping": r.mapping, "local_key": r.local_key, "integration_key": r.integration_key,
             "local_exists": live(r, "local"), "integration_exists": live(r, "integration"), "reason": r.skip_reason,
             "message": r.message, "failed_on": iso(r.failed_on),
             "signature": error_signature(r.mapping, r.skip_reason, r.message)} for r in rows], \
        {name: m.spec.direction for name, m in stored.items()}


def live_records(stored: dict[str, Any], rows: list[Any]) -> Callable[[Any, str], bool | None]:
    """Whether each coupling row's record on a side exists, checked live in the apps with one
    query per mapping and side: a function (row, side) → True/False, or None when the app (or an
    inactive mapping) could not be asked."""
    from tablesync.apps.engines import existing_keys

    exists: dict[tuple[str, str], set[str] | None] = {}
    for name in sorted({r.mapping for r in rows} & set(stored)):
        for side in SIDES:
            exists[(name, side)] = existing_keys(stored[name].spec, stored[name].apps, side, [getattr(r, f"{side}_key") for r in rows if r.mapping == name])

    def live(r: Any, side: str) -> bool | None:
        found = exists.get((r.mapping, side))
        key = getattr(r, f"{side}_key")
        return None if found is None else (key is not None and key in found)

    return live


def error_groups(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Errors of one mapping, reason and normalised message, with counts, largest first."""
    groups: dict[str, dict[str, Any]] = {}
    for e in errors:
        g = groups.setdefault(e["signature"], {"signature": e["signature"], "mapping": e["mapping"], "reason": e["reason"],
                                               "message": normalized_message(e["message"]), "count": 0,
                                               "example_coupling_id": e["coupling_id"]})
        g["count"] += 1
    return sorted(groups.values(), key=lambda g: (-g["count"], g["mapping"], g["signature"]))


def allowed_actions(error: dict[str, Any], direction: str) -> set[str]:
    """The actions whose preconditions (SPEC §5) hold for this error, judged on the live records
    and the mapping's direction, as the worker will judge them: Retry and Synchronize need both
    records, and a one-way mapping's Synchronize can only make its source side win
    (`resolve:local` / `resolve:integration`); Restore and Delete need exactly one record, and a
    one-way mapping restores only target records. Remove coupling is always possible. An app that
    could not be asked allows only what needs no record."""
    local, integration = error["local_exists"], error["integration_exists"]
    sides = ("local", "integration") if direction == "bidirectional" else (source_side(direction),)
    allowed = {"uncouple"}
    if local and integration:
        allowed |= {"retry", *(f"resolve:{s}" for s in sides)}
    if local is not None and integration is not None and local != integration:
        allowed.add("delete")
        if ("local" if local else "integration") in sides:  # the survivor is a side this mapping copies from
            allowed.add("restore")
    return allowed


def errors_with_actions(engine: sa.Engine, mapping: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
    """`error_objects`, each with `allowed_actions` (what the web console enables)."""
    errors, directions = _errors(engine, mapping, reason)
    return [{**e, "allowed_actions": sorted(allowed_actions(e, directions[e["mapping"]]))
             if e["mapping"] in directions else ["uncouple"]}
            for e in errors]


def mapping_names(engine: sa.Engine) -> list[str]:
    """The active mappings' names, for filters: without the overview's runs and counts."""
    with engine.connect() as conn:
        return sorted(active_versions(conn))


def record_key(conn: sa.Connection, mapping: str, side: str, key: str) -> str:
    """A record key as an operator typed it, in the form the store holds: a composite key may be
    given as `[1, 23]` or `["1", "23"]` (SPEC §3); a malformed one is refused saying what it looks
    like. A deactivated mapping's keys are taken as they are."""
    stored = get_mapping(conn, mapping)
    if stored is None:
        return key
    spec = stored.spec.side(side)
    try:
        return normalize_key(key, len(spec.key_columns))
    except ValueError as exc:
        raise UsageError(f"mapping {mapping}, {side} key {spec.key_label}: {exc}") from None


def log_objects(conn: sa.Connection, mapping: str, key: str, side: str = "local") -> list[dict[str, Any]]:
    require_mapping(conn, mapping)
    key = record_key(conn, mapping, side, key)
    return [{"job_id": r.job_id, "kind": r.kind, "direction": r.direction, "status": r.status, "outcome": r.outcome,
             "message": r.message, "operator": r.operator, "at": iso(r.at), "changes": r.changes,
             "local_key": r.local_key, "integration_key": r.integration_key} for r in record_log(conn, mapping, key, side)]


def coupling_objects(conn: sa.Connection, mapping: str, local: str | None = None, integration: str | None = None,
                     skipped: bool = False, limit: int = 100) -> tuple[list[dict[str, Any]], int]:
    """Up to `limit` couplings, oldest first, and how many match in all."""
    require_mapping(conn, mapping)
    local = None if local is None else record_key(conn, mapping, "local", local)
    integration = None if integration is None else record_key(conn, mapping, "integration", integration)
    out = [{"coupling_id": r.id, "mapping": r.mapping, "local_key": r.local_key, "integration_key": r.integration_key,
            "skipped": r.skipped, "reason": r.skip_reason, "last_synced_at": iso(r.last_synced_at)}
           for r in find_couplings(conn, mapping, local, integration, skipped, limit)]
    return out, len(out) if len(out) < limit else count_couplings(conn, mapping, local, integration, skipped)


def mapping_sides(engine: sa.Engine) -> dict[str, dict[str, dict[str, str]]]:
    """{mapping: {side: {app, table, key}}} of the active mappings: how pages name a record
    ("erp customers 10") in the operator's language rather than "local"."""
    with engine.connect() as conn:
        stored = active_mappings(conn)
    return {s.spec.name: {side: {"app": s.spec.side(side).app, "table": s.spec.side(side).table, "key": s.spec.side(side).key_label}
                          for side in SIDES} for s in stored}


def deletion_preview(engine: sa.Engine, chosen: dict[str, list[int]]) -> list[dict[str, Any]]:
    """What Delete records would remove, coupling by coupling, judged on the live records as the
    worker will judge them: the surviving record of a pair whose other record is gone (`delete`:
    its app, table, key column and key), or why nothing would be deleted (`refused`)."""
    out: list[dict[str, Any]] = []
    with engine.connect() as conn:
        stored = {m.spec.name: m for m in active_mappings(conn)}
        rows = couplings_by_id(conn, [i for ids in chosen.values() for i in ids])
    live = live_records(stored, rows)
    for r in rows:
        m = stored.get(r.mapping)
        item: dict[str, Any] = {"coupling_id": r.id, "mapping": r.mapping}
        here = {side: live(r, side) for side in SIDES}
        if m is None or None in here.values():
            item.update(action="refused", reason="an app could not be asked whether the records exist")
        elif all(here.values()):
            item.update(action="refused", reason="both records exist: there is no deletion to settle")
        elif not any(here.values()):
            item.update(action="refused" if r.state == "uncoupled" else "uncouple",
                        reason="both records are gone: only the coupling is removed")
        else:
            side = "local" if here["local"] else "integration"
            spec = m.spec.side(side)
            item.update(action="delete", side=side, app=spec.app, table=spec.table, key_column=spec.key_label,
                        key=getattr(r, f"{side}_key"))
        out.append(item)
    return out


def describe_deletion(item: dict[str, Any]) -> str:
    """One line of a deletion preview: "coupling 40: erp customers id=10 (the local record)"."""
    if item["action"] == "delete":
        return (f"coupling {item['coupling_id']} ({item['mapping']}): {item['app']} {item['table']} "
                f"{item['key_column']}={item['key']} (its {item['side']} record)")
    return f"coupling {item['coupling_id']} ({item['mapping']}): nothing deleted: {item['reason']}"
