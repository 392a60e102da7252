"""jsontext.load_stored: the fast read of stored JSON agrees with the full parser, errors included."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stashd.errors import NotJSON, StoredNotJSON
from stashd.jsontext import load_json, load_stored

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
_SPACE = st.text(" \t\r\n", max_size=3)


@given(value=_JSON, before=_SPACE, after=_SPACE, compact=st.booleans())
def test_any_json_text_reads_as_the_full_parser_reads_it(
    value: object, before: str, after: str, compact: bool
) -> None:
    """Compact or not, with whitespace around or not, the same value comes back."""
    separators = (",", ":") if compact else (", ", ": ")
    text = before + json.dumps(value, separators=separators, ensure_ascii=False) + after
    raw = text.encode("utf-8", "surrogatepass")
    try:
        expected = load_json(raw)
    except NotJSON as exc:  # a lone surrogate in a str: not UTF-8
        with pytest.raises(StoredNotJSON) as caught:
            load_stored(raw)
        assert caught.value.message.partition(": ")[2] == exc.message.partition(": ")[2]
        return
    assert repr(load_stored(raw)) == repr(expected)


@pytest.mark.parametrize(
    "raw", [b"", b" ", b"[1] x", b"[1]]", b"NaN", b"[Infinity]", b"tru", b"{bad", b"\xff", b"1 2"]
)
def test_what_is_not_json_fails_as_the_full_parser_fails(raw: bytes) -> None:
    """The same message and position as load_json, as a StoredNotJSON."""
    with pytest.raises(NotJSON) as full:
        load_json(raw, "stored value")
    with pytest.raises(StoredNotJSON) as fast:
        load_stored(raw)
    assert fast.value.message == full.value.message
    assert (fast.value.line, fast.value.column, fast.value.position) == (
        full.value.line,
        full.value.column,
        full.value.position,
    )
