"""A mapped table of an app reached through a connector (`apps.connector`): an OData entity set,
or any API a connector is written for, presented to the engine as the engine reaches a SQL table.

The engine's selection, decision, merge and record stages stay as they are; what differs is
below them:
- the table's shape (`table`) is built from what the service describes (`$metadata`), so the
  plan compiler and `config check` judge type pairs, keys and required properties the same way
  for both kinds of app;
- reads go through `read_changes` / `read_by_keys`, and each record's version (its ETag) is kept,
  so the update that follows is conditional on it (`If-Match`): a record changed in the app in
  between is refused as a *conflict*, never overwritten;
- writes go through the contract's per-record results: one refused record fails alone, with the
  app's own message;
- there is no open-transaction horizon to ask an API for, so changes are read from the watermark
  minus the app's `overlap_seconds` as well as the engine's own overlap.

A record key the app makes (a Guid key not mapped from the other side) is made by tablesync
before the create and committed as the insert intent first (`sync.targets`): a create retried
after a crash finds its record by that key instead of creating it twice.

SQL-only paths (bulk COPY loads, chunked runs, `match_on`, SQL filters, soft deletes) are not
offered; `config check` refuses a mapping that asks for them on an HTTP app.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from tablesync.apps.connector import Connector, KeyRange, Outcome, Record, Update, WriteResult
from tablesync.apps.odata import EntitySet
from tablesync.apps.schema import category
from tablesync.apps.shape import TableShape
from tablesync.apps.writes import Failure
from tablesync.config.model import SideSpec
from tablesync.db.keys import decode_key
from tablesync.errors import AppError

T = TypeVar("T")
Written = tuple[list[tuple[T, Any]], list[Failure[T]]]  # (item, its key) of those that landed, and the failures

_EDM: dict[str, Any] = {
    "Edm.String": lambda p: sa.String(p.max_length),
    "Edm.Boolean": lambda p: sa.Boolean(),
    "Edm.Byte": lambda p: sa.SmallInteger(), "Edm.SByte": lambda p: sa.SmallInteger(),
    "Edm.Int16": lambda p: sa.SmallInteger(), "Edm.Int32": lambda p: sa.Integer(), "Edm.Int64": lambda p: sa.BigInteger(),
    "Edm.Decimal": lambda p: sa.Numeric(p.precision, p.scale),
    "Edm.Double": lambda p: sa.Double(), "Edm.Single": lambda p: sa.Float(),
    "Edm.DateTimeOffset": lambda p: sa.DateTime(timezone=True),
    "Edm.Date": lambda p: sa.Date(), "Edm.TimeOfDay": lambda p: sa.Time(),
    "Edm.Guid": lambda p: sa.Uuid(as_uuid=False),
    "Edm.Binary": lambda p: sa.LargeBinary(p.max_length),
}


def edm_table(entity_set: EntitySet) -> sa.Table:
    """The entity set as a SQLAlchemy table of its own metadata: each property a column of the
    type its Edm type corresponds to (NullType for what has none: streams, complex types), not
    null where the service says so, with a server default where the service fills it."""
    columns = []
    for prop in entity_set.properties.values():
        make = _EDM.get(prop.edm_type)
        filled = prop.computed or prop.defaulted
        columns.append(sa.Column(prop.name, make(prop) if make else sa.types.NullType(),
                                 primary_key=prop.name in entity_set.key, nullable=prop.nullable and prop.name not in entity_set.key,
                                 server_default=sa.text("service") if filled else None,
                                 info={"edm_type": prop.edm_type, "computed": prop.computed}))
    return sa.Table(entity_set.name, sa.MetaData(), *columns)


class ApiTable(TableShape):
    """One mapped entity set (or API resource) through its connector, as the engine uses a table."""

    sql = False  # no SQL fast paths: no COPY, no staged updates, no chunked ranges
    engine = None
    deleted = None  # soft deletes need a column the app's API writes: not offered

    def __init__(self, connector: Connector, side: SideSpec, table: sa.Table, overlap_seconds: float = 5.0) -> None:
        self.connector = connector
        self.side = side
        self.table = table
        self.overlap = dt.timedelta(seconds=overlap_seconds)
        self._versions: dict[str, str] = {}  # record key → its version as last read, for If-Match

    # -- shape (label, keys, key, modified, key_of: `TableShape`) ------------------------------

    def key_values(self, key: str) -> tuple[Any, ...]:
        return tuple(decode_key(key, len(self.side.key_columns)))

    # -- reading --------------------------------------------------------------------------------

    def _columns(self, columns: Sequence[str]) -> list[str]:
        return list(dict.fromkeys([*self.side.key_columns, *([self.side.modified] if self.side.modified else []), *columns]))

    def _row(self, record: Record) -> dict[str, Any]:
        if record.version is not None:
            self._versions[record.key] = record.version
        return dict(record.values)

    def pages(self, columns: Sequence[str], since: Any, batch_size: int,
              low: str | None = None, high: str | None = None) -> Iterator[list[dict[str, Any]]]:
        """Changed records from `since` (less the app's overlap), in the app's own pages cut to
        `batch_size`; every record by key without `since`."""
        if low is not None or high is not None:
            raise AppError(f"{self.label}: an HTTP app is not read in key ranges (chunked runs are for SQL apps)")
        start = since - self.overlap if isinstance(since, dt.datetime) and self.overlap else since
        for page in self.connector.read_changes(self._columns(columns), start if self.side.modified else None):
            rows = [self._row(r) for r in page.records]
            for i in range(0, len(rows), batch_size):
                yield rows[i:i + batch_size]

    def fetch(self, keys: Sequence[str], columns: Sequence[str], apply_filter: bool = True) -> dict[str, dict[str, Any]]:
        wanted = [k for k in dict.fromkeys(keys) if k is not None]
        if not wanted:
            return {}
        return {k: self._row(r) for k, r in self.connector.read_by_keys(wanted, self._columns(columns)).items()}

    def existing(self, keys: Sequence[str]) -> set[str]:
        return set(self.fetch(keys, []))

    def missing(self, keys: Sequence[str]) -> set[str]:
        wanted = [k for k in dict.fromkeys(keys) if k is not None]
        return set(wanted) - self.existing(wanted) if wanted else set()

    def list_keys(self) -> Iterator[list[str]]:
        return self.connector.list_keys(KeyRange())

    def horizon(self) -> Any:
        """An API has no open transactions to ask about: the overlap stands in for the horizon."""
        return None

    def start_mark(self) -> Any:
        return self.connector.newest_modified()

    def check_condition(self, condition: str) -> str | None:
        return f"{self.label} is an HTTP app: it takes no SQL condition"

    def find_matches(self, columns: Sequence[str], wanted: Sequence[tuple[Any, ...]]) -> dict[tuple[Any, ...], list[str]]:
        raise AppError(f"{self.label}: match_on is not offered for HTTP apps")

    def find_equal(self, values: Mapping[str, Any], exclude_keys: set[str]) -> str | None:
        """A record whose mapped values equal `values`, not in `exclude_keys` (a lost create's)."""
        found = self.connector.find(values, len(exclude_keys) + 1)
        return next((k for k in found if k not in exclude_keys), None)

    # -- writing --------------------------------------------------------------------------------

    def key_strategy(self, mapped: Collection[str]) -> str:
        """From the source when mapped; else made by tablesync (a Guid or string key: committed
        as the intent before the create, so a retried create finds its record); else the app's."""
        unmapped = [c for c in self.keys if c.name not in mapped]
        if not unmapped:
            return "source"
        if not self.composite and category(self.key.type) in ("uuid", "string"):
            return "uuid"
        return "returning"

    def new_uuid_keys(self, n: int) -> list[str]:
        return [str(uuid.uuid4()) for _ in range(n)]

    def preallocate(self, n: int, conn: Any = None) -> list[str]:
        raise AppError(f"{self.label}: an HTTP app does not pre-allocate keys")

    def insert_records(self, items: Sequence[T], rows: Sequence[dict[str, Any]], returning: bool) -> Written[T]:
        """Create these records; each lands with the key the app gave it, or fails alone."""
        results = self.connector.insert(rows)
        return self._outcome(items, results, "creating")

    def update_records(self, items: Sequence[T], columns: tuple[str, ...], rows: Sequence[dict[str, Any]]) -> Written[T]:
        """Rows carry `_key` and the columns; each update is conditional on the version last read."""
        updates = [Update(str(r["_key"]), {c: r[c] for c in columns}, self._versions.get(str(r["_key"]))) for r in rows]
        return self._outcome(items, self.connector.update(updates), "updating")

    def delete_records(self, items: Sequence[T], keys: Sequence[str]) -> Written[T]:
        return self._outcome(items, self.connector.delete(keys), "deleting")

    def delete_keys(self, keys: Sequence[str]) -> None:
        """An operator's Delete records: every one or an error naming the first refusal."""
        _, failed = self.delete_records(list(keys), keys)
        if failed:
            raise AppError(f"{self.label}: {failed[0].message}")

    def undelete(self, keys: Sequence[str]) -> set[str]:
        return set()

    def _outcome(self, items: Sequence[T], results: Sequence[WriteResult], doing: str) -> Written[T]:
        done: list[tuple[T, Any]] = []
        failed: list[Failure[T]] = []
        for item, result in zip(items, results, strict=True):
            if result.ok:
                if result.key is not None and result.version is not None:
                    self._versions[result.key] = result.version
                done.append((item, result.key))
            elif result.outcome is Outcome.CONFLICT:
                failed.append(Failure(item, f"{self.label} changed the record {result.key} since it was read "
                                            f"({result.message}); it is merged again at the next run", "", conflict=True))
            else:
                failed.append(Failure(item, f"{self.label} refused {doing} the record: {result.message}", ""))
        return done, failed
