"""The scheduler's metrics (SPEC §7): what it enqueued, the broker's queue depth, and figures read
from the store at scrape time (skipped couplings, the last success per mapping), served on
TABLESYNC_SCHEDULER_METRICS_PORT. One scheduler replica answers for the whole installation."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client import REGISTRY, Counter, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tablesync.config.settings import Settings
from tablesync.store.chunks import running_runs
from tablesync.store.coupling_queries import skipped_counts
from tablesync.store.jobs import last_successes
from tablesync.store.mappings import active_heads, active_mappings
from tablesync.store.pauses import paused
from tablesync.worker.enqueue import queues

log = logging.getLogger("tablesync.scheduler")
ENQUEUED = Counter("tablesync_scheduler_enqueued", "Scheduled sync jobs this scheduler enqueued.", ["mapping"])
SYNC_KINDS = ("sync", "full_sync")


class StoreCollector(Collector):
    """Skipped couplings by mapping and reason, the end of each mapping's last successful sync, and
    each active mapping's schedule period: what the staleness alert compares the age of the last
    success with (3× the period), so that one rule fits mappings of every schedule."""

    def __init__(self, store: sa.Engine) -> None:
        self.store = store
        self._periods: dict[str, tuple[int, float]] = {}  # name → (version, period): a definition is parsed once

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (GaugeMetricFamily("tablesync_skipped_couplings", "Couplings skipped until an operator acts.",
                                  labels=["mapping", "reason"]),
                GaugeMetricFamily("tablesync_last_success_timestamp_seconds",
                                  "When the mapping's last successful sync job ended (Unix time).", labels=["mapping"]),
                GaugeMetricFamily("tablesync_mapping_interval_seconds",
                                  "Nominal time between two scheduled syncs of an active mapping.", labels=["mapping"]),
                GaugeMetricFamily("tablesync_mapping_applied_timestamp_seconds",
                                  "When the active mapping's current version was applied (Unix time): where "
                                  "staleness counts from until its first success.", labels=["mapping"]),
                GaugeMetricFamily("tablesync_mapping_paused",
                                  "1 while an operator has paused the active mapping's schedule (`tablesync pause`), else 0.",
                                  labels=["mapping"]),
                GaugeMetricFamily("tablesync_run_progress_ratio",
                                  "Share of the active mapping's chunked run in progress that is done (rows so far "
                                  "of the planned estimate), from 0 to 1; 1 when no chunked run is in progress.",
                                  labels=["mapping"]))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The names, without asking the store (registration must not depend on it being up)."""
        yield from self._families()

    def _heads(self, conn: sa.Connection, interval: GaugeMetricFamily, applied: GaugeMetricFamily,
               held: GaugeMetricFamily) -> list[str]:
        """The active mappings' figures; returns their names."""
        heads = active_heads(conn)
        if any(self._periods.get(name, (None,))[0] != v for name, (v, _) in heads.items()):
            self._periods = {m.spec.name: (m.version, m.spec.parsed_schedule().period_seconds) for m in active_mappings(conn)}
        pauses = paused(conn)
        for name, (_, at) in sorted(heads.items()):
            applied.add_metric([name], at.timestamp())
            held.add_metric([name], 1.0 if name in pauses else 0.0)
            if name in self._periods:
                interval.add_metric([name], self._periods[name][1])
        return list(heads)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        skipped, last, interval, applied, held, progress = self._families()
        try:
            with self.store.connect() as conn:
                for mapping, reason, n in skipped_counts(conn):
                    skipped.add_metric([mapping, reason or "unknown"], n)
                for mapping, at in last_successes(conn).items():
                    last.add_metric([mapping], at.timestamp())
                active = self._heads(conn, interval, applied, held)
                runs = running_runs(conn)
                for mapping in sorted(set(active) | set(runs)):  # 1: no chunked run left to do
                    progress.add_metric([mapping], runs[mapping].ratio if mapping in runs else 1.0)
        except sa.exc.DBAPIError as exc:  # a scrape must not fail because the store is away
            log.warning("metrics: store unavailable: %s", str(exc.orig).strip().splitlines()[0])
            return
        except Exception:  # nor for any other reason: the scrape goes on without these figures
            log.exception("metrics: reading the store's figures failed")
            return
        yield from (skipped, last, interval, applied, held, progress)


class QueueCollector(Collector):
    """Messages waiting in the broker: ready, delayed (Dramatiq's .DQ queue) and dead (.XQ)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily("tablesync_queue_messages", "Messages in the broker's queues.", labels=["queue", "state"])

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = self._family()
        url = self.settings.broker_url
        if url is None:
            return
        for queue in queues(self.settings).values():  # syncs, urgent jobs, chunks
            try:
                counts = _redis_counts(url, self.settings.broker_namespace, queue) \
                    if url.startswith(("redis://", "rediss://")) else _rabbitmq_counts(url, queue)
            except Exception as exc:  # the broker away (or a queue no worker declared yet) must not fail the scrape
                log.warning("metrics: queue %s of the broker unavailable: %s", queue, exc)
                continue
            for state, n in counts.items():
                family.add_metric([queue, state], n)
        yield family


def _redis_counts(url: str, namespace: str, queue: str) -> dict[str, int]:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=2)
    try:
        prefix = f"{namespace}:{queue}"
        return {"ready": int(client.llen(prefix)), "delayed": int(client.llen(f"{prefix}.DQ")),
                "dead": int(client.zcard(f"{prefix}.XQ"))}
    finally:
        client.close()


def _rabbitmq_counts(url: str, queue: str) -> dict[str, int]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        return {state: int(channel.queue_declare(name, passive=True).method.message_count)
                for state, name in (("ready", queue), ("delayed", f"{queue}.DQ"), ("dead", f"{queue}.XQ"))}
    finally:
        connection.close()


def serve(store: sa.Engine, settings: Settings) -> None:
    """Register the collectors and serve the default registry on the scheduler's metrics port."""
    REGISTRY.register(StoreCollector(store))
    REGISTRY.register(QueueCollector(settings))
    start_http_server(settings.scheduler_metrics_port)
