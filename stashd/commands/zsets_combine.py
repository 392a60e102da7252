"""Sorted-set commands that combine sets or store a result: ZUNION, ZINTER, ZDIFF, the STOREs.

Their inputs may be sorted sets or plain sets (whose members score 1), read together by
one operation (:class:`stashd.ops.InspectMany`). The arithmetic is Redis's own, step for
step, because float sums depend on their order: inputs are taken from the smallest to
the largest, a weighted score that is NaN (``inf`` times 0) counts as 0, and so does a
sum that is NaN (``inf`` plus ``-inf``). Redis checks every key's type before it reads
the options after them, so an option's error is raised only once the keys pass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from stashd.commands.base import (
    DENYOOM,
    READONLY,
    WRITE,
    Command,
    Deferred,
    Reply,
    Session,
    int_arg,
)
from stashd.commands.zsets import GROUP, with_scores
from stashd.commands.zsets_read import range_pick
from stashd.containers import pack_scores, unpack_members, unpack_scores
from stashd.errors import CommandError, NotFloat, NotInteger, StashError, SyntaxErr
from stashd.ops import parse_int64
from stashd.scores import ordered, parse_score
from stashd.types import Kind

#: What the inputs may hold.
_INPUTS: Final = (Kind.ZSET, Kind.SET)
_SUM, _MIN, _MAX = "sum", "min", "max"
_AGGREGATES: Final = {b"SUM": _SUM, b"MIN": _MIN, b"MAX": _MAX}


class _NotWeight(CommandError):
    """A weight that is not a number, in Redis's words."""

    template = "weight value is not a float"


class _NegativeLimit(CommandError):
    """ZINTERCARD's LIMIT below zero or not an integer, in Redis's words."""

    template = "LIMIT can't be negative"


def _scores(found: tuple[int, bytes] | None) -> dict[bytes, float]:
    """An input's members and scores: a plain set's members score 1."""
    if found is None:
        return {}
    kind, value = found
    if kind == Kind.SET:
        return dict.fromkeys(unpack_members(value), 1.0)
    return unpack_scores(value)


def _aggregate(target: float, value: float, how: str) -> float:
    """Redis's zunionInterAggregate: a NaN sum is 0; MIN and MAX keep the target on NaN."""
    if how == _SUM:
        total = target + value
        return 0.0 if total != total else total  # noqa: PLR0124 - NaN
    if how == _MIN:
        return min(target, value)
    return max(target, value)


class _Request:
    """What ZUNION, ZINTER, ZDIFF, ZINTERCARD or a STORE form asked for, read as Redis reads it."""

    __slots__ = ("aggregate", "error", "keys", "limit", "weights", "withscores")

    def __init__(
        self, args: list[bytes], *, weighted: bool, card: bool = False, store: bool = False
    ) -> None:
        name = args[0].decode().lower()
        at = 2 if store else 1  # numkeys follows the destination, if any
        count = int_arg(args[at])
        if count < 1:
            msg = f"at least 1 input key is needed for '{name}' command"
            raise CommandError(msg)
        if count > len(args) - at - 1:
            raise SyntaxErr
        self.keys = args[at + 1 : at + 1 + count]
        self.weights = [1.0] * count
        self.aggregate = _SUM
        self.withscores = False
        self.limit = 0
        # Raised by the operation after the keys' types are checked, as Redis orders them.
        self.error: StashError | None = None
        try:
            self._options(args[at + 1 + count :], weighted=weighted, card=card, store=store)
        except StashError as exc:
            self.error = exc

    def _options(self, rest: list[bytes], *, weighted: bool, card: bool, store: bool) -> None:
        j, n, count = 0, len(rest), len(self.keys)
        while j < n:
            opt, left = rest[j].upper(), n - j
            if weighted and not card and left >= count + 1 and opt == b"WEIGHTS":
                weights = []
                for raw in rest[j + 1 : j + 1 + count]:
                    try:
                        weights.append(parse_score(raw))
                    except NotFloat:
                        raise _NotWeight from None
                self.weights = weights
                j += count + 1
            elif weighted and not card and left >= 2 and opt == b"AGGREGATE":
                how = _AGGREGATES.get(rest[j + 1].upper())
                if how is None:
                    raise SyntaxErr
                self.aggregate = how
                j += 2
            elif not card and not store and opt == b"WITHSCORES":
                self.withscores = True
                j += 1
            elif card and left >= 2 and opt == b"LIMIT":
                try:
                    limit = parse_int64(rest[j + 1])
                except NotInteger:
                    raise _NegativeLimit from None
                if limit < 0:
                    raise _NegativeLimit
                self.limit = limit
                j += 2
            else:
                raise SyntaxErr

    def inputs(
        self, found: list[tuple[int, bytes] | None]
    ) -> list[tuple[dict[bytes, float], float]]:
        """Each input's scores with its weight, smallest first (a stable sort, as Redis's)."""
        if self.error is not None:
            raise self.error
        inputs = [(_scores(f), w) for f, w in zip(found, self.weights, strict=True)]
        return sorted(inputs, key=lambda pair: len(pair[0]))


