"""Bit commands on a string: SETBIT, GETBIT and BITCOUNT.

Bit 0 is the most significant bit of the first byte, as in Redis. A string is read and
written as every string is (:mod:`stashd.ops.containers`), so WRONGTYPE, the TTL, the
payload cap and the version follow the one set of rules; SETBIT past the payload cap is
refused from its offset alone, before the string is grown.
"""

from __future__ import annotations

from typing import Final

from stashd.commands.base import (
    DENYOOM,
    FAST,
    READONLY,
    WRITE,
    Command,
    Deferred,
    Reply,
    Session,
    int_arg,
)
from stashd.errors import CommandError, NotInteger, SyntaxErr
from stashd.ops import parse_int64
from stashd.types import Kind

STRING: Final = Kind.STRING
#: Redis bounds a bit offset by proto-max-bulk-len: 512 MB of bits.
BIT_OFFSET_LIMIT: Final = 512 * 1024 * 1024 * 8


def _offset(raw: bytes) -> int:
    """A bit offset, refused in Redis's words outside 0 .. 2**32 - 1."""
    try:
        offset = parse_int64(raw)
    except NotInteger:
        offset = -1
    if not 0 <= offset < BIT_OFFSET_LIMIT:
        raise CommandError("bit offset is not an integer or out of range")
    return offset


def setbit(s: Session, args: list[bytes]) -> Reply:
    """SETBIT key offset value: the bit's old value; the string grows with zero bytes."""
    p = s.require()
    offset = _offset(args[2])
    try:
        bit = parse_int64(args[3])
    except NotInteger:
        bit = -1
    if bit not in (0, 1):
        raise CommandError("bit is not an integer or out of range")
    byte = offset >> 3
    s.service.check_size(p, byte + 1)
    mask = 0x80 >> (offset & 7)

    def edit(value: bytes | None) -> tuple[bytes, int]:
        data = bytearray(value or b"")
        if len(data) <= byte:
            data.extend(bytes(byte + 1 - len(data)))
        old = 1 if data[byte] & mask else 0
        data[byte] = data[byte] | mask if bit else data[byte] & ~mask
        return bytes(data), old

    return Deferred(s.service.edit(p, args[1], STRING, edit))


def getbit(s: Session, args: list[bytes]) -> Reply:
    """GETBIT key offset: 0 past the end and for a missing key."""
    offset = _offset(args[2])
    byte, mask = offset >> 3, 0x80 >> (offset & 7)

    def look(value: bytes | None) -> int:
        return 1 if value is not None and byte < len(value) and value[byte] & mask else 0

    return Deferred(s.service.inspect(s.require(), args[1], STRING, look))


def _popcount(data: bytes) -> int:
    return int.from_bytes(data, "big").bit_count()


def _count(value: bytes, start: int, end: int, in_bits: bool) -> int:
    """BITCOUNT over [start, end] in bytes or bits, by Redis's rules for the indexes."""
    total = len(value) * 8 if in_bits else len(value)
    if start < 0:
        start = max(total + start, 0)
    if end < 0:
        end = max(total + end, 0)
    end = min(end, total - 1)
    if start > end:
        return 0
    if not in_bits:
        return _popcount(value[start : end + 1])
    first, last = start >> 3, end >> 3
    count = _popcount(value[first : last + 1])
    # Take off the bits of the first and last bytes that lie outside the range.
    count -= _popcount(bytes([value[first] & ~((1 << (8 - (start & 7))) - 1) & 0xFF]))
    count -= _popcount(bytes([value[last] & ((1 << (7 - (end & 7))) - 1)]))
    return count


def bitcount(s: Session, args: list[bytes]) -> Reply:
    """BITCOUNT key [start end [BYTE | BIT]]: how many bits are set."""
    n = len(args)
    start, end, in_bits = 0, -1, False
    if n in (4, 5):
        start, end = int_arg(args[2]), int_arg(args[3])
        if n == 5:
            unit = args[4].upper()
            if unit not in (b"BYTE", b"BIT"):
                raise SyntaxErr
            in_bits = unit == b"BIT"
    elif n != 2:
        raise SyntaxErr

    def look(value: bytes | None) -> int:
        return 0 if not value else _count(value, start, end, in_bits)

    return Deferred(s.service.inspect(s.require(), args[1], STRING, look))


COMMANDS: Final = (
    Command(
        "setbit",
        setbit,
        4,
        (WRITE, DENYOOM),
        "bitmap",
        "Set or clear one bit of a key's value.",
        "SETBIT key offset value",
        "2.2.0",
        1,
        1,
        1,
    ),
    Command(
        "getbit",
        getbit,
        3,
        (READONLY, FAST),
        "bitmap",
        "One bit of a key's value.",
        "GETBIT key offset",
        "2.2.0",
        1,
        1,
        1,
    ),
    Command(
        "bitcount",
        bitcount,
        -2,
        (READONLY,),
        "bitmap",
        "How many bits of a key's value are set.",
        "BITCOUNT key [start end [BYTE | BIT]]",
        "2.6.0",
        1,
        1,
        1,
    ),
)
