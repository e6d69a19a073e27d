"""Field transforms: named, pure value functions applied on the way from source to target.

Add your own by registering a function under a name, either in code::

    from tablesync.config.transforms import register_transform

    @register_transform("digits")
    def digits(value):
        return None if value is None else "".join(c for c in str(value) if c.isdigit())

or, from an installed package, through the entry-point group ``tablesync.transforms``
(``digits = mypkg.transforms:digits``). A transform must be deterministic and idempotent
(``f(f(x)) == f(x)``): its output is compared with the target on every run, so a transform that keeps
changing its own result would rewrite the target forever.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from importlib.metadata import entry_points
from typing import Any

Transform = Callable[[Any], Any]
_REGISTRY: dict[str, Transform] = {}
_loaded_entry_points = False


def register_transform(name: str) -> Callable[[Transform], Transform]:
    def decorate(fn: Transform) -> Transform:
        _REGISTRY[name] = fn
        return fn

    return decorate


@register_transform("upper")
def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


@register_transform("lower")
def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


@register_transform("strip")
def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


@register_transform("seconds")
def _seconds(value: Any) -> Any:
    """A duration (PostgreSQL interval, MySQL TIME beyond a day) as its number of seconds."""
    if isinstance(value, timedelta):
        total = value.total_seconds()
        return int(total) if total.is_integer() else total
    return value


def _load_entry_points() -> None:
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for ep in entry_points(group="tablesync.transforms"):
        _REGISTRY.setdefault(ep.name, ep.load())


def get_transform(name: str) -> Transform:
    _load_entry_points()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown transform {name!r}; known: {', '.join(known_transforms())}") from None


def known_transforms() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)
