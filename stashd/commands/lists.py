"""List commands: pushes, pops, ranges and edits, each a pure function on the list's value.

A list is one entry of kind LIST (see :mod:`stashd.lists` for its value): handlers
parse and check every argument, then hand the memory service a function from the
stored value to the new one and the reply, so the rules of a key (TTL, caps,
versions, WRONGTYPE, deleted once empty) are those of :mod:`stashd.ops.containers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd import lists
from stashd.commands.base import (
    DENYOOM,
    FAST,
    READONLY,
    WRITE,
    Command,
    Deferred,
    NotPositive,
    Reply,
    Session,
    int_arg,
)
from stashd.errors import CommandError, NoSuchKey, NotInteger, SyntaxErr, WrongArity
from stashd.ops import KEEP
from stashd.resp import OK
from stashd.types import Kind

if TYPE_CHECKING:
    from collections.abc import Callable

LIST: Final = Kind.LIST


class _IndexRange(CommandError):
    """LSET past either end, in Redis's words."""

    template = "index out of range"


class _RankZero(CommandError):
    """LPOS RANK 0, in Redis's words."""

    template = (
        "RANK can't be zero: use 1 to start from the first match, 2 from the second ... "
        "or use negative to start from the end of the list"
    )


class _Negative(CommandError):
    """LPOS COUNT or MAXLEN below zero, in Redis's words."""

    template = "{what} can't be negative"
    what: str

    def __init__(self, what: str) -> None:
        self._fill(what=what)


def _look(s: Session, key: bytes, look: Callable[[bytes | None], Any]) -> Deferred:
    """A read of the list under ``key``."""
    return Deferred(s.service.inspect(s.require(), key, LIST, look))


def _edit(s: Session, key: bytes, edit: Callable[[bytes | None], tuple[Any, Any]]) -> Deferred:
    """A change to the list under ``key``."""
    return Deferred(s.service.edit(s.require(), key, LIST, edit))


def _pusher(*, left: bool, only_existing: bool) -> Callable[[Session, list[bytes]], Reply]:
    """LPUSH, RPUSH, LPUSHX, RPUSHX: one parser, told the end and whether a key must exist."""

    def handler(s: Session, args: list[bytes]) -> Reply:
        items = args[2:]

        def edit(value: bytes | None) -> tuple[Any, int]:
            if value is None and only_existing:
                return KEEP, 0
            new = lists.push(value, items, left=left)
            return new, lists.count(new)

        return _edit(s, args[1], edit)

    return handler


def _popper(*, left: bool) -> Callable[[Session, list[bytes]], Reply]:
    """LPOP and RPOP, with or without a count."""

    def handler(s: Session, args: list[bytes]) -> Reply:
        if len(args) > 3:
            raise WrongArity(args[0].decode())
        counted = len(args) == 3
        n = 1
        if counted:
            try:
                n = int_arg(args[2])
            except NotInteger:
                raise NotPositive from None  # Redis answers this for any bad count
            if n < 0:
                raise NotPositive

        def edit(value: bytes | None) -> tuple[Any, Any]:
            if value is None:
                return KEEP, None
            if counted and n == 0:
                return KEEP, []
            rest, items = lists.pop(value, n, left=left)
            return rest, (items if counted else items[0])

        return _edit(s, args[1], edit)

    return handler


def pop_one(*, left: bool) -> Callable[[Session, bytes], Deferred]:
    """One item off one end of a list (None when there is no list): BLPOP's single try."""

    def attempt(s: Session, key: bytes) -> Deferred:
        def edit(value: bytes | None) -> tuple[Any, Any]:
            if value is None:
                return KEEP, None
            rest, (item,) = lists.pop(value, 1, left=left)
            return rest, item

        return _edit(s, key, edit)

    return attempt


def pop_first(s: Session, keys: list[bytes], *, left: bool) -> Deferred:
    """One item off the first of ``keys`` that holds a list: (key, item), None for none.

    BLPOP's try of every key as one operation, where nothing may wait (inside EXEC).
    """

    def edit(value: bytes) -> tuple[bytes | None, bytes]:
        rest, (item,) = lists.pop(value, 1, left=left)
        return rest, item

    return Deferred(s.service.edit_first(s.require(), keys, LIST, edit))


def lrange(s: Session, args: list[bytes]) -> Reply:
    """LRANGE key start stop."""
    start, stop = int_arg(args[2]), int_arg(args[3])
    return _look(s, args[1], lambda v: lists.span(v, start, stop))


def llen(s: Session, args: list[bytes]) -> Reply:
    """LLEN key."""
    return _look(s, args[1], lists.count)


