"""Canonical values and content hashes of mapped fields.

A coupling stores the hash of each side's mapped values at the last successful sync. Equal hash
means "nothing changed since": the row is unchanged, or it is the echo of our own write. Values are
canonicalised first so that representation noise (Decimal('1.50') vs Decimal('1.5'), aware vs naive
UTC datetimes) never reads as a change.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

AS_IS = frozenset({str, int, bool, type(None)})  # already canonical: the bulk of most tables' values


def canonical(value: Any) -> Any:
    """A JSON-safe, representation-independent form of a column value."""
    if type(value) in AS_IS or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) < 2**53 else value
    if isinstance(value, Decimal):
        if value == value.to_integral_value():
            return int(value)
        return format(value.normalize(), "f")
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat()
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (list, dict)):
        return json.loads(json.dumps(value, sort_keys=True, default=str))
    return str(value)


def content_hash(values: Sequence[Any]) -> str:
    """128-bit digest of already-canonical values, in field order.

    Canonical values are None, bool, int, float, str or JSON structures with sorted keys, whose
    `repr` is deterministic: hashing it costs a fraction of a JSON encoding, once per record and side.
    """
    return hashlib.blake2b(repr(list(values)).encode(), digest_size=16).hexdigest()
