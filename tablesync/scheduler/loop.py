"""The scheduler process: enqueue due ticks every poll, send jobs waiting in the store, resend and
reap every few seconds."""

from __future__ import annotations

import logging
import threading
import time

import dramatiq
import sqlalchemy as sa

from tablesync.config.schedule import parse_duration
from tablesync.config.settings import Settings
from tablesync.errors import BrokerUnavailable
from tablesync.scheduler.reaper import reap, reap_chunks, resend_after, resend_queued
from tablesync.scheduler.ticks import TickCache, enqueue_due
from tablesync.store.retention import cleanup
from tablesync.worker.enqueue import CHUNK_ACTOR, send_job, send_stored, send_waiting
from tablesync.worker.presence import Presence

log = logging.getLogger("tablesync.scheduler")
MAINTENANCE_EVERY = 5.0
CLEANUP_EVERY = 86_400.0  # retention runs at start and then daily


def run_scheduler(store: sa.Engine, broker: dramatiq.Broker, settings: Settings, stop: threading.Event,
                  role: str = "scheduler") -> None:
    def send(job_id: int) -> None:
        send_stored(store, broker, settings, job_id)

    def send_chunk(job_id: int) -> None:
        send_job(broker, settings, job_id, CHUNK_ACTOR)

    cache = TickCache()
    last_maintenance = 0.0
    last_cleanup: float | None = None
    broker_down = False
    presence = Presence(store, settings, role, settings.queue if role == "run" else None).start()
    log.info("scheduler started (poll every %.1fs)", settings.scheduler_poll_seconds)
    while not stop.is_set():
        try:
            sent = enqueue_due(store, send, cache=cache) + send_waiting(store, send)
            if broker_down and sent:  # a send went through: the broker takes messages again
                log.warning("the broker is back: jobs that waited in the store were sent")
                broker_down = False
            if time.monotonic() - last_maintenance >= MAINTENANCE_EVERY:
                last_maintenance = time.monotonic()
                reap(store, send, settings.heartbeat_timeout_seconds)
                reap_chunks(store, send_chunk, settings.heartbeat_timeout_seconds)
                resend_queued(store, send, resend_after(settings))
            if last_cleanup is None or time.monotonic() - last_cleanup >= CLEANUP_EVERY:
                last_cleanup = time.monotonic()
                removed = cleanup(store, parse_duration(settings.retention))
                log.info("retention (%s): removed %s", settings.retention,
                         ", ".join(f"{n} {k}" for k, n in removed.items()))
        except BrokerUnavailable as exc:
            if not broker_down:  # one line per outage, not one per poll
                log.error("%s; due jobs wait in the store and are sent when it is back", exc)
            broker_down = True
        except sa.exc.OperationalError as exc:
            log.error("store unavailable, retrying: %s", str(exc.orig).strip().splitlines()[0])
        except Exception:
            log.exception("scheduler iteration failed; continuing")
        stop.wait(settings.scheduler_poll_seconds)
    presence.stop()
    log.info("scheduler stopped")
