"""The live processes of a store: schedulers, worker processes and `tablesync run`.

Each beats its row every few seconds and removes it when it stops cleanly; a row whose beat is
older than a few intervals belongs to a process that died. Nothing depends on the rows for
correctness: they let `--wait` say *why* a job sits queued (nothing sends it, or no worker of this
store listens on its queue) instead of waiting in silence.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from tablesync.db.engine import utcnow
from tablesync.store.schema import processes

Role = Literal["scheduler", "worker", "run"]  # what `processes.role` holds
SENDERS = ("scheduler", "run")  # roles that hand jobs waiting in the store to a broker
RUNNERS = ("worker", "run")  # roles that run jobs


def liveness_window(heartbeat_seconds: float) -> float:
    """How recent a beat must be for its process to count as alive: a few missed beats are tolerated."""
    return max(15.0, 3 * heartbeat_seconds)


def process_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def beat(conn: sa.Connection, role: str, queue: str | None, broker: str | None, started_at: datetime,
         name: str | None = None) -> None:
    """Insert or refresh this process's row (update first: the common case is a refresh)."""
    name = name or process_name()
    now = utcnow()
    values: dict[str, Any] = {"role": role, "queue": queue, "broker": broker, "seen_at": now}
    if conn.execute(sa.update(processes).where(processes.c.name == name).values(**values)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(processes).values(name=name, host=socket.gethostname(), pid=os.getpid(),
                                                     started_at=started_at, **values))
    except sa.exc.IntegrityError:  # a second thread of this process inserted it first
        conn.execute(sa.update(processes).where(processes.c.name == name).values(**values))


def remove(conn: sa.Connection, name: str | None = None) -> None:
    conn.execute(sa.delete(processes).where(processes.c.name == (name or process_name())))


def live(conn: sa.Connection, roles: Iterable[str], within_seconds: float, queue: str | None = None) -> list[sa.Row[Any]]:
    """Processes of these roles seen within `within_seconds` (on `queue`, if given)."""
    q = sa.select(processes).where(processes.c.role.in_(list(roles)),
                                   processes.c.seen_at >= utcnow() - timedelta(seconds=within_seconds))
    if queue is not None:
        q = q.where(processes.c.queue == queue)
    return conn.execute(q.order_by(processes.c.name)).all()


def forget_dead(conn: sa.Connection, older_than_seconds: float) -> int:
    """Rows of processes silent for long (killed without a clean stop): kept tidy by the scheduler."""
    return int(conn.execute(sa.delete(processes).where(
        processes.c.seen_at < utcnow() - timedelta(seconds=older_than_seconds))).rowcount)
