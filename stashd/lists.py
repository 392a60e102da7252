"""The stored value of a list: a count, then each item framed by its length on both sides.

Layout: a 4-byte big-endian item count, then per item ``len(4) item len(4)``. The
length after an item (a boundary tag) lets a reader walk from the tail as cheaply as
from the head, so a push at either end is a byte concatenation and a pop, LINDEX near
an end or LRANGE of a few items reads only the items it returns; only commands that
look at every item (LREM, LINSERT, LPOS, LTRIM of the middle) decode the whole list.
"""

from __future__ import annotations

import struct
from typing import Final

_U32: Final = struct.Struct(">I")
_unpack_at: Final = _U32.unpack_from
_pack: Final = _U32.pack
#: Bytes of framing per item: its length before and after it.
FRAME: Final = 8
#: The bytes of the count in front.
HEADER: Final = 4


def count(value: bytes | None) -> int:
    """How many items the list holds (0 for no list)."""
    return 0 if not value else _unpack_at(value)[0]


def _frame(items: list[bytes]) -> bytes:
    """Items framed, in the given order."""
    parts = []
    for item in items:
        n = _pack(len(item))
        parts.append(n)
        parts.append(item)
        parts.append(n)
    return b"".join(parts)


def pack(items: list[bytes]) -> bytes | None:
    """A whole list's value; None when it is empty (an empty list is no key)."""
    if not items:
        return None
    return _pack(len(items)) + _frame(items)


def unpack(value: bytes | None) -> list[bytes]:
    """Every item, head first."""
    if not value:
        return []
    out = []
    pos = HEADER
    end = len(value)
    while pos < end:
        (n,) = _unpack_at(value, pos)
        start = pos + 4
        out.append(value[start : start + n])
        pos = start + n + 4
    return out


def push(value: bytes | None, items: list[bytes], *, left: bool) -> bytes:
    """The list with ``items`` pushed one by one at the head (LPUSH) or the tail."""
    total = count(value) + len(items)
    body = b"" if value is None else value[HEADER:]
    if left:
        return _pack(total) + _frame(items[::-1]) + body
    return _pack(total) + body + _frame(items)


def _head_end(value: bytes, n: int) -> tuple[list[bytes], int]:
    """The first ``n`` items and the offset just past them."""
    out = []
    pos = HEADER
    for _ in range(n):
        (size,) = _unpack_at(value, pos)
        start = pos + 4
        out.append(value[start : start + size])
        pos = start + size + 4
    return out, pos


def _tail_start(value: bytes, n: int) -> tuple[list[bytes], int]:
    """The last ``n`` items, tail first, and the offset where the first of them starts."""
    out = []
    pos = len(value)
    for _ in range(n):
        (size,) = _unpack_at(value, pos - 4)
        end = pos - 4
        out.append(value[end - size : end])
        pos = end - size - 4
    return out, pos


def pop(value: bytes, n: int, *, left: bool) -> tuple[bytes | None, list[bytes]]:
    """Take up to ``n`` items off one end: (the rest or None when empty, the items in pop order)."""
    total = count(value)
    n = min(n, total)
    if n == total:
        items = unpack(value)
        return None, (items if left else items[::-1])
    rest = _pack(total - n)
    if left:
        items, pos = _head_end(value, n)
        return rest + value[pos:], items
    items, pos = _tail_start(value, n)
    return rest + value[HEADER:pos], items


def index(value: bytes | None, i: int) -> bytes | None:
    """The item at ``i`` (negative from the tail), walking from the nearer end."""
    total = count(value)
    if i < 0:
        i += total
    if value is None or not 0 <= i < total:
        return None
    if i <= total // 2:
        items, _ = _head_end(value, i + 1)
    else:
        items, _ = _tail_start(value, total - i)
    return items[-1]


def span(value: bytes | None, start: int, stop: int) -> list[bytes]:
    """LRANGE's items from ``start`` to ``stop`` inclusive, Redis's index rules."""
    total = count(value)
    if value is None:
        return []
    if start < 0:
        start = max(start + total, 0)
    if stop < 0:
        stop += total
    stop = min(stop, total - 1)
    if start > stop:
        return []
    if total - 1 - stop < start:
        # Nearer the tail: walk from there.
        items, _ = _tail_start(value, total - start)
        return items[::-1][: stop - start + 1]
    items, _ = _head_end(value, stop + 1)
    return items[start:]
