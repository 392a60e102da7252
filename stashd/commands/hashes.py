"""Hash commands: HSET and its relatives, each a pure function on the hash's fields.

A hash is one entry of kind HASH (see :mod:`stashd.containers` for its value): the
handlers parse and check every argument, then hand the memory service a function from
the stored fields to the new ones and the reply, so the rules of a key (TTL, caps,
versions, WRONGTYPE) are those of :mod:`stashd.ops.containers`, never repeated here.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Final

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
    edit_decoded,
    int_arg,
    look_decoded,
    scan_match,
)
from stashd.containers import pack_map, unpack_map
from stashd.errors import CommandError, IncrOverflow, NotInteger, SyntaxErr, WrongArity
from stashd.ops import INT64_MAX, INT64_MIN, parse_int64
from stashd.resp import OK
from stashd.types import Kind

if TYPE_CHECKING:
    from collections.abc import Callable


#: The most fields HRANDFIELD returns for a negative count (repeats allowed). Redis
#: has no cap but the range of a long; one here keeps a request of -10**12 from
#: building a reply of a trillion fields before the output limit could refuse it.
RANDFIELD_MAX: Final = 100_000

HASH: Final = Kind.HASH


def _look(s: Session, key: bytes, look: Callable[[dict[bytes, bytes]], Any]) -> Deferred:
    """A read of the hash under ``key``: ``look`` gets its fields (empty for no key)."""
    return look_decoded(s, key, HASH, unpack_map, look)


def _edit(
    s: Session, key: bytes, edit: Callable[[dict[bytes, bytes]], tuple[bool, Any]]
) -> Deferred:
    """A change to the hash under ``key``: ``edit`` changes its fields in place."""
    return edit_decoded(s, key, HASH, unpack_map, pack_map, edit)


def _pairs(args: list[bytes], name: str) -> list[bytes]:
    """The field-value pairs after the key, refusing an odd count as Redis does."""
    pairs = args[2:]
    if not pairs or len(pairs) % 2:
        raise WrongArity(name)
    return pairs


def hset(s: Session, args: list[bytes]) -> Reply:
    """HSET key field value [field value ...]: how many fields were added."""
    pairs = _pairs(args, "hset")

    def edit(fields: dict[bytes, bytes]) -> tuple[bool, int]:
        before = len(fields)
        for i in range(0, len(pairs), 2):
            fields[pairs[i]] = pairs[i + 1]
        return True, len(fields) - before

    return _edit(s, args[1], edit)


def hmset(s: Session, args: list[bytes]) -> Reply:
    """HMSET key field value [field value ...]: HSET that answers OK."""
    pairs = _pairs(args, "hmset")

    def edit(fields: dict[bytes, bytes]) -> tuple[bool, str]:
        for i in range(0, len(pairs), 2):
            fields[pairs[i]] = pairs[i + 1]
        return True, OK

    return _edit(s, args[1], edit)


def hsetnx(s: Session, args: list[bytes]) -> Reply:
    """HSETNX key field value: 1 when the field was new and set."""
    field, value = args[2], args[3]

    def edit(fields: dict[bytes, bytes]) -> tuple[bool, int]:
        if field in fields:
            return False, 0
        fields[field] = value
        return True, 1

    return _edit(s, args[1], edit)


def hget(s: Session, args: list[bytes]) -> Reply:
    """HGET key field."""
    field = args[2]
    return _look(s, args[1], lambda fields: fields.get(field))


def hmget(s: Session, args: list[bytes]) -> Reply:
    """HMGET key field [field ...]."""
    wanted = args[2:]
    return _look(s, args[1], lambda fields: [fields.get(f) for f in wanted])


def hgetall(s: Session, args: list[bytes]) -> Reply:
    """HGETALL key: a map (RESP2: a flat array of fields and values)."""
    return _look(s, args[1], lambda fields: fields)


def hkeys(s: Session, args: list[bytes]) -> Reply:
    """HKEYS key."""
    return _look(s, args[1], lambda fields: list(fields))


def hvals(s: Session, args: list[bytes]) -> Reply:
    """HVALS key."""
    return _look(s, args[1], lambda fields: list(fields.values()))


def hlen(s: Session, args: list[bytes]) -> Reply:
    """HLEN key."""
    return _look(s, args[1], len)


def hexists(s: Session, args: list[bytes]) -> Reply:
    """HEXISTS key field."""
    field = args[2]
    return _look(s, args[1], lambda fields: int(field in fields))


def hstrlen(s: Session, args: list[bytes]) -> Reply:
    """HSTRLEN key field: the length of the field's value, 0 when absent."""
    field = args[2]
    return _look(s, args[1], lambda fields: len(fields.get(field, b"")))


