"""Engines for the store and the apps, with one URL normalisation for both."""

from __future__ import annotations

import socket
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tablesync.config.logs import redact


def normalize_url(url: str) -> str:
    """Pick the drivers we ship (psycopg 3, PyMySQL) when a URL names none."""
    parsed = make_url(url)
    if parsed.host and "@" in parsed.host:
        raise ValueError("the URL's user or password contains an unescaped '@': write it as %40")
    driver = parsed.drivername
    if driver in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif driver in ("mysql", "mariadb"):
        parsed = parsed.set(drivername=f"{driver}+pymysql")
    return parsed.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """The URL as it may appear in logs, job messages and the console: never with its password,
    even one with an unescaped @ that a URL parser would split in the wrong place."""
    return redact(url)


def create_engine(url: str, **kwargs: object) -> sa.Engine:
    url = normalize_url(url)
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        engine = sa.create_engine(url, **kwargs)  # type: ignore[arg-type]
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if url.startswith("postgresql+psycopg"):
        own = make_url(url).query.get("options")  # the URL's own server options are kept, after ours
        options = " ".join(o for o in (PG_SERVER_KEEPALIVES, *(own if isinstance(own, tuple) else [own] if own else [])) if o)
        kwargs.setdefault("connect_args", {**PG_KEEPALIVES, "options": options})
    engine = sa.create_engine(url, **kwargs)  # type: ignore[arg-type]
    if engine.dialect.name in ("mysql", "mariadb"):
        sa.event.listen(engine, "connect", _tcp_keepalives)
    return engine


# A partitioned or frozen peer must not hold a session (and the locks on it) for hours: the
# kernel's defaults wait two hours before the first probe. With these, a dead connection is
# noticed within about 30 s: idle 10 s, then 4 probes 5 s apart; a write unacknowledged for 30 s
# fails too (TCP_USER_TIMEOUT), where probes would wait behind the unsent data.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT, TCP_USER_TIMEOUT_MS = 10, 5, 4, 30_000
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": KEEPALIVE_IDLE, "keepalives_interval": KEEPALIVE_INTERVAL,
                 "keepalives_count": KEEPALIVE_COUNT, "tcp_user_timeout": TCP_USER_TIMEOUT_MS}
# the same on the server's side of the session: a partitioned worker's session (and the mapping
# lock it holds) ends within seconds there too
PG_SERVER_KEEPALIVES = (f"-c tcp_keepalives_idle={KEEPALIVE_IDLE} -c tcp_keepalives_interval={KEEPALIVE_INTERVAL} "
                        f"-c tcp_keepalives_count={KEEPALIVE_COUNT} -c tcp_user_timeout={TCP_USER_TIMEOUT_MS}")


def _tcp_keepalives(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    """PyMySQL has no keepalive options: set them on its socket (Linux names; a Unix socket has none)."""
    sock = getattr(dbapi_conn, "_sock", None)
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE), ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
                        ("TCP_KEEPCNT", KEEPALIVE_COUNT), ("TCP_USER_TIMEOUT", TCP_USER_TIMEOUT_MS)):
        if hasattr(socket, name):
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def session_name(job_id: int | None) -> str:
    """The application_name of a job's sessions that hold locks: the mapping lock in the store,
    and each write transaction in a PostgreSQL app. The reaper ends exactly these sessions when it
    takes a job over from a frozen worker, whose open transactions would otherwise block the redo."""
    return f"tablesync job {job_id}"


def name_session(conn: sa.Connection, name: str, transaction_only: bool = True) -> None:
    """Set the PostgreSQL session's application_name (for this transaction only, by default), so
    that `end_named_sessions` can find it; elsewhere nothing."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT set_config('application_name', :n, :local)"), {"n": name, "local": transaction_only})


def end_named_sessions(conn: sa.Connection, name: str) -> int:
    """End every other PostgreSQL session of this database named `name` (`name_session`): how
    the reaper frees what a frozen worker holds. Returns how many it ended."""
    return int(conn.execute(sa.text(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = :n AND pid <> pg_backend_pid()"), {"n": name}).scalar_one())


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
