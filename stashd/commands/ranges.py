"""String commands on a part of a value, or on two values: GETRANGE, SETRANGE and LCS.

The reads and writes are those of every string (an inspection or an edit of a key of
kind STRING, :mod:`stashd.ops.containers`), so WRONGTYPE, the TTL, the payload cap and
the version follow the one set of rules; a write that would pass the payload cap is
refused from its offset alone, before any of it is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd import lcs
from stashd.commands.base import (
    DENYOOM,
    READONLY,
    WRITE,
    Command,
    Deferred,
    Reply,
    Session,
    int_arg,
)
from stashd.errors import CommandError, SyntaxErr
from stashd.ops import KEEP
from stashd.types import Kind

if TYPE_CHECKING:
    from stashd.types import Entry

STRING: Final = Kind.STRING
#: Cells of the table LCS works through (one per pair of positions). Redis bounds its
#: table's memory by proto-max-bulk-len (512 MB, 134 million cells); here the work is
#: bounded, as it runs where every client waits: 2**24 cells take about 10 ms.
LCS_CELLS_MAX: Final = 2**24


def _substring(value: bytes, start: int, end: int) -> bytes:
    """GETRANGE's slice, by Redis's rules for negative and out-of-range indexes."""
    n = len(value)
    if start < 0 and end < 0 and start > end:
        return b""
    if start < 0:
        start = max(n + start, 0)
    if end < 0:
        end = max(n + end, 0)
    end = min(end, n - 1)
    if start > end or n == 0:
        return b""
    return value[start : end + 1]


def getrange(s: Session, args: list[bytes]) -> Reply:
    """GETRANGE key start end (and SUBSTR): the bytes from start to end, both included."""
    start, end = int_arg(args[2]), int_arg(args[3])
    op = s.service.inspect(
        s.require(), args[1], STRING, lambda v: b"" if v is None else _substring(v, start, end)
    )
    return Deferred(op)


def setrange(s: Session, args: list[bytes]) -> Reply:
    """SETRANGE key offset value: overwrite from offset, padding with zero bytes; the new length."""
    p = s.require()
    offset = int_arg(args[2])
    if offset < 0:
        raise CommandError("offset is out of range")
    part = args[3]
    if part:
        s.service.check_size(p, offset + len(part))

    def edit(value: bytes | None) -> tuple[Any, int]:
        old = value or b""
        if not part:  # nothing to write: a missing key stays missing
            return KEEP, len(old)
        pad = b"\0" * (offset - len(old)) if offset > len(old) else b""
        new = old[:offset] + pad + part + old[offset + len(part) :]
        return new, len(new)

    return Deferred(s.service.edit(p, args[1], STRING, edit))


def lcs_(s: Session, args: list[bytes]) -> Reply:
    """LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]."""
    want_len = want_idx = with_len = False
    min_match = 0
    i = 3
    while i < len(args):
        opt = args[i].upper()
        if opt == b"IDX":
            want_idx = True
        elif opt == b"LEN":
            want_len = True
        elif opt == b"WITHMATCHLEN":
            with_len = True
        elif opt == b"MINMATCHLEN" and i + 1 < len(args):
            min_match = max(int_arg(args[i + 1]), 0)
            i += 1
        else:
            raise SyntaxErr
        i += 1
    if want_idx and want_len:
        raise CommandError("If you want both the length and indexes, please just use IDX.")

    def finish(entries: list[Entry | None]) -> Reply:
        if any(e is not None and e.kind != STRING for e in entries):
            return CommandError("The specified keys must contain string values")
        a, b = (b"" if e is None else e.value for e in entries)
        cells = (len(a) + 1) * (len(b) + 1)
        if cells > LCS_CELLS_MAX:
            return CommandError(
                f"LCS of values of {len(a)} and {len(b)} bytes needs {cells} cells, "
                f"the limit is {LCS_CELLS_MAX}"
            )
        if want_len:
            return lcs.length(a, b)
        found = lcs.common(a, b, min_match)
        if not want_idx:
            return found.text
        runs = [
            [[m.a_start, m.a_end], [m.b_start, m.b_end], *([m.length] if with_len else [])]
            for m in found.matches
        ]
        return {b"matches": runs, b"len": found.length}

    return Deferred(s.service.get_many(s.require(), [args[1], args[2]]), finish)


_R = (READONLY,)
_W = (WRITE,)

COMMANDS: Final = (
    Command(
        "getrange",
        getrange,
        4,
        _R,
        "string",
        "Get a part of a key's value.",
        "GETRANGE key start end",
        "2.4.0",
        1,
        1,
        1,
    ),
    Command(
        "substr",
        getrange,
        4,
        _R,
        "string",
        "Get a part of a key's value (GETRANGE's old name).",
        "SUBSTR key start end",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "setrange",
        setrange,
        4,
        (*_W, DENYOOM),
        "string",
        "Overwrite a part of a key's value from an offset.",
        "SETRANGE key offset value",
        "2.2.0",
        1,
        1,
        1,
    ),
    Command(
        "lcs",
        lcs_,
        -3,
        _R,
        "string",
        "The longest common subsequence of two keys' values.",
        "LCS key1 key2 [LEN] [IDX] [MINMATCHLEN min-match-len] [WITHMATCHLEN]",
        "7.0.0",
        1,
        2,
        1,
    ),
)
