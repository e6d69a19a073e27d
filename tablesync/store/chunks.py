"""Every statement on the chunks of a chunked run (`run_chunks`).

A chunked run is one job whose work is split into key ranges. Workers anywhere claim a range by
`FOR UPDATE SKIP LOCKED` under a lease and a new epoch, and every store write of the range is
fenced by that epoch (`fence`), so a worker that froze past its lease and wakes up after the range
was handed to another writes nothing. The fan-in is a row, not a broker barrier: the done
transition that leaves no range unfinished releases chunk 0, the finalisation, which any worker
then claims like a range (a barrier would expire or hang when a message fails).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from tablesync.db.engine import name_session, utcnow
from tablesync.errors import Fenced
from tablesync.store.jobs import Counters, store_ago, store_now
from tablesync.store.locks import lock_key
from tablesync.store.schema import jobs, run_chunks

ChunkStatus = Literal["waiting", "pending", "running", "done", "failed"]
FINAL = 0  # the number of a run's finalisation step
UNFINISHED: tuple[ChunkStatus, ...] = ("waiting", "pending", "running")


@dataclass(frozen=True)
class Range:
    """One planned key range: keys above `low` up to `high` (None: unbounded), about `estimate` rows."""

    low: str | None
    high: str | None
    estimate: int


@dataclass(frozen=True)
class Chunk:
    """A claimed chunk, as its worker needs it."""

    id: int
    job_id: int
    mapping: str
    number: int
    low: str | None
    high: str | None
    epoch: int
    attempts: int
    state: Mapping[str, Any]  # the run's: start watermark, --where, bulk, max_parallel (copied on every chunk)
    total: int  # ranges in the run

    @property
    def label(self) -> str:
        if self.number == FINAL:
            return f"the finalisation of job {self.job_id}"
        span = f"keys {'(' if self.low is None else repr(self.low)}…{')' if self.high is None else repr(self.high)}"
        return f"chunk {self.number} of {self.total} of job {self.job_id} ({span})"


@dataclass(frozen=True)
class Progress:
    """Where a chunked run stands: chunks done of total, rows so far of the planned estimate."""

    total: int
    done: int
    running: int
    failed: int
    rows: int
    estimate: int
    started_at: datetime | None
    final: str  # the finalisation's status

    @property
    def ratio(self) -> float:
        if self.final == "done":
            return 1.0
        return min(1.0, self.rows / self.estimate) if self.estimate else self.done / max(self.total, 1)

    def eta_seconds(self, now: datetime) -> float | None:
        """Seconds left at the pace so far (None until a row is done)."""
        if self.started_at is None or not self.rows or self.final == "done":
            return None
        elapsed = (now - self.started_at).total_seconds()
        return max(0.0, elapsed * (self.estimate - self.rows) / self.rows)


def chunk_session(chunk_id: int) -> str:
    """The application_name of a chunk's store write transactions: the reaper ends it when the
    chunk's lease expired with its worker frozen inside one (its row locks would block the redo)."""
    return f"tablesync chunk {chunk_id}"


def create_run(conn: sa.Connection, job_id: int, mapping: str, ranges: Sequence[Range],
               apps: Mapping[str, int | None], state: Mapping[str, Any]) -> None:
    """The run's ranges (numbered from 1, pending) and its finalisation (0, waiting), and the
    job's chunk count: from this commit on the run belongs to its chunks."""
    common = dict(job_id=job_id, mapping=mapping, apps=dict(apps), state=dict(state), rows=0, counters={}, attempts=0,
                  epoch=0)
    rows = [dict(common, number=n, low=r.low, high=r.high, status="pending", estimate=r.estimate)
            for n, r in enumerate(ranges, 1)]
    rows.append(dict(common, number=FINAL, low=None, high=None, status="waiting", estimate=0))
    conn.execute(sa.insert(run_chunks), rows)
    conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(chunks=len(ranges)))


def claim(conn: sa.Connection, job_id: int, worker: str, lease_seconds: float) -> Chunk | None:
    """Claim the run's next pending chunk, if the run's `max_parallel` and every app's
    `max_connections` leave room: running, under a new epoch and a lease. Per-app caps are counted
    over every run's live chunks, under a transaction lock per capped app, so concurrent claims
    never overshoot a cap. None: nothing to claim now."""
    first = conn.execute(sa.select(run_chunks.c.apps, run_chunks.c.state).where(
        run_chunks.c.job_id == job_id, run_chunks.c.number == FINAL)).first()
    if first is None:
        return None
    caps = {app: int(cap) for app, cap in (first.apps or {}).items() if cap}
    if conn.dialect.name == "postgresql":
        for app in sorted(caps):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(f"app:{app}")})
    live = conn.execute(sa.select(run_chunks.c.job_id, run_chunks.c.apps).where(
        run_chunks.c.status == "running", run_chunks.c.lease_until > store_now(conn))).all()
    parallel = (first.state or {}).get("max_parallel")
    if parallel and sum(1 for r in live if r.job_id == job_id) >= int(parallel):
        return None
    for app, cap in caps.items():
        if sum(1 for r in live if app in (r.apps or {})) >= cap:
            return None
    q = (sa.select(run_chunks.c.id).where(run_chunks.c.job_id == job_id, run_chunks.c.status == "pending")
         .order_by(run_chunks.c.number).limit(1))
    q = q.with_for_update(skip_locked=True) if conn.dialect.name == "postgresql" else q
    chunk_id = conn.execute(q).scalar()
    if chunk_id is None:
        return None
    now = store_now(conn)
    row = conn.execute(sa.update(run_chunks).where(run_chunks.c.id == chunk_id).values(
        status="running", worker=worker, epoch=run_chunks.c.epoch + 1, attempts=run_chunks.c.attempts + 1, rows=0,
        lease_until=store_ago(conn, -lease_seconds),
        started_at=sa.func.coalesce(run_chunks.c.started_at, now), error=None,
    ).returning(run_chunks)).one()
    total = int(conn.execute(sa.select(jobs.c.chunks).where(jobs.c.id == job_id)).scalar() or 0)
    return Chunk(row.id, row.job_id, row.mapping, row.number, row.low, row.high, row.epoch, row.attempts,
                 row.state or {}, total)


