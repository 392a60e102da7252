"""RFC 7396 JSON merge patch, as UPDATE ... MERGE applies it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stashd.jsonmerge import merge_patch


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7396, Appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7396(target: object, patch: object, result: object) -> None:
    """Every example of RFC 7396 Appendix A."""
    assert merge_patch(target, patch) == result


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)


@given(
    target=st.dictionaries(st.text(max_size=3), json_scalars, max_size=5),
    patch=st.dictionaries(st.text(max_size=3), st.booleans() | st.integers(), max_size=5),
)
def test_merge_without_nulls_keeps_patch_members(
    target: dict[str, object], patch: dict[str, object]
) -> None:
    """A null-free patch's members all appear in the result, and other members survive."""
    merged = merge_patch(target, patch)
    assert all(merged[k] == v for k, v in patch.items())
    assert all(merged[k] == v for k, v in target.items() if k not in patch)
