"""Read queries over couplings: the coupled data synchronization errors list and coupling lookups."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import sqlalchemy as sa

from tablesync.store.schema import couplings, job_errors


def skipped_couplings(conn: sa.Connection, mapping: str | None = None, limit: int | None = None) -> list[sa.Row[Any]]:
    """Skipped couplings with the message and time of their latest error, oldest failure first."""
    q = (
        sa.select(couplings.c.id, couplings.c.mapping, couplings.c.local_key, couplings.c.integration_key,
                  couplings.c.skip_reason, job_errors.c.message, job_errors.c.created_at.label("failed_on"))
        .select_from(couplings.outerjoin(job_errors, job_errors.c.id == couplings.c.last_error_id))
        .where(couplings.c.skipped.is_(True))
        .order_by(couplings.c.mapping, couplings.c.id)
    )
    if mapping:
        q = q.where(couplings.c.mapping == mapping)
    if limit:
        q = q.limit(limit)
    return conn.execute(q).all()


def find_couplings(
    conn: sa.Connection, mapping: str, local_key: str | None = None, integration_key: str | None = None,
    skipped_only: bool = False, limit: int = 1000,
) -> list[sa.Row[Any]]:
    q = _coupling_filter(sa.select(couplings), mapping, local_key, integration_key, skipped_only)
    return conn.execute(q.order_by(couplings.c.id).limit(limit)).all()


def count_couplings(conn: sa.Connection, mapping: str, local_key: str | None = None, integration_key: str | None = None,
                    skipped_only: bool = False) -> int:
    """How many rows `find_couplings` would list without its limit: a cut list says what it left out."""
    q = _coupling_filter(sa.select(sa.func.count()).select_from(couplings), mapping, local_key, integration_key, skipped_only)
    return int(conn.execute(q).scalar_one())


def _coupling_filter(q: Any, mapping: str, local_key: str | None, integration_key: str | None, skipped_only: bool) -> Any:
    q = q.where(couplings.c.mapping == mapping, couplings.c.state != "uncoupled")
    if local_key is not None:
        q = q.where(couplings.c.local_key == local_key)
    if integration_key is not None:
        q = q.where(couplings.c.integration_key == integration_key)
    if skipped_only:
        q = q.where(couplings.c.skipped.is_(True))
    return q


_VALUES = re.compile(
    r"'[^']*'|\"[^\"]*\"|\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b|(?<![A-Za-z_])-?\d+(?:[.,]\d+)?",
    re.IGNORECASE)


def normalized_message(message: str | None) -> str:
    """The message with its values (quoted text, numbers, uuids) replaced: what errors of one kind share."""
    return _VALUES.sub("…", message or "")


def error_signature(mapping: str, reason: str | None, message: str | None) -> str:
    """A short, stable name for a group of errors of one mapping, reason and normalised message."""
    text = f"{mapping}\x1f{reason or ''}\x1f{normalized_message(message)}"
    return hashlib.blake2b(text.encode(), digest_size=5).hexdigest()


def skipped_counts(conn: sa.Connection) -> list[tuple[str, str | None, int]]:
    """(mapping, skip reason, how many) of the skipped couplings."""
    return [(m, r, int(n)) for m, r, n in conn.execute(
        sa.select(couplings.c.mapping, couplings.c.skip_reason, sa.func.count())
        .where(couplings.c.skipped.is_(True)).group_by(couplings.c.mapping, couplings.c.skip_reason))]


def skipped_per_mapping(conn: sa.Connection) -> dict[str, int]:
    out: dict[str, int] = {}
    for mapping, _, n in skipped_counts(conn):
        out[mapping] = out.get(mapping, 0) + n
    return out


def couplings_by_id(conn: sa.Connection, ids: list[int]) -> list[sa.Row[Any]]:
    """Coupling rows of any mapping with these ids, by mapping and id."""
    return conn.execute(sa.select(couplings).where(couplings.c.id.in_(ids)).order_by(couplings.c.mapping, couplings.c.id)).all()
