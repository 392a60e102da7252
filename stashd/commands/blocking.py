"""Blocking list pops (BLPOP, BRPOP, BLMOVE, BRPOPLPUSH): a pop tried, then waited for.

:func:`block_on` is the wait itself, which the sorted sets' BZPOPMIN and BZPOPMAX share.

The pop itself is the non-blocking command's operation, run through the normal path,
so it is atomic and every rule of a list holds. Between tries the client waits in
the node's registry (:mod:`stashd.waiters`), woken when a write to one of its keys
commits; it is registered before each try, so a push that lands just after a try
that found nothing still wakes it. A write through another node on the same Redis
is not seen by this node's registry, so a blocked client also tries again every
:data:`POLL_SECONDS`: that is the latency bound across nodes.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, Final

from stashd.commands import lists as list_commands
from stashd.commands.base import DENYOOM, WRITE, Awaiting, Command, Deferred, Reply, Session
from stashd.errors import CommandError
from stashd.ops import INT64_MAX
from stashd.resp import NULL_ARRAY

if TYPE_CHECKING:
    from collections.abc import Callable


#: How long a blocked client waits before trying again without a wake-up: the bound
#: on the latency of a push made through another stashd node on the same Redis.
POLL_SECONDS: Final = 0.1


class _TimeoutNotFloat(CommandError):
    """A timeout that does not parse, in Redis's words."""

    template = "timeout is not a float or out of range"


class _TimeoutNegative(CommandError):
    """A timeout below zero (or past the range of milliseconds), in Redis's words."""

    template = "timeout is negative"


def timeout_arg(raw: bytes) -> float:
    """A blocking timeout in seconds (0: forever), read as Redis reads it."""
    try:
        seconds = float(raw)
    except ValueError:
        raise _TimeoutNotFloat from None
    if math.isnan(seconds):
        raise _TimeoutNotFloat
    # Redis turns the seconds into a 64-bit count of ms, which wraps below zero past it.
    if seconds < 0 or seconds * 1000 > INT64_MAX:
        raise _TimeoutNegative
    return seconds