def _weighted(score: float, weight: float) -> float:
    value = weight * score
    return 0.0 if value != value else value  # noqa: PLR0124 - NaN counts as 0


def _union(req: _Request, inputs: list[tuple[dict[bytes, float], float]]) -> dict[bytes, float]:
    out: dict[bytes, float] = {}
    how = req.aggregate
    for scores, weight in inputs:
        for member, score in scores.items():
            value = _weighted(score, weight)
            if member in out:
                out[member] = _aggregate(out[member], value, how)
            else:
                out[member] = value
    return out


def _inter(
    req: _Request, inputs: list[tuple[dict[bytes, float], float]], limit: int = 0
) -> dict[bytes, float]:
    out: dict[bytes, float] = {}
    first, weight = inputs[0]
    how = req.aggregate
    for member, score in first.items():
        total = _weighted(score, weight)
        for scores, w in inputs[1:]:
            other = scores.get(member)
            if other is None:
                break
            total = _aggregate(total, other * w, how)
        else:
            out[member] = total
            if limit and len(out) >= limit:
                break
    return out


#: How a command combines the inputs it read.
Combine = Callable[[list[tuple[int, bytes] | None]], dict[bytes, float]]


def _reply(s: Session, req: _Request, combine: Combine) -> Deferred:
    """Read the inputs together and reply with the combined set, in Redis's order."""
    nested = s.proto == 3

    def look(found: list[tuple[int, bytes] | None]) -> list[Any]:
        result = combine(found)
        picked = sorted([(sc, m) for m, sc in result.items()])
        return with_scores(picked, nested) if req.withscores else [m for _, m in picked]

    return Deferred(s.service.inspect_many(s.require(), req.keys, _INPUTS, look))


def zunion(s: Session, args: list[bytes]) -> Reply:
    """ZUNION numkeys key [key ...] [WEIGHTS weight ...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]."""
    req = _Request(args, weighted=True, card=False)
    return _reply(s, req, lambda found: _union(req, req.inputs(found)))


def zinter(s: Session, args: list[bytes]) -> Reply:
    """ZINTER numkeys key [key ...] [WEIGHTS weight ...] [AGGREGATE SUM|MIN|MAX] [WITHSCORES]."""
    req = _Request(args, weighted=True, card=False)
    return _reply(s, req, lambda found: _inter(req, req.inputs(found)))


def _diff(req: _Request, found: list[tuple[int, bytes] | None]) -> dict[bytes, float]:
    """The first input's members that are in none of the others, with their scores."""
    if req.error is not None:
        raise req.error
    first, *others = [_scores(f) for f in found]
    return {m: sc for m, sc in first.items() if not any(m in o for o in others)}


def zdiff(s: Session, args: list[bytes]) -> Reply:
    """ZDIFF numkeys key [key ...] [WITHSCORES]: the first set's members in no other."""
    req = _Request(args, weighted=False)
    return _reply(s, req, lambda found: _diff(req, found))


def zintercard(s: Session, args: list[bytes]) -> Reply:
    """ZINTERCARD numkeys key [key ...] [LIMIT limit]: the size of the intersection."""
    req = _Request(args, weighted=False, card=True)

    def look(found: list[tuple[int, bytes] | None]) -> int:
        return len(_inter(req, req.inputs(found), req.limit))

    return Deferred(s.service.inspect_many(s.require(), req.keys, _INPUTS, look))


# Redis reports no key positions for them (0 0 0): the keys follow numkeys.
_R: Final = (READONLY, "movablekeys")
_W: Final = (WRITE, DENYOOM, "movablekeys")


def _store(s: Session, args: list[bytes], req: _Request, combine: Combine) -> Deferred:
    """Replace the destination with the combined set (deleted when it is empty): its size."""

    def edit(found: list[tuple[int, bytes] | None]) -> tuple[bytes | None, int]:
        result = combine(found)
        # A zero is stored as +0, as Redis's small sets keep one.
        value = pack_scores({m: sc + 0.0 for m, sc in result.items()}) if result else None
        return value, len(result)

    op = s.service.store_from(s.require(), args[1], req.keys, (_INPUTS, Kind.ZSET), edit)
    return Deferred(op)


