"""Sorted-set commands that change a set: ZADD, ZINCRBY, ZREM, the pops, the removals by range.

A sorted set is one entry of kind ZSET (see :mod:`stashd.containers` for its value):
the handlers parse and check every argument, then hand the memory service a function
from the stored members and scores to the new ones and the reply, so the rules of a
key (TTL, caps, versions, WRONGTYPE, an emptied set deleted) are those of
:mod:`stashd.ops.containers`, never repeated here. How scores are read, ordered and
picked by a range is :mod:`stashd.scores`; the reads are
:mod:`stashd.commands.zsets_read` and the commands over several sets (ZUNION and the
STORE forms) :mod:`stashd.commands.zsets_combine`, both sharing this module's helpers.
Pops that wait (BZPOPMIN, BZMPOP) wait as the list pops do (:mod:`stashd.commands.blocking`).
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any, Final

from stashd.commands.base import (
    DENYOOM,
    FAST,
    WRITE,
    Command,
    Deferred,
    Reply,
    Session,
    edit_decoded,
    int_arg,
    look_decoded,
)
from stashd.commands.blocking import block_on, timeout_arg
from stashd.containers import pack_scores, unpack_scores
from stashd.errors import CommandError, NotInteger, SyntaxErr
from stashd.ops import parse_int64
from stashd.resp import NULL_ARRAY, Score
from stashd.scores import (
    Item,
    LexRange,
    NaNScore,
    ScoreRange,
    by_rank,
    ordered,
    parse_score,
    walk,
)
from stashd.types import Kind

if TYPE_CHECKING:
    from collections.abc import Callable


ZSET: Final = Kind.ZSET
#: The group COMMAND DOCS reports, and the SPEC chapter's: Redis's own name for it.
GROUP: Final = "sorted-set"


def look(s: Session, key: bytes, see: Callable[[dict[bytes, float]], Any]) -> Deferred:
    """A read of the sorted set under ``key``: ``see`` gets its scores (empty for no key)."""
    return look_decoded(s, key, ZSET, unpack_scores, see)


def change(
    s: Session, key: bytes, edit: Callable[[dict[bytes, float]], tuple[bool, Any]]
) -> Deferred:
    """A change to the sorted set under ``key``: ``edit`` changes its scores in place."""
    return edit_decoded(s, key, ZSET, unpack_scores, pack_scores, edit)


def with_scores(items: list[Item], nested: bool) -> list[Any]:
    """Members and their scores as Redis replies them: flat, or (RESP3) a pair for each."""
    if nested:
        return [[m, Score(sc)] for sc, m in items]
    return [part for sc, m in items for part in (m, Score(sc))]


class _OutOfRange(CommandError):
    """A count that must be a positive integer (ZPOPMIN's), in Redis's words."""

    template = "value is out of range, must be positive"


def _adder(  # noqa: PLR0917 - ZADD's option flags, each one rule of Redis's
    members: list[bytes],
    scores: list[float],
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
    ch: bool,
    incr: bool,
) -> Callable[[dict[bytes, float]], tuple[bool, Any]]:
    """ZADD's change: each pair in turn, as Redis's zsetAdd applies them."""

    def edit(zs: dict[bytes, float]) -> tuple[bool, Any]:
        added = updated = processed = 0
        result = 0.0
        for member, score in zip(members, scores, strict=True):
            current = zs.get(member)
            if current is None:
                if xx:
                    continue
                # Stored as +0 for -0, as Redis's small sets keep it; the reply is as given.
                zs[member] = score + 0.0
                result = score
                added += 1
                processed += 1
                continue
            if nx:
                continue
            new = score + current if incr else score
            if new != new:  # noqa: PLR0124 - NaN is the one value unequal to itself
                raise NaNScore
            if (lt and new >= current) or (gt and new <= current):
                continue
            processed += 1
            result = new
            if new != current:
                zs[member] = new + 0.0
                updated += 1
        changed = added + updated > 0
        if incr:
            return changed, Score(result) if processed else None
        return changed, added + updated if ch else added

    return edit


_ZADD_FLAGS: Final = {b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR"}


def zadd(s: Session, args: list[bytes]) -> Reply:
    """ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]."""
    flags: set[bytes] = set()
    i = 2
    while i < len(args) and (opt := args[i].upper()) in _ZADD_FLAGS:
        flags.add(opt)
        i += 1
    pairs = args[i:]
    if not pairs or len(pairs) % 2:
        raise SyntaxErr
    nx, xx, gt, lt = (f in flags for f in (b"NX", b"XX", b"GT", b"LT"))
    if nx and xx:
        raise CommandError("XX and NX options at the same time are not compatible")
    if (gt and nx) or (lt and nx) or (gt and lt):
        raise CommandError("GT, LT, and/or NX options at the same time are not compatible")
    incr = b"INCR" in flags
    if incr and len(pairs) > 2:
        raise CommandError("INCR option supports a single increment-element pair")
    scores = [parse_score(raw) for raw in pairs[::2]]
    edit = _adder(pairs[1::2], scores, nx, xx, gt, lt, b"CH" in flags, incr)
    return change(s, args[1], edit)


def zincrby(s: Session, args: list[bytes]) -> Reply:
    """ZINCRBY key increment member: the new score."""
    edit = _adder([args[3]], [parse_score(args[2])], False, False, False, False, False, True)
    return change(s, args[1], edit)


def zrem(s: Session, args: list[bytes]) -> Reply:
    """ZREM key member [member ...]: how many were removed."""
    gone = args[2:]

    def edit(zs: dict[bytes, float]) -> tuple[bool, int]:
        removed = sum(zs.pop(m, None) is not None for m in dict.fromkeys(gone))
        return removed > 0, removed

    return change(s, args[1], edit)


def _pop(s: Session, args: list[bytes], *, highest: bool) -> Reply:
    """ZPOPMIN and ZPOPMAX: remove and return the lowest (highest) ``count`` members."""
    if len(args) > 3:
        raise SyntaxErr
    count: int | None = None
    if len(args) == 3:
        try:
            count = parse_int64(args[2])
        except NotInteger:
            raise _OutOfRange from None
        if count < 0:
            raise _OutOfRange
    # A count asks for a list of pairs in RESP3; a single pop is one flat pair, as in Redis.
    nested = s.proto == 3 and count is not None
    n = 1 if count is None else count

    def edit(zs: dict[bytes, float]) -> tuple[bool, list[Any]]:
        if not zs or n == 0:
            return False, []
        return True, with_scores(_take(zs, n, highest=highest), nested)

    return change(s, args[1], edit)


def _take(zs: dict[bytes, float], n: int, *, highest: bool) -> list[Item]:
    """Remove and return the ``n`` lowest (highest) members, in the order they go."""
    pairs = [(sc, m) for m, sc in zs.items()]
    if n >= len(pairs):
        picked = sorted(pairs, reverse=highest)
    else:
        picked = (heapq.nlargest if highest else heapq.nsmallest)(n, pairs)
    for _, m in picked:
        del zs[m]
    return picked


def zpopmin(s: Session, args: list[bytes]) -> Reply:
    """ZPOPMIN key [count]."""
    return _pop(s, args, highest=False)


def zpopmax(s: Session, args: list[bytes]) -> Reply:
    """ZPOPMAX key [count]."""
    return _pop(s, args, highest=True)


def _pop_one(s: Session, key: bytes, *, highest: bool) -> Deferred:
    """The pop a blocked client tries: its result (member, score), or None for no set."""

    def edit(zs: dict[bytes, float]) -> tuple[bool, tuple[bytes, float] | None]:
        if not zs:
            return False, None
        score, member = (max if highest else min)((sc, m) for m, sc in zs.items())
        del zs[member]
        return True, (member, score)

    return change(s, key, edit)


def _bzpop(*, highest: bool) -> Callable[[Session, list[bytes]], Reply]:
    """BZPOPMIN and BZPOPMAX: a pop from the first non-empty key, as [key, member, score]."""

    def handler(s: Session, args: list[bytes]) -> Reply:
        keys, timeout = args[1:-1], timeout_arg(args[-1])

        def at_once() -> Deferred:
            # Every key tried in one operation, where nothing may wait (inside EXEC).
            op = s.service.edit_first(s.require(), keys, ZSET, _popper(1, highest=highest))

            def finish(found: tuple[bytes, list[Item]] | None) -> Reply:
                if found is None:
                    return NULL_ARRAY
                key, ((score, member),) = found
                return [key, member, Score(score)]

            return Deferred(op, finish)

        return block_on(
            s,
            keys,
            timeout,
            lambda key: _pop_one(s, key, highest=highest),
            lambda key, popped: [key, popped[0], Score(popped[1])],
            at_once,
        )

    return handler


class _NumkeysNotPositive(CommandError):
    """ZMPOP's numkeys below 1 or not an integer, in Redis's words."""

    template = "numkeys should be greater than 0"


class _CountNotPositive(CommandError):
    """ZMPOP's COUNT below 1 or not an integer, in Redis's words."""

    template = "count should be greater than 0"


def _positive(raw: bytes, error: CommandError) -> int:
    """An integer of at least 1, Redis's range check answering ``error`` for anything else."""
    try:
        value = parse_int64(raw)
    except NotInteger:
        raise error from None
    if value < 1:
        raise error
    return value