def block_on(  # noqa: PLR0917 - the command's keys and what to do with each
    s: Session,
    keys: list[bytes],
    timeout: float,
    attempt: Callable[[bytes], Deferred],
    finish: Callable[[bytes, Any], Any],
    at_once: Callable[[], Deferred] | None = None,
) -> Reply:
    """Try ``attempt`` on each key in order; wait for a write to one of them, up to ``timeout``.

    ``attempt(key)`` is the non-blocking command's operation on one key, whose result
    None means nothing was there; ``finish(key, result)`` is the reply. Nothing by the
    timeout (or nothing at once, inside EXEC or a script) is a null array, as Redis
    answers every blocking pop that timed out. ``at_once`` is the one operation that
    tries every key where nothing may wait (BZMPOP's is ZMPOP's), which a command of
    several keys gives.
    """
    if s.nonblocking or s.run is None or s.blocked is None:
        if at_once is not None:
            return at_once()
        (key,) = keys  # a command of several keys gives at_once
        deferred = attempt(key)
        return Deferred(
            deferred.op, lambda result: NULL_ARRAY if result is None else finish(key, result)
        )
    run, blocked = s.run, s.blocked
    ns = s.require().namespace
    slots = [(ns, key) for key in keys]

    async def start() -> Any:  # noqa: ANN401 - the reply
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else math.inf
        waiter = blocked.add(slots)
        gone = asyncio.Event()
        s.stop_waiting = gone.set
        try:
            tried = False
            while True:
                # A poll with no wake-up tries only for the oldest waiter on a key, so a
                # later one cannot take an item from under an older one being woken.
                if not tried or waiter.signal.is_set() or blocked.oldest(waiter):
                    tried = True
                    # Cleared before the try, so a write landing during it wakes the wait.
                    waiter.signal.clear()
                    for key in keys:
                        # Only where it is first in line: an older waiter on the key
                        # is served before it, as Redis serves them.
                        if not blocked.first(waiter, (ns, key)):
                            continue
                        result = await run(attempt(key).op)
                        if result is not None:
                            return finish(key, result)
                left = deadline - loop.time()
                if left <= 0:
                    return NULL_ARRAY
                signal = asyncio.ensure_future(waiter.signal.wait())
                closed = asyncio.ensure_future(gone.wait())
                try:
                    await asyncio.wait(
                        {signal, closed},
                        timeout=min(left, POLL_SECONDS),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    signal.cancel()
                    closed.cancel()
                if gone.is_set():
                    raise asyncio.CancelledError  # the client went away
        finally:
            blocked.remove(waiter)
            s.stop_waiting = None

    return Awaiting(start, lambda reply: reply, listen=True)


def _bpop(*, left: bool) -> Callable[[Session, list[bytes]], Reply]:
    """BLPOP and BRPOP: a pop from the first non-empty key, as [key, item]."""
    pop = list_commands.pop_one(left=left)

    def handler(s: Session, args: list[bytes]) -> Reply:
        keys, timeout = args[1:-1], timeout_arg(args[-1])

        def at_once() -> Deferred:
            first = list_commands.pop_first(s, keys, left=left)
            return Deferred(first.op, lambda found: NULL_ARRAY if found is None else list(found))

        return block_on(
            s,
            keys,
            timeout,
            lambda key: pop(s, key),
            lambda k, v: [k, v],
            at_once,
        )

    return handler


def blmove(s: Session, args: list[bytes]) -> Reply:
    """BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout."""
    src, dst = args[1], args[2]
    from_left, to_left = list_commands.end_arg(args[3]), list_commands.end_arg(args[4])
    timeout = timeout_arg(args[5])
    return block_on(
        s,
        [src],
        timeout,
        lambda key: list_commands.move(s, key, dst, from_left=from_left, to_left=to_left),
        lambda _, item: item,
    )


def brpoplpush(s: Session, args: list[bytes]) -> Reply:
    """BRPOPLPUSH source destination timeout: BLMOVE source destination RIGHT LEFT."""
    src, dst = args[1], args[2]
    timeout = timeout_arg(args[3])
    return block_on(
        s,
        [src],
        timeout,
        lambda key: list_commands.move(s, key, dst, from_left=False, to_left=True),
        lambda _, item: item,
    )


def _row(  # noqa: PLR0917 - one table row, as the other families write them
    name: str,
    handler: Callable[[Session, list[bytes]], Reply],
    arity: int,
    flags: tuple[str, ...],
    summary: str,
    syntax: str,
    since: str,
    last_key: int,
) -> Command:
    return Command(name, handler, arity, flags, "list", summary, syntax, since, 1, last_key, 1)


# As Redis 7.0 flags them: never from a script; a move adds to its destination.
_POP: Final = (WRITE, "noscript", "blocking")
_MOVE: Final = (WRITE, DENYOOM, "noscript", "blocking")


COMMANDS: Final = (
    _row(
        "blpop",
        _bpop(left=True),
        -3,
        _POP,
        "Pop the head of the first non-empty list, waiting for one up to a timeout.",
        "BLPOP key [key ...] timeout",
        "2.0.0",
        -2,
    ),
    _row(
        "brpop",
        _bpop(left=False),
        -3,
        _POP,
        "Pop the tail of the first non-empty list, waiting for one up to a timeout.",
        "BRPOP key [key ...] timeout",
        "2.0.0",
        -2,
    ),
    _row(
        "blmove",
        blmove,
        6,
        _MOVE,
        "LMOVE, waiting for the source to have an item up to a timeout.",
        "BLMOVE source destination LEFT|RIGHT LEFT|RIGHT timeout",
        "6.2.0",
        2,
    ),
    _row(
        "brpoplpush",
        brpoplpush,
        4,
        _MOVE,
        "RPOPLPUSH, waiting for the source to have an item up to a timeout.",
        "BRPOPLPUSH source destination timeout",
        "2.2.0",
        2,
    ),
)
