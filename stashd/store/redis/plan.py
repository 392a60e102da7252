"""How a batch of operations runs on Redis: in Python, against fetched state, checked on commit.

(This module is longer than most, about 800 lines, because the plan is one piece: the
rounds that fetch and commit, the scripts they call and the replies that decide what
runs again share the batch's state and are read together. The view operations run
against is :mod:`stashd.store.redis.view`; the layout of entries and of each
namespace's index is :mod:`stashd.store.redis.layout`.)

The semantics stay in :mod:`stashd.ops`: every operation runs in Python against a
:class:`View`, exactly as on the memory and SQLite stores. What makes it atomic on a
Redis shared by many stashd nodes is a server-side check:

1. **Fetch.** The keys the batch's operations will read are fetched with one MGET per
   namespace, all in one pipelined round, with the usage of each namespace whose
   writes a storage quota limits (keys found only while running, such as a random id
   that collided, are fetched in further rounds).
2. **Run.** Each operation runs against that state, seeing the writes of the
   operations before it in the batch. The view records, per operation, the 25-byte
   header of every key it read (empty when the key was absent), what it wrote, and
   each quota decision it made (the growth, the limits, and whether it fit).
3. **Commit.** In one pipelined round, in batch order, each operation becomes one
   EVALSHA of :data:`APPLY`, which checks atomically that every key it read still has
   the header it read (the header holds a random stamp written with every change, so
   equal headers mean the very same write) and that every quota decision still comes
   out the same against the namespace's usage in Redis, and only then applies its
   writes, with native expiry, and updates the namespace's index. An operation whose
   check fails wrote nothing: it runs again from fresh state (at most
   :data:`MAX_TRIES` times), and the batch's operations in later rounds wait for it.

So MERGE, IFVERSION, INCR, EXTEND, the maximum-TTL rule, storage quotas and every other
read-then-write is atomic by a server-side check: no other node can change a key, or
fill the namespace, between what an operation decided on and its write. Operations on
one key keep their order, since a later operation that read an earlier one's write
fails its check whenever the earlier one did. GET, MGET and plain SET, which need no
decision in Python, run natively in their place in the pipeline (plain SET as the small
:data:`SET` script, which computes the new version on the server and, under a quota,
writes only when even a new key's growth would fit, else leaves the write to be decided
the general way), and a batch of only those takes a single round.

Namespace-wide operations (SCAN, KEYS, DBSIZE, FLUSHDB, listings) run alone, after the
operations before them have been committed, and read the namespace's own index (key
order, expiry), never the shared keyspace; like Redis's own SCAN they are not atomic
snapshots of a namespace others are writing.

Layout: an entry is one string key, ``user:{<namespace>}:<key>``, holding a header
(format byte 1, expiry in ms and version as big-endian int64, an 8-byte stamp) and then
the value, with a native expiry set with ``PX`` to the time left. The braces are a
cluster hash tag: a namespace, its index included, lives in one slot, so every
operation's keys do too.
"""

from __future__ import annotations

import os
import random
import struct
from typing import TYPE_CHECKING, Any, Final

from stashd import log
from stashd.errors import StashError, StoreUnavailable
from stashd.ops import (
    Count,
    Create,
    Delete,
    FirstIds,
    Flush,
    Get,
    GetMany,
    Page,
    Ping,
    Rename,
    Scan,
    SetMany,
    Transaction,
    Usage,
)
from stashd.ops import Set as SetOp
from stashd.quota import entry_bytes, growth
from stashd.redislink import ReplyError, is_noscript
from stashd.store.base import Entry
from stashd.store.redis.layout import (
    CLEAN_PER_CALL,
    FORMAT,
    HEAD_SIZE,
    HEADER,
    QUOTA_FREE_KEYS,
    caps,
    decode,
    index_keys,
    key_prefix,
)
from stashd.store.redis.lua import APPLY, DROP, PAGE, SET, USAGE
from stashd.store.redis.view import Miss, PlanView, Record, State

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from stashd.ops import Op
    from stashd.redislink import Command
    from stashd.store.redis.view import QuotaCheck, Slot

    Steps = Generator[list[Command], list[Any], Any]

logger = log.get("stashd.store.redis")

