"""How a batch of operations runs on Redis: in Python, against fetched state, checked on commit.

The semantics stay in :mod:`stashd.ops`: every operation runs in Python against a
:class:`View` (:class:`~stashd.store.redis.view.PlanView`), exactly as on the memory
and SQLite stores. What makes it atomic on a Redis shared by many stashd nodes is a
server-side check:

1. **Fetch.** The keys the batch's operations declare (:meth:`~stashd.ops.Op.slots`)
   are fetched with one MGET per namespace, all in one pipelined round, with the usage
   of each namespace whose writes a storage quota limits (keys found only while
   running, such as a random id that collided, are fetched in further rounds).
2. **Run.** Each operation runs against that state, seeing the writes of the
   operations before it in the batch. The view records, per operation, the 25-byte
   header of every key it read (empty when the key was absent), what it wrote, and
   each quota decision it made (the growth, the limits, and whether it fit).
3. **Commit.** In one pipelined round, in batch order, each operation becomes one
   EVALSHA of :data:`~stashd.store.redis.lua.APPLY`, which checks atomically that every
   key it read still has the header it read (the header holds a random stamp written
   with every change, so equal headers mean the very same write) and that every quota
   decision still comes out the same against the namespace's usage in Redis, and only
   then applies its writes, with native expiry, and updates the namespace's index. An
   operation whose check fails wrote nothing: it runs again from fresh state (at most
   :data:`MAX_TRIES` times), and the batch's operations in later rounds wait for it.

So SET, MERGE, IFVERSION, INCR, EXTEND, the maximum-TTL rule, storage quotas and every
other write is decided in Python by the one rule in :mod:`stashd.ops` (the version, the
expiry, the quota) and atomic by a server-side check that decides nothing: no other
node can change a key, or fill the namespace, between what an operation decided on and
its write. Operations on one key keep their order, since a later operation that read an
earlier one's write fails its check whenever the earlier one did. Operations that only
read their keys (:attr:`~stashd.ops.Touch.READ`: GET, MGET, PING) are sent as Redis's
own command in their place in the commit round, and checked against the writes of the
batch before them; a batch of only those takes a single round, any other two.

Namespace-wide operations (:attr:`~stashd.ops.Touch.SPACE`: SCAN, KEYS, DBSIZE, INFO,
FLUSHDB, listings) run alone, after the operations before them have been committed, and
read the namespace's own index (:mod:`stashd.store.redis.walk`), never the shared
keyspace; like Redis's own SCAN they are not atomic snapshots of a namespace others are
writing. The layout of entries and of each namespace's index is
:mod:`stashd.store.redis.layout`.
"""

from __future__ import annotations

import os
import random
from typing import TYPE_CHECKING, Any, Final

from stashd import log
from stashd.errors import StashError, StoreUnavailable
from stashd.ops import Touch
from stashd.quota import entry_bytes
from stashd.redislink import ReplyError, is_noscript
from stashd.store.redis import walk
from stashd.store.redis.layout import (
    CLEAN_PER_CALL,
    QUOTA_FREE_KEYS,
    decode,
    index_keys,
    key_prefix,
)
from stashd.store.redis.lua import APPLY, USAGE
from stashd.store.redis.view import Miss, PlanView, Record, State
from stashd.store.redis.walk import RoundFailed, ScriptsLost, refusal

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from stashd.ops import Op
    from stashd.redislink import Command
    from stashd.store.redis.view import QuotaCheck, Slot
    from stashd.types import Entry, Quota

    Steps = Generator[list[Command], list[Any], Any]

logger = log.get("stashd.store.redis")