def lindex(s: Session, args: list[bytes]) -> Reply:
    """LINDEX key index."""
    i = int_arg(args[2])
    return _look(s, args[1], lambda v: lists.index(v, i))


def lset(s: Session, args: list[bytes]) -> Reply:
    """LSET key index element."""
    i, element = int_arg(args[2]), args[3]

    def edit(value: bytes | None) -> tuple[Any, str]:
        if value is None:
            raise NoSuchKey
        items = lists.unpack(value)
        j = i + len(items) if i < 0 else i
        if not 0 <= j < len(items):
            raise _IndexRange
        items[j] = element
        return lists.pack(items), OK

    return _edit(s, args[1], edit)


def lrem(s: Session, args: list[bytes]) -> Reply:
    """LREM key count element: how many were removed (count < 0 from the tail, 0 all)."""
    n, element = int_arg(args[2]), args[3]

    def edit(value: bytes | None) -> tuple[Any, int]:
        if value is None:
            return KEEP, 0
        items = lists.unpack(value)
        limit = abs(n) or len(items)
        order = range(len(items) - 1, -1, -1) if n < 0 else range(len(items))
        gone: set[int] = set()
        for j in order:
            if len(gone) == limit:
                break
            if items[j] == element:
                gone.add(j)
        if not gone:
            return KEEP, 0
        kept = [item for j, item in enumerate(items) if j not in gone]
        return lists.pack(kept), len(gone)

    return _edit(s, args[1], edit)


def ltrim(s: Session, args: list[bytes]) -> Reply:
    """LTRIM key start stop: keep only that range."""
    start, stop = int_arg(args[2]), int_arg(args[3])

    def edit(value: bytes | None) -> tuple[Any, str]:
        if value is None:
            return KEEP, OK
        kept = lists.span(value, start, stop)
        if len(kept) == lists.count(value):
            return KEEP, OK
        return lists.pack(kept), OK

    return _edit(s, args[1], edit)


def linsert(s: Session, args: list[bytes]) -> Reply:
    """LINSERT key BEFORE|AFTER pivot element: the new length, -1 without the pivot."""
    where = args[2].upper()
    if where not in {b"BEFORE", b"AFTER"}:
        raise SyntaxErr
    pivot, element = args[3], args[4]

    def edit(value: bytes | None) -> tuple[Any, int]:
        if value is None:
            return KEEP, 0
        items = lists.unpack(value)
        try:
            j = items.index(pivot)
        except ValueError:
            return KEEP, -1
        items.insert(j if where == b"BEFORE" else j + 1, element)
        return lists.pack(items), len(items)

    return _edit(s, args[1], edit)


def _lpos_options(args: list[bytes]) -> tuple[int, int | None, int]:
    """LPOS's RANK, COUNT (None when not given) and MAXLEN, checked as Redis does."""
    rank, many, maxlen = 1, None, 0
    i = 3
    while i < len(args):
        word = args[i].upper()
        if i + 1 >= len(args) or word not in {b"RANK", b"COUNT", b"MAXLEN"}:
            raise SyntaxErr
        number = int_arg(args[i + 1])
        if word == b"RANK":
            if number == 0:
                raise _RankZero
            rank = number
        elif word == b"COUNT":
            if number < 0:
                raise _Negative(what="COUNT")
            many = number
        else:
            if number < 0:
                raise _Negative(what="MAXLEN")
            maxlen = number
        i += 2
    return rank, many, maxlen


def lpos(s: Session, args: list[bytes]) -> Reply:
    """LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]."""
    element = args[2]
    rank, many, maxlen = _lpos_options(args)

    def look(value: bytes | None) -> Any:  # noqa: ANN401 - an index, nil, or a list of them
        items = lists.unpack(value)
        total = len(items)
        order = range(total) if rank > 0 else range(total - 1, -1, -1)
        skip = abs(rank) - 1
        want = many if many is not None else 1
        found: list[int] = []
        for seen, j in enumerate(order):
            if maxlen and seen >= maxlen:
                break
            if items[j] == element:
                if skip:
                    skip -= 1
                    continue
                found.append(j)
                if want and len(found) == want:
                    break
        if many is None:
            return found[0] if found else None
        return found

    return _look(s, args[1], look)


_ENDS: Final = {b"LEFT": True, b"RIGHT": False}


def end_arg(raw: bytes) -> bool:
    """LEFT (True) or RIGHT, refusing anything else as Redis does."""
    left = _ENDS.get(raw.upper())
    if left is None:
        raise SyntaxErr
    return left