#: How often an operation may run before it is answered UNAVAILABLE: its check failed
#: because another node kept changing its keys, or Redis kept losing the scripts.
MAX_TRIES: Final = 10
#: Before running failed operations again, the driver waits a random time up to
#: BACKOFF_S * 2**tries (at most BACKOFF_MAX_S): two nodes that keep changing one key
#: then stop invalidating each other's checks in lockstep.
BACKOFF_S: Final = 0.0002
BACKOFF_MAX_S: Final = 0.05
#: Keys FLUSHDB deletes per call, and so per round: a few milliseconds of Redis time.
WALK_COUNT: Final = 1000
#: The most keys one SCAN page reads from the index, whatever COUNT it was given (the
#: memory service caps a client's COUNT lower still): bounds one request's work.
PAGE_BUDGET: Final = 10_000
#: Keys per MGET when a SCAN page's entries are fetched.
MGET_CHUNK: Final = 1000

#: The numbers of a plain SET, packed into one argument (fewer arguments cost Redis less):
#: expires_at, now, accounted bytes, the most it adds (keys, bytes), the quota's limits.
SET_NUMBERS: Final = struct.Struct(">7q")

# -- what the plan knows of operations -----------------------------------------------------


class Stamps:
    """Random 64-bit stamps, one per write: equal headers then mean the same write."""

    def __init__(self) -> None:
        self._random = random.Random()  # noqa: S311 - uniqueness, not secrecy
        os.register_at_fork(after_in_child=self._random.seed)

    def __call__(self) -> int:
        """A new stamp."""
        return self._random.getrandbits(64)


def _is_native(op: Op) -> bool:
    """Whether ``op`` runs as a native command in its place (GET, MGET, PING, SET script)."""
    kind = type(op)
    if kind is Get or kind is GetMany or kind is Ping:
        return True
    return kind is SetOp and not op.cond and not op.keep_ttl  # type: ignore[attr-defined]


def _is_barrier(op: Op) -> bool:
    """Whether ``op`` reads or clears a whole namespace, and so runs alone."""
    if isinstance(op, Scan | Page | Count | Flush):
        return True
    return isinstance(op, Transaction) and any(_is_barrier(o) for o in op.ops)


def keys_of(op: Op) -> Iterator[Slot]:
    """The keys ``op`` will read, as far as its attributes tell (the rest are fetched late)."""
    if isinstance(op, Transaction):
        for ns, key, _ in op.watched:
            yield ns, key
        for inner in op.ops:
            yield from keys_of(inner)
        return
    ns = op.ns
    if isinstance(op, Create):
        yield ns, op.make_id(0)
    elif isinstance(op, GetMany | Delete):
        for key in op.keys:
            yield ns, key
    elif isinstance(op, SetMany):
        for key, _ in op.pairs:
            yield ns, key
    elif isinstance(op, Rename):
        yield ns, op.key
        yield ns, op.dst
    elif op.key:
        yield ns, op.key


def usage_of(op: Op) -> Iterator[str]:
    """The namespaces whose usage ``op`` will ask for: under a quota, or INFO's."""
    if isinstance(op, Transaction):
        for inner in op.ops:
            yield from usage_of(inner)
    elif op.quota is not None or isinstance(op, Usage):
        yield op.ns


def _remember_ids(op: Op) -> None:
    if isinstance(op, Create) and not isinstance(op.make_id, FirstIds):
        op.make_id = FirstIds(op.make_id)
    elif isinstance(op, Transaction):
        for inner in op.ops:
            _remember_ids(inner)


# -- the plan ------------------------------------------------------------------------------


class _RoundFailed(Exception):
    """Redis refused a command the plan needed (MGET, an index read); the cause is the text."""


class _ScriptsLost(Exception):
    """Redis lost the scripts (a restart, SCRIPT FLUSH) under a fetch: load them, run again."""


def _refusal(reply: ReplyError, what: str) -> Exception:
    """What an error reply to a command the plan needed raises: a reload or a failure."""
    if is_noscript(reply):
        return _ScriptsLost()
    return _RoundFailed(f"Redis refused {what}: {reply}")


_UNSET: Final = object()


