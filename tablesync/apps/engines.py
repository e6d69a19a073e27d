"""Each process's pooled engines (databases) and service clients (HTTP apps) for the apps, and a
mapping's two tables opened on them.

An app's URL is expanded from the environment here, when a process connects, and never stored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from pyrate_limiter import Limiter

from tablesync.apps.api_table import ApiTable, edm_table
from tablesync.apps.http_auth import http_auth
from tablesync.apps.odata import ODataService, local_rate, shared_rate
from tablesync.apps.table import AppTable
from tablesync.apps.tables import Table
from tablesync.config.load import expand_env
from tablesync.config.model import AppSpec, MappingSpec, SideSpec
from tablesync.config.settings import get_settings
from tablesync.db.engine import create_engine, end_named_sessions, redact_url
from tablesync.errors import AppError, AppUnavailable, ConfigError, JobRefused

log = logging.getLogger("tablesync.apps")
SIDES = ("local", "integration")

_engines: dict[str, sa.Engine] = {}
_services: dict[tuple[Any, ...], ODataService] = {}
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


def app_service(name: str, app: AppSpec) -> ODataService:
    """One OData service client per app per process: its connections, its metadata (read once)
    and its request rate (shared through Redis by every worker when `rate_limit:` is set)."""
    url = expand_env(str(app.odata), f"app {name}, odata")
    auth, headers = http_auth(name, app.auth)
    ident = (name, url, app.model_dump_json())
    with _engines_lock:
        service = _services.get(ident)
        if service is None:
            service = _services[ident] = ODataService(url, auth=auth, headers=headers, label=f"app {name}",
                                                      throttle_seconds=app.throttle_seconds, limiter=_limiter(name, app),
                                                      batching=app.batch, batch_size=app.batch_size)
        return service


def _limiter(name: str, app: AppSpec) -> Limiter | None:
    if app.rate_limit is None:
        return None
    settings = get_settings()
    redis_url = settings.rate_redis_url
    if redis_url is not None:
        return shared_rate(redis_url, name, app.rate_limit, settings.broker_namespace)
    log.warning("app %s: rate_limit %g/s holds per process only: set TABLESYNC_RATE_LIMIT_URL (or a Redis broker) "
                "to share it between workers", name, app.rate_limit)
    return local_rate(app.rate_limit)


def open_table(name: str, app: AppSpec, side: SideSpec, session: str | None = None) -> Table:
    """One side's table: reflected from a database, or described by an HTTP app's metadata."""
    if app.http:
        service = app_service(name, app)
        connector = service.table(side.table, side.modified, app.batch_size)
        return ApiTable(connector, side, edm_table(connector.entity_set), app.overlap_seconds)
    return AppTable.open(app_engine(name, app), side, session)


def open_tables(spec: MappingSpec, apps: Mapping[str, AppSpec], session: str | None = None) -> dict[str, Table]:
    """Both sides' tables, reflected; a missing table or an unreachable app says which and where.
    `session` names the job's write transactions (`AppTable.session`)."""
    tables: dict[str, Table] = {}
    for side in SIDES:
        side_spec = spec.side(side)
        app = apps[side_spec.app]
        if app.http:
            try:
                tables[side] = open_table(side_spec.app, app, side_spec)
            except AppError as exc:
                raise JobRefused(f"mapping {spec.name}: app {side_spec.app}: {exc}") from None
            continue
        engine = app_engine(side_spec.app, app)
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
        return open_table(side_spec.app, apps[side_spec.app], side_spec).existing(wanted)
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
            if apps[name].http:
                continue
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
        for service in _services.values():
            service.close()
        _services.clear()
