"""Mapping schedules: "every 30s" intervals or cron expressions, as due-tick instants.

Ticks are pure functions of the schedule and the clock (intervals are aligned to the epoch), so every
scheduler replica computes the same tick for the same moment and the store's unique key on
(mapping, tick) can let exactly one of them enqueue it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from croniter import croniter

_INTERVAL = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*(s|sec|second|seconds|m|min|minute|minutes|h|hour|hours|d|day|days)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|second|seconds|m|min|minute|minutes|h|hour|hours|d|day|days|w|week|weeks)\s*$")


def parse_duration(text: str) -> timedelta:
    """ "30d", "12h", "90 min", "2w": a retention age or similar."""
    m = _DURATION.match(text.lower())
    if not m:
        raise ValueError(f"{text!r} is not a duration: write a number and a unit, e.g. 30d, 12h, 90m, 2w")
    unit = m.group(2)[0]
    return timedelta(seconds=float(m.group(1)) * (604800 if unit == "w" else _UNIT[unit]))


@dataclass(frozen=True)
class Schedule:
    text: str
    interval: float | None = None
    cron: str | None = None

    def latest_tick(self, now: datetime) -> datetime:
        """The most recent due instant at or before `now` (UTC)."""
        if self.interval is not None:
            epoch = now.timestamp()
            return datetime.fromtimestamp(epoch - epoch % self.interval, tz=timezone.utc)
        assert self.cron is not None
        return croniter(self.cron, now + timedelta(microseconds=1)).get_prev(datetime).astimezone(timezone.utc)

    def next_tick(self, now: datetime) -> datetime:
        if self.interval is not None:
            return self.latest_tick(now) + timedelta(seconds=self.interval)
        assert self.cron is not None
        return croniter(self.cron, now).get_next(datetime).astimezone(timezone.utc)

    @property
    def period_seconds(self) -> float:
        """Nominal spacing of ticks, used to judge staleness."""
        if self.interval is not None:
            return self.interval
        base = datetime(2000, 1, 3, tzinfo=timezone.utc)
        it = croniter(self.cron, base)
        first = it.get_next(datetime)
        return (it.get_next(datetime) - first).total_seconds()


def parse_schedule(text: str) -> Schedule:
    """Raise ValueError with the accepted forms when `text` is neither an interval nor a cron line."""
    value = text.strip().lower()
    match = _INTERVAL.match(value)
    if match:
        seconds = float(match.group(1)) * _UNIT[match.group(2)[0]]
        if seconds < 1:
            raise ValueError(f"schedule {text!r}: the shortest interval is 1 second")
        return Schedule(text=text, interval=seconds)
    if croniter.is_valid(text.strip()) and len(text.split()) in (5, 6):
        return Schedule(text=text, cron=text.strip())
    raise ValueError(
        f"schedule {text!r} is neither an interval (\"every 30s\", \"every 5m\", \"every 1h\") "
        "nor a cron expression (\"*/5 * * * *\")"
    )
