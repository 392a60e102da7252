"""Set commands: SADD and its relatives, each a pure function on the set's members.

A set is one entry of kind SET (see :mod:`stashd.containers` for its value): the
handlers parse and check every argument, then hand the memory service a function from
the stored members to the new ones and the reply, so the rules of a key (TTL, caps,
versions, WRONGTYPE, deleted once empty) are those of :mod:`stashd.ops.containers`,
never repeated here. The commands on several sets (SINTER, SUNIONSTORE...) read them
in one atomic step, each checked to be a set.

Replies that Redis sends as a RESP3 set (SMEMBERS, SINTER, SUNION, SDIFF, SPOP with a
count) are Python sets, which :mod:`stashd.resp` sends as ``~`` in RESP3 and as an
array in RESP2, in byte order (Redis promises no order).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Final

from stashd.commands.base import (
    DENYOOM,
    FAST,
    MOVABLEKEYS,
    READONLY,
    WRITE,
    Command,
    Deferred,
    NotPositive,
    Reply,
    Session,
    edit_decoded,
    int_arg,
    look_decoded,
    scan_match,
)
from stashd.commands.hashes import RANDFIELD_MAX
from stashd.containers import drop, may_hold, pack_members, unpack, unpack_members
from stashd.errors import CommandError, NotInteger, SyntaxErr
from stashd.ops import INT64_MIN, KEEP, parse_int64
from stashd.types import Kind

SET: Final = Kind.SET
#: The most members SRANDMEMBER returns for a negative count (repeats allowed): the
#: bound HRANDFIELD has, for the same reason (a count of -10**12 must not build a reply
#: of a trillion members before the output limit could refuse it).
RANDMEMBER_MAX: Final = RANDFIELD_MAX

Members = dict[bytes, None]


def _look(s: Session, key: bytes, look: Callable[[Members], Any]) -> Deferred:
    """A read of the set under ``key``: ``look`` gets its members (empty for no key)."""
    return look_decoded(s, key, SET, unpack_members, look)


def _edit(s: Session, key: bytes, edit: Callable[[Members], tuple[bool, Any]]) -> Deferred:
    """A change to the set under ``key``: ``edit`` changes its members in place."""
    return edit_decoded(s, key, SET, unpack_members, pack_members, edit)


def sadd(s: Session, args: list[bytes]) -> Reply:
    """SADD key member [member ...]: how many were added."""
    new = dict.fromkeys(args[2:])

    def change(value: bytes | None) -> tuple[Any, int]:
        if value is None:
            return pack_members(new), len(new)
        maybe = [m for m in new if may_hold(value, m)]
        held = unpack_members(value) if maybe else {}
        added = [m for m in new if m not in held]
        if not added:
            return KEEP, 0
        # New members go after the others, so the records are appended, not rebuilt.
        return value + pack_members(added), len(added)

    return Deferred(s.service.edit(s.require(), args[1], SET, change))


def srem(s: Session, args: list[bytes]) -> Reply:
    """SREM key member [member ...]: how many were removed."""
    gone = dict.fromkeys(args[2:])

    def edit(members: Members) -> tuple[bool, int]:
        removed = 0
        for m in gone:
            if m in members:
                del members[m]
                removed += 1
        return removed > 0, removed

    return _edit(s, args[1], edit)


def smembers(s: Session, args: list[bytes]) -> Reply:
    """SMEMBERS key: a set (RESP2: an array)."""
    return _look(s, args[1], set)


def sismember(s: Session, args: list[bytes]) -> Reply:
    """SISMEMBER key member."""
    member = args[2]

    def look(value: bytes | None) -> int:
        if value is None or not may_hold(value, member):
            return 0
        return int(member in unpack_members(value))

    return Deferred(s.service.inspect(s.require(), args[1], SET, look))


def smismember(s: Session, args: list[bytes]) -> Reply:
    """SMISMEMBER key member [member ...]: 1 or 0 for each."""
    wanted = args[2:]
    return _look(s, args[1], lambda members: [int(m in members) for m in wanted])


def scard(s: Session, args: list[bytes]) -> Reply:
    """SCARD key."""
    return _look(s, args[1], len)


def spop(s: Session, args: list[bytes]) -> Reply:
    """SPOP key [count]: one random member removed, or a set of up to ``count``."""
    n = len(args)
    if n > 3:
        raise SyntaxErr
    if n == 2:

        def pop_one(value: bytes | None) -> tuple[Any, bytes | None]:
            if value is None:
                return KEEP, None
            items = unpack(value)
            i = random.randrange(len(items))  # noqa: S311 - not for secrets
            return (drop(value, items, i) if len(items) > 1 else None), items[i]

        return Deferred(s.service.edit(s.require(), args[1], SET, pop_one))

    try:
        count = int_arg(args[2])
    except NotInteger:
        raise NotPositive from None  # Redis answers this for any bad count
    if count < 0:
        raise NotPositive

    def pop(members: Members) -> tuple[bool, set[bytes]]:
        if not members or count == 0:
            return False, set()
        names = list(members)
        picked = names if count >= len(names) else random.sample(names, count)
        for member in picked:
            del members[member]
        return True, set(picked)

    return _edit(s, args[1], pop)


class _CountRange(CommandError):
    """A count of -2**63, whose opposite has no 64-bit form, in Redis's words."""

    template = (
        "value is out of range, value must between -9223372036854775807 and 9223372036854775807"
    )


