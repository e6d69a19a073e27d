"""App tables and configs shared by the integration tests."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa

CUSTOMER_CONFIG = """\
apps:
  erp: {{url: "${{ERP_DATABASE_URL}}"}}
  crm: {{url: "${{CRM_DATABASE_URL}}"}}
mappings:
  - name: CUSTOMER
    local:       {{app: erp, table: customers, key: id, modified: modified_at{filter}}}
    integration: {{app: crm, table: accounts, key: account_id, modified: modifiedon}}
    direction: to_integration
    schedule: "{schedule}"
    batch_size: {batch_size}
    fields:
      - {{local: number, integration: accountnumber}}
      - {{local: name, integration: name}}
      - {{local: email, integration: emailaddress1, transform: lower}}
      - {{local: credit_limit, integration: creditlimit}}
      - {{integration: customertypecode, constant: 3}}
"""


def customers_table(md: sa.MetaData) -> sa.Table:
    return sa.Table(
        "customers", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("number", sa.String(20), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(200)),
        sa.Column("credit_limit", sa.Numeric(12, 2)),
        sa.Column("blocked", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False, index=True),
    )


def accounts_table_pg(md: sa.MetaData, key: str = "uuid") -> sa.Table:
    """CRM accounts with a key made by PostgreSQL: gen_random_uuid() or a serial."""
    key_col = (sa.Column("account_id", sa.Uuid, primary_key=True, server_default=sa.text("gen_random_uuid()"))
               if key == "uuid" else sa.Column("account_id", sa.Integer, primary_key=True, autoincrement=True))
    return sa.Table(
        "accounts", md, key_col,
        sa.Column("accountnumber", sa.String(20)),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("emailaddress1", sa.String(200)),
        sa.Column("creditlimit", sa.Numeric(12, 2), sa.CheckConstraint("creditlimit >= 0", name="creditlimit_positive")),
        sa.Column("customertypecode", sa.Integer, nullable=False),
        sa.Column("modifiedon", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(), index=True),
    )


def now() -> datetime:
    return datetime.now(timezone.utc)


def customer_rows(start: int, count: int, **overrides: Any) -> list[dict[str, Any]]:
    t = now()
    return [{"id": i, "number": f"C{i:06d}", "name": f"Customer {i}", "email": f"Customer{i}@Example.COM",
             "credit_limit": i % 1000, "modified_at": t, **overrides} for i in range(start, start + count)]


def write_config(tmp: Path, schedule: str = "every 1h", batch_size: int = 5000, filter: str | None = None) -> Path:
    path = tmp / "tablesync.yaml"
    path.write_text(CUSTOMER_CONFIG.format(schedule=schedule, batch_size=batch_size,
                                           filter=f', filter: "{filter}"' if filter else ""))
    return path


def setup_customer_sync(env: Any, rows: int = 50, key: str = "uuid", **config: Any) -> tuple[sa.Engine, sa.Engine, sa.Table, sa.Table]:
    erp, crm = sa.create_engine(env.erp_url), sa.create_engine(env.crm_url)
    erp_md, crm_md = sa.MetaData(), sa.MetaData()
    customers = customers_table(erp_md)
    accounts = accounts_table_pg(crm_md, key)
    erp_md.create_all(erp)
    crm_md.create_all(crm)
    if rows:
        with erp.begin() as conn:
            conn.execute(customers.insert(), customer_rows(1, rows))
    write_config(env.tmp, **config)
    env.cli("config", "apply")
    return erp, crm, customers, accounts


def sync(env: Any, mapping: str = "CUSTOMER", *extra: str) -> dict[str, Any]:
    """`tablesync sync MAPPING --wait --json`, returning the job object (any exit status)."""
    proc = env.cli("sync", mapping, "--wait", "--json", "--timeout", "120", *extra, check=False)
    assert proc.stdout.strip(), f"no output (exit {proc.returncode}): {proc.stderr}\n{env.logs()}"
    return json.loads(proc.stdout)


def count(engine: sa.Engine, table: str, where: str = "TRUE") -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar_one())


def slow_inserts(app: sa.Engine, seconds: float = 0.2, table: str = "accounts") -> None:
    """Each insert statement into `table` takes `seconds` more: a sync is still running when a test
    kills, freezes or races it, however fast the bulk path gets."""
    with app.begin() as conn:
        conn.execute(sa.text("CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ "
                             f"BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$"))
        conn.execute(sa.text(f"CREATE TRIGGER slow AFTER INSERT ON {table} FOR EACH STATEMENT EXECUTE FUNCTION slow()"))
