"""`config check` against the live apps: connection, tables, columns, keys and types, by reflection
of a database or from an OData service's `$metadata` (`apps.api_table.edm_table`), judged alike."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tablesync.apps.api_table import edm_table
from tablesync.apps.binlog import binlog_problems
from tablesync.apps.catalog import Trigger, before_insert_triggers, key_default_problem
from tablesync.apps.changelog import slot_problems
from tablesync.apps.http_auth import http_auth
from tablesync.apps.odata import ODataService
from tablesync.apps.schema import category, compatible, fit_problems, has_server_key, reflect_table
from tablesync.config.load import expand_env
from tablesync.config.model import AppSpec, ConfigFile, FieldSpec, MappingSpec, SideSpec, target_side
from tablesync.db.engine import create_engine, redact_url
from tablesync.errors import AppError, AppUnavailable, ConfigError, Problem

_MODIFIED_OK = ("datetime", "date", "integer", "numeric")


App = sa.Engine | ODataService  # how an app is reached: a database engine or an OData service


def check_live(cfg: ConfigFile, env: dict[str, str] | None = None) -> list[Problem]:
    problems: list[Problem] = []
    engines: dict[str, App | None] = {}
    for name, app in cfg.apps.items():
        where = f"app {name}"
        try:
            url = expand_env(app.address, f"{where}, {'odata' if app.http else 'url'}", env)
            if app.http:
                engines[name] = _service(name, app, url, env)
                continue
        except ConfigError as exc:
            problems.extend(exc.problems)
            engines[name] = None
            continue
        except (AppError, AppUnavailable) as exc:
            problems.append(Problem(where, f"cannot read the OData service's $metadata: {exc}"))
            engines[name] = None
            continue
        try:
            engine = create_engine(url)
            with engine.connect():
                pass
            engines[name] = engine
            if app.change_capture == "log":
                problems.extend(Problem(f"{where}, change_capture", p) for p in _log_problems(engine, url, app))
        except Exception as exc:  # any driver or URL failure is this app's problem, reported, not raised
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problems.append(Problem(where, f"cannot connect to {redact_url(url)}: {reason}"))
            engines[name] = None
    try:
        by_name = {m.name: m for m in cfg.mappings}
        for m in cfg.mappings:
            problems.extend(_check_mapping(m, engines, by_name))
    finally:
        for engine in engines.values():
            if isinstance(engine, sa.Engine):
                engine.dispose()
            elif engine is not None:
                engine.close()
    return problems


def _log_problems(engine: sa.Engine, url: str, app: AppSpec) -> list[str]:
    """Why `change_capture: log` cannot follow this database, each with what to change."""
    if engine.dialect.name == "postgresql":
        return [f"log: {p}" for p in slot_problems(url, app.publication)]
    if engine.dialect.name == "sqlite":
        return ["log: SQLite has no change log to follow; use change_capture: poll"]
    if engine.dialect.name in ("mysql", "mariadb"):
        return [f"log: {p}" for p in binlog_problems(url)]
    return [f"log: {engine.dialect.name} has no change log tablesync can follow; use change_capture: poll"]


def _service(name: str, app: AppSpec, url: str, env: dict[str, str] | None) -> ODataService:
    """The app's OData service with its $metadata read (AppError or AppUnavailable if it cannot be)."""
    auth, headers = http_auth(name, app.auth, env)
    service = ODataService(url, auth=auth, headers=headers, label=f"app {name}", throttle_seconds=min(app.throttle_seconds, 10))
    try:
        service.metadata()
    except BaseException:
        service.close()
        raise
    return service


def _table(app: App, spec: SideSpec) -> sa.Table:
    """The side's table: reflected, or described by the service's $metadata (NoSuchTableError
    either way when there is none, with the names there are for an entity set)."""
    if isinstance(app, sa.Engine):
        return reflect_table(app, spec.table, spec.schema_)
    try:
        return edm_table(app.metadata().entity_set(spec.table))
    except AppError as exc:
        raise sa.exc.NoSuchTableError(str(exc)) from None


