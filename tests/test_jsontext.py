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
    NESTING_SAFE,
    TOO_DEEP,
    check_json,
    check_stored,
    dump_json,
    dump_parsed,
    json_error_position,
    load_json,
    load_stored,
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


@pytest.mark.parametrize("depth", [NESTING_SAFE - 1, NESTING_SAFE, 600])
def test_deep_nesting_reads_as_plain_json_reads(depth: int) -> None:
    """Past NESTING_SAFE brackets json reads the text, so its recursion limit still applies."""
    agree(b"[" * depth + b"]" * depth)


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_nesting_past_json_s_limit_is_refused_as_not_json(depth: int) -> None:
    """orjson reads 1000 levels; json runs out of recursion, which is a refusal, not a crash."""
    raw = b"[" * depth + b"]" * depth
    with pytest.raises(RecursionError):
        _REFERENCE.decode(raw.decode())
    sent: list[Callable[[bytes], object]] = [load_json, check_json]
    for read in sent:
        with pytest.raises(NotJSON) as caught:
            read(raw)
        assert caught.value.message == f"value is not valid JSON: {TOO_DEEP}"
    stored: list[Callable[[bytes], object]] = [load_stored, check_stored]
    for read in stored:
        with pytest.raises(StoredNotJSON) as caught:
            read(raw)
        assert caught.value.message.endswith(TOO_DEEP)


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


def test_infinity_is_refused_not_written_as_null() -> None:
    """1e400 reads as infinity, which orjson would write as null; it is refused instead."""
    value = load_json(b'{"big": 1e400, "none": null}')
    with pytest.raises(ValueError, match="Out of range float"):
        dump_parsed(value)
    with pytest.raises(NotJSON, match="a number is out of the range of a double"):
        encode_json(value)
    assert dump_parsed(load_json(b'{"none": null}')) == b'{"none":null}'
