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


def _rfc_merge(target: object, patch: object) -> object:
    """RFC 7396 section 2's pseudocode, recursive as written there: the reference."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = _rfc_merge(result.get(name), value)
    return result


_DOCUMENTS = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("abc"), inner),
    max_leaves=20,
)


@given(target=_DOCUMENTS, patch=_DOCUMENTS)
def test_merge_is_the_rfc_s_pseudocode(target: object, patch: object) -> None:
    """The same result as the RFC's recursive algorithm, members in the same order."""
    before = repr(target), repr(patch)
    merged = merge_patch(target, patch)
    assert repr(merged) == repr(_rfc_merge(target, patch))
    assert (repr(target), repr(patch)) == before  # inputs are not mutated


def test_deep_patches_merge_without_recursing() -> None:
    """A patch far deeper than Python's recursion limit merges; the result has its depth."""
    depth = 100_000
    patch: dict[str, object] = {"x": 1}
    target: dict[str, object] = {"x": 0, "keep": True}
    for _ in range(depth):
        patch = {"x": patch}
        target = {"x": target}
    merged = merge_patch(target, patch)
    for _ in range(depth):
        assert isinstance(merged, dict)
        merged = merged["x"]
    assert merged == {"x": 1, "keep": True}
