"""The namespace-wide rounds of a plan: SCAN pages and counts from the index, FLUSHDB's walk.

Each is a generator of rounds, as :meth:`stashd.store.redis.plan.Plan.steps` is: it
yields a list of commands, receives their replies, and returns what it read. A reply
that refuses raises :class:`RoundFailed`, or :class:`ScriptsLost` when Redis lost the
scripts, for the plan to answer or run again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd.redislink import ReplyError, is_noscript
from stashd.store.redis.layout import decode, index_keys, key_prefix
from stashd.store.redis.lua import DROP, PAGE

if TYPE_CHECKING:
    from collections.abc import Generator

    from stashd.redislink import Command
    from stashd.types import Entry

    Steps = Generator[list[Command], list[Any], Any]

#: Keys FLUSHDB deletes per call, and so per round: a few milliseconds of Redis time.
WALK_COUNT: Final = 1000
#: The most keys one SCAN page reads from the index, whatever COUNT it was given (the
#: memory service caps a client's COUNT lower still): bounds one request's work.
PAGE_BUDGET: Final = 10_000
#: Keys per MGET when a SCAN page's entries are fetched.
MGET_CHUNK: Final = 1000


class RoundFailed(Exception):
    """Redis refused a command the plan needed (MGET, an index read); the cause is the text."""


class ScriptsLost(Exception):
    """Redis lost the scripts (a restart, SCRIPT FLUSH) under a fetch: load them, run again."""


def refusal(reply: ReplyError, what: str) -> Exception:
    """What an error reply to a command the plan needed raises: a reload or a failure."""
    if is_noscript(reply):
        return ScriptsLost()
    return RoundFailed(f"Redis refused {what}: {reply}")


def page(ns: str, cursor: int, count: int, now: int) -> Steps:
    """At most ``count`` live entries after ``cursor`` in the namespace's key order.

    The index gives up to ``count`` keys (at most :data:`PAGE_BUDGET`) after the
    cursor's sequence number, and one more, which says whether the walk goes on; the
    next cursor is the number of the page's last key, 0 at the end. A key present for
    the whole walk keeps its number, so it is returned. Entries Redis has expired
    meanwhile are left out.
    """
    n = max(1, min(count, PAGE_BUDGET))
    (reply,) = yield [PAGE.call(index_keys(key_prefix(ns)), [now, cursor, n + 1])]
    if isinstance(reply, ReplyError):
        raise refusal(reply, "to read the index")
    keys: list[bytes] = reply[0::2]
    nxt = 0
    if len(keys) > n:
        keys = keys[:n]
        nxt = int(reply[2 * n - 1])
    return (yield from entries(ns, nxt, keys))


def entries(ns: str, nxt: int, keys: list[bytes]) -> Steps:
    """The entries of a page's keys (MGETs in one round); keys gone meanwhile are left out."""
    prefix = key_prefix(ns)
    chunks = [keys[start : start + MGET_CHUNK] for start in range(0, len(keys), MGET_CHUNK)]
    rows: list[tuple[bytes, Entry]] = []
    if not chunks:
        return nxt, rows
    replies = yield [("MGET", *[prefix + k for k in chunk]) for chunk in chunks]
    for chunk, reply in zip(chunks, replies, strict=True):
        if isinstance(reply, ReplyError):
            raise RoundFailed(f"Redis refused MGET: {reply}")
        for key, raw in zip(chunk, reply, strict=True):
            entry = decode(raw)[1]
            if entry is not None:
                rows.append((key, entry))
    return nxt, rows


def count(ns: str, now: int) -> Steps:
    """Live keys of the namespace: those its index holds, less those expired by ``now``."""
    expiry = index_keys(key_prefix(ns))[2]
    held, expired = yield [("ZCARD", expiry), ("ZCOUNT", expiry, "-inf", now)]
    for reply in (held, expired):
        if isinstance(reply, ReplyError):
            raise RoundFailed(f"Redis refused to count: {reply}")
    return int(held) - int(expired)


def drop(ns: str) -> Steps:
    """FLUSHDB: every key the index holds, deleted a page at a time with its index.

    Each round asks for the next page of the index together with the deletion of the
    previous one, so the walk costs one round per page; the last call deletes the
    emptied index itself.
    """
    prefix = key_prefix(ns)
    index = index_keys(prefix)
    after: int | None = 0
    pending: list[bytes] = []
    while True:
        commands: list[Command] = []
        if after is not None:
            commands.append(
                (
                    "ZRANGEBYSCORE",
                    index[1],
                    f"({after}",
                    "+inf",
                    "WITHSCORES",
                    "LIMIT",
                    0,
                    WALK_COUNT,
                )
            )
        commands.append(DROP.call([*index, *[prefix + k for k in pending]], pending))
        replies = yield commands
        if isinstance(replies[-1], ReplyError):
            raise refusal(replies[-1], "to delete")
        if after is None:
            return
        page = replies[0]
        if isinstance(page, ReplyError):
            raise RoundFailed(f"Redis refused to read the index: {page}")
        pending = page[0::2]
        after = int(page[-1]) if len(pending) == WALK_COUNT else None
