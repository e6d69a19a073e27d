"""Jobs whose worker stopped heart-beating are marked `abandoned`, and their work is enqueued
again; queued jobs whose message was lost are sent again.

Each update is conditional on the job still being stale, so several scheduler replicas reaping at
once act on each job once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from tablesync.apps.engines import end_sessions
from tablesync.config.settings import Settings
from tablesync.db.engine import end_named_sessions, session_name, utcnow
from tablesync.store import chunks as chunk_rows
from tablesync.store.jobs import abandon, claim_resend, create_job, mark_sent, queued_since, stale_running
from tablesync.store.locks import end_job_sessions
from tablesync.store.mappings import get_mapping

log = logging.getLogger("tablesync.scheduler")


def reap(store: sa.Engine, send: Callable[[int], None], timeout_seconds: float) -> list[int]:
    """Returns the ids of the replacement jobs."""
    with store.connect() as conn:
        stale = stale_running(conn, timeout_seconds)
    replacements: list[int] = []
    for job in stale:
        # Its worker may be frozen, not dead, holding the mapping lock and maybe a write transaction
        # on live sessions: end them first, or the abandon would wait on the job row it locked, and
        # the redo on the lock. Once abandoned, the new epoch refuses anything else it tries.
        with store.begin() as conn:
            freed = end_job_sessions(conn, job.mapping, job.id)
        try:
            with store.begin() as conn:
                if not abandon(conn, job, timeout_seconds):
                    continue
                new_id = create_job(conn, job.mapping, job.kind, operator=job.operator,
                                    params={**(job.params or {}), "redo_of": job.id})
        except sa.exc.OperationalError as exc:  # a lock on the job row outlived the wait: the next pass tries again
            log.warning("job %s could not be abandoned yet: %s", job.id, str(exc.orig).strip().splitlines()[0])
            continue
        with store.connect() as conn:
            stored = get_mapping(conn, job.mapping)
        ended = end_sessions(stored.spec, stored.apps, session_name(job.id)) if stored is not None else 0
        log.warning("job %s abandoned (worker %s silent); its work is redone as job %s%s%s", job.id, job.worker, new_id,
                    f"; {freed} store session(s) its worker still held (the mapping lock) were ended" if freed else "",
                    f"; {ended} app session(s) it still held open were ended" if ended else "")
        replacements.append(new_id)
        send(new_id)  # a broker that is down raises: the redo waits in the store (send_waiting)
        with store.begin() as conn:
            mark_sent(conn, [new_id])
    return replacements


def reap_chunks(store: sa.Engine, send_chunk: Callable[[int], None], quiet_seconds: float) -> list[int]:
    """Chunks whose lease expired are pending again and sent (their worker died or froze: the
    store and app sessions named after the chunk are ended first, so the redo never waits on a
    lock it holds); a chunked run with pending chunks, none running and nothing done for
    `quiet_seconds` gets a message again (its messages were lost). Returns the runs sent."""
    with store.connect() as conn:
        expired = chunk_rows.expired(conn)
    runs: list[int] = []
    for chunk in expired:
        name = chunk_rows.chunk_session(chunk.id)
        with store.begin() as conn:
            end_named_sessions(conn, name)
        try:
            with store.begin() as conn:
                if not chunk_rows.take_back(conn, chunk.id, chunk.epoch):
                    continue
        except sa.exc.OperationalError as exc:
            log.warning("chunk %s could not be taken back yet: %s", chunk.id, str(exc.orig).strip().splitlines()[0])
            continue
        with store.connect() as conn:
            stored = get_mapping(conn, chunk.mapping)
        ended = end_sessions(stored.spec, stored.apps, name) if stored is not None else 0
        log.warning("chunk %s of job %s: worker %s let its lease expire; the chunk is redone%s", chunk.number, chunk.job_id,
                    chunk.worker, f" ({ended} app session(s) it held were ended)" if ended else "")
        runs.append(int(chunk.job_id))
    with store.connect() as conn:
        runs.extend(j for j in chunk_rows.idle_runs(conn, quiet_seconds) if j not in runs)
    for job_id in runs:
        send_chunk(job_id)
    return runs


def resend_queued(store: sa.Engine, send: Callable[[int], None], after_seconds: float) -> list[int]:
    """Send again the queued jobs nobody started for `after_seconds`: their message was lost (a
    broker restarted without persistence, or Dramatiq dead-lettered it after its retries). Left
    alone, such a job would block every later tick of its mapping: the sync would silently stop.
    A duplicate is harmless (a worker drops a delivery of a job that is no longer queued), so a job
    merely waiting in a long queue costs one short-lived extra message per interval. Jobs never sent
    are `send_waiting`'s, at once."""
    cutoff = utcnow() - timedelta(seconds=after_seconds)
    with store.connect() as conn:
        ids = queued_since(conn, cutoff)
    sent: list[int] = []
    for job_id in ids:
        with store.begin() as conn:
            won = claim_resend(conn, job_id, cutoff)
        if won:
            log.warning("job %s has been queued for over %.0fs without starting: its message is sent again", job_id,
                        after_seconds)
            send(job_id)
            sent.append(job_id)
    return sent


def resend_after(settings: Settings) -> float:
    """Never before a job deferred for its depends_on mappings would have run anyway."""
    return max(settings.queued_resend_seconds, settings.dependency_wait_seconds + 60)
