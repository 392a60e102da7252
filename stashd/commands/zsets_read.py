"""Sorted-set commands that read a set: scores, counts, ranks, ZRANGE and its kin, ZSCAN.

Each parses and checks every argument first (so bad input is refused for a missing
key too, as Redis refuses it), then reads the set through
:func:`stashd.commands.zsets.look`; members come in Redis's order, by score and then
by member bytes (:mod:`stashd.scores`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Final

from stashd.commands.base import FAST, READONLY, Reply, Session, int_arg, scan_match
from stashd.commands.zsets import look, row, with_scores
from stashd.errors import CommandError, SyntaxErr
from stashd.ops import INT64_MAX, INT64_MIN
from stashd.resp import Score
from stashd.scores import (
    Item,
    LexRange,
    ScoreRange,
    by_rank,
    ordered,
    scan_text,
    walk,
)

if TYPE_CHECKING:
    from collections.abc import Callable

#: The most members ZRANDMEMBER returns for a negative count (repeats allowed). Redis
#: has no cap but the range of a long; one here keeps a request of -10**12 from
#: building a reply of a trillion members before the output limit could refuse it.
RANDMEMBER_MAX: Final = 100_000


def zscore(s: Session, args: list[bytes]) -> Reply:
    """ZSCORE key member: the score, null when absent."""
    member = args[2]

    def see(zs: dict[bytes, float]) -> Score | None:
        score = zs.get(member)
        return None if score is None else Score(score)

    return look(s, args[1], see)


def zmscore(s: Session, args: list[bytes]) -> Reply:
    """ZMSCORE key member [member ...]: each score or null."""
    wanted = args[2:]

    def see(zs: dict[bytes, float]) -> list[Score | None]:
        return [None if (sc := zs.get(m)) is None else Score(sc) for m in wanted]

    return look(s, args[1], see)


def zcard(s: Session, args: list[bytes]) -> Reply:
    """ZCARD key."""
    return look(s, args[1], len)


def zcount(s: Session, args: list[bytes]) -> Reply:
    """ZCOUNT key min max: how many scores are within the range."""
    rng = ScoreRange(args[2], args[3])

    def see(zs: dict[bytes, float]) -> int:
        if rng.empty():
            return 0
        low, high = rng.above_low, rng.below_high
        return sum(1 for sc in zs.values() if low(sc) and high(sc))

    return look(s, args[1], see)


def zlexcount(s: Session, args: list[bytes]) -> Reply:
    """ZLEXCOUNT key min max: how many members are within the lex range."""
    rng = LexRange(args[2], args[3])
    return look(s, args[1], lambda zs: len(walk(ordered(zs), rng)) if zs else 0)


def _rank(s: Session, args: list[bytes], *, reverse: bool) -> Reply:
    """ZRANK and ZREVRANK: the member's place in order (from the top), null when absent."""
    member = args[2]

    def see(zs: dict[bytes, float]) -> int | None:
        score = zs.get(member)
        if score is None:
            return None
        below = sum(1 for m, sc in zs.items() if sc < score or (sc == score and m < member))
        return len(zs) - 1 - below if reverse else below

    return look(s, args[1], see)


def zrank(s: Session, args: list[bytes]) -> Reply:
    """ZRANK key member."""
    return _rank(s, args, reverse=False)


def zrevrank(s: Session, args: list[bytes]) -> Reply:
    """ZREVRANK key member."""
    return _rank(s, args, reverse=True)


_RANK: Final = "rank"
_SCORE: Final = "score"
_LEX: Final = "lex"


