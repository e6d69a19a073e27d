"""The engine on two SQLite apps and a SQLite store, with no broker, worker or job runtime: what
`sync/` promises, checked stage by stage. A `Rig` holds an ERP with `customers`, a CRM with
`accounts`, and runs the engine's entry points directly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tablesync.apps.engines import dispose_all
from tablesync.config.model import AppSpec, MappingSpec
from tablesync.config.settings import Settings
from tablesync.db.engine import create_engine
from tablesync.store.jobs import Counters, create_job
from tablesync.store.mappings import StoredMapping
from tablesync.store.schema import metadata
from tablesync.sync import run as engine
from tablesync.sync.context import RunContext, Sink
from tablesync.sync.write import Writer

FIELDS = [{"local": "name", "integration": "name"}, {"local": "email", "integration": "email"},
          {"local": "city", "integration": "city"}]


@dataclass
class Rig:
    base: Path
    store: sa.Engine
    erp: sa.Engine
    crm: sa.Engine
    settings: Settings
    clock: datetime  # naive UTC, as SQLite's CURRENT_TIMESTAMP writes it

    def tick(self) -> datetime:
        """A modified-on later than every earlier one (and than the run's overlap)."""
        self.clock += timedelta(minutes=1)
        return self.clock

    def mapping(self, **overrides: Any) -> StoredMapping:
        data: dict[str, Any] = {
            "name": "CUSTOMER", "direction": "to_integration",
            "local": {"app": "erp", "table": "customers", "key": "id", "modified": "modified_at"},
            "integration": {"app": "crm", "table": "accounts", "key": "account_id", "modified": "modifiedon"},
            "fields": FIELDS,
        }
        data.update(overrides)
        apps = {"erp": AppSpec(url=str(self.erp.url)), "crm": AppSpec(url=str(self.crm.url))}
        return StoredMapping(spec=MappingSpec.model_validate(data), apps=apps, version=1)

    def job(self, mapping: str = "CUSTOMER", kind: str = "sync") -> int:
        with self.store.begin() as conn:
            return create_job(conn, mapping, kind)

    def context(self, job: int, fence: Callable[[sa.Connection], None] | None = None) -> RunContext:
        """A run's context for job `job`, writing for real, with the runtime's `fence` if given."""
        return RunContext(store=self.store, job_id=job, batch_size=100, overlap_seconds=0, sink=Writer(),
                          fence=fence or (lambda conn: None))

    def run(self, stored: StoredMapping, full: bool = False, sink: Sink | None = None) -> Counters:
        """One run of the mapping, as a worker would make it, in a job of its own."""
        return engine.sync_mapping(self.store, self.settings, stored, self.job(stored.spec.name), full=full, sink=sink)

    def add_customers(self, *rows: dict[str, Any]) -> None:
        with self.erp.begin() as conn:
            conn.execute(sa.text("INSERT INTO customers (id, name, email, city, modified_at) "
                                 "VALUES (:id, :name, :email, :city, :at)"), [{"at": self.tick(), **r} for r in rows])

    def edit(self, app: sa.Engine, table: str, key: str, value: Any, **values: Any) -> None:
        sets = ", ".join(f"{c} = :{c}" for c in values)
        modified = "modified_at" if table == "customers" else "modifiedon"
        with app.begin() as conn:
            conn.execute(sa.text(f"UPDATE {table} SET {sets}, {modified} = :_at WHERE {key} = :_k"),
                         {**values, "_at": self.tick(), "_k": value})

    def rows(self, app: sa.Engine, table: str, order: str) -> list[dict[str, Any]]:
        with app.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(f"SELECT * FROM {table} ORDER BY {order}"))]

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.store.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    store, erp, crm = (create_engine(f"sqlite:///{tmp_path / name}.db") for name in ("store", "erp", "crm"))
    metadata.create_all(store)
    with erp.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL, "
                             "email VARCHAR(100), city VARCHAR(50), modified_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)"))
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (account_id INTEGER PRIMARY KEY AUTOINCREMENT, name VARCHAR(100) NOT NULL, "
                             "email VARCHAR(100) UNIQUE, city VARCHAR(10), modifiedon DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP)"))
    now = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0)
    yield Rig(tmp_path, store, erp, crm, Settings(store_url=str(store.url), overlap_seconds=0), now)
    dispose_all()
    for e in (store, erp, crm):
        e.dispose()
