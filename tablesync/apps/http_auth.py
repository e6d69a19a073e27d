"""How tablesync signs in to an HTTP app (`apps: crm: {auth: …}`): none, basic, a bearer token,
or OAuth2 client credentials, the way Dataverse and most SaaS APIs are reached.

Secrets are `${VARIABLE}`s expanded from the environment here, when a process connects; they are
never stored, logged or shown (`config.load` refuses literal ones). OAuth2 tokens are fetched,
cached and renewed before they expire by httpx-auth.
"""

from __future__ import annotations

import httpx
import httpx_auth

from tablesync.config.load import expand_env
from tablesync.config.model import AuthSpec


def http_auth(app: str, auth: AuthSpec | None, env: dict[str, str] | None = None) -> tuple[httpx.Auth | None, dict[str, str]]:
    """The httpx auth and extra headers of an app's sign-in; ConfigError names a missing variable."""
    if auth is None or auth.type == "none":
        return None, {}

    def value(setting: str) -> str:
        return expand_env(str(getattr(auth, setting)), f"app {app}, auth {setting}", env)

    if auth.type == "basic":
        return httpx.BasicAuth(value("username"), value("password")), {}
    if auth.type == "bearer":
        return None, {"Authorization": f"Bearer {value('token')}"}
    extra = {"scope": value("scope")} if auth.scope else {}
    return httpx_auth.OAuth2ClientCredentials(value("token_url"), client_id=value("client_id"),
                                              client_secret=value("client_secret"), **extra), {}
