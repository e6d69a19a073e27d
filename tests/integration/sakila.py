"""Sakila, a real public sample database, as integrators meet it: the MySQL original loaded into
MariaDB (`mysql` app) and its PostgreSQL port (`pg` app), from the dumps in tests/data/sakila.

Each test gets both databases fresh (PostgreSQL cloned from a template loaded once per run,
MariaDB loaded from the dump, about a second) and a store of its own, and drives the engine in
process, as a worker would, without a broker: what is under test is how tablesync meets these
schemas, not the job runtime.
"""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from tablesync.apps.engines import dispose_all
from tablesync.apps.live_check import check_live
from tablesync.config.load import parse_config
from tablesync.config.settings import Settings
from tablesync.db.engine import create_engine
from tablesync.errors import Problem
from tablesync.store import couplings as cs
from tablesync.store.jobs import Counters, create_job, errors_of
from tablesync.store.mappings import StoredMapping
from tablesync.sync import run as engine
from tests.conftest import MARIADB_ADMIN, ROOT, RUN_ID, _counter, create_pg_db, drop_pg_db, require_tool

DUMPS = ROOT / "tests" / "data" / "sakila"  # see its README.md


def dump(name: str) -> str:
    return gzip.decompress((DUMPS / f"{name}.gz").read_bytes()).decode()


def _psql(url: sa.URL, sql: str) -> None:
    proc = subprocess.run([require_tool("psql", "postgresql-client"), "-q", "-v", "ON_ERROR_STOP=1", "-h", str(url.host), "-p", str(url.port or 5432),
                           "-U", str(url.username), "-d", str(url.database)], input=sql, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def _mariadb(url: sa.URL, sql: str) -> None:
    proc = subprocess.run([require_tool("mariadb", "mariadb-client"), "-h", str(url.host), "-P", str(url.port or 3306), "-u", str(url.username),
                           str(url.database)], input=sql, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="session")
def sakila_pg_template() -> Iterator[str]:
    name = f"ts_{RUN_ID}_sakila_tpl"
    url = sa.engine.make_url(create_pg_db(name))
    _psql(url, dump("postgres-sakila-schema.sql"))
    _psql(url, dump("postgres-sakila-insert-data-using-copy.sql"))
    yield name
    drop_pg_db(name)


def load_mariadb_sakila(url: sa.URL) -> None:
    """The MySQL dumps name their schema `sakila`: they are loaded into this test's database instead."""
    for name in ("mysql-sakila-schema.sql", "mysql-sakila-data.sql"):
        sql = (dump(name).replace("DROP SCHEMA IF EXISTS sakila;", "").replace("CREATE SCHEMA sakila;", "")
               .replace("USE sakila;", "").replace("sakila.", ""))
        _mariadb(url, sql)


@dataclass
class Sakila:
    store: sa.Engine
    pg_url: str
    mysql_url: str
    pg: sa.Engine
    mysql: sa.Engine
    settings: Settings

    def config(self, *mappings: dict[str, Any]) -> Any:
        return parse_config({"apps": {"mysql": {"url": self.mysql_url}, "pg": {"url": self.pg_url}},
                             "mappings": list(mappings)}, "sakila test config")

    def check(self, *mappings: dict[str, Any]) -> list[Problem]:
        """`config check` against the live databases: every problem and warning."""
        return check_live(self.config(*mappings))

    def errors(self, *mappings: dict[str, Any]) -> list[str]:
        return [str(p) for p in self.check(*mappings) if p.severity == "error"]

    def stored(self, mapping: dict[str, Any], *others: dict[str, Any]) -> StoredMapping:
        cfg = self.config(mapping, *others)
        return StoredMapping(spec=cfg.mappings[0], apps=dict(cfg.apps), version=1)

    def run(self, mapping: dict[str, Any], *others: dict[str, Any], full: bool = False) -> Counters:
        """One run of `mapping` (the others are the mappings it depends on), as a worker makes it."""
        stored = self.stored(mapping, *others)
        with self.store.begin() as conn:
            job = create_job(conn, stored.spec.name, "full_sync" if full else "sync")
        self.last_job = job
        return engine.sync_mapping(self.store, self.settings, stored, job, full=full)

    def job_errors(self) -> list[str]:
        with self.store.connect() as conn:
            return [f"{e.message} {e.detail or ''}".strip() for e in errors_of(conn, self.last_job)]

    def couplings(self, mapping: str) -> list[tuple[Any, ...]]:
        with self.store.connect() as conn:
            return sorted((tuple(r) for r in conn.execute(sa.select(cs.couplings.c.local_key, cs.couplings.c.integration_key)
                                       .where(cs.couplings.c.mapping == mapping))), key=str)

    def rows(self, app: sa.Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        with app.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params)]

    def store_rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return self.rows(self.store, sql, **params)

    def execute(self, app: sa.Engine, sql: str, **params: Any) -> None:
        with app.begin() as conn:
            conn.execute(sa.text(sql), params)


@pytest.fixture
def sakila(store_template: str, sakila_pg_template: str) -> Iterator[Sakila]:
    n = next(_counter)
    base = f"ts_{RUN_ID}_sk{n}"
    store_url = create_pg_db(base, template=store_template)
    pg_url = create_pg_db(base + "_pg", template=sakila_pg_template)
    admin = sa.create_engine(MARIADB_ADMIN, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{base}`"))
    mysql_url = sa.engine.make_url(MARIADB_ADMIN).set(database=base)
    engines: list[sa.Engine] = []
    try:
        load_mariadb_sakila(mysql_url)
        store, pg, mysql = (create_engine(u) for u in (store_url, pg_url, mysql_url.render_as_string(hide_password=False)))
        engines = [store, pg, mysql]
        yield Sakila(store=store, pg_url=pg_url, mysql_url=mysql_url.render_as_string(hide_password=False), pg=pg,
                     mysql=mysql, settings=Settings(store_url=store_url, overlap_seconds=0))
    finally:
        dispose_all()
        for e in engines:
            e.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{base}`"))
        admin.dispose()
        drop_pg_db(base)
        drop_pg_db(base + "_pg")


def side(app: str, table: str, key: str | list[str], **extra: Any) -> dict[str, Any]:
    return {"app": app, "table": table, "key": key, **extra}


def mapping(name: str, local: dict[str, Any], integration: dict[str, Any], fields: list[Any], direction: str = "to_integration",
            **extra: Any) -> dict[str, Any]:
    """A mapping as YAML would give it; fields as (local, integration) pairs or dicts."""
    return {"name": name, "local": local, "integration": integration, "direction": direction,
            "fields": [f if isinstance(f, dict) else {"local": f[0], "integration": f[1]} for f in fields], **extra}


def as_yaml(*mappings: dict[str, Any]) -> str:
    return yaml.safe_dump({"apps": {"mysql": {"url": "${MYSQL_URL}"}, "pg": {"url": "${PG_URL}"}}, "mappings": list(mappings)})
