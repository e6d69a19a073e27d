"""The web console's JSON API and form handling, through FastAPI's test client on a real store
and broker: login everywhere, CSRF, the CLI's objects, actions as the CLI's actor messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tablesync.errors import UsageError
from tablesync.store.jobs import FINISHED
from tests.conftest import wait_for
from tests.integration.helpers import setup_customer_sync, sync
from tests.integration.test_deletions import delete_local
from tests.integration.web_helpers import PASSWORD, bearer, csrf_of, logged_in, make_app

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def app_urls(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The in-process web app reads app URLs from its environment, as `tablesync web` does."""
    monkeypatch.setenv("ERP_DATABASE_URL", env.erp_url)
    monkeypatch.setenv("CRM_DATABASE_URL", env.crm_url)


def scenario(env: Any) -> None:
    """20 synced customers; local 3 deleted (a deletion conflict); coupling of local 5 skipped after failures."""
    erp, _, _, _ = setup_customer_sync(env, rows=20)
    env.start_worker()
    assert sync(env)["inserted"] == 20
    delete_local(erp, [3])
    assert sync(env)["conflicts"] == 1
    with sa.create_engine(env.store_url, poolclass=sa.pool.NullPool).begin() as conn:
        conn.execute(sa.text("UPDATE couplings SET skipped = true, skip_reason = 'failures' WHERE local_key = '5'"))


def cli_json(env: Any, *args: str) -> Any:
    return json.loads(env.cli(*args, "--json").stdout)


def finished(client: TestClient, auth: dict[str, str], job_id: int) -> dict[str, Any]:
    wait_for(lambda: client.get(f"/api/jobs/{job_id}", headers=auth).json()["status"] in FINISHED, timeout=60,
             what=f"job {job_id} to end")
    return client.get(f"/api/jobs/{job_id}", headers=auth).json()  # type: ignore[no-any-return]


def test_every_page_and_api_call_needs_a_login(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=1)
    client = TestClient(make_app(env), follow_redirects=False)
    for path in ("/", "/jobs", "/jobs/1", "/errors", "/records/CUSTOMER/local/1"):
        reply = client.get(path)
        assert reply.status_code == 303 and reply.headers["location"].startswith("/login?next="), path
    assert client.post("/mappings/CUSTOMER/sync", data={}).status_code == 303
    for method, path in (("GET", "/api/mappings"), ("GET", "/api/jobs"), ("GET", "/api/errors"), ("GET", "/api/me"),
                         ("POST", "/api/mappings/CUSTOMER/sync"), ("POST", "/api/actions/retry")):
        reply = client.request(method, path, json={})
        assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer", (method, path)
    assert client.get("/api/me", headers={"Authorization": "Bearer forged"}).status_code == 401
    assert client.get("/healthz").text == "ok\n"
    assert client.get("/login").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200  # the API's description is public; its data is not
    docs = client.get("/api/docs").text
    assert "/api/docs/static/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()  # nothing from elsewhere
    assert client.get("/api/docs/static/swagger-ui-bundle.js").status_code == 200
    for evil in ("//evil.example/x", "/\\evil.example", "https://evil.example/"):  # no open redirect after login
        assert 'name="next" value="/"' in client.get("/login", params={"next": evil}).text


