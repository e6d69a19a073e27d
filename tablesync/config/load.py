"""Reading `tablesync.yaml` into a validated `ConfigFile`, or a list of located problems.

App URLs are kept as written (`${ERP_DATABASE_URL}`): they are expanded from the environment only
when a process connects, so the store never holds a password.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError
from sqlalchemy.engine import make_url

from tablesync.config.model import AUTH_SECRETS, ConfigFile, check_semantics
from tablesync.errors import ConfigError, Problem

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(template: str, where: str, env: dict[str, str] | None = None) -> str:
    """Expand `${VAR}` / `${VAR:-default}`; a missing variable is an error naming it."""
    env = dict(os.environ) if env is None else env

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(where, [Problem(where, f"environment variable {name} is not set")])

    return _VAR.sub(sub, template)


def parse_config(data: Any, source: str) -> ConfigFile:
    if not isinstance(data, dict):
        raise ConfigError(source, [Problem("top level", "expected a mapping with `apps:` and `mappings:`")])
    try:
        cfg = ConfigFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [_locate(err, data) for err in exc.errors()]) from None
    problems = check_semantics(cfg) + _literal_secrets(cfg)
    if problems:
        raise ConfigError(source, problems)
    return cfg


def load_config(path: str | Path) -> ConfigFile:
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, [Problem("file", "not found (set TABLESYNC_CONFIG or pass --config)")]) from None
    except OSError as exc:
        raise ConfigError(source, [Problem("file", f"cannot be read: {exc.strerror}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [Problem(where, f"not valid YAML: {reason}")]) from None
    return parse_config(data, source)


def _literal_secrets(cfg: ConfigFile) -> list[Problem]:
    """Secrets written into the file (a URL's password, an HTTP app's auth secrets) are refused:
    they belong in the environment, named by `${VARIABLE}`."""
    problems = []
    for name, app in cfg.apps.items():
        for setting in AUTH_SECRETS:
            value = getattr(app.auth, setting, None) if app.auth is not None else None
            if value is not None and not _VAR.search(value):
                problems.append(Problem(f"app {name}, auth {setting}",
                                        f"holds a literal secret; write {setting}: \"${{{name.upper()}_{setting.upper()}}}\" "
                                        "and set that variable in the environment"))
        url = app.address
        if _VAR.search(url):
            continue
        if app.http:
            parsed = urlsplit(url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                problems.append(Problem(f"app {name}, odata", "not an HTTP URL (e.g. https://org.crm.dynamics.com/api/data/v9.2/)"))
                continue
            password = parsed.password
        else:
            try:
                password = make_url(url).password
            except Exception:
                problems.append(Problem(f"app {name}, url", "not a database URL (e.g. postgresql://user@host/db)"))
                continue
        if password:
            setting = "odata" if app.http else "url"
            problems.append(Problem(
                f"app {name}, {setting}",
                f"holds a literal password; tablesync never stores secrets: write {setting}: \"${{{name.upper()}_{'ODATA_URL' if app.http else 'DATABASE_URL'}}}\" "
                "and set that variable in the environment",
            ))
    return problems


def _locate(err: Any, data: dict[str, Any]) -> Problem:
    loc = list(err["loc"])
    parts: list[str] = []
    node: Any = data
    i = 0
    while i < len(loc):
        step = loc[i]
        if step == "mappings" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            index = loc[i + 1]
            mapping = _item(node.get("mappings"), index)
            name = mapping.get("name") if isinstance(mapping, dict) else None
            parts.append(f"mapping {name}" if name else f"mapping #{index + 1}")
            node, i = mapping, i + 2
            continue
        if step == "fields" and i + 1 < len(loc) and isinstance(loc[i + 1], int):
            index = loc[i + 1]
            f = _item(node.get("fields") if isinstance(node, dict) else None, index)
            label = ""
            if isinstance(f, dict):
                label = f" ({f.get('local', '—')} ↔ {f.get('integration', '—')})"
            parts.append(f"field #{index + 1}{label}")
            node, i = f, i + 2
            continue
        if step == "apps" and i + 1 < len(loc):
            parts.append(f"app {loc[i + 1]}")
            node = (node.get("apps") or {}).get(loc[i + 1]) if isinstance(node, dict) else None
            i += 2
            continue
        parts.append(str(step))
        node = node.get(step) if isinstance(node, dict) else None
        i += 1
    return Problem(", ".join(parts) or "top level", _message(err))


def _message(err: Any) -> str:
    """pydantic's message, with the value that was refused quoted, as written in the file."""
    kind, message, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        return f"unknown setting {str(err['loc'][-1])!r} (check its spelling)"
    if kind == "missing":
        return "is required"
    if kind == "literal_error":
        return f"{_quoted(value)} is not allowed: use {err.get('ctx', {}).get('expected', 'one of the documented values')}"
    message = message.removeprefix("Value error, ")
    shown = _quoted(value)
    return message if shown in message else f"{message} (got {shown})"


def _quoted(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "…"


def _item(seq: Any, index: int) -> Any:
    return seq[index] if isinstance(seq, list) and 0 <= index < len(seq) else None
