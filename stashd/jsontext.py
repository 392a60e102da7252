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
  caller's frames); orjson goes to 1024 levels. So before either parser sees a text, its
  depth is measured (only when it has more than :data:`MAX_DEPTH` opening brackets, the
  least a deeper text needs), and a text nested deeper than :data:`MAX_DEPTH` is refused
  as not JSON, naming the limit and its depth. Within the limit both parsers read the
  same texts, and every step after them (a merge, writing the result) stays far from
  Python's recursion limit.
- orjson writes floats below 1e-4 differently (``0.00001``, ``1.5e-7``, where ``json``
  writes ``1e-05`` and ``1.5e-07``), writes infinity as ``null`` where ``json`` refuses
  it, and refuses integers beyond 64 bits, lone surrogates and nesting deeper than 254
  levels: such output is written again by ``json``.

tests/test_jsontext.py checks each of these against ``json`` itself.
"""

from __future__ import annotations

import json
import operator
import re
from itertools import accumulate, repeat
from typing import TYPE_CHECKING, Any, Final

import orjson

from stashd.errors import NotJSON, StoredNotJSON, at_position, nested_past

if TYPE_CHECKING:
    from collections.abc import Callable

#: How deep arrays and objects may nest in a JSON text Stash reads (``[]`` is one level, a
#: scalar none): the one depth limit of every door, of merge patches and of stored values
#: read back. The standard library's parser and writer recurse once per level, against
#: Python's limit of about 1000 frames shared with their caller; 512 leaves the caller
#: the other half. An HTTP request body's envelope is one of the levels.
MAX_DEPTH: Final = 512

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


def _orjson_read(raw: bytes, shape: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """The value orjson reads from ``raw``, where it is the standard library's; else _UNREAD.

    ``shape`` is ``raw.translate(_SHAPE)``; ``raw`` is within :data:`MAX_DEPTH`.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _UNREAD  # json gives the verdict, and its own error text
    return _UNREAD if _LONG_DIGITS in shape else value


_UNREAD: Final = object()


def _orjson_accepts(raw: bytes) -> bool:
    """True when orjson finds ``raw`` (within :data:`MAX_DEPTH`) JSON; False sends it to ``json``.

    A long integer that orjson reads as a float is still JSON, so for a verdict alone
    its value need not be looked at.
    """
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


# -- depth ----------------------------------------------------------------------------------
# Brackets and quotes alone, openers as "[" and closers as "]"; everything else is deleted.
_BRACKETS: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b'[]{}"')
#: Passes that peel one level off each (enough for the documents people write) before the
#: rest is measured another way; a pass that peels off less than a quarter of what is left
#: ends the peeling too, so a deep text costs a pass or two, not one per level.
_PEELS: Final = 16


def nesting(raw: bytes) -> int:
    """How deep arrays and objects nest in the text ``raw``: 0 for a scalar, 1 for ``[1]``.

    Brackets in strings do not count. Measured without parsing and without recursion, in
    a few passes of C code over the bytes (cheaper than parsing the text), so any depth
    is known before a parser recurses into it. For a text that is not JSON the number is
    an estimate; a parser refuses such a text anyway.
    """
    if b"\\" in raw:
        # A run of backslashes pairs off from its start, each pair one escaped backslash,
        # and an odd one left escapes what follows: dropping the pairs, then escaped
        # quotes, leaves only quotes that delimit strings (other escapes are deleted next).
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Two quotes in a row hold no bracket between them, whether they open and close one
    # string or close one and open the next: they go first (most strings), and what is
    # left between quotes is cut out.
    shape = raw.translate(_BRACKETS, _NOT_BRACKETS).replace(b'""', b"")
    if b'"' in shape:
        shape = b"".join(shape.split(b'"')[::2])
    # Each pass removes every innermost pair, which takes exactly one level off.
    peeled = 0
    while shape and peeled < _PEELS:
        inner = shape.replace(b"[]", b"")
        if len(inner) == len(shape):
            break  # unbalanced: not JSON
        peeled += 1
        shrunk = len(inner) * 4 <= len(shape) * 3
        shape = inner
        if not shrunk:
            break
    if not shape:
        return peeled
    # What is left nests deeper than the peeling went, so it holds few innermost pairs.
    # Cut where a closer meets an opener, each piece is openers then closers, and the
    # depth at the end of a piece's openers is all openers so far less the closers of the
    # pieces before (each "][" cut took one of each, which cancel).
    pieces = shape.split(b"][")
    opens = list(map(bytes.count, pieces, repeat(b"[")))
    closes = map(operator.sub, map(len, pieces), opens)
    deepest: int = max(map(operator.sub, accumulate(opens), accumulate(closes, initial=0)))
    return peeled + deepest


def value_nesting(value: object) -> int:
    """:func:`nesting` of a Python value's JSON text (lists, tuples, dicts), level by level.

    For a value the writer could not write (past its recursion): it has no cycle, since
    the writer refuses one first.
    """
    depth = 0
    level = [value]
    while containers := [v for v in level if isinstance(v, list | tuple | dict)]:
        depth += 1
        level = [item for c in containers for item in (c.values() if isinstance(c, dict) else c)]
    return depth