def fence(conn: sa.Connection, chunk_id: int, epoch: int) -> None:
    """Refuse this transaction's writes unless the chunk is still this worker's (running under
    `epoch`) and its run still runs. The chunk row is share-locked until the transaction ends, so
    a lease takeover waits for a write in flight and a later write sees the new epoch."""
    name_session(conn, chunk_session(chunk_id))
    q = (sa.select(run_chunks.c.status, run_chunks.c.epoch, jobs.c.status.label("job_status"))
         .join(jobs, jobs.c.id == run_chunks.c.job_id).where(run_chunks.c.id == chunk_id))
    row = conn.execute(q.with_for_update(read=True, of=run_chunks) if conn.dialect.name == "postgresql" else q).first()
    if row is None or row.status != "running" or row.epoch != epoch or row.job_status != "running":
        state = ("gone" if row is None else f"{row.status} (epoch {row.epoch}, this worker's is {epoch}; "
                 f"its job is {row.job_status})")
        raise Fenced(f"chunk {chunk_id} is {state}: it was taken over, and this worker stops without writing")


def renew(conn: sa.Connection, chunk_id: int, epoch: int, lease_seconds: float) -> bool:
    """Extend the lease; False once the chunk is no longer this worker's."""
    return bool(conn.execute(sa.update(run_chunks).where(
        run_chunks.c.id == chunk_id, run_chunks.c.epoch == epoch, run_chunks.c.status == "running",
    ).values(lease_until=store_ago(conn, -lease_seconds))).rowcount)


def add_progress(conn: sa.Connection, chunk_id: int, delta: Counters) -> None:
    """A batch of the chunk committed (in its transaction): its rows and counters."""
    rows = sum(delta.as_dict().values())
    if not rows:
        return
    current = conn.execute(sa.select(run_chunks.c.counters).where(run_chunks.c.id == chunk_id)).scalar() or {}
    merged = {k: int(current.get(k, 0)) + v for k, v in delta.as_dict().items() if v or current.get(k)}
    conn.execute(sa.update(run_chunks).where(run_chunks.c.id == chunk_id).values(
        rows=run_chunks.c.rows + rows, counters=merged))


def finish(conn: sa.Connection, chunk: Chunk) -> bool:
    """Mark the range done, in the transaction of its last couplings. Finishers of one run are
    serialised on the finalisation's row, so exactly one of them sees no range left: that one
    releases the finalisation (waiting → pending) and gets True."""
    final = sa.select(run_chunks.c.id).where(run_chunks.c.job_id == chunk.job_id, run_chunks.c.number == FINAL)
    conn.execute(final.with_for_update() if conn.dialect.name == "postgresql" else final)
    conn.execute(sa.update(run_chunks).where(run_chunks.c.id == chunk.id).values(
        status="done", finished_at=utcnow(), lease_until=None))
    if chunk.number == FINAL:
        return False
    left = conn.execute(sa.select(sa.func.count()).where(
        run_chunks.c.job_id == chunk.job_id, run_chunks.c.number != FINAL, run_chunks.c.status != "done")).scalar_one()
    if left:
        return False
    return bool(conn.execute(sa.update(run_chunks).where(
        run_chunks.c.job_id == chunk.job_id, run_chunks.c.number == FINAL, run_chunks.c.status == "waiting",
    ).values(status="pending")).rowcount)


def give_back(conn: sa.Connection, chunk: Chunk, error: str) -> bool:
    """A transient failure (an app or the store away): the chunk is pending again for a later
    attempt. False if it was no longer this worker's."""
    return bool(conn.execute(sa.update(run_chunks).where(
        run_chunks.c.id == chunk.id, run_chunks.c.epoch == chunk.epoch, run_chunks.c.status == "running",
    ).values(status="pending", epoch=run_chunks.c.epoch + 1, lease_until=None, worker=None, error=error[:2000])).rowcount)


