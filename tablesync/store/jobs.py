"""Job rows: created when a run is asked for, updated by the worker that runs it, read by the console."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from tablesync.db.engine import name_session, session_name, utcnow
from tablesync.errors import Fenced
from tablesync.store.schema import job_errors, jobs

JobStatus = Literal["queued", "running", "succeeded", "failed", "abandoned", "dropped"]
JobKind = Literal["sync", "full_sync", "retry", "resolve", "uncouple", "restore", "delete", "couple", "match"]
COUNTERS = ("inserted", "modified", "deleted", "unchanged", "coupled", "uncoupled", "conflicts", "skipped", "failed")
FINISHED: tuple[JobStatus, ...] = ("succeeded", "failed", "abandoned", "dropped")
ACTIVE: tuple[JobStatus, ...] = ("queued", "running")
SYNC_KINDS: tuple[JobKind, ...] = ("sync", "full_sync")


@dataclass
class Counters:
    inserted: int = 0
    modified: int = 0
    deleted: int = 0
    unchanged: int = 0
    coupled: int = 0
    uncoupled: int = 0
    conflicts: int = 0
    skipped: int = 0
    failed: int = 0

    def add(self, other: "Counters") -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def is_urgent(kind: str, params: Mapping[str, Any] | None) -> bool:
    """An operator's action or a single-record sync: someone is waiting for it (its own queue)."""
    return kind not in SYNC_KINDS or (params or {}).get("record") is not None


def create_job(
    conn: sa.Connection, mapping: str, kind: str, *, operator: str | None = None,
    params: Mapping[str, Any] | None = None, direction: str | None = None, status: str = "queued",
    message: str | None = None,
) -> int:
    now = utcnow()
    values = dict(
        mapping=mapping, kind=kind, status=status, operator=operator, params=dict(params or {}),
        direction=direction, enqueued_at=now, message=message,
        **{c: 0 for c in COUNTERS}, attempts=0,
    )
    if status in FINISHED:
        values["finished_at"] = now
    return int(conn.execute(sa.insert(jobs).values(**values).returning(jobs.c.id)).scalar_one())


def get_job(conn: sa.Connection, job_id: int) -> sa.Row[Any] | None:
    return conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()


def add_counters(conn: sa.Connection, job_id: int, delta: Counters) -> None:
    """Increment counters in the same transaction as the coupling writes they count (no double
    count); that transaction was fenced first (`fence`)."""
    changes = {k: v for k, v in delta.as_dict().items() if v}
    if changes:
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(
            **{k: getattr(jobs.c, k) + v for k, v in changes.items()}, heartbeat_at=store_now(conn),
        ))


def store_now(conn: sa.Connection) -> Any:
    """The store's clock, for every time the reaper compares: heartbeats, starts, the stale cutoff.
    Workers' clocks may be off by minutes; one clock for writer and reader makes that harmless.
    (SQLite serves one machine: its process clock is the store's.)"""
    return sa.func.now() if conn.dialect.name == "postgresql" else utcnow()


def store_ago(conn: sa.Connection, seconds: float) -> Any:
    """Now minus `seconds` on the store's clock (`store_now`); a negative `seconds` is a time to come (a lease's end)."""
    if conn.dialect.name == "postgresql":
        return sa.func.now() - sa.func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    return utcnow() - timedelta(seconds=seconds)


def name_job_session(conn: sa.Connection, job_id: int) -> None:
    """Name this transaction's session after the job (PostgreSQL, for the transaction only): if
    the worker freezes inside it, the reaper ends it by that name (`locks.end_job_sessions`), and
    the locks it holds (the job row, couplings) stop blocking the takeover and the redo."""
    name_session(conn, session_name(job_id))


def fence(conn: sa.Connection, job_id: int, epoch: int) -> None:
    """Refuse this transaction's writes unless the job is still running under `epoch`. On
    PostgreSQL the job row is share-locked until the transaction ends, so the reaper's abandon
    (an update of that row) waits for a write in flight, and a write after it sees the new epoch;
    a transaction frozen with its worker is ended by the reaper (`name_job_session`)."""
    name_job_session(conn, job_id)
    q = sa.select(jobs.c.status, jobs.c.epoch).where(jobs.c.id == job_id)
    row = conn.execute(q.with_for_update(read=True) if conn.dialect.name == "postgresql" else q).first()
    if row is None or row.status != "running" or row.epoch != epoch:
        state = "gone" if row is None else f"{row.status} (epoch {row.epoch}, this worker's is {epoch})"
        raise Fenced(f"job {job_id} is {state}: it was taken over, and this worker stops without writing")


