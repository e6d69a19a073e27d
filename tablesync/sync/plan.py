"""A mapping compiled for one direction: which source columns feed which target columns.

Compiling happens once per job against the reflected tables; `target_values` is then a pure function
of one source row, which the decision logic and its unit tests use directly.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from operator import contains
from typing import Any

import sqlalchemy as sa

from tablesync.apps.schema import category, coerce
from tablesync.apps.values import AS_IS, canonical
from tablesync.config.model import MappingSpec, SideSpec, source_side, target_side
from tablesync.config.transforms import get_transform
from tablesync.db.keys import decode_key, encode_key, row_key
from tablesync.errors import RecordError


@dataclass(frozen=True)
class FieldRule:
    target: str
    source: str | None = None
    constant: Any = None
    transform: Callable[[Any], Any] | None = None
    transform_name: str | None = None
    parent: str | None = None  # a mapping whose couplings translate this field's keys
    # A composite parent key: the source columns that hold it (in key order), and which part of the
    # translated target-side key (of `parent_width` columns) this rule writes.
    parent_sources: tuple[str, ...] = ()
    parent_part: int = 0
    parent_width: int = 1
    plain_type: type | None = None  # a source value of exactly this type is written unchanged (no coercion)
    source_category: str | None = None  # the source column's kind of values, where it decides their form in the target


@dataclass(frozen=True)
class DirectionPlan:
    mapping: str
    direction: str
    source: SideSpec
    target: SideSpec
    rules: tuple[FieldRule, ...]
    source_columns: tuple[str, ...]
    sync_only_coupled: bool
    key_mapped: frozenset[str]  # the target key's columns that a field writes from the source
    skip_after_failures: int = 3
    match_columns: tuple[str, ...] = ()  # target columns compared by match-based coupling
    source_match_columns: tuple[str, ...] = ()  # the source columns they come from, in the same order
    on_deletion_conflict: str = "skip"
    target_columns: Mapping[str, sa.Column[Any]] | None = None  # reflected; None in pure tests
    target_snapshot: tuple[str, ...] = ()  # every mapped target column: what a coupling's snapshot and hash cover
    keeps_snapshot: bool = False  # bidirectional mappings keep per-field values for the three-way merge
    deletion_scan_seconds: float = 0.0  # 0: scan coupled keys for deletions every run

    @cached_property  # asked for per record
    def target_fields(self) -> tuple[str, ...]:
        return tuple(r.target for r in self.rules)

    @cached_property
    def copies_source(self) -> tuple[frozenset[type], ...] | None:
        """When every field copies its source column as it is, in `source_columns` order, and the
        hash covers exactly those fields: per field, the types a value may have to pass unchanged.
        Such a record's target values are its source values, with the same canonical form and hash."""
        if (all(r.plain_type is not None for r in self.rules) and tuple(r.source for r in self.rules) == self.source_columns
                and self.target_hash_columns == self.target_fields):
            return tuple(frozenset({r.plain_type, type(None)}) for r in self.rules)
        return None

    @cached_property
    def plain_source_index(self) -> tuple[int | None, ...]:
        """Per rule, where a plain field's source value sits in `source_columns` (None: not plain)."""
        return tuple(self.source_columns.index(r.source) if r.plain_type is not None and r.source in self.source_columns
                     else None for r in self.rules)

    @cached_property
    def target_hash_columns(self) -> tuple[str, ...]:
        return self.target_snapshot or self.target_fields

    @cached_property
    def source_key_columns(self) -> tuple[str, ...]:
        return self.source.key_columns

    @cached_property
    def target_key_columns(self) -> tuple[str, ...]:
        return self.target.key_columns

    @property
    def key_from_source(self) -> bool:
        """Every column of the target key is written by a field: new target records' keys are
        known from the source, before the insert."""
        return all(c in self.key_mapped for c in self.target_key_columns)

    def source_key(self, row: Mapping[str, Any]) -> str:
        """A source row's record key as one string (`db.keys.encode_key`)."""
        return row_key(row, self.source_key_columns)

    def target_key(self, values: Mapping[str, Any]) -> str | None:
        """The target key that mapped values carry (None unless every key column is mapped and
        set): written from the source, it is known before the insert."""
        if not self.key_from_source:
            return None
        parts = [values.get(c) for c in self.target_key_columns]
        return None if any(v is None for v in parts) else encode_key(parts)

    def source_side(self) -> str:
        return source_side(self.direction)

    def target_side(self) -> str:
        return target_side(self.direction)


