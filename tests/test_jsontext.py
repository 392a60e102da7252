"""stashd.jsontext: orjson where it answers as the standard library does, json everywhere else.

Each test holds the module to a plain ``json`` reference (the code Stash ran before orjson):
the same values, the same stored bytes, the same errors at the same positions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stashd.errors import NotJSON, StoredNotJSON
from stashd.jsontext import (
    MAX_DEPTH,
    check_json,
    check_stored,
    dump_json,
    dump_parsed,
    json_error_position,
    load_json,
    load_stored,
    nesting,
    value_nesting,
)
from stashd.service import encode_json


def _reject(name: str) -> float:
    msg = f"{name} is not a JSON value"
    raise ValueError(msg)


_REFERENCE = json.JSONDecoder(parse_constant=_reject)


def reference(raw: bytes) -> tuple[str, Any]:
    """What plain json makes of ``raw``: ("ok", repr of the value) or ("error", message)."""
    try:
        return "ok", repr(_REFERENCE.decode(raw.decode("utf-8")))
    except ValueError as exc:
        return "error", NotJSON(json_error_position(exc), "value").message


def ours(raw: bytes) -> tuple[str, Any]:
    try:
        return "ok", repr(load_json(raw))
    except NotJSON as exc:
        return "error", exc.message


def agree(raw: bytes) -> None:
    """load_json, load_stored and both checks give plain json's verdict on ``raw``."""
    expected = reference(raw)
    assert ours(raw) == expected
    if expected[0] == "ok":
        assert repr(load_stored(raw)) == expected[1]
        check_json(raw)
        check_stored(raw)
        return
    with pytest.raises(NotJSON):
        check_json(raw)
    for read in (load_stored, check_stored):
        with pytest.raises(StoredNotJSON) as caught:
            read(raw)
        assert caught.value.message.partition(": ")[2] == expected[1].partition(": ")[2]


# -- reading ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        # Integers beyond 64 bits stay exact integers (orjson would make them floats).
        b"123456789012345678901234567890",
        b"18446744073709551615",
        b"18446744073709551616",
        b"-9223372036854775808",
        b"-9223372036854775809",
        b'{"n":[99999999999999999999,-1]}',
        # json accepts these and orjson does not: json's value stands.
        b'"\\ud800"',
        b'["\\udc00x"]',
        b'"\\ud83d\\u0041"',
        b"1e400",
        b"[-1e400]",
        # Neither accepts these; json's message and position are the ones given.
        b"NaN",
        b"[Infinity]",
        b"-Infinity",
        b"",
        b" ",
        b"[1,2,]",
        b'{"a":1,}',
        b"01",
        b"1.",
        b".5",
        b"+1",
        b"tru",
        b"[1 2]",
        b'"\t"',
        b"\xef\xbb\xbf1",
        b"\xff",
        b'"\xed\xa0\x80"',
        b"[1] x",
        # Both accept these: the same value, type and key order.
        b'{"a":1,"b":2,"a":3}',
        b"-0",
        b"-0.0",
        b"1E5",
        b" [1] ",
        b'"\\u0000\x7f"',
        b"1e-400",
        b"0.1",
        b"12345678.123456789e-5",
    ],
)
def test_reads_as_plain_json_reads(raw: bytes) -> None:
    agree(raw)


def test_big_integers_stay_integers() -> None:
    value = load_json(b'{"id":123456789012345678901234567890}')
    assert value == {"id": 123456789012345678901234567890}
    assert type(value["id"]) is int


def test_nan_keeps_its_message() -> None:
    with pytest.raises(NotJSON) as caught:
        load_json(b'{"x": NaN}', "request body")
    assert caught.value.message == "request body is not valid JSON: NaN is not a JSON value"


def test_error_positions_are_json_s() -> None:
    with pytest.raises(NotJSON) as caught:
        load_json(b'{"a": [1, 2,]}')
    assert caught.value.message == (
        "value is not valid JSON: Expecting value at line 1 column 13 (char 12)"
    )
    assert (caught.value.line, caught.value.column, caught.value.position) == (1, 13, 12)


@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, MAX_DEPTH])
@pytest.mark.parametrize("shape", ["[]", '{"a":}'])
def test_nesting_up_to_the_limit_reads_as_plain_json_reads(depth: int, shape: str) -> None:
    """Every parser reads a text nested to the limit, arrays or objects, as json does."""
    opener, closer = shape[:-1].encode(), shape[-1].encode()
    agree(opener * depth + closer * depth)
    agree(opener * depth + b'"x' + closer + b'"' + closer * depth)  # a closer in a string


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_nesting_past_the_limit_is_refused_naming_it(depth: int) -> None:
    """Past the limit every reader refuses the text unparsed, naming the limit and the depth."""
    raw = b"[" * depth + b"]" * depth
    sent: list[Callable[[bytes], object]] = [load_json, check_json]
    for read in sent:
        with pytest.raises(NotJSON) as caught:
            read(raw)
        assert caught.value.message == (
            f"value is not valid JSON: nested {depth} levels deep, the limit is {MAX_DEPTH} levels"
        )
        assert (caught.value.limit, caught.value.actual) == (MAX_DEPTH, depth)
    stored: list[Callable[[bytes], object]] = [load_stored, check_stored]
    for read in stored:
        with pytest.raises(StoredNotJSON) as caught:
            read(raw)
        assert caught.value.message == (
            f"stored value is not valid JSON: nested {depth} levels deep, "
            f"the limit is {MAX_DEPTH} levels"
        )
        assert (caught.value.limit, caught.value.actual) == (MAX_DEPTH, depth)


def test_deep_text_that_is_not_json_either_is_refused_for_its_depth() -> None:
    """Openers that never close are measured like any: the depth is the refusal."""
    with pytest.raises(NotJSON, match=f"nested 2000 levels deep, the limit is {MAX_DEPTH}"):
        load_json(b'{"a":' * 2000)


