"""Process settings from the environment (and `.env`), validated once at start.

Every component reads the same `Settings`, so a typo in a URL is reported the same way by the
scheduler, a worker and the CLI, before anything connects anywhere.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tablesync.config.logs import LogFormat, LogLevel
from tablesync.config.schedule import parse_duration
from tablesync.errors import SettingsError


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TABLESYNC_", env_file=".env", extra="ignore")

    store_url: str = "sqlite:///tablesync.db"
    broker_url: str | None = None
    broker_namespace: str = "tablesync"
    # Redis that HTTP apps' request rates (`rate_limit:`) are shared through; unset: a Redis broker_url
    rate_limit_url: str | None = None
    queue: str = "tablesync"
    config: str = "tablesync.yaml"
    worker_metrics_port: int = Field(9191, ge=1, le=65535)
    scheduler_metrics_port: int = Field(9192, ge=1, le=65535)
    listen_metrics_port: int = Field(9193, ge=1, le=65535)
    # `tablesync listen`: a mapping's job is sent this long after the first change of a burst, so
    # that a burst makes one job, not one per change
    listen_debounce_seconds: float = Field(0.15, ge=0, le=5)
    # … and no sooner than this after the mapping's previous job was enqueued: a steady stream of
    # changes runs a mapping at most this often, not once per job length
    listen_min_interval_seconds: float = Field(1.0, ge=0, le=300)
    # how often `tablesync listen` writes a heartbeat into each followed PostgreSQL change log: the
    # slot moves on while the mapped tables are idle, and its lag in seconds is measured
    listen_heartbeat_seconds: float = Field(10.0, gt=0)
    web_host: str = "127.0.0.1"
    web_port: int = Field(8080, ge=1, le=65535)
    web_users: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)  # JSON: {"name": "<Argon2 hash>"}
    web_secret_key: str | None = None  # signs session cookies and API tokens; share it between web replicas
    web_session_hours: float = Field(12.0, gt=0, le=24 * 30)
    web_secure_cookies: bool = False  # true behind HTTPS: the session cookie is sent over HTTPS only
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    chunk_rows: int = Field(50_000, ge=1)  # a first run or full resync of more source rows is split into key ranges
    overlap_seconds: float = Field(5.0, ge=0)
    heartbeat_seconds: float = Field(5.0, gt=0)
    heartbeat_timeout_seconds: float = Field(60.0, gt=0)
    scheduler_poll_seconds: float = Field(1.0, gt=0)
    max_retries: int = Field(5, ge=0, le=100)
    dependency_wait_seconds: float = Field(600.0, ge=0)
    queued_resend_seconds: float = Field(900.0, gt=0)  # a queued job not started by then is sent again
    retention: str = "30d"
    operator: str | None = None
    log_format: LogFormat = "text"
    log_level: LogLevel | None = None  # unset: INFO for services, WARNING for commands

    @field_validator("log_format", mode="before")
    @classmethod
    def _format_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_case(cls, value: object) -> object:
        return (value.strip().upper() or None) if isinstance(value, str) else value

    @field_validator("web_users", mode="before")
    @classmethod
    def _web_users(cls, value: Any) -> Any:
        """Decoded here, not by pydantic-settings, whose failure is a traceback naming no variable."""
        if not isinstance(value, str):
            return value
        if not value.strip():
            return {}
        try:
            users = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at character {exc.pos}): write "
                             '{"name": "<Argon2 hash>", ...}, as `tablesync web-user NAME` prints it') from None
        if not isinstance(users, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in users.items()):
            raise ValueError('expected a JSON object of operator names and Argon2 hashes: {"name": "<hash>", ...}')
        return users

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme.split("+")[0]
        if scheme not in {"sqlite", "postgresql", "postgres"}:
            raise ValueError(
                f"unsupported store {scheme!r}: use postgresql://… (production) or sqlite:///file.db"
            )
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        scheme = urlsplit(value).scheme
        if scheme not in {"redis", "rediss", "amqp", "amqps"}:
            raise ValueError(f"unsupported broker {scheme!r}: use redis://… or amqp://…, or leave it unset")
        return value

    @field_validator("rate_limit_url")
    @classmethod
    def _rate_limit_url(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        if urlsplit(value).scheme not in {"redis", "rediss"}:
            raise ValueError("request rates are shared through Redis: use redis://…, or leave it unset")
        return value

    @property
    def rate_redis_url(self) -> str | None:
        """Where HTTP apps' request rates are shared: rate_limit_url, else a Redis broker's URL."""
        if self.rate_limit_url:
            return self.rate_limit_url
        return self.broker_url if self.broker_url and urlsplit(self.broker_url).scheme in ("redis", "rediss") else None


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "TABLESYNC_" + str(err["loc"][0]).upper() if err["loc"] else "settings"
            lines.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("invalid settings:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