def _past_limit(raw: bytes, opened: int) -> int:
    """The depth of ``raw`` when past :data:`MAX_DEPTH`, else 0; ``opened`` counts its openers.

    A text needs more opening brackets than the limit to nest past it, so most texts
    are let through on that count alone.
    """
    if opened <= MAX_DEPTH:
        return 0
    depth = nesting(raw)
    return depth if depth > MAX_DEPTH else 0


def _nested(depth: int) -> tuple[str, int | None, int | None]:
    """The detail, limit and depth of the error for a text nested ``depth`` levels deep.

    Past :data:`MAX_DEPTH` the detail names the limit. Within it, it can only mean that
    the caller's own stack left the standard library no room for that many levels (the
    daemon's stack always has room), and it says so instead of naming a limit not passed.
    """
    if depth > MAX_DEPTH:
        return nested_past(depth, MAX_DEPTH), MAX_DEPTH, depth
    return f"nested {depth} levels deep, more than the caller's stack has room for", None, None


def too_deep(depth: int, what: str = "value") -> NotJSON:
    """The error for a text (or value) sent as ``what`` that nests ``depth`` levels deep."""
    detail, limit, actual = _nested(depth)
    return NotJSON(detail, what, limit=limit, actual=actual)


def _stored_too_deep(depth: int) -> StoredNotJSON:
    """:func:`too_deep` for a stored value (written before the limit existed)."""
    detail, limit, actual = _nested(depth)
    return StoredNotJSON(detail, limit=limit, actual=actual)


def check_depth(raw: bytes, what: str = "value") -> None:
    """Refuse a text nested past :data:`MAX_DEPTH`, as :func:`load_json` would."""
    depth = _past_limit(raw, raw.count(b"[") + raw.count(b"{"))
    if depth:
        raise too_deep(depth, what)


# -- reading ----------------------------------------------------------------------------------
def load_json(raw: bytes, what: str = "value") -> Any:  # noqa: ANN401 - any JSON value
    """Parse JSON sent by a client; the error names the position, never the input.

    The text must be UTF-8 (RFC 8259 section 8.1): ``json.loads`` would also guess UTF-16
    and UTF-32 from bytes, and such a value could not be embedded in a UTF-8 reply. It may
    nest :data:`MAX_DEPTH` levels deep at most.
    """
    shape = raw.translate(_SHAPE)
    depth = _past_limit(raw, shape.count(b"["))
    if depth:
        raise too_deep(depth, what)
    value = _orjson_read(raw, shape)
    if value is not _UNREAD:
        return value
    return _load_slowly(raw, what)


def check_json(raw: bytes, what: str = "value") -> None:
    """:func:`load_json` for its verdict alone: raises what it raises, returns nothing."""
    check_depth(raw, what)
    if not _orjson_accepts(raw):
        _load_slowly(raw, what)


def _load_slowly(raw: bytes, what: str) -> Any:  # noqa: ANN401 - any JSON value
    """:func:`load_json` by the standard library alone (``raw`` is within the limit)."""
    try:
        return _DECODER.decode(raw.decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise NotJSON(
            json_error_position(exc), what, line=exc.lineno, column=exc.colno, position=exc.pos
        ) from None
    except ValueError as exc:
        raise NotJSON(json_error_position(exc), what) from None
    except RecursionError:
        raise too_deep(nesting(raw), what) from None


def load_stored(raw: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """Parse a stored value that must be JSON to be read (it may have been SET raw over RESP).

    The same rules as :func:`load_json`; the error is :class:`StoredNotJSON`, with the
    position, since the caller did not send this text. A value nested past
    :data:`MAX_DEPTH` (stored before there was a limit) is refused the same way, unread.
    """
    shape = raw.translate(_SHAPE)
    depth = _past_limit(raw, shape.count(b"["))
    if depth:
        raise _stored_too_deep(depth)
    value = _orjson_read(raw, shape)
    if value is not _UNREAD:
        return value
    return _load_stored_slowly(raw)


def check_stored(raw: bytes) -> None:
    """:func:`load_stored` for its verdict alone: raises what it raises, returns nothing."""
    depth = _past_limit(raw, raw.count(b"[") + raw.count(b"{"))
    if depth:
        raise _stored_too_deep(depth)
    if not _orjson_accepts(raw):
        _load_stored_slowly(raw)


def _load_stored_slowly(raw: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """:func:`load_stored` by the standard library alone (``raw`` is within the limit)."""
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
        raise _stored_too_deep(nesting(raw)) from None


# -- writing ----------------------------------------------------------------------------------
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


def unwritable(exc: ValueError, holder: str) -> str:
    r"""Why a parsed value has no JSON text, for the NotJSON that refuses it.

    Python reads ``1e400`` as infinity and ``"\ud800"`` as a lone surrogate; JSON text
    can carry neither back, so a value holding one is refused before anything is written.
    """
    if isinstance(exc, UnicodeError):
        return f"{holder} holds a lone surrogate (a \\uD800-\\uDFFF escape without its pair)"
    return f"{holder} holds a number out of the range of a double (such as 1e400)"


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
        return at_position(exc.msg, exc.lineno, exc.colno, exc.pos)
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 at byte {exc.start}"
    return str(exc)
