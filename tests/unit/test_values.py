"""Schedules, settings, coercion to target columns and canonical hashing."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tablesync.apps.schema import coerce, compatible
from tablesync.apps.values import canonical, content_hash
from tablesync.config.schedule import parse_schedule
from tablesync.config.settings import load_settings
from tablesync.errors import SettingsError

UTC = dt.timezone.utc


def col(type_: sa.types.TypeEngine, name: str = "c") -> sa.Column:  # type: ignore[type-arg]
    return sa.Table("t", sa.MetaData(), sa.Column(name, type_)).c[name]


def test_interval_ticks_are_epoch_aligned_so_replicas_agree() -> None:
    s = parse_schedule("every 30s")
    now = dt.datetime(2026, 1, 1, 12, 0, 47, tzinfo=UTC)
    assert s.latest_tick(now) == dt.datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    assert s.next_tick(now) == dt.datetime(2026, 1, 1, 12, 1, 0, tzinfo=UTC)
    assert parse_schedule("every 5m").interval == 300
    assert parse_schedule("every 2 hours").interval == 7200


def test_cron_schedule() -> None:
    s = parse_schedule("*/5 * * * *")
    now = dt.datetime(2026, 1, 1, 12, 7, 0, tzinfo=UTC)
    assert s.latest_tick(now) == dt.datetime(2026, 1, 1, 12, 5, tzinfo=UTC)
    assert s.latest_tick(dt.datetime(2026, 1, 1, 12, 10, tzinfo=UTC)) == dt.datetime(2026, 1, 1, 12, 10, tzinfo=UTC)
    assert s.period_seconds == 300


@pytest.mark.parametrize("text", ["every 0s", "every day", "*/5 * *", "hourly"])
def test_bad_schedules_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(text)


def test_settings_errors_name_the_variable() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(store_url="mongodb://x", broker_url="kafka://y", worker_metrics_port=0)
    text = str(info.value)
    assert "TABLESYNC_STORE_URL: unsupported store 'mongodb'" in text
    assert "TABLESYNC_BROKER_URL: unsupported broker 'kafka'" in text
    assert "TABLESYNC_WORKER_METRICS_PORT" in text


@pytest.mark.parametrize("value, expected", [
    ("not json", "TABLESYNC_WEB_USERS: not valid JSON"),
    ("[1]", "TABLESYNC_WEB_USERS: expected a JSON object of operator names and Argon2 hashes"),
    ('{"alice": 3}', "TABLESYNC_WEB_USERS: expected a JSON object"),
])
def test_a_web_users_setting_that_is_not_json_names_the_variable(value: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(web_users=value)
    assert expected in str(info.value)


def test_settings_defaults() -> None:
    s = load_settings()
    assert s.store_url.startswith("sqlite") or s.store_url  # env may override in CI
    assert load_settings(broker_url="").broker_url is None


@pytest.mark.parametrize("value, type_, expected", [
    ("42", sa.Integer(), 42),
    (Decimal("3.0"), sa.Integer(), 3),
    (1.5, sa.Numeric(10, 2), Decimal("1.50")),
    (7, sa.String(10), "7"),
    (dt.date(2026, 1, 2), sa.String(20), "2026-01-02"),
    ("yes", sa.Boolean(), True),
    ("2026-01-02T03:04:05", sa.DateTime(), dt.datetime(2026, 1, 2, 3, 4, 5)),
    (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), sa.DateTime(), dt.datetime(2026, 1, 2, 3, 4, 5)),
    ("2f1c6a2e-6c58-4f8e-9d59-0c2b2e1f3a4b", sa.Uuid(), uuid.UUID("2f1c6a2e-6c58-4f8e-9d59-0c2b2e1f3a4b")),
    (None, sa.Integer(), None),
])
def test_coerce_fits_values_to_target_columns(value: object, type_: sa.types.TypeEngine, expected: object) -> None:  # type: ignore[type-arg]
    assert coerce(value, col(type_)) == expected


@pytest.mark.parametrize("value, type_, message", [
    ("abc", sa.Integer(), "cannot convert 'abc' to integer for column c"),
    (1.5, sa.Integer(), "cannot convert 1.5 to integer for column c"),
    ("x" * 11, sa.String(10), "11 characters do not fit c (10 max)"),
    ("maybe", sa.Boolean(), "cannot convert 'maybe' to boolean for column c"),
])
def test_coerce_explains_what_does_not_fit(value: object, type_: sa.types.TypeEngine, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError) as info:
        coerce(value, col(type_))
    assert str(info.value) == message


def test_type_compatibility() -> None:
    assert compatible("integer", "numeric") and compatible("date", "datetime") and compatible("uuid", "string")
    assert not compatible("string", "integer") and not compatible("numeric", "integer") and not compatible("datetime", "date")


def test_canonical_values_ignore_representation_noise() -> None:
    assert canonical(Decimal("1.50")) == canonical(Decimal("1.5")) == "1.5"
    assert canonical(Decimal("2.00")) == canonical(2) == canonical(2.0) == 2
    aware = dt.datetime(2026, 1, 1, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert canonical(aware) == canonical(dt.datetime(2026, 1, 1, 12, 0))
    assert content_hash([1, "a", None]) == content_hash([1, "a", None]) != content_hash([1, "a", ""])


def test_watermarks_round_trip_in_their_own_domain() -> None:
    from tablesync.store.schema import metadata
    from tablesync.store.watermarks import get_watermark, minus_overlap, set_watermark

    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    naive = dt.datetime(2026, 1, 2, 3, 4, 5, 678000)
    aware = naive.replace(tzinfo=UTC)
    with engine.begin() as conn:
        assert get_watermark(conn, "M", "local") is None
        for value in (naive, aware, dt.date(2026, 1, 2), 42):
            set_watermark(conn, "M", "local", value)
            back = get_watermark(conn, "M", "local")
            assert back == value and type(back) is type(value)
            assert (back.tzinfo if isinstance(back, dt.datetime) else None) == getattr(value, "tzinfo", None)
    assert minus_overlap(naive, 5) == naive - dt.timedelta(seconds=5)
    assert minus_overlap(dt.date(2026, 1, 2), 5) == dt.date(2026, 1, 1)
    assert minus_overlap(42, 5) == 42
