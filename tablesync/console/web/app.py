"""The web console's ASGI app: pages, the JSON API, /metrics and /healthz.

Everything but /login, POST /api/token, /healthz, /metrics and the static files needs a logged-in
operator. /metrics and /healthz stay open for Prometheus and load balancers: they carry no
record, key or secret.
"""

from __future__ import annotations

import logging
import secrets
import time
from pathlib import Path

import dramatiq
import sqlalchemy as sa
import swagger_ui_bundle
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.middleware.sessions import SessionMiddleware

from tablesync.config.settings import Settings
from tablesync.console.web import api, pages
from tablesync.console.web.auth import Auth, is_password_hash
from tablesync.console.web.state import WebState
from tablesync.errors import BrokerUnavailable, UnknownMapping, UsageError

log = logging.getLogger("tablesync.web")
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
REQUESTS = Counter("tablesync_web_requests", "HTTP requests the web console answered.", ["method", "route", "status"])
LATENCY = Histogram("tablesync_web_request_duration_seconds", "Time to answer an HTTP request.", ["route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")))


def auth_from(settings: Settings) -> Auth:
    """Refuses plain-text passwords in settings: a hash is what belongs there."""
    plain = sorted(name for name, value in settings.web_users.items() if not is_password_hash(value))
    if plain:
        raise UsageError(f"TABLESYNC_WEB_USERS: the password of {', '.join(plain)} is not an Argon2 hash; "
                         "make one with `tablesync web-user NAME` and store that instead")
    key = settings.web_secret_key
    if not key:
        log.warning("TABLESYNC_WEB_SECRET_KEY is not set: a random key is used, so sessions and API tokens end when "
                    "this process does and are not shared with other web replicas")
        key = secrets.token_urlsafe(32)
    return Auth(users=dict(settings.web_users), secret_key=key, token_hours=settings.web_session_hours)


def create_app(settings: Settings, engine: sa.Engine, broker: dramatiq.Broker | None) -> FastAPI:
    auth = auth_from(settings)
    if not auth.users:
        log.warning("TABLESYNC_WEB_USERS is empty: nobody can log in (add an operator with `tablesync web-user NAME`)")
    app = FastAPI(title="tablesync", version="1", description=(api.__doc__ or "").strip(),
                  openapi_url="/api/openapi.json", docs_url=None, redoc_url=None)
    app.state.web = WebState(settings=settings, engine=engine, broker=broker, auth=auth)
    app.add_middleware(SessionMiddleware, secret_key=auth.secret_key, session_cookie="tablesync_session",
                       max_age=int(settings.web_session_hours * 3600), same_site="lax",
                       https_only=settings.web_secure_cookies)
    app.include_router(api.public)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    # Swagger UI from the swagger-ui-bundle package: the docs page loads nothing from a CDN
    app.mount("/api/docs/static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="swagger")

    @app.get("/api/docs", include_in_schema=False)
    def docs() -> Response:
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="tablesync API",
                                   swagger_js_url="/api/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/api/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/api/docs/static/favicon-32x32.png")

    @app.middleware("http")
    async def measure(request: Request, call_next):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        if "\x00" in request.url.path or "%00" in request.url.query:  # no store or app column can hold a NUL
            response: Response = JSONResponse({"detail": "NUL characters are not allowed in a URL"}, 400)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", None) or "unmatched"  # the template, never the keys in a URL
        REQUESTS.labels(request.method, name, str(response.status_code)).inc()
        LATENCY.labels(name).observe(time.perf_counter() - started)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith("/api/docs"):  # Swagger UI starts itself with an inline script
            response.headers.setdefault("Content-Security-Policy", CSP)
        return response

    @app.exception_handler(pages.LoginRequired)
    async def login_required(request: Request, exc: pages.LoginRequired) -> Response:
        return RedirectResponse("/login?next=" + _quote(exc.target), status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)
        return pages.render(request, "problem.html", request.session.get("user"), exc.status_code, detail=exc.detail)

    @app.exception_handler(UnknownMapping)
    async def unknown_mapping(request: Request, exc: UnknownMapping) -> Response:
        """A mapping name in a path or filter that no `config apply` stored: never an empty page."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, 404)
        return pages.render(request, "problem.html", request.session.get("user"), 404, detail=str(exc))

    @app.exception_handler(UsageError)
    async def bad_usage(request: Request, exc: UsageError) -> Response:
        """What the CLI refuses with exit 2 (a malformed record key, say) is a 400 here, with the same message."""
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": str(exc)}, 400)
        return pages.render(request, "problem.html", request.session.get("user"), 400, detail=str(exc))

    @app.exception_handler(BrokerUnavailable)
    async def broker_down(request: Request, exc: BrokerUnavailable) -> Response:
        """The broker did not take an action's message: the job was marked failed, nothing ran."""
        detail = f"{exc}; the job was marked failed and nothing ran: try again once the broker is up"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, 503)
        return pages.render(request, "problem.html", request.session.get("user"), 503, detail=detail)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if request.url.path.startswith("/api/"):  # FastAPI's own 422, as the OpenAPI document describes it
            return await request_validation_exception_handler(request, exc)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return pages.render(request, "problem.html", request.session.get("user"), 400, detail=problems)

    @app.exception_handler(sa.exc.DataError)
    async def bad_value(request: Request, exc: sa.exc.DataError) -> Response:
        """A value the database refused (a NUL in a string, a number out of range): the
        request's fault, reported as such, never a 500."""
        detail = "a value in the request was refused by the store: " + str(exc.orig).strip().splitlines()[0]
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, 400)
        return pages.render(request, "problem.html", request.session.get("user"), 400, detail=detail)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.DBAPIError:
            return PlainTextResponse("store unreachable\n", 503)
        return PlainTextResponse("ok\n")

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _quote(target: str) -> str:
    from urllib.parse import quote

    return quote(target, safe="")
