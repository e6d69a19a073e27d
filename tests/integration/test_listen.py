"""`tablesync listen`: changes wake their mappings, from PostgreSQL's change log (a cluster of the
test's own with wal_level=logical and wal2json) or by polling, with schedules of an hour, so that
only a wake-up can make a change arrive."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import OwnPostgres, free_port, wait_for
from tests.dashboards import expressions, metric_names
from tests.integration.helpers import customer_rows, setup_customer_sync, sync
from tests.integration.test_metrics import LISTENER, scrape, value

pytestmark = pytest.mark.integration
SLOTS = "SELECT slot_name FROM pg_replication_slots"


def capture(env: Any, mode: str, extra: str = "") -> None:
    """Give the ERP app `change_capture: mode` (and `extra` settings) and apply."""
    path = env.tmp / "tablesync.yaml"
    text = re.sub(r"  erp: \{.*\}\n", f'  erp: {{url: "${{ERP_DATABASE_URL}}", change_capture: {mode}{extra}}}\n', path.read_text())
    assert f"change_capture: {mode}" in text
    path.write_text(text)
    env.cli("config", "apply")


def crm_state(crm: sa.Engine) -> dict[str, tuple[str, int]]:
    with crm.connect() as conn:
        return {r.accountnumber: (r.name, int(r.creditlimit))
                for r in conn.execute(sa.text("SELECT accountnumber, name, creditlimit FROM accounts"))}


def erp_state(erp: sa.Engine) -> dict[str, tuple[str, int]]:
    with erp.connect() as conn:
        return {r.number: (r.name, int(r.credit_limit)) for r in conn.execute(sa.text("SELECT number, name, credit_limit FROM customers"))}


def woken_jobs(env: Any) -> list[int]:
    with sa.create_engine(env.store_url).connect() as conn:
        return list(conn.execute(sa.text("SELECT id FROM jobs WHERE params->>'wake' = 'true' ORDER BY id")).scalars())


def converged(erp: sa.Engine, crm: sa.Engine) -> bool:
    return erp_state(erp) == crm_state(crm)


def slots(server: OwnPostgres) -> list[str]:
    engine = sa.create_engine(server.url(), poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        return list(conn.execute(sa.text(SLOTS)).scalars())


def follow(env: Any, erp_url: str, publication: str | None = None) -> tuple[sa.Engine, sa.Engine]:
    """The ERP at `erp_url`, synced once, its app on change_capture: log (through pgoutput on
    `publication`, which the database's owner makes, if given); a worker."""
    env.erp_url = erp_url
    erp, crm, _, _ = setup_customer_sync(env, rows=20, schedule="every 1h")
    if publication:
        with erp.begin() as conn:
            conn.execute(sa.text(f"CREATE PUBLICATION {publication} FOR TABLE customers"))
    capture(env, "log", f", publication: {publication}" if publication else "")
    env.start_worker(threads=2)
    assert sync(env)["inserted"] == 20
    return erp, crm


@pytest.fixture(params=["postgresql", "pgoutput", "mariadb"])
def logged(request: pytest.FixtureRequest, env: Any) -> tuple[sa.Engine, sa.Engine]:
    """The ERP on a server of the test's own with a change log: PostgreSQL with logical decoding
    (wal2json, or pgoutput on a publication), or MariaDB with a ROW binlog."""
    server = request.getfixturevalue("binlog_mariadb" if request.param == "mariadb" else "logical_postgres")
    return follow(env, server.create_db("erp"), "erp_changes" if request.param == "pgoutput" else None)


@pytest.fixture
def pg_logged(env: Any, logical_postgres: OwnPostgres) -> tuple[sa.Engine, sa.Engine]:
    return follow(env, logical_postgres.create_db("erp"))


def update_burst(erp: sa.Engine, updates: int, stop: threading.Event | None = None) -> int:
    """`updates` one-row updates, each its own transaction, as users make them; returns how many ran."""
    done = 0
    with erp.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        ids = list(conn.execute(sa.text("SELECT id FROM customers ORDER BY id")).scalars())
        while done < updates and not (stop and stop.is_set()):
            conn.execute(sa.text("UPDATE customers SET credit_limit = credit_limit + 1, name = :n, modified_at = now() "
                                 "WHERE id = :id"), {"n": f"Customer v{done}", "id": ids[done % len(ids)]})
            done += 1
    return done


def test_a_change_arrives_without_a_tick_and_a_burst_of_10000_updates_makes_a_handful_of_jobs(
        env: Any, logged: Any, request: pytest.FixtureRequest) -> None:
    erp, crm = logged
    port = free_port()
    env.start_listener(TABLESYNC_LISTEN_METRICS_PORT=str(port), TABLESYNC_LISTEN_HEARTBEAT_SECONDS="0.5")
    wait_for(lambda: "following" in (env.tmp / "listen-1.log").read_text(), 30, what="the listener to follow the log")
    with erp.begin() as conn:
        conn.execute(sa.text("INSERT INTO customers (id, number, name, email, credit_limit, modified_at) "
                             "VALUES (:id, :number, :name, :email, :credit_limit, :modified_at)"), customer_rows(21, 1))
    wait_for(lambda: len(crm_state(crm)) == 21, 30, what=f"the new customer in the CRM\n{env.logs()}")
    assert len(woken_jobs(env)) == 1
    job = json.loads(env.cli("job", str(woken_jobs(env)[0]), "--json").stdout)  # the operator sees why it ran
    assert job["trigger"] == "change" and job["operator"] is None and job["inserted"] == 1

    assert update_burst(erp, 10_000) == 10_000
    wait_for(lambda: converged(erp, crm), 60, what=f"the CRM to catch up\n{env.logs()}")
    jobs = woken_jobs(env)
    assert 2 <= len(jobs) <= 25, f"{len(jobs)} jobs for one burst"
    samples = scrape(port)
    assert value(samples, "tablesync_capture_jobs_total", mapping="CUSTOMER") == len(jobs)
    assert value(samples, "tablesync_capture_following", app="erp", mode="log") == 1
    if request.node.callspec.params["logged"] != "mariadb":  # the slot's lag, and every listener metric the
        def measured() -> dict[Any, float] | None:
            found = scrape(port)
            return found if value(found, "tablesync_capture_lag_seconds", app="erp") is not None else None

        samples = wait_for(measured, 10, what="the lag measured by a heartbeat")
        exported = {name for name, _ in samples}  # dashboard and alerts read is exported
        for where, expr in expressions().items():
            names = {n for n in metric_names(expr) if n.startswith(LISTENER)}
            assert not names - exported, f"{where} reads metrics the listener does not export: {names - exported}"
        assert 0 <= value(samples, "tablesync_capture_slot_lag_bytes", app="erp", slot="tablesync_erp") < 50_000_000  # type: ignore[operator]  # a handful, not one per change


def test_changes_made_while_the_listener_is_down_or_killed_mid_burst_are_not_lost(env: Any, logged: Any) -> None:
    erp, crm = logged
    listener = env.start_listener()
    wait_for(lambda: "following" in (env.tmp / "listen-1.log").read_text(), 30, what="the listener to follow the log")
    os.killpg(listener.pid, signal.SIGTERM)
    listener.wait(20)
    with erp.begin() as conn:  # while no listener runs: the slot keeps these
        conn.execute(sa.text("INSERT INTO customers (id, number, name, email, credit_limit, modified_at) "
                             "VALUES (:id, :number, :name, :email, :credit_limit, :modified_at)"), customer_rows(21, 10))
    time.sleep(1)
    assert len(crm_state(crm)) == 20
    listener = env.start_listener()
    wait_for(lambda: len(crm_state(crm)) == 30, 30, what=f"the changes made while down\n{env.logs()}")

    stop = threading.Event()
    burst = threading.Thread(target=update_burst, args=(erp, 1_000_000, stop))
    burst.start()
    try:
        wait_for(lambda: len(woken_jobs(env)) >= 2, 30, what="a job woken by the burst")
        os.killpg(listener.pid, signal.SIGKILL)  # mid-burst, at whatever line it was
        listener.wait(10)
        time.sleep(0.5)
    finally:
        stop.set()
        burst.join()
    env.start_listener()
    wait_for(lambda: converged(erp, crm), 60, what=f"the CRM to catch up after the kill\n{env.logs()}")


def test_the_slot_goes_with_the_last_mapping_that_follows_it(env: Any, pg_logged: Any, logical_postgres: OwnPostgres) -> None:
    env.start_listener()
    wait_for(lambda: "tablesync_erp" in slots(logical_postgres), 30, what="the slot")
    capture(env, "schedule")  # the ERP app's change_capture back to schedule: no mapping follows its log
    assert "tablesync_erp" not in slots(logical_postgres)
    time.sleep(2)  # the listener sees the new definitions and does not make it again
    assert "tablesync_erp" not in slots(logical_postgres)
    assert "no replication slot to drop" in env.cli("listen", "--drop-slots").stdout

    capture(env, "log")
    wait_for(lambda: "tablesync_erp" in slots(logical_postgres), 30, what="the slot made again")
    env.stop_all()  # the listener too: the slot stays while a mapping needs it …
    assert "tablesync_erp" in slots(logical_postgres)
    config = (env.tmp / "tablesync.yaml").read_text()
    (env.tmp / "tablesync.yaml").write_text(config.split("mappings:")[0] + "mappings: []\n")
    applied = env.cli("config", "apply").stdout  # … until its last mapping is gone, with no listener running
    assert "deactivated: CUSTOMER" in applied and "replication slot dropped (no mapping follows it): erp: tablesync_erp" in applied
    assert "tablesync_erp" not in slots(logical_postgres)


def test_polling_wakes_a_mapping_whose_database_has_no_log_to_follow(env: Any) -> None:
    """change_capture: poll on the shared server (wal_level is not logical there): max(modified) probed."""
    erp, crm, _, _ = setup_customer_sync(env, rows=5, schedule="every 1h")
    capture(env, "poll")
    env.start_worker(threads=2)
    assert sync(env)["inserted"] == 5
    env.start_listener()
    for n in range(2):  # the first change after idle probes, then one while probes are fast
        with erp.begin() as conn:
            conn.execute(sa.text("UPDATE customers SET name = :n, modified_at = now() WHERE id = 1"), {"n": f"polled {n}"})
        wait_for(lambda: crm_state(crm)["C000001"][0] == f"polled {n}", 30, what=f"the polled change\n{env.logs()}")
    assert len(woken_jobs(env)) == 2


def test_config_check_says_what_the_log_needs(env: Any) -> None:
    """The shared server has wal_level=replica: `config check` says so, and what to change."""
    setup_customer_sync(env, rows=0)
    path = env.tmp / "tablesync.yaml"
    path.write_text(re.sub(r"  erp: \{.*\}\n", '  erp: {url: "${ERP_DATABASE_URL}", change_capture: log, publication: nope}\n',
                           path.read_text()))
    with sa.create_engine(env.erp_url).connect() as conn:
        wal_level = conn.execute(sa.text("SHOW wal_level")).scalar()
    checked = env.cli("config", "check", check=False)
    if wal_level == "logical":
        pytest.skip("the shared server already has wal_level=logical")
    assert checked.returncode != 0
    assert f"app erp, change_capture: log: wal_level is {wal_level}, needs logical" in checked.stdout + checked.stderr
    assert "app erp, change_capture: log: publication 'nope' does not exist: the database's owner makes it" in checked.stderr


def test_config_check_says_what_the_binlog_needs(env: Any, mariadb_url: str) -> None:
    """The shared MariaDB writes no binlog: `config check` says so; SQLite has no log at all."""
    with sa.create_engine(mariadb_url).connect() as conn:
        log_bin = conn.execute(sa.text("SELECT @@log_bin")).scalar()
    if log_bin:
        pytest.skip("the shared MariaDB already writes a binlog")
    (env.tmp / "tablesync.yaml").write_text(f'apps:\n  erp: {{url: "{mariadb_url}", change_capture: log}}\n'
                                            f'  lite: {{url: "sqlite:///{env.tmp}/lite.db", change_capture: log}}\nmappings: []\n')
    checked = env.cli("config", "check", check=False)
    assert checked.returncode == 2
    assert "app erp, change_capture: log: the server writes no binlog: start it with log-bin" in checked.stdout + checked.stderr
    assert "app lite, change_capture: log: SQLite has no change log to follow; use change_capture: poll" in checked.stdout + checked.stderr


def test_a_standby_listener_takes_over_when_the_leader_dies(env: Any, pg_logged: Any, logical_postgres: OwnPostgres) -> None:
    erp, crm = pg_logged
    capture(env, "log", ", slot: erp_standby_test")  # a slot named in the config
    first, second = env.start_listener(), env.start_listener()
    logs = [env.tmp / "listen-1.log", env.tmp / "listen-2.log"]

    def leaders() -> list[int]:
        return [i for i, path in enumerate(logs) if "following" in path.read_text()]

    wait_for(lambda: leaders(), 30, what="a leader")
    wait_for(lambda: "erp_standby_test" in slots(logical_postgres), 30, what="the named slot")
    time.sleep(3)  # the other has tried the lock by now, more than once
    assert len(leaders()) == 1, env.logs()  # one leader per source database
    leader = leaders()[0]
    os.killpg((first, second)[leader].pid, signal.SIGKILL)
    wait_for(lambda: len(leaders()) == 2, 30, what=f"the standby to take over\n{env.logs()}")
    with erp.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET name = 'after the takeover', modified_at = now() WHERE id = 3"))
    wait_for(lambda: crm_state(crm)["C000003"][0] == "after the takeover", 30, what=f"the change\n{env.logs()}")


def test_a_job_made_but_never_sent_does_not_hold_back_the_wake_ups(env: Any) -> None:
    """A job written to the store and not sent (its sender died between the two, or had no
    broker) is queued: it would swallow its mapping's wake-ups forever. The listener sends it."""
    erp, crm, _, _ = setup_customer_sync(env, rows=5, schedule="every 1h")
    capture(env, "poll")
    env.start_worker(threads=2)
    assert sync(env)["inserted"] == 5
    with erp.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET name = 'waited', modified_at = now() WHERE id = 2"))
    job_id = int(env.cli("sync", "CUSTOMER", TABLESYNC_BROKER_URL="").stdout.split()[-1])  # no broker: left unsent
    env.start_listener()  # no scheduler runs in this test
    wait_for(lambda: crm_state(crm)["C000002"][0] == "waited", 30, what="the unsent job to be sent and run")
    assert json.loads(env.cli("job", str(job_id), "--json").stdout)["status"] == "succeeded"
