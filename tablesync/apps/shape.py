"""What every mapped table knows of itself, whatever reaches it: its side of the mapping, its
columns as a SQLAlchemy table, and from those its name in errors, key columns and modified-on."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from tablesync.config.model import SideSpec
from tablesync.db.keys import row_key


class TableShape:
    side: SideSpec
    table: sa.Table

    @property
    def label(self) -> str:
        """How errors name this table: the app as the configuration names it, and the table."""
        return f"app {self.side.app} ({self.side.table})"

    @property
    def keys(self) -> list[sa.Column[Any]]:
        """The key's columns, in key order (several for a composite key)."""
        return [self.table.c[n] for n in self.side.key_columns]

    @property
    def composite(self) -> bool:
        return len(self.side.key_columns) > 1

    @property
    def key(self) -> sa.Column[Any]:
        """The key column of a one-column key (the paths that only such keys take: pre-allocated keys)."""
        assert not self.composite, "a composite key has no single column"
        return self.table.c[self.side.key_columns[0]]

    @property
    def modified(self) -> sa.Column[Any] | None:
        return self.table.c[self.side.modified] if self.side.modified else None

    def key_of(self, row: Mapping[str, Any]) -> str:
        """A row's record key as one string (`db.keys.encode_key`)."""
        return row_key(row, self.side.key_columns)
