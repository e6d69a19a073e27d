"""The shape of `tablesync.yaml` and the checks that need no database.

Problems are collected, not raised one at a time, so an operator fixes a whole file in one pass;
each names the mapping and field it concerns.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tablesync.config.schedule import Schedule, parse_duration, parse_schedule
from tablesync.config.transforms import known_transforms
from tablesync.errors import Problem

Direction = Literal["to_integration", "from_integration", "bidirectional"]
OneWay = Literal["to_integration", "from_integration"]  # the way one write, one field or one transform goes
Side = Literal["local", "integration"]
UpdateStrategy = Literal["skip", "local_wins", "integration_wins", "newest_wins"]
DeletionStrategy = Literal["skip", "restore", "delete", "remove_coupling"]
SIDES = ("local", "integration")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AuthSpec(_Strict):
    """How tablesync signs in to an HTTP app. Secrets are `${VARIABLE}`s of the environment,
    expanded when a process connects and never stored or shown."""

    type: Literal["none", "basic", "bearer", "oauth2"] = "none"
    username: str | None = None  # basic
    password: str | None = None  # basic
    token: str | None = None  # bearer
    token_url: str | None = None  # oauth2 client credentials (Dataverse: https://login.microsoftonline.com/TENANT/oauth2/v2.0/token)
    client_id: str | None = None
    client_secret: str | None = None
    scope: str | None = None  # Dataverse: https://ORG.crm.dynamics.com/.default

    def problems(self) -> list[tuple[str, str]]:
        """(setting, what is wrong) of each setting this type needs and lacks or has and ignores."""
        needs = {"none": (), "basic": ("username", "password"), "bearer": ("token",),
                 "oauth2": ("token_url", "client_id", "client_secret")}[self.type]
        out = [(n, f"is required with type {self.type}") for n in needs if getattr(self, n) is None]
        allowed = set(needs) | ({"scope"} if self.type == "oauth2" else set())
        out += [(n, f"does not apply to type {self.type}") for n in AUTH_SETTINGS
                if n not in allowed and getattr(self, n) is not None]
        return out


AUTH_SETTINGS = ("username", "password", "token", "token_url", "client_id", "client_secret", "scope")
AUTH_SECRETS = ("password", "token", "client_secret")


class AppSpec(_Strict):
    """An app: a database (`url`, a SQLAlchemy URL) or an OData v4 service (`odata`, its service
    root URL), never both."""

    url: str | None = None
    odata: str | None = None
    auth: AuthSpec | None = None  # an HTTP app's sign-in
    # Requests a second to the HTTP app, shared by every worker through Redis. Unset: no limit.
    rate_limit: float | None = Field(None, gt=0)
    # Seconds an HTTP app's read of changes goes back before the watermark: a record committed
    # late with an older modified-on is still read (an API has no open-transaction horizon).
    overlap_seconds: float = Field(5.0, ge=0)
    # Records per request of an HTTP app: key lookups, and writes sent together as one $batch.
    batch_size: int = Field(100, ge=1, le=1000)
    # Writes of several records as OData $batch requests; false: one request per record. A service
    # that answers $batch with 404, 405 or 501 is written one request per record anyway.
    batch: bool = True
    # How long a throttled HTTP app (429, 503 with Retry-After) is waited for before the job backs off.
    throttle_seconds: float = Field(120.0, gt=0)
    # How many chunk workers of chunked runs may use the app at once, across every worker process
    # and machine (each holds at most two connections to it: one reading, one writing). Unset: no cap.
    max_connections: int | None = Field(None, ge=1)
    # How a change in this app reaches its mappings (`tablesync listen`): `schedule`, at the next
    # tick only; `log`, the database's change log wakes them (PostgreSQL logical decoding with
    # wal2json, the MariaDB/MySQL row binlog); `poll`, a cheap probe of max(modified) every 0.5 s
    # while changes flow, backing off to the schedule when idle. The scheduled ticks go on in every mode.
    change_capture: Literal["schedule", "poll", "log"] = "schedule"
    # The PostgreSQL replication slot `log` follows (default tablesync_<app>): name it when two
    # tablesync deployments follow the same database with the same app name.
    slot: str | None = Field(None, pattern=r"^[a-z0-9_]{1,63}$")
    # `log` on PostgreSQL through the built-in pgoutput plugin and this publication (made by the
    # database's owner over the mapped tables) instead of wal2json: no plugin to install.
    publication: str | None = Field(None, min_length=1, max_length=63)

    @model_validator(mode="after")
    def _one_kind(self) -> "AppSpec":
        if (self.url is None) == (self.odata is None):
            raise ValueError("give the app either url: (a database URL) or odata: (an OData v4 service root), not "
                             + ("both" if self.url is not None else "neither"))
        if self.url is not None:
            http_only = [n for n in ("auth", "rate_limit") if getattr(self, n) is not None]
            if http_only:
                raise ValueError(f"{', '.join(http_only)} apply to an HTTP app (odata:), not to a database (url:)")
        for name in ("slot", "publication"):
            if getattr(self, name) is not None and self.change_capture != "log":
                raise ValueError(f"{name} is a setting of change_capture: log; this app has change_capture: {self.change_capture}")
        if self.odata is not None and self.change_capture == "log":
            raise ValueError("change_capture: log needs a database's change log; an HTTP app (odata:) has none: use poll")
        for setting, message in self.auth.problems() if self.auth is not None else ():
            raise ValueError(f"auth {setting} {message}")
        return self

    @property
    def http(self) -> bool:
        return self.odata is not None

    @property
    def address(self) -> str:
        """The URL the app is reached at, as configured (still with its `${VARIABLE}`s)."""
        return self.odata if self.odata is not None else str(self.url)


class SideSpec(_Strict):
    app: str
    table: str
    key: str | list[str]  # one column, or the columns of a composite key, in key order
    modified: str | None = None
    filter: str | None = None
    deleted: str | None = None  # soft-delete column: a true flag or a set deleted-at means the record is deleted
    schema_: str | None = Field(default=None, alias="schema")

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("a composite key names at least one column")
            twice = sorted({c for c in value if value.count(c) > 1})
            if twice:
                raise ValueError(f"the key names {', '.join(map(repr, twice))} more than once")
        return value

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The key's columns in key order: one, or those of a composite key."""
        return (self.key,) if isinstance(self.key, str) else tuple(self.key)

    @property
    def key_label(self) -> str:
        """The key as operators wrote it: `id`, or `[actor_id, film_id]`."""
        return self.key if isinstance(self.key, str) else "[" + ", ".join(self.key) + "]"


