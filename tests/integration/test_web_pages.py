"""The console's HTML pages through the test client: filters, pages, groups, the record log and
the problem page, as a browser without JavaScript would use them."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tablesync.store.jobs import create_jobs
from tests.integration.helpers import setup_customer_sync
from tests.integration.test_web_api import app_urls, finished, scenario  # noqa: F401  (fixture)
from tests.integration.web_helpers import bearer, csrf_of, logged_in, make_app

pytestmark = pytest.mark.integration


def test_jobs_page_filters_and_pages(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=1)
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    with store.begin() as conn:
        create_jobs(conn, [("CUSTOMER", {})] * 60, "sync")
    client = logged_in(make_app(env))
    first = client.get("/jobs").text
    assert "page 1 of 2" in first and "Older →" in first and first.count('href="/jobs/') == 50
    second = client.get("/jobs?page=2").text
    assert "page 2 of 2" in second and second.count('href="/jobs/') == 10 and "← Newer" in second
    assert "page 1 of 2" in client.get("/jobs?mapping=CUSTOMER&status=queued").text
    assert "No jobs match" in client.get("/jobs?status=succeeded").text
    assert "No jobs match" in client.get("/jobs?since=2999-01-01T00:00").text
    assert "page 1 of 2" in client.get("/jobs?until=2999-01-01T00:00:00").text
    bad = client.get("/jobs?since=yesterday")
    assert bad.status_code == 400 and "since: not a date and time" in bad.text
    assert client.get("/jobs?status=bogus").status_code == 400
    missing = client.get("/jobs/999999")
    assert missing.status_code == 404 and "job 999999 does not exist" in missing.text


def test_errors_groups_act_on_a_whole_group_and_keys_link_to_record_logs(env) -> None:  # type: ignore[no-untyped-def]
    scenario(env)
    app = make_app(env)
    client = logged_in(app)
    rows = client.get("/errors").text
    assert rows.count('name="coupling"') == 2 + 1  # two rows, and the Retry-all form's one retryable coupling
    for key in ("3", "5"):
        assert f'href="/records/CUSTOMER/local/{key}"' in rows
    api, auth = TestClient(app), bearer(app)
    deleted = next(e for e in api.get("/api/errors", headers=auth).json() if e["local_key"] == "3")["signature"]
    groups = client.get("/errors?view=groups").text
    assert sorted(re.findall(r'name="group" value="([0-9a-f]+)"', groups)) == sorted(
        g["signature"] for g in api.get("/api/errors/groups", headers=auth).json())
    assert client.get(f"/errors?group={deleted}&mapping=CUSTOMER").text.count('data-coupling="') == 1
    reply = client.post("/actions/uncouple", data={"csrf_token": csrf_of(groups), "group": deleted, "back": "/errors?view=groups"})
    assert reply.status_code == 303 and reply.headers["location"].startswith("/jobs/")
    job = finished(api, auth, int(reply.headers["location"].rsplit("/", 1)[1]))
    assert (job["kind"], job["status"], job["uncoupled"]) == ("uncouple", "succeeded", 1), job
    assert [e["local_key"] for e in api.get("/api/errors", headers=auth).json()] == ["5"]
    log = client.get("/records/CUSTOMER/local/3").text
    assert "Synchronization log of local record" in log and "uncouple" in log and "alice" in log
    assert client.get("/records/CUSTOMER/sideways/3").status_code == 404


def test_pages_speak_the_operators_language(env) -> None:  # type: ignore[no-untyped-def]
    """App and table names beside the sides, and a job whose records failed is not a green success."""
    setup_customer_sync(env, rows=1)
    store = sa.create_engine(env.store_url, poolclass=sa.pool.NullPool)
    with store.begin() as conn:
        [clean, partial] = create_jobs(conn, [("CUSTOMER", {}), ("CUSTOMER", {})], "sync")
        conn.execute(sa.text("UPDATE jobs SET status = 'succeeded', direction = 'to_integration', failed = :f, "
                             "finished_at = now() WHERE id = :i"), [{"f": 0, "i": clean}, {"f": 3, "i": partial}])
        conn.execute(sa.text("INSERT INTO job_errors (job_id, direction, source_key, destination_key, message, created_at) "
                             "VALUES (:i, 'to_integration', '7', NULL, 'bad value', now())"), {"i": partial})
    client = logged_in(make_app(env))
    page = client.get(f"/jobs/{partial}").text
    assert 'class="status partial"' in page and "succeeded with 3 failed records" in page
    assert "erp customers" in page and "crm accounts" in page and "erp → crm" in page
    assert 'class="status succeeded"' in client.get(f"/jobs/{clean}").text
    listing = client.get("/jobs").text
    assert "succeeded with 3 failed records" in listing and listing.count('class="status succeeded"') == 1
    assert "succeeded, 3 failed" in env.cli("jobs").stdout
