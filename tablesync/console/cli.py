"""The `tablesync` command. Exit status: 0 success, 1 a job failed or was refused, 2 bad usage/config."""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tablesync.config.load import load_config
from tablesync.config.logs import configure_logging, redact
from tablesync.config.settings import Settings, get_settings
from tablesync.console import views
from tablesync.console.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PORT,
    POSITIVE,
    SECONDS,
    bounded,
    enqueued,
    operator,
    print_job,
    store,
)
from tablesync.console.render import (
    ago,
    console,
    errors_table,
    jobs_table,
    note_cut,
    parse_iso,
    print_dry_run,
    print_json,
    table,
)
from tablesync.db.engine import create_engine, utcnow
from tablesync.errors import (
    ActionRefused,
    AppError,
    AppUnavailable,
    BrokerUnavailable,
    ConfigError,
    JobRefused,
    Problem,
    SettingsError,
    UsageError,
)

# -- commands ----------------------------------------------------------------------------------

def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from tablesync.store.migrate import current_revision, upgrade

    engine = create_engine(settings.store_url)
    before = current_revision(engine)
    upgrade(engine)
    after = current_revision(engine)
    print(f"store at revision {after}" + ("" if before != after else " (already up to date)"))
    return EXIT_OK


def live_checked(path: str, problems: list[Problem]) -> list[Problem]:
    """Refuse the file if the live check found errors; print its warnings (on stderr) either way."""
    warnings = [p for p in problems if p.severity == "warning"]
    for w in warnings:
        print(f"{path}: warning: {w}", file=sys.stderr)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(path, errors)
    return warnings


def cmd_config_check(args: argparse.Namespace, settings: Settings) -> int:
    from tablesync.apps.live_check import check_live

    path = args.config or settings.config
    cfg = load_config(path)
    warnings = [] if args.offline else live_checked(path, check_live(cfg))
    print(f"{path}: OK ({len(cfg.mappings)} mapping(s), {len(cfg.apps)} app(s)"
          + (", live tables not checked" if args.offline else ", live tables checked")
          + (f", {len(warnings)} warning(s)" if warnings else "") + ")")
    return EXIT_OK


def cmd_config_apply(args: argparse.Namespace, settings: Settings) -> int:
    from tablesync.apps.live_check import check_live
    from tablesync.store.mappings import apply_config

    path = args.config or settings.config
    cfg = load_config(path)
    if not args.skip_live_check:
        live_checked(path, check_live(cfg))
    engine = store(settings)
    result = apply_config(engine, cfg, applied_by=operator(args, settings))
    for label, names in (("created", result.created), ("updated", result.updated),
                         ("unchanged", result.unchanged), ("deactivated", result.deactivated)):
        if names:
            print(f"{label}: {', '.join(names)}")
    from tablesync.scheduler.listen import drop_unused_slots

    for dropped in drop_unused_slots(engine):  # a slot no mapping follows keeps WAL until the disk fills
        print(f"replication slot dropped (no mapping follows it): {dropped}")
    return EXIT_OK


def cmd_mappings(args: argparse.Namespace, settings: Settings) -> int:
    now = utcnow()
    out = views.mapping_objects(store(settings))
    if args.json:
        print_json(out)
        return EXIT_OK
    def when(v: str | None) -> str:
        return ago(parse_iso(v), now) if v else "never"

    def next_run(m: dict[str, Any]) -> str:
        pause = m["paused"]
        return when(m["next_run_at"]) if pause is None else f"paused by {pause['by']}" + (f": {pause['reason']}" if pause["reason"] else "")

    console().print(table("Mappings", ["name", "direction", "schedule", "last run", "status", "next run", "skipped"],
                          [[m["name"], m["direction"], m["schedule"], when(m["last_run_at"]), m["last_status"] or "—",
                            next_run(m), m["skipped"]] for m in out]))
    return EXIT_OK


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    from tablesync.console.operations import set_paused

    who = operator(args, settings)
    changed = set_paused(store(settings), args.mapping, args.command == "pause", who, getattr(args, "reason", None))
    if args.command == "pause":
        print(f"{args.mapping}: paused by {who}; its scheduled runs are skipped until `tablesync resume {args.mapping}`"
              if changed else f"{args.mapping} was already paused (see `tablesync mappings`)")
    else:
        print(f"{args.mapping}: resumed; it runs on its schedule again" if changed else f"{args.mapping} was not paused")
    return EXIT_OK


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    with store(settings).connect() as conn:
        rows, total = views.job_objects(conn, mapping=args.mapping, status=args.status, limit=args.limit)
    if args.json:
        print_json(rows)
    else:
        console().print(jobs_table(rows))
    note_cut(len(rows), total, "jobs", "narrow them with --mapping or --status")
    return EXIT_OK