def srandmember(s: Session, args: list[bytes]) -> Reply:
    """SRANDMEMBER key [count]: one random member, or up to ``count`` (repeats if negative)."""
    n = len(args)
    if n > 3:
        raise SyntaxErr
    if n == 2:
        return _look(
            s,
            args[1],
            lambda members: random.choice(list(members)) if members else None,  # noqa: S311 - not for secrets
        )
    count = int_arg(args[2])
    if count == INT64_MIN:
        raise _CountRange
    if count < -RANDMEMBER_MAX:
        msg = f"SRANDMEMBER count is {count}, at least -{RANDMEMBER_MAX} when negative"
        raise CommandError(msg)

    def look(members: Members) -> list[bytes]:
        if not members or count == 0:
            return []
        names = list(members)
        if count > 0:
            return names if count >= len(names) else random.sample(names, count)
        return random.choices(names, k=-count)  # noqa: S311 - not for secrets

    return _look(s, args[1], look)


def smove(s: Session, args: list[bytes]) -> Reply:
    """SMOVE source destination member: 1 when it was moved (or already in a set onto itself)."""
    member = args[3]

    def edit(src: bytes | None, dst: bytes | None) -> tuple[Any, Any, int]:
        members = unpack_members(src)
        if member not in members:
            return KEEP, KEEP, 0
        if args[1] == args[2]:
            return KEEP, KEEP, 1
        del members[member]
        new_src = pack_members(members) if members else None
        if member in unpack_members(dst):
            return new_src, KEEP, 1
        return new_src, (dst or b"") + pack_members([member]), 1

    return Deferred(s.service.edit_two(s.require(), args[1], args[2], (SET, SET), edit))


# -- several sets at once ----------------------------------------------------------


def _inter(values: list[bytes | None]) -> Members:
    """The members in every set, in the order of the smallest."""
    if any(v is None for v in values):
        return {}
    sets = sorted((unpack_members(v) for v in values), key=len)
    first, rest = sets[0], sets[1:]
    return {m: None for m in first if all(m in other for other in rest)}


def _union(values: list[bytes | None]) -> Members:
    """The members in any set, in the order they are first met."""
    out: Members = {}
    for v in values:
        out.update(unpack_members(v))
    return out


def _diff(values: list[bytes | None]) -> Members:
    """The members of the first set in none of the others, in the first's order."""
    first = unpack_members(values[0])
    for v in values[1:]:
        if not first:
            break
        for m in unpack_members(v):
            first.pop(m, None)
    return first


Combine = Callable[[list[bytes | None]], Members]


