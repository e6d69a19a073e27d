"""An operator's first hour: what the CLI and the web refuse, and how, and what they say when a
job cannot run (a dead broker, no worker, no broker at all). Real PostgreSQL, Redis and workers;
the broker outage is a Redis server of the test's own, killed and started again."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from tests.conftest import free_port, wait_for
from tests.integration.helpers import setup_customer_sync, sync
from tests.integration.web_helpers import logged_in, make_app

pytestmark = pytest.mark.integration


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def test_an_unknown_mapping_is_refused_by_every_command_naming_it(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=2)
    for args in (("jobs", "--mapping", "NOPE"), ("errors", "--mapping", "NOPE"), ("couplings", "NOPE"), ("log", "NOPE", "1"),
                 ("sync", "NOPE"), ("retry", "--mapping", "NOPE"), ("couple", "NOPE", "1", "2"), ("match", "NOPE"),
                 ("jobs", "--mapping", "NOPE", "--json"), ("errors", "--mapping", "NOPE", "--group")):
        proc = env.cli(*args, check=False)
        assert proc.returncode == 2 and "unknown mapping 'NOPE': the mappings are CUSTOMER" in proc.stderr, (args, proc.stderr)
        assert proc.stdout == "", args  # never an empty table that reads as "nothing here"
        no_traceback(proc)
    client = logged_in(make_app(env))
    for page in ("/errors?mapping=NOPE", "/jobs?mapping=NOPE", "/records/NOPE/local/1"):
        answer = client.get(page)
        assert answer.status_code == 404 and "unknown mapping &#39;NOPE&#39;" in answer.text, page
        assert "every coupled record is in sync" not in answer.text


def test_a_cut_list_says_on_stderr_how_many_rows_it_left_out(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=7)
    env.start_worker()
    sync(env)
    cut = env.cli("couplings", "CUSTOMER", "--json", "--limit", "3")
    assert len(json.loads(cut.stdout)) == 3  # stdout stays one JSON document
    assert "showing 3 of 7 couplings of CUSTOMER; 4 left out: raise --limit" in cut.stderr
    whole = env.cli("couplings", "CUSTOMER", "--json")
    assert len(json.loads(whole.stdout)) == 7 and whole.stderr == ""
    jobs = env.cli("jobs", "--limit", "1")
    assert "showing 1 of 1" not in jobs.stderr and env.cli("jobs").stderr == ""
    sync(env)
    assert "showing 1 of 2 jobs; 1 left out" in env.cli("jobs", "--limit", "1", "--json").stderr
    for bad in ("-5", "0", "x"):
        proc = env.cli("jobs", "--limit", bad, check=False)
        assert proc.returncode == 2 and f"argument --limit: '{bad}'" in proc.stderr


def test_dry_run_honours_full_and_record_and_refuses_wait(env) -> None:  # type: ignore[no-untyped-def]
    erp, _, customers, _ = setup_customer_sync(env, rows=4)
    with erp.begin() as conn:  # modified an hour apart: an incremental run re-reads only the newest (its overlap)
        conn.execute(sa.text("UPDATE customers SET modified_at = now() - id * interval '1 hour'"))
    env.start_worker()
    sync(env)

    def dry(*extra: str) -> dict[str, Any]:
        return json.loads(env.cli("sync", "CUSTOMER", "--dry-run", "--json", *extra).stdout)

    assert dry()["directions"]["to_integration"]["counts"] == {"unchanged": 1}
    assert dry("--full")["directions"]["to_integration"]["counts"] == {"unchanged": 4}  # every row compared
    with erp.begin() as conn:
        conn.execute(customers.update().values(name="Renamed", modified_at=sa.func.now()))
    one = dry("--record", "2")["directions"]["to_integration"]
    assert one["counts"] == {"update": 1} and one["samples"]["update"][0]["source_key"] == "2"
    assert dry()["directions"]["to_integration"]["counts"] == {"update": 4}
    missing = env.cli("sync", "CUSTOMER", "--dry-run", "--record", "999", check=False)
    assert missing.returncode == 1 and "local record 999 does not exist" in missing.stderr
    for args, says in ((("--wait",), "there is no job to --wait for"), (("--side", "local"), "give --record KEY too")):
        proc = env.cli("sync", "CUSTOMER", "--dry-run", *args, check=False)
        assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert count_jobs(env) == 1  # the dry runs enqueued nothing


def count_jobs(env: Any) -> int:
    with sa.create_engine(env.store_url, poolclass=sa.pool.NullPool).connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM jobs")).scalar_one())


def test_resolve_on_a_from_integration_mapping_names_the_side_it_never_writes(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=3)
    config = env.tmp / "tablesync.yaml"
    config.write_text(config.read_text().replace("direction: to_integration", "direction: from_integration")
                      .replace("      - {integration: customertypecode, constant: 3}\n", "")
                      .replace("{local: email, integration: emailaddress1, transform: lower}", "{local: email, integration: emailaddress1}"))
    env.cli("config", "apply", "--skip-live-check")
    with sa.create_engine(env.store_url, poolclass=sa.pool.NullPool).begin() as conn:
        cid = conn.execute(sa.text("INSERT INTO couplings (mapping, local_key, integration_key, state, failures, skipped, "
                                   "skip_reason, created_at) VALUES ('CUSTOMER', '1', 'a', 'synced', 0, true, "
                                   "'update_conflict', now()) RETURNING id")).scalar_one()
    env.start_worker()
    proc = env.cli("resolve", str(cid), "--use", "local", "--wait", "--json", check=False)
    job = json.loads(proc.stdout)
    assert proc.returncode == 1 and job["status"] == "failed"
    assert "flows from_integration: its integration records are never written to, so the local values cannot win; " \
           "use --use integration" in job["message"], job["message"]


def test_a_dead_broker_fails_the_job_at_once_and_holds_back_no_tick(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=3, schedule="every 2s")
    dead = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    proc = env.cli("sync", "CUSTOMER", check=False, TABLESYNC_BROKER_URL=dead)
    no_traceback(proc)
    assert proc.returncode == 1 and proc.stdout == ""
    [line] = proc.stderr.strip().splitlines()  # one clear line
    assert "the broker redis://:***@127.0.0.1:" in line and "did not take job 1" in line and "s3cret-pw" not in line
    [job] = json.loads(env.cli("jobs", "--json").stdout)
    assert job["status"] == "failed" and job["message"].startswith("not sent, nothing ran: the broker redis://:***@")
    env.start_worker()
    env.start_scheduler()  # the mapping's ticks run at once: nothing is left queued ahead of them
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    with store.connect() as conn:
        wait_for(lambda: conn.execute(sa.text("SELECT count(*) FROM jobs WHERE status = 'succeeded'")).scalar_one() >= 1,
                 timeout=30, what="a tick's job to run")
        notes = conn.execute(sa.text("SELECT note FROM schedule_ticks WHERE note IS NOT NULL")).scalars().all()
    assert not any("job 1 " in n for n in notes), notes


@pytest.fixture
def own_redis(tmp_path) -> Iterator[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """A Redis server of this test's own, which the test may kill and start again on the same port."""
    exe = shutil.which("redis-server")
    assert exe, "redis-server not found"
    server: dict[str, Any] = {"port": free_port(), "proc": None}

    def start() -> None:
        server["proc"] = subprocess.Popen([exe, "--port", str(server["port"]), "--bind", "127.0.0.1", "--save", "",
                                           "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(server["port"]), "ping"], capture_output=True).returncode == 0,
                 timeout=20, what="the test's redis-server")

    def stop() -> None:
        if server["proc"] is not None and server["proc"].poll() is None:
            server["proc"].send_signal(signal.SIGKILL)
            server["proc"].wait()

    server.update(start=start, stop=stop, url=f"redis://127.0.0.1:{server['port']}/0")
    start()
    try:
        yield server
    finally:
        stop()


def test_ticks_written_while_the_broker_is_down_are_sent_when_it_is_back(env, own_redis) -> None:  # type: ignore[no-untyped-def]
    env.broker_url = own_redis["url"]
    setup_customer_sync(env, rows=3, schedule="every 1s")
    env.start_worker()
    env.start_scheduler()
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)

    def scalar(sql: str) -> int:
        with store.connect() as conn:
            return int(conn.execute(sa.text(sql)).scalar_one())

    wait_for(lambda: scalar("SELECT count(*) FROM jobs WHERE status = 'succeeded'") >= 1, timeout=30, what="a first run")

    def between_ticks() -> bool:
        """No job in flight, and mid-second (ticks of `every 1s` fall on whole seconds): a job sent just
        before the broker stops is lost with it and holds its mapping until the lost-message resend,
        15 minutes on, which is another test's business (seen once under CI load)."""
        return 0.3 < time.time() % 1 < 0.6 and scalar("SELECT count(*) FROM jobs WHERE status IN ('queued', 'running')") == 0

    wait_for(between_ticks, timeout=30, interval=0.02, what="a moment with no job in flight")
    own_redis["stop"]()
    wait_for(lambda: scalar("SELECT count(*) FROM jobs WHERE status = 'queued' AND sent_at IS NULL") >= 1, timeout=90,
             what="a tick's job to wait in the store while the broker is down")
    waiting = scalar("SELECT min(id) FROM jobs WHERE status = 'queued' AND sent_at IS NULL")
    time.sleep(2)
    assert scalar(f"SELECT count(*) FROM jobs WHERE id > {waiting} AND status = 'queued'") == 0  # one waits, no pile-up
    own_redis["start"]()  # empty: whatever was in the broker is gone, as after a restart without persistence
    wait_for(lambda: scalar(f"SELECT count(*) FROM jobs WHERE id >= {waiting} AND status = 'succeeded'") >= 1, timeout=60,
             what="the waiting job to be sent and run once the broker is back")
    log = env.logs()
    assert "jobs that waited in the store were sent" in log and log.count("due jobs wait in the store") == 1


