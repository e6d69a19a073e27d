"""The listener's pure parts on SQLite: wake-ups (debounce, one follow-up after a running job,
none for a queued or paused mapping), which tables wake which mappings, and adaptive polling."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tablesync.apps.changelog import _table_pattern, slot_name
from tablesync.config.load import parse_config
from tablesync.db.engine import create_engine
from tablesync.scheduler.listen import FAST_PROBE_SECONDS, Prober, capture_plan
from tablesync.store.jobs import create_job
from tablesync.store.mappings import active_mappings, apply_config
from tablesync.store.schema import jobs, mappings, metadata, wakeups
from tablesync.store.wakeups import claim_due_wakes, next_due, request_wakes
from tablesync.store.watermarks import set_watermark

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path: Path) -> sa.Engine:
    """A store whose mappings A, RUN, QUEUED and P are active, and GONE deactivated."""
    engine = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(mappings), [{"name": name, "version": 1, "definition": {}, "digest": "", "active": name != "GONE",
                                            "applied_at": T0} for name in ("A", "RUN", "QUEUED", "P", "GONE")])
    return engine


def wake(store: sa.Engine, *mappings: str, at: datetime = T0, debounce: float = 0.15) -> None:
    with store.begin() as conn:
        request_wakes(conn, mappings, at, debounce)


def job_statuses(store: sa.Engine) -> list[tuple[str, str]]:
    with store.connect() as conn:
        return [(r.mapping, r.status) for r in conn.execute(sa.select(jobs.c.mapping, jobs.c.status).order_by(jobs.c.id))]


def test_a_burst_is_one_wake_up_due_after_its_first_change(store: sa.Engine) -> None:
    for i in range(100):
        wake(store, "A", at=T0 + timedelta(milliseconds=i))
    with store.connect() as conn:
        assert next_due(conn) == T0 + timedelta(seconds=0.15)
        assert conn.execute(sa.select(wakeups.c.changes)).scalar() == 100
    assert claim_due_wakes(store, T0 + timedelta(seconds=0.1)) == {}  # not yet: the burst may go on
    claimed = claim_due_wakes(store, T0 + timedelta(seconds=0.2))
    assert list(claimed) == ["A"] and job_statuses(store) == [("A", "queued")]
    assert claim_due_wakes(store, T0 + timedelta(seconds=1)) == {}  # claimed once


def test_a_running_job_gets_exactly_one_follow_up_and_a_queued_one_none(store: sa.Engine) -> None:
    with store.begin() as conn:
        running = create_job(conn, "RUN", "sync", status="running")
        create_job(conn, "QUEUED", "sync")
    for i in range(50):
        wake(store, "RUN", "QUEUED", at=T0 + timedelta(milliseconds=i))
    assert claim_due_wakes(store, T0 + timedelta(seconds=1)) == {}
    with store.connect() as conn:  # the queued job has not read yet: it sees the changes; RUN's wake-up waits
        assert list(conn.execute(sa.select(wakeups.c.mapping).where(wakeups.c.due_at.is_not(None))).scalars()) == ["RUN"]
    wake(store, "RUN", at=T0 + timedelta(seconds=2))  # more changes while it runs: still one wake-up
    assert claim_due_wakes(store, T0 + timedelta(seconds=3)) == {}
    with store.begin() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == running).values(status="succeeded"))
    assert claim_due_wakes(store, T0 + timedelta(seconds=3)) == {}  # looked at again 0.2 s later, not at every pass
    claimed = claim_due_wakes(store, T0 + timedelta(seconds=3.2))
    assert list(claimed) == ["RUN"]
    assert [s for s in job_statuses(store) if s[0] == "RUN"] == [("RUN", "succeeded"), ("RUN", "queued")]


def test_under_a_steady_stream_a_mapping_runs_at_most_once_per_min_interval(store: sa.Engine) -> None:
    wake(store, "A")
    assert list(claim_due_wakes(store, T0 + timedelta(seconds=0.2), min_interval_seconds=1)) == ["A"]
    with store.begin() as conn:
        conn.execute(sa.update(jobs).values(status="succeeded"))  # a short job, done at once
    wake(store, "A", at=T0 + timedelta(seconds=0.3))
    assert claim_due_wakes(store, T0 + timedelta(seconds=0.5), min_interval_seconds=1) == {}  # 0.3 s after the last
    with store.connect() as conn:
        assert next_due(conn) == T0 + timedelta(seconds=1.2)  # put off to a second after the last job
    assert list(claim_due_wakes(store, T0 + timedelta(seconds=1.2), min_interval_seconds=1)) == ["A"]
    assert len(job_statuses(store)) == 2


def test_a_paused_or_deactivated_mapping_is_not_woken(store: sa.Engine) -> None:
    from tablesync.store.pauses import pause

    with store.begin() as conn:
        pause(conn, "P", "ops", "migration")
    wake(store, "P", "GONE")
    assert claim_due_wakes(store, T0 + timedelta(seconds=1)) == {} and job_statuses(store) == []
    with store.connect() as conn:
        assert next_due(conn) is None


CONFIG = """
apps:
  erp: {url: "sqlite:///erp.db", change_capture: poll}
  crm: {url: "sqlite:///crm.db"}
mappings:
  - name: A
    local: {app: erp, table: customers, key: id, modified: modified_at}
    integration: {app: crm, table: accounts, key: id, modified: modified_at}
    direction: to_integration
    schedule: every 10m
    fields: [{local: name, integration: name}]
  - name: B
    local: {app: erp, table: customers, key: id, modified: modified_at}
    integration: {app: crm, table: contacts, key: id, modified: modified_at}
    direction: bidirectional
    schedule: every 1m
    fields: [{local: name, integration: name}]
  - name: C
    local: {app: erp, table: orders, key: id, modified: changed}
    integration: {app: crm, table: orders, key: id, modified: modified_at}
    direction: from_integration
    fields: [{local: name, integration: name}]
