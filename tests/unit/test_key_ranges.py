"""Key ranges of chunked runs, on SQLite: the walk of the key index (`AppTable.key_boundaries`)
and reading one range (`AppTable.pages(low=, high=)`), for one-column and composite keys, dense
and sparse. Every row falls in exactly one range, whatever the batch size."""

from __future__ import annotations

import random

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from tablesync.apps.table import AppTable
from tablesync.config.model import SideSpec


def table(keys: list[tuple[str, int]], composite: bool, filter: str | None = None) -> AppTable:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (kind TEXT NOT NULL, no INTEGER NOT NULL, v TEXT, PRIMARY KEY (kind, no))")
        if keys:
            conn.execute(sa.text("INSERT INTO t VALUES (:k, :n, 'x')"), [{"k": k, "n": n} for k, n in keys])
    side = SideSpec(app="a", table="t", key=["kind", "no"] if composite else "no", filter=filter)
    return AppTable.open(engine, side)


def ranges(t: AppTable, every: int) -> list[tuple[str | None, str | None]]:
    highs, _ = t.key_boundaries(every)
    lows: list[str | None] = [None, *highs]
    return list(zip(lows, [*highs, None]))


def read_all(t: AppTable, every: int, batch: int) -> list[list[str]]:
    return [[t.key_of(r) for page in t.pages(["v"], None, batch, low, high) for r in page] for low, high in ranges(t, every)]


@pytest.mark.parametrize("composite", [False, True])
def test_sparse_keys_split_into_even_ranges(composite: bool) -> None:
    rng = random.Random(7)
    numbers = sorted(rng.sample(range(1, 10**9), 1050))
    keys = [("A" if composite and i % 3 else "B", n) for i, n in enumerate(numbers)]
    t = table(keys, composite)
    highs, tail = t.key_boundaries(100)
    assert len(highs) == 10 and tail == 50
    chunks = read_all(t, 100, 33)
    assert [len(c) for c in chunks] == [100] * 10 + [50]
    assert sorted(k for c in chunks for k in c) == sorted(t.key_of({"kind": k, "no": n}) for k, n in keys)


def test_a_table_that_fits_one_chunk_has_no_boundary_and_an_exact_multiple_no_empty_tail() -> None:
    assert table([("A", n) for n in range(50)], False).key_boundaries(100) == ([], 50)
    highs, tail = table([("A", n) for n in range(300)], False).key_boundaries(100)
    assert len(highs) == 2 and tail == 100


def test_ranges_follow_the_filter() -> None:
    t = table([("A" if n % 2 else "B", n) for n in range(400)], True, filter="kind = 'A'")
    chunks = read_all(t, 50, 17)
    assert [len(c) for c in chunks] == [50, 50, 50, 50] and all(k.startswith('["A"') for c in chunks for k in c)


@settings(max_examples=40, deadline=None)
@given(st.sets(st.tuples(st.sampled_from("ABC"), st.integers(-50, 50)), max_size=120),
       st.integers(1, 40), st.integers(1, 25), st.booleans())
def test_every_row_in_exactly_one_range(keys: set[tuple[str, int]], every: int, batch: int, composite: bool) -> None:
    if not composite:
        keys = {("A", n) for _, n in keys}
    t = table(sorted(keys), composite)
    seen = [k for c in read_all(t, every, batch) for k in c]
    assert sorted(seen) == sorted(t.key_of({"kind": k, "no": n}) for k, n in keys)
    assert len(seen) == len(set(seen))
