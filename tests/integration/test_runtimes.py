"""The all-in-one `tablesync run` (SQLite store, in-process broker) and the RabbitMQ broker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import sqlalchemy as sa

from tests.conftest import ROOT, free_port, wait_for
from tests.integration.helpers import (
    count,
    customer_rows,
    customers_table,
    now,
    setup_customer_sync,
    sync,
    write_config,
)

pytestmark = pytest.mark.integration


def sqlite_world(tmp_path, schedule: str, capture: str = "schedule"):  # type: ignore[no-untyped-def]
    """SQLite ERP (30 customers), CRM and store, the config applied; the `cli` and the apps."""
    erp_url, crm_url, store_url = (f"sqlite:///{tmp_path / n}.db" for n in ("erp", "crm", "store"))
    erp, crm = sa.create_engine(erp_url), sa.create_engine(crm_url)
    md = sa.MetaData()
    customers = customers_table(md)
    md.create_all(erp)
    with crm.begin() as conn:
        conn.execute(sa.text("CREATE TABLE accounts (account_id INTEGER PRIMARY KEY AUTOINCREMENT, accountnumber TEXT, "
                             "name TEXT NOT NULL, emailaddress1 TEXT, creditlimit NUMERIC, customertypecode INTEGER NOT NULL, "
                             "modifiedon DATETIME DEFAULT CURRENT_TIMESTAMP)"))
    with erp.begin() as conn:
        conn.execute(customers.insert(), customer_rows(1, 30))
    path = write_config(tmp_path, schedule=schedule)
    path.write_text(path.read_text().replace('erp: {url: "${ERP_DATABASE_URL}"}',
                                             f'erp: {{url: "${{ERP_DATABASE_URL}}", change_capture: {capture}}}'))
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "HOME": str(tmp_path), "TABLESYNC_STORE_URL": store_url,
           "ERP_DATABASE_URL": erp_url, "CRM_DATABASE_URL": crm_url, "TABLESYNC_CONFIG": str(path),
           "TABLESYNC_LISTEN_METRICS_PORT": str(free_port())}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tablesync.console.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60, check=True)

    cli("db", "upgrade")
    cli("config", "apply")
    return cli, env, erp, crm, customers


@pytest.mark.parametrize("schedule,capture", [("every 1s", "schedule"), ("every 1h", "poll")],
                         ids=["scheduled", "woken-by-polling"])
def test_run_all_in_one_on_sqlite(tmp_path, schedule: str, capture: str) -> None:  # type: ignore[no-untyped-def]
    """`tablesync run` on SQLite: on a schedule of a second, or with `--listen` polling an app whose
    mapping is scheduled hourly (only the first tick runs: the change comes by a wake-up)."""
    cli, env, erp, crm, customers = sqlite_world(tmp_path, schedule, capture)
    command = [sys.executable, "-m", "tablesync.console.cli", "-v", "run", *(["--listen"] if capture != "schedule" else [])]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: count(crm, "accounts", "1=1") == 30, timeout=60, what="the first scheduled run")
        with erp.begin() as conn:
            conn.execute(customers.update().where(customers.c.id == 1).values(name="Changed", modified_at=now()))
            conn.execute(customers.insert(), customer_rows(31, 1))
        wait_for(lambda: count(crm, "accounts", "name = 'Changed'") == 1 and count(crm, "accounts", "1=1") == 31,
                 timeout=60, what="the change to travel")
    except AssertionError:
        os.killpg(proc.pid, signal.SIGINT)
        raise AssertionError(proc.communicate(timeout=30)[0][-5000:]) from None
    os.killpg(proc.pid, signal.SIGINT)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    jobs = json.loads(cli("jobs", "--json").stdout)
    assert jobs and all(j["status"] in ("succeeded", "dropped") for j in jobs), jobs
    assert sum(j["inserted"] for j in jobs) == 31 and sum(j["modified"] for j in jobs) == 1
    if capture != "schedule":
        assert "change" in {j["trigger"] for j in jobs if j["inserted"] + j["modified"]}, jobs
    with crm.connect() as conn:
        keys = conn.execute(sa.text("SELECT account_id FROM accounts ORDER BY account_id")).scalars().all()
    assert keys == list(range(1, 32))  # auto-increment keys returned by the insert, none wasted


def test_rabbitmq_broker(env) -> None:  # type: ignore[no-untyped-def]
    import pika

    amqp = "amqp://guest:guest@127.0.0.1:5672/%2F"
    env.broker_url = amqp
    try:
        setup_customer_sync(env, rows=200)
        env.start_worker()
        job = sync(env)
        assert (job["status"], job["inserted"]) == ("succeeded", 200), env.logs()
    finally:
        env.stop_all()
        connection = pika.BlockingConnection(pika.URLParameters(amqp))
        channel = connection.channel()
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(queue=env.queue + suffix)
        connection.close()