def test_brackets_in_strings_do_not_nest() -> None:
    """Many brackets inside strings (escaped quotes too) are text, not levels."""
    raw = b'["' + b"[{" * 2000 + b'\\", \\"\\\\' + b"[" * 2000 + b'"]'
    assert json.loads(raw) == ["[{" * 2000 + '", "\\' + "[" * 2000]
    assert nesting(raw) == 1
    agree(raw)
    assert nesting(b'[["a\\"]]]"],[[]]]') == 3
    assert nesting(b'"[[[["') == 0


# Strings full of brackets, quotes and backslashes, in values and in keys.
_BRACKETY = st.text(alphabet='[]{}"\\x')
_DEEP_JSON = st.recursive(
    st.none() | st.integers() | _BRACKETY,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_BRACKETY, inner, max_size=3),
    max_leaves=30,
)


@given(_DEEP_JSON, st.booleans(), st.booleans())
def test_nesting_is_the_depth_of_the_value(value: object, ascii_only: bool, deep: bool) -> None:
    """nesting() of a text is the depth of the value it holds, whatever its strings hold."""
    if deep:  # past the levels nesting() peels off one at a time
        value = [[[[[[[[[[[[[[[[[[[value]]]]]]]]]]]]]]]]]]]
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nesting(raw) == value_nesting(value)


_ALPHABET = st.sampled_from(
    [
        *(bytes([c]) for c in b"{}[]\":, \t\n\r0159-+.eE\\/u'ax"),
        b"\x0c",
        b"\x00",
        b"\x1f",
        b"\x7f",
        b"\xff",
        b"\xc2\xa0",
        b"\xc3\xa9",
        b"\xed\xa0\x80",
        b"true",
        b"false",
        b"null",
        b"NaN",
        b"Infinity",
        b"d800",
        b"dc00",
        b"1234567890123456789",
        b"1e400",
        b'{"a":',
        b"[1,",
    ]
)


@given(st.lists(_ALPHABET, max_size=10).map(b"".join))
def test_any_text_reads_as_plain_json_reads(raw: bytes) -> None:
    agree(raw)


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.sampled_from([1e-5, 1.5e-7, -9.99e-9, 1e-10, 1e16, 1e-4]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=12,
)


@given(_JSON, st.booleans())
def test_any_document_reads_as_plain_json_reads(value: object, compact: bool) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    text = json.dumps(value, separators=separators, ensure_ascii=False)
    agree(text.encode("utf-8", "surrogatepass"))


# -- writing ------------------------------------------------------------------------------
@given(_JSON)
def test_parsed_values_are_written_as_plain_json_writes_them(value: object) -> None:
    _written_alike(value)


def _written_alike(value: object) -> None:
    """dump_parsed gives dump_json's bytes, or refuses where it refuses.

    (dump_json refuses infinity, and a lone surrogate that UTF-8 cannot hold.)
    """
    written: list[bytes | type[ValueError]] = []
    for dump in (dump_json, dump_parsed):
        try:
            written.append(dump(value))
        except ValueError:
            written.append(ValueError)
    assert written[1] == written[0]


def _floats() -> list[float]:
    values = [0.0, -0.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1 + 0.2]
    for exponent in range(-324, 309):
        for mantissa in (1.0, 1.5, 9.999999999999998, 1.2345678901234567):
            value = (
                mantissa * 10.0**exponent if exponent > -300 else float(f"{mantissa}e{exponent}")
            )
            if math.isfinite(value):
                values += [value, -value]
    return values


def test_every_float_magnitude_is_written_as_plain_json_writes_it() -> None:
    """orjson writes 1e-05 as 0.00001 and 1.5e-07 as 1.5e-7: those are json's way here."""
    floats = _floats()
    assert dump_parsed(floats) == dump_json(floats)
    for value in floats:
        assert dump_parsed(value) == dump_json(value), value
        assert dump_parsed({"x": [value]}) == dump_json({"x": [value]}), value


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        [123456789012345678901234567890],
        "\ud800",
        ["a", {"b": "\udc00"}],
        [[[[]]]] * 3,
        "a\u2028b\u2029\x00\x1f\x7f\u00e9\U0001f600",
        {"": None, "k\n": [True, False, -0.0]},
    ],
)
def test_values_orjson_refuses_or_writes_otherwise(value: object) -> None:
    _written_alike(value)


def test_deep_values_are_written_by_json() -> None:
    """orjson stops at 254 levels; json writes deeper documents as it always did."""
    value: list[Any] = []
    for _ in range(300):
        value = [value]
    assert dump_parsed(value) == b"[" * 301 + b"]" * 301


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5000])
def test_values_nested_past_the_limit_are_refused_naming_it(depth: int) -> None:
    """A parsed value (or a Python caller's) past the limit is refused as its text would be."""
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    with pytest.raises(NotJSON) as caught:
        encode_json(value, "merge patch")
    assert caught.value.message == (
        f"merge patch is not valid JSON: nested {depth} levels deep, "
        f"the limit is {MAX_DEPTH} levels"
    )
    assert (caught.value.limit, caught.value.actual) == (MAX_DEPTH, depth)


def test_infinity_is_refused_not_written_as_null() -> None:
    """1e400 reads as infinity, which orjson would write as null; it is refused instead."""
    value = load_json(b'{"big": 1e400, "none": null}')
    with pytest.raises(ValueError, match="Out of range float"):
        dump_parsed(value)
    with pytest.raises(NotJSON, match="it holds a number out of the range of a double"):
        encode_json(value)
    assert dump_parsed(load_json(b'{"none": null}')) == b'{"none":null}'