def _mpop_args(args: list[bytes], at: int) -> tuple[list[bytes], bool, int]:
    """ZMPOP's numkeys key [key ...] MIN|MAX [COUNT count] from ``args[at]``."""
    numkeys = _positive(args[at], _NumkeysNotPositive())
    where = at + numkeys + 1
    if where >= len(args):
        raise SyntaxErr
    end = args[where].upper()
    if end not in {b"MIN", b"MAX"}:
        raise SyntaxErr
    count = -1
    j = where + 1
    while j < len(args):
        if count == -1 and args[j].upper() == b"COUNT" and j + 1 < len(args):
            count = _positive(args[j + 1], _CountNotPositive())
            j += 2
        else:
            raise SyntaxErr
    return args[at + 1 : where], end == b"MAX", max(count, 1)


def _popper(count: int, *, highest: bool) -> Callable[[bytes], tuple[bytes | None, list[Item]]]:
    """ZMPOP's edit of the set it found: up to ``count`` members from one end, in order."""

    def edit(value: bytes) -> tuple[bytes | None, list[Item]]:
        zs = unpack_scores(value)
        picked = _take(zs, count, highest=highest)
        return (pack_scores(zs) if zs else None), picked

    return edit


def _mpop_reply(key: bytes, picked: list[Item]) -> list[Any]:
    """[key, [[member, score], ...]]: nested in both protocols, as Redis sends it."""
    return [key, with_scores(picked, nested=True)]


