"""The JSON API's shapes: SPEC §5's objects, as OpenAPI documents and validates them."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Side = Literal["local", "integration"]
Reason = Literal["update_conflict", "deletion_conflict", "failures"]
JobStatus = Literal["queued", "running", "succeeded", "failed", "abandoned", "dropped"]
SelectingKind = Literal["retry", "resolve", "uncouple", "restore", "delete"]
Id = Annotated[int, Field(ge=1, le=2**63 - 1)]  # a store id: a bigint


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # JSON as written: 0 is not false, "1" is not 1

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        """No store or app column holds a NUL: refused here, not by a worker halfway through a job."""
        if isinstance(data, dict) and any(isinstance(v, str) and "\x00" in v for v in data.values()):
            raise ValueError("NUL characters are not allowed in text values")
        return data


class TokenIn(Strict):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)


class TokenOut(BaseModel):
    token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="seconds")


class Me(BaseModel):
    name: str


class PauseOut(BaseModel):
    by: str | None
    at: str
    reason: str | None


class MappingOut(BaseModel):
    name: str
    direction: str
    schedule: str
    last_run_at: str | None
    last_status: str | None
    next_run_at: str | None  # null while paused
    skipped: int
    paused: PauseOut | None


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(None, max_length=500)


class JobOut(BaseModel):
    id: int
    mapping: str
    kind: str
    direction: str | None
    status: str
    operator: str | None
    trigger: str | None = Field(None, description="operator, schedule, or change (woken by `tablesync listen`)")
    enqueued_at: str | None
    started_at: str | None
    finished_at: str | None
    inserted: int
    modified: int
    deleted: int
    unchanged: int
    coupled: int
    uncoupled: int
    conflicts: int
    skipped: int
    failed: int
    message: str | None


class JobErrorOut(BaseModel):
    id: int
    direction: str | None
    source_key: str | None
    destination_key: str | None
    message: str
    detail: str | None
    created_at: str | None


class ChunkOut(BaseModel):
    number: int  # 0: the finalisation
    low: str | None
    high: str | None
    status: str
    rows: int
    rows_estimated: int
    attempts: int
    worker: str | None
    started_at: str | None
    finished_at: str | None
    error: str | None


class ProgressOut(BaseModel):
    chunks: int
    chunks_done: int
    chunks_running: int
    chunks_failed: int
    rows: int
    rows_estimated: int
    ratio: float
    eta_seconds: float | None
    finalisation: str
    items: list[ChunkOut]


class JobDetailOut(JobOut):
    errors: list[JobErrorOut]
    progress: ProgressOut | None = None  # a chunked run's


class JobPage(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[JobOut]


class ErrorOut(BaseModel):
    coupling_id: int
    mapping: str
    local_key: str | None
    integration_key: str | None
    local_exists: bool | None
    integration_exists: bool | None
    reason: str | None
    message: str | None
    failed_on: str | None
    signature: str
    allowed_actions: list[str] = Field(description="actions whose preconditions hold now, judged on the live records and "
                                                   "the mapping's direction: retry, resolve:local, resolve:integration, "
                                                   "uncouple, restore, delete")


class ErrorGroupOut(BaseModel):
    signature: str
    mapping: str
    reason: str | None
    message: str
    count: int
    example_coupling_id: int


class LogEntryOut(BaseModel):
    job_id: int | None
    kind: str | None
    direction: str | None
    status: str | None
    outcome: str
    message: str | None
    operator: str | None
    at: str | None
    changes: dict[str, Any] | None
    local_key: str | None
    integration_key: str | None


class CouplingOut(BaseModel):
    coupling_id: int
    mapping: str
    local_key: str | None
    integration_key: str | None
    skipped: bool
    reason: str | None
    last_synced_at: str | None


class SyncIn(Strict):
    full: bool = False
    record: str | None = Field(None, min_length=1, max_length=400, description="sync only this record, by key")
    side: Side | None = Field(None, description="the side `record` is a key of (default: the mapping's source side)")


class ActionIn(Strict):
    couplings: list[Id] = Field(default_factory=list, max_length=10_000, description="coupling ids")
    all: bool = Field(False, description="every skipped coupling (of `mapping`, if given)")
    mapping: str | None = Field(None, min_length=1, max_length=100)
    group: str | None = Field(None, min_length=1, max_length=100, description="an error group's signature")
    use: Side | None = Field(None, description="resolve: the side whose values win")
    now: bool = Field(False, description="retry: sync the records in the action's job")
    confirm: bool = Field(False, description="delete: required, `true`; delete removes the surviving records from their "
                                             "apps (a 400 without it lists them)")


class CoupleIn(Strict):
    local_key: str = Field(min_length=1, max_length=400)
    integration_key: str = Field(min_length=1, max_length=400)
    use: Side | None = None


class MatchIn(Strict):
    use: Side | None = None


class Problem(BaseModel):
    detail: str