class Plan:
    """A batch of operations and the rounds that run it; :meth:`steps` is the generator.

    ``steps()`` yields a list of commands for each round and receives their replies; it
    returns one result per operation (its value, or its StashError). It does no I/O
    itself, so the daemon drives it over the event loop's link and in-process callers
    over a synchronous one. When the link fails midway, :meth:`abandon` answers every
    operation that has no result yet.
    """

    def __init__(self, ops: list[Op], clock: Callable[[], int], stamp: Callable[[], int]) -> None:
        self.ops = ops
        self.clock = clock
        self.stamp = stamp
        self.results: list[Any] = [_UNSET] * len(ops)
        self.tries = [0] * len(ops)
        self.noscript = False  # a reply said NOSCRIPT: the driver loads the scripts
        self.backoff = 0.0  # seconds the driver waits before the next round (contention)
        for op in ops:
            _remember_ids(op)

    def abandon(self, cause: str) -> list[Any]:
        """Every result, with ``StoreUnavailable(cause)`` for operations not answered yet."""
        error = StoreUnavailable(cause)
        return [error if r is _UNSET else r for r in self.results]

    def steps(self) -> Steps:
        """Run every operation; segments in order, failed operations again after theirs."""
        todo = list(range(len(self.ops)))
        # The common batch, only GET and SET: one round, without sorting into segments.
        now = self.clock()
        commands = native_commands(self.ops, now, self.stamp)
        if commands is not None:
            replies = yield commands
            failed = self._native_replies(todo, replies, now)
            if not failed:
                return self.results
            todo = self._again(failed, [])
        while todo:
            for start, segment in _segments(todo, self.ops):
                try:
                    failed = yield from self._segment(segment)
                except _ScriptsLost:
                    self.noscript = True
                    failed = [i for i in segment if self.results[i] is _UNSET]
                except _RoundFailed as exc:
                    for i in segment:
                        if self.results[i] is _UNSET:
                            self.results[i] = StoreUnavailable(str(exc))
                    failed = []
                if failed:
                    todo = self._again(failed, todo[start + len(segment) :])
                    break
            else:
                todo = []
        return self.results

    def _again(self, failed: list[int], later: list[int]) -> list[int]:
        """What runs next after ``failed`` operations: they, then everything ``later``.

        Everything after the failed operations waits for them, so no operation runs
        before one that came earlier and has yet to land. An operation that failed
        MAX_TRIES times is answered UNAVAILABLE; the driver waits :attr:`backoff` first.
        """
        for i in failed:
            self.tries[i] += 1
            if self.tries[i] >= MAX_TRIES:
                self.results[i] = StoreUnavailable(
                    f"the operation's keys kept changing under other writers "
                    f"(tried {MAX_TRIES} times)"
                )
        most = max(self.tries[i] for i in failed)
        self.backoff = _jitter() * min(BACKOFF_MAX_S, BACKOFF_S * 2**most)
        return [i for i in failed if self.results[i] is _UNSET] + later

    def _segment(self, segment: list[int]) -> Steps:
        ops = self.ops
        now = self.clock()
        # An operation that failed once runs the general way: a SET the quota may refuse
        # is then decided exactly (see the SET script).
        if all(_is_native(ops[i]) and not self.tries[i] for i in segment):
            return (yield from self._native(segment, now))
        state = State()
        view = PlanView(state, self.stamp, now)
        wanted: dict[str, dict[bytes, None]] = {}
        spaces: dict[str, None] = {}
        for i in segment:
            op = ops[i]
            if type(op) is not Get and type(op) is not GetMany:
                for ns, key in keys_of(op):
                    wanted.setdefault(ns, {})[key] = None
                spaces.update(dict.fromkeys(usage_of(op)))
        if wanted or spaces:
            keys = {ns: list(keys) for ns, keys in wanted.items()}
            yield from self._fetch_keys(state, keys, list(spaces), now)
        # Run every operation in order; Get and GetMany only note what the writes before
        # them will have left, to compare with what Redis answers in their place.
        runs: list[tuple[int, Record | None, dict[Slot, bytes]]] = []
        for i in segment:
            op = ops[i]
            kind = type(op)
            if kind is Get or kind is GetMany or kind is Ping:
                expect: dict[Slot, bytes] = {}
                for key in op.keys if kind is GetMany else [op.key]:  # type: ignore[attr-defined]
                    written = state.overlay.get((op.ns, key))
                    if written is not None:
                        expect[(op.ns, key)] = written.head
                runs.append((i, None, expect))
            else:
                rec = yield from self._speculate(state, view, op, now)
                runs.append((i, rec, {}))
        if len(segment) == 1 and runs[0][1] is not None and runs[0][1].clear is not None:
            return (yield from self._commit_clear(segment[0], runs[0][1], now))
        commands: list[Command] = []
        for i, rec, _ in runs:
            command = self._command(ops[i], rec, now)
            if command is not None:
                commands.append(command)
        replies = (yield commands) if commands else []
        failed: list[int] = []
        it = iter(replies)
        for i, rec, expect in runs:
            if rec is not None and not rec.reads and not rec.writes and not rec.quotas:
                self.results[i] = rec.result
                continue
            reply = next(it)
            if rec is None:
                self._checked_read(i, reply, now, expect, failed)
            elif reply == 1:
                self.results[i] = rec.result
            else:
                self._refused(i, reply, failed)
        return failed

    def _native(self, segment: list[int], now: int) -> Steps:
        """A segment of GET, MGET, PING and plain SET: one round, no fetch."""
        ops = self.ops
        commands = native_commands([ops[i] for i in segment], now, self.stamp)
        assert commands is not None
        replies = yield commands
        return self._native_replies(segment, replies, now)

    def _native_replies(self, segment: list[int], replies: list[Any], now: int) -> list[int]:
        """The results of a native segment's replies (inlined: the hot path of GET and SET)."""
        ops = self.ops
        results = self.results
        unpack = HEADER.unpack_from
        failed: list[int] = []
        for i, raw in zip(segment, replies, strict=True):
            kind = type(ops[i])
            if kind is GetMany:
                if isinstance(raw, ReplyError):
                    self._refused(i, raw, failed)
                else:
                    results[i] = [_live(r, now) for r in raw]
                continue
            if kind is Ping:
                if isinstance(raw, ReplyError):
                    self._refused(i, raw, failed)
                else:
                    results[i] = True
                continue
            entry: Entry | None = None
            if type(raw) is bytes:
                if len(raw) >= HEAD_SIZE and raw[0] == FORMAT:
                    _, expires_at, version, _ = unpack(raw)
                    if expires_at > now:
                        entry = Entry(raw[HEAD_SIZE:], expires_at, version)
            elif raw is not None:
                self._refused(i, raw, failed)
                continue
            results[i] = entry if kind is Get else (True, entry)
        return failed

    def _native_command(self, op: Op, now: int) -> Command:
        commands = native_commands([op], now, self.stamp)
        assert commands is not None
        return commands[0]

    def _checked_read(
        self,
        i: int,
        reply: Any,  # noqa: ANN401 - any reply
        now: int,
        expect: dict[Slot, bytes],
        failed: list[int],
    ) -> None:
        """A GET, MGET or PING among other writes: as native, once checked.

        The check: the writes of this batch before it landed as predicted.
        """
        op = self.ops[i]
        if expect and not isinstance(reply, ReplyError):
            raws = reply if type(op) is GetMany else [reply]
            keys = op.keys if isinstance(op, GetMany) else [op.key]
            for key, raw in zip(keys, raws, strict=True):
                wanted = expect.get((op.ns, key))
                if wanted is not None and wanted != decode(raw)[0]:
                    failed.append(i)  # an earlier write of this batch did not land (yet)
                    return
        failed += self._native_replies([i], [reply], now)

    def _refused(self, i: int, reply: Any, failed: list[int]) -> None:  # noqa: ANN401
        """An APPLY that found a key changed (0) or a quota decision turned (2), or an error."""
        if is_noscript(reply):
            self.noscript = True
            failed.append(i)
        elif isinstance(reply, ReplyError):
            self.results[i] = StoreUnavailable(f"Redis refused the write: {reply}")
        else:
            failed.append(i)

    def _command(self, op: Op, rec: Record | None, now: int) -> Command | None:
        if rec is None:
            return self._native_command(op, now)
        if not rec.reads and not rec.writes and not rec.quotas:
            return None
        return _apply(list(rec.reads.items()), list(rec.writes.items()), rec.quotas, now)

    def _speculate(self, state: State, view: PlanView, op: Op, now: int) -> Steps:
        """Run ``op`` on the view, fetching what it misses; its record, result included."""
        while True:
            rec = view.rec = Record()
            try:
                result = op.run(view, now)
            except Miss as miss:
                view.rollback(keep_reads=False)
                yield from self._fetch(state, miss, now)
                continue
            except StashError as exc:
                view.rollback(keep_reads=True)  # a refusal depends on what was read
                result = exc
            except Exception as exc:  # a bug in an operation must not fail its batch
                logger.exception("operation_failed", operation=type(op).__name__)
                view.rollback(keep_reads=False)
                result = StoreUnavailable(type(exc).__name__)
            rec.result = result
            return rec

    def _commit_clear(self, i: int, rec: Record, now: int) -> Steps:
        """FLUSHDB (alone, or in MULTI): check, empty the namespace, then the later writes."""
        assert rec.clear is not None
        reads = list(rec.reads.items())
        before, after = reads[: rec.clear_at], reads[rec.clear_at :]
        quotas = rec.quotas[: rec.quotas_at]
        if before or quotas:
            (reply,) = yield [_apply(before, [], quotas, now)]
            if reply != 1:
                failed: list[int] = []
                self._refused(i, reply, failed)
                return failed
        yield from self._drop(rec.clear)
        if after or rec.writes:
            (reply,) = yield [_apply(after, list(rec.writes.items()), [], now)]
            if reply != 1:
                failed = []
                self._refused(i, reply, failed)
                return failed
        self.results[i] = rec.result
        return []

    # -- fetching ----------------------------------------------------------------------------
    def _fetch(self, state: State, miss: Miss, now: int) -> Steps:
        if miss.keys:
            wanted: dict[str, list[bytes]] = {}
            for ns, key in miss.keys:
                wanted.setdefault(ns, []).append(key)
            yield from self._fetch_keys(state, wanted, [], now)
        elif miss.page is not None:
            state.pages[miss.page] = yield from self._fetch_page(*miss.page, now)
        elif miss.count is not None:
            state.counts[miss.count] = yield from self._count(miss.count, now)
        elif miss.usage is not None:
            limit = QUOTA_FREE_KEYS if miss.free else CLEAN_PER_CALL
            yield from self._fetch_keys(state, {}, [miss.usage], now, limit)
            if miss.free:
                state.freed.add(miss.usage)

    def _fetch_keys(
        self,
        state: State,
        wanted: dict[str, list[bytes]],
        usage: list[str],
        now: int,
        limit: int = CLEAN_PER_CALL,
    ) -> Steps:
        """One MGET per namespace and the usage of each namespace in ``usage``, in one round.

        Reading usage first frees up to ``limit`` of the namespace's expired keys.
        """
        spaces = list(wanted.items())
        commands: list[Command] = []
        for ns, keys in spaces:
            prefix = key_prefix(ns)
            commands.append(("MGET", *[prefix + k for k in keys]))
        commands += [USAGE.call(index_keys(key_prefix(ns)), [now, limit]) for ns in usage]
        replies = yield commands
        base = state.base
        for (ns, keys), reply in zip(spaces, replies, strict=False):
            if isinstance(reply, ReplyError):
                raise _RoundFailed(f"Redis refused MGET: {reply}")
            for key, raw in zip(keys, reply, strict=True):
                base[(ns, key)] = decode(raw)
        for ns, reply in zip(usage, replies[len(spaces) :], strict=True):
            if isinstance(reply, ReplyError):
                raise _refusal(reply, "to read the usage")
            keys_held, bytes_held = reply
            state.usage[ns] = (int(keys_held), int(bytes_held))

    def _fetch_page(self, ns: str, cursor: int, count: int, now: int) -> Steps:
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
            raise _refusal(reply, "to read the index")
        keys: list[bytes] = reply[0::2]
        nxt = 0
        if len(keys) > n:
            keys = keys[:n]
            nxt = int(reply[2 * n - 1])
        return (yield from self._entries(ns, nxt, keys))

    def _entries(self, ns: str, nxt: int, keys: list[bytes]) -> Steps:
        """The entries of a page's keys (MGETs in one round); keys gone meanwhile are left out."""
        prefix = key_prefix(ns)
        chunks = [keys[start : start + MGET_CHUNK] for start in range(0, len(keys), MGET_CHUNK)]
        rows: list[tuple[bytes, Entry]] = []
        if not chunks:
            return nxt, rows
        replies = yield [("MGET", *[prefix + k for k in chunk]) for chunk in chunks]
        for chunk, reply in zip(chunks, replies, strict=True):
            if isinstance(reply, ReplyError):
                raise _RoundFailed(f"Redis refused MGET: {reply}")
            for key, raw in zip(chunk, reply, strict=True):
                entry = decode(raw)[1]
                if entry is not None:
                    rows.append((key, entry))
        return nxt, rows

    def _count(self, ns: str, now: int) -> Steps:
        """Live keys of the namespace: those its index holds, less those expired by ``now``."""
        expiry = index_keys(key_prefix(ns))[2]
        held, expired = yield [("ZCARD", expiry), ("ZCOUNT", expiry, "-inf", now)]
        for reply in (held, expired):
            if isinstance(reply, ReplyError):
                raise _RoundFailed(f"Redis refused to count: {reply}")
        return int(held) - int(expired)

    def _drop(self, ns: str) -> Steps:
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
                raise _refusal(replies[-1], "to delete")
            if after is None:
                return
            page = replies[0]
            if isinstance(page, ReplyError):
                raise _RoundFailed(f"Redis refused to read the index: {page}")
            pending = page[0::2]
            after = int(page[-1]) if len(pending) == WALK_COUNT else None


