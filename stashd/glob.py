r"""Redis glob patterns (KEYS, SCAN MATCH) compiled to regular expressions.

Redis's stringmatchlen differs from fnmatch: ``[^a]`` negates, ``\\`` escapes anywhere,
and an unclosed ``[`` matches literally. Patterns are compiled once and cached.
"""

from __future__ import annotations

import functools
import re


@functools.lru_cache(maxsize=256)
def compile_glob(pattern: bytes) -> re.Pattern[bytes]:
    """The regex that matches exactly the keys Redis's glob ``pattern`` matches."""
    out = bytearray()
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i : i + 1]
        if c == b"*":
            out += b".*"
        elif c == b"?":
            out += b"."
        elif c == b"\\" and i + 1 < n:
            i += 1
            out += re.escape(pattern[i : i + 1])
        elif c == b"[":
            end = _class_end(pattern, i + 1)
            if end < 0:
                out += re.escape(c)
            else:
                out += _char_class(pattern[i + 1 : end])
                i = end
        else:
            out += re.escape(c)
        i += 1
    return re.compile(bytes(out) + rb"\Z", re.DOTALL)


def _class_end(pattern: bytes, start: int) -> int:
    """Index of the ``]`` closing a class that starts at ``start``, or -1."""
    i = start
    if i < len(pattern) and pattern[i : i + 1] == b"^":
        i += 1
    while i < len(pattern):
        c = pattern[i : i + 1]
        if c == b"\\":
            i += 2
            continue
        if c == b"]":
            return i
        i += 1
    return -1


def _char_class(body: bytes) -> bytes:
    """Translate the inside of ``[...]`` (ranges, ``^`` negation, escapes)."""
    out = bytearray(b"[")
    i = 0
    if body[:1] == b"^":
        out += b"^"
        i = 1
    while i < len(body):
        c = body[i : i + 1]
        if c == b"\\" and i + 1 < len(body):
            i += 1
            out += re.escape(body[i : i + 1])
        elif c == b"-" and 0 < i < len(body) - 1:
            out += b"-"
        else:
            out += re.escape(c)
        i += 1
    return bytes(out + b"]") if len(out) > 1 + (body[:1] == b"^") else b"(?!)"


def escape_glob(text: bytes) -> bytes:
    """Escape glob characters so ``text`` matches only itself inside a pattern."""
    return re.sub(rb"([*?\[\]\\])", rb"\\\1", text)
