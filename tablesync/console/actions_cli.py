"""The operator action commands: retry, resolve, uncouple, restore, delete, couple, match.

The CLI only selects couplings and enqueues one job per mapping; the worker checks every
precondition against the live records (so the web console and the CLI behave the same) and
records the outcome in the job, its errors and each record's log.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, TextIO

import sqlalchemy as sa

from tablesync.config.settings import Settings
from tablesync.console import views
from tablesync.console.common import EXIT_OK, SECONDS, bounded, enqueued, operator, store
from tablesync.console.operations import (
    broker_for,
    enqueue_job,
    enqueue_selected,
    select_couplings,
)
from tablesync.errors import UsageError

Add = Callable[..., argparse.ArgumentParser]

SELECTING = {
    "retry": "clear the skip of couplings; their records sync in the next run (or now with --now)",
    "resolve": "synchronize: force the chosen side's values onto the other side, now",
    "uncouple": "remove couplings: their records are no longer synced",
    "restore": "deletion conflicts: re-create the deleted record from the surviving one and re-couple",
    "delete": "deletion conflicts: delete the surviving record from its app (listed first; asks, or --yes) and the coupling",
}


def register(add: Add) -> None:
    for kind, text in SELECTING.items():
        sp = add(kind, _selecting(kind), text)
        sp.add_argument("couplings", nargs="*", type=bounded(int, 1, 2**63 - 1), metavar="COUPLING",
                        help="coupling ids (see `tablesync errors`)")
        sp.add_argument("--all", action="store_true", help="every skipped coupling (of --mapping, if given)")
        sp.add_argument("--mapping", help="the skipped couplings of this mapping")
        sp.add_argument("--group", metavar="SIGNATURE", help="the skipped couplings of an error group (`tablesync errors --group`)")
        if kind == "retry":
            sp.add_argument("--now", action="store_true", help="sync the records in the action's job instead of the next run")
        if kind == "resolve":
            sp.add_argument("--use", choices=["local", "integration"], required=True, help="the side whose values win")
        if kind == "delete":
            sp.add_argument("--yes", action="store_true", help="delete without asking (needed without a terminal)")
        _common(sp)
    sp = add("couple", cmd_couple, "couple two existing records manually (refused if either is coupled)")
    sp.add_argument("mapping")
    sp.add_argument("local_key")
    sp.add_argument("integration_key")
    sp.add_argument("--use", choices=["local", "integration"], help="bidirectional: the side whose values win at once")
    _common(sp)
    sp = add("match", cmd_match, "couple existing uncoupled records by the mapping's match_on fields")
    sp.add_argument("mapping")
    sp.add_argument("--use", choices=["local", "integration"], help="bidirectional: the side whose values win at once")
    _common(sp)


def _common(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--wait", action="store_true", help="block until the job ends and print it; exit 1 if it failed")
    sp.add_argument("--timeout", type=SECONDS, default=600.0, help="seconds --wait waits (default 600)")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--operator", help="who asks (default: $TABLESYNC_OPERATOR or the login user)")


def _selecting(kind: str) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        engine = store(settings)
        with engine.connect() as conn:
            chosen = select_couplings(conn, args.couplings, args.all, args.mapping, args.group)
        if not chosen:
            print("nothing to do: no skipped coupling matches", flush=True)
            return EXIT_OK
        params: dict[str, Any] = {}
        if kind == "retry":
            params["now"] = args.now
        if kind == "resolve":
            params["use"] = args.use
        if kind == "delete":
            _confirm_delete(engine, chosen, args.yes, sys.stderr if args.json else sys.stdout)
        broker = broker_for(settings)
        ids = enqueue_selected(engine, broker, settings, kind, chosen, operator(args, settings), params)
        return enqueued(engine, settings, ids, broker is not None, args.wait, args.timeout, args.json)

    return run


def _confirm_delete(engine: sa.Engine, chosen: dict[str, list[int]], yes: bool, out: TextIO) -> None:
    """Delete records removes records from the apps, often the master copy: say which, app, table
    and key, and have the operator confirm (a terminal's answer, or --yes) before anything is enqueued."""
    preview = views.deletion_preview(engine, chosen)
    doomed = [p for p in preview if p["action"] == "delete"]
    print(f"Delete records: {len(doomed)} record(s) will be deleted from their app, and their couplings removed:", file=out)
    for item in preview:
        print(f"  {views.describe_deletion(item)}", file=out)
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("delete removes records from the apps: confirm with --yes (there is no terminal to ask); "
                         "nothing was deleted")
    try:
        answer = input(f"Delete {len(doomed)} record(s)? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise UsageError("not confirmed: nothing was deleted")


def _enqueue_one(args: argparse.Namespace, settings: Settings, kind: str, params: dict[str, Any]) -> int:
    engine = store(settings)
    broker = broker_for(settings)
    job_id = enqueue_job(engine, broker, settings, args.mapping, kind, operator(args, settings), params)
    return enqueued(engine, settings, [job_id], broker is not None, args.wait, args.timeout, args.json)


def cmd_couple(args: argparse.Namespace, settings: Settings) -> int:
    return _enqueue_one(args, settings, "couple",
                        {"local_key": args.local_key, "integration_key": args.integration_key, "use": args.use})


def cmd_match(args: argparse.Namespace, settings: Settings) -> int:
    return _enqueue_one(args, settings, "match", {"use": args.use})