def range_pick(
    args: list[bytes], at: int, by: str | None, reverse: bool | None, *, store: bool = False
) -> tuple[Callable[[list[Item]], list[Item]], bool]:
    """ZRANGE's arguments from ``args[at]`` (the key): what to pick, and whether WITHSCORES.

    ``by`` and ``reverse`` are None where an option may set them. Options are read as
    Redis reads them: a form that fixes the kind of range (the BYSCORE of ZRANGEBYSCORE)
    or the direction refuses the keyword that would set it, and ZRANGESTORE (``store``)
    refuses WITHSCORES.
    """
    withscores = False
    offset, limit = 0, -1
    j, n = at + 3, len(args)
    while j < n:
        opt = args[j].upper()
        if not store and opt == b"WITHSCORES":
            withscores = True
        elif opt == b"LIMIT" and n - j - 1 >= 2:
            offset, limit = int_arg(args[j + 1]), int_arg(args[j + 2])
            j += 2
        elif reverse is None and opt == b"REV":
            reverse = True
        elif by is None and opt == b"BYLEX":
            by = _LEX
        elif by is None and opt == b"BYSCORE":
            by = _SCORE
        else:
            raise SyntaxErr
        j += 1
    by = by or _RANK
    backwards = bool(reverse)
    if limit != -1 and by == _RANK:
        msg = "syntax error, LIMIT is only supported in combination with either BYSCORE or BYLEX"
        raise CommandError(msg)
    if withscores and by == _LEX:
        raise CommandError("syntax error, WITHSCORES not supported in combination with BYLEX")
    low, high = args[at + 1], args[at + 2]
    if backwards and by != _RANK:  # the range is given high end first
        low, high = high, low
    pick: Callable[[list[Item]], list[Item]]
    if by == _RANK:
        start, stop = int_arg(low), int_arg(high)

        def pick(items: list[Item]) -> list[Item]:
            last = len(items) - 1
            places = by_rank(len(items), start, stop)
            return [items[last - i] if backwards else items[i] for i in places]

    else:
        rng = ScoreRange(low, high) if by == _SCORE else LexRange(low, high)

        def pick(items: list[Item]) -> list[Item]:
            return walk(items, rng, offset, limit, reverse=backwards)

    return pick, withscores


def _range(s: Session, args: list[bytes], by: str | None, reverse: bool | None) -> Reply:
    """ZRANGE and its older forms: the members picked, in the order picked."""
    pick, withscores = range_pick(args, 1, by, reverse)
    nested = s.proto == 3

    def see(zs: dict[bytes, float]) -> list[Any]:
        picked = pick(ordered(zs)) if zs else []
        return with_scores(picked, nested) if withscores else [m for _, m in picked]

    return look(s, args[1], see)


def zrange(s: Session, args: list[bytes]) -> Reply:
    """ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]."""
    return _range(s, args, None, None)


def zrevrange(s: Session, args: list[bytes]) -> Reply:
    """ZREVRANGE key start stop [WITHSCORES]."""
    return _range(s, args, _RANK, reverse=True)


def zrangebyscore(s: Session, args: list[bytes]) -> Reply:
    """ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]."""
    return _range(s, args, _SCORE, reverse=False)


def zrevrangebyscore(s: Session, args: list[bytes]) -> Reply:
    """ZREVRANGEBYSCORE key max min [WITHSCORES] [LIMIT offset count]."""
    return _range(s, args, _SCORE, reverse=True)


def zrangebylex(s: Session, args: list[bytes]) -> Reply:
    """ZRANGEBYLEX key min max [LIMIT offset count]."""
    return _range(s, args, _LEX, reverse=False)


def zrevrangebylex(s: Session, args: list[bytes]) -> Reply:
    """ZREVRANGEBYLEX key max min [LIMIT offset count]."""
    return _range(s, args, _LEX, reverse=True)