#: How often an operation may run before it is answered UNAVAILABLE: its check failed
#: because another node kept changing its keys, or Redis kept losing the scripts. Every
#: failed check means another writer's landed, so the writers as a whole progress; 64
#: tries (about 1.5 s of waits once they reach BACKOFF_MAX_S) let one writer among
#: several threads hammering one key on a loaded machine land too, where 10 did not.
MAX_TRIES: Final = 64
#: Before running failed operations again, the driver waits a random time up to
#: BACKOFF_S * 2**tries (at most BACKOFF_MAX_S): two nodes that keep changing one key
#: then stop invalidating each other's checks in lockstep.
BACKOFF_S: Final = 0.0002
BACKOFF_MAX_S: Final = 0.05
#: The most operations one APPLY call commits. A batch's writes to one namespace share a
#: call (one script start, one read and write of the index's meta): measured on a busy
#: 2-core machine, a call of one SET took 32 us of Redis time, 16 SETs 12 us each, 64
#: SETs 14 us each (0.9 ms in all), 256 SETs 12 us each (3 ms). 64 keeps nearly all of
#: the saving and bounds how long one call holds Redis to about a millisecond.
APPLY_OPS: Final = 64

READ: Final = Touch.READ
SPACE: Final = Touch.SPACE


class Stamps:
    """Random 64-bit stamps, one per write: equal headers then mean the same write."""

    def __init__(self) -> None:
        self._random = random.Random()  # noqa: S311 - uniqueness, not secrecy
        os.register_at_fork(after_in_child=self._random.seed)

    def __call__(self) -> int:
        """A new stamp."""
        return self._random.getrandbits(64)


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

    def abandon(self, cause: str) -> list[Any]:
        """Every result, with ``StoreUnavailable(cause)`` for operations not answered yet."""
        error = StoreUnavailable(cause)
        return [error if r is _UNSET else r for r in self.results]

    def steps(self) -> Steps:
        """Run every operation; segments in order, failed operations again after theirs."""
        todo = list(range(len(self.ops)))
        while todo:
            for start, segment in _segments(todo, self.ops):
                try:
                    failed = yield from self._segment(segment)
                except ScriptsLost:
                    self.noscript = True
                    failed = [i for i in segment if self.results[i] is _UNSET]
                except RoundFailed as exc:
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
        """One fetch round for the keys the segment's writes declare, then one commit round."""
        ops = self.ops
        now = self.clock()
        for i in segment:
            if ops[i].touch is not READ:
                break
        else:
            return (yield from self._reads(segment, now))
        state = State()
        wanted: dict[str, dict[bytes, None]] = {}
        spaces: dict[str, None] = {}
        reads: dict[int, list[Slot]] = {}
        for i in segment:
            op = ops[i]
            if op.touch is READ:
                reads[i] = op.slots()
                continue
            for ns, key in op.slots():
                keys = wanted.get(ns)
                if keys is None:
                    keys = wanted[ns] = {}
                keys[key] = None
            for ns in op.usage_read():
                spaces[ns] = None
        view = PlanView(state, self.stamp, now, metered=bool(spaces))
        if wanted or spaces:
            fetch = {ns: list(keys) for ns, keys in wanted.items()}
            yield from self._fetch_keys(state, fetch, list(spaces), now)
        # Run every operation in order; a read only notes what the writes before it will
        # have left, to compare with what Redis answers in its place.
        # (index, record, what a read expects, its command, its place in an APPLY call)
        runs: list[tuple[int, Record | None, dict[Slot, bytes] | None, int, int]] = []
        parts: list[Call | Command] = []
        call: Call | None = None  # the APPLY call consecutive writes to one namespace join
        overlay = state.overlay
        for i in segment:
            slots = reads.get(i)
            if slots is not None:
                expect: dict[Slot, bytes] | None = None
                if overlay:
                    for slot in slots:
                        written = overlay.get(slot)
                        if written is not None:
                            expect = expect or {}
                            expect[slot] = written.head
                runs.append((i, None, expect, len(parts), -1))
                parts.append(_read_command(slots))
                call = None  # a read sees the writes before it, so they are sent first
                continue
            # Most operations find all they read fetched: one attempt, no generator.
            attempt = _attempt(view, ops[i], now)
            if isinstance(attempt, Miss):
                yield from self._fetch(state, attempt, now)
                rec = yield from self._speculate(state, view, ops[i], now)
            else:
                rec = attempt
            if rec.clear is not None and len(segment) == 1:
                return (yield from self._commit_clear(i, rec, now))
            if not rec.reads and not rec.writes and not rec.quotas:
                runs.append((i, rec, None, -1, -1))
                continue
            ns = next(iter(rec.reads or rec.writes))[0]
            if call is None or call.ns != ns or call.size >= APPLY_OPS:
                call = Call(ns, now)
                parts.append(call)
            place = call.add(rec.reads, rec.writes, rec.quotas, now)
            runs.append((i, rec, None, len(parts) - 1, place))
        commands = [p.command() if isinstance(p, Call) else p for p in parts]
        replies = (yield commands) if commands else []
        failed: list[int] = []
        results = self.results
        answers = Answers(now)
        for i, done, expect, k, place in runs:
            if done is None:
                self._read(i, replies[k], answers, reads[i], expect, failed)
                continue
            if k < 0:
                results[i] = done.result
                continue
            reply = replies[k]
            code = reply if isinstance(reply, ReplyError) else reply[place]
            if code == 1:
                results[i] = done.result
            else:
                self._refused(i, code, failed)
        return failed

    def _reads(self, segment: list[int], now: int) -> Steps:
        """A segment of reads only (the common batch of GETs): one round, no fetch."""
        ops = self.ops
        slots = [ops[i].slots() for i in segment]
        replies = yield [_read_command(keys) for keys in slots]
        answers = Answers(now)
        failed: list[int] = []
        read = self._read
        for i, keys, reply in zip(segment, slots, replies, strict=True):
            read(i, reply, answers, keys, None, failed)
        return failed

    def _read(  # noqa: PLR0917 - hot path: positional arguments are cheapest
        self,
        i: int,
        reply: Any,  # noqa: ANN401 - any reply
        answers: Answers,
        slots: list[Slot],
        expect: dict[Slot, bytes] | None,
        failed: list[int],
    ) -> None:
        """A read's result from Redis's reply, once the writes of this batch before it landed."""
        if isinstance(reply, ReplyError):
            self._refused(i, reply, failed)
            return
        raws = reply if len(slots) > 1 else (reply,) if slots else ()  # PING: no key
        fetched = answers.fetched(slots, raws)
        if expect is not None:
            for slot, head in expect.items():
                if fetched[slot][0] != head:
                    failed.append(i)  # an earlier write of this batch did not land (yet)
                    return
        self.results[i] = answers.run(self.ops[i])

    def _refused(self, i: int, reply: Any, failed: list[int]) -> None:  # noqa: ANN401
        """An APPLY that found a key changed (0) or a quota decision turned (2), or an error."""
        if is_noscript(reply):
            self.noscript = True
            failed.append(i)
        elif isinstance(reply, ReplyError):
            self.results[i] = StoreUnavailable(f"Redis refused the write: {reply}")
        else:
            failed.append(i)

    def _speculate(self, state: State, view: PlanView, op: Op, now: int) -> Steps:
        """Run ``op`` on the view, fetching what it misses; its record, result included."""
        while True:
            attempt = _attempt(view, op, now)
            if not isinstance(attempt, Miss):
                return attempt
            yield from self._fetch(state, attempt, now)

    def _commit_clear(self, i: int, rec: Record, now: int) -> Steps:
        """FLUSHDB (alone, or in MULTI): check, empty the namespace, then the later writes."""
        assert rec.clear is not None
        reads = list(rec.reads.items())
        before, after = reads[: rec.clear_at], reads[rec.clear_at :]
        quotas = rec.quotas[: rec.quotas_at]
        if before or quotas:
            failed = yield from self._commit_one(i, rec.clear, before, [], quotas, now)
            if failed:
                return failed
        yield from walk.drop(rec.clear)
        if after or rec.writes:
            writes = list(rec.writes.items())
            failed = yield from self._commit_one(i, rec.clear, after, writes, [], now)
            if failed:
                return failed
        self.results[i] = rec.result
        return []

    def _commit_one(  # noqa: PLR0917 - the parts of one APPLY, as Call.add takes them
        self,
        i: int,
        clear: str,
        reads: list[tuple[Slot, bytes]],
        writes: list[tuple[Slot, tuple[bytes, Entry | None, bytes]]],
        quotas: list[QuotaCheck],
        now: int,
    ) -> Steps:
        """One APPLY of part of the record of FLUSHDB's operation (which empties ``clear``).

        The result is [i] when it did not apply.
        """
        # An operation reads and writes one namespace; quota decisions alone are FLUSHDB's own.
        ns = (reads or writes)[0][0][0] if reads or writes else clear
        call = Call(ns, now)
        call.add(dict(reads), dict(writes), quotas, now)
        (reply,) = yield [call.command()]
        code = reply if isinstance(reply, ReplyError) else reply[0]
        failed: list[int] = []
        if code != 1:
            self._refused(i, code, failed)
        return failed

    # -- fetching ----------------------------------------------------------------------------
    def _fetch(self, state: State, miss: Miss, now: int) -> Steps:
        if miss.keys:
            wanted: dict[str, list[bytes]] = {}
            for ns, key in miss.keys:
                wanted.setdefault(ns, []).append(key)
            yield from self._fetch_keys(state, wanted, [], now)
        elif miss.page is not None:
            state.pages[miss.page] = yield from walk.page(*miss.page, now)
        elif miss.count is not None:
            state.counts[miss.count] = yield from walk.count(miss.count, now)
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
                raise RoundFailed(f"Redis refused MGET: {reply}")
            for key, raw in zip(keys, reply, strict=True):
                base[(ns, key)] = decode(raw)
        for ns, reply in zip(usage, replies[len(spaces) :], strict=True):
            if isinstance(reply, ReplyError):
                raise refusal(reply, "to read the usage")
            keys_held, bytes_held = reply
            state.usage[ns] = (int(keys_held), int(bytes_held))