"""


def plan(store: sa.Engine, text: str = CONFIG) -> Any:
    import yaml

    apply_config(store, parse_config(yaml.safe_load(text), "test.yaml"))
    with store.connect() as conn:
        return capture_plan(active_mappings(conn))


def test_the_plan_follows_the_tables_mappings_read_changes_from(store: sa.Engine) -> None:
    p = plan(store)
    assert list(p) == ["erp"]  # crm is on schedule; C reads only the CRM
    customers = p["erp"].tables[(None, "customers")]
    assert customers.readers == (("A", "local"), ("B", "local")) and customers.period == 60
    assert (None, "orders") not in p["erp"].tables
    assert p["erp"].mappings_of("public", "customers") == {"A", "B"} and p["erp"].mappings_of("public", "x") == set()


def test_polling_probes_fast_after_a_change_and_backs_off_to_the_schedule(store: sa.Engine, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    erp = create_engine("sqlite:///erp.db")
    with erp.begin() as conn:
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, modified_at TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO customers VALUES (1, 'a', '2026-12-06 10:00:00')"))
    source = plan(store)["erp"]
    with store.begin() as conn:  # A synced up to the newest change; B never ran
        set_watermark(conn, "A", "local", "2026-12-06 10:00:00")
    prober = Prober(source, store)
    assert prober.run_due(0.0) == {"B"}  # the first probe wakes the readers behind
    assert prober.run_due(0.1) == set()  # not due yet
    intervals = []
    now = 0.0
    for _ in range(10):  # idle: each probe waits twice as long, up to the shortest schedule (1 minute)
        now = prober.next_at()
        assert prober.run_due(now) == set()
        intervals.append(prober.interval[(None, "customers")])
    assert intervals[0] == 2 * FAST_PROBE_SECONDS and intervals[-1] == 60
    with erp.begin() as conn:
        conn.execute(sa.text("UPDATE customers SET modified_at = '2026-12-06 10:00:01'"))
    assert prober.run_due(prober.next_at()) == {"A", "B"}
    assert prober.interval[(None, "customers")] == FAST_PROBE_SECONDS


def test_slot_names_and_table_filters_are_what_postgresql_and_wal2json_take() -> None:
    assert slot_name("ERP-prod.eu") == "tablesync_erp_prod_eu"
    assert len(slot_name("x" * 100)) == 63
    assert _table_pattern(None, "customers") == "*.customers"
    assert _table_pattern("sales", "order items") == "sales.order\\ items"
    assert _table_pattern("a.b", "c,d") == "a\\.b.c\\,d"


def test_capture_settings_at_their_defaults_leave_stored_definitions_as_they_were(store: sa.Engine) -> None:
    """Definitions stored before change_capture existed keep their digest: applying the same file
    again after an upgrade updates nothing; a slot without log is refused."""
    import yaml

    from tablesync.errors import ConfigError

    plain = CONFIG.replace(", change_capture: poll", "")
    apply_config(store, parse_config(yaml.safe_load(plain), "test.yaml"))
    with store.connect() as conn:
        stored = conn.execute(sa.select(mappings.c.definition).where(mappings.c.name == "A")
                              .order_by(mappings.c.version.desc()).limit(1)).scalar()
    assert "change_capture" not in stored["apps"]["erp"] and "slot" not in stored["apps"]["erp"]
    assert apply_config(store, parse_config(yaml.safe_load(plain), "test.yaml")).unchanged == ["A", "B", "C"]
    logged = CONFIG.replace("change_capture: poll", "change_capture: log, slot: erp_prod")
    assert apply_config(store, parse_config(yaml.safe_load(logged), "test.yaml")).updated == ["A", "B", "C"]
    with pytest.raises(ConfigError, match="slot is a setting of change_capture: log; this app has change_capture: schedule"):
        parse_config(yaml.safe_load(CONFIG.replace("change_capture: poll", "slot: erp_prod")), "test.yaml")


def test_pgoutput_messages_are_read_for_their_table_and_heartbeats() -> None:
    """pgoutput's binary protocol 1: a Relation names an id; Insert, Update, Delete and Truncate
    carry it; a logical message with tablesync's prefix is a heartbeat."""
    from tablesync.apps.changelog import HEARTBEAT_PREFIX, PgOutput

    decoder = PgOutput("pub", frozenset({(None, "customers")}))
    relid = (16385).to_bytes(4, "big")
    other = (16390).to_bytes(4, "big")
    assert decoder.read(b"R" + relid + b"public\0customers\0d" + b"\0\x02") == (None, None)
    assert decoder.read(b"R" + other + b"public\0orders\0d" + b"\0\x01") == (None, None)
    for kind in (b"I", b"U", b"D"):
        assert decoder.read(kind + relid + b"N\0\x02") == (("public", "customers"), None)
        assert decoder.read(kind + other + b"N\0\x01") == (None, None)  # not a mapped table
    assert decoder.read(b"T" + (2).to_bytes(4, "big") + b"\0" + other + relid) == (("public", "customers"), None)
    content = b"beat-1"
    message = b"M" + b"\0" + (123).to_bytes(8, "big") + HEARTBEAT_PREFIX.encode() + b"\0" + len(content).to_bytes(4, "big") + content
    assert decoder.read(message) == (None, "beat-1")
    assert decoder.read(b"B" + bytes(20)) == (None, None)  # begin, commit, …: nothing to tell
