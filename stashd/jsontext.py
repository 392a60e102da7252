r"""JSON text as Stash reads and writes it: the standard library's answers, orjson's speed.

The standard library's ``json`` defines what Stash accepts, what it stores and what its
errors say (the SPEC quotes them). orjson answers first, and only where its answer is
provably the same; everything else, every error included, goes through ``json`` as before:

- orjson refuses some texts ``json`` accepts (``1e400`` as infinity, lone surrogate
  escapes such as ``"\ud800"``): any refusal is parsed again by ``json``, which then
  accepts the text or raises the error it always raised, at the same position.
- orjson reads an integer beyond 64 bits as a float, where ``json`` keeps it exact: a text
  with a run of 19 digits (the shortest such integer) is read by ``json``.
- ``json`` recurses, and fails past Python's recursion limit (about 1000 levels, less the
  caller's frames); orjson goes to 1024 levels. A text with many opening brackets could
  nest that deep, so it is read by ``json``, and refused as not JSON (:data:`TOO_DEEP`)
  where ``json`` runs out of recursion.
- orjson writes floats below 1e-4 differently (``0.00001``, ``1.5e-7``, where ``json``
  writes ``1e-05`` and ``1.5e-07``), writes infinity as ``null`` where ``json`` refuses
  it, and refuses integers beyond 64 bits, lone surrogates and nesting deeper than 254
  levels: such output is written again by ``json``.

tests/test_jsontext.py checks each of these against ``json`` itself.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Final

import orjson

from stashd.errors import NotJSON, StoredNotJSON

if TYPE_CHECKING:
    from collections.abc import Callable

#: The error of a text nested past what the standard library's parser can follow (its
#: recursion, about 1000 levels): refused as not JSON, never a failure of the server.
TOO_DEEP: Final = "nested too deeply (about 1000 levels is the limit)"

#: Fewer opening brackets than this cannot nest deep enough to reach the standard
#: library's recursion limit, so orjson's acceptance is the standard library's.
NESTING_SAFE: Final = 500

# A text's shape, for both checks in one pass: each opening bracket as "[", each digit
# as "0", anything else as " " (a translation is several times faster than a regex).
_SHAPE: Final = bytes(
    91 if b in b"[{" else 48 if 48 <= b <= 57 else 32  # "[", "0", " "
    for b in range(256)
)
# 19 digits in a row: the shortest integer that may not fit in 64 bits (or digits in a
# string, which costs only the slower path).
_LONG_DIGITS: Final = b"0" * 19
# orjson's forms of a float below 1e-4 that json writes otherwise: 1e-05 as 0.00001, and
# 1.5e-07 as 1.5e-7 (a one-digit exponent). Text in strings may match too, harmlessly.
_OTHER_FLOAT: Final = re.compile(rb"0\.0000|e-\d(?!\d)")


def _orjson_may_judge(raw: bytes) -> bool:
    """Whether orjson's verdict on ``raw`` (JSON or not) is the standard library's."""
    return raw.count(b"[") + raw.count(b"{") < NESTING_SAFE


def _orjson_read(raw: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """The value orjson reads from ``raw``, where it is the standard library's; else _UNREAD."""
    shape = raw.translate(_SHAPE)
    if shape.count(b"[") >= NESTING_SAFE:
        return _UNREAD
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _UNREAD  # json gives the verdict, and its own error text
    return _UNREAD if _LONG_DIGITS in shape else value


_UNREAD: Final = object()


def load_json(raw: bytes, what: str = "value") -> Any:  # noqa: ANN401 - any JSON value
    """Parse JSON sent by a client; the error names the position, never the input.

    The text must be UTF-8 (RFC 8259 section 8.1): ``json.loads`` would also guess UTF-16
    and UTF-32 from bytes, and such a value could not be embedded in a UTF-8 reply.
    """
    value = _orjson_read(raw)
    if value is not _UNREAD:
        return value
    return _load_slowly(raw, what)