def heartbeat(conn: sa.Connection, job_id: int, epoch: int | None = None) -> bool:
    """The job is alive, on the store's clock; False when it is no longer this worker's to beat for."""
    cond = [jobs.c.id == job_id, jobs.c.status == "running"] + ([jobs.c.epoch == epoch] if epoch is not None else [])
    name_job_session(conn, job_id)
    return bool(conn.execute(sa.update(jobs).where(*cond).values(heartbeat_at=store_now(conn))).rowcount)


def finish_job(conn: sa.Connection, job_id: int, status: str, message: str | None = None, epoch: int | None = None) -> bool:
    """Record the job's end. With `epoch`, only while the job is still running under it: a worker
    that was taken over never overwrites `abandoned` (or the redo's outcome). Returns whether it did."""
    cond = [jobs.c.id == job_id] + ([jobs.c.epoch == epoch, jobs.c.status == "running"] if epoch is not None else [])
    return bool(conn.execute(sa.update(jobs).where(*cond).values(
        status=status, message=message, finished_at=utcnow(), heartbeat_at=store_now(conn),
    )).rowcount)


def _job_filter(q: Any, mapping: str | None, status: str | None, since: datetime | None, until: datetime | None) -> Any:
    """Filters are bound parameters, never SQL text: whatever a user typed stays a value."""
    if mapping:
        q = q.where(jobs.c.mapping == mapping)
    if status:
        q = q.where(jobs.c.status == status)
    if since is not None:
        q = q.where(jobs.c.enqueued_at >= since)
    if until is not None:
        q = q.where(jobs.c.enqueued_at < until)
    return q


def list_jobs(
    conn: sa.Connection, mapping: str | None = None, status: str | None = None, limit: int = 50,
    since: datetime | None = None, until: datetime | None = None, offset: int = 0,
) -> list[sa.Row[Any]]:
    """Newest first; `since`/`until` bound the enqueue time."""
    q = _job_filter(sa.select(jobs), mapping, status, since, until)
    return conn.execute(q.order_by(jobs.c.id.desc()).limit(limit).offset(offset)).all()


def count_jobs(conn: sa.Connection, mapping: str | None = None, status: str | None = None,
               since: datetime | None = None, until: datetime | None = None) -> int:
    return int(conn.execute(_job_filter(sa.select(sa.func.count()).select_from(jobs), mapping, status, since, until)).scalar_one())


def errors_of(conn: sa.Connection, job_id: int) -> list[sa.Row[Any]]:
    return conn.execute(sa.select(job_errors).where(job_errors.c.job_id == job_id).order_by(job_errors.c.id)).all()


def stale_running(conn: sa.Connection, timeout: float) -> list[sa.Row[Any]]:
    """Running jobs whose last heartbeat is older than `timeout`, by the store's clock. A chunked
    run's liveness is its chunks' leases (`chunks.expired`), not the heartbeat of the job that planned it."""
    return conn.execute(sa.select(jobs).where(
        jobs.c.status == "running", jobs.c.chunks.is_(None), sa.func.coalesce(jobs.c.heartbeat_at, jobs.c.started_at) < store_ago(conn, timeout),
    )).all()


def create_jobs(conn: sa.Connection, items: Sequence[tuple[str, Mapping[str, Any]]], kind: str) -> list[int]:
    """Queued jobs of `kind` for (mapping, params) items, in one statement; ids in input order."""
    now = utcnow()
    rows = [dict(mapping=m, kind=kind, status="queued", operator=None, params=dict(p), direction=None, enqueued_at=now,
                 message=None, **{c: 0 for c in COUNTERS}, attempts=0) for m, p in items]
    return [int(i) for i in conn.execute(sa.insert(jobs).returning(jobs.c.id, sort_by_parameter_order=True), rows).scalars()]


def active_job(conn: sa.Connection, mapping: str) -> sa.Row[Any] | None:
    return conn.execute(
        sa.select(jobs).where(jobs.c.mapping == mapping, jobs.c.status.in_(ACTIVE)).order_by(jobs.c.id.desc()).limit(1)
    ).first()


def last_runs(conn: sa.Connection) -> dict[str, sa.Row[Any]]:
    """The newest finished sync job of each mapping."""
    latest = (
        sa.select(sa.func.max(jobs.c.id)).where(jobs.c.status.in_(FINISHED), jobs.c.kind.in_(SYNC_KINDS))
        .group_by(jobs.c.mapping).scalar_subquery()
    )
    return {r.mapping: r for r in conn.execute(sa.select(jobs).where(jobs.c.id.in_(latest)))}


# -- handing jobs to the broker --------------------------------------------------------------------


def mark_sent(conn: sa.Connection, job_ids: Sequence[int]) -> None:
    """A broker took these jobs' messages."""
    if job_ids:
        conn.execute(sa.update(jobs).where(jobs.c.id.in_(list(job_ids))).values(sent_at=utcnow()))


