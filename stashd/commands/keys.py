"""Key commands: DEL, EXISTS, the EXPIRE and TTL families, TYPE, KEYS, SCAN, RENAME, COPY."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Final

from stashd.commands.base import (
    DENYOOM,
    FAST,
    READONLY,
    WRITE,
    Awaiting,
    Command,
    Deferred,
    Reply,
    Session,
    checked_ms,
    int_arg,
    scan_cursor,
)
from stashd.errors import CommandError, SyntaxErr
from stashd.ops import INT64_MAX, parse_int64
from stashd.resp import OK
from stashd.service import SCAN_COUNT_MAX
from stashd.types import KIND_NAMES

if TYPE_CHECKING:
    from stashd.types import Entry


def delete(s: Session, args: list[bytes]) -> Reply:
    """DEL key [key ...] (and UNLINK): how many were removed."""
    return Deferred(s.service.delete(s.require(), args[1:]))


def _count_present(entries: list[Entry | None]) -> Reply:
    return sum(e is not None for e in entries)


def exists(s: Session, args: list[bytes]) -> Reply:
    """EXISTS key [key ...]: a key named twice counts twice, as in Redis."""
    return Deferred(s.service.get_many(s.require(), args[1:]), _count_present)


_CONDITIONS: Final = (b"NX", b"XX", b"GT", b"LT")


def _expire(s: Session, args: list[bytes], unit_ms: int, absolute: bool, name: str) -> Reply:
    p = s.require()
    amount = int_arg(args[2])
    flags = set()
    for raw in args[3:]:
        opt = raw.upper()
        if opt not in _CONDITIONS:
            raise CommandError(f"Unsupported option {raw.decode('utf-8', 'replace')}")
        flags.add(opt)
    if b"NX" in flags and len(flags) > 1:
        raise CommandError("NX and XX, GT or LT options at the same time are not compatible")
    if b"GT" in flags and b"LT" in flags:
        raise CommandError("GT and LT options at the same time are not compatible")
    invalid = CommandError(f"invalid expire time in '{name}' command")
    when = checked_ms(amount, unit_ms, invalid)
    if not absolute:
        now = s.service.clock()
        if when > INT64_MAX - now:  # Redis refuses a relative time that overflows, too
            raise invalid
        when += now
    cond = b"" if not flags else (flags - {b"XX"} or {b"XX"}).pop()
    return Deferred(s.service.expire(p, args[1], when, cond))


def expire(s: Session, args: list[bytes]) -> Reply:
    """EXPIRE key seconds [NX|XX|GT|LT]."""
    return _expire(s, args, 1000, False, "expire")


def pexpire(s: Session, args: list[bytes]) -> Reply:
    """PEXPIRE key milliseconds [NX|XX|GT|LT]."""
    return _expire(s, args, 1, False, "pexpire")


def expireat(s: Session, args: list[bytes]) -> Reply:
    """EXPIREAT key unix-time-seconds [NX|XX|GT|LT]."""
    return _expire(s, args, 1000, True, "expireat")


def pexpireat(s: Session, args: list[bytes]) -> Reply:
    """PEXPIREAT key unix-time-milliseconds [NX|XX|GT|LT]."""
    return _expire(s, args, 1, True, "pexpireat")


def _ttl_reply(s: Session, unit_ms: int) -> object:
    clock = s.service.clock

    def finish(entry: Entry | None) -> Reply:
        if entry is None:
            return -2
        left = entry.expires_at - clock()
        # Redis rounds TTL to the nearest second, and PTTL never reports below zero.
        return max(left, 0) if unit_ms == 1 else max((left + 500) // 1000, 0)

    return finish


def ttl(s: Session, args: list[bytes]) -> Reply:
    """TTL key: seconds left, -2 for a missing key (never -1: every key expires)."""
    return Deferred(s.service.lookup(s.require(), args[1]), _ttl_reply(s, 1000))  # type: ignore[arg-type]


def pttl(s: Session, args: list[bytes]) -> Reply:
    """PTTL key."""
    return Deferred(s.service.lookup(s.require(), args[1]), _ttl_reply(s, 1))  # type: ignore[arg-type]


def _expiretime_s(entry: Entry | None) -> Reply:
    # Rounded to the nearest second, as Redis rounds EXPIRETIME and TTL alike.
    return -2 if entry is None else (entry.expires_at + 500) // 1000


def _expiretime_ms(entry: Entry | None) -> Reply:
    return -2 if entry is None else entry.expires_at


def expiretime(s: Session, args: list[bytes]) -> Reply:
    """EXPIRETIME key: absolute expiry in seconds."""
    return Deferred(s.service.lookup(s.require(), args[1]), _expiretime_s)


def pexpiretime(s: Session, args: list[bytes]) -> Reply:
    """PEXPIRETIME key: absolute expiry in milliseconds."""
    return Deferred(s.service.lookup(s.require(), args[1]), _expiretime_ms)


def persist(s: Session, args: list[bytes]) -> Reply:
    """PERSIST key: refused, every key in Stash expires; with clamped TTLs, the maximum TTL."""
    p = s.require()
    return Deferred(s.service.expire(p, args[1], s.service.persist_expiry(p)))


def _type_name(entry: Entry | None) -> Reply:
    return "none" if entry is None else KIND_NAMES[entry.kind]


def type_(s: Session, args: list[bytes]) -> Reply:
    """TYPE key: 'string', 'hash', 'list', ... or 'none'."""
    return Deferred(s.service.lookup(s.require(), args[1]), _type_name)


def keys(s: Session, args: list[bytes]) -> Reply:
    """KEYS pattern: every match, gathered a SCAN page at a time.

    Each page is one operation in its turn, so other clients are served between pages
    however large the namespace: like SCAN, a key present for the whole call is
    returned (once), one written or deleted meanwhile may or may not be.
    """
    p = s.require()
    pattern = args[1]
    first = s.service.scan(p, 0, SCAN_COUNT_MAX, pattern)  # refuses a bad pattern now
    run = s.run
    if run is None:  # pragma: no cover - every server session has one
        raise CommandError("KEYS needs a server to run it")

    async def gather() -> list[bytes]:
        found: dict[bytes, None] = {}
        op = first
        while True:
            reply.ran.append(op)  # each page's walk is charged once KEYS is done
            cursor, page = await run(op)
            found.update(dict.fromkeys(page))
            if cursor == 0:
                return list(found)
            await asyncio.sleep(0)  # a store that answers at once would not yield
            op = s.service.scan(p, cursor, SCAN_COUNT_MAX, pattern)

    reply = Awaiting(
        gather,
        _same,
        "KEYS cannot run inside MULTI: it reads the namespace a page at a time; use SCAN",
    )
    return reply


def _same(found: list[bytes]) -> Reply:
    return found


def _scan_reply(result: tuple[int, list[bytes]]) -> Reply:
    return [b"%d" % result[0], result[1]]


def scan(s: Session, args: list[bytes]) -> Reply:
    """SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]."""
    cursor = scan_cursor(args[1])
    pattern: bytes | None = None
    kind: bytes | None = None
    count = 10
    i = 2
    while i < len(args):
        opt = args[i].upper()
        if i + 1 >= len(args):
            raise SyntaxErr
        if opt == b"MATCH":
            pattern = args[i + 1]
        elif opt == b"COUNT":
            count = parse_int64(args[i + 1])
            if count < 1:
                raise SyntaxErr
        elif opt == b"TYPE":
            kind = args[i + 1]
        else:
            raise SyntaxErr
        i += 2
    return Deferred(s.service.scan(s.require(), cursor, count, pattern, kind), _scan_reply)


def _ok(_: object) -> Reply:
    return OK


def rename(s: Session, args: list[bytes]) -> Reply:
    """RENAME key newkey."""
    return Deferred(s.service.rename(s.require(), args[1], args[2]), _ok)


def _int(done: bool) -> Reply:
    return 1 if done else 0


def renamenx(s: Session, args: list[bytes]) -> Reply:
    """RENAMENX key newkey: 1 when renamed, 0 when newkey is in use."""
    return Deferred(s.service.rename(s.require(), args[1], args[2], nx=True), _int)


def copy(s: Session, args: list[bytes]) -> Reply:
    """COPY source destination [DB destination-db] [REPLACE]: 1 when copied."""
    replace = False
    i = 3
    while i < len(args):
        opt = args[i].upper()
        if opt == b"REPLACE":
            replace = True
        elif opt == b"DB" and i + 1 < len(args):
            # Stash has one database per namespace, as SELECT has: only 0 names it.
            if parse_int64(args[i + 1]) != 0:
                raise CommandError("DB index is out of range")
            i += 1
        else:
            raise SyntaxErr
        i += 1
    if args[1] == args[2]:
        raise CommandError("source and destination objects are the same")
    return Deferred(s.service.copy(s.require(), args[1], args[2], replace=replace), _int)


def touch(s: Session, args: list[bytes]) -> Reply:
    """TOUCH key [key ...]: how many of the keys exist."""
    return Deferred(s.service.get_many(s.require(), args[1:]), _count_present)


def randomkey(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """RANDOMKEY: a key of the namespace, or nil when it is empty."""
    return Deferred(s.service.random_key(s.require()))


_W = (WRITE,)
_WF = (WRITE, FAST)
_RF = (READONLY, FAST)

COMMANDS: Final = (
    Command(
        "del", delete, -2, _W, "generic", "Delete keys.", "DEL key [key ...]", "1.0.0", 1, -1, 1
    ),
    Command(
        "unlink",
        delete,
        -2,
        _WF,
        "generic",
        "Delete keys (same as DEL here).",
        "UNLINK key [key ...]",
        "4.0.0",
        1,
        -1,
        1,
    ),
    Command(
        "exists",
        exists,
        -2,
        _RF,
        "generic",
        "Count how many of the keys exist.",
        "EXISTS key [key ...]",
        "1.0.0",
        1,
        -1,
        1,
    ),
    Command(
        "expire",
        expire,
        -3,
        _WF,
        "generic",
        "Set a key's TTL in seconds.",
        "EXPIRE key seconds [NX | XX | GT | LT]",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "pexpire",
        pexpire,
        -3,
        _WF,
        "generic",
        "Set a key's TTL in milliseconds.",
        "PEXPIRE key milliseconds [NX | XX | GT | LT]",
        "2.6.0",
        1,
        1,
        1,
    ),
    Command(
        "expireat",
        expireat,
        -3,
        _WF,
        "generic",
        "Set a key's expiry as a Unix time.",
        "EXPIREAT key unix-time-seconds [NX | XX | GT | LT]",
        "1.2.0",
        1,
        1,
        1,
    ),
    Command(
        "pexpireat",
        pexpireat,
        -3,
        _WF,
        "generic",
        "Set a key's expiry as a Unix time in milliseconds.",
        "PEXPIREAT key unix-time-milliseconds [NX | XX | GT | LT]",
        "2.6.0",
        1,
        1,
        1,
    ),
    Command(
        "expiretime",
        expiretime,
        2,
        _RF,
        "generic",
        "A key's expiry as a Unix time.",
        "EXPIRETIME key",
        "7.0.0",
        1,
        1,
        1,
    ),
    Command(
        "pexpiretime",
        pexpiretime,
        2,
        _RF,
        "generic",
        "A key's expiry as a Unix time in milliseconds.",
        "PEXPIRETIME key",
        "7.0.0",
        1,
        1,
        1,
    ),
    Command(
        "ttl",
        ttl,
        2,
        _RF,
        "generic",
        "Seconds left before a key expires.",
        "TTL key",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "pttl",
        pttl,
        2,
        _RF,
        "generic",
        "Milliseconds left before a key expires.",
        "PTTL key",
        "2.6.0",
        1,
        1,
        1,
    ),
    Command(
        "persist",
        persist,
        2,
        _WF,
        "generic",
        "Refused: every key in Stash expires.",
        "PERSIST key",
        "2.2.0",
        1,
        1,
        1,
    ),
    Command(
        "type", type_, 2, _RF, "generic", "The type of a key's value.", "TYPE key", "1.0.0", 1, 1, 1
    ),
    Command(
        "keys",
        keys,
        2,
        (READONLY,),
        "generic",
        "Every key matching a pattern.",
        "KEYS pattern",
        "1.0.0",
    ),
    Command(
        "scan",
        scan,
        -2,
        (READONLY,),
        "generic",
        "Iterate over keys, a page at a time.",
        "SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]",
        "2.8.0",
    ),
    Command(
        "rename",
        rename,
        3,
        _W,
        "generic",
        "Rename a key, keeping its TTL.",
        "RENAME key newkey",
        "1.0.0",
        1,
        2,
        1,
    ),
    Command(
        "renamenx",
        renamenx,
        3,
        _WF,
        "generic",
        "Rename a key, keeping its TTL, only if the new name is not in use.",
        "RENAMENX key newkey",
        "1.0.0",
        1,
        2,
        1,
    ),
    Command(
        "copy",
        copy,
        -3,
        (*_W, DENYOOM),
        "generic",
        "Copy a key's value, kind and TTL to another key.",
        "COPY source destination [DB destination-db] [REPLACE]",
        "6.2.0",
        1,
        2,
        1,
    ),
    Command(
        "touch",
        touch,
        -2,
        _RF,
        "generic",
        "How many of the keys exist.",
        "TOUCH key [key ...]",
        "3.2.1",
        1,
        -1,
        1,
    ),
    Command(
        "randomkey",
        randomkey,
        1,
        (READONLY,),
        "generic",
        "A key of the namespace, drawn at random.",
        "RANDOMKEY",
        "1.0.0",
    ),
)
