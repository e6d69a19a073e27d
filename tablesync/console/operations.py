"""What an operator asks for, from the CLI or the web console: which couplings an action selects,
and the job that carries it to the workers. Both surfaces call these, so an action from the web
is the very same actor message as one from the terminal."""

from __future__ import annotations

from typing import Any

import dramatiq
import sqlalchemy as sa

from tablesync.config.settings import Settings
from tablesync.console.views import record_key, require_mapping
from tablesync.errors import UsageError
from tablesync.store.coupling_queries import couplings_by_id, error_signature, skipped_couplings
from tablesync.store.jobs import create_job
from tablesync.store.mappings import StoredMapping, get_mapping
from tablesync.store.pauses import pause, resume
from tablesync.sync.run import default_record_side

SELECTING_KINDS = ("retry", "resolve", "uncouple", "restore", "delete")
MAX_ID = 2**63 - 1


def select_couplings(conn: sa.Connection, ids: list[int], all_: bool, mapping: str | None,
                     group: str | None) -> dict[str, list[int]]:
    """{mapping: coupling ids} of an action's selection; explicit ids must exist."""
    if ids:
        require_mapping(conn, mapping)
        if all_ or group:
            raise UsageError("give coupling ids or a selection (--all, --group), not both")
        impossible = sorted(i for i in ids if not 1 <= i <= MAX_ID)
        if impossible:
            raise UsageError(f"no coupling {', '.join(map(str, impossible))} (coupling ids are positive 64-bit numbers)")
        rows = couplings_by_id(conn, ids)
        unknown = sorted(set(ids) - {r.id for r in rows})
        if unknown:
            raise UsageError(f"no coupling {', '.join(map(str, unknown))} (see `tablesync errors` or `tablesync couplings`)")
        out: dict[str, list[int]] = {}
        for r in rows:
            if mapping is None or r.mapping == mapping:
                out.setdefault(r.mapping, []).append(r.id)
        return out
    if not (all_ or mapping or group):
        raise UsageError("say which couplings: ids (from `tablesync errors`), --all, --mapping M or --group SIGNATURE")
    require_mapping(conn, mapping)
    out = {}
    for r in skipped_couplings(conn, mapping):
        if group is None or error_signature(r.mapping, r.skip_reason, r.message) == group:
            out.setdefault(r.mapping, []).append(r.id)
    return out


def require_active(conn: sa.Connection, mapping: str) -> StoredMapping:
    """The active mapping of that name: a job can only run a mapping the store holds active."""
    stored = get_mapping(conn, mapping)
    if stored is not None:
        return stored
    require_mapping(conn, mapping)  # unknown rather than deactivated: say so, listing the known ones
    raise UsageError(f"mapping {mapping!r} is deactivated (it left the config file at the last `tablesync config apply`): "
                     "its history stays readable, but it no longer runs")


def broker_for(settings: Settings) -> dramatiq.Broker | None:
    """The configured broker; None without one: jobs then wait in the store for a scheduler or
    `tablesync run` to send them."""
    from tablesync.worker.broker import setup_broker

    return None if settings.broker_url is None else setup_broker(settings)


def enqueue_job(engine: sa.Engine, broker: dramatiq.Broker | None, settings: Settings, mapping: str, kind: str,
                operator: str, params: dict[str, Any]) -> int:
    """One job row (committed first, so a worker never gets an id it cannot find), then its message."""
    from tablesync.worker.enqueue import dispatch

    with engine.begin() as conn:
        require_active(conn, mapping)
        params = _keys_normalised(conn, mapping, params)
        job_id = create_job(conn, mapping, kind, operator=operator, params=params)
    dispatch(engine, broker, settings, job_id)
    return job_id


def _keys_normalised(conn: sa.Connection, mapping: str, params: dict[str, Any]) -> dict[str, Any]:
    """The record keys an action names (couple's two, `sync --record`'s one) in the store's form,
    or a UsageError before any job exists."""
    out = dict(params)
    for name, side in (("local_key", "local"), ("integration_key", "integration")):
        if out.get(name) is not None:
            out[name] = record_key(conn, mapping, side, str(out[name]))
    if out.get("record") is not None:
        stored = get_mapping(conn, mapping)
        side = out.get("side") or (default_record_side(stored.spec.direction) if stored else "local")
        out["record"] = record_key(conn, mapping, side, str(out["record"]))
    return out


def enqueue_selected(engine: sa.Engine, broker: dramatiq.Broker | None, settings: Settings, kind: str,
                     chosen: dict[str, list[int]], operator: str, params: dict[str, Any]) -> list[int]:
    """One job per mapping of the selection."""
    return [enqueue_job(engine, broker, settings, mapping, kind, operator, {**params, "couplings": ids})
            for mapping, ids in chosen.items()]


def set_paused(engine: sa.Engine, mapping: str, pause_it: bool, operator: str, reason: str | None = None) -> bool:
    """Pause or resume an active mapping's schedule, recording who and why; returns whether
    anything changed (pausing a paused mapping keeps its first pause). The running job, manual
    syncs and operators' actions are not affected: only the scheduler's ticks are skipped."""
    with engine.begin() as conn:
        require_active(conn, mapping)
        return pause(conn, mapping, operator, reason) if pause_it else resume(conn, mapping)