def cmd_errors(args: argparse.Namespace, settings: Settings) -> int:
    """The coupled data synchronization errors: skipped couplings, with both records checked live."""
    out = views.error_objects(store(settings), args.mapping)
    if args.group:
        return _print_groups(out, args.json)
    if args.json:
        print_json(out)
        return EXIT_OK

    console().print(errors_table(out))
    return EXIT_OK


def _print_groups(errors: list[dict[str, Any]], as_json: bool) -> int:
    """Errors of one mapping, reason and normalised message, with counts: act on a group with --group."""
    out = views.error_groups(errors)
    if as_json:
        print_json(out)
    else:
        console().print(table(f"Error groups ({len(out)}; act on one with --group SIGNATURE)",
                              ["signature", "mapping", "reason", "count", "message", "e.g. coupling"],
                              [[g["signature"], g["mapping"], g["reason"], g["count"], g["message"], g["example_coupling_id"]]
                               for g in out]))
    return EXIT_OK


def cmd_log(args: argparse.Namespace, settings: Settings) -> int:
    """A record's synchronization log, which is also the audit trail of what operators did to it."""
    with store(settings).connect() as conn:
        out = views.log_objects(conn, args.mapping, args.key, args.side)
    if args.json:
        print_json(out)
        return EXIT_OK

    def changes(c: dict[str, Any] | None) -> str:
        return ", ".join(f"{k}: {old!r} → {new!r}" for k, (old, new) in (c or {}).items())

    console().print(table(f"Synchronization log of {args.side} record {args.key} of {args.mapping} ({len(out)} events)",
                          ["when", "job", "kind", "direction", "outcome", "by", "changes / message"],
                          [[ago(parse_iso(r["at"])), r["job_id"], r["kind"], r["direction"], r["outcome"], r["operator"] or "",
                            " · ".join(x for x in (changes(r["changes"]), r["message"] or "") if x)] for r in out]))
    return EXIT_OK


def cmd_couplings(args: argparse.Namespace, settings: Settings) -> int:
    with store(settings).connect() as conn:
        out, total = views.coupling_objects(conn, args.mapping, args.local, args.integration, args.skipped, args.limit)
    if args.json:
        print_json(out)
    else:
        console().print(table(f"Couplings of {args.mapping} ({len(out)}" + (f" of {total}" if total > len(out) else "") + ")",
                              ["coupling", "local key", "integration key", "skipped", "reason", "last synced"],
                              [[c["coupling_id"], c["local_key"], c["integration_key"], "yes" if c["skipped"] else "",
                                c["reason"] or "", ago(parse_iso(c["last_synced_at"]))] for c in out]))
    note_cut(len(out), total, f"couplings of {args.mapping}", "narrow them with --local, --integration or --skipped")
    return EXIT_OK


def cmd_job(args: argparse.Namespace, settings: Settings) -> int:
    obj = views.job_detail(store(settings), args.id)
    if obj is None:
        raise UsageError(f"job {args.id} does not exist (see `tablesync jobs`)")
    if args.json:
        print_json(obj)
        return EXIT_OK
    print_job(obj)
    return EXIT_OK


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from tablesync.console.operations import broker_for, require_active
    from tablesync.sync.run import default_record_side
    from tablesync.worker.enqueue import enqueue_sync

    if args.side and args.record is None:
        raise UsageError("--side says which side --record's key belongs to: give --record KEY too")
    if args.dry_run and args.wait:
        raise UsageError("--dry-run decides a run in this process and enqueues nothing: there is no job to --wait for")
    if args.where is not None and args.record is not None:
        raise UsageError("--where resyncs the records it selects, --record one record: give one of them")
    engine = store(settings)
    with engine.connect() as conn:
        stored = require_active(conn, args.mapping)
        if args.record is not None:  # a composite key as typed ([1, 23]) in the store's form
            args.record = views.record_key(conn, args.mapping, args.side or default_record_side(stored.spec.direction), args.record)
    if args.where is not None:  # refused now, with the source's own words, rather than by the job
        from tablesync.sync.run import check_range

        try:
            check_range(stored, args.where)
        except (AppUnavailable, AppError, JobRefused) as exc:
            raise UsageError(f"--where cannot be checked on mapping {args.mapping}'s source: {exc}") from None
    if args.dry_run:
        return _dry_run(engine, settings, stored, args.json, full=args.full or args.where is not None, record=args.record,
                        side=args.side, where=args.where)
    broker = broker_for(settings)
    params = {"record": args.record, "side": args.side} if args.record is not None else None
    job_id = enqueue_sync(engine, broker, settings, args.mapping, full=args.full or args.where is not None,
                          operator=operator(args, settings), params=params, where=args.where)
    return enqueued(engine, settings, [job_id], broker is not None, args.wait, args.timeout, args.json)