def test_state_changes_need_the_csrf_token_and_the_session_cookie_is_guarded(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=1)
    app = make_app(env)
    client = TestClient(app, follow_redirects=False)
    assert client.post("/login", data={"username": "alice", "password": PASSWORD}).status_code == 403  # even the login form
    client = logged_in(app)
    cookie = client.cookies.jar
    assert any(c.name == "tablesync_session" for c in cookie)
    login = TestClient(app, follow_redirects=False)
    page = login.get("/login")
    set_cookie = login.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": csrf_of(page.text)}
                            ).headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie
    headers = client.get("/").headers
    assert "default-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"

    token = csrf_of(client.get("/").text)
    assert client.post("/mappings/CUSTOMER/sync", data={}).status_code == 403
    assert client.post("/mappings/CUSTOMER/sync", data={"csrf_token": "x" + token}).status_code == 403
    assert client.post("/api/mappings/CUSTOMER/sync", json={}).status_code == 403  # cookie without X-CSRF-Token
    assert client.post("/api/mappings/CUSTOMER/sync", json={}, headers={"X-CSRF-Token": token}).status_code == 202
    reply = client.post("/mappings/CUSTOMER/sync", data={"csrf_token": token})
    assert reply.status_code == 303 and reply.headers["location"].startswith("/jobs/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    assert client.get("/").status_code == 303  # logged out
    with sa.create_engine(env.store_url, poolclass=sa.pool.NullPool).connect() as conn:
        operators = conn.execute(sa.text("SELECT operator, kind FROM jobs ORDER BY id")).all()
    assert [tuple(r) for r in operators] == [("alice", "sync"), ("alice", "sync")]


def test_passwords_must_be_hashes_and_guessing_is_throttled(env) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match="not an Argon2 hash"):
        make_app(env, web_users={"carol": "hunter22"})
    client = TestClient(make_app(env))
    for _ in range(5):
        assert client.post("/api/token", json={"username": "alice", "password": "wrong"}).status_code == 401
    refused = client.post("/api/token", json={"username": "alice", "password": PASSWORD})
    assert refused.status_code == 429 and "too many failed logins" in refused.json()["detail"]
    assert client.post("/api/token", json={"username": "bob", "password": PASSWORD}).status_code == 200  # others unaffected
    assert client.post("/api/token", json={"username": "nobody", "password": PASSWORD}).status_code == 401


def test_api_objects_are_the_clis(env) -> None:  # type: ignore[no-untyped-def]
    scenario(env)
    app = make_app(env)
    client, auth = TestClient(app), bearer(app)
    assert client.get("/api/mappings", headers=auth).json() == cli_json(env, "mappings")
    page = client.get("/api/jobs", headers=auth, params={"mapping": "CUSTOMER", "limit": 1}).json()
    assert page["total"] == 2 and page["items"] == cli_json(env, "jobs", "--limit", "1")
    detail = client.get(f"/api/jobs/{page['items'][0]['id']}", headers=auth).json()
    assert detail == cli_json(env, "job", str(page["items"][0]["id"]))
    errors = client.get("/api/errors", headers=auth).json()
    assert [{k: v for k, v in e.items() if k != "allowed_actions"} for e in errors] == cli_json(env, "errors")
    allowed = {e["local_key"]: e["allowed_actions"] for e in errors}
    # a one-way ERP → CRM mapping: the ERP side wins a Synchronize, and a deleted ERP record is not restored
    assert allowed == {"3": ["delete", "uncouple"], "5": ["resolve:local", "retry", "uncouple"]}
    assert client.get("/api/errors/groups", headers=auth).json() == cli_json(env, "errors", "--group")
    assert client.get("/api/records/CUSTOMER/local/3", headers=auth).json() == cli_json(env, "log", "CUSTOMER", "3")
    assert client.get("/api/couplings/CUSTOMER", headers=auth, params={"skipped": True}).json() == \
        cli_json(env, "couplings", "CUSTOMER", "--skipped")
    # filters are values, never SQL; a mapping name nobody configured is a 404, never an empty list
    injected = client.get("/api/jobs", headers=auth, params={"mapping": "x' OR '1'='1"})
    assert injected.status_code == 404 and "unknown mapping \"x' OR '1'='1\"" in injected.json()["detail"]
    for path in ("/api/jobs?mapping=NOPE", "/api/errors?mapping=NOPE", "/api/errors/groups?mapping=NOPE",
                 "/api/couplings/NOPE", "/api/records/NOPE/local/1"):
        answer = client.get(path, headers=auth)
        assert answer.status_code == 404 and "unknown mapping 'NOPE': the mappings are CUSTOMER" in answer.json()["detail"], path
    assert client.post("/api/mappings/NOPE/sync", headers=auth, json={}).status_code == 404
    assert client.post("/api/actions/retry", headers=auth, json={"mapping": "NOPE"}).status_code == 404
    couplings = client.get("/api/couplings/CUSTOMER", headers=auth, params={"limit": 1})
    assert len(couplings.json()) == 1 and int(couplings.headers["x-total-count"]) > 1  # a cut list says so
    assert client.get("/api/jobs", headers=auth, params={"status": "nonsense"}).status_code == 422
    assert client.get("/api/jobs", headers=auth, params={"since": "2999-01-01T00:00:00Z"}).json()["total"] == 0
    assert client.get("/api/jobs/999999", headers=auth).status_code == 404
    # NUL characters, which no PostgreSQL text holds: refused as bad input, never a 500
    assert client.get("/api/jobs", headers=auth, params={"mapping": "a\x00"}).status_code == 400
    assert client.get("/api/records/CUSTOMER/local/k%00", headers=auth).status_code == 400
    assert client.post("/api/mappings/CUSTOMER/sync", headers=auth, json={"record": "k\x00"}).status_code == 422
    assert client.post("/api/actions/retry", headers=auth, json={"mapping": "M\x00", "all": True}).status_code == 422


