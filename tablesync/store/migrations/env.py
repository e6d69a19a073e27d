"""Alembic environment: the connection is handed in by `store.migrate`, never read from an ini file."""

from __future__ import annotations

from alembic import context

from tablesync.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `tablesync db upgrade`")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
