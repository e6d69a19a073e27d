"""The JSON API under /api/: every page's data and every action, for scripts and other tools.

Callers authenticate with a bearer token from POST /api/token, or with the console's session
cookie; a state change on the cookie must carry the page's CSRF token in X-CSRF-Token (a bearer
token is never sent by a browser on its own, so it needs none).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BeforeValidator

from tablesync.console import views
from tablesync.console.operations import MAX_ID, enqueue_job, enqueue_selected, require_active, select_couplings, set_paused
from tablesync.console.web.auth import LoginError, csrf_ok
from tablesync.console.web.models import (
    ActionIn,
    CoupleIn,
    CouplingOut,
    ErrorGroupOut,
    ErrorOut,
    JobDetailOut,
    JobOut,
    JobPage,
    JobStatus,
    LogEntryOut,
    MappingOut,
    MatchIn,
    Me,
    PauseIn,
    Problem,
    Reason,
    SelectingKind,
    Side,
    SyncIn,
    TokenIn,
    TokenOut,
)
from tablesync.console.web.state import WebState, state
from tablesync.errors import UnknownMapping, UsageError


def _iso_only(value: object) -> object:
    """A date and time written as ISO 8601, not the Unix seconds pydantic would also take."""
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("expected an ISO 8601 date and time, e.g. 2026-12-01T08:00:00Z")
    return value


When = Annotated[datetime, BeforeValidator(_iso_only)]
bearer = HTTPBearer(auto_error=False, description="a token from POST /api/token")
MAPPING = Annotated[str, Path(min_length=1, max_length=100)]
KEY = Annotated[str, Path(min_length=1, max_length=400)]
PROBLEMS = {400: {"model": Problem}, 401: {"model": Problem}, 403: {"model": Problem}, 404: {"model": Problem},
            503: {"model": Problem, "description": "the broker did not take the job: it was marked failed, nothing ran"}}


def operator(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    """The logged-in operator: from a bearer token, else from the session cookie (with the CSRF
    header on a state change)."""
    web = state(request)
    if credentials is not None:
        name = web.auth.token_user(credentials.credentials)
        if name is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid or expired token", {"WWW-Authenticate": "Bearer"})
        return name
    name = request.session.get("user")
    if not isinstance(name, str) or name not in web.auth.users:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "log in: POST /api/token, then send Authorization: Bearer TOKEN",
                            {"WWW-Authenticate": "Bearer"})
    if request.method not in ("GET", "HEAD", "OPTIONS") and not csrf_ok(request.session, request.headers.get("x-csrf-token")):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong X-CSRF-Token header")
    return name


Operator = Annotated[str, Depends(operator)]
Web = Annotated[WebState, Depends(state)]
public = APIRouter(prefix="/api", tags=["login"])
router = APIRouter(prefix="/api", responses=PROBLEMS)  # type: ignore[arg-type]


@public.post("/token", response_model=TokenOut,
             responses={400: {"model": Problem}, 401: {"model": Problem}, 429: {"model": Problem}})
def token(body: TokenIn, web: Web) -> TokenOut:
    """A bearer token for the API, valid for TABLESYNC_WEB_SESSION_HOURS."""
    try:
        name = web.auth.check(body.username, body.password)
    except LoginError as exc:
        code = status.HTTP_429_TOO_MANY_REQUESTS if "too many" in str(exc) else status.HTTP_401_UNAUTHORIZED
        raise HTTPException(code, str(exc)) from None
    return TokenOut(token=web.auth.issue_token(name), expires_in=int(web.auth.token_hours * 3600))


@router.get("/me", response_model=Me, tags=["login"])
def me(user: Operator) -> Me:
    return Me(name=user)


@router.get("/mappings", response_model=list[MappingOut], tags=["mappings"])
def mappings(user: Operator, web: Web) -> list[dict]:  # type: ignore[type-arg]
    """The mappings overview: status, last and next run, skipped couplings."""
    return views.mapping_objects(web.engine)


def _known(web: WebState, name: str) -> None:
    """An active mapping, else 404 (unknown, or deactivated) before anything is enqueued."""
    try:
        with web.engine.connect() as conn:
            require_active(conn, name)
    except UsageError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


def _jobs(web: WebState, ids: list[int]) -> list[dict]:  # type: ignore[type-arg]
    return [views.job_detail(web.engine, i) for i in ids]  # type: ignore[misc]


@router.post("/mappings/{name}/sync", response_model=JobOut, status_code=202, tags=["mappings"])
def sync_now(name: MAPPING, body: SyncIn, user: Operator, web: Web) -> dict:  # type: ignore[type-arg]
    """Sync now: enqueue a run of the mapping (`full` ignores watermarks; `record` syncs one record)."""
    _known(web, name)
    params = {"full": body.full, **({"record": body.record, "side": body.side} if body.record else {})}
    job_id = enqueue_job(web.engine, web.broker, web.settings, name, "full_sync" if body.full else "sync", user, params)
    return _jobs(web, [job_id])[0]


@router.post("/mappings/{name}/pause", response_model=MappingOut, tags=["mappings"])
def pause_mapping(name: MAPPING, body: PauseIn, user: Operator, web: Web) -> dict:  # type: ignore[type-arg]
    """Pause the mapping's schedule (who and why are kept); the running job finishes. Idempotent."""
    _known(web, name)
    set_paused(web.engine, name, True, user, body.reason)
    return next(m for m in views.mapping_objects(web.engine) if m["name"] == name)


