"""The console's HTML pages: server-rendered, whole without JavaScript.

Every form that changes something posts the session's CSRF token; every action goes through
`console.operations`, the CLI's own path, and lands the operator on the page of the job it made.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from tablesync.console import views
from tablesync.console.operations import MAX_ID, SELECTING_KINDS, enqueue_job, enqueue_selected, select_couplings, set_paused
from tablesync.console.render import ago, parse_iso
from tablesync.console.web.auth import LoginError, csrf_ok, csrf_token
from tablesync.console.web.state import WebState, state
from tablesync.errors import UsageError
from tablesync.store.jobs import FINISHED, get_job

templates = Jinja2Templates(directory=str(FilePath(__file__).parent / "templates"))
ACTION_TITLES = {"retry": "Retry", "resolve": "Synchronize", "resolve:local": "Synchronize (local wins)",
                 "resolve:integration": "Synchronize (integration wins)", "uncouple": "Remove coupling",
                 "restore": "Restore records", "delete": "Delete records"}
PRECONDITIONS = {"retry": "needs both records to exist",
                 "resolve:local": "needs both records to exist, and a mapping that writes integration records",
                 "resolve:integration": "needs both records to exist, and a mapping that writes local records",
                 "restore": "needs exactly one of the two records deleted, on a side the mapping writes",
                 "delete": "needs exactly one of the two records deleted", "uncouple": ""}
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "abandoned", "dropped")
PAGE_SIZE = 50
ERROR_ROWS = 500  # rows the errors page lists; beyond that, filters and groups act on the rest


class LoginRequired(Exception):
    """Raised by `page_user`; the app answers it with a redirect to the login page."""

    def __init__(self, target: str) -> None:
        self.target = target


def page_user(request: Request) -> str:
    name = request.session.get("user")
    if not isinstance(name, str) or name not in state(request).auth.users:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return name


User = Annotated[str, Depends(page_user)]
Web = Annotated[WebState, Depends(state)]
router = APIRouter(include_in_schema=False)


def _ago(value: str | None) -> str:
    return ago(parse_iso(value)) if value else "never"


def _duration(job: dict[str, Any]) -> str:
    started, finished = parse_iso(job["started_at"]), parse_iso(job["finished_at"])
    if started is None:
        return ""
    seconds = ((finished or datetime.now(timezone.utc)) - started).total_seconds()
    return f"{seconds:.2f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


templates.env.filters.update(ago=_ago, duration=_duration)
templates.env.globals.update(action_titles=ACTION_TITLES, preconditions=PRECONDITIONS)


def render(request: Request, template: str, user: str | None, status_code: int = 200, **context: Any) -> HTMLResponse:
    flashes = request.session.pop("flash", [])
    return templates.TemplateResponse(request, template, {"user": user, "csrf": csrf_token(request.session), "flashes": flashes,
                                                      **context}, status_code=status_code)


def flash(request: Request, kind: str, text: str) -> None:
    request.session.setdefault("flash", []).append({"kind": kind, "text": text})


def _safe_next(target: str | None) -> str:
    """Only a path on this site: a login link must not bounce an operator elsewhere (browsers read
    `//host` and `/\\host` as another site)."""
    if not target or not target.startswith("/") or target[1:2] in ("/", "\\") or urlsplit(target).netloc:
        return "/"
    return target


def _check_csrf(request: Request, token: str | None) -> None:
    if not csrf_ok(request.session, token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "the form's CSRF token is missing or stale: reload the page")


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status.HTTP_303_SEE_OTHER)


# -- login ---------------------------------------------------------------------------------------

@router.get("/login")
def login_form(request: Request, web: Web, next: Annotated[str | None, Query(max_length=2000)] = None) -> Response:
    return render(request, "login.html", None, next=_safe_next(next), name="", no_users=not web.auth.users)


@router.post("/login")
def login(request: Request, web: Web, username: Annotated[str, Form(max_length=100)],
          password: Annotated[str, Form(max_length=1000)], csrf_token: Annotated[str | None, Form()] = None,
          next: Annotated[str | None, Form(max_length=2000)] = None) -> Response:
    _check_csrf(request, csrf_token)
    try:
        name = web.auth.check(username, password)
    except LoginError as exc:
        flash(request, "error", str(exc))
        return render(request, "login.html", None, status.HTTP_401_UNAUTHORIZED, next=_safe_next(next), name=username,
                      no_users=not web.auth.users)
    request.session.clear()  # a new session (and CSRF token) for the new identity
    request.session["user"] = name
    return _see(_safe_next(next))


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    _check_csrf(request, csrf_token)
    request.session.clear()
    return _see("/login")


# -- mappings ------------------------------------------------------------------------------------

@router.get("/")
def mappings(request: Request, user: User, web: Web) -> Response:
    return render(request, "mappings.html", user, mappings=views.mapping_objects(web.engine))


@router.post("/mappings/{name}/sync")
def sync_now(request: Request, name: str, user: User, web: Web, csrf_token: Annotated[str | None, Form()] = None,
             full: Annotated[bool, Form()] = False) -> Response:
    _check_csrf(request, csrf_token)
    try:
        job_id = enqueue_job(web.engine, web.broker, web.settings, name, "full_sync" if full else "sync", user, {"full": full})
    except UsageError as exc:
        flash(request, "error", str(exc))
        return _see("/")
    return _see(f"/jobs/{job_id}")


@router.post("/mappings/{name}/pause")
def pause_mapping(request: Request, name: str, user: User, web: Web, csrf_token: Annotated[str | None, Form()] = None,
                  reason: Annotated[str | None, Form(max_length=500)] = None) -> Response:
    _check_csrf(request, csrf_token)
    changed = set_paused(web.engine, name, True, user, (reason or "").strip() or None)
    flash(request, "info", f"{name} paused: its scheduled runs are skipped until you resume it" if changed
          else f"{name} was already paused")
    return _see("/")


@router.post("/mappings/{name}/resume")
def resume_mapping(request: Request, name: str, user: User, web: Web, csrf_token: Annotated[str | None, Form()] = None) -> Response:
    _check_csrf(request, csrf_token)
    changed = set_paused(web.engine, name, False, user)
    flash(request, "info", f"{name} resumed" if changed else f"{name} was not paused")
    return _see("/")


# -- jobs ----------------------------------------------------------------------------------------

def _when(value: str | None, field: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"{field}: not a date and time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@router.get("/jobs")
def jobs(request: Request, user: User, web: Web, mapping: Annotated[str | None, Query(max_length=100)] = None,
         status_: Annotated[str | None, Query(alias="status", max_length=20)] = None,
         since: Annotated[str | None, Query(max_length=40)] = None, until: Annotated[str | None, Query(max_length=40)] = None,
         page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    if status_ and status_ not in JOB_STATUSES:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"status: one of {', '.join(JOB_STATUSES)}")
    with web.engine.connect() as conn:
        items, total = views.job_objects(conn, mapping or None, status_ or None, _when(since, "since"), _when(until, "until"),
                                         PAGE_SIZE, (page - 1) * PAGE_SIZE)
    filters = {k: v for k, v in {"mapping": mapping, "status": status_, "since": since, "until": until}.items() if v}
    pages = max(1, -(-total // PAGE_SIZE))
    link = lambda p: "/jobs?" + urlencode({**filters, "page": p})  # noqa: E731
    return render(request, "jobs.html", user, jobs=items, total=total, page=page, pages=pages, filters=filters,
                  statuses=JOB_STATUSES, names=views.mapping_names(web.engine),
                  newer=link(page - 1) if page > 1 else None, older=link(page + 1) if page < pages else None)


@router.get("/jobs/{job_id}")
def job(request: Request, job_id: Annotated[int, Path(ge=1, le=MAX_ID)], user: User, web: Web) -> Response:
    obj = views.job_detail(web.engine, job_id)
    if obj is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"job {job_id} does not exist")
    with web.engine.connect() as conn:
        row = get_job(conn, job_id)
    params = dict(row.params or {}) if row is not None else {}  # what an action was given: its couplings, its side
    return render(request, "job.html", user, job=obj, params=params, finished=obj["status"] in FINISHED,
                  sides=views.mapping_sides(web.engine))


# -- coupled data synchronization errors ---------------------------------------------------------

@router.get("/errors")
def errors(request: Request, user: User, web: Web, mapping: Annotated[str | None, Query(max_length=100)] = None,
           reason: Annotated[str | None, Query(max_length=40)] = None, group: Annotated[str | None, Query(max_length=100)] = None,
           view: Annotated[str, Query(pattern="^(rows|groups)$")] = "rows") -> Response:
    if reason and reason not in views.REASONS:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"reason: one of {', '.join(views.REASONS)}")
    found = views.errors_with_actions(web.engine, mapping or None, reason or None)
    rows = [dict(e, allowed=set(e["allowed_actions"])) for e in found if not group or e["signature"] == group]
    group_allowed: dict[str, set[str]] = {}  # what every member of a group allows
    for e in found:
        allowed = set(e["allowed_actions"])
        group_allowed[e["signature"]] = group_allowed.get(e["signature"], allowed) & allowed
    return render(request, "errors.html", user, errors=rows[:ERROR_ROWS], total=len(rows), groups=views.error_groups(found),
                  view=view, group_allowed=group_allowed, retryable=[e for e in rows if "retry" in e["allowed"]],
                  filters={"mapping": mapping or "", "reason": reason or "", "group": group or ""},
                  names=views.mapping_names(web.engine), reasons=views.REASONS, sides=views.mapping_sides(web.engine))


@router.post("/actions/{kind}")
@router.post("/actions/{kind}/{side}")
def act(request: Request, kind: str, user: User, web: Web, side: str | None = None, csrf_token: Annotated[str | None, Form()] = None,
        coupling: Annotated[list[int] | None, Form()] = None, only: Annotated[int | None, Form()] = None,
        group: Annotated[str | None, Form(max_length=100)] = None, mapping: Annotated[str | None, Form(max_length=100)] = None,
        all_: Annotated[bool, Form(alias="all")] = False, use: Annotated[str | None, Form(max_length=20)] = None,
        back: Annotated[str | None, Form(max_length=2000)] = None, confirm: Annotated[bool, Form()] = False) -> Response:
    """A button of the errors page: on one row (`only`), the ticked rows, a group or all. Delete
    records first shows what it would remove and enqueues only once the operator confirms."""
    _check_csrf(request, csrf_token)
    back_to = _safe_next(back or "/errors")
    use = side or use
    if kind not in SELECTING_KINDS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no action {kind!r}")
    if kind == "resolve" and use not in ("local", "integration"):
        flash(request, "error", "Synchronize needs a side: local or integration")
        return _see(back_to)
    ids = [only] if only is not None else (coupling or [])
    if not ids and not (all_ or group):
        flash(request, "error", f"{ACTION_TITLES[kind]}: select at least one row")
        return _see(back_to)
    try:
        with web.engine.connect() as conn:
            chosen = select_couplings(conn, ids, all_, mapping or None, group or None)
        refused = _refused(web, f"resolve:{use}" if kind == "resolve" else kind, chosen) if ids or group else None
        if refused:
            flash(request, "error", refused)
            return _see(back_to)
        if kind == "delete" and not confirm:
            return render(request, "confirm_delete.html", user, preview=views.deletion_preview(web.engine, chosen),
                          ids=[i for ids in chosen.values() for i in ids], back=back_to)
        params = {"now": True} if kind == "retry" else {"use": use} if kind == "resolve" else {}
        job_ids = enqueue_selected(web.engine, web.broker, web.settings, kind, chosen, user, params)
    except UsageError as exc:
        flash(request, "error", str(exc))
        return _see(back_to)
    if not job_ids:
        flash(request, "info", "nothing to do: no skipped coupling matches")
        return _see(back_to)
    if len(job_ids) > 1:
        flash(request, "info", f"{ACTION_TITLES[kind]}: jobs {', '.join(map(str, job_ids))} enqueued, one per mapping")
    return _see(f"/jobs/{job_ids[0]}")


def _refused(web: WebState, action: str, chosen: dict[str, list[int]]) -> str | None:
    """Why the ticked rows do not all allow `action`, judged on the live records as the page
    showed them (the worker checks again when it runs)."""
    wanted = {i for ids in chosen.values() for i in ids}
    bad = [e["coupling_id"] for m in chosen for e in views.errors_with_actions(web.engine, m)
           if e["coupling_id"] in wanted and action not in e["allowed_actions"]]
    if not bad:
        return None
    return (f"{ACTION_TITLES[action]} {PRECONDITIONS[action]}: not so for coupling {', '.join(map(str, sorted(bad)))}; "
            "nothing was done")


# -- record log ----------------------------------------------------------------------------------

@router.get("/records/{mapping}/{side}/{key:path}")
def record_log(request: Request, mapping: str, side: str, key: str, user: User, web: Web) -> Response:
    if side not in views.SIDES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "side: local or integration")
    with web.engine.connect() as conn:
        entries = views.log_objects(conn, mapping, key, side)
    return render(request, "record.html", user, mapping=mapping, side=side, key=key, entries=entries)
