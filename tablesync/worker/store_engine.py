"""The process-wide store engine, built lazily from settings."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from tablesync.config.settings import get_settings
from tablesync.db.engine import create_engine

_engine: sa.Engine | None = None
_lock = threading.Lock()


def store_engine() -> sa.Engine:
    global _engine
    with _lock:
        if _engine is None:
            _engine = create_engine(get_settings().store_url)
        return _engine


def reset_store_engine() -> None:
    global _engine
    with _lock:
        if _engine is not None:
            _engine.dispose()
        _engine = None