class FieldSpec(_Strict):
    # A column, or for a parent field whose parent mapping has a composite key on that side, the
    # list of columns that hold that key (in the parent key's order).
    local: str | list[str] | None = None
    integration: str | list[str] | None = None
    constant: Any = None
    direction: Direction | None = None
    transform: str | None = None
    # A two-way field's transform applies one way only (the reference product's Transformation
    # Direction); the other way copies the value as it is. Default: to_integration.
    transform_direction: OneWay | None = None
    parent: str | None = None  # the values are record keys of this mapping, translated through its couplings

    def columns(self, side: str) -> tuple[str, ...]:
        """The field's columns on `side`: none, one, or a composite parent key's."""
        value = self.local if side == "local" else self.integration
        return () if not value else (value,) if isinstance(value, str) else tuple(value)

    def label(self, index: int) -> str:
        def shown(side: str) -> str:
            value = self.local if side == "local" else self.integration
            return "[" + ", ".join(value) + "]" if isinstance(value, list) else str(value)

        if self.constant is not None:
            side = "integration" if self.integration else "local"
            return f"field #{index + 1} (constant → {side} {shown(side)})"
        return f"field #{index + 1} ({shown('local')} ↔ {shown('integration')})"


class MappingSpec(_Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    local: SideSpec
    integration: SideSpec
    direction: Direction
    schedule: str = "every 5m"
    sync_only_coupled: bool = False
    match_on: list[str] = []
    on_update_conflict: UpdateStrategy = "skip"
    on_deletion_conflict: DeletionStrategy = "skip"
    skip_after_failures: int = Field(3, ge=1)
    depends_on: list[str] = []
    batch_size: int | None = Field(None, ge=1, le=1_000_000)
    chunk_rows: int | None = Field(None, ge=1)  # unset: the TABLESYNC_CHUNK_ROWS setting (50,000)
    max_parallel: int | None = Field(None, ge=1)  # chunks of one run worked at once; unset: every chunk
    deletion_scan: str = "every run"  # or an interval ("every 10m"): how often jobs scan coupled keys for deletions
    fields: list[FieldSpec] = Field(min_length=1)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("deletion_scan")
    @classmethod
    def _deletion_scan(cls, value: str) -> str:
        if value.strip().lower() != "every run":
            try:
                parse_duration(value.strip().lower().removeprefix("every").strip())
            except ValueError:
                raise ValueError(f"{value!r} is neither 'every run' nor an interval such as 'every 10m'") from None
        return value

    def deletion_scan_seconds(self) -> float:
        text = self.deletion_scan.strip().lower()
        return 0.0 if text == "every run" else parse_duration(text.removeprefix("every").strip()).total_seconds()

    def parsed_schedule(self) -> Schedule:
        return parse_schedule(self.schedule)

    def side(self, name: str) -> SideSpec:
        return self.local if name == "local" else self.integration

    def directions(self) -> list[str]:
        """The one-way passes this mapping allows, as (source → target) directions."""
        if self.direction == "bidirectional":
            return ["to_integration", "from_integration"]
        return [self.direction]

    def read_sides(self) -> list[str]:
        """The sides whose changes this mapping reads: the source of each pass it allows."""
        return ["local" if d == "to_integration" else "integration" for d in self.directions()]

    def field_direction(self, f: FieldSpec) -> str:
        return f.direction or self.direction

    def transform_applies(self, f: FieldSpec, direction: str) -> bool:
        """Whether `f`'s transform runs on the way `direction` (a one-way pass): always on a one-way
        field, and only in its `transform_direction` on a two-way field."""
        if f.transform is None:
            return False
        if self.field_direction(f) != "bidirectional":
            return True
        return direction == (f.transform_direction or "to_integration")


class ConfigFile(_Strict):
    apps: dict[str, AppSpec]
    mappings: list[MappingSpec] = []




def source_side(direction: str) -> Side:
    """The side a one-way direction reads."""
    return "local" if direction == "to_integration" else "integration"


def target_side(direction: str) -> Side:
    """The side a one-way direction writes."""
    return "integration" if direction == "to_integration" else "local"


def check_semantics(cfg: ConfigFile) -> list[Problem]:
    """Cross-field rules pydantic cannot express: references, directions, constants, cycles."""
    problems: list[Problem] = []
    names = [m.name for m in cfg.mappings]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(Problem(f"mapping {dup}", "the name is used by more than one mapping"))
    transforms = set(known_transforms())
    for m in cfg.mappings:
        where = f"mapping {m.name}"
        for side in SIDES:
            if m.side(side).app not in cfg.apps:
                problems.append(Problem(f"{where}, {side}", f"unknown app {m.side(side).app!r}; apps: {', '.join(cfg.apps) or 'none'}"))
        if m.local.app == m.integration.app and m.local.table == m.integration.table:
            problems.append(Problem(where, "local and integration are the same table"))
        problems.extend(_check_fields(m, transforms))
        problems.extend(_check_parent_keys(m, {x.name: x for x in cfg.mappings}))
        local_fields = {f.local for f in m.fields if isinstance(f.local, str) and f.constant is None and f.parent is None}
        for name in m.match_on:
            if name not in local_fields:
                problems.append(Problem(f"{where}, match_on", f"{name!r} is not a mapped local field"))
        if m.on_update_conflict == "newest_wins" and not (m.local.modified and m.integration.modified):
            problems.append(Problem(f"{where}, on_update_conflict", "newest_wins compares modified-on values: "
                                    "give both sides a `modified:` column, or choose skip, local_wins or integration_wins"))
        for dep in m.depends_on:
            if dep not in names:
                problems.append(Problem(f"{where}, depends_on", f"unknown mapping {dep!r}"))
            elif dep == m.name:
                problems.append(Problem(f"{where}, depends_on", "a mapping cannot depend on itself"))
    problems.extend(_check_cycles(cfg))
    problems.extend(_check_http_sides(cfg))
    problems.extend(_check_change_capture(cfg))
    return problems


def _check_http_sides(cfg: ConfigFile) -> list[Problem]:
    """What a side on an HTTP app cannot have: SQL (a filter, a schema), a soft-delete column, a
    composite key (an entity set is reached by one key property), match_on (no search by values)."""
    problems: list[Problem] = []
    for m in cfg.mappings:
        for side in SIDES:
            spec = m.side(side)
            app = cfg.apps.get(spec.app)
            if app is None or not app.http:
                continue
            where = f"mapping {m.name}, {side}"
            for setting, value in (("filter", spec.filter), ("deleted", spec.deleted), ("schema", spec.schema_)):
                if value is not None:
                    problems.append(Problem(where, f"{setting}: is not offered on an HTTP app ({spec.app}); remove it"))
            if len(spec.key_columns) > 1:
                problems.append(Problem(where, f"an entity set of an HTTP app ({spec.app}) has a one-property key; "
                                               f"got {spec.key_label}"))
        if m.match_on and any(cfg.apps.get(m.side(s).app) is not None and cfg.apps[m.side(s).app].http for s in SIDES):
            problems.append(Problem(f"mapping {m.name}, match_on", "is not offered with an HTTP app: "
                                    "couple existing records with `tablesync couple` instead"))
    return problems


def _check_change_capture(cfg: ConfigFile) -> list[Problem]:
    """`change_capture: poll` probes max(modified) of every side a mapping reads changes from:
    each such side needs its `modified` column."""
    problems: list[Problem] = []
    for m in cfg.mappings:
        for side in m.read_sides():
            spec = m.side(side)
            app = cfg.apps.get(spec.app)
            if app is not None and app.change_capture == "poll" and spec.modified is None:
                problems.append(Problem(f"mapping {m.name}, {side}", f"app {spec.app} has change_capture: poll, which "
                                        "probes the modified column: give this side one (modified: COLUMN)"))
    return problems


def _check_fields(m: MappingSpec, transforms: set[str]) -> list[Problem]:
    problems: list[Problem] = []
    written: dict[tuple[str, str], int] = {}
    usable = {d: 0 for d in m.directions()}
    for i, f in enumerate(m.fields):
        where = f"mapping {m.name}, {f.label(i)}"
        direction = m.field_direction(f)
        if m.direction != "bidirectional" and direction != m.direction:
            problems.append(Problem(where, f"direction {direction} contradicts the mapping direction {m.direction}"))
            continue
        if f.constant is not None:
            if bool(f.local) == bool(f.integration):
                problems.append(Problem(where, "a constant names exactly one side: `local:` or `integration:`"))
                continue
            side = "local" if f.local else "integration"
            if direction == "bidirectional" or target_side(direction) != side:
                wanted = "to_integration" if side == "integration" else "from_integration"
                problems.append(Problem(where, f"a constant is written to the {side} side, so its direction must be {wanted}"))
                continue
        elif not f.local or not f.integration:
            problems.append(Problem(where, "a field needs both `local:` and `integration:` (or a `constant:` and one side)"))
            continue
        lists = [side for side in SIDES if isinstance(getattr(f, side), list)]
        if lists and f.parent is None:
            given = ", ".join(f"{side}: {getattr(f, side)!r}" for side in lists)
            problems.append(Problem(where, f"a list of columns ({given}) is for a parent field whose parent mapping has a "
                                           "composite key: give `parent:`, or one column"))
            continue
        if any(isinstance(getattr(f, side), list) and not getattr(f, side) for side in SIDES):
            problems.append(Problem(where, "an empty list of columns"))
            continue
        if f.transform is not None and f.transform not in transforms:
            problems.append(Problem(where, f"unknown transform {f.transform!r}; known: {', '.join(sorted(transforms))}"))
        if f.parent is not None:
            if f.parent not in m.depends_on:
                problems.append(Problem(where, f"parent {f.parent!r} must also be listed in depends_on, so it syncs first"))
            if f.transform is not None or f.constant is not None:
                problems.append(Problem(where, "a parent field carries keys as they are: no transform or constant"))
        if f.transform_direction is not None:
            if f.transform is None:
                problems.append(Problem(where, f"transform_direction {f.transform_direction!r} is given without a transform"))
            elif direction != "bidirectional" and f.transform_direction != direction:
                problems.append(Problem(where, f"transform_direction {f.transform_direction!r} contradicts the field's "
                                               f"direction {direction}: drop it, or make the field two-way"))
        for d in ([direction] if direction != "bidirectional" else ["to_integration", "from_integration"]):
            for column in f.columns(target_side(d)):
                slot = (d, column)
                if slot in written:
                    problems.append(Problem(where, f"{target_side(d)} column {column!r} is already written by field #{written[slot] + 1}"))
                written[slot] = i
            usable[d] = usable.get(d, 0) + (0 if f.constant is not None else 1)
    for d, count in usable.items():
        if count == 0:
            problems.append(Problem(f"mapping {m.name}", f"no field carries data {d.replace('_', ' ')}"))
    return problems


def _check_parent_keys(m: MappingSpec, by_name: dict[str, MappingSpec]) -> list[Problem]:
    """A parent field holds its parent's record key on each side: as many columns as that key has."""
    problems: list[Problem] = []
    for i, f in enumerate(m.fields):
        parent = by_name.get(f.parent) if f.parent else None
        if parent is None or f.constant is not None:
            continue
        for side in SIDES:
            have, key = f.columns(side), parent.side(side)
            if have and len(have) != len(key.key_columns):
                problems.append(Problem(f"mapping {m.name}, {f.label(i)}",
                                        f"the {side} key of {parent.name} is {key.key_label} ({len(key.key_columns)} column(s)), "
                                        f"so the field gives {len(key.key_columns)} {side} column(s), in that order; it gives {len(have)}"))
    return problems


def _check_cycles(cfg: ConfigFile) -> list[Problem]:
    graph = {m.name: [d for d in m.depends_on if d != m.name] for m in cfg.mappings}
    state: dict[str, int] = {}
    problems: list[Problem] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                problems.append(Problem(f"mapping {node}, depends_on", "dependency cycle: " + " → ".join(cycle)))
            elif dep in graph and state.get(dep) is None:
                visit(dep, path + [dep])
        state[node] = 2

    for name in graph:
        if state.get(name) is None:
            visit(name, [name])
    return problems


def dependency_order(mappings: list[MappingSpec]) -> list[MappingSpec]:
    """Mappings sorted so that each comes after those it depends on (stable otherwise)."""
    by_name = {m.name: m for m in mappings}
    done: set[str] = set()
    ordered: list[MappingSpec] = []

    def place(m: MappingSpec, seen: frozenset[str]) -> None:
        if m.name in done or m.name in seen:
            return
        for dep in m.depends_on:
            if dep in by_name:
                place(by_name[dep], seen | {m.name})
        done.add(m.name)
        ordered.append(m)

    for m in mappings:
        place(m, frozenset())
    return ordered
