r"""Redis glob patterns (KEYS, SCAN MATCH, CONFIG GET) compiled to regexes that never backtrack.

A key matches here exactly when Redis 7's ``stringmatchlen`` matches it, quirks included:
the pattern is tokenized as that C function walks it. Since its CVE-2022-36021 fix, Redis
commits each star-separated segment to its leftmost occurrence (only the last one sits at
the end of the key); the atomic group ``(?>.*?segment)`` says the same to ``re``, so a
pattern such as ``a*a*a*...b`` costs one scan of the key per segment, instead of tries
exponential in its stars that froze the event loop.
"""

from __future__ import annotations

import functools
import re
from typing import Final

_STAR: Final = ord("*")
_QUESTION: Final = ord("?")
_OPEN: Final = ord("[")
_CLOSE: Final = ord("]")
_CARET: Final = ord("^")
_DASH: Final = ord("-")
_BACKSLASH: Final = ord("\\")

#: A token is the set of bytes it accepts, as a 256-bit mask; ``None`` is a run of stars.
_Token = int | None
_ANY: Final = (1 << 256) - 1
_SIGN_BIT: Final = 0x80
_BYTES: Final = 256

#: Redis refuses to recurse deeper than this many ``*`` (its CVE-2024-31228 guard): a
#: pattern whose match would pass more stars followed by something else matches nothing.
MAX_NESTING: Final = 1000

_NEVER: Final = re.compile(rb"(?!)")


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: bytes) -> re.Pattern[bytes]:
    """The regex whose ``match`` accepts exactly the keys Redis's glob ``pattern`` matches.

    As in Redis's ``stringmatchlen``, the empty key matches only the empty pattern (KEYS
    and SCAN themselves treat the pattern ``*`` as "every key").
    """
    segments: list[list[int]] = [[]]
    for token in _tokens(pattern):
        if token is None:
            segments.append([])
        elif token == 0:  # an empty class: no key has a byte for it
            return _NEVER
        else:
            segments[-1].append(token)
    if len(segments) == 1:  # no star at all: the whole key, exactly
        return re.compile(_segment(segments[0]) + rb"\Z", re.DOTALL)
    head, *middle, last = segments
    if last:
        stars_before_more = len(middle) + 1
    else:  # a trailing star accepts whatever is left, and is no deeper nesting
        stars_before_more = len(middle)
        if not head and not middle:  # only stars: any key but the empty one
            return re.compile(rb".", re.DOTALL)
    if stars_before_more > MAX_NESTING:
        return _NEVER
    out = bytearray(_segment(head))
    for segment in middle:
        out += b"(?>.*?" + _segment(segment) + b")"
    if last:
        # The last segment sits at the very end: take the rest of the key, at least as
        # many bytes as the segment has and possessively (no backtracking), then look
        # behind. Its tokens are one byte each: the fixed width look-behind requires.
        out += b".{%d,}+(?<=" % len(last) + _segment(last) + b")"
    return re.compile(bytes(out), re.DOTALL)


def _tokens(pattern: bytes) -> list[_Token]:
    """The pattern's tokens, read as ``stringmatchlen`` walks it."""
    tokens: list[_Token] = []
    n = len(pattern)
    i = 0
    while i < n:
        c = pattern[i]
        if c == _STAR:
            while i + 1 < n and pattern[i + 1] == _STAR:
                i += 1
            tokens.append(None)
        elif c == _QUESTION:
            tokens.append(_ANY)
        elif c == _OPEN:
            mask, i = _class(pattern, i + 1)
            tokens.append(mask)
        elif c == _BACKSLASH and i + 1 < n:  # a trailing lone backslash is literal
            i += 1
            tokens.append(1 << pattern[i])
        else:
            tokens.append(1 << c)
        i += 1
    return tokens


def _class(pattern: bytes, i: int) -> tuple[int, int]:
    r"""The bytes a class starting at ``i`` (just after ``[``) accepts, and the index of its end.

    Redis's quirks, kept: with no closing ``]`` the rest of the pattern is the class;
    ``x-y`` is a range whenever three bytes are left, so ``[a-]`` is the range ``]``..``a``
    (unclosed) and a ``\`` as the range's end escapes nothing; reversed ranges are
    swapped; range bounds compare as signed C chars, so bytes 0x80-0xff come below 0x00.
    """
    n = len(pattern)
    negate = i < n and pattern[i] == _CARET
    if negate:
        i += 1
    mask = 0
    while True:
        if i + 1 < n and pattern[i] == _BACKSLASH:
            i += 1
            mask |= 1 << pattern[i]
        elif i < n and pattern[i] == _CLOSE:
            break
        elif i >= n:
            i = n - 1
            break
        elif i + 2 < n and pattern[i + 1] == _DASH:
            low, high = sorted((_signed(pattern[i]), _signed(pattern[i + 2])))
            mask |= _signed_range(low, high)
            i += 2
        else:
            mask |= 1 << pattern[i]
        i += 1
    return (mask ^ _ANY if negate else mask), i


def _signed(byte: int) -> int:
    """``byte`` as a signed C char."""
    return byte - _BYTES if byte & _SIGN_BIT else byte


def _signed_range(low: int, high: int) -> int:
    """The mask of the bytes whose signed value lies in ``low..high``."""
    mask = 0
    if high >= 0:
        mask |= _bits(max(low, 0), high)
    if low < 0:
        mask |= _bits(low + _BYTES, min(high, -1) + _BYTES)
    return mask


def _bits(first: int, last: int) -> int:
    """The mask with bits ``first..last`` set."""
    return ((1 << (last + 1)) - 1) ^ ((1 << first) - 1)


def _segment(tokens: list[int]) -> bytes:
    """The regex for a run of one-byte tokens."""
    return b"".join(map(_byte_set, tokens))


def _byte_set(mask: int) -> bytes:
    """The regex for one byte out of the non-empty set ``mask`` (``.`` under DOTALL)."""
    if mask == _ANY:
        return b"."
    if mask & (mask - 1) == 0:
        return re.escape(bytes([mask.bit_length() - 1]))
    out = bytearray(b"[")
    while mask:  # one step per run of consecutive bytes
        first = (mask & -mask).bit_length() - 1
        ones = mask >> first
        last = first + (ones ^ (ones + 1)).bit_length() - 2
        out += re.escape(bytes([first]))
        if last > first:
            out += b"-" + re.escape(bytes([last]))
        mask &= ~_bits(first, last)
    return bytes(out + b"]")


def escape_glob(text: bytes) -> bytes:
    """Escape glob characters so ``text`` matches only itself inside a pattern."""
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", text)
