"""How a hash, set or sorted set is kept as one stored value: its items as length-prefixed records.

A container is one entry like a string (one key, one expiry, one version), so every
store keeps it with no code of its own and every rule on entries (TTL, payload cap,
quota, version) holds for it unchanged. Its value is a run of records, each a 4-byte
big-endian length and that many bytes: a hash is field, value, field, value...; a set
its members; a sorted set member, score (8-byte IEEE double), member, score... The
order of a hash's or set's records is the order fields were first added, which HGETALL
and SMEMBERS then return. Lists have a layout of their own (:mod:`stashd.lists`), for
pushes and pops at both ends without reading the rest.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

_LEN: Final = struct.Struct(">I")
_SCORE: Final = struct.Struct(">d")
#: Bytes a record adds to its item: what the payload cap and quotas count on top.
RECORD_OVERHEAD: Final = _LEN.size


def pack(items: Iterable[bytes]) -> bytes:
    """Items as records, in order."""
    length = _LEN.pack
    return b"".join([part for item in items for part in (length(len(item)), item)])


def unpack(blob: bytes) -> list[bytes]:
    """The items of :func:`pack`'s records, in order."""
    items: list[bytes] = []
    append = items.append
    at, end = 0, len(blob)
    read = _LEN.unpack_from
    while at < end:
        (n,) = read(blob, at)
        at += 4
        append(blob[at : at + n])
        at += n
    return items


def drop(blob: bytes, items: list[bytes], i: int) -> bytes:
    """``blob`` without its record ``i``, where ``items`` is what :func:`unpack` read of it.

    The record's place is found from the lengths before it and cut out, so removing one
    item (SPOP) copies the bytes once instead of packing every other item again.
    """
    at = RECORD_OVERHEAD * i + sum(map(len, items[:i]))
    return blob[:at] + blob[at + RECORD_OVERHEAD + len(items[i]) :]


def unpack_map(blob: bytes | None) -> dict[bytes, bytes]:
    """A hash's fields and values, in the order fields were added; empty for no key."""
    if not blob:
        return {}
    items = unpack(blob)
    return dict(zip(items[::2], items[1::2], strict=True))


def pack_map(fields: dict[bytes, bytes]) -> bytes:
    """A hash's records."""
    return pack([part for pair in fields.items() for part in pair])


def unpack_members(blob: bytes | None) -> dict[bytes, None]:
    """A set's members, in the order they were added (a dict keeps it); empty for no key."""
    return dict.fromkeys(unpack(blob)) if blob else {}


def pack_members(members: Iterable[bytes]) -> bytes:
    """A set's records."""
    return pack(members)


def may_hold(blob: bytes, member: bytes) -> bool:
    """False when ``member`` is surely not among a set's records, found by one search in C.

    A member's record (its length, then its bytes) occurs in the value whole, so bytes
    that occur nowhere rule it out without decoding a record: SADD of a new member and
    SISMEMBER of an absent one stay one pass of ``bytes.find`` over a large set. True
    means only maybe, as those bytes can straddle two records; decode to be sure.
    """
    return blob.find(_LEN.pack(len(member)) + member) >= 0


def unpack_scores(blob: bytes | None) -> dict[bytes, float]:
    """A sorted set's members and scores; empty for no key."""
    if not blob:
        return {}
    items = unpack(blob)
    score = _SCORE.unpack
    return {m: score(s)[0] for m, s in zip(items[::2], items[1::2], strict=True)}


def pack_scores(scores: dict[bytes, float]) -> bytes:
    """A sorted set's records."""
    score = _SCORE.pack
    return pack([part for m, s in scores.items() for part in (m, score(s))])