def fail_unsent(conn: sa.Connection, job_id: int, message: str) -> None:
    """A job whose message no broker took fails at once, saying why (nothing ran)."""
    conn.execute(sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == "queued", jobs.c.sent_at.is_(None))
                 .values(status="failed", finished_at=utcnow(), message=message))


_WAITING = sa.and_(jobs.c.status == "queued", jobs.c.sent_at.is_(None))


def waiting_jobs(conn: sa.Connection, enqueued_before: datetime) -> list[int]:
    """Queued jobs no broker took yet, oldest first."""
    return list(conn.execute(sa.select(jobs.c.id).where(_WAITING, jobs.c.enqueued_at < enqueued_before)
                             .order_by(jobs.c.id)).scalars())


def claim_waiting(conn: sa.Connection, job_id: int) -> bool:
    """Claim a waiting job for sending (one conditional update: one sender per job)."""
    return bool(conn.execute(sa.update(jobs).where(jobs.c.id == job_id, _WAITING).values(sent_at=utcnow())).rowcount)


def unclaim(conn: sa.Connection, job_id: int) -> None:
    """The send failed: the job waits in the store again."""
    conn.execute(sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == "queued").values(sent_at=None))


def queued_since(conn: sa.Connection, sent_before: datetime) -> list[int]:
    """Queued jobs sent before `sent_before` that no worker started: their message may be lost."""
    return list(conn.execute(sa.select(jobs.c.id).where(jobs.c.status == "queued", jobs.c.sent_at < sent_before)
                             .order_by(jobs.c.id)).scalars())


def claim_resend(conn: sa.Connection, job_id: int, sent_before: datetime) -> bool:
    """Claim a job for sending again, if it is still queued since then (one replica wins)."""
    return bool(conn.execute(sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == "queued",
                                                   jobs.c.sent_at < sent_before).values(sent_at=utcnow())).rowcount)


# -- running a job ---------------------------------------------------------------------------------


def drop_job(conn: sa.Connection, job_id: int, message: str) -> None:
    """A queued delivery that must not run (its mapping is running in another job)."""
    conn.execute(sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == "queued").values(
        status="dropped", finished_at=utcnow(), message=message))


def mark_running(conn: sa.Connection, job_id: int, attempt: int, worker: str) -> int:
    """Claim the job for this worker: running, with a new epoch (returned), on the store's clock."""
    now = store_now(conn)
    return int(conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(
        status="running", started_at=now, heartbeat_at=now, finished_at=None, attempts=attempt, worker=worker, message=None,
        epoch=jobs.c.epoch + 1).returning(jobs.c.epoch)).scalar_one())


def set_definition(conn: sa.Connection, job_id: int, version: int, direction: str) -> None:
    """The mapping version (and its direction) the job runs."""
    conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(mapping_version=version, direction=direction))


def running_other(conn: sa.Connection, mapping: str, job_id: int) -> int | None:
    """Another job of the mapping that is running, if any."""
    return conn.execute(sa.select(jobs.c.id).where(jobs.c.mapping == mapping, jobs.c.status == "running",
                                                  jobs.c.id != job_id)).scalar()


def unfinished_syncs(conn: sa.Connection, mappings: Sequence[str], enqueued_by: datetime) -> list[str]:
    """Which of these mappings have a sync job enqueued no later than `enqueued_by` and not finished."""
    return sorted(set(conn.execute(sa.select(jobs.c.mapping).where(
        jobs.c.mapping.in_(list(mappings)), jobs.c.status.in_(ACTIVE), jobs.c.kind.in_(SYNC_KINDS),
        jobs.c.enqueued_at <= enqueued_by)).scalars()))


def abandon(conn: sa.Connection, job: sa.Row[Any], timeout_seconds: float) -> bool:
    """Mark a running job whose worker went silent `abandoned`, if it still is (one replica wins),
    under a new epoch: from now on every store write of that worker is refused (`fence`). A lock
    still held on the row makes it wait 5 s at most (then the next pass tries again)."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
    return bool(conn.execute(sa.update(jobs).where(
        jobs.c.id == job.id, jobs.c.status == "running",
        sa.func.coalesce(jobs.c.heartbeat_at, jobs.c.started_at) < store_ago(conn, timeout_seconds),
    ).values(status="abandoned", finished_at=utcnow(), epoch=jobs.c.epoch + 1,
             message=f"abandoned: worker {job.worker} sent no heartbeat for {timeout_seconds:.0f}s")).rowcount)


def last_successes(conn: sa.Connection) -> dict[str, datetime]:
    """When each mapping's newest successful sync finished."""
    return dict(conn.execute(sa.select(jobs.c.mapping, sa.func.max(jobs.c.finished_at))
                             .where(jobs.c.status == "succeeded", jobs.c.kind.in_(SYNC_KINDS))
                             .group_by(jobs.c.mapping)).all())