def zrangestore(s: Session, args: list[bytes]) -> Reply:
    """ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]."""
    pick, _ = range_pick(args, 2, None, None, store=True)

    def edit(found: list[tuple[int, bytes] | None]) -> tuple[bytes | None, int]:
        picked = pick(ordered(_scores(found[0])))
        return (pack_scores({m: sc for sc, m in picked}) if picked else None), len(picked)

    op = s.service.store_from(s.require(), args[1], [args[2]], ((Kind.ZSET,), Kind.ZSET), edit)
    return Deferred(op)


def zunionstore(s: Session, args: list[bytes]) -> Reply:
    """ZUNIONSTORE destination numkeys key [key ...] [WEIGHTS ...] [AGGREGATE ...]."""
    req = _Request(args, weighted=True, store=True)
    return _store(s, args, req, lambda found: _union(req, req.inputs(found)))


def zinterstore(s: Session, args: list[bytes]) -> Reply:
    """ZINTERSTORE destination numkeys key [key ...] [WEIGHTS ...] [AGGREGATE ...]."""
    req = _Request(args, weighted=True, store=True)
    return _store(s, args, req, lambda found: _inter(req, req.inputs(found)))


def zdiffstore(s: Session, args: list[bytes]) -> Reply:
    """ZDIFFSTORE destination numkeys key [key ...]."""
    req = _Request(args, weighted=False, store=True)
    return _store(s, args, req, lambda found: _diff(req, found))


def _keys_row(  # noqa: PLR0917 - one table row, as the other families write them
    name: str,
    handler: Callable[[Session, list[bytes]], Reply],
    arity: int,
    summary: str,
    syntax: str,
    since: str,
) -> Command:
    """A row whose keys follow a count rather than sit at fixed places."""
    if name.endswith("store"):  # the destination is at 1, as Redis reports it
        return Command(name, handler, arity, _W, GROUP, summary, syntax, since, 1, 1, 1)
    return Command(name, handler, arity, _R, GROUP, summary, syntax, since, 0, 0, 0)


COMMANDS: Final = (
    _keys_row(
        "zunion",
        zunion,
        -3,
        "The union of sorted sets, each score weighted and combined.",
        "ZUNION numkeys key [key ...] [WEIGHTS weight [weight ...]] [AGGREGATE SUM|MIN|MAX] "
        "[WITHSCORES]",
        "6.2.0",
    ),
    _keys_row(
        "zinter",
        zinter,
        -3,
        "The intersection of sorted sets, each score weighted and combined.",
        "ZINTER numkeys key [key ...] [WEIGHTS weight [weight ...]] [AGGREGATE SUM|MIN|MAX] "
        "[WITHSCORES]",
        "6.2.0",
    ),
    _keys_row(
        "zdiff",
        zdiff,
        -3,
        "The members of the first sorted set that are in none of the others.",
        "ZDIFF numkeys key [key ...] [WITHSCORES]",
        "6.2.0",
    ),
    _keys_row(
        "zintercard",
        zintercard,
        -3,
        "How many members the intersection of sorted sets has.",
        "ZINTERCARD numkeys key [key ...] [LIMIT limit]",
        "7.0.0",
    ),
    Command(
        "zrangestore",
        zrangestore,
        -5,
        (WRITE, DENYOOM),
        GROUP,
        "ZRANGE into a key, replacing what it held; a new set gets the default TTL.",
        "ZRANGESTORE dst src min max [BYSCORE|BYLEX] [REV] [LIMIT offset count]",
        "6.2.0",
        1,
        2,
        1,
    ),
    _keys_row(
        "zunionstore",
        zunionstore,
        -4,
        "ZUNION into a key, replacing what it held; a new set gets the default TTL.",
        "ZUNIONSTORE destination numkeys key [key ...] [WEIGHTS weight [weight ...]] "
        "[AGGREGATE SUM|MIN|MAX]",
        "2.0.0",
    ),
    _keys_row(
        "zinterstore",
        zinterstore,
        -4,
        "ZINTER into a key, replacing what it held; a new set gets the default TTL.",
        "ZINTERSTORE destination numkeys key [key ...] [WEIGHTS weight [weight ...]] "
        "[AGGREGATE SUM|MIN|MAX]",
        "2.0.0",
    ),
    _keys_row(
        "zdiffstore",
        zdiffstore,
        -4,
        "ZDIFF into a key, replacing what it held; a new set gets the default TTL.",
        "ZDIFFSTORE destination numkeys key [key ...]",
        "6.2.0",
    ),
)
