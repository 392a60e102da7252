"""Stash's own commands: STASH, RECALL, UPDATE, FORGET."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stashd.commands.base import (
    FAST,
    READONLY,
    WRITE,
    Command,
    Deferred,
    Reply,
    Session,
    checked_ms,
    int_arg,
)
from stashd.errors import BadExtend, CommandError, SyntaxErr
from stashd.service import rfc3339, seconds_left

if TYPE_CHECKING:
    from stashd.types import Entry


def stash(s: Session, args: list[bytes]) -> Reply:
    """STASH json [EX seconds | PX milliseconds]: the new id."""
    p = s.require()
    ttl_ms: int | None = None
    if len(args) == 4:
        unit = args[2].upper()
        if unit not in (b"EX", b"PX"):
            raise SyntaxErr
        amount = int_arg(args[3])
        invalid = CommandError("invalid expire time in 'stash' command")
        if amount <= 0:
            raise invalid
        ttl_ms = checked_ms(amount, 1000 if unit == b"EX" else 1, invalid)
    elif len(args) != 2:
        raise SyntaxErr
    return Deferred(s.service.stash(p, args[1], ttl_ms))


def _recall_value(entry: Entry | None) -> Reply:
    return None if entry is None else entry.value


def recall(s: Session, args: list[bytes]) -> Reply:
    """RECALL id [WITHMETA]."""
    p = s.require()
    if len(args) == 3:
        if args[2].upper() != b"WITHMETA":
            raise SyntaxErr
        clock = s.service.clock

        def meta(entry: Entry | None) -> Reply:
            if entry is None:
                return None
            return {
                b"data": entry.value,
                b"ttl_remaining": seconds_left(entry.expires_at, clock()),
                b"expires_at": rfc3339(entry.expires_at).encode(),
                b"version": entry.version,
            }

        return Deferred(s.service.get(p, args[1]), meta)
    if len(args) != 2:
        raise SyntaxErr
    return Deferred(s.service.get(p, args[1]), _recall_value)


def _seconds_left(ms: int | None) -> Reply:
    """UPDATE's reply: the remaining TTL (ms, or None for a missing id) in rounded seconds."""
    return None if ms is None else seconds_left(ms, 0)


def update(s: Session, args: list[bytes]) -> Reply:
    """UPDATE id [DATA json | MERGE json] [EXTEND seconds] [IFVERSION n]."""
    p = s.require()
    data: bytes | None = None
    merge: bytes | None = None
    extend = 0
    if_version: int | None = None
    seen: set[bytes] = set()
    i = 2
    while i < len(args):
        opt = args[i].upper()
        if opt in seen or i + 1 >= len(args):
            raise SyntaxErr
        seen.add(opt)
        value = args[i + 1]
        if opt == b"DATA":
            data = value
        elif opt == b"MERGE":
            merge = value
        elif opt == b"EXTEND":
            extend = int_arg(value)
            if extend <= 0:  # 0 would read as "no EXTEND" to the service
                raise BadExtend(extend)
        elif opt == b"IFVERSION":
            if_version = int_arg(value)
        else:
            raise SyntaxErr
        i += 2
    op = s.service.update(
        p, args[1], data=data, merge=merge, extend_seconds=extend, if_version=if_version
    )
    return Deferred(op, _seconds_left)


def forget(s: Session, args: list[bytes]) -> Reply:
    """FORGET id [id ...]: how many were removed."""
    return Deferred(s.service.forget(s.require(), args[1:]))


COMMANDS: Final = (
    Command(
        "stash",
        stash,
        -2,
        (WRITE,),
        "stash",
        "Store a JSON value under a new id; replies with the id.",
        "STASH json [EX seconds | PX milliseconds]",
        "0.1.0",
    ),
    Command(
        "recall",
        recall,
        -2,
        (READONLY, FAST),
        "stash",
        "The JSON stored under an id, or nil; WITHMETA adds ttl, expiry and version.",
        "RECALL id [WITHMETA]",
        "0.1.0",
        1,
        1,
        1,
    ),
    Command(
        "update",
        update,
        -2,
        (WRITE,),
        "stash",
        "Replace or merge-patch the JSON, extend the TTL, optionally only at a version.",
        "UPDATE id [DATA json | MERGE json] [EXTEND seconds] [IFVERSION version]",
        "0.1.0",
        1,
        1,
        1,
    ),
    Command(
        "forget",
        forget,
        -2,
        (WRITE,),
        "stash",
        "Delete ids; replies how many.",
        "FORGET id [id ...]",
        "0.1.0",
        1,
        -1,
        1,
    ),
)
