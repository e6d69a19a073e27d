"""A process's row in the store's processes table, beaten from a daemon thread.

Schedulers, Dramatiq worker processes and `tablesync run` each keep one, so that `--wait` can tell
an operator that no worker of this store listens on a queue (store.processes). A failed beat is
only logged: presence is advice, never a condition of work.
"""

from __future__ import annotations

import logging
import threading

import dramatiq
import sqlalchemy as sa

from tablesync.config.settings import Settings
from tablesync.db.engine import utcnow
from tablesync.store.processes import beat, forget_dead, remove
from tablesync.worker.enqueue import broker_label

log = logging.getLogger("tablesync.presence")


class Presence:
    def __init__(self, store: sa.Engine, settings: Settings, role: str, queue: str | None = None) -> None:
        self.store, self.role, self.queue = store, role, queue
        self.broker = broker_label(settings)
        self.every = settings.heartbeat_seconds
        self.started_at = utcnow()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"presence-{role}", daemon=True)

    def start(self) -> "Presence":
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        try:
            with self.store.begin() as conn:
                beat(conn, self.role, self.queue, self.broker, self.started_at)
                if self.role != "worker":  # schedulers tidy rows of processes killed without a clean stop
                    forget_dead(conn, 3600)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("could not record this %s process in the store: %s", self.role, str(exc).splitlines()[0])

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            with self.store.begin() as conn:
                remove(conn)
        except sa.exc.SQLAlchemyError:
            pass  # the row ages out


class PresenceMiddleware(dramatiq.Middleware):
    """Each Dramatiq worker process records itself once its worker has booted, and leaves at shutdown."""

    def __init__(self, store: sa.Engine, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self.presence: Presence | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        self.presence = Presence(self.store, self.settings, "worker", self.settings.queue).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        if self.presence is not None:
            self.presence.stop()
