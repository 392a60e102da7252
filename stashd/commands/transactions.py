"""Transactions: MULTI, EXEC, DISCARD, WATCH, UNWATCH (what redis-py pipelines send).

EXEC turns every queued request into its operation and runs them, with the WATCH check,
as one :class:`~stashd.ops.Transaction`: atomic on every store, and on a batching store
part of a single commit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd.commands.base import (
    FAST,
    LOADING,
    STALE,
    TABLE,
    Awaiting,
    Command,
    Deferred,
    Reply,
    Session,
    name_writes,
)
from stashd.errors import CommandError, StashError
from stashd.ops import Op, Transaction, snapshot
from stashd.resp import NULL_ARRAY, OK

if TYPE_CHECKING:
    from stashd.types import Entry

#: Commands that act on the transaction itself instead of being queued. UNWATCH is not
#: one of them: inside MULTI Redis queues it like any command (it then runs at EXEC,
#: after the watched keys were checked).
CONTROL: Final = frozenset({b"exec", b"discard", b"multi", b"watch", b"quit", b"reset"})


class ExecAbort(StashError):
    """EXEC after a queueing error: nothing runs."""

    code = "EXECABORT"
    template = "Transaction discarded because of previous errors."

    def __init__(self) -> None:
        self._fill()


def multi(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """MULTI: start queueing."""
    if s.multi is not None:
        raise CommandError("MULTI calls can not be nested")
    s.multi = []
    s.multi_dirty = False
    return OK


def discard(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """DISCARD: drop the queue and the watches."""
    if s.multi is None:
        raise CommandError("DISCARD without MULTI")
    s.end_multi()
    s.watched.clear()
    return OK


def watch(s: Session, args: list[bytes]) -> Reply:
    """WATCH key [key ...]: EXEC will do nothing if any of them changes before it."""
    if s.multi is not None:
        raise CommandError("WATCH inside MULTI is not allowed")
    keys = args[1:]

    def remember(entries: list[Entry | None]) -> Reply:
        for key, entry in zip(keys, entries, strict=True):
            s.watched.setdefault(key, snapshot(entry))
        return OK

    return Deferred(s.service.get_many(s.require(), keys), remember)


def unwatch(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """UNWATCH: forget every watch."""
    s.watched.clear()
    return OK


def exec_(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """EXEC: run the queue atomically; nil when a watched key changed."""
    queued, dirty = s.multi, s.multi_dirty
    if queued is None:
        raise CommandError("EXEC without MULTI")
    s.end_multi()
    watched = s.watched
    s.watched = {}
    if dirty:
        raise ExecAbort
    replies: list[Any] = []
    parts: list[tuple[int, Deferred]] = []
    for request in queued:
        cmd = TABLE[request[0].lower()]
        s.nonblocking = True  # BLPOP inside EXEC is LPOP, as in Redis
        try:
            reply = name_writes(cmd.handler(s, request), cmd.name)
        except StashError as exc:
            reply = exc
        finally:
            s.nonblocking = False
        if type(reply) is Awaiting:
            # Nothing can be awaited inside the transaction's one step.
            reply = CommandError(
                reply.in_multi
                or f"{cmd.name.upper()} with a key cannot run inside MULTI when keys are "
                "checked in Redis; send it before MULTI"
            )
        if type(reply) is Deferred:
            parts.append((len(replies), reply))
            replies.append(None)
        else:
            replies.append(reply)
    ns = s.principal.namespace if s.principal is not None else ""
    ops: list[Op] = [d.op for _, d in parts]
    txn = Transaction(ops, [(ns, k, snap) for k, snap in watched.items()])

    def finish(results: list[Any] | None) -> Reply:
        if results is None:
            return NULL_ARRAY
        for (slot, deferred), result in zip(parts, results, strict=True):
            if isinstance(result, StashError) or deferred.finish is None:
                replies[slot] = result
            else:
                replies[slot] = deferred.finish(result)
        return replies

    return Deferred(txn, finish)


_T = (FAST, LOADING, STALE)

COMMANDS: Final = (
    Command("multi", multi, 1, _T, "transactions", "Start a transaction.", "MULTI", "1.2.0"),
    Command(
        "exec",
        exec_,
        1,
        (LOADING, STALE),
        "transactions",
        "Run the queued commands atomically.",
        "EXEC",
        "1.2.0",
    ),
    Command(
        "discard", discard, 1, _T, "transactions", "Drop the queued commands.", "DISCARD", "2.0.0"
    ),
    Command(
        "watch",
        watch,
        -2,
        _T,
        "transactions",
        "Make the next EXEC conditional on keys staying unchanged.",
        "WATCH key [key ...]",
        "2.2.0",
        1,
        -1,
        1,
    ),
    Command("unwatch", unwatch, 1, _T, "transactions", "Forget every WATCH.", "UNWATCH", "2.2.0"),
)