def native_commands(ops: list[Op], now: int, stamp: Callable[[], int]) -> list[Command] | None:
    """The commands of a batch of only GET, MGET, PING and plain SET; None for any other."""
    out: list[Command] = []
    append = out.append
    sha = SET.sha
    pack = SET_NUMBERS.pack
    for op in ops:
        kind = type(op)
        if kind is Get:
            append(("GET", key_prefix(op.ns) + op.key))
        elif kind is SetOp:
            if op.cond or op.keep_ttl:  # type: ignore[attr-defined]
                return None
            prefix = key_prefix(op.ns)
            key = op.key
            value = op.value  # type: ignore[attr-defined]
            size = entry_bytes(key, value)
            quota = op.quota
            if quota is None:
                numbers = pack(op.expires_at, now, size, 0, 0, -1, -1)  # type: ignore[attr-defined]
            else:
                # The most a SET adds is what it would as a new key: if that fits, it does.
                add_keys, add_bytes = growth(key, None, value)
                limits = caps(add_keys, add_bytes, quota)
                numbers = pack(op.expires_at, now, size, add_keys, add_bytes, *limits)  # type: ignore[attr-defined]
            meta, order, expiry, sizes = index_keys(prefix)
            append(
                (
                    "EVALSHA",
                    sha,
                    5,
                    meta,
                    order,
                    expiry,
                    sizes,
                    prefix + key,
                    value,
                    stamp().to_bytes(8, "big"),
                    key,
                    numbers,
                )
            )
        elif kind is GetMany:
            prefix = key_prefix(op.ns)
            append(("MGET", *[prefix + k for k in op.keys]))  # type: ignore[attr-defined]
        elif kind is Ping:
            append(("PING",))
        else:
            return None
    return out