def _orjson_accepts(raw: bytes) -> bool:
    """True when orjson may judge ``raw`` and finds it JSON; False sends it to ``json``.

    A long integer that orjson reads as a float is still JSON, so for a verdict alone
    its value need not be looked at.
    """
    if not _orjson_may_judge(raw):
        return False
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def check_json(raw: bytes, what: str = "value") -> None:
    """:func:`load_json` for its verdict alone: raises what it raises, returns nothing."""
    if not _orjson_accepts(raw):
        _load_slowly(raw, what)


def _load_slowly(raw: bytes, what: str) -> Any:  # noqa: ANN401 - any JSON value
    """:func:`load_json` by the standard library alone."""
    try:
        return _DECODER.decode(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise NotJSON(
            json_error_position(exc), what, line=exc.lineno, column=exc.colno, position=exc.pos
        ) from None
    except ValueError as exc:
        raise NotJSON(json_error_position(exc), what) from None
    except RecursionError:
        raise NotJSON(TOO_DEEP, what) from None


def load_stored(raw: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """Parse a stored value that must be JSON to be read (it may have been SET raw over RESP).

    The same rules as :func:`load_json`; the error is :class:`StoredNotJSON`, with the
    position, since the caller did not send this text.
    """
    value = _orjson_read(raw)
    if value is not _UNREAD:
        return value
    return _load_stored_slowly(raw)


def check_stored(raw: bytes) -> None:
    """:func:`load_stored` for its verdict alone: raises what it raises, returns nothing."""
    if not _orjson_accepts(raw):
        _load_stored_slowly(raw)


def _load_stored_slowly(raw: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """:func:`load_stored` by the standard library alone."""
    try:
        text = raw.decode("utf-8")
        try:
            # The scanner alone, as JSONDecoder.decode calls it but without the two
            # whitespace matches around it: values Stash writes have no whitespace
            # around them, and this halves the cost of reading one. Anything else
            # (whitespace, trailing text, nothing) goes through decode() for its rules
            # and its error message.
            value, end = _SCAN(text, 0)
            if end == len(text):
                return value
        except StopIteration:
            pass
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise StoredNotJSON(
            json_error_position(exc), line=exc.lineno, column=exc.colno, position=exc.pos
        ) from None
    except ValueError as exc:
        raise StoredNotJSON(json_error_position(exc)) from None
    except RecursionError:
        raise StoredNotJSON(TOO_DEEP) from None


def dump_json(value: object) -> bytes:
    """Compact UTF-8 JSON, the form Stash writes when it builds a document itself.

    Any Python value, as the standard library encodes it (ValueError for infinity,
    TypeError for what JSON cannot hold); see :func:`dump_parsed` for parsed values.
    """
    return _ENCODER.encode(value).encode()


def dump_parsed(value: object) -> bytes:
    """:func:`dump_json` of a value read by this module's parsers (JSON types only), sooner.

    Only for such values: orjson would also write dates, dataclasses or enums, which the
    standard library refuses.
    """
    try:
        out = orjson.dumps(value)
    except orjson.JSONEncodeError:
        return dump_json(value)
    if b"null" in out or (
        (b"e-" in out or b"0.0000" in out) and _OTHER_FLOAT.search(out) is not None
    ):
        # null may be an infinity json refuses; a small float is written json's way.
        return dump_json(value)
    # A copy, because the text is stored: orjson writes into a larger buffer and shrinks
    # it in place, and a store full of such remnants made glibc give heap pages back and
    # fault them in again on every write (measured: a page fault and 10 us per write).
    return bytes(memoryview(out))


def _reject_constant(name: str) -> float:
    """NaN and Infinity are not JSON (RFC 8259), though Python's parser accepts them."""
    msg = f"{name} is not a JSON value"
    raise ValueError(msg)


# Built once: json.loads and json.dumps with any option build a new decoder or encoder
# on every call, which costs more than parsing a small document.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
# The decoder's scanner (typeshed does not list the attribute; the json module sets it).
_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = _DECODER.scan_once  # type: ignore[attr-defined]


def json_error_position(exc: ValueError) -> str:
    """The decoder's message without the document: 'Expecting value at line 1 column 5'."""
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno} (char {exc.pos})"
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 at byte {exc.start}"
    return str(exc)
