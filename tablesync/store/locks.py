"""One running job per mapping, across every machine.

On PostgreSQL a session advisory lock is held on a dedicated connection for the whole job: if the
worker dies the connection drops and the lock is free at once. Stores without advisory locks
(SQLite, the single-process embedded default) use a lease row that the job's heartbeat renews.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from datetime import timedelta

import sqlalchemy as sa

from tablesync.db.engine import end_named_sessions, name_session, session_name, utcnow
from tablesync.store.schema import mapping_locks

OWNER = f"{socket.gethostname()}:{os.getpid()}"


def lock_key(mapping: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"tablesync:{mapping}".encode(), digest_size=8).digest(), "big", signed=True)


class MappingLock:
    def __init__(self, store: sa.Engine, mapping: str, lease_seconds: float = 60.0, job_id: int | None = None):
        self.store = store
        self.mapping = mapping
        self.lease = lease_seconds
        self.job_id = job_id
        self.owner = f"{OWNER}:{threading.get_ident()}" + (f":job {job_id}" if job_id is not None else "")
        self._conn: sa.Connection | None = None
        self.held = False

    def acquire(self) -> bool:
        if self.store.dialect.name == "postgresql":
            conn = self.store.connect()
            name_session(conn, session_name(self.job_id), transaction_only=False)
            got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": lock_key(self.mapping)}).scalar()
            conn.commit()
            if got:
                self._conn = conn
            else:
                conn.invalidate()  # not back to the pool under a job's application_name
                conn.close()
            self.held = bool(got)
            return self.held
        now = utcnow()
        with self.store.begin() as conn:
            exists = conn.execute(sa.select(mapping_locks.c.mapping).where(mapping_locks.c.mapping == self.mapping)).first()
            if exists is None:
                try:
                    with conn.begin_nested():
                        conn.execute(sa.insert(mapping_locks).values(mapping=self.mapping, owner=None, expires_at=None))
                except sa.exc.IntegrityError:
                    pass
            got = conn.execute(
                sa.update(mapping_locks)
                .where(mapping_locks.c.mapping == self.mapping,
                       sa.or_(mapping_locks.c.owner.is_(None), mapping_locks.c.expires_at < now))
                .values(owner=self.owner, expires_at=now + timedelta(seconds=self.lease))
            ).rowcount
        self.held = got == 1
        return self.held

    def renew(self) -> None:
        if self._conn is not None or not self.held:
            return
        with self.store.begin() as conn:
            conn.execute(sa.update(mapping_locks).where(mapping_locks.c.mapping == self.mapping, mapping_locks.c.owner == self.owner)
                         .values(expires_at=utcnow() + timedelta(seconds=self.lease)))

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._conn is not None:
            try:
                self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": lock_key(self.mapping)})
                self._conn.commit()
            finally:
                self._conn.close()
                self._conn = None
            return
        with self.store.begin() as conn:
            conn.execute(sa.update(mapping_locks).where(mapping_locks.c.mapping == self.mapping, mapping_locks.c.owner == self.owner)
                         .values(owner=None, expires_at=None))


def end_job_sessions(conn: sa.Connection, mapping: str, job_id: int) -> int:
    """End what an abandoned job's worker still holds in the store: on PostgreSQL every session
    named after the job (its mapping-lock session, and a write transaction it froze in, whose row
    locks would block the takeover and the redo); elsewhere clear its lease. A worker frozen past
    the heartbeat timeout would otherwise hold them until it wakes, which without keepalives can
    be hours. Returns how many it ended."""
    if conn.dialect.name == "postgresql":
        return end_named_sessions(conn, session_name(job_id))
    return int(conn.execute(sa.update(mapping_locks).where(mapping_locks.c.mapping == mapping,
                                                           mapping_locks.c.owner.like(f"%:job {job_id}"))
                            .values(owner=None, expires_at=None)).rowcount)