def hdel(s: Session, args: list[bytes]) -> Reply:
    """HDEL key field [field ...]: how many were removed."""
    gone = args[2:]

    def edit(fields: dict[bytes, bytes]) -> tuple[bool, int]:
        removed = sum(fields.pop(f, None) is not None for f in dict.fromkeys(gone))
        return removed > 0, removed

    return _edit(s, args[1], edit)


class _NotIntegerField(CommandError):
    """HINCRBY on a field whose value is not an integer, in Redis's words."""

    template = "hash value is not an integer"


def hincrby(s: Session, args: list[bytes]) -> Reply:
    """HINCRBY key field increment: the new value."""
    field = args[2]
    delta = int_arg(args[3])

    def edit(fields: dict[bytes, bytes]) -> tuple[bool, int]:
        old = fields.get(field)
        try:
            current = 0 if old is None else parse_int64(old)
        except NotInteger:
            raise _NotIntegerField from None
        result = current + delta
        if not INT64_MIN <= result <= INT64_MAX:
            raise IncrOverflow
        fields[field] = b"%d" % result
        return True, result

    return _edit(s, args[1], edit)


class _NotFloatField(CommandError):
    """HINCRBYFLOAT on a field whose value is not a number, in Redis's words."""

    template = "hash value is not a float"


def hincrbyfloat(s: Session, args: list[bytes]) -> Reply:
    """HINCRBYFLOAT key field increment: the new value, computed as Redis computes it."""
    field = args[2]
    increment = floats.parse(args[3])
    if increment.inf:  # HINCRBYFLOAT refuses it up front, in words of its own
        raise CommandError("value is NaN or Infinity")

    def edit(fields: dict[bytes, bytes]) -> tuple[bool, bytes]:
        fields[field] = result = floats.incr(fields.get(field), increment, _NotFloatField())
        return True, result

    return _edit(s, args[1], edit)


def hrandfield(s: Session, args: list[bytes]) -> Reply:
    """HRANDFIELD key [count [WITHVALUES]]."""
    n = len(args)
    if n == 2:
        return _look(s, args[1], lambda fields: random.choice(list(fields)) if fields else None)  # noqa: S311 - not for secrets
    count = int_arg(args[2])
    with_values = False
    if n == 4:
        if args[3].upper() != b"WITHVALUES":
            raise SyntaxErr
        with_values = True
    elif n > 4:
        raise SyntaxErr
    if count < -RANDFIELD_MAX:
        msg = f"HRANDFIELD count is {count}, at least -{RANDFIELD_MAX} when negative"
        raise CommandError(msg)
    pairs_nested = s.proto == 3

    def look(fields: dict[bytes, bytes]) -> list[Any]:
        if not fields or count == 0:
            return []
        names = list(fields)
        if count > 0:
            picked = names if count >= len(names) else random.sample(names, count)
        else:
            picked = random.choices(names, k=-count)  # noqa: S311 - not for secrets
        if not with_values:
            return picked
        if pairs_nested:  # RESP3: each field and its value as a pair, as Redis 7 sends
            return [[f, fields[f]] for f in picked]
        return [part for f in picked for part in (f, fields[f])]

    return _look(s, args[1], look)