def compile_plan(spec: MappingSpec, direction: str, target_table: sa.Table | None = None,
                 source_table: sa.Table | None = None) -> DirectionPlan:
    src, tgt = source_side(direction), target_side(direction)
    rules = []
    for f in spec.fields:
        fdir = spec.field_direction(f)
        if fdir not in (direction, "bidirectional"):
            continue
        targets, sources = f.columns(tgt), f.columns(src)
        if not targets:
            continue
        if f.constant is not None:
            rules.append(FieldRule(target=targets[0], constant=f.constant))
            continue
        if f.parent is not None and (len(targets) > 1 or len(sources) > 1):
            rules.extend(FieldRule(target=t, source=sources[min(i, len(sources) - 1)], parent=f.parent, parent_sources=sources,
                                   parent_part=i, parent_width=len(targets)) for i, t in enumerate(targets))
            continue
        target_col, source_col = targets[0], sources[0]
        fn = get_transform(f.transform) if spec.transform_applies(f, direction) else None
        plain = None
        if fn is None and f.parent is None and source_col is not None:
            plain = plain_type(source_table.c.get(source_col) if source_table is not None else None,
                               target_table.c.get(target_col) if target_table is not None else None)
        source_column = source_table.c.get(source_col) if source_table is not None and source_col is not None else None
        rules.append(FieldRule(target=target_col, source=source_col, transform=fn, transform_name=f.transform if fn else None, parent=f.parent,
                               plain_type=plain, source_category=category(source_column.type) if source_column is not None else None))
    # Every mapped column of each side, whichever way its field flows: a bidirectional mapping's
    # snapshot must cover the whole record on both sides for the three-way comparison.
    source_cols = side_columns(spec, src)
    target_spec = spec.side(tgt)
    key_mapped = frozenset(r.target for r in rules if r.target in target_spec.key_columns and r.source is not None)
    columns = {c.name: c for c in target_table.columns} if target_table is not None else None
    if direction == "to_integration":
        pairs = [(r.target, r.source) for name in spec.match_on for r in rules if r.source == name]
    else:
        pairs = [(r.target, r.source) for name in spec.match_on for r in rules if r.target == name and r.source]
    match, source_match = tuple(t for t, _ in pairs), tuple(str(s) for _, s in pairs)
    return DirectionPlan(
        mapping=spec.name, direction=direction, source=spec.side(src), target=target_spec,
        rules=tuple(rules), source_columns=source_cols, sync_only_coupled=spec.sync_only_coupled,
        key_mapped=key_mapped, target_columns=columns, skip_after_failures=spec.skip_after_failures,
        match_columns=match, source_match_columns=source_match, on_deletion_conflict=spec.on_deletion_conflict, target_snapshot=side_columns(spec, tgt),
        keeps_snapshot=spec.direction == "bidirectional", deletion_scan_seconds=spec.deletion_scan_seconds(),
    )


_PY_TYPES = {"string": str, "integer": int, "numeric": Decimal, "float": float, "boolean": bool,
             "datetime": dt.datetime, "date": dt.date, "uuid": uuid.UUID}


def plain_type(source: sa.Column[Any] | None, target: sa.Column[Any] | None) -> type | None:
    """The Python type whose values fit `target` as read from `source`, so coercing them would
    change nothing (same kind, no narrower length, same scale, same time zone handling); None when
    every value must be coerced. The check per value stays, for databases that store anything."""
    if source is None or target is None:
        return None
    kind = category(target.type)
    if category(source.type) != kind or kind not in _PY_TYPES:
        return None
    s, t = source.type, target.type
    if kind == "string" and getattr(t, "length", None) is not None and not (
            getattr(s, "length", None) is not None and s.length <= t.length):
        return None
    if kind == "numeric" and (not getattr(t, "asdecimal", True) or getattr(t, "scale", None) not in (None, getattr(s, "scale", None))):
        return None
    if kind == "datetime" and bool(getattr(s, "timezone", False)) != bool(getattr(t, "timezone", False)):
        return None
    if kind == "uuid" and not (getattr(s, "as_uuid", True) and getattr(t, "as_uuid", True)):
        return None
    return _PY_TYPES[kind]


def side_columns(spec: MappingSpec, side: str) -> tuple[str, ...]:
    """The side's mapped columns in field order (a constant's column belongs to the side it is written to)."""
    return tuple(dict.fromkeys(c for f in spec.fields for c in f.columns(side)))


Refs = Mapping[str, Mapping[str, str]]  # target column of a parent field → {source-side key: target-side key}


