"""What a driver error from an app's database means for a sync: the app is away (retry the job
later), or it refused something that is not about one record (fail the job with its message).

Every AppTable method translates its own driver errors through here, so no caller wraps app calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import sqlalchemy as sa

from tablesync.errors import AppError, AppUnavailable

P = ParamSpec("P")
R = TypeVar("R")

_CONNECTION_MARKERS = ("connection", "server closed", "timeout", "timed out", "could not connect", "lost", "gone away",
                       "terminat")


def is_connection_error(exc: BaseException) -> bool:
    """True when the failure is the app's (down, timed out), not the row's."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return False
    text = str(exc.orig).lower()
    return any(m in text for m in _CONNECTION_MARKERS)


def app_failure(exc: sa.exc.DBAPIError, where: str | None = None) -> AppUnavailable | AppError:
    """Connection trouble is retried later; any other statement failure fails the job as it is.
    `where` names the app (and table), so the job's message says which app failed."""
    text = str(exc.orig).strip()
    reason = text.splitlines()[0] if text else type(exc.orig).__name__
    reason = f"{where}: {reason}" if where else reason
    return AppUnavailable(reason) if is_connection_error(exc) else AppError(reason)


def _where(args: tuple[object, ...]) -> str | None:
    """What a method's `self` (an AppTable) says about where it failed: "app crm (accounts)"."""
    label = getattr(args[0], "label", None) if args else None
    return label if isinstance(label, str) else None


def translated(fn: Callable[P, R]) -> Callable[P, R]:
    """A method whose driver errors become AppUnavailable or AppError, naming its app."""
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except sa.exc.DBAPIError as exc:
            raise app_failure(exc, _where(args)) from exc
    return call


def translated_pages(fn: Callable[P, Iterator[R]]) -> Callable[P, Iterator[R]]:
    """`translated` for a generator: each page's read is translated as it is pulled."""
    @functools.wraps(fn)
    def pages(*args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        it = fn(*args, **kwargs)
        while True:
            try:
                page = next(it)
            except StopIteration:
                return
            except sa.exc.DBAPIError as exc:
                raise app_failure(exc, _where(args)) from exc
            yield page
    return pages


def unavailable(where: str, exc: sa.exc.DBAPIError) -> AppUnavailable:
    """A connection lost in the middle of a write, naming the app (never with a password)."""
    text = str(exc.orig).strip()
    return AppUnavailable(f"{where}: connection lost while writing: {text.splitlines()[0] if text else type(exc.orig).__name__}")
