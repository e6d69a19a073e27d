"""What every request handler shares: settings, the store, the broker, the login checker."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dramatiq
import sqlalchemy as sa
from fastapi import Request

from tablesync.config.settings import Settings
from tablesync.console.web.auth import Auth


@dataclass
class WebState:
    settings: Settings
    engine: sa.Engine
    broker: dramatiq.Broker | None  # None: jobs wait in the store for a scheduler or `tablesync run`
    auth: Auth


def state(request: Request) -> WebState:
    return request.app.state.web  # type: ignore[no-any-return]


def session(request: Request) -> dict[str, Any]:
    return request.session  # type: ignore[no-any-return]