def target_values(plan: DirectionPlan, row: Mapping[str, Any], refs: Refs | None = None) -> dict[str, Any]:
    """The target-side values one source row maps to, coerced to the target columns' types.

    A parent field's value is a key of another mapping's record: it is replaced by the key of that
    record's counterpart, from `refs`; a parent not coupled yet fails this record alone.
    """
    out: dict[str, Any] = {}
    for rule in plan.rules:
        value = rule.constant if rule.source is None else row.get(rule.source)
        if rule.plain_type is not None and (value is None or type(value) is rule.plain_type):
            out[rule.target] = value
            continue
        if rule.parent is not None:
            value = parent_key(rule, row)
            if value is not None:
                found = (refs or {}).get(rule.target, {}).get(value)
                if found is None:
                    raise RecordError(f"field {', '.join(rule.parent_sources) or rule.source} → {rule.target}: the parent record "
                                      f"{value} of mapping {rule.parent} is not coupled yet; this record is retried after "
                                      f"{rule.parent} syncs it")
                value = found if rule.parent_width == 1 else decode_key(found, rule.parent_width)[rule.parent_part]
        if rule.transform is not None:
            try:
                value = rule.transform(value)
            except Exception as exc:  # a transform is user code: any failure is this record's
                raise RecordError(f"transform {rule.transform_name} failed on {rule.source}={value!r}: {exc}") from exc
        if plan.target_columns is not None:
            col = plan.target_columns.get(rule.target)
            if col is not None:
                try:
                    value = coerce(value, col, None if rule.transform is not None else rule.source_category)
                except ValueError as exc:
                    raise RecordError(f"field {rule.source or 'constant'} → {rule.target}: {exc}") from None
        out[rule.target] = value
    return out


def parent_key(rule: FieldRule, row: Mapping[str, Any]) -> str | None:
    """The parent mapping's source-side record key that a parent field's columns hold in `row`
    (None: no parent; a composite key with any part null refers to nothing, as in SQL)."""
    if len(rule.parent_sources) > 1:
        parts = [row.get(c) for c in rule.parent_sources]
        return None if any(v is None for v in parts) else encode_key(parts)
    value = row.get(rule.source) if rule.source is not None else None
    return None if value is None else str(value)


def copied_values(plan: DirectionPlan, row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The target values of a plan that copies its source (`copies_source`) when every value has
    a type that passes unchanged (checked in C: no Python step per value); else None."""
    values = copied_tuple(plan, row)
    return None if values is None else dict(zip(plan.target_fields, values))


def copied_tuple(plan: DirectionPlan, row: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """`copied_values` in `target_fields` order, without the dict."""
    allowed = plan.copies_source
    if allowed is None:
        return None
    values = tuple(map(row.get, plan.source_columns))
    return values if all(map(contains, allowed, map(type, values))) else None


def canonical_values(values: Mapping[str, Any], columns: tuple[str, ...]) -> list[Any]:
    # Inlined type test: text, integers and NULLs, most of a table, skip a call per value.
    return [v if type(v) in AS_IS else canonical(v) for v in map(values.get, columns)]


@dataclass(frozen=True)
class PairField:
    """A field as the merge sees it: its columns on each side (several for a composite parent
    key, which merges as one value), its direction, and whether it is a constant."""

    local: tuple[str, ...]
    integration: tuple[str, ...]
    direction: str  # to_integration | from_integration | bidirectional
    constant: bool = False


@dataclass(frozen=True)
class PairPlan:
    """A bidirectional mapping compiled for the merge: its two one-way plans plus the field pairs."""

    mapping: str
    to_integration: DirectionPlan
    from_integration: DirectionPlan
    fields: tuple[PairField, ...]
    on_update_conflict: str = "skip"
    local_modified: str | None = None
    integration_modified: str | None = None

    @property
    def local_columns(self) -> tuple[str, ...]:
        return self.to_integration.source_columns

    @property
    def integration_columns(self) -> tuple[str, ...]:
        return self.from_integration.source_columns

    def one_way(self, source: str) -> DirectionPlan:
        """The plan of the direction that reads `source`."""
        return self.to_integration if source == "local" else self.from_integration


def pair_plan(spec: MappingSpec, to_integration: DirectionPlan, from_integration: DirectionPlan) -> PairPlan:
    fields = tuple(PairField(f.columns("local"), f.columns("integration"), spec.field_direction(f), f.constant is not None)
                   for f in spec.fields)
    return PairPlan(spec.name, to_integration, from_integration, fields, spec.on_update_conflict,
                    spec.local.modified, spec.integration.modified)


def compile_pair_plan(spec: MappingSpec, local: sa.Table | None = None, integration: sa.Table | None = None) -> PairPlan:
    """Both directions of a bidirectional mapping against the reflected tables."""
    return pair_plan(spec, compile_plan(spec, "to_integration", integration, local),
                     compile_plan(spec, "from_integration", local, integration))


def compile_one_way(spec: MappingSpec, local: sa.Table | None = None, integration: sa.Table | None = None) -> DirectionPlan:
    """A one-way mapping's plan against the reflected tables."""
    tables = {"local": local, "integration": integration}
    return compile_plan(spec, spec.direction, tables[target_side(spec.direction)], tables[source_side(spec.direction)])