def _mpop(s: Session, keys: list[bytes], count: int, *, highest: bool) -> Deferred:
    """The pop from the first non-empty set of ``keys``; Redis's null array for none."""
    op = s.service.edit_first(s.require(), keys, ZSET, _popper(count, highest=highest))

    def finish(result: tuple[bytes, list[Item]] | None) -> Any:  # noqa: ANN401 - the reply
        return NULL_ARRAY if result is None else _mpop_reply(*result)

    return Deferred(op, finish)


def zmpop(s: Session, args: list[bytes]) -> Reply:
    """ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]."""
    keys, highest, count = _mpop_args(args, 1)
    return _mpop(s, keys, count, highest=highest)


def bzmpop(s: Session, args: list[bytes]) -> Reply:
    """BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]."""
    timeout = timeout_arg(args[1])
    keys, highest, count = _mpop_args(args, 2)

    def attempt(key: bytes) -> Deferred:
        # A blocked client's try on one key: the members popped, None for no set.
        def edit(zs: dict[bytes, float]) -> tuple[bool, list[Item] | None]:
            return (True, _take(zs, count, highest=highest)) if zs else (False, None)

        return change(s, key, edit)

    return block_on(
        s,
        keys,
        timeout,
        attempt,
        _mpop_reply,
        lambda: _mpop(s, keys, count, highest=highest),
    )


def _remove(pick: Callable[[list[Item]], list[Item]]) -> Callable[[dict[bytes, float]], Any]:
    """A removal of the members ``pick`` chooses from the set in order: how many went."""

    def edit(zs: dict[bytes, float]) -> tuple[bool, int]:
        gone = pick(ordered(zs)) if zs else []
        for _, m in gone:
            del zs[m]
        return bool(gone), len(gone)

    return edit


def zremrangebyrank(s: Session, args: list[bytes]) -> Reply:
    """ZREMRANGEBYRANK key start stop: how many were removed."""
    start, stop = int_arg(args[2]), int_arg(args[3])

    def pick(items: list[Item]) -> list[Item]:
        return [items[i] for i in by_rank(len(items), start, stop)]

    return change(s, args[1], _remove(pick))


