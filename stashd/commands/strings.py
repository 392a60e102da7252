"""String commands: GET, SET and relatives, counters, APPEND, STRLEN."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stashd import floats
from stashd.commands.base import (
    DENYOOM,
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
from stashd.errors import CommandError, NotFloat, SyntaxErr, WrongArity
from stashd.resp import OK
from stashd.types import Kind

if TYPE_CHECKING:
    from stashd.types import Entry


def _invalid_expire(command: str) -> CommandError:
    return CommandError(f"invalid expire time in '{command}' command")


def _value(entry: Entry | None) -> bytes | None:
    return None if entry is None else entry.value


def _set_reply(result: tuple[bool, Entry | None]) -> Reply:
    return OK if result[0] else None


def _set_get_reply(result: tuple[bool, Entry | None]) -> Reply:
    old = result[1]
    return None if old is None else old.value


def _ok(_: object) -> Reply:
    return OK


def _int_of_bool(written: tuple[bool, Entry | None]) -> Reply:
    return 1 if written[0] else 0


def get(s: Session, args: list[bytes]) -> Reply:
    """GET key."""
    return Deferred(s.service.get(s.require(), args[1]), _value)


_EXPIRY_UNITS: Final = {b"EX": 1000, b"PX": 1, b"EXAT": 1000, b"PXAT": 1}


def set_(s: Session, args: list[bytes]) -> Reply:
    """SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ts-ms|KEEPTTL]."""
    p = s.require()
    cond = b""
    want_old = keep_ttl = False
    unit: bytes | None = None
    amount = 0
    i = 3
    n = len(args)
    while i < n:
        opt = args[i].upper()
        if opt in (b"NX", b"XX") and not cond:
            cond = opt
        elif opt == b"GET" and not want_old:
            want_old = True
        elif opt == b"KEEPTTL" and unit is None and not keep_ttl:
            keep_ttl = True
        elif opt in _EXPIRY_UNITS and unit is None and not keep_ttl and i + 1 < n:
            unit = opt
            i += 1
            amount = int_arg(args[i])
        else:
            raise SyntaxErr
        i += 1
    service = s.service
    expires_at: int | None = None
    if unit is not None:
        if amount <= 0:
            raise _invalid_expire("set")
        ms = checked_ms(amount, _EXPIRY_UNITS[unit], _invalid_expire("set"))
        expires_at = (
            service.expiry_at(p, ms) if unit in (b"EXAT", b"PXAT") else service.expiry(p, ms)
        )
    op = service.set(
        p, args[1], args[2], expires_at=expires_at, cond=cond, keep_ttl=keep_ttl, want_old=want_old
    )
    return Deferred(op, _set_get_reply if want_old else _set_reply)


def setnx(s: Session, args: list[bytes]) -> Reply:
    """SETNX key value: 1 when written."""
    return Deferred(s.service.set(s.require(), args[1], args[2], cond=b"NX"), _int_of_bool)


def _setex(s: Session, args: list[bytes], unit_ms: int, name: str) -> Reply:
    p = s.require()
    amount = int_arg(args[2])
    if amount <= 0:
        raise _invalid_expire(name)
    ms = checked_ms(amount, unit_ms, _invalid_expire(name))
    op = s.service.set(p, args[1], args[3], expires_at=s.service.expiry(p, ms))
    return Deferred(op, _ok)


def setex(s: Session, args: list[bytes]) -> Reply:
    """SETEX key seconds value."""
    return _setex(s, args, 1000, "setex")


def psetex(s: Session, args: list[bytes]) -> Reply:
    """PSETEX key milliseconds value."""
    return _setex(s, args, 1, "psetex")


def getex(s: Session, args: list[bytes]) -> Reply:
    """GETEX key [EX s|PX ms|EXAT ts|PXAT ts-ms|PERSIST]."""
    p = s.require()
    service = s.service
    expires_at: int | None = None
    if len(args) > 2:
        opt = args[2].upper()
        if opt == b"PERSIST" and len(args) == 3:
            return Deferred(service.getex(p, args[1], service.persist_expiry(p)), _value)
        if opt not in _EXPIRY_UNITS or len(args) != 4:
            raise SyntaxErr
        amount = int_arg(args[3])
        if amount <= 0:
            raise _invalid_expire("getex")
        ms = checked_ms(amount, _EXPIRY_UNITS[opt], _invalid_expire("getex"))
        expires_at = (
            service.expiry_at(p, ms) if opt in (b"EXAT", b"PXAT") else service.expiry(p, ms)
        )
    return Deferred(service.getex(p, args[1], expires_at), _value)


def getdel(s: Session, args: list[bytes]) -> Reply:
    """GETDEL key."""
    return Deferred(s.service.getdel(s.require(), args[1]), _value)


def _values(entries: list[Entry | None]) -> Reply:
    # MGET answers nil for a key of another kind, as Redis does, rather than WRONGTYPE.
    return [None if e is None or e.kind != Kind.STRING else e.value for e in entries]


def mget(s: Session, args: list[bytes]) -> Reply:
    """MGET key [key ...]."""
    return Deferred(s.service.get_many(s.require(), args[1:]), _values)


def mset(s: Session, args: list[bytes]) -> Reply:
    """MSET key value [key value ...]."""
    if len(args) % 2 == 0:
        raise WrongArity("mset")
    pairs = list(zip(args[1::2], args[2::2], strict=True))
    return Deferred(s.service.set_many(s.require(), pairs), _ok)


def msetnx(s: Session, args: list[bytes]) -> Reply:
    """MSETNX key value [key value ...]: 1 when every key was new and all were set, else 0."""
    if len(args) % 2 == 0:
        raise WrongArity("msetnx")
    pairs = list(zip(args[1::2], args[2::2], strict=True))
    return Deferred(s.service.set_many(s.require(), pairs, only_new=True), _int)


def _int(written: bool) -> Reply:
    return 1 if written else 0


def getset(s: Session, args: list[bytes]) -> Reply:
    """GETSET key value: SET key value GET, the old value (the TTL is the default's anew)."""
    op = s.service.set(s.require(), args[1], args[2], want_old=True)
    return Deferred(op, _set_get_reply)


def incrbyfloat(s: Session, args: list[bytes]) -> Reply:
    """INCRBYFLOAT key increment: the new value, computed as Redis computes it.

    Redis adds in 80-bit long double and prints 17 decimals trimmed (:mod:`stashd.floats`);
    a new counter gets the default TTL and a counter changed keeps its own.
    """
    increment = floats.parse(args[2])
    not_float = NotFloat()

    def edit(value: bytes | None) -> tuple[bytes, bytes]:
        new = floats.incr(value, increment, not_float)
        return new, new

    return Deferred(s.service.edit(s.require(), args[1], Kind.STRING, edit))


def incr(s: Session, args: list[bytes]) -> Reply:
    """INCR key."""
    return Deferred(s.service.incr(s.require(), args[1], 1))


def decr(s: Session, args: list[bytes]) -> Reply:
    """DECR key."""
    return Deferred(s.service.incr(s.require(), args[1], -1))


def incrby(s: Session, args: list[bytes]) -> Reply:
    """INCRBY key increment."""
    return Deferred(s.service.incr(s.require(), args[1], int_arg(args[2])))


def decrby(s: Session, args: list[bytes]) -> Reply:
    """DECRBY key decrement."""
    delta = int_arg(args[2])
    if delta == -(2**63):
        raise CommandError("decrement would overflow")
    return Deferred(s.service.incr(s.require(), args[1], -delta))


def append(s: Session, args: list[bytes]) -> Reply:
    """APPEND key value."""
    return Deferred(s.service.append(s.require(), args[1], args[2]))


def _length(entry: Entry | None) -> Reply:
    return 0 if entry is None else len(entry.value)


def strlen(s: Session, args: list[bytes]) -> Reply:
    """STRLEN key."""
    return Deferred(s.service.get(s.require(), args[1]), _length)


_W = (WRITE,)
_WF = (WRITE, FAST)
_RF = (READONLY, FAST)

COMMANDS: Final = (
    Command(
        "get",
        get,
        2,
        _RF,
        "string",
        "Get the value of a key.",
        "GET key",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "set",
        set_,
        -3,
        (*_W, DENYOOM),
        "string",
        "Set a key's value; every key gets a TTL (the default when none is given).",
        "SET key value [NX | XX] [GET] [EX seconds | PX milliseconds | "
        "EXAT unix-time-seconds | PXAT unix-time-milliseconds | KEEPTTL]",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "setnx",
        setnx,
        3,
        (*_WF, DENYOOM),
        "string",
        "Set a key only if it does not exist.",
        "SETNX key value",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "setex",
        setex,
        4,
        (*_W, DENYOOM),
        "string",
        "Set a key with a TTL in seconds.",
        "SETEX key seconds value",
        "2.0.0",
        1,
        1,
        1,
    ),
    Command(
        "psetex",
        psetex,
        4,
        (*_W, DENYOOM),
        "string",
        "Set a key with a TTL in milliseconds.",
        "PSETEX key milliseconds value",
        "2.6.0",
        1,
        1,
        1,
    ),
    Command(
        "getex",
        getex,
        -2,
        _WF,
        "string",
        "Get a key's value and change its TTL.",
        "GETEX key [EX seconds | PX milliseconds | EXAT unix-time-seconds | "
        "PXAT unix-time-milliseconds]",
        "6.2.0",
        1,
        1,
        1,
    ),
    Command(
        "getdel",
        getdel,
        2,
        _WF,
        "string",
        "Get a key's value and delete the key.",
        "GETDEL key",
        "6.2.0",
        1,
        1,
        1,
    ),
    Command(
        "mget",
        mget,
        -2,
        _RF,
        "string",
        "Get the values of several keys.",
        "MGET key [key ...]",
        "1.0.0",
        1,
        -1,
        1,
    ),
    Command(
        "mset",
        mset,
        -3,
        (*_W, DENYOOM),
        "string",
        "Set several keys, each with the default TTL.",
        "MSET key value [key value ...]",
        "1.0.1",
        1,
        -1,
        2,
    ),
    Command(
        "msetnx",
        msetnx,
        -3,
        (*_W, DENYOOM),
        "string",
        "Set several keys only if none of them exists, each with the default TTL.",
        "MSETNX key value [key value ...]",
        "1.0.1",
        1,
        -1,
        2,
    ),
    Command(
        "getset",
        getset,
        3,
        (*_WF, DENYOOM),
        "string",
        "Set a key's value and return the old one.",
        "GETSET key value",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "incrbyfloat",
        incrbyfloat,
        3,
        (*_WF, DENYOOM),
        "string",
        "Add a floating-point number to a value.",
        "INCRBYFLOAT key increment",
        "2.6.0",
        1,
        1,
        1,
    ),
    Command(
        "incr",
        incr,
        2,
        (*_WF, DENYOOM),
        "string",
        "Add one to an integer value.",
        "INCR key",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "decr",
        decr,
        2,
        (*_WF, DENYOOM),
        "string",
        "Subtract one from an integer value.",
        "DECR key",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "incrby",
        incrby,
        3,
        (*_WF, DENYOOM),
        "string",
        "Add to an integer value.",
        "INCRBY key increment",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "decrby",
        decrby,
        3,
        (*_WF, DENYOOM),
        "string",
        "Subtract from an integer value.",
        "DECRBY key decrement",
        "1.0.0",
        1,
        1,
        1,
    ),
    Command(
        "append",
        append,
        3,
        (*_WF, DENYOOM),
        "string",
        "Append to a key's value.",
        "APPEND key value",
        "2.0.0",
        1,
        1,
        1,
    ),
    Command(
        "strlen",
        strlen,
        2,
        _RF,
        "string",
        "Length of a key's value.",
        "STRLEN key",
        "2.2.0",
        1,
        1,
        1,
    ),
)
