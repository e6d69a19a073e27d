"""Following a PostgreSQL database's change log: logical decoding through a replication slot, with
the wal2json output plugin, for `tablesync listen`.

Only *which tables changed* matters here: the woken job reads the records itself, by watermark. So
the stream is filtered to the mapped tables on the server (wal2json `add-tables`), each message is
reduced to its table, and the caller is told once per batch. The caller records the wake-ups in the
store and only then does the slot move on (`send_feedback`): a listener killed at any line resumes
from a position whose changes have all been recorded, so nothing is lost, and at worst a batch is
told twice (a second wake-up, which costs an empty run).

psycopg 3 has no replication protocol (psycopg#71), so this module, and only it, uses psycopg2's
`LogicalReplicationConnection`.
"""

from __future__ import annotations

import json
import logging
import re
import select
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from tablesync.db.engine import create_engine, normalize_url, redact_url

log = logging.getLogger("tablesync.listen")
PLUGIN = "wal2json"
HEARTBEAT_PREFIX = "tablesync.heartbeat"
BATCH_SECONDS = 0.1  # a steady stream is told at least this often


class ChangeLogError(Exception):
    """The change log cannot be followed: why, and what to do."""


def slot_name(app: str) -> str:
    """The replication slot of an app: `tablesync_<app>`, as PostgreSQL allows ([a-z0-9_], 63 chars)."""
    return ("tablesync_" + re.sub(r"[^a-z0-9_]", "_", app.lower()))[:63]


def _connect_args(url: str) -> dict[str, Any]:
    u = sa.engine.make_url(normalize_url(url))
    args = {"host": u.host, "port": u.port, "user": u.username, "password": u.password, "dbname": u.database,
            **{k: v for k, v in u.query.items() if isinstance(v, str)}}
    return {k: v for k, v in args.items() if v is not None}


def _table_pattern(schema: str | None, table: str) -> str:
    """wal2json's `add-tables` entry: schema.table, `*` for any schema, special characters escaped."""
    def esc(name: str) -> str:
        return re.sub(r"([ ',.*\\])", r"\\\1", name)

    return f"{esc(schema) if schema else '*'}.{esc(table)}"


@dataclass
class Lag:
    """How far behind the slot is: WAL bytes not yet confirmed, and the age of the oldest heartbeat
    written into the log but not yet read back (or the last one's round trip)."""

    bytes: int | None = None
    seconds: float | None = None


class Wal2Json:
    """wal2json's format 2: one JSON object per change, filtered to the tables on the server."""

    plugin = "wal2json"
    decode = True

    def __init__(self, tables: frozenset[tuple[str | None, str]]) -> None:
        self.options = {"format-version": "2", "include-transaction": "false", "include-types": "false",
                        "include-type-oids": "false", "add-msg-prefixes": HEARTBEAT_PREFIX,
                        "add-tables": ",".join(sorted(_table_pattern(s, t) for s, t in tables))}

    def read(self, payload: Any) -> tuple[tuple[str, str] | None, str | None]:
        """(the (schema, table) a change is in, or a heartbeat's content)."""
        change = json.loads(payload)
        if change.get("action") == "M":
            return None, change.get("prefix") == HEARTBEAT_PREFIX and change.get("content", "") or None
        return ((change.get("schema", ""), change["table"]) if "table" in change else None), None


class PgOutput:
    """PostgreSQL's built-in pgoutput (protocol 1) on a publication the database's owner made: no
    plugin to install. Binary messages; only which relation a change is in is read: a Relation
    message names it (schema, table) before its first change on the connection, and Insert,
    Update, Delete and Truncate carry its id. Changes outside the mapped tables are skipped."""

    plugin = "pgoutput"
    decode = False

    def __init__(self, publication: str, tables: frozenset[tuple[str | None, str]]) -> None:
        self.options = {"proto_version": "1", "publication_names": publication, "messages": "true"}
        self.tables = tables
        self.relations: dict[int, tuple[str, str]] = {}

    def read(self, payload: bytes) -> tuple[tuple[str, str] | None, str | None]:
        kind = payload[:1]
        if kind == b"R":
            relid = int.from_bytes(payload[1:5], "big")
            schema, _, rest = payload[5:].partition(b"\0")
            table = rest.partition(b"\0")[0]
            self.relations[relid] = (schema.decode() or "pg_catalog", table.decode())
        elif kind in (b"I", b"U", b"D"):
            return self._mapped(int.from_bytes(payload[1:5], "big")), None
        elif kind == b"T":
            count = int.from_bytes(payload[1:5], "big")
            relids = [int.from_bytes(payload[6 + 4 * i:10 + 4 * i], "big") for i in range(count)]
            hits = [t for t in map(self._mapped, relids) if t is not None]
            return (hits[0] if hits else None), None
        elif kind == b"M":  # flags (1), lsn (8), prefix, length (4), content
            prefix, _, rest = payload[10:].partition(b"\0")
            if prefix.decode() == HEARTBEAT_PREFIX:
                return None, rest[4:4 + int.from_bytes(rest[:4], "big")].decode()
        return None, None

    def _mapped(self, relid: int) -> tuple[str, str] | None:
        found = self.relations.get(relid)
        if found is None:
            return None
        if found in self.tables or (None, found[1]) in self.tables:
            return found
        return None