def zremrangebyscore(s: Session, args: list[bytes]) -> Reply:
    """ZREMRANGEBYSCORE key min max: how many were removed."""
    rng = ScoreRange(args[2], args[3])
    return change(s, args[1], _remove(lambda items: walk(items, rng)))


def zremrangebylex(s: Session, args: list[bytes]) -> Reply:
    """ZREMRANGEBYLEX key min max: how many were removed."""
    rng = LexRange(args[2], args[3])
    return change(s, args[1], _remove(lambda items: walk(items, rng)))


_W = (WRITE,)
_WF = (WRITE, FAST)


def row(  # noqa: PLR0917 - one table row, as the other families write them
    name: str,
    handler: Callable[[Session, list[bytes]], Reply],
    arity: int,
    flags: tuple[str, ...],
    summary: str,
    syntax: str,
    since: str,
) -> Command:
    """A sorted-set command's row: the key is its first argument."""
    return Command(name, handler, arity, flags, GROUP, summary, syntax, since, 1, 1, 1)


COMMANDS: Final = (
    row(
        "zadd",
        zadd,
        -4,
        (*_WF, DENYOOM),
        "Add members to a sorted set or change their scores; a new set gets the default TTL.",
        "ZADD key [NX|XX] [GT|LT] [CH] [INCR] score member [score member ...]",
        "1.2.0",
    ),
    row(
        "zincrby",
        zincrby,
        4,
        (*_WF, DENYOOM),
        "Add to the score of a member of a sorted set.",
        "ZINCRBY key increment member",
        "1.2.0",
    ),
    row(
        "zrem",
        zrem,
        -3,
        _WF,
        "Remove members of a sorted set; an emptied set is deleted.",
        "ZREM key member [member ...]",
        "1.2.0",
    ),
    row(
        "zpopmin",
        zpopmin,
        -2,
        _WF,
        "Remove and return the members with the lowest scores.",
        "ZPOPMIN key [count]",
        "5.0.0",
    ),
    row(
        "zpopmax",
        zpopmax,
        -2,
        _WF,
        "Remove and return the members with the highest scores.",
        "ZPOPMAX key [count]",
        "5.0.0",
    ),
    Command(
        "bzpopmin",
        _bzpop(highest=False),
        -3,
        (*_WF, "noscript", "blocking"),
        GROUP,
        "ZPOPMIN of the first non-empty sorted set, waiting for one up to a timeout.",
        "BZPOPMIN key [key ...] timeout",
        "5.0.0",
        1,
        -2,
        1,
    ),
    Command(
        "bzpopmax",
        _bzpop(highest=True),
        -3,
        (*_WF, "noscript", "blocking"),
        GROUP,
        "ZPOPMAX of the first non-empty sorted set, waiting for one up to a timeout.",
        "BZPOPMAX key [key ...] timeout",
        "5.0.0",
        1,
        -2,
        1,
    ),
    Command(
        "zmpop",
        zmpop,
        -4,
        (WRITE, "movablekeys"),
        GROUP,
        "Remove and return members from one end of the first non-empty sorted set.",
        "ZMPOP numkeys key [key ...] MIN|MAX [COUNT count]",
        "7.0.0",
        0,
        0,
        0,
    ),
    Command(
        "bzmpop",
        bzmpop,
        -5,
        (WRITE, "blocking", "movablekeys"),
        GROUP,
        "ZMPOP, waiting for one of the sorted sets to have members up to a timeout.",
        "BZMPOP timeout numkeys key [key ...] MIN|MAX [COUNT count]",
        "7.0.0",
        0,
        0,
        0,
    ),
    row(
        "zremrangebyrank",
        zremrangebyrank,
        4,
        _W,
        "Remove the members of a sorted set within a range of ranks.",
        "ZREMRANGEBYRANK key start stop",
        "2.0.0",
    ),
    row(
        "zremrangebyscore",
        zremrangebyscore,
        4,
        _W,
        "Remove the members of a sorted set within a range of scores.",
        "ZREMRANGEBYSCORE key min max",
        "1.2.0",
    ),
    row(
        "zremrangebylex",
        zremrangebylex,
        4,
        _W,
        "Remove the members of a sorted set within a range of member names.",
        "ZREMRANGEBYLEX key min max",
        "2.8.9",
    ),
)
