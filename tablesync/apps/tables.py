"""What the engine holds a mapped table as: a SQL table (`AppTable`, with its fast paths) or a
table of an app reached through a connector (`ApiTable`, `apps.connector`). Both answer the same
reads (pages of changes, records by key, missing keys) and the same writes with per-record
results (`insert_records`, `update_records`, `delete_records`); `sql` tells the engine whether the
SQL-only paths (COPY loads, chunked key ranges, staged updates) apply."""

from __future__ import annotations

from tablesync.apps.api_table import ApiTable
from tablesync.apps.table import AppTable

Table = AppTable | ApiTable

__all__ = ["ApiTable", "AppTable", "Table"]
