"""Engines for the store and the apps, with one URL normalisation for both."""

from __future__ import annotations

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
    return sa.create_engine(url, **kwargs)  # type: ignore[arg-type]


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
