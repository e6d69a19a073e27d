"""Do these records still exist? Checked live in the apps, for the errors list and its actions."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from tablesync.config.load import ConfigError
from tablesync.store.mappings import StoredMapping
from tablesync.apps.table import AppTable
from tablesync.worker.runner import app_engine

log = logging.getLogger("tablesync.console")


def existing_keys(stored: StoredMapping, side: str, keys: list[str]) -> set[str] | None:
    """The subset of `keys` present on `side` (filters ignored), or None if the app cannot be asked."""
    spec = stored.spec.side(side)
    if not any(k is not None for k in keys):
        return set()
    try:
        return AppTable.open(app_engine(spec.app, stored.apps[spec.app]), spec).existing(keys)
    except (sa.exc.SQLAlchemyError, ConfigError, ValueError, KeyError) as exc:
        log.warning("cannot check %s records of %s in app %s: %s", side, stored.spec.name, spec.app, exc)
        return None
