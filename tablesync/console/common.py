"""What every command module of the CLI shares: exit statuses, the store, the operator's name,
argument types, and what an enqueueing command prints. Command modules import this, never
`console.cli` (which imports them, and also runs as `__main__`)."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from tablesync.config.settings import Settings
from tablesync.console.render import console, jobs_table, print_json, progress_line, table
from tablesync.console.waiting import senders_alive, wait_for_job
from tablesync.db.engine import create_engine
from tablesync.errors import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def store(settings: Settings) -> sa.Engine:
    """The store, refused with a clear error when it cannot be reached or is not migrated."""
    from tablesync.store.migrate import is_up_to_date  # Alembic, only for the commands that need the store

    engine = create_engine(settings.store_url)
    try:
        ok = is_up_to_date(engine)
    except sa.exc.OperationalError as exc:
        raise UsageError(f"cannot reach the store {settings.store_url.split('@')[-1]}: {str(exc.orig).strip().splitlines()[0]}") from None
    if not ok:
        raise UsageError("the store's schema is missing or outdated: run `tablesync db upgrade`")
    return engine


def operator(args: argparse.Namespace, settings: Settings) -> str:
    """Who asks: --operator, $TABLESYNC_OPERATOR or the login user (each record's log shows it)."""
    return getattr(args, "operator", None) or settings.operator or getpass.getuser()


def enqueued(engine: sa.Engine, settings: Settings, ids: list[int], sent: bool, wait: bool, timeout: float,
             as_json: bool) -> int:
    """What every enqueueing command prints: the job ids, or with --wait each finished job."""
    if not sent and ids and not _senders_alive(engine, settings):
        print(f"tablesync: TABLESYNC_BROKER_URL is not set: job(s) {', '.join(map(str, ids))} wait in the store until "
              "a scheduler or `tablesync run` on this store sends them to a worker; none is running now", file=sys.stderr)
    if not wait:
        for i in ids:
            print(i)
        return EXIT_OK
    status = EXIT_OK
    for i in ids:
        status = max(status, wait_and_print(engine, settings, i, timeout, as_json))
    return status


def _senders_alive(engine: sa.Engine, settings: Settings) -> bool:
    with engine.connect() as conn:
        return senders_alive(conn, settings)


def wait_and_print(engine: sa.Engine, settings: Settings, job_id: int, timeout: float, as_json: bool) -> int:
    """--wait: block until the job ends, print it; exit 1 unless it succeeded."""
    obj = wait_for_job(engine, settings, job_id, timeout)
    if obj is None:
        return EXIT_FAILED
    if as_json:
        print_json(obj)
    else:
        print_job(obj)
    return EXIT_OK if obj["status"] == "succeeded" else EXIT_FAILED


def print_job(obj: dict[str, Any]) -> None:
    out = console()
    out.print(jobs_table([obj], title=f"Job {obj['id']}"))
    progress = obj.get("progress")
    if progress:
        out.print(progress_line(obj))
        out.print(table(f"Chunks ({progress['chunks']} and the finalisation)",
                        ["chunk", "keys above", "up to", "status", "rows", "attempts", "worker", "error"],
                        [[str(c["number"] or "final"), c["low"] or "—", c["high"] or "—", c["status"],
                          f"{c['rows']:,}" + (f" / {c['rows_estimated']:,}" if c["number"] else ""), str(c["attempts"]),
                          c["worker"] or "—", c["error"] or ""] for c in progress["items"]]))
    if obj["errors"]:
        out.print(table(f"Errors ({len(obj['errors'])})", ["direction", "source key", "destination key", "message"],
                        [[e["direction"], e["source_key"], e["destination_key"], e["message"]] for e in obj["errors"]]))


def bounded(kind: type, low: float, high: float | None = None) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` within [low, high], refused with the value quoted."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") from None
        if value != value or value < low or (high is not None and value > high):  # NaN included
            span = f"at least {_number(low)}" if high is None else f"from {_number(low)} to {_number(high)}"
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: give a number {span}")
        return value

    return parse


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


POSITIVE = bounded(int, 1)
SECONDS = bounded(float, 0.1, 7 * 86400)
PORT = bounded(int, 1, 65535)

