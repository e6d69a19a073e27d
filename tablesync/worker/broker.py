"""The Dramatiq broker, chosen from settings and installed before any actor module is imported.

Dramatiq binds actors to the global broker at decoration time; importing `worker.actors` first
would silently create a default Redis broker on localhost. `setup_broker` is therefore the only way
in, and `worker.actors` refuses to import without it.
"""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import CurrentMessage, Prometheus, default_middleware

from tablesync.config.settings import Settings
from tablesync.errors import SettingsError

_installed: dramatiq.Broker | None = None


def build_broker(settings: Settings, in_process_ok: bool = False) -> dramatiq.Broker:
    """In-process use leaves out Dramatiq's Prometheus middleware: it needs the CLI's process boot."""
    middleware = [m() for m in default_middleware if not (in_process_ok and m is Prometheus)]
    url = settings.broker_url
    if url is None:
        if not in_process_ok:
            raise SettingsError(
                "TABLESYNC_BROKER_URL is not set: workers and the scheduler need a shared broker "
                "(redis://host:6379/0 or amqp://user@host:5672); only `tablesync run` and `tablesync demo` "
                "can use the in-process broker"
            )
        broker: dramatiq.Broker = StubBroker(middleware=middleware)
    elif url.startswith(("redis://", "rediss://")):
        broker = _prompt_redis()(url=url, namespace=settings.broker_namespace, middleware=middleware,
                             heartbeat_timeout=int(settings.heartbeat_timeout_seconds * 1000))
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url, middleware=middleware)
    broker.add_middleware(CurrentMessage())
    return broker


IDLE_POLL_MS = 100
"""The longest an idle worker waits between two looks at a Redis queue. Dramatiq's default (1 s,
not settable from its CLI) made every message that found its queue idle wait up to a second: a
chunked run's first chunk, each job of a mapping synced every few seconds. Measured cost of
the shorter wait: see docs/performance.md."""


def _prompt_redis() -> type[dramatiq.Broker]:
    from dramatiq.brokers.redis import RedisBroker

    class PromptRedisBroker(RedisBroker):  # type: ignore[misc]
        """Dramatiq's Redis broker, its consumers polling an idle queue at most `IDLE_POLL_MS` apart."""

        def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> object:
            return super().consume(queue_name, prefetch, min(timeout, IDLE_POLL_MS))

    return PromptRedisBroker


def setup_broker(settings: Settings, in_process_ok: bool = False) -> dramatiq.Broker:
    """Install the broker once per process; later calls return the installed one."""
    global _installed
    if _installed is None:
        _installed = build_broker(settings, in_process_ok)
        dramatiq.set_broker(_installed)
    return _installed


def installed_broker() -> dramatiq.Broker | None:
    return _installed
