"""Stash's own commands: STASH, RECALL, UPDATE, FORGET, MEMORIES."""

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
from stashd.service import PAGE_DEFAULT, rfc3339, seconds_left

if TYPE_CHECKING:
    from stashd.types import Entry


def stash(s: Session, args: list[bytes]) -> Reply:
    """STASH json [EX seconds | PX milliseconds] [WITHMETA]: the new id, or its metadata."""
    p = s.require()
    ttl_ms: int | None = None
    withmeta = False
    i = 2
    while i < len(args):
        opt = args[i].upper()
        if opt == b"WITHMETA" and not withmeta:
            withmeta = True
            i += 1
            continue
        # EX and PX are one option in two units: either, once.
        if opt not in (b"EX", b"PX") or ttl_ms is not None or i + 1 >= len(args):
            raise SyntaxErr
        amount = int_arg(args[i + 1])
        invalid = CommandError("invalid expire time in 'stash' command")
        if amount <= 0:
            raise invalid
        ttl_ms = checked_ms(amount, 1000 if opt == b"EX" else 1, invalid)
        i += 2
    op = s.service.stash(p, args[1], ttl_ms)
    if not withmeta:
        return Deferred(op)
    clock = s.service.clock

    def meta(key: bytes) -> Reply:
        # A new entry's expiry is the op's own: the store writes what the service decided.
        return {
            b"memory_id": key,
            b"ttl_remaining": seconds_left(op.expires_at, clock()),
            b"expires_at": rfc3339(op.expires_at).encode(),
            b"version": op.entry().version,
        }

    return Deferred(op, meta)


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
    """UPDATE id [DATA json | MERGE json] [EXTEND seconds] [IFVERSION n] [WITHMETA]."""
    p = s.require()
    data: bytes | None = None
    merge: bytes | None = None
    extend = 0
    if_version: int | None = None
    seen: set[bytes] = set()
    i = 2
    while i < len(args):
        opt = args[i].upper()
        if opt in seen:
            raise SyntaxErr
        seen.add(opt)
        if opt == b"WITHMETA":
            i += 1
            continue
        if i + 1 >= len(args):
            raise SyntaxErr
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
    withmeta = b"WITHMETA" in seen
    op = s.service.update(
        p,
        args[1],
        data=data,
        merge=merge,
        extend_seconds=extend,
        if_version=if_version,
        entry=withmeta,
    )
    if not withmeta:
        return Deferred(op, _seconds_left)
    clock = s.service.clock

    def meta(entry: Entry | None) -> Reply:
        if entry is None:
            return None
        return {
            b"ttl_remaining": seconds_left(entry.expires_at, clock()),
            b"expires_at": rfc3339(entry.expires_at).encode(),
            b"version": entry.version,
        }

    return Deferred(op, meta)


def memories(s: Session, args: list[bytes]) -> Reply:
    """MEMORIES cursor [MATCH pattern] [COUNT count]: a page of ids with their metadata."""
    p = s.require()
    # Listing cursors are row ids handed out by an earlier page: plain digits, no sign.
    if not args[1].isdigit():
        raise CommandError("invalid cursor")
    cursor = int(args[1])
    pattern: bytes | None = None
    count = PAGE_DEFAULT
    seen: set[bytes] = set()
    i = 2
    while i < len(args):
        opt = args[i].upper()
        if opt in seen or i + 1 >= len(args):
            raise SyntaxErr
        seen.add(opt)
        if opt == b"MATCH":
            pattern = args[i + 1]
        elif opt == b"COUNT":
            count = int_arg(args[i + 1])
        else:
            raise SyntaxErr
        i += 2
    clock = s.service.clock

    def listed(result: tuple[int, list[tuple[bytes, Entry]]]) -> Reply:
        nxt, items = result
        now = clock()
        return [
            b"%d" % nxt,
            [
                {
                    b"memory_id": key,
                    b"ttl_remaining": seconds_left(entry.expires_at, now),
                    b"expires_at": rfc3339(entry.expires_at).encode(),
                    b"size": len(entry.value),
                    b"version": entry.version,
                }
                for key, entry in items
            ],
        ]

    return Deferred(s.service.page(p, cursor, count, pattern), listed)


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
        "Store a JSON value under a new id; replies with the id, or WITHMETA its metadata.",
        "STASH json [EX seconds | PX milliseconds] [WITHMETA]",
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
        "UPDATE id [DATA json | MERGE json] [EXTEND seconds] [IFVERSION version] [WITHMETA]",
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
    Command(
        "memories",
        memories,
        -2,
        (READONLY,),
        "stash",
        "One page of the caller's ids with ttl, expiry, size and version; cursor 0 ends.",
        "MEMORIES cursor [MATCH pattern] [COUNT count]",
        "0.1.0",
    ),
)
