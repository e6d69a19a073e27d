"""The connector contract: what the engine needs of one mapped table of an app, whatever protocol
reaches it.

SQL apps (`apps.table.AppTable`) and HTTP apps (`apps.odata.ODataTable`) implement it; a
connector for another API implements the same methods. Records travel as dicts of column (or
property) names to Python values; keys as strings (`db.keys.encode_key`); a watermark is opaque
to the engine: whatever the connector needs to ask for the changes after it (a modified-on and a
key, a delta link, …), stored as JSON by the store.

Writes return one `WriteResult` per record, in input order, so one bad record fails alone: `ok`
(with the key the app gave a new record and its new version), `conflict` (the version given no
longer matches: someone changed the record since it was read, which the engine turns into an
update conflict for the three-way merge) or `error` (the app's own message).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Capabilities:
    """What an app offers beyond reading and writing records; the engine uses what is there."""

    versions: bool = False  # records carry a version (an ETag) that a write can be made conditional on
    delta_feed: bool = False  # changes since a token, deletions included, without a modified-on filter
    deleted_feed: bool = False  # deleted records can be listed (else the deletion scan compares keys)
    upsert_by_alternate_key: bool = False  # a create can name an alternate key, which makes it idempotent
    batch_size: int = 100  # records per request or per batch the app takes well


@dataclass(frozen=True)
class Record:
    """One record as read: its key, its values and, where the app has them, its version."""

    key: str
    values: Mapping[str, Any]
    version: str | None = None


@dataclass(frozen=True)
class ChangePage:
    """A page of changed records and the watermark after it (store it once the page is synced)."""

    records: list[Record]
    watermark: Any


class Outcome(enum.Enum):
    OK = "ok"
    CONFLICT = "conflict"
    ERROR = "error"


@dataclass(frozen=True)
class WriteResult:
    """What became of one record of a write."""

    outcome: Outcome
    key: str | None = None  # the record's key (for a create, the one the app gave it)
    version: str | None = None  # its version after the write
    message: str | None = None  # the app's own message, for a conflict or an error
    status: int | None = None  # the protocol's status code, where there is one

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK


@dataclass(frozen=True)
class Update:
    """An update of one record: the values to set and, for a conditional write, the version read."""

    key: str
    values: Mapping[str, Any]
    version: str | None = None


@dataclass(frozen=True)
class KeyRange:
    """Keys above `low` up to `high` (either open), for a deletion scan by pieces."""

    low: str | None = None
    high: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Connector(Protocol):
    """One mapped table of an app, as the engine reaches it."""

    capabilities: Capabilities

    def read_changes(self, columns: Sequence[str], watermark: Any) -> Iterator[ChangePage]:
        """Records changed since `watermark` (None: every record), page by page, in an order that
        lets each page's watermark be stored once it is synced."""
        ...

    def newest_modified(self) -> Any:
        """The largest modified-on now, where a first run's next read starts (None: read all again)."""
        ...

    def read_by_keys(self, keys: Sequence[str], columns: Sequence[str]) -> dict[str, Record]:
        """The records of these keys that exist, by key."""
        ...

    def insert(self, rows: Sequence[Mapping[str, Any]]) -> list[WriteResult]:
        ...

    def update(self, updates: Sequence[Update]) -> list[WriteResult]:
        ...

    def delete(self, keys: Sequence[str], versions: Mapping[str, str] | None = None) -> list[WriteResult]:
        ...

    def find(self, values: Mapping[str, Any], limit: int) -> list[str]:
        """Keys of up to `limit` records whose values equal `values`: how a create whose answer was
        lost is found again when the app made its key."""
        ...

    def list_keys(self, key_range: KeyRange) -> Iterator[list[str]]:
        """Every key in the range, in pages, for the deletion scan."""
        ...