def move(s: Session, src: bytes, dst: bytes, *, from_left: bool, to_left: bool) -> Deferred:
    """Pop one item off ``src`` and push it onto ``dst``, atomically (same key: a rotation)."""

    def edit(a: bytes | None, b: bytes | None) -> tuple[Any, Any, Any]:
        if a is None:
            return KEEP, KEEP, None
        rest, (item,) = lists.pop(a, 1, left=from_left)
        if src == dst:
            return lists.push(rest, [item], left=to_left), KEEP, item
        return rest, lists.push(b, [item], left=to_left), item

    return Deferred(s.service.edit_two(s.require(), src, dst, (LIST, LIST), edit))


def lmove(s: Session, args: list[bytes]) -> Reply:
    """LMOVE source destination LEFT|RIGHT LEFT|RIGHT."""
    from_left, to_left = end_arg(args[3]), end_arg(args[4])
    return move(s, args[1], args[2], from_left=from_left, to_left=to_left)


def rpoplpush(s: Session, args: list[bytes]) -> Reply:
    """RPOPLPUSH source destination: LMOVE source destination RIGHT LEFT."""
    return move(s, args[1], args[2], from_left=False, to_left=True)


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
    last_key: int = 1,
) -> Command:
    return Command(name, handler, arity, flags, "list", summary, syntax, since, 1, last_key, 1)


COMMANDS: Final = (
    _row(
        "lpush",
        _pusher(left=True, only_existing=False),
        -3,
        (*_WF, DENYOOM),
        "Push items at the head of a list; a new list gets the default TTL.",
        "LPUSH key element [element ...]",
        "1.0.0",
    ),
    _row(
        "rpush",
        _pusher(left=False, only_existing=False),
        -3,
        (*_WF, DENYOOM),
        "Push items at the tail of a list; a new list gets the default TTL.",
        "RPUSH key element [element ...]",
        "1.0.0",
    ),
    _row(
        "lpushx",
        _pusher(left=True, only_existing=True),
        -3,
        (*_WF, DENYOOM),
        "Push items at the head of a list only if it exists.",
        "LPUSHX key element [element ...]",
        "2.2.0",
    ),
    _row(
        "rpushx",
        _pusher(left=False, only_existing=True),
        -3,
        (*_WF, DENYOOM),
        "Push items at the tail of a list only if it exists.",
        "RPUSHX key element [element ...]",
        "2.2.0",
    ),
    _row(
        "lpop",
        _popper(left=True),
        -2,
        _WF,
        "Remove and return items from the head of a list.",
        "LPOP key [count]",
        "1.0.0",
    ),
    _row(
        "rpop",
        _popper(left=False),
        -2,
        _WF,
        "Remove and return items from the tail of a list.",
        "RPOP key [count]",
        "1.0.0",
    ),
    _row("lrange", lrange, 4, _R, "A range of items of a list.", "LRANGE key start stop", "1.0.0"),
    _row("llen", llen, 2, _RF, "The length of a list.", "LLEN key", "1.0.0"),
    _row("lindex", lindex, 3, _R, "An item of a list by its index.", "LINDEX key index", "1.0.0"),
    _row(
        "lset",
        lset,
        4,
        (*_W, DENYOOM),
        "Set an item of a list by its index.",
        "LSET key index element",
        "1.0.0",
    ),
    _row(
        "lrem",
        lrem,
        4,
        _W,
        "Remove items equal to an element from a list.",
        "LREM key count element",
        "1.0.0",
    ),
    _row("ltrim", ltrim, 4, _W, "Keep only a range of a list.", "LTRIM key start stop", "1.0.0"),
    _row(
        "linsert",
        linsert,
        5,
        (*_W, DENYOOM),
        "Insert an item before or after another in a list.",
        "LINSERT key BEFORE|AFTER pivot element",
        "2.2.0",
    ),
    _row(
        "lpos",
        lpos,
        -3,
        _R,
        "The index of matching items in a list.",
        "LPOS key element [RANK rank] [COUNT num-matches] [MAXLEN len]",
        "6.0.6",
    ),
    _row(
        "lmove",
        lmove,
        5,
        (*_W, DENYOOM),
        "Move an item from one end of a list to an end of another.",
        "LMOVE source destination LEFT|RIGHT LEFT|RIGHT",
        "6.2.0",
        2,
    ),
    _row(
        "rpoplpush",
        rpoplpush,
        3,
        (*_W, DENYOOM),
        "Move the tail item of a list to the head of another.",
        "RPOPLPUSH source destination",
        "1.2.0",
        2,
    ),
)
