"""Bulk writes to an app that isolate bad rows by splitting the failed batch in halves.

A batch that fails is rolled back and retried as two halves, recursively, so one bad row among
5,000 costs about 2·log2(5000) ≈ 25 extra statements instead of 5,000 single-row writes. Errors
that are about the connection, not the row, abort the job instead (the app is down: retry later).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from tablesync.apps.failures import is_connection_error, unavailable

T = TypeVar("T")


@dataclass
class Failure(Generic[T]):
    item: T
    message: str
    detail: str
    conflict: bool = False  # the app refused it because the record changed since it was read (a stale version)


def split_write(
    engine: sa.Engine,
    where: str,
    items: Sequence[T],
    write: Callable[[sa.Connection, Sequence[T]], Sequence[Any] | None],
    prepare: Callable[[sa.Connection], None] = lambda conn: None,
) -> tuple[list[tuple[T, Any]], list[Failure[T]]]:
    """Write `items`; return (item, per-item result) for those that landed and the failures."""
    done: list[tuple[T, Any]] = []
    failures: list[Failure[T]] = []
    stack: list[Sequence[T]] = [items] if items else []
    while stack:
        part = stack.pop()
        try:
            with engine.begin() as conn:
                prepare(conn)
                results = write(conn, part)
        except sa.exc.DBAPIError as exc:
            if is_connection_error(exc):
                raise unavailable(where, exc) from exc
            if len(part) == 1:
                failures.append(Failure(part[0], _message(exc), str(exc.orig)))
            else:
                mid = len(part) // 2
                stack.append(part[mid:])
                stack.append(part[:mid])
            continue
        except (sa.exc.StatementError, ValueError, TypeError) as exc:
            if len(part) == 1:
                failures.append(Failure(part[0], _message(exc), repr(exc)))
            else:
                mid = len(part) // 2
                stack.append(part[mid:])
                stack.append(part[:mid])
            continue
        done.extend(zip(part, results if results is not None else [None] * len(part)))
    return done, failures


def _message(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    return f"{type(orig).__name__}: {first}"[:500]