def hscan(s: Session, args: list[bytes]) -> Reply:
    """HSCAN key cursor [MATCH pattern] [COUNT count]: every field in one reply."""
    match = scan_match(args)

    def look(fields: dict[bytes, bytes]) -> list[Any]:
        # A hash is one stored value, bounded by the payload cap: it is returned whole,
        # as Redis returns a small (listpack) hash, with cursor 0.
        items = [part for f, v in fields.items() if match is None or match(f) for part in (f, v)]
        return [b"0", items]

    return _look(s, args[1], look)


_W = (WRITE,)
_WF = (WRITE, FAST)
_R = (READONLY,)
_RF = (READONLY, FAST)


def _row(  # noqa: PLR0917 - one table row, as the other families write them
    name: str,
    handler: Callable[[Session, list[bytes]], Reply],
    arity: int,
    flags: tuple[str, ...],
    summary: str,
    syntax: str,
    since: str,
) -> Command:
    return Command(name, handler, arity, flags, "hash", summary, syntax, since, 1, 1, 1)


COMMANDS: Final = (
    _row(
        "hset",
        hset,
        -4,
        (*_WF, DENYOOM),
        "Set fields of a hash; a new hash gets the default TTL.",
        "HSET key field value [field value ...]",
        "2.0.0",
    ),
    _row(
        "hmset",
        hmset,
        -4,
        (*_WF, DENYOOM),
        "Set fields of a hash, answering OK.",
        "HMSET key field value [field value ...]",
        "2.0.0",
    ),
    _row(
        "hsetnx",
        hsetnx,
        4,
        (*_WF, DENYOOM),
        "Set a field of a hash only if it is not there.",
        "HSETNX key field value",
        "2.0.0",
    ),
    _row("hget", hget, 3, _RF, "The value of a field of a hash.", "HGET key field", "2.0.0"),
    _row(
        "hmget",
        hmget,
        -3,
        _RF,
        "The values of fields of a hash.",
        "HMGET key field [field ...]",
        "2.0.0",
    ),
    _row("hgetall", hgetall, 2, _R, "Every field and value of a hash.", "HGETALL key", "2.0.0"),
    _row("hkeys", hkeys, 2, _R, "Every field of a hash.", "HKEYS key", "2.0.0"),
    _row("hvals", hvals, 2, _R, "Every value of a hash.", "HVALS key", "2.0.0"),
    _row("hlen", hlen, 2, _RF, "How many fields a hash has.", "HLEN key", "2.0.0"),
    _row(
        "hexists",
        hexists,
        3,
        _RF,
        "Whether a hash has a field.",
        "HEXISTS key field",
        "2.0.0",
    ),
    _row(
        "hstrlen",
        hstrlen,
        3,
        _RF,
        "The length of a field's value.",
        "HSTRLEN key field",
        "3.2.0",
    ),
    _row(
        "hdel",
        hdel,
        -3,
        _WF,
        "Remove fields of a hash; an emptied hash is deleted.",
        "HDEL key field [field ...]",
        "2.0.0",
    ),
    _row(
        "hincrby",
        hincrby,
        4,
        (*_WF, DENYOOM),
        "Add an integer to a field of a hash.",
        "HINCRBY key field increment",
        "2.0.0",
    ),
    _row(
        "hincrbyfloat",
        hincrbyfloat,
        4,
        (*_WF, DENYOOM),
        "Add a floating-point number to a field of a hash.",
        "HINCRBYFLOAT key field increment",
        "2.6.0",
    ),
    _row(
        "hrandfield",
        hrandfield,
        -2,
        _R,
        "Random fields of a hash.",
        "HRANDFIELD key [count [WITHVALUES]]",
        "6.2.0",
    ),
    _row(
        "hscan",
        hscan,
        -3,
        _R,
        "The fields of a hash matching a pattern, in one page.",
        "HSCAN key cursor [MATCH pattern] [COUNT count]",
        "2.8.0",
    ),
)
