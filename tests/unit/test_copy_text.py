"""COPY text as the pass-through first run handles it: fields escaped and unescaped exactly, keys
cut out of a line as the rows' path would key the record, and which column pairs may pass."""

from __future__ import annotations

import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql

from tablesync.apps.schema import same_text_form
from tablesync.config.load import parse_config
from tablesync.db.keys import encode_key
from tablesync.db.pg_bulk import NULL, escape, unescape
from tablesync.sync.bulk_load import split_text
from tablesync.sync.plan import compile_one_way

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))


@given(TEXT)
def test_a_field_unescapes_to_the_string_it_was(value: str) -> None:
    field = escape(value)
    assert b"\t" not in field and b"\n" not in field and b"\r" not in field
    assert unescape(field) == value


def test_null_and_the_string_backslash_n_differ() -> None:
    assert escape(None) == NULL and unescape(NULL) is None
    assert escape("\\N") != NULL and unescape(escape("\\N")) == "\\N"


def test_the_escapes_postgresql_writes_are_read() -> None:  # COPY TO escapes these control characters too
    assert unescape(b"a\\bb\\fc\\vd\\\\e\\tf") == "a\bb\fc\vd\\e\tf"


def plan(key: str | list[str], target_key: str = "crm_id", fields: tuple[str, ...] = ("name", "city")):  # type: ignore[no-untyped-def]
    cfg = parse_config({"apps": {"a": {"url": "sqlite://"}, "b": {"url": "sqlite://"}}, "mappings": [{
        "name": "M", "direction": "to_integration", "local": {"app": "a", "table": "s", "key": key},
        "integration": {"app": "b", "table": "t", "key": target_key},
        "fields": [{"local": f, "integration": f} for f in fields]}]}, "test")
    return compile_one_way(cfg.mappings[0])


@given(st.lists(st.tuples(TEXT, TEXT, st.integers()), min_size=1, max_size=20, unique_by=lambda r: (r[0], r[2])))
def test_keys_are_cut_out_as_the_rows_path_keys_them(rows: list[tuple[str, str, int]]) -> None:
    one = split_text(plan("code"), [escape(c) + b"\t" + escape(n) + b"\t" + NULL for c, n, _ in rows])
    assert one.source_keys == [c for c, _, _ in rows]
    assert [unescape(line.split(b"\t")[0]) for line in one.lines] == [n for _, n, _ in rows]
    both = split_text(plan(["code", "n"]), [escape(c) + b"\t" + str(i).encode() + b"\t" + escape(n) + b"\tx"
                                           for c, n, i in rows])
    assert both.source_keys == [encode_key([c, i]) for c, _, i in rows]
    assert both.target_fields is None


def test_a_target_key_written_from_the_source_is_cut_out_of_the_fields() -> None:
    page = split_text(plan("id", target_key="city"), [b"1\tAda\tCopenhagen", b"2\tBo\t\\N"])
    assert page.target_fields == [b"Copenhagen", NULL] and page.lines == [b"Ada\tCopenhagen", b"Bo\t\\N"]


def test_which_column_pairs_pass_as_text() -> None:
    md, dialect = sa.MetaData(), postgresql.dialect()

    def col(name: str, type_: sa.types.TypeEngine) -> sa.Column:  # type: ignore[type-arg]
        return sa.Table(f"t_{name}", md, sa.Column(name, type_)).c[name]

    passes = [(sa.String(10), sa.Text()), (sa.SmallInteger(), sa.BigInteger()), (sa.Numeric(4, 2), sa.Numeric(10, 4)),
              (postgresql.ARRAY(sa.Text()), postgresql.ARRAY(sa.Text())), (postgresql.TSVECTOR(), postgresql.TSVECTOR()),
              (sa.DateTime(timezone=True), sa.DateTime(timezone=True)), (postgresql.JSONB(), postgresql.JSONB())]
    refused = [(sa.DateTime(), sa.DateTime(timezone=True)), (sa.Integer(), sa.Numeric(10, 2)), (sa.Boolean(), sa.Integer()),
               (postgresql.JSON(), postgresql.JSONB()), (postgresql.MONEY(), postgresql.MONEY()), (sa.Text(), sa.Enum("a", name="e")),
               (postgresql.ARRAY(sa.Integer()), postgresql.ARRAY(sa.BigInteger()))]
    for i, (s, t) in enumerate(passes):
        assert same_text_form(col(f"ps{i}", s), col(f"pt{i}", t), dialect), (s, t)
    for i, (s, t) in enumerate(refused):
        assert not same_text_form(col(f"rs{i}", s), col(f"rt{i}", t), dialect), (s, t)