@dataclass
class PgChangeLog:
    """One database's change log, filtered to `tables` ((schema or None, table) pairs): through
    wal2json, or through pgoutput on `publication` where the database has one."""

    url: str  # expanded
    slot: str
    tables: frozenset[tuple[str | None, str]]
    publication: str | None = None
    _heartbeats: dict[str, float] = field(default_factory=dict)
    _round_trip: float | None = None

    @property
    def plugin(self) -> str:
        return "pgoutput" if self.publication else PLUGIN

    @property
    def label(self) -> str:
        return f"{redact_url(self.url)} (slot {self.slot})"

    def _replication(self) -> Any:
        import psycopg2
        import psycopg2.extras

        try:
            return psycopg2.connect(connection_factory=psycopg2.extras.LogicalReplicationConnection,
                                    **_connect_args(self.url))
        except psycopg2.Error as exc:
            raise ChangeLogError(f"cannot open a replication connection to {self.label}: {_first_line(exc)}") from None

    def ensure_slot(self) -> bool:
        """Create the slot unless it exists; True if it was made now. tablesync's slot of that
        name made for the other plugin (the app's `publication` was set or removed since) is made
        again: what changed in between arrives at the next scheduled tick."""
        import psycopg2

        engine = create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                plugin = conn.execute(sa.text("SELECT plugin FROM pg_replication_slots WHERE slot_name = :s"),
                                      {"s": self.slot}).scalar()
        finally:
            engine.dispose()
        if plugin == self.plugin:
            return False
        if plugin is not None:
            log.warning("%s: the slot decodes with %s, the app now needs %s: made again", self.label, plugin, self.plugin)
            drop_slot(self.url, self.slot)
        conn = self._replication()
        try:
            conn.cursor().create_replication_slot(self.slot, output_plugin=self.plugin)
        except psycopg2.errors.DuplicateObject:
            return False  # another listener made it in between
        except psycopg2.Error as exc:
            raise ChangeLogError(f"cannot create the replication slot on {self.label}: {_first_line(exc)}"
                                 + _hint(exc)) from None
        finally:
            conn.close()
        return True

    def follow(self, on_changes: Callable[[set[tuple[str, str]]], None], stop: threading.Event,
               heartbeat_seconds: float, on_lag: Callable[[Lag], None]) -> None:
        """Stream the log until `stop` is set: `on_changes` gets the (schema, table) pairs of each
        batch, and the slot is confirmed past a batch only once it returned. Raises ChangeLogError
        when the stream breaks (the caller follows again)."""
        import psycopg2

        conn = self._replication()
        beat = _Heartbeat(self.url, heartbeat_seconds)
        decoder = PgOutput(self.publication, self.tables) if self.publication else Wal2Json(self.tables)
        try:
            cur = conn.cursor()
            cur.start_replication(slot_name=self.slot, decode=decoder.decode, options=decoder.options)
            pending: set[tuple[str, str]] = set()
            ack: int | None = None
            batch_started = 0.0
            while not stop.is_set():
                msg = cur.read_message()
                if msg is not None:
                    ack = msg.data_start
                    table, heartbeat = decoder.read(msg.payload)
                    if heartbeat is not None:
                        self._heard(heartbeat)
                    elif table is not None:
                        if not pending:
                            batch_started = time.monotonic()
                        pending.add(table)
                    if not pending or time.monotonic() - batch_started < BATCH_SECONDS:
                        continue
                if pending:
                    on_changes(pending)  # recorded in the store before the slot moves on
                    pending = set()
                if ack is not None:
                    cur.send_feedback(flush_lsn=ack)
                    ack = None
                if beat.due():
                    sent = beat.send()
                    if sent is not None:
                        self._heartbeats[sent] = time.monotonic()
                    on_lag(Lag(beat.lag_bytes(self.slot), self._lag_seconds()))
                if msg is None:
                    select.select([cur], [], [], 0.05)
        except psycopg2.Error as exc:
            raise ChangeLogError(f"the change log of {self.label} broke off: {_first_line(exc)}" + _hint(exc)) from None
        finally:
            beat.close()
            conn.close()

    def _heard(self, content: str) -> None:
        sent = self._heartbeats.pop(content, None)
        if sent is not None:
            self._round_trip = time.monotonic() - sent

    def _lag_seconds(self) -> float | None:
        oldest = min(self._heartbeats.values(), default=None)
        waiting = time.monotonic() - oldest if oldest is not None else 0.0
        return max(waiting, self._round_trip or 0.0) if (oldest is not None or self._round_trip is not None) else None


