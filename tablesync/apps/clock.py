"""How far an app database's wall clock is from UTC, for the lag of naive modified-on values.

A `timestamp without time zone` column holds the app's local time (the database session's time
zone when the app writes `now()`, UTC when it writes SQLite's CURRENT_TIMESTAMP), so its values
are only comparable with the same database's clock. One reading per database every few minutes
is enough: the offset is a time zone plus clock skew, and it moves only when daylight saving does.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

log = logging.getLogger(__name__)

TTL_SECONDS = 600.0
_cache: dict[int, tuple[float, timedelta | None]] = {}
_lock = threading.Lock()


def clock_offset(engine: sa.Engine) -> timedelta | None:
    """The database's local wall clock minus UTC now; None when it cannot be read (the lag of
    naive values is then not observed: a metric must never fail a sync)."""
    now = time.monotonic()
    with _lock:
        hit = _cache.get(id(engine))
    if hit is not None and now - hit[0] < TTL_SECONDS:
        return hit[1]
    offset = _read(engine)
    with _lock:
        _cache[id(engine)] = (now, offset)
    return offset


def _read(engine: sa.Engine) -> timedelta | None:
    dialect = engine.dialect.name
    clock = (sa.func.strftime("%Y-%m-%d %H:%M:%f", "now") if dialect == "sqlite"  # CURRENT_TIMESTAMP, to the millisecond
             else sa.func.localtimestamp(6) if dialect in ("mysql", "mariadb") else sa.func.localtimestamp())
    try:
        with engine.connect() as conn:
            value = conn.execute(sa.select(sa.type_coerce(clock, sa.String()))).scalar()
    except sa.exc.SQLAlchemyError as exc:
        log.warning("cannot read the clock of %s for the sync lag metric: %s", engine.url.render_as_string(), exc)
        return None
    try:
        read = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if read.tzinfo is not None:
        read = read.astimezone(timezone.utc).replace(tzinfo=None)
    return read - datetime.now(timezone.utc).replace(tzinfo=None)
