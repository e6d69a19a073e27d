"""Following a MariaDB/MySQL database's row-based binlog, for `tablesync listen`.

As with PostgreSQL (`apps.changelog`), only which tables changed matters. The listener keeps the
position itself (the server has no slot): it is handed over with each batch, at a transaction's
end only, and stored together with the batch's wake-ups, so a listener killed at any line resumes
where every change before has been recorded.

The stream is watched: the server is asked for a heartbeat every `heartbeat` seconds when it has
nothing to send, and a read that hears nothing for many of them breaks the connection, which is
then made again from the stored position (mysql-replication's streams are known to stall silently
after 30-60 minutes: its issue #636).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from tablesync.apps.changelog import BATCH_SECONDS, ChangeLogError
from tablesync.db.engine import create_engine, normalize_url, redact_url

log = logging.getLogger("tablesync.listen")
# mysql-replication logs its settings at INFO and warns that it cannot name columns without
# binlog_row_metadata=FULL: tablesync reads no columns from the binlog, only which tables changed
logging.getLogger("pymysqlreplication").setLevel(logging.ERROR)
SERVER_ID = random.randint(1 << 30, (1 << 31) - 1)  # a replica id of this process, far from real replicas'
IDLE_SAVE_SECONDS = 5.0  # how often the position is stored when no mapped table changes


@dataclass(frozen=True)
class Position:
    file: str
    pos: int

    def encode(self) -> str:
        return f"{self.file}:{self.pos}"

    @staticmethod
    def decode(text: str) -> Position:
        file, _, pos = text.rpartition(":")
        return Position(file, int(pos))


@dataclass
class Binlog:
    """One database's binlog, filtered to `tables` ((schema or None, table) pairs) of its database."""

    url: str  # expanded
    tables: frozenset[tuple[str | None, str]]

    @property
    def label(self) -> str:
        return f"{redact_url(self.url)} (binlog)"

    @property
    def database(self) -> str | None:
        return sa.engine.make_url(normalize_url(self.url)).database

    def current(self) -> Position:
        """Where the server writes now: a first follow starts here (the history is the scheduled runs')."""
        engine = create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                row = conn.execute(sa.text("SHOW MASTER STATUS")).first()
        finally:
            engine.dispose()
        if row is None:
            raise ChangeLogError(f"{self.label}: the server writes no binlog (log_bin is OFF): start it with log-bin "
                                 "and binlog_format=ROW")
        return Position(row[0], int(row[1]))

    def follow(self, start: Position, on_changes: Callable[[set[tuple[str, str]], Position], None],
               stop: threading.Event, heartbeat_seconds: float) -> None:
        """Stream from `start` until `stop`: `on_changes` gets each batch's (schema, table) pairs and
        the position after it (at a transaction's end), also with no pairs now and then while idle,
        so that the stored position stays near. Raises ChangeLogError when the stream breaks."""
        import pymysql
        from pymysqlreplication import BinLogStreamReader
        from pymysqlreplication.event import HeartbeatLogEvent, RotateEvent, XidEvent
        from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

        u = sa.engine.make_url(normalize_url(self.url))
        settings = {"host": u.host or "127.0.0.1", "port": u.port or 3306, "user": u.username or "",
                    "passwd": u.password or "", "read_timeout": max(10, int(heartbeat_seconds * 50))}
        schemas = {s for s, _ in self.tables if s} | ({self.database} if self.database else set())
        wanted_tables = {t for _, t in self.tables}
        stream = BinLogStreamReader(
            connection_settings=settings, server_id=SERVER_ID, blocking=True, resume_stream=True,
            log_file=start.file, log_pos=start.pos, slave_heartbeat=heartbeat_seconds,
            only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent, XidEvent, HeartbeatLogEvent, RotateEvent],
            only_schemas=sorted(schemas) or None, only_tables=sorted(wanted_tables))
        pending: set[tuple[str, str]] = set()
        batch_started = 0.0
        saved = time.monotonic()
        try:
            while not stop.is_set():
                event = stream.fetchone()
                if event is None:
                    continue
                if isinstance(event, (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)):
                    if event.table in wanted_tables:
                        if not pending:
                            batch_started = time.monotonic()
                        pending.add((event.schema, event.table))
                    continue
                position = Position(stream.log_file, stream.log_pos)
                if isinstance(event, XidEvent):  # a transaction's end: its changes may be handed over
                    due = time.monotonic() - batch_started >= BATCH_SECONDS if pending else \
                        time.monotonic() - saved >= IDLE_SAVE_SECONDS  # a server busy with other tables is never idle
                    if due:
                        on_changes(pending, position)
                        pending, saved = set(), time.monotonic()
                    continue
                if isinstance(event, HeartbeatLogEvent) and (pending or time.monotonic() - saved >= IDLE_SAVE_SECONDS):
                    on_changes(pending, position)  # idle: nothing after the last transaction's end
                    pending, saved = set(), time.monotonic()
        except (pymysql.err.MySQLError, OSError) as exc:
            raise ChangeLogError(f"the binlog of {self.label} broke off: {exc}" + _hint(exc)) from None
        finally:
            stream.close()


def binlog_problems(url: str) -> list[str]:
    """What keeps this database from being followed (`config check`): the binlog's settings and
    the privileges a replica needs, each said with what to change."""
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    problems: list[str] = []
    try:
        with engine.connect() as conn:
            variables = {k.lower(): str(v) for k, v in conn.execute(sa.text(
                "SHOW VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format')")).all()}
            if variables.get("log_bin", "OFF").upper() != "ON":
                problems.append("the server writes no binlog: start it with log-bin (and binlog_format=ROW)")
            if variables.get("binlog_format", "").upper() != "ROW":
                problems.append(f"binlog_format is {variables.get('binlog_format')}, needs ROW (SET GLOBAL binlog_format=ROW "
                                "and in the server's config)")
            grants = " ".join(str(r[0]) for r in conn.execute(sa.text("SHOW GRANTS"))).upper()
            if "ALL PRIVILEGES ON *.*" not in grants and "REPLICATION SLAVE" not in grants:
                problems.append("the app's user lacks REPLICATION SLAVE (GRANT REPLICATION SLAVE, REPLICATION CLIENT "
                                "ON *.* TO …)")
    finally:
        engine.dispose()
    return problems


def _hint(exc: Any) -> str:
    code = exc.args[0] if getattr(exc, "args", None) else None
    if code == 1236:
        return " (the stored position is no longer in the server's binlog: it was purged)"
    if code in (1045, 1227):
        return " (the app's user needs REPLICATION SLAVE and REPLICATION CLIENT)"
    return ""