def zrandmember(s: Session, args: list[bytes]) -> Reply:
    """ZRANDMEMBER key [count [WITHSCORES]]."""
    n = len(args)
    if n == 2:
        return look(s, args[1], lambda zs: random.choice(list(zs)) if zs else None)  # noqa: S311 - not for secrets
    count = int_arg(args[2])
    if count == INT64_MIN:
        msg = f"value is out of range, value must between {-INT64_MAX} and {INT64_MAX}"
        raise CommandError(msg)
    if n > 4 or (n == 4 and args[3].upper() != b"WITHSCORES"):
        raise SyntaxErr
    withscores = n == 4
    if withscores and not -(INT64_MAX // 2) <= count <= INT64_MAX // 2:
        raise CommandError("value is out of range")
    if count < -RANDMEMBER_MAX:
        msg = f"ZRANDMEMBER count is {count}, at least -{RANDMEMBER_MAX} when negative"
        raise CommandError(msg)
    nested = s.proto == 3

    def see(zs: dict[bytes, float]) -> list[Any]:
        if not zs or count == 0:
            return []
        if count >= len(zs):  # the whole set, highest first, as Redis sends it
            picked = ordered(zs)[::-1]
        elif count > 0:
            picked = [(zs[m], m) for m in random.sample(list(zs), count)]
        else:
            picked = [(zs[m], m) for m in random.choices(list(zs), k=-count)]  # noqa: S311 - not for secrets
        return with_scores(picked, nested) if withscores else [m for _, m in picked]

    return look(s, args[1], see)


def zscan(s: Session, args: list[bytes]) -> Reply:
    """ZSCAN key cursor [MATCH pattern] [COUNT count]: every member in one reply."""
    match = scan_match(args)

    def see(zs: dict[bytes, float]) -> list[Any]:
        # A sorted set is one stored value, bounded by the payload cap: it is returned
        # whole and in order, with cursor 0, as Redis returns a small (listpack) one.
        items = [
            part
            for sc, m in (ordered(zs) if zs else [])
            if match is None or match(m)
            for part in (m, scan_text(sc))
        ]
        return [b"0", items]

    return look(s, args[1], see)


_R = (READONLY,)
_RF = (READONLY, FAST)

COMMANDS: Final = (
    row(
        "zscore",
        zscore,
        3,
        _RF,
        "The score of a member of a sorted set.",
        "ZSCORE key member",
        "1.2.0",
    ),
    row(
        "zmscore",
        zmscore,
        -3,
        _RF,
        "The scores of members of a sorted set.",
        "ZMSCORE key member [member ...]",
        "6.2.0",
    ),
    row("zcard", zcard, 2, _RF, "How many members a sorted set has.", "ZCARD key", "1.2.0"),
    row(
        "zcount",
        zcount,
        4,
        _RF,
        "How many members of a sorted set have a score within a range.",
        "ZCOUNT key min max",
        "2.0.0",
    ),
    row(
        "zlexcount",
        zlexcount,
        4,
        _RF,
        "How many members of a sorted set are within a range of member names.",
        "ZLEXCOUNT key min max",
        "2.8.9",
    ),
    row(
        "zrank",
        zrank,
        3,
        _RF,
        "The rank of a member of a sorted set, from the lowest score.",
        "ZRANK key member",
        "2.0.0",
    ),
    row(
        "zrevrank",
        zrevrank,
        3,
        _RF,
        "The rank of a member of a sorted set, from the highest score.",
        "ZREVRANK key member",
        "2.0.0",
    ),
    row(
        "zrange",
        zrange,
        -4,
        _R,
        "Members of a sorted set by rank, score or lex range.",
        "ZRANGE key start stop [BYSCORE|BYLEX] [REV] [LIMIT offset count] [WITHSCORES]",
        "1.2.0",
    ),
    row(
        "zrevrange",
        zrevrange,
        -4,
        _R,
        "Members of a sorted set by rank, from the highest score.",
        "ZREVRANGE key start stop [WITHSCORES]",
        "1.2.0",
    ),
    row(
        "zrangebyscore",
        zrangebyscore,
        -4,
        _R,
        "Members of a sorted set within a range of scores.",
        "ZRANGEBYSCORE key min max [WITHSCORES] [LIMIT offset count]",
        "1.0.5",
    ),
    row(
        "zrevrangebyscore",
        zrevrangebyscore,
        -4,
        _R,
        "Members of a sorted set within a range of scores, from the highest.",
        "ZREVRANGEBYSCORE key max min [WITHSCORES] [LIMIT offset count]",
        "2.2.0",
    ),
    row(
        "zrangebylex",
        zrangebylex,
        -4,
        _R,
        "Members of a sorted set within a range of member names.",
        "ZRANGEBYLEX key min max [LIMIT offset count]",
        "2.8.9",
    ),
    row(
        "zrevrangebylex",
        zrevrangebylex,
        -4,
        _R,
        "Members of a sorted set within a range of member names, from the highest.",
        "ZREVRANGEBYLEX key max min [LIMIT offset count]",
        "2.8.9",
    ),
    row(
        "zrandmember",
        zrandmember,
        -2,
        _R,
        "Random members of a sorted set.",
        "ZRANDMEMBER key [count [WITHSCORES]]",
        "6.2.0",
    ),
    row(
        "zscan",
        zscan,
        -3,
        _R,
        "The members of a sorted set matching a pattern, with their scores, in one page.",
        "ZSCAN key cursor [MATCH pattern] [COUNT count]",
        "2.8.0",
    ),
)