def _attempt(view: PlanView, op: Op, now: int) -> Record | Miss:
    """Run ``op`` once on the view: its record, result included, or what it missed."""
    rec = view.rec = Record()
    try:
        result = op.run(view, now)
    except Miss as miss:
        view.rollback(keep_reads=False)
        return miss
    except StashError as exc:
        view.rollback(keep_reads=True)  # a refusal depends on what was read
        result = exc
    except Exception as exc:  # a bug in an operation must not fail its batch
        logger.exception("operation_failed", operation=type(op).__name__)
        view.rollback(keep_reads=False)
        result = StoreUnavailable(type(exc).__name__)
    rec.result = result
    return rec


class Answers:
    """A view of what Redis answered for reads' keys: their results come from their own run."""

    __slots__ = ("base", "now")

    def __init__(self, now: int) -> None:
        self.base: dict[Slot, tuple[bytes, Entry | None]] = {}
        self.now = now

    def fetched(self, slots: list[Slot], raws: Any) -> dict[Slot, tuple[bytes, Entry | None]]:  # noqa: ANN401 - a reply
        """Take the raw replies for ``slots`` as what the keys hold now."""
        base = self.base
        for slot, raw in zip(slots, raws, strict=True):
            base[slot] = decode(raw)
        return base

    def run(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result
        """The read's result, or its StashError."""
        try:
            return op.run(self, self.now)
        except StashError as exc:
            return exc

    # -- View: a read asks for its keys only -------------------------------------------
    def get(self, ns: str, key: bytes, now: int) -> Entry | None:
        """The live entry as Redis answered it."""
        entry = self.base[(ns, key)][1]
        return entry if entry is not None and entry.expires_at > now else None

    def put(self, ns: str, key: bytes, entry: Entry) -> None:
        """Never called: a read writes nothing."""
        raise _not_a_read("put", ns, key, entry)

    def delete(self, ns: str, key: bytes, now: int) -> bool:
        """Never called: a read writes nothing."""
        raise _not_a_read("delete", ns, key, now)

    def scan(
        self, ns: str, cursor: int, count: int, now: int
    ) -> tuple[int, list[tuple[bytes, Entry]]]:
        """Never called: a read reads its keys only."""
        raise _not_a_read("scan", ns, cursor, count, now)

    def count(self, ns: str, now: int) -> int:
        """Never called: a read reads its keys only."""
        raise _not_a_read("count", ns, now)

    def clear(self, ns: str) -> None:
        """Never called: a read writes nothing."""
        raise _not_a_read("clear", ns)

    def check_quota(self, ns: str, add_keys: int, add_bytes: int, quota: Quota) -> None:
        """Never called: a read writes nothing."""
        raise _not_a_read("check_quota", ns, add_keys, add_bytes, quota)

    def usage(self, ns: str, now: int) -> tuple[int, int]:
        """Never called: a read reads its keys only."""
        raise _not_a_read("usage", ns, now)


def _not_a_read(what: str, *args: object) -> RuntimeError:
    """The failure of an operation declared a plain read that did more (a bug)."""
    return RuntimeError(f"an operation declared a read called {what}{args!r}")


def _read_command(slots: list[Slot]) -> Command:
    """Redis's own read of a read's keys: GET of one, MGET of several, PING of none."""
    if len(slots) == 1:
        ns, key = slots[0]
        return ("GET", key_prefix(ns) + key)
    if slots:
        return ("MGET", *[key_prefix(ns) + key for ns, key in slots])
    return ("PING",)


_jitter: Final = random.Random().random  # noqa: S311 - spreading retries, not secrecy


def _segments(todo: list[int], ops: list[Op]) -> Iterator[tuple[int, list[int]]]:
    """(position in todo, indices): runs of operations, namespace-wide ones alone."""
    run: list[int] = []
    start = 0
    for pos, i in enumerate(todo):
        if ops[i].touch is SPACE:
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


class Call:
    """One APPLY call being built: a run of operations on one namespace, committed in order.

    Each operation adds its checks, quota decisions and writes; the call answers one
    code per operation. The namespace's index comes first in KEYS, then every key the
    operations name, once.
    """

    __slots__ = ("args", "index", "keys", "ns", "prefix", "size")

    def __init__(self, ns: str, now: int) -> None:
        self.ns = ns
        self.prefix = prefix = key_prefix(ns)
        self.keys: list[bytes] = [*index_keys(prefix)]
        self.index: dict[bytes, int] = {}
        self.args: list[Any] = [now, len(prefix)]
        self.size = 0  # operations added

    def _at(self, ns: str, key: bytes) -> int:
        """The KEYS index of ``key`` (1-based, as Lua counts)."""
        if ns != self.ns:
            msg = f"an operation's keys span two namespaces, {self.ns!r} and {ns!r}"
            raise ValueError(msg)
        n = self.index.get(key)
        if n is None:
            self.keys.append(self.prefix + key)
            n = self.index[key] = len(self.keys)
        return n

    def add(
        self,
        reads: dict[Slot, bytes],
        writes: dict[Slot, tuple[bytes, Entry | None, bytes]],
        quotas: list[QuotaCheck],
        now: int,
    ) -> int:
        """Add one operation's checks, quota decisions and writes; its place in the reply."""
        at = self._at
        args = self.args
        args += (len(reads), len(quotas), len(writes))
        for (ns, key), head in reads.items():
            args += (at(ns, key), head)
        for decision in quotas:
            args += decision
        for (ns, key), (mode, entry, head) in writes.items():
            if entry is None:
                args += (at(ns, key), b"D", b"", 0, 0)
            else:
                value = entry.value
                data = head if mode == b"M" else head + value
                args += (at(ns, key), mode, data, entry.expires_at - now, entry_bytes(key, value))
        self.size += 1
        return self.size - 1

    def command(self) -> Command:
        """The EVALSHA of the call."""
        return ("EVALSHA", APPLY.sha, len(self.keys), *self.keys, *self.args)
