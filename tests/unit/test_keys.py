"""Record keys as one string (db.keys): what a composite key looks like, and that it never loses
a value on the way through the store, the CLI and back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablesync.db.keys import decode_key, encode_key, normalize_key

parts = st.one_of(st.integers(), st.text(), st.uuids())


@given(st.lists(parts, min_size=2, max_size=4))
def test_a_composite_key_decodes_to_its_values_as_text(values: list[object]) -> None:
    key = encode_key(values)
    assert decode_key(key, len(values)) == [str(v) for v in values]
    assert normalize_key(key, len(values)) == key


def test_the_form_is_the_json_array_of_the_values_as_text() -> None:
    assert encode_key([1, 23]) == '["1","23"]'
    assert encode_key(["SO", 1, 2]) == '["SO","1","2"]'
    assert encode_key([42]) == "42"  # one column: its value as text, as before composite keys
    assert normalize_key("[1, 23]", 2) == normalize_key('[ "1" , "23" ]', 2) == '["1","23"]'
    assert normalize_key("anything at all", 1) == "anything at all"


@pytest.mark.parametrize("typed", ["1", "[1]", "[1, 2, 3]", '{"a": 1}', "[1, true]", "[1, null]", "not json"])
def test_a_malformed_composite_key_says_what_one_looks_like(typed: str) -> None:
    with pytest.raises(ValueError, match=r'is not a key of 2 columns: give the JSON array of its values, in key order, '
                                         r'such as \'\["1","2"\]\''):
        decode_key(typed, 2)
