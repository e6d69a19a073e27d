"""Log lines of every tablesync process: text for people, JSON lines for log shippers, never a secret.

Job lines carry their facts (job id, mapping, kind, status, counters, duration) as `extra` fields,
so the JSON form has them as keys rather than inside a sentence. Whatever a line holds (a message,
its arguments, a traceback from a driver), the formatter's output passes through `redact` last:
a database URL or a DSN's password never reaches a log, whichever library wrote it.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import IO, Any, Literal

from pythonjsonlogger.json import JsonFormatter

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d %(threadName)s] %(name)s: %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(process)d %(threadName)s %(message)s"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]

# scheme://user:password@host  and  password=… / pwd=… in DSNs, query strings and JSON
_URL_SECRET = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^:/@\s\"']*):[^\s\"'/]+@", re.IGNORECASE)
_KEY_SECRET = re.compile(r"(?P<head>\b(?:password|passwd|pwd)\b\"?\s*[=:]\s*\"?)[^\s&;,\"'}]+", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every URL password and password=… value replaced by ***."""
    return _KEY_SECRET.sub(r"\g<head>***", _URL_SECRET.sub(r"\g<head>:***@", text))


class _Redacting(logging.Formatter):
    """Formats with `inner`, then redacts the whole line (tracebacks included)."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        inner: logging.Formatter = JsonFormatter(  # "time": ISO 8601 in UTC, to the millisecond
            JSON_FIELDS, rename_fields={"levelname": "level", "name": "logger", "threadName": "thread"},
            timestamp="time", json_ensure_ascii=False)
    else:
        inner = logging.Formatter(TEXT_FORMAT)
    return _Redacting(inner)


def configure_logging(fmt: str = "text", level: str | int = "INFO", stream: IO[str] | None = None) -> None:
    """Replace the root logger's handlers by one on `stream` (stderr by default, looked up now:
    a Dramatiq worker process has pointed it at its log pipe by the time it calls this)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # its connection chatter is Dramatiq's business
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the schema check at start is not news


def job_fields(job: Any, **more: Any) -> dict[str, Any]:
    """The `extra` of a job's log line: who it is, for filtering in a log store."""
    return {"job_id": job.id, "mapping": job.mapping, "kind": job.kind, **more}
