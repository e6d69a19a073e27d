"""Scheduler and Dramatiq worker threads in one process: `tablesync run` and the demo.

Uses the configured broker if there is one, else Dramatiq's in-process broker; either way the jobs
go through the same actors and job rows as a multi-machine install. Without a broker, the jobs
other processes ask for (`tablesync sync`, `retry`, … on the same store) wait in the store, and
this process's scheduler sends them to its own workers (`worker.enqueue.send_waiting`).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import dramatiq
import sqlalchemy as sa

from tablesync.config.settings import Settings
from tablesync.store.jobs import FINISHED, get_job
from tablesync.worker import gc_policy
from tablesync.worker.broker import IDLE_POLL_MS, setup_broker
from tablesync.worker.enqueue import queues


class InProcess:
    def __init__(self, store: sa.Engine, settings: Settings, threads: int = 2):
        self.store = store
        self.settings = settings
        gc_policy.tune()  # this process runs jobs
        self.broker = setup_broker(settings, in_process_ok=True)
        import tablesync.worker.actors  # noqa: F401  (declares the actors on the broker just installed)

        self.worker = dramatiq.Worker(self.broker, worker_threads=threads, queues=set(queues(settings).values()), worker_timeout=IDLE_POLL_MS)
        self._scheduler: threading.Thread | None = None
        self._listener: threading.Thread | None = None
        self._stop = threading.Event()

    def __enter__(self) -> "InProcess":
        self.worker.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self._stop.set()
        for thread in (self._scheduler, self._listener):
            if thread is not None:
                thread.join(timeout=10)
        self.worker.stop()

    def start_scheduler(self, stop: threading.Event | None = None) -> None:
        from tablesync.scheduler.loop import run_scheduler

        self._stop = stop or self._stop
        self._scheduler = threading.Thread(target=run_scheduler, args=(self.store, self.broker, self.settings, self._stop, "run"),
                                           name="scheduler", daemon=True)
        self._scheduler.start()

    def start_listener(self, stop: threading.Event | None = None) -> None:
        """`tablesync listen` as a thread of this process (`tablesync run --listen`)."""
        from tablesync.scheduler.listen import Listener
        from tablesync.worker.enqueue import send_stored

        self._stop = stop or self._stop
        listener = Listener(self.store, lambda job_id: send_stored(self.store, self.broker, self.settings, job_id), self.settings)
        self._listener = threading.Thread(target=listener.run, args=(self._stop,), name="listen", daemon=True)
        self._listener.start()

    def wait_job(self, job_id: int, timeout: float = 300.0) -> str:
        """Block until the job has a final status, and return it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.store.connect() as conn:
                job = get_job(conn, job_id)
            if job is not None and job.status in FINISHED:
                return str(job.status)
            time.sleep(0.05)
        raise TimeoutError(f"job {job_id} did not finish within {timeout:.0f}s")