def _dry_run(engine: sa.Engine, settings: Settings, stored: Any, as_json: bool, full: bool, record: str | None,
             side: str | None, where: str | None = None) -> int:
    """Decide a run of the mapping (or of one record) in this process and print what it would do; writes nothing."""
    from tablesync.sync.run import dry_run

    try:
        report = dry_run(engine, settings, stored, full=full, record=record, side=side, where=where)
    except (AppUnavailable, AppError, JobRefused, ActionRefused) as exc:
        print(f"tablesync: dry run of {stored.spec.name} failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        print_json(report.as_dict())
        return EXIT_OK
    print_dry_run(report, stored.spec.name, record, full)
    return EXIT_OK


def cmd_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    from tablesync.config.schedule import parse_duration
    from tablesync.store.retention import cleanup

    try:
        age = parse_duration(args.older_than or settings.retention)
    except ValueError as exc:
        raise UsageError(f"--older-than: {exc}") from None
    removed = cleanup(store(settings), age)
    if args.json:
        print_json(removed)
    else:
        print("removed " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in removed.items()) +
              f" older than {args.older_than or settings.retention} (open errors and their jobs are kept)")
    return EXIT_OK


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    if settings.broker_url is None:
        raise UsageError("TABLESYNC_BROKER_URL is not set: workers need redis://… or amqp://… "
                         "(use `tablesync run` for the all-in-one process)")
    from tablesync.worker.enqueue import queues

    store(settings)
    argv = [sys.executable, "-m", "tablesync.worker.dramatiq_main", "tablesync.worker.entry", "--processes", str(args.processes),
            "--threads", str(args.threads), "--queues", *queues(settings).values()]
    # Dramatiq's exporter serves its metrics and ours (sync/metrics.py, worker/metrics.py) from one multiprocess
    # directory, emptied now so that files of processes from an earlier run never leak in.
    metrics_dir = Path(tempfile.gettempdir()) / f"tablesync-worker-metrics-{settings.worker_metrics_port}"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ.update({"dramatiq_prom_port": str(settings.worker_metrics_port), "dramatiq_prom_db": str(metrics_dir),
                       "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    os.execv(sys.executable, argv)
    return EXIT_OK  # pragma: no cover - execv does not return


def stop_on_signals() -> threading.Event:
    """An event SIGINT and SIGTERM set: how a service process is told to finish what it does and end."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def serve_metrics(serve: Callable[[], object], port: int, variable: str) -> None:
    """Start a process's metrics endpoint; a port that is taken is a usage error naming the setting."""
    try:
        serve()
    except OSError as exc:
        raise UsageError(f"cannot serve metrics on port {port} ({variable}): {exc.strerror}") from None


def cmd_scheduler(args: argparse.Namespace, settings: Settings) -> int:
    from tablesync.scheduler.loop import run_scheduler
    from tablesync.worker.broker import setup_broker

    engine = store(settings)
    broker = setup_broker(settings)  # refused without TABLESYNC_BROKER_URL (SettingsError: exit 2)
    from tablesync.scheduler import metrics

    serve_metrics(lambda: metrics.serve(engine, settings), settings.scheduler_metrics_port, "TABLESYNC_SCHEDULER_METRICS_PORT")
    run_scheduler(engine, broker, settings, stop_on_signals())
    return EXIT_OK


def cmd_listen(args: argparse.Namespace, settings: Settings) -> int:
    from prometheus_client import start_http_server

    from tablesync.scheduler.listen import Listener, drop_unused_slots

    engine = store(settings)
    if args.drop_slots:
        dropped = drop_unused_slots(engine)
        print("dropped: " + ", ".join(dropped) if dropped else "no replication slot to drop: every one is followed")
        return EXIT_OK
    from tablesync.worker.broker import setup_broker
    from tablesync.worker.enqueue import send_stored

    broker = setup_broker(settings)  # refused without TABLESYNC_BROKER_URL (SettingsError: exit 2)
    serve_metrics(lambda: start_http_server(settings.listen_metrics_port), settings.listen_metrics_port,
                  "TABLESYNC_LISTEN_METRICS_PORT")
    Listener(engine, lambda job_id: send_stored(engine, broker, settings, job_id), settings).run(stop_on_signals())
    return EXIT_OK


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from tablesync.console.inprocess import InProcess

    engine = store(settings)
    stop = stop_on_signals()
    with InProcess(engine, settings, threads=args.threads) as app:
        app.start_scheduler(stop)
        if args.listen:
            app.start_listener(stop)
        print(f"tablesync running: scheduler + {args.threads} worker thread(s){' + listen' if args.listen else ''}; "
              "Ctrl-C to stop")
        stop.wait()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from tablesync.console.demo import run_demo

    return run_demo(args.dir, rows=args.rows)


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from tablesync.console.operations import broker_for
    from tablesync.console.web.app import create_app

    app = create_app(settings, store(settings), broker_for(settings))
    host, port = args.host or settings.web_host, args.port or settings.web_port
    try:
        uvicorn.run(app, host=host, port=port, log_config=None, proxy_headers=True, forwarded_allow_ips=args.forwarded_allow_ips)
    except SystemExit as exc:  # uvicorn exits when it cannot bind
        raise UsageError(f"cannot serve the web console on {host}:{port} (TABLESYNC_WEB_HOST/PORT)") from exc
    return EXIT_OK


def cmd_web_user(args: argparse.Namespace, settings: Settings) -> int:
    """An operator's entry for TABLESYNC_WEB_USERS: the password is hashed here and never stored."""
    import json

    from tablesync.console.web.auth import hash_password

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise UsageError("--password-stdin: standard input holds no password (one line is read)")
    elif not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: pipe it in with --password-stdin "
                         f"(printf '%s\\n' \"$PASSWORD\" | tablesync web-user {args.name} --password-stdin)")
    else:
        try:
            password = getpass.getpass(f"password for {args.name}: ")
            if getpass.getpass("again: ") != password:
                raise UsageError("the two passwords differ")
        except EOFError:
            raise UsageError("no password given (end of input)") from None
    if len(password) < 8:
        raise UsageError("a password needs at least 8 characters")
    users = {**settings.web_users, args.name: hash_password(password)}
    print(json.dumps({args.name: users[args.name]}) if args.only else json.dumps(users))
    return EXIT_OK


def cmd_demo_apps(args: argparse.Namespace, settings: Settings) -> int:
    import httpx

    from tablesync.console import demo_apps

    crm_var = "CRM_ODATA_URL" if args.odata else "CRM_DATABASE_URL"
    urls = {}
    for name, flag, what in (("ERP_DATABASE_URL", args.erp_url, "the demo ERP's database URL"),
                             (crm_var, args.crm_url, "the demo CRM's OData service root" if args.odata
                              else "the demo CRM's database URL")):
        urls[name] = flag or os.environ.get(name)
        if not urls[name]:
            raise UsageError(f"{name} is not set (or pass --{name.split('_')[0].lower()}-url): {what}")
    erp, crm = urls["ERP_DATABASE_URL"], urls[crm_var]
    if args.odata and not crm.startswith(("http://", "https://")):
        raise UsageError(f"demo apps: --odata needs the CRM's OData service root (http:// or https://), not {redact(crm)!r}")
    try:
        if args.action == "seed":
            made = demo_apps.seed(erp, None if args.odata else crm, args.rows)  # the OData CRM fills itself
            print("demo apps created and filled" if made else "demo apps already exist: left as they are")
            return EXIT_OK
        return demo_apps.run_forever(erp, crm, args.every)
    except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
        raise UsageError(f"demo apps: cannot reach the database: {redact(str(exc.orig).strip().splitlines()[0])}") from None
    except httpx.HTTPError as exc:
        raise UsageError(f"demo apps: the CRM's OData service at {redact(crm)} failed: {exc}") from None


# -- parser ------------------------------------------------------------------------------------

DEMO_MIN_ROWS = 20


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tablesync", description="Keep tables of two applications in sync.")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace, Settings], int], help: str, parent: Any = sub) -> argparse.ArgumentParser:
        sp = parent.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        return sp

    db = sub.add_parser("db", help="store schema").add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    add("upgrade", cmd_db_upgrade, "create or upgrade the store's tables (idempotent)", db)

    cfg = sub.add_parser("config", help="validate and store mappings").add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    sp = add("check", cmd_config_check, "validate tablesync.yaml against the live tables", cfg)
    sp.add_argument("--config", help="file (default: $TABLESYNC_CONFIG or tablesync.yaml)")
    sp.add_argument("--offline", action="store_true", help="check the file only, do not connect to the apps")
    sp = add("apply", cmd_config_apply, "validate and store the mappings (new version per changed mapping)", cfg)
    sp.add_argument("--config")
    sp.add_argument("--skip-live-check", action="store_true", help="do not reflect the apps' tables first")
    sp.add_argument("--operator")

    sp = add("mappings", cmd_mappings, "list mappings with their last and next run")
    sp.add_argument("--json", action="store_true")

    sp = add("pause", cmd_pause, "stop a mapping's scheduled runs (the running job finishes; manual syncs still run)")
    sp.add_argument("mapping")
    sp.add_argument("--reason", help="why, shown with the mapping and on each skipped tick")
    sp.add_argument("--operator")
    sp = add("resume", cmd_pause, "run a paused mapping on its schedule again")
    sp.add_argument("mapping")
    sp.add_argument("--operator")

    sp = add("jobs", cmd_jobs, "list jobs, newest first")
    sp.add_argument("--mapping")
    sp.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "abandoned", "dropped"])
    sp.add_argument("--limit", type=POSITIVE, default=50, help="at most this many, newest first (default 50)")
    sp.add_argument("--json", action="store_true")

    sp = add("job", cmd_job, "one job with its errors")
    sp.add_argument("id", type=bounded(int, 1, 2**63 - 1), help="a job id (see `tablesync jobs`)")
    sp.add_argument("--json", action="store_true")

    sp = add("errors", cmd_errors, "coupled data synchronization errors: skipped couplings, records checked live")
    sp.add_argument("--mapping")
    sp.add_argument("--group", action="store_true", help="group by error signature, with counts")
    sp.add_argument("--json", action="store_true")

    sp = add("log", cmd_log, "a record's synchronization log and audit trail, oldest first")
    sp.add_argument("mapping")
    sp.add_argument("key")
    sp.add_argument("--side", choices=["local", "integration"], default="local", help="the side KEY belongs to (default local)")
    sp.add_argument("--json", action="store_true")

    sp = add("couplings", cmd_couplings, "couplings of a mapping")
    sp.add_argument("mapping")
    sp.add_argument("--local", help="only the coupling of this local key")
    sp.add_argument("--integration", help="only the coupling of this integration key")
    sp.add_argument("--skipped", action="store_true", help="only skipped couplings")
    sp.add_argument("--limit", type=POSITIVE, default=1000, help="at most this many, oldest first (default 1000)")
    sp.add_argument("--json", action="store_true")

    sp = add("sync", cmd_sync, "enqueue a sync run of a mapping now")
    sp.add_argument("mapping")
    sp.add_argument("--full", action="store_true", help="ignore watermarks: compare every row")
    sp.add_argument("--record", metavar="KEY", help="sync only this record, now")
    sp.add_argument("--where", "--range", metavar="CONDITION", help="resync only the source rows this SQL condition "
                    "selects, e.g. \"id BETWEEN 100 AND 900\" (implies --full; checked on the source first)")
    sp.add_argument("--dry-run", action="store_true", help="print what a run would do (counts and samples); write nothing")
    sp.add_argument("--side", choices=["local", "integration"], help="the side --record's key belongs to (default: local, "
                    "or integration for from_integration mappings)")
    sp.add_argument("--wait", action="store_true", help="block until the job ends; exit 1 if it failed")
    sp.add_argument("--timeout", type=SECONDS, default=3600.0, help="seconds --wait waits (default 3600)")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--operator")

    from tablesync.console.actions_cli import register as register_actions

    register_actions(add)

    sp = add("cleanup", cmd_cleanup, "retention: remove old jobs, errors and record events (open errors are kept)")
    sp.add_argument("--older-than", metavar="DURATION", help="e.g. 30d, 12h (default: $TABLESYNC_RETENTION, 30d)")
    sp.add_argument("--json", action="store_true")

    # services log at INFO (a line per job) unless TABLESYNC_LOG_LEVEL says otherwise
    sp = add("worker", cmd_worker, "run Dramatiq worker processes")
    sp.add_argument("--processes", type=bounded(int, 1, 256), default=os.cpu_count() or 1,
                    help="worker processes (default: the number of CPUs)")
    sp.add_argument("--threads", type=bounded(int, 1, 256), default=4, help="threads per process (default 4)")
    sp.set_defaults(service=True)

    add("scheduler", cmd_scheduler, "enqueue due syncs and reap abandoned jobs (safe as several replicas)").set_defaults(service=True)
    sp = add("listen", cmd_listen, "wake mappings within a second of a change in their source (change_capture: log or "
             "poll; safe as several replicas)")
    sp.add_argument("--drop-slots", action="store_true",
                    help="drop the replication slots tablesync made that no active mapping follows, and exit")
    sp.set_defaults(service=True)

    sp = add("run", cmd_run, "scheduler and worker threads in one process (in-process broker if none is set)")
    sp.add_argument("--threads", type=bounded(int, 1, 256), default=2, help="worker threads (default 2)")
    sp.add_argument("--listen", action="store_true", help="also run `tablesync listen` as a thread (change_capture: log or poll)")
    sp.set_defaults(service=True)

    sp = add("web", cmd_web, "serve the web console and its JSON API (/api/, OpenAPI at /api/openapi.json)")
    sp.add_argument("--host", help="bind address (default $TABLESYNC_WEB_HOST, 127.0.0.1)")
    sp.add_argument("--port", type=PORT, help="port (default $TABLESYNC_WEB_PORT, 8080); /metrics and /healthz are served here too")
    sp.add_argument("--forwarded-allow-ips", default="127.0.0.1",
                    help="proxies whose X-Forwarded-* headers are trusted (default 127.0.0.1)")
    sp.set_defaults(service=True)

    sp = add("web-user", cmd_web_user, "hash an operator's password for TABLESYNC_WEB_USERS (prints the new JSON value)")
    sp.add_argument("name")
    sp.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sp.add_argument("--only", action="store_true", help="print only this operator's entry, not the whole setting")

    sp = add("demo", cmd_demo, "run a self-contained demo on SQLite apps (no server needed)")
    sp.add_argument("--dir", default="tablesync-demo", help="where the demo's databases go (default ./tablesync-demo)")
    sp.add_argument("--rows", type=bounded(int, DEMO_MIN_ROWS, 1_000_000), default=300,
                    help=f"ERP customers (default 300, at least {DEMO_MIN_ROWS}: the demo edits customers 1 to 10)")

    sp = add("demo-apps", cmd_demo_apps, "the demo's ERP and CRM on real databases (docker-compose): seed them, "
             "or edit them like users do")
    sp.add_argument("action", choices=("seed", "traffic"), help="seed: create and fill (once); traffic: edit every few seconds")
    sp.add_argument("--erp-url", help="default $ERP_DATABASE_URL")
    sp.add_argument("--crm-url", help="default $CRM_DATABASE_URL, or $CRM_ODATA_URL with --odata")
    sp.add_argument("--odata", action="store_true",
                    help="the CRM is the demo's OData service (compose/odata-crm), which makes and fills its own tables")
    sp.add_argument("--rows", type=bounded(int, DEMO_MIN_ROWS, 1_000_000), default=300, help="customers to seed (default 300)")
    sp.add_argument("--every", type=SECONDS, default=5.0, help="seconds between two rounds of edits (default 5)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = logging.INFO if args.verbose or getattr(args, "service", False) else logging.WARNING
    configure_logging("text", quiet)
    try:
        settings = get_settings()
        configure_logging(settings.log_format, settings.log_level or quiet)
        return int(args.fn(args, settings))
    except SettingsError as exc:
        print(f"tablesync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"tablesync: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokerUnavailable as exc:
        print(f"tablesync: {exc}; the job was marked failed, nothing ran: run the command again once the broker is up",
              file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