def test_wait_says_why_nothing_picks_the_job_up(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=2)
    nobody = env.cli("sync", "CUSTOMER", "--wait", "--timeout", "8", check=False)
    assert nobody.returncode == 1 and "no worker of this store is running" in nobody.stderr, nobody.stderr
    assert "start `tablesync worker` with the same TABLESYNC_STORE_URL, TABLESYNC_BROKER_URL and TABLESYNC_QUEUE" in nobody.stderr
    env.start_worker(TABLESYNC_QUEUE="elsewhere")
    other = env.cli("sync", "CUSTOMER", "--wait", "--timeout", "8", check=False)
    assert other.returncode == 1 and "its workers listen on queue elsewhere of" in other.stderr, other.stderr
    unsent = env.cli("sync", "CUSTOMER", "--wait", "--timeout", "8", check=False, TABLESYNC_BROKER_URL="")
    assert unsent.returncode == 1 and "waits in the store and nothing sends it" in unsent.stderr, unsent.stderr
    assert "TABLESYNC_BROKER_URL is not set: job(s) 3 wait in the store" in unsent.stderr
    no_traceback(unsent)


def test_tablesync_run_without_a_broker_runs_what_other_commands_ask_for(env) -> None:  # type: ignore[no-untyped-def]
    """The embedded default's store is actionable: `tablesync run` sends the jobs other CLI
    processes queued in the store, and --wait sees them finish."""
    setup_customer_sync(env, rows=4)
    run = subprocess.Popen([*env_cli(env), "run", "--threads", "2"], env=env.environ(TABLESYNC_BROKER_URL=""),
                           cwd=env.tmp, stdout=open(env.tmp / "run.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
    env.processes.append(run)
    job = json.loads(env.cli("sync", "CUSTOMER", "--wait", "--json", "--timeout", "60", TABLESYNC_BROKER_URL="").stdout)
    assert job["status"] == "succeeded", job
    again = json.loads(env.cli("sync", "CUSTOMER", "--full", "--wait", "--json", TABLESYNC_BROKER_URL="").stdout)
    assert (again["status"], again["unchanged"]) == ("succeeded", 4), again
    # `run`'s own scheduler ticks the mapping as it starts, and that tick may run first: the four
    # rows land once, by whichever job ran first (CI saw the tick win)
    jobs = json.loads(env.cli("jobs", "--mapping", "CUSTOMER", "--json").stdout)
    assert sum(j["inserted"] for j in jobs) == 4 and not [j for j in jobs if j["status"] == "failed"], jobs


def env_cli(env: Any) -> list[str]:
    import sys

    return [sys.executable, "-m", "tablesync.console.cli"]
