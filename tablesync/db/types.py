"""Column types shared by the schema and its migrations."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Always-aware UTC timestamps, also on SQLite, which forgets the zone on the way back."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
