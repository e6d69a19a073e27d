"""A web console app on a test's own store and Redis namespace, and a logged-in test client."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from tablesync.config.settings import load_settings
from tablesync.console.web.app import create_app
from tablesync.console.web.auth import hash_password
from tablesync.db.engine import create_engine
from tablesync.worker.broker import build_broker

PASSWORD = "correct horse battery"
_HASH = hash_password(PASSWORD)  # hashing is slow on purpose: once per test run


def web_settings(env: Any, **more: Any) -> Any:
    values = dict(store_url=env.store_url, broker_url=env.broker_url, broker_namespace=env.namespace, queue=env.queue,
                  web_users={"alice": _HASH, "bob": _HASH}, web_secret_key="test-secret-key")
    return load_settings(**{**values, **more})


def make_app(env: Any, **more: Any) -> Any:
    settings = web_settings(env, **more)
    return create_app(settings, create_engine(settings.store_url), build_broker(settings))


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def logged_in(app: Any, name: str = "alice") -> TestClient:
    client = TestClient(app, follow_redirects=False)
    page = client.get("/login")
    reply = client.post("/login", data={"username": name, "password": PASSWORD, "csrf_token": csrf_of(page.text), "next": "/"})
    assert reply.status_code == 303, reply.text
    return client


def bearer(app: Any, name: str = "alice") -> dict[str, str]:
    client = TestClient(app)
    token = client.post("/api/token", json={"username": name, "password": PASSWORD}).json()["token"]
    return {"Authorization": f"Bearer {token}"}
