"""What `tablesync worker` execs: Dramatiq's own CLI, logging in tablesync's format.

Dramatiq's parent process would otherwise log in its own text format, whatever
TABLESYNC_LOG_FORMAT says. Its worker processes get their handlers from `worker.entry`, once
their stderr is the pipe the parent serializes lines through.
"""

from __future__ import annotations

import sys

from dramatiq.cli import main, make_argument_parser

from tablesync.config.logs import configure_logging
from tablesync.config.settings import get_settings


def run(argv: list[str]) -> int:
    settings = get_settings()  # validated by `tablesync worker` before it exec'd this
    configure_logging(settings.log_format, settings.log_level or "INFO")
    args = make_argument_parser().parse_args(argv)
    args.skip_logging = True
    return int(main(args) or 0)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