def _live(raw: bytes | None, now: int) -> Entry | None:
    entry = decode(raw)[1]
    return entry if entry is not None and entry.expires_at > now else None


_jitter: Final = random.Random().random  # noqa: S311 - spreading retries, not secrecy


def _segments(todo: list[int], ops: list[Op]) -> Iterator[tuple[int, list[int]]]:
    """(position in todo, indices): runs of operations, namespace-wide ones alone."""
    run: list[int] = []
    start = 0
    for pos, i in enumerate(todo):
        if _is_barrier(ops[i]):
            if run:
                yield start, run
            yield pos, [i]
            run = []
            start = pos + 1
        else:
            if not run:
                start = pos
            run.append(i)
    if run:
        yield start, run


def _apply(
    reads: list[tuple[Slot, bytes]],
    writes: list[tuple[Slot, tuple[bytes, Entry | None, bytes]]],
    quotas: list[QuotaCheck],
    now: int,
) -> Command:
    """The APPLY call of one operation: its checks, its quota decisions, then its writes.

    An operation reads and writes one namespace, whose index comes first in KEYS.
    """
    slots = [slot for slot, _ in reads] + [slot for slot, _ in writes]
    spaces = {slot[0] for slot in slots}
    if len(spaces) != 1:
        msg = f"an operation's keys span {len(spaces)} namespaces, not one"
        raise ValueError(msg)
    prefix = key_prefix(spaces.pop())
    keys: list[bytes] = list(index_keys(prefix))
    index: dict[Slot, int] = {}

    def at(slot: Slot) -> int:
        n = index.get(slot)
        if n is None:
            keys.append(prefix + slot[1])
            n = index[slot] = len(keys)
        return n

    args: list[Any] = [now, len(prefix), len(reads), len(quotas)]
    for slot, head in reads:
        args += (at(slot), head)
    for decision in quotas:
        args += decision
    for slot, (mode, entry, head) in writes:
        if entry is None:
            args += (at(slot), b"D", b"", 0, 0)
        else:
            data = head if mode == b"M" else head + entry.value
            size = entry_bytes(slot[1], entry.value)
            args += (at(slot), mode, data, entry.expires_at - now, size)
    return APPLY.call(keys, args)