def _nothing(values: list[bytes | None]) -> Members:  # noqa: ARG001 - the shape of a Combine
    """No members, whatever the sets hold."""
    return {}


def _sources(keys: list[bytes], combine: Combine) -> tuple[list[bytes], Combine]:
    """Each key once, and how their values then combine.

    Naming a set twice changes no result (but for SDIFF's first set named again among
    the others, which leaves nothing), so each is read once: a request that names one
    large set 16,000 times decodes it once, not 16,000 times.
    """
    distinct = list(dict.fromkeys(keys))
    if combine is _diff and keys[0] in keys[1:]:
        return distinct, _nothing
    return distinct, combine


#: The kinds the several-set commands read: sets only (the sorted-set ones read both).
_SETS: Final = (SET,)


def _values(found: list[tuple[int, bytes] | None]) -> list[bytes | None]:
    """The stored sets a several-key read found, None for a missing key."""
    return [None if f is None else f[1] for f in found]


def _reader(combine: Combine) -> Callable[..., Reply]:
    """SINTER, SUNION, SDIFF: one handler, told how the sets combine."""

    def handler(s: Session, args: list[bytes]) -> Reply:
        keys, how = _sources(args[1:], combine)
        op = s.service.inspect_many(
            s.require(), keys, _SETS, lambda found: set(how(_values(found)))
        )
        return Deferred(op)

    return handler


def _storer(combine: Combine) -> Callable[..., Reply]:
    """SINTERSTORE, SUNIONSTORE, SDIFFSTORE: the same, the result stored under destination."""

    def handler(s: Session, args: list[bytes]) -> Reply:
        keys, how = _sources(args[2:], combine)

        def store(values: list[bytes | None]) -> tuple[bytes | None, int]:
            members = how(values)
            return (pack_members(members) if members else None), len(members)

        op = s.service.store_from(
            s.require(), args[1], keys, (_SETS, SET), lambda found: store(_values(found))
        )
        return Deferred(op)

    return handler


class _NumKeys(CommandError):
    """SINTERCARD's numkeys below 1 or not a number, in Redis's words."""

    template = "numkeys should be greater than 0"


class _TooManyKeys(CommandError):
    """SINTERCARD's numkeys past the arguments there are, in Redis's words."""

    template = "Number of keys can't be greater than number of args"


class _NegativeLimit(CommandError):
    """SINTERCARD's LIMIT below 0 or not a number, in Redis's words."""

    template = "LIMIT can't be negative"


def sintercard(s: Session, args: list[bytes]) -> Reply:
    """SINTERCARD numkeys key [key ...] [LIMIT limit]: the size of the intersection."""
    try:
        numkeys = parse_int64(args[1])
    except NotInteger:
        raise _NumKeys from None
    if numkeys <= 0:
        raise _NumKeys
    if numkeys > len(args) - 2:
        raise _TooManyKeys
    keys = list(dict.fromkeys(args[2 : 2 + numkeys]))  # each read once, as for SINTER
    limit = 0
    i = 2 + numkeys
    while i < len(args):
        if args[i].upper() != b"LIMIT" or i + 1 >= len(args):
            raise SyntaxErr
        try:
            limit = parse_int64(args[i + 1])
        except NotInteger:
            raise _NegativeLimit from None
        if limit < 0:
            raise _NegativeLimit
        i += 2

    def look(values: list[bytes | None]) -> int:
        if any(v is None for v in values):
            return 0
        sets = sorted((unpack_members(v) for v in values), key=len)
        first, rest = sets[0], sets[1:]
        found = 0
        for m in first:
            if all(m in other for other in rest):
                found += 1
                if found == limit:
                    break
        return found

    return Deferred(s.service.inspect_many(s.require(), keys, _SETS, lambda f: look(_values(f))))