def test_actions_from_the_api_and_the_page_are_the_clis_jobs_with_the_operators_name(env) -> None:  # type: ignore[no-untyped-def]
    scenario(env)
    app = make_app(env)
    api, auth = TestClient(app), bearer(app, "bob")
    errors = {e["local_key"]: e["coupling_id"] for e in api.get("/api/errors", headers=auth).json()}
    jobs = api.post("/api/actions/retry", headers=auth, json={"couplings": [errors["5"]], "now": True}).json()
    assert [(j["kind"], j["operator"], j["status"]) for j in jobs] == [("retry", "bob", "queued")]
    assert finished(api, auth, jobs[0]["id"])["status"] == "succeeded"
    log = api.get("/api/records/CUSTOMER/local/5", headers=auth).json()
    assert any(e["kind"] == "retry" and e["operator"] == "bob" for e in log), log
    assert api.post("/api/actions/resolve", headers=auth, json={"couplings": [errors["3"]]}).status_code == 400  # no side
    assert api.post("/api/actions/retry", headers=auth, json={"couplings": [987654]}).status_code == 400
    assert api.post("/api/actions/retry", headers=auth, json={"couplings": [2**63]}).status_code == 422  # found by the fuzzer

    page = logged_in(app)
    token = csrf_of(page.get("/errors").text)
    # the page refuses what the live records do not allow, before anything is enqueued
    refused = page.post("/actions/retry", data={"csrf_token": token, "only": errors["3"]})
    assert refused.status_code == 303 and refused.headers["location"] == "/errors"
    assert "needs both records to exist: not so for coupling" in page.get("/errors").text
    assert page.post("/actions/uncouple", data={"csrf_token": token, "only": 2**63}).headers["location"] == "/errors"
    assert "coupling ids are positive 64-bit numbers" in page.get("/errors").text
    huge = env.cli("uncouple", str(2**63), check=False)
    assert huge.returncode == 2 and "is out of range: give a number from 1 to 9,223,372,036,854,775,807" in huge.stderr
    assert page.post("/actions/restore", data={"csrf_token": token, "coupling": [errors["3"]]}).headers["location"] == "/errors"
    assert "Restore records needs exactly one of the two records deleted, on a side" in page.get("/errors").text
    ask = page.post("/actions/delete", data={"csrf_token": token, "coupling": [errors["3"]]})
    # what goes, before anything: the CRM account that survived its ERP customer's deletion
    assert ask.status_code == 200 and "Delete records?" in ask.text and "<td>crm</td><td>accounts</td>" in ask.text
    assert "deleted (integration record)" in ask.text and api.get("/api/errors", headers=auth).json() != []
    unconfirmed = api.post("/api/actions/delete", headers=auth, json={"couplings": [errors["3"]]})
    assert unconfirmed.status_code == 400 and "confirm" in unconfirmed.json()["detail"]
    assert "crm accounts account_id=" in unconfirmed.json()["detail"]
    done = page.post("/actions/delete", data={"csrf_token": token, "coupling": [errors["3"]], "confirm": "true"})
    assert done.status_code == 303 and done.headers["location"].startswith("/jobs/")
    job_id = int(done.headers["location"].rsplit("/", 1)[1])
    job = finished(api, auth, job_id)
    assert (job["kind"], job["operator"], job["status"], job["deleted"]) == ("delete", "alice", "succeeded", 1), job["message"]
    assert api.get("/api/errors", headers=auth).json() == []
    assert "Job " + str(job_id) in page.get(f"/jobs/{job_id}").text


def test_healthz_and_metrics(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=1)
    app = make_app(env)
    client = logged_in(app)
    client.get("/")
    client.get("/records/CUSTOMER/local/secret-key-1")
    metrics = client.get("/metrics").text
    assert 'tablesync_web_requests_total{method="GET",route="/",status="200"}' in metrics
    assert 'route="/records/{mapping}/{side}/{key:path}"' in metrics and "secret-key-1" not in metrics
    assert client.get("/healthz").status_code == 200
