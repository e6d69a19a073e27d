"""Versioned mapping definitions in the store: what every scheduler and worker syncs by.

A definition embeds the URL *templates* of its two apps (`${ERP_DATABASE_URL}`), never expanded
URLs, so no secret reaches the store; each process expands them from its own environment.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from tablesync.config.model import AppSpec, ConfigFile, MappingSpec
from tablesync.db.engine import utcnow
from tablesync.store.schema import mappings


@dataclass(frozen=True)
class StoredMapping:
    spec: MappingSpec
    apps: dict[str, AppSpec]
    version: int


@dataclass(frozen=True)
class ApplyResult:
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    deactivated: list[str]


# App settings added after definitions were first stored: left out at their defaults, so that
# definitions stored before them keep their digest (and their mappings are not "updated")
_LATE_DEFAULTS = {"change_capture": "schedule", "slot": None, "publication": None}


def _left_out(app: AppSpec) -> set[str]:
    return {name for name, default in _LATE_DEFAULTS.items() if getattr(app, name) == default}


def _definition(cfg: ConfigFile, m: MappingSpec) -> dict[str, Any]:
    used = {m.local.app, m.integration.app}
    return {
        "mapping": m.model_dump(mode="json", by_alias=True, exclude_none=True),
        "apps": {name: cfg.apps[name].model_dump(mode="json", exclude=_left_out(cfg.apps[name])) for name in sorted(used)},
    }


def apply_config(engine: sa.Engine, cfg: ConfigFile, applied_by: str | None = None) -> ApplyResult:
    """Store a new version of each changed mapping; mappings absent from the file are deactivated."""
    now = utcnow()
    created, updated, unchanged, deactivated = [], [], [], []
    with engine.begin() as conn:
        current = {r.name: r for r in conn.execute(_latest_query())}
        for m in cfg.mappings:
            definition = _definition(cfg, m)
            digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
            prev = current.get(m.name)
            if prev is not None and prev.digest == digest and prev.active:
                unchanged.append(m.name)
                continue
            version = 1 if prev is None else prev.version + 1
            conn.execute(sa.insert(mappings).values(
                name=m.name, version=version, definition=definition, digest=digest, active=True,
                applied_at=now, applied_by=applied_by,
            ))
            (created if prev is None else updated).append(m.name)
        names = {m.name for m in cfg.mappings}
        for name, prev in current.items():
            if name not in names and prev.active:
                conn.execute(sa.insert(mappings).values(
                    name=name, version=prev.version + 1, definition=prev.definition, digest=prev.digest,
                    active=False, applied_at=now, applied_by=applied_by,
                ))
                deactivated.append(name)
    return ApplyResult(created, updated, unchanged, deactivated)


def _latest_query(*columns: Any) -> sa.Select[Any]:
    """The current version of each mapping (its columns, or `columns` only)."""
    latest = sa.select(mappings.c.name, sa.func.max(mappings.c.version).label("v")).group_by(mappings.c.name).subquery()
    return sa.select(*(columns or (mappings,))).join(
        latest, sa.and_(mappings.c.name == latest.c.name, mappings.c.version == latest.c.v))


def _stored(row: Any) -> StoredMapping:
    d = row.definition
    return StoredMapping(
        spec=MappingSpec.model_validate(d["mapping"]),
        apps={k: AppSpec.model_validate(v) for k, v in d["apps"].items()},
        version=row.version,
    )


def active_mappings(conn: sa.Connection) -> list[StoredMapping]:
    rows = conn.execute(_latest_query().order_by(mappings.c.name)).all()
    return [_stored(r) for r in rows if r.active]


def active_versions(conn: sa.Connection) -> dict[str, int]:
    """{name: version} of the active mappings, without their definitions: how a poller notices a change cheaply."""
    return {name: version for name, (version, _) in active_heads(conn).items()}


def active_heads(conn: sa.Connection) -> dict[str, tuple[int, datetime]]:
    """{name: (version, applied_at)} of the active mappings' current versions."""
    q = _latest_query(mappings.c.name, mappings.c.version, mappings.c.applied_at).where(mappings.c.active)
    return {name: (int(version), applied) for name, version, applied in conn.execute(q)}


def known_mappings(conn: sa.Connection) -> dict[str, bool]:
    """{name: active} of every mapping ever applied: a deactivated mapping's jobs, couplings and
    record logs stay readable under its name."""
    return {name: bool(active) for name, active in conn.execute(_latest_query(mappings.c.name, mappings.c.active))}


def get_mapping(conn: sa.Connection, name: str) -> StoredMapping | None:
    row = conn.execute(_latest_query().where(mappings.c.name == name)).first()
    return _stored(row) if row is not None and row.active else None
