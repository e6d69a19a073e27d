"""MariaDB apps, live config checks, store migrations and the demo, through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
import sqlalchemy as sa

from tests.conftest import ROOT
from tests.integration.helpers import accounts_table_pg, count, sync

pytestmark = pytest.mark.integration

MARIADB_CONFIG = """\
apps:
  erp: {url: "${ERP_DATABASE_URL}"}
  crm: {url: "${CRM_DATABASE_URL}"}
mappings:
  - name: CUSTOMER
    local:       {app: erp, table: customers, key: id, modified: modified_at, filter: "blocked = 0"}
    integration: {app: crm, table: accounts, key: account_id, modified: modifiedon}
    direction: to_integration
    batch_size: 400
    fields:
      - {local: number, integration: accountnumber}
      - {local: name, integration: name, transform: strip}
      - {local: email, integration: emailaddress1, transform: lower}
      - {local: credit_limit, integration: creditlimit}
      - {integration: customertypecode, constant: 3}
"""


def test_mariadb_customers_into_postgresql_accounts_with_uuid_keys(env, mariadb_url: str) -> None:  # type: ignore[no-untyped-def]
    erp = sa.create_engine(mariadb_url)
    with erp.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE customers (id INT AUTO_INCREMENT PRIMARY KEY, number VARCHAR(20) NOT NULL, "
            "name VARCHAR(100) NOT NULL, email VARCHAR(200), credit_limit DECIMAL(12,2), blocked TINYINT(1) NOT NULL DEFAULT 0, "
            "modified_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (modified_at))"))
        conn.execute(sa.text(
            "INSERT INTO customers (number, name, email, credit_limit, blocked) "
            "SELECT CONCAT('M', seq), CONCAT(' Kunde ', seq, ' '), CONCAT('Kunde', seq, '@Firma.DK'), seq * 10.5, seq % 10 = 0 "
            "FROM seq_1_to_1000"))
    crm = sa.create_engine(env.crm_url)
    md = sa.MetaData()
    accounts = accounts_table_pg(md, "uuid")
    md.create_all(crm)
    (env.tmp / "tablesync.yaml").write_text(MARIADB_CONFIG)
    env.cli("config", "check", ERP_DATABASE_URL=mariadb_url)
    env.cli("config", "apply", ERP_DATABASE_URL=mariadb_url)
    env.start_worker(ERP_DATABASE_URL=mariadb_url)

    job = sync(env)
    assert (job["status"], job["inserted"], job["failed"]) == ("succeeded", 900, 0), job
    with crm.connect() as conn:
        row = conn.execute(sa.select(accounts).where(accounts.c.accountnumber == "M7")).one()
    assert isinstance(row.account_id, uuid.UUID) and row.account_id.version == 4
    assert (row.name, row.emailaddress1, str(row.creditlimit)) == ("Kunde 7", "kunde7@firma.dk", "73.50")

    with erp.begin() as conn:  # ON UPDATE bumps modified_at in MariaDB's own clock
        conn.execute(sa.text("UPDATE customers SET name = 'Omdøbt' WHERE id IN (1, 2)"))
        conn.execute(sa.text("UPDATE customers SET blocked = 0 WHERE id = 10"))
    job = sync(env)
    assert (job["inserted"], job["modified"], job["failed"]) == (1, 2, 0), job
    assert count(crm, "accounts", "name = 'Omdøbt'") == 2


def test_config_check_reports_live_problems_with_mapping_and_field(env) -> None:  # type: ignore[no-untyped-def]
    erp, crm = sa.create_engine(env.erp_url), sa.create_engine(env.crm_url)
    with erp.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id int PRIMARY KEY, name text, note text, created date, "
                             "modified_at text)"))
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (account_id int PRIMARY KEY, name varchar(50), size int, "
                             "opened date NOT NULL, region text NOT NULL, modifiedon timestamptz)"))
    (env.tmp / "tablesync.yaml").write_text(
        'apps:\n  erp: {url: "${ERP_DATABASE_URL}"}\n  crm: {url: "${CRM_DATABASE_URL}"}\n'
        '  gone: {url: "postgresql://postgres@127.0.0.1:1/nothing"}\n'
        "mappings:\n  - name: CUSTOMER\n"
        '    local: {app: erp, table: customers, key: id, modified: modified_at, filter: "blocked = false"}\n'
        "    integration: {app: crm, table: accounts, key: account_id, modified: modifiedon}\n"
        "    direction: to_integration\n"
        "    fields:\n"
        "      - {local: name, integration: name}\n"
        "      - {local: note, integration: size}\n"
        "      - {local: phone, integration: phone}\n"
        "      - {local: created, integration: opened}\n"
        "  - name: OTHER\n"
        "    local: {app: erp, table: nothere, key: id}\n"
        "    integration: {app: gone, table: x, key: id}\n"
        "    direction: to_integration\n"
        "    fields: [{local: a, integration: b}]\n"
    )
    proc = env.cli("config", "check", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    err = proc.stderr
    for expected in [
        "app gone: cannot connect to postgresql://postgres@127.0.0.1:1/nothing",
        "mapping CUSTOMER, local: modified column 'modified_at' is TEXT; it must be a timestamp, date or number",
        "mapping CUSTOMER, local, filter: 'blocked = false' is not valid SQL for customers: column \"blocked\" does not exist",
        "mapping CUSTOMER, field #2 (note ↔ size): incompatible types: local note is string (TEXT), integration size is integer (INTEGER)",
        "mapping CUSTOMER, field #3 (phone ↔ phone): column 'phone' does not exist in local table customers",
        "mapping CUSTOMER, field #3 (phone ↔ phone): column 'phone' does not exist in integration table accounts",
        "mapping CUSTOMER, integration: key 'account_id' has no default and no field maps onto it",
        "mapping CUSTOMER, integration: column 'region' is NOT NULL without a default and no field maps onto it",
        "mapping OTHER, local: table 'nothere' does not exist in app erp",
    ]:
        assert expected in err, f"missing: {expected}\n{err}"
    assert "opened" not in err  # mapped date → date is fine


def test_config_errors_and_bad_settings_exit_2_without_traceback(env) -> None:  # type: ignore[no-untyped-def]
    (env.tmp / "tablesync.yaml").write_text("apps: {}\nmappings:\n  - name: X\n")
    proc = env.cli("config", "check", "--offline", check=False)
    assert proc.returncode == 2 and "mapping X, local: is required" in proc.stderr and "Traceback" not in proc.stderr
    proc = env.cli("jobs", check=False, TABLESYNC_STORE_URL="oracle://x")
    assert proc.returncode == 2 and "TABLESYNC_STORE_URL" in proc.stderr and "Traceback" not in proc.stderr
    proc = env.cli("worker", check=False, TABLESYNC_BROKER_URL="")
    assert proc.returncode == 2 and "TABLESYNC_BROKER_URL is not set" in proc.stderr
    proc = env.cli("job", "999", check=False)
    assert proc.returncode == 2 and "job 999 does not exist" in proc.stderr


def test_store_upgrade_is_idempotent_on_postgresql_and_sqlite(env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sqlite_url = f"sqlite:///{tmp_path / 'store.db'}"
    for url in (env.store_url, sqlite_url):
        first = env.cli("db", "upgrade", TABLESYNC_STORE_URL=url).stdout
        second = env.cli("db", "upgrade", TABLESYNC_STORE_URL=url).stdout
        assert "already up to date" in second, (first, second)
        tables = set(sa.inspect(sa.create_engine(url.replace("postgresql+psycopg", "postgresql+psycopg"))).get_table_names())
        assert {"mappings", "couplings", "jobs", "job_errors", "record_events", "watermarks", "schedule_ticks"} <= tables
    fresh = env.cli("jobs", check=False, TABLESYNC_STORE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    assert fresh.returncode == 2 and "run `tablesync db upgrade`" in fresh.stderr


def test_demo_runs_on_a_fresh_machine_without_servers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "tablesync.console.cli", "demo", "--dir", str(tmp_path / "demo")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Initial synchronization" in out and "cannot convert 'a lot' to numeric for column creditlimit" in out
    store = f"sqlite:///{tmp_path / 'demo' / 'store.db'}"
    jobs = json.loads(subprocess.run([sys.executable, "-m", "tablesync.console.cli", "jobs", "--json"], cwd=tmp_path,
                                     env={**env, "TABLESYNC_STORE_URL": store}, capture_output=True, text=True,
                                     check=True).stdout)
    by_mapping = {}
    for j in reversed(jobs):
        by_mapping.setdefault(j["mapping"], []).append(j)
    customer = by_mapping["CUSTOMER"]
    assert [j["status"] for j in customer] == ["succeeded"] * 3
    assert customer[0]["inserted"] == 288  # 300 customers, 12 blocked ones filtered out
    assert (customer[1]["inserted"], customer[1]["modified"], customer[1]["failed"], customer[1]["conflicts"]) == (1, 3, 1, 1)
    assert "Coupled data synchronization errors (2)" in out and "deletion_conflict" in out and "update_conflict" in out
    contact = by_mapping["CONTACT"]
    assert contact[0]["inserted"] == 5 and (contact[1]["modified"], contact[1]["conflicts"]) == (2, 1)
    assert (customer[2]["modified"], customer[2]["failed"]) == (1, 0)
    assert by_mapping["LEAD"][0]["inserted"] == 30
    assert "300 customers, 12 of them blocked" in out


def test_the_demos_next_commands_run_as_printed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The demo's store is actionable: each command of its "Next, try" works as printed, with the
    `tablesync run` it starts running the actions (no broker)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "TABLESYNC_HEARTBEAT_SECONDS": "1"}
    cli = [sys.executable, "-m", "tablesync.console.cli"]
    proc = subprocess.run([*cli, "demo", "--dir", str(tmp_path / "demo"), "--rows", "40"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip() for line in proc.stdout.split("Next, try", 1)[1].splitlines()[1:] if line.strip()]
    assert lines[0].startswith("export TABLESYNC_STORE_URL=")
    env.update([lines[0].removeprefix("export ").split("=", 1)])
    commands = [line.split("  #", 1)[0].strip().split() for line in lines[1:]]
    assert commands[0][:2] == ["tablesync", "run"] and commands[0][-1] == "&"
    actions = {c[1] for c in commands}
    assert {"errors", "log", "sync", "resolve", "restore", "jobs"} <= actions, commands
    run = subprocess.Popen([*cli, "run"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    outputs = []
    try:
        for command in commands[1:]:
            done = subprocess.run([*cli, *command[1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0 and "Traceback" not in done.stderr, (command, done.stdout[-2000:], done.stderr[-2000:])
            if command[1] in ("resolve", "restore"):
                assert "succeeded" in done.stdout, done.stdout
            outputs.append(done.stdout)
        assert "Coupled data synchronization errors (2)" in outputs[0]
        assert "Coupled data synchronization errors (0)" in outputs[-2]  # resolved and restored: none left
    finally:
        run.terminate()
        run.wait(timeout=30)


def test_reflection_is_reused_until_the_table_definition_changes(env) -> None:  # type: ignore[no-untyped-def]
    """Jobs reuse a reflected table; a changed column (type, default, nullability) is reflected again."""
    from tablesync.apps.table import AppTable
    from tablesync.config.model import SideSpec

    engine = sa.create_engine(env.erp_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE reflected (id int PRIMARY KEY, name varchar(10))"))
    side = SideSpec.model_validate({"app": "erp", "table": "reflected", "key": "id"})
    first = AppTable.open(engine, side).table
    assert AppTable.open(engine, side).table is first
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE reflected ALTER COLUMN name TYPE varchar(40)"))
    again = AppTable.open(engine, side).table
    assert again is not first and again.c.name.type.length == 40
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE reflected ALTER COLUMN name SET DEFAULT 'x'"))
    assert AppTable.open(engine, side).table is not again
    engine.dispose()