def sscan(s: Session, args: list[bytes]) -> Reply:
    """SSCAN key cursor [MATCH pattern] [COUNT count]: every member in one reply."""
    match = scan_match(args)

    def look(members: Members) -> list[Any]:
        # A set is one stored value, bounded by the payload cap: it is returned whole,
        # as Redis returns a small set, with cursor 0.
        return [b"0", [m for m in members if match is None or match(m)]]

    return _look(s, args[1], look)


_WM = (WRITE, DENYOOM)
_WF = (WRITE, FAST)
_WMF = (WRITE, DENYOOM, FAST)
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
    keys: tuple[int, int, int] = (1, 1, 1),
) -> Command:
    return Command(name, handler, arity, flags, "set", summary, syntax, since, *keys)


_ALL = (1, -1, 1)

COMMANDS: Final = (
    _row(
        "sadd",
        sadd,
        -3,
        _WMF,
        "Add members to a set; a new set gets the default TTL.",
        "SADD key member [member ...]",
        "1.0.0",
    ),
    _row(
        "srem",
        srem,
        -3,
        _WF,
        "Remove members of a set; an emptied set is deleted.",
        "SREM key member [member ...]",
        "1.0.0",
    ),
    _row("smembers", smembers, 2, _R, "Every member of a set.", "SMEMBERS key", "1.0.0"),
    _row(
        "sismember",
        sismember,
        3,
        _RF,
        "Whether a member is in a set.",
        "SISMEMBER key member",
        "1.0.0",
    ),
    _row(
        "smismember",
        smismember,
        -3,
        _RF,
        "Whether each of several members is in a set.",
        "SMISMEMBER key member [member ...]",
        "6.2.0",
    ),
    _row("scard", scard, 2, _RF, "How many members a set has.", "SCARD key", "1.0.0"),
    _row(
        "spop",
        spop,
        -2,
        _WF,
        "Remove and return random members of a set.",
        "SPOP key [count]",
        "1.0.0",
    ),
    _row(
        "srandmember",
        srandmember,
        -2,
        _R,
        "Random members of a set.",
        "SRANDMEMBER key [count]",
        "1.0.0",
    ),
    _row(
        "smove",
        smove,
        4,
        _WF,
        "Move a member from one set to another.",
        "SMOVE source destination member",
        "1.0.0",
        (1, 2, 1),
    ),
    _row(
        "sinter",
        _reader(_inter),
        -2,
        _R,
        "The members in every set.",
        "SINTER key [key ...]",
        "1.0.0",
        _ALL,
    ),
    _row(
        "sunion",
        _reader(_union),
        -2,
        _R,
        "The members in any set.",
        "SUNION key [key ...]",
        "1.0.0",
        _ALL,
    ),
    _row(
        "sdiff",
        _reader(_diff),
        -2,
        _R,
        "The members of the first set in none of the others.",
        "SDIFF key [key ...]",
        "1.0.0",
        _ALL,
    ),
    _row(
        "sintercard",
        sintercard,
        -3,
        (READONLY, MOVABLEKEYS),
        "How many members are in every set, up to a limit.",
        "SINTERCARD numkeys key [key ...] [LIMIT limit]",
        "7.0.0",
        (0, 0, 0),
    ),
    _row(
        "sinterstore",
        _storer(_inter),
        -3,
        _WM,
        "Store the members in every set, as a new set.",
        "SINTERSTORE destination key [key ...]",
        "1.0.0",
        _ALL,
    ),
    _row(
        "sunionstore",
        _storer(_union),
        -3,
        _WM,
        "Store the members in any set, as a new set.",
        "SUNIONSTORE destination key [key ...]",
        "1.0.0",
        _ALL,
    ),
    _row(
        "sdiffstore",
        _storer(_diff),
        -3,
        _WM,
        "Store the members of the first set in none of the others, as a new set.",
        "SDIFFSTORE destination key [key ...]",
        "1.0.0",
        _ALL,
    ),
    _row(
        "sscan",
        sscan,
        -3,
        _R,
        "The members of a set matching a pattern, in one page.",
        "SSCAN key cursor [MATCH pattern] [COUNT count]",
        "2.8.0",
    ),
)
