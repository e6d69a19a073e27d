"""The operator action commands: retry, resolve, uncouple, restore, delete, couple, match.

The CLI only selects couplings and enqueues one job per mapping; the worker checks every
precondition against the live records (so the web console and the CLI behave the same) and
records the outcome in the job, its errors and each record's log.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from console.cli import _operator, _store, _wait_and_print
from console.errors import EXIT_FAILED, EXIT_OK
from console.operations import (
    broker_for,
    enqueue_job,
    enqueue_selected,
    select_couplings,
)
from store.settings import Settings

Add = Callable[..., argparse.ArgumentParser]

SELECTING = {
    "retry": "clear the skip of couplings; their records sync in the next run (or now with --now)",
    "resolve": "synchronize: force the chosen side's values onto the other side, now",
    "uncouple": "remove couplings: their records are no longer synced",
    "restore": "deletion conflicts: re-create the deleted record from the surviving one and re-couple",
    "delete": "deletion conflicts: delete the surviving record and the coupling",
}


def register(add: Add) -> None:
    for kind, text in SELECTING.items():
        sp = add(kind, _selecting(kind), text)
        sp.add_argument("couplings", nargs="*", type=int, metavar="COUPLING", help="coupling ids (see `tablesync errors`)")
        sp.add_argument("--all", action="store_true", help="every skipped coupling (of --mapping, if given)")
        sp.add_argument("--mapping", help="the skipped couplings of this mapping")
        sp.add_argument("--group", metavar="SIGNATURE", help="the skipped couplings of an error group (`tablesync errors --group`)")
        if kind == "retry":
            sp.add_argument("--now", action="store_true", help="sync the records in the action's job instead of the next run")
        if kind == "resolve":
            sp.add_argument("--use", choices=["local", "integration"], required=True, help="the side whose values win")
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
    sp.add_argument("--timeout", type=float, default=600.0, help="seconds --wait waits (default 600)")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--operator", help="who asks (default: $TABLESYNC_OPERATOR or the login user)")


def _selecting(kind: str) -> Callable[[argparse.Namespace, Settings], int]:
    def run(args: argparse.Namespace, settings: Settings) -> int:
        engine = _store(settings)
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
        ids = enqueue_selected(engine, broker_for(settings), settings, kind, chosen, _operator(args, settings), params)
        return _finish(engine, ids, args)

    return run


def _enqueue(engine: sa.Engine, settings: Settings, mapping: str, kind: str, args: argparse.Namespace,
             params: dict[str, Any]) -> int:
    return enqueue_job(engine, broker_for(settings), settings, mapping, kind, _operator(args, settings), params)


def _finish(engine: sa.Engine, ids: list[int], args: argparse.Namespace) -> int:
    if not args.wait:
        for i in ids:
            print(i)
        return EXIT_OK
    status = EXIT_OK
    for i in ids:
        status = max(status, _wait_and_print(engine, i, args.timeout, args.json))
    return EXIT_FAILED if status else EXIT_OK


def cmd_couple(args: argparse.Namespace, settings: Settings) -> int:
    engine = _store(settings)
    params = {"local_key": args.local_key, "integration_key": args.integration_key, "use": args.use}
    return _finish(engine, [_enqueue(engine, settings, args.mapping, "couple", args, params)], args)


def cmd_match(args: argparse.Namespace, settings: Settings) -> int:
    engine = _store(settings)
    return _finish(engine, [_enqueue(engine, settings, args.mapping, "match", args, {"use": args.use})], args)
