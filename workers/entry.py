"""Module handed to the `dramatiq` CLI: installs the configured broker, then declares the actors."""

from store.settings import get_settings
from workers.broker import setup_broker

broker = setup_broker(get_settings())

import workers.actors  # noqa: E402,F401  (must follow setup_broker)
