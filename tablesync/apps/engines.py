"""Each process's pooled engines for the apps, and a mapping's two tables opened on them.

An app's URL is expanded from the environment here, when a process connects, and never stored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence

import sqlalchemy as sa

from tablesync.apps.table import AppTable
from tablesync.config.load import expand_env
from tablesync.config.model import AppSpec, MappingSpec
from tablesync.db.engine import create_engine, end_named_sessions, redact_url
from tablesync.errors import AppError, AppUnavailable, ConfigError, JobRefused

log = logging.getLogger("tablesync.apps")
SIDES = ("local", "integration")

_engines: dict[str, sa.Engine] = {}
_engines_lock = threading.Lock()


def app_engine(name: str, app: AppSpec) -> sa.Engine:
    """One pooled engine per app URL per process."""
    url = expand_env(app.url, f"app {name}, url")
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            try:
                engine = _engines[url] = create_engine(url)
            except (ValueError, sa.exc.ArgumentError) as exc:
                raise JobRefused(f"app {name}: {redact_url(url)}: {exc}") from None
        return engine


def open_tables(spec: MappingSpec, apps: Mapping[str, AppSpec], session: str | None = None) -> dict[str, AppTable]:
    """Both sides' tables, reflected; a missing table or an unreachable app says which and where.
    `session` names the job's write transactions (`AppTable.session`)."""
    tables = {}
    for side in SIDES:
        side_spec = spec.side(side)
        engine = app_engine(side_spec.app, apps[side_spec.app])
        try:
            tables[side] = AppTable.open(engine, side_spec, session)
        except sa.exc.NoSuchTableError:
            raise JobRefused(f"mapping {spec.name}: table {side_spec.table} not found in app {side_spec.app} "
                             f"({redact_url(str(engine.url))})") from None
        except (AppUnavailable, AppError) as exc:
            raise type(exc)(f"app {side_spec.app} ({redact_url(str(engine.url))}): {exc}") from exc
    return tables


def existing_keys(spec: MappingSpec, apps: Mapping[str, AppSpec], side: str, keys: Sequence[str | None]) -> set[str] | None:
    """The subset of `keys` present on `side` (filters ignored), or None if the app cannot be
    asked: the console shows "?" rather than failing a page over one unreachable app."""
    side_spec = spec.side(side)
    wanted = [k for k in keys if k is not None]
    if not wanted:
        return set()
    try:
        return AppTable.open(app_engine(side_spec.app, apps[side_spec.app]), side_spec).existing(wanted)
    except (sa.exc.SQLAlchemyError, AppUnavailable, AppError, ConfigError, JobRefused, ValueError, KeyError) as exc:
        log.warning("cannot check %s records of %s in app %s: %s", side, spec.name, side_spec.app, exc)
        return None


def end_sessions(spec: MappingSpec, apps: Mapping[str, AppSpec], session: str) -> int:
    """End the sessions a job's frozen worker still holds open in the mapping's PostgreSQL apps
    (its write transactions carry `session` as their application_name): their row locks would
    block the redo until the worker wakes. Other databases are left alone. Returns how many ended;
    an app that cannot be asked is logged and skipped."""
    ended = 0
    for name in dict.fromkeys(spec.side(side).app for side in SIDES):
        try:
            engine = app_engine(name, apps[name])
            if engine.dialect.name != "postgresql":
                continue
            with engine.connect() as conn:
                ended += end_named_sessions(conn, session)
        except (sa.exc.SQLAlchemyError, ConfigError, JobRefused, KeyError) as exc:
            log.warning("cannot end the sessions of %s in app %s: %s", session, name, exc)
    return ended


def dispose_all() -> None:
    """Close every pooled app connection of this process (before its databases are dropped, say)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