def _check_mapping(m: MappingSpec, engines: dict[str, App | None], by_name: dict[str, MappingSpec]) -> list[Problem]:
    problems: list[Problem] = []
    tables: dict[str, sa.Table] = {}
    for side in ("local", "integration"):
        spec = m.side(side)
        engine = engines.get(spec.app)
        if engine is None:
            continue
        where = f"mapping {m.name}, {side}"
        try:
            table = _table(engine, spec)
        except sa.exc.NoSuchTableError as exc:
            problems.append(Problem(where, f"table {spec.table!r} does not exist in app {spec.app}" if isinstance(engine, sa.Engine)
                                    else str(exc.args[0]) if exc.args else f"no entity set {spec.table!r} in app {spec.app}"))
            continue
        tables[side] = table
        problems.extend(_check_side(where, spec, table, engine))
    if len(tables) < 2:
        return problems
    for i, f in enumerate(m.fields):
        where = f"mapping {m.name}, {f.label(i)}"
        missing = False
        for side in ("local", "integration"):
            for col in f.columns(side):
                if col not in tables[side].c:
                    missing = True
                    problems.append(Problem(where, f"column {col!r} does not exist in {side} table {m.side(side).table}"))
        for side in ("local", "integration"):
            for col in f.columns(side):
                column = tables[side].c.get(col)
                if column is not None and column.info.get("computed") and _writes(m, f, side):
                    problems.append(Problem(where, f"{side} property {col!r} of {m.side(side).table} is computed by the "
                                                   "service (Core.Computed): no field can write it; make the field flow "
                                                   f"{'from_integration' if side == 'integration' else 'to_integration'}"))
        if f.constant is not None or missing:
            continue
        if f.parent is not None:
            problems.extend(_check_parent_field(where, f, tables, by_name.get(f.parent), engines))
            continue
        direction = m.field_direction(f)
        flows = ["to_integration", "from_integration"] if direction == "bidirectional" else [direction]
        for d in flows:
            src, tgt = ("local", "integration") if d == "to_integration" else ("integration", "local")
            s_col, t_col = tables[src].c[getattr(f, src)], tables[tgt].c[getattr(f, tgt)]
            s_cat, t_cat = category(s_col.type), category(t_col.type)
            if m.transform_applies(f, d):
                continue
            if not compatible(s_cat, t_cat):
                hint = "; give the field a transform (`seconds` for a duration)" if "interval" in (s_cat, t_cat) else ""
                problems.append(Problem(where, f"incompatible types: {src} {s_col.name} is {s_cat} ({_type_name(s_col)}), "
                                               f"{tgt} {t_col.name} is {t_cat} ({_type_name(t_col)}){hint}"))
                continue
            problems.extend(Problem(where, f"{d.replace('_', ' ')}: {message}", severity)  # type: ignore[arg-type]
                            for severity, message in fit_problems(s_col, t_col))
    for d in m.directions():
        engine = engines[m.side(target_side(d)).app]
        assert engine is not None, "both tables were reflected"
        problems.extend(_check_target_insertable(m, d, tables[target_side(d)], engine))
    return problems


def _type_name(col: sa.Column[Any]) -> str:
    """A column's type as its app names it: the database's, or the OData property's Edm type."""
    return str(col.info.get("edm_type") or col.type)


def _writes(m: MappingSpec, f: FieldSpec, side: str) -> bool:
    """Does this field write `side`'s columns?"""
    return m.field_direction(f) in ("bidirectional", "to_integration" if side == "integration" else "from_integration")


def _check_side(where: str, spec: SideSpec, table: sa.Table, engine: App) -> list[Problem]:
    problems = []
    for name in spec.key_columns:
        if name not in table.c:
            problems.append(Problem(where, f"key column {name!r} does not exist in {spec.table}"))
    if spec.modified:
        if spec.modified not in table.c:
            problems.append(Problem(where, f"modified column {spec.modified!r} does not exist in {spec.table}"))
        elif category(table.c[spec.modified].type) not in _MODIFIED_OK:
            problems.append(Problem(where, f"modified column {spec.modified!r} is {table.c[spec.modified].type}; "
                                           "it must be a timestamp, date or number"))
    if spec.deleted:
        if spec.deleted not in table.c:
            problems.append(Problem(where, f"deleted column {spec.deleted!r} does not exist in {spec.table}"))
        elif category(table.c[spec.deleted].type) not in ("boolean", "datetime", "date"):
            problems.append(Problem(where, f"deleted column {spec.deleted!r} is {table.c[spec.deleted].type}; "
                                           "it must be a boolean flag or a deleted-at timestamp"))
    if spec.filter and isinstance(engine, sa.Engine):
        try:
            with engine.connect() as conn:
                conn.execute(sa.select(sa.literal(1)).select_from(table).where(sa.text(f"({spec.filter})")).limit(1))
        except sa.exc.DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0]
            problems.append(Problem(f"{where}, filter", f"{spec.filter!r} is not valid SQL for {spec.table}: {reason}"))
    return problems


