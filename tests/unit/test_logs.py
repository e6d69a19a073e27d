"""Log redaction and the JSON form of job lines (pure logic; the process-level test is in integration)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablesync.config.logs import configure_logging, job_fields, redact
from tablesync.db.engine import create_engine, redact_url

SECRET_CHARS = st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="\"'/")


@given(user=st.text(st.characters(min_codepoint=97, max_codepoint=122), max_size=8),
       secret=st.text(SECRET_CHARS, min_size=1, max_size=20),
       scheme=st.sampled_from(["postgresql", "postgresql+psycopg", "mysql+pymysql", "redis", "amqp"]))
def test_no_url_password_survives(user: str, secret: str, scheme: str) -> None:
    """Even a password with unescaped @ or : in it (invalid, but typed by people)."""
    line = f"cannot connect to {scheme}://{user}:PW{secret}@db.internal:5432/erp: timeout"
    out = redact(line)
    assert f"PW{secret}" not in out
    assert out.endswith("@db.internal:5432/erp: timeout") and f"{scheme}://{user}:***@" in out


def test_dsn_and_json_passwords_and_harmless_text() -> None:
    assert redact("host=erp password=hunter2 user=sync") == "host=erp password=*** user=sync"
    assert redact('{"url": "x", "password": "hunter2"}') == '{"url": "x", "password": "***"}'
    assert redact("pwd: hunter2") == "pwd: ***"
    for harmless in ("sqlite:///var/lib/tablesync.db", "postgresql://sync@erp/erp", "redis://redis:6379/0",
                     "took 10:20@ noon", "job 7 succeeded in 0.52s: mapping=CUSTOMER inserted=5"):
        assert redact(harmless) == harmless


def test_json_lines_carry_job_fields_and_are_redacted() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("json", "INFO", stream)
        job = type("Job", (), {"id": 7, "mapping": "CUSTOMER", "kind": "sync"})()
        logging.getLogger("workers.runner").info("job %s failed: app erp (%s) refused", 7, "postgresql://u:hunter2@erp/erp",
                                                 extra=job_fields(job, status="failed", duration_seconds=0.5))
        try:
            raise RuntimeError("connect to mysql://root:hunter2@crm/crm failed")
        except RuntimeError:
            logging.getLogger("workers.runner").exception("internal error")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert "hunter2" not in stream.getvalue()
    assert {k: first[k] for k in ("level", "logger", "job_id", "mapping", "kind", "status", "duration_seconds")} == {
        "level": "INFO", "logger": "workers.runner", "job_id": 7, "mapping": "CUSTOMER", "kind": "sync",
        "status": "failed", "duration_seconds": 0.5}
    assert first["message"] == "job 7 failed: app erp (postgresql://u:***@erp/erp) refused"
    assert "RuntimeError" in second["exc_info"]


def test_an_unescaped_at_in_a_password_is_refused_and_never_shown() -> None:
    """A URL parser would take the password's tail for the host, and a driver would print it."""
    with pytest.raises(ValueError, match="%40"):
        create_engine("postgresql://sync:p@ss@erp-db/erp")
    assert redact_url("postgresql://sync:p@ss@erp-db/erp") == "postgresql://sync:***@erp-db/erp"
