"""Structured logs of real worker processes: a JSON line per job start and end, and no secret anywhere."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import pytest

from tests.integration.helpers import setup_customer_sync, sync

pytestmark = pytest.mark.integration

SECRET = "Pw-s3cret%40tablesync"  # trust auth ignores it; an @, escaped as a URL needs


def with_password(url: str, port: int | None = None) -> str:
    head, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    if port is not None:
        host = host.replace(":5432", f":{port}")
    return f"{head}://{user}:{SECRET}@{host}"


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line, Dramatiq's own included
    assert all({"time", "level", "logger", "message"} <= p.keys() for p in parsed), lines
    return parsed


def test_json_job_lines_and_no_password_in_any_log(env) -> None:  # type: ignore[no-untyped-def]
    setup_customer_sync(env, rows=5)
    urls = {"ERP_DATABASE_URL": with_password(env.erp_url), "CRM_DATABASE_URL": with_password(env.crm_url),
            "TABLESYNC_LOG_FORMAT": "json", "TABLESYNC_MAX_RETRIES": "0"}
    worker = env.start_worker(**urls)
    ok = sync(env)
    assert (ok["status"], ok["inserted"]) == ("succeeded", 5), ok
    os.killpg(worker.pid, signal.SIGTERM)
    worker.wait(timeout=30)

    # the CRM now refuses connections: the job fails with the app's URL in its message
    env.start_worker(**{**urls, "CRM_DATABASE_URL": with_password(env.crm_url, port=1)})
    failed = sync(env)
    assert failed["status"] == "failed" and "app unavailable" in failed["message"], failed
    assert "s3cret" not in failed["message"] and ":***@" in failed["message"]
    env.stop_all()

    text = "\n".join(p.read_text() for p in sorted(env.tmp.glob("worker-*.log")))
    assert "s3cret" not in text
    lines = json_lines(text)
    ends = {p["job_id"]: p for p in lines if p.get("event") == "job_ended"}
    starts = {p["job_id"] for p in lines if p.get("event") == "job_started"}
    assert starts == set(ends) == {ok["id"], failed["id"]}
    good, bad = ends[ok["id"]], ends[failed["id"]]
    assert {k: good[k] for k in ("mapping", "kind", "status", "counters", "level")} == {
        "mapping": "CUSTOMER", "kind": "sync", "status": "succeeded", "counters": {"inserted": 5}, "level": "INFO"}
    assert good["duration_seconds"] > 0
    assert (bad["status"], bad["level"], bad["counters"]) == ("failed", "WARNING", {})
    assert bad["job_message"] == failed["message"]