@router.post("/mappings/{name}/resume", response_model=MappingOut, tags=["mappings"])
def resume_mapping(name: MAPPING, user: Operator, web: Web) -> dict:  # type: ignore[type-arg]
    """Run the mapping on its schedule again. Idempotent."""
    _known(web, name)
    set_paused(web.engine, name, False, user)
    return next(m for m in views.mapping_objects(web.engine) if m["name"] == name)


@router.post("/mappings/{name}/couple", response_model=JobOut, status_code=202, tags=["actions"])
def couple(name: MAPPING, body: CoupleIn, user: Operator, web: Web) -> dict:  # type: ignore[type-arg]
    """Couple two existing records manually (refused by the worker if either is coupled)."""
    _known(web, name)
    job_id = enqueue_job(web.engine, web.broker, web.settings, name, "couple", user, body.model_dump())
    return _jobs(web, [job_id])[0]


@router.post("/mappings/{name}/match", response_model=JobOut, status_code=202, tags=["actions"])
def match(name: MAPPING, body: MatchIn, user: Operator, web: Web) -> dict:  # type: ignore[type-arg]
    """Couple existing uncoupled records by the mapping's match_on fields."""
    _known(web, name)
    job_id = enqueue_job(web.engine, web.broker, web.settings, name, "match", user, body.model_dump())
    return _jobs(web, [job_id])[0]


@router.get("/jobs", response_model=JobPage, tags=["jobs"])
def jobs(user: Operator, web: Web,
         mapping: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
         status_: Annotated[JobStatus | None, Query(alias="status")] = None,
         since: Annotated[When | None, Query(description="enqueued at or after (ISO 8601)")] = None,
         until: Annotated[When | None, Query(description="enqueued before (ISO 8601)")] = None,
         limit: Annotated[int, Query(ge=1, le=500)] = 50,
         offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict:  # type: ignore[type-arg]
    """Jobs newest first, filtered and paginated."""
    with web.engine.connect() as conn:
        items, total = views.job_objects(conn, mapping, status_, since, until, limit, offset)
    return {"total": total, "limit": limit, "offset": offset, "items": items}


@router.get("/jobs/{job_id}", response_model=JobDetailOut, tags=["jobs"])
def job(job_id: Annotated[int, Path(ge=1, le=MAX_ID)], user: Operator, web: Web) -> dict:  # type: ignore[type-arg]
    """One job with its counters, timings and per-record errors."""
    obj = views.job_detail(web.engine, job_id)
    if obj is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} does not exist")
    return obj


@router.get("/errors", response_model=list[ErrorOut], tags=["errors"])
def errors(user: Operator, web: Web, mapping: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
           reason: Reason | None = None,
           group: Annotated[str | None, Query(min_length=1, max_length=100, description="an error group's signature")] = None,
           ) -> list[dict]:  # type: ignore[type-arg]
    """The coupled data synchronization errors, each with the actions its live records allow."""
    return [e for e in views.errors_with_actions(web.engine, mapping, reason) if group is None or e["signature"] == group]


@router.get("/errors/groups", response_model=list[ErrorGroupOut], tags=["errors"])
def error_groups(user: Operator, web: Web, mapping: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
                 reason: Reason | None = None) -> list[dict]:  # type: ignore[type-arg]
    """The errors grouped by signature (mapping, reason and message without its values)."""
    return views.error_groups(views.error_objects(web.engine, mapping, reason))


@router.post("/actions/{kind}", response_model=list[JobOut], status_code=202, tags=["actions"])
def action(kind: SelectingKind, body: ActionIn, user: Operator, web: Web) -> list[dict]:  # type: ignore[type-arg]
    """Retry, resolve (Synchronize, with `use`), uncouple, restore or delete the selected couplings:
    ids, a group, a mapping's or all skipped couplings. One job per mapping; the worker checks
    every precondition against the live records and refuses with a message in the job."""
    if kind == "resolve" and body.use is None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "resolve needs `use`: local or integration")
    try:
        with web.engine.connect() as conn:
            chosen = select_couplings(conn, body.couplings, body.all, body.mapping, body.group)
        if kind == "delete" and not body.confirm:
            preview = views.deletion_preview(web.engine, chosen)
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "delete removes records from the apps; nothing was done. "
                                "Send \"confirm\": true to delete: " + "; ".join(map(views.describe_deletion, preview)))
        params = {"now": body.now} if kind == "retry" else {"use": body.use} if kind == "resolve" else {}
        return _jobs(web, enqueue_selected(web.engine, web.broker, web.settings, kind, chosen, user, params))
    except UnknownMapping:
        raise
    except UsageError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from None


@router.get("/couplings/{name}", response_model=list[CouplingOut], tags=["records"])
def couplings(name: MAPPING, response: Response, user: Operator, web: Web,
              local: Annotated[str | None, Query(min_length=1, max_length=400)] = None,
              integration: Annotated[str | None, Query(min_length=1, max_length=400)] = None,
              skipped: bool = False, limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:  # type: ignore[type-arg]
    """A mapping's couplings, by either side's key, oldest first: at most `limit` (default 100).
    The `X-Total-Count` header says how many match in all, so a cut list never passes for a whole one."""
    with web.engine.connect() as conn:
        out, total = views.coupling_objects(conn, name, local, integration, skipped, limit)
    response.headers["X-Total-Count"] = str(total)
    return out


@router.get("/records/{name}/{side}/{key:path}", response_model=list[LogEntryOut], tags=["records"])
def record_log(name: MAPPING, side: Side, key: KEY, user: Operator, web: Web) -> list[dict]:  # type: ignore[type-arg]
    """A record's synchronization log, oldest first: also the audit trail of what operators did to it."""
    with web.engine.connect() as conn:
        return views.log_objects(conn, name, key, side)