def _check_target_insertable(m: MappingSpec, direction: str, table: sa.Table, engine: App) -> list[Problem]:
    """Every insert would fail if the target key or a required column can get no value: neither
    mapped nor defaulted (nor, for a column, filled by a trigger, which is a warning: tablesync
    cannot prove what a trigger does)."""
    if m.sync_only_coupled:
        return []
    side = target_side(direction)
    spec = m.side(side)
    where = f"mapping {m.name}, {side}"
    written = {c for f in m.fields if m.field_direction(f) in (direction, "bidirectional") for c in f.columns(side)}
    problems = []
    composite = len(spec.key_columns) > 1
    for key in (table.c[n] for n in spec.key_columns if n in table.c and n not in written):
        what = f"key column {key.name!r} of the key {spec.key_label}" if composite else f"key {key.name!r}"
        made_up = not composite and category(key.type) in ("uuid", "string")  # tablesync makes a uuid
        if not (has_server_key(key) or key.server_default is not None) and not made_up:
            problems.append(Problem(where, f"{what} has no default and no field maps onto it: "
                                           "map a field onto it or give the column a default"))
            continue
        why = key_default_problem(engine, key) if isinstance(engine, sa.Engine) else None
        if why is not None:
            problems.append(Problem(where, f"{what}: {why}; map a field onto the key, or give the column "
                                           "a sequence, identity, AUTO_INCREMENT or gen_random_uuid() default"))
    triggers: list[Trigger] | None = None
    for col in table.columns:
        if col.name in written or col.name in spec.key_columns or col.nullable or col.server_default is not None:
            continue
        if triggers is None:
            triggers = before_insert_triggers(engine, table) if isinstance(engine, sa.Engine) else []
        filling = [t.name for t in triggers if t.mentions(col.name)]
        if filling:
            problems.append(Problem(where, f"column {col.name!r} is NOT NULL without a default and no field maps onto it "
                                           f"({direction.replace('_', ' ')}), but trigger {', '.join(filling)} of {table.name} "
                                           "mentions it and may fill it on insert: if it does not, every insert fails",
                                    severity="warning"))
            continue
        problems.append(Problem(where, f"column {col.name!r} is NOT NULL without a default and no field maps onto it "
                                       f"({direction.replace('_', ' ')}): add a field or a constant for it"))
    return problems


def _check_parent_field(where: str, f: FieldSpec, tables: dict[str, sa.Table], parent: MappingSpec | None,
                        engines: dict[str, App | None]) -> list[Problem]:
    """A parent field holds the parent mapping's record keys: each side's columns must fit that
    side's key columns, in key order (their number is checked offline)."""
    problems: list[Problem] = []
    if parent is None:
        return problems
    for side in ("local", "integration"):
        spec, engine = parent.side(side), engines.get(parent.side(side).app)
        if engine is None:
            continue
        try:
            parent_table = _table(engine, spec)
        except sa.exc.NoSuchTableError:
            continue  # reported with the parent mapping
        for column, key_name in zip(f.columns(side), spec.key_columns):
            key, col = parent_table.c.get(key_name), tables[side].c[column]
            if key is not None and not compatible(category(key.type), category(col.type)):
                problems.append(Problem(where, f"{side} {column} is {category(col.type)} ({col.type}) but holds keys of "
                                               f"{parent.name}'s {side} key {key_name}, which is {category(key.type)} ({key.type})"))
    return problems
