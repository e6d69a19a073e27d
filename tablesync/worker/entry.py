"""Module handed to the `dramatiq` CLI: sets up logging and the configured broker, then declares the actors."""

from tablesync.config.logs import configure_logging
from tablesync.config.settings import get_settings
from tablesync.worker import gc_policy
from tablesync.worker.broker import setup_broker
from tablesync.worker.presence import PresenceMiddleware
from tablesync.worker.store_engine import store_engine

_settings = get_settings()
gc_policy.tune()
configure_logging(_settings.log_format, _settings.log_level or "INFO")  # onto this process's log pipe
broker = setup_broker(_settings)
broker.add_middleware(PresenceMiddleware(store_engine(), _settings))  # `--wait` can tell that workers listen

import tablesync.worker.actors  # noqa: E402,F401  (must follow setup_broker)