def fail_run(conn: sa.Connection, chunk: Chunk, error: str) -> bool:
    """A terminal failure of one chunk fails the run: that chunk failed with `error`, every
    unfinished one failed too (running ones are fenced out at their next write, as the job no
    longer runs). False if the chunk was no longer this worker's."""
    mine = conn.execute(sa.update(run_chunks).where(
        run_chunks.c.id == chunk.id, run_chunks.c.epoch == chunk.epoch, run_chunks.c.status == "running",
    ).values(status="failed", finished_at=utcnow(), lease_until=None, error=error[:2000])).rowcount
    if not mine:
        return False
    conn.execute(sa.update(run_chunks).where(run_chunks.c.job_id == chunk.job_id, run_chunks.c.status.in_(UNFINISHED))
                 .values(status="failed", finished_at=utcnow(), lease_until=None, epoch=run_chunks.c.epoch + 1,
                         error=f"not run: {chunk.label} failed"))
    return True


def in_progress(conn: sa.Connection, mapping: str) -> int | None:
    """The job of the mapping's chunked run in progress, if any: the mapping's one job meanwhile."""
    return conn.execute(sa.select(jobs.c.id).where(jobs.c.mapping == mapping, jobs.c.status == "running",
                                                  jobs.c.chunks.is_not(None))).scalar()


def expired(conn: sa.Connection) -> list[sa.Row[Any]]:
    """Running chunks whose lease ran out, by the store's clock: their worker died or froze."""
    return conn.execute(sa.select(run_chunks).where(
        run_chunks.c.status == "running", run_chunks.c.lease_until < store_now(conn))).all()


def take_back(conn: sa.Connection, chunk_id: int, epoch: int) -> bool:
    """An expired chunk is pending again under a new epoch (fencing out its old worker), if it
    still is expired (one reaper replica wins). A lock on the row makes it wait 5 s at most."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
    return bool(conn.execute(sa.update(run_chunks).where(
        run_chunks.c.id == chunk_id, run_chunks.c.epoch == epoch, run_chunks.c.status == "running",
        run_chunks.c.lease_until < store_now(conn),
    ).values(status="pending", epoch=run_chunks.c.epoch + 1, lease_until=None, worker=None,
             error="its worker's lease expired: redone")).rowcount)


def idle_runs(conn: sa.Connection, quiet_seconds: float) -> list[int]:
    """Chunked runs with a claimable chunk, none running, and nothing done for `quiet_seconds`:
    their messages were lost (a broker restart, a send that failed). The reaper sends one again."""
    cutoff = conn.execute(sa.select(store_ago(conn, quiet_seconds))).scalar() if conn.dialect.name == "postgresql" \
        else store_ago(conn, quiet_seconds)
    rows = conn.execute(sa.select(run_chunks.c.job_id, run_chunks.c.status, run_chunks.c.started_at,
                                  run_chunks.c.finished_at, jobs.c.heartbeat_at)
                        .join(jobs, jobs.c.id == run_chunks.c.job_id)
                        .where(jobs.c.status == "running", jobs.c.chunks.is_not(None))).all()
    runs: dict[int, list[sa.Row[Any]]] = {}
    for r in rows:
        runs.setdefault(int(r.job_id), []).append(r)
    idle = []
    for job_id, chunks in runs.items():
        times = [t for r in chunks for t in (r.started_at, r.finished_at, r.heartbeat_at) if t is not None]
        if (any(r.status == "pending" for r in chunks) and not any(r.status == "running" for r in chunks)
                and all(t < cutoff for t in times)):
            idle.append(job_id)
    return idle


def progress(conn: sa.Connection, job_id: int) -> Progress | None:
    """Where the chunked run of job `job_id` stands (None: the job did not run in chunks)."""
    return progress_of(chunks_of(conn, job_id))


def progress_of(rows: Sequence[Any]) -> Progress | None:
    """`progress` from a run's chunk rows already read (`chunks_of`)."""
    if not rows:
        return None
    ranges = [r for r in rows if r.number != FINAL]
    final = next((r.status for r in rows if r.number == FINAL), "waiting")
    started = min((r.started_at for r in ranges if r.started_at is not None), default=None)
    return Progress(total=len(ranges), done=sum(r.status == "done" for r in ranges),
                    running=sum(r.status == "running" for r in ranges), failed=sum(r.status == "failed" for r in ranges),
                    rows=sum(int(r.rows) for r in ranges), estimate=sum(int(r.estimate) for r in ranges),
                    started_at=started, final=final)


def chunks_of(conn: sa.Connection, job_id: int) -> list[sa.Row[Any]]:
    """Every chunk of a run, in number order (the finalisation last), for the job's page."""
    return sorted(conn.execute(sa.select(run_chunks).where(run_chunks.c.job_id == job_id)).all(),
                  key=lambda r: (r.number == FINAL, r.number))


def running_runs(conn: sa.Connection) -> dict[str, Progress]:
    """The progress of every chunked run in progress, by mapping (for the metrics)."""
    ids = conn.execute(sa.select(jobs.c.mapping, jobs.c.id).where(jobs.c.status == "running",
                                                                  jobs.c.chunks.is_not(None))).all()
    return {m: p for m, j in ids if (p := progress(conn, j)) is not None}