class _Heartbeat:
    """Writes a message into the change log every so often (`pg_logical_emit_message`, not a
    table): the slot moves on while the mapped tables are idle, and the lag is measured."""

    def __init__(self, url: str, every: float) -> None:
        self.engine = create_engine(url, poolclass=sa.pool.NullPool)
        self.every = every
        self.next = 0.0
        self.failed = False

    def due(self) -> bool:
        return time.monotonic() >= self.next

    def send(self) -> str | None:
        """Write a heartbeat; its id, or None if none could be written."""
        self.next = time.monotonic() + self.every
        if self.failed:
            return None
        beat = uuid.uuid4().hex
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text("SELECT pg_logical_emit_message(false, :p, :c)"), {"p": HEARTBEAT_PREFIX, "c": beat})
        except sa.exc.DBAPIError as exc:
            self.failed = True  # the slot still moves on with every change; only idle lag goes unmeasured
            log.warning("heartbeat into %s failed, not tried again: %s", redact_url(str(self.engine.url)),
                        _first_line(exc.orig))
            return None
        return beat

    def lag_bytes(self, slot: str) -> int | None:
        try:
            with self.engine.connect() as conn:
                value = conn.execute(sa.text("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                                             "FROM pg_replication_slots WHERE slot_name = :s"), {"s": slot}).scalar()
        except sa.exc.DBAPIError:
            return None
        return int(value) if value is not None else None

    def close(self) -> None:
        self.engine.dispose()


def drop_slot(url: str, slot: str, attempts: int = 20) -> bool:
    """Drop `slot` (ending the connection that streams from it, if any); False if there was none."""
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    try:
        for attempt in range(attempts):
            with engine.connect() as conn:
                row = conn.execute(sa.text("SELECT active_pid FROM pg_replication_slots WHERE slot_name = :s"),
                                   {"s": slot}).first()
                if row is None:
                    return False
                if row.active_pid is not None:
                    conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": row.active_pid})
                try:
                    conn.execute(sa.text("SELECT pg_drop_replication_slot(:s)"), {"s": slot})
                    conn.commit()
                    return True
                except sa.exc.OperationalError:
                    conn.rollback()  # still active: its walsender is on its way out
            time.sleep(0.1 * (attempt + 1))
        raise ChangeLogError(f"the replication slot {slot} on {redact_url(url)} stays in use: stop what streams from it")
    finally:
        engine.dispose()


def slot_problems(url: str, publication: str | None = None) -> list[str]:
    """What keeps this database from being followed (`config check`): the settings and the
    privilege logical decoding needs, and the plugin or the publication, each said with what to change."""
    engine = create_engine(url, poolclass=sa.pool.NullPool)
    plugin = "pgoutput" if publication else PLUGIN
    problems: list[str] = []
    try:
        with engine.connect() as conn:
            settings = dict(conn.execute(sa.text(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('wal_level', 'max_replication_slots', 'max_wal_senders', 'output_plugin_libraries')")).all())
            if settings.get("wal_level") != "logical":
                problems.append(f"wal_level is {settings.get('wal_level')}, needs logical (postgresql.conf, then a restart)")
            role = conn.execute(sa.text("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user")).scalar()
            if not role:
                problems.append("the app's user lacks the REPLICATION privilege (ALTER ROLE … REPLICATION)")
            used = conn.execute(sa.text("SELECT count(*) FROM pg_replication_slots")).scalar() or 0
            if int(settings.get("max_replication_slots", 0)) <= used:
                problems.append(f"max_replication_slots ({settings.get('max_replication_slots')}) are all in use")
            allowed = settings.get("output_plugin_libraries")
            if allowed is not None and plugin not in [p.strip() for p in allowed.split(",")]:
                problems.append(f"output_plugin_libraries ({allowed}) does not allow {plugin}: add it")
            if publication and conn.execute(sa.text("SELECT count(*) FROM pg_publication WHERE pubname = :p"),
                                            {"p": publication}).scalar() == 0:
                problems.append(f"publication {publication!r} does not exist: the database's owner makes it "
                                f"(CREATE PUBLICATION {publication} FOR TABLE …, the mapped tables)")
    finally:
        engine.dispose()
    return problems


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _hint(exc: Any) -> str:
    text = str(exc)
    if "wal2json" in text and ("could not access file" in text or "No such file" in text):
        return f" (install the {PLUGIN} plugin on the database server: Debian's postgresql-NN-wal2json)"
    if "logical decoding requires wal_level" in text:
        return " (set wal_level = logical and restart the server)"
    if "must be superuser or replication role" in text or "permission denied" in text:
        return " (the app's user needs the REPLICATION privilege)"
    return ""
