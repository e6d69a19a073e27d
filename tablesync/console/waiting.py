"""`--wait`: block until a job ends, and say why when nothing picks it up.

A job can sit queued for reasons the operator can fix: nothing sends it (it waits in the store and
no scheduler or `tablesync run` is up), no worker of this store listens on its queue and broker,
or it waits behind others. The processes table (store.processes) tells which, after a few
seconds, in one line on stderr, instead of a silent wait until the timeout.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeRemainingColumn

from tablesync.config.settings import Settings
from tablesync.console import views
from tablesync.console.render import progress_line
from tablesync.store.jobs import FINISHED, get_job
from tablesync.store.processes import RUNNERS, SENDERS, live, liveness_window
from tablesync.worker.enqueue import broker_label

FIRST_LOOK = 5.0  # seconds before a queued job is explained
STILL_QUEUED = 30.0  # seconds before a queued job with live workers is mentioned


def wait_for_job(engine: sa.Engine, settings: Settings, job_id: int, timeout: float) -> dict[str, Any] | None:
    """The finished job object, or None after `timeout` (having said why, if it was known)."""
    started = time.monotonic()
    said: set[str] = set()
    with ProgressReport() as report:
        while True:
            obj = views.job_detail(engine, job_id)
            assert obj is not None
            report.show(obj)
            if obj["status"] in FINISHED:
                return obj
            if not _waited(engine, settings, obj, job_id, started, timeout, said):
                return None
            time.sleep(0.2)


def _waited(engine: sa.Engine, settings: Settings, obj: dict[str, Any], job_id: int, started: float, timeout: float,
            said: set[str]) -> bool:
    """One look at an unfinished job: False once `timeout` passed; says why a job stays queued."""
    waited = time.monotonic() - started
    if waited > timeout:
        print(f"tablesync: job {job_id} still {obj['status']} after {timeout:.0f}s", file=sys.stderr)
        return False
    if obj["status"] == "queued" and waited >= FIRST_LOOK:
        with engine.connect() as conn:
            why = why_queued(conn, settings, job_id, waited)
        if why and why not in said:
            said.add(why)
            print(f"tablesync: {why}", file=sys.stderr, flush=True)
    return True


class ProgressReport:
    """A chunked run's progress while `--wait` waits, on stderr (stdout stays the job's one
    document): a progress bar on a terminal, else a plain line whenever it moved, at most every
    few seconds."""

    PLAIN_EVERY = 5.0

    def __init__(self) -> None:
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = ""
        self._last_at = 0.0

    def show(self, obj: dict[str, Any]) -> None:
        p = obj.get("progress")
        if not p:
            return
        if sys.stderr.isatty():
            if self._bar is None:
                self._bar = Progress(TextColumn("job {task.fields[job]}"), BarColumn(), TaskProgressColumn(),
                                     TextColumn("{task.fields[chunks]}"), TimeRemainingColumn(),
                                     console=Console(stderr=True), transient=False)
                self._bar.start()
                self._task = self._bar.add_task("run", total=max(p["rows_estimated"], 1), job=obj["id"], chunks="")
            assert self._task is not None
            self._bar.update(self._task, completed=p["rows_estimated"] * p["ratio"],
                             chunks=f"{p['chunks_done']}/{p['chunks']} chunks")
            return
        line = progress_line(obj)
        if line != self._last_line and (time.monotonic() - self._last_at >= self.PLAIN_EVERY
                                        or obj["status"] in FINISHED):
            print(f"tablesync: {line}", file=sys.stderr, flush=True)
            self._last_line, self._last_at = line, time.monotonic()

    def __enter__(self) -> "ProgressReport":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def senders_alive(conn: sa.Connection, settings: Settings) -> bool:
    """Whether a scheduler or `tablesync run` is up to send the jobs waiting in this store."""
    return bool(live(conn, SENDERS, liveness_window(settings.heartbeat_seconds)))


def why_queued(conn: sa.Connection, settings: Settings, job_id: int, waited: float) -> str | None:
    """Why job `job_id` is still queued, from the live processes of this store; None if it is
    simply about to run."""
    job = get_job(conn, job_id)
    if job is None or job.status != "queued":
        return None
    within = liveness_window(settings.heartbeat_seconds)
    if job.sent_at is None:
        if senders_alive(conn, settings):
            return None  # a scheduler or `tablesync run` sends it on its next pass
        return (f"job {job_id} waits in the store and nothing sends it: no scheduler and no `tablesync run` is running "
                "on this store. Start `tablesync run` here (all in one), or a scheduler and workers with a broker "
                "(TABLESYNC_BROKER_URL)")
    ours = broker_label(settings)
    runners = live(conn, RUNNERS, within)
    listening = [p for p in runners if p.queue == settings.queue and p.broker == ours]
    if listening:
        if waited < STILL_QUEUED:
            return None
        return (f"job {job_id} is still queued after {waited:.0f}s though {len(listening)} worker process(es) listen on "
                f"queue {settings.queue}: it waits behind other jobs, or for a depends_on mapping to sync first")
    hint = ("start `tablesync worker` with the same TABLESYNC_STORE_URL, TABLESYNC_BROKER_URL and TABLESYNC_QUEUE "
            "(a worker on another store takes the message and finds no such job)")
    if runners:
        seen = ", ".join(sorted({f"queue {p.queue} of {p.broker}" for p in runners}))
        return f"no worker of this store listens on queue {settings.queue} of {ours}; its workers listen on {seen}: {hint}"
    return f"no worker of this store is running (none reported in the last {within:.0f}s): {hint}"
