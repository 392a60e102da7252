"""How a batch of operations runs on Redis: in Python, against fetched state, checked on commit.

The semantics stay in :mod:`stashd.ops`: every operation runs in Python against a
:class:`View`, exactly as on the memory and SQLite stores. What makes it atomic on a
Redis shared by many stashd nodes is a server-side check:

1. **Fetch.** The keys the batch's operations will read are fetched with one MGET per
   namespace, all in one pipelined round (keys found only while running, such as a
   random id that collided, are fetched in further rounds).
2. **Run.** Each operation runs against that state, seeing the writes of the
   operations before it in the batch. The view records, per operation, the 25-byte
   header of every key it read (empty when the key was absent) and what it wrote.
3. **Commit.** In one pipelined round, in batch order, each operation becomes one
   EVALSHA of :data:`APPLY`, which checks atomically that every key it read still has
   the header it read (the header holds a random stamp written with every change, so
   equal headers mean the very same write), and only then applies its writes, with
   native expiry. An operation whose check fails wrote nothing: it runs again from
   fresh state (at most :data:`MAX_TRIES` times), and the batch's operations in later
   rounds wait for it.

So MERGE, IFVERSION, INCR, EXTEND, the maximum-TTL rule and every other read-then-write
is atomic by a server-side check: no other node can change a key between the read an
operation decided on and its write. Operations on one key keep their order, since a
later operation that read an earlier one's write fails its check whenever the earlier
one did. GET, MGET and plain SET, which need no decision in Python, run natively in
their place in the pipeline (plain SET as the small :data:`SET` script, which computes
the new version on the server), and a batch of only those takes a single round.

Namespace-wide operations (SCAN, KEYS, DBSIZE, FLUSHDB, listings) run alone, after the
operations before them have been committed, and walk the namespace with SCAN MATCH;
like Redis's own SCAN they are not atomic snapshots of a namespace others are writing.

Layout: an entry is one string key, ``user:{<namespace>}:<key>``, holding a header
(format byte 1, expiry in ms and version as big-endian int64, an 8-byte stamp) and then
the value, with a native expiry set with ``PX`` to the time left. The braces are a
cluster hash tag: a namespace lives in one slot, so every operation's keys do too.
"""

from __future__ import annotations

import functools
import os
import random
import struct
import zlib
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
)
from stashd.ops import Set as SetOp
from stashd.redislink import ReplyError, Routed, Script, is_noscript
from stashd.store.base import Entry

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from stashd.ops import Op
    from stashd.redislink import Command

    Steps = Generator[list[Command], list[Any], Any]

logger = log.get("stashd.store.redis")

#: The header before every value: format, expires_at (ms), version, stamp.
HEADER: Final = struct.Struct(">BqqQ")
HEAD_SIZE: Final = HEADER.size  # 25
#: The header layout's version, its first byte; anything else is not an entry.
FORMAT: Final = 1
#: How often an operation may run before it is answered UNAVAILABLE: its check failed
#: because another node kept changing its keys, or Redis kept losing the scripts.
MAX_TRIES: Final = 10
#: Before running failed operations again, the driver waits a random time up to
#: BACKOFF_S * 2**tries (at most BACKOFF_MAX_S): two nodes that keep changing one key
#: then stop invalidating each other's checks in lockstep.
BACKOFF_S: Final = 0.0002
BACKOFF_MAX_S: Final = 0.05
#: COUNT of one SCAN call when a whole namespace is walked (DBSIZE, FLUSHDB, KEYS) and
#: the most a page asks of Redis at once: a few milliseconds of Redis time per call.
WALK_COUNT: Final = 1000
#: Keys of the whole Redis one page of a namespace may examine (SCAN COUNTs summed):
#: bounds a request's work on a Redis that many namespaces share (a few ms of Redis).
PAGE_BUDGET: Final = 10_000
#: Keys per MGET when a SCAN page's entries are fetched.
MGET_CHUNK: Final = 1000
#: A SCAN cursor at or above this marks a page of Redis's that had to be split because
#: one minimal SCAN step returned more keys than the caller asked for (see _fetch_page).
SPLIT: Final = 1 << 62
_SPLIT_MAX_CURSOR: Final = 1 << 30

Slot = tuple[str, bytes]  # (namespace, key)

APPLY: Final = Script("""
-- Check, then write, atomically: what makes a Stash operation atomic on Redis.
-- KEYS: every key the operation read or writes (one namespace, so one slot).
-- ARGV[1] = n, then n checks as pairs (index into KEYS, the first 25 bytes the key held
-- when the operation read it, "" when absent), then writes as quadruples (index, mode,
-- data, ttl ms): S stores data, M replaces the header with data and sets the expiry
-- (the value is unchanged), D deletes. 1: all written; 0: a key changed, nothing written.
local i = 2
for _ = 1, tonumber(ARGV[1]) do
  if redis.call('GETRANGE', KEYS[tonumber(ARGV[i])], 0, 24) ~= ARGV[i + 1] then
    return 0
  end
  i = i + 2
end
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i])]
  local mode = ARGV[i + 1]
  local ttl = tonumber(ARGV[i + 3])
  if mode == 'D' or ttl <= 0 then
    redis.call('UNLINK', key)
  elseif mode == 'S' then
    redis.call('SET', key, ARGV[i + 2], 'PX', ttl)
  else
    redis.call('SETRANGE', key, 0, ARGV[i + 2])
    redis.call('PEXPIRE', key, ttl)
  end
  i = i + 4
end
return 1
""")

SET: Final = Script("""
-- A plain SET (stashd.ops.put_value): the value with its expiry, version one up while
-- the key is live (1 otherwise). KEYS[1]; ARGV: value, expires_at ms, ttl ms, now ms,
-- stamp (8 bytes). Returns what the key held before, nil when nothing.
local old = redis.call('GET', KEYS[1])
local version = 1
if old and #old >= 25 and string.byte(old, 1) == 1 then
  local expires_at, v = struct.unpack('>i8i8', old, 2)
  if expires_at > tonumber(ARGV[4]) then
    version = v + 1
  end
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  -- One concatenation: header, stamp, value (measured ~4% faster than two).
  local data = struct.pack('>Bi8i8', 1, tonumber(ARGV[2]), version) .. ARGV[5] .. ARGV[1]
  redis.call('SET', KEYS[1], data, 'PX', ttl)
else
  redis.call('UNLINK', KEYS[1])
end
return old
""")

LIVE: Final = Script("""
-- How many of KEYS hold an entry whose expiry (header bytes 2-9) lies after ARGV[1] ms.
local now = tonumber(ARGV[1])
local n = 0
for _, key in ipairs(KEYS) do
  local h = redis.call('GETRANGE', key, 0, 8)
  if #h == 9 and string.byte(h, 1) == 1 and struct.unpack('>i8', h, 2) > now then
    n = n + 1
  end
end
return n
""")

#: Every script the store runs, loaded when a connection is made.
SCRIPTS: Final = (APPLY, SET, LIVE)

_GLOB: Final = frozenset(b"*?[]\\")


# -- layout ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4096)
def key_prefix(ns: str) -> bytes:
    """``user:{<namespace>}:`` with ``%``, ``{`` and ``}`` percent-encoded in the namespace.

    The encoding keeps the hash tag exactly the namespace: a ``}`` inside it would end
    the tag early and let two namespaces' key names overlap.
    """
    text = ns.encode().replace(b"%", b"%25").replace(b"{", b"%7B").replace(b"}", b"%7D")
    return b"user:{" + text + b"}:"


def match_pattern(prefix: bytes) -> bytes:
    """A SCAN MATCH pattern for every key under ``prefix``: its glob characters escaped."""
    out = bytearray()
    for byte in prefix:
        if byte in _GLOB:
            out.append(0x5C)  # backslash
        out.append(byte)
    return bytes(out + b"*")


def redis_key(slot: Slot) -> bytes:
    """The Redis key of ``(namespace, key)``."""
    return key_prefix(slot[0]) + slot[1]


def decode(raw: bytes | None) -> tuple[bytes, Entry | None]:
    """A stored string as (its first 25 bytes, the entry): (b"", None) when absent.

    A string that is not in Stash's format reads as absent, though its bytes are still
    what a check compares, so a write over it is checked like any other.
    """
    if raw is None:
        return b"", None
    if len(raw) < HEAD_SIZE or raw[0] != FORMAT:
        return raw[:HEAD_SIZE], None
    _, expires_at, version, _ = HEADER.unpack_from(raw)
    return raw[:HEAD_SIZE], Entry(raw[HEAD_SIZE:], expires_at, version)


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


def _remember_ids(op: Op) -> None:
    if isinstance(op, Create) and not isinstance(op.make_id, FirstIds):
        op.make_id = FirstIds(op.make_id)
    elif isinstance(op, Transaction):
        for inner in op.ops:
            _remember_ids(inner)


# -- running operations against fetched state ----------------------------------------------


class _Miss(Exception):
    """The view lacks state an operation asked for; the plan fetches it and runs it again."""

    def __init__(
        self,
        keys: tuple[Slot, ...] = (),
        page: tuple[str, int, int] | None = None,
        count: str | None = None,
    ) -> None:
        super().__init__()
        self.keys = keys
        self.page = page
        self.count = count


class _RoundFailed(Exception):
    """Redis refused a command the plan itself needed (SCAN, MGET); the cause is the text."""


class _Written:
    """A key's state after an earlier write of this batch (entry None: deleted)."""

    __slots__ = ("created", "entry", "head")

    def __init__(self, entry: Entry | None, head: bytes, created: bool) -> None:
        self.entry = entry
        self.head = head
        self.created = created  # absent before this batch wrote it


class _State:
    """What a segment of the batch knows: fetched entries, pages, counts, its own writes."""

    __slots__ = ("base", "cleared", "counts", "overlay", "pages")

    def __init__(self) -> None:
        self.base: dict[Slot, tuple[bytes, Entry | None]] = {}
        self.overlay: dict[Slot, _Written] = {}
        self.cleared: set[str] = set()
        self.pages: dict[tuple[str, int, int], tuple[int, list[tuple[bytes, Entry]]]] = {}
        self.counts: dict[str, int] = {}


class _Record:
    """One operation's run: what it read (headers), what it wrote, and its result."""

    __slots__ = ("clear", "clear_at", "cleared", "reads", "result", "undo", "writes")

    def __init__(self) -> None:
        self.reads: dict[Slot, bytes] = {}
        # slot -> (mode S/M/D, entry, new header)
        self.writes: dict[Slot, tuple[bytes, Entry | None, bytes]] = {}
        self.undo: dict[Slot, _Written | None] = {}
        self.cleared: set[str] | None = None  # the segment's cleared set before this op
        self.clear: str | None = None  # the namespace this op cleared
        self.clear_at = 0  # reads recorded before the clear
        self.result: Any = None


class _PlanView:
    """The :class:`~stashd.store.base.View` operations run against during a plan."""

    __slots__ = ("rec", "stamp", "state")

    def __init__(self, state: _State, stamp: Callable[[], int]) -> None:
        self.state = state
        self.stamp = stamp
        self.rec = _Record()

    def _touch(self, slot: Slot) -> tuple[bytes, Entry | None]:
        state = self.state
        written = state.overlay.get(slot)
        if written is not None:
            current = written.head, written.entry
        elif slot[0] in state.cleared:
            current = b"", None
        else:
            try:
                current = state.base[slot]
            except KeyError:
                raise _Miss(keys=(slot,)) from None
        self.rec.reads.setdefault(slot, current[0])
        return current

    def _overlay(self, slot: Slot, written: _Written) -> None:
        overlay = self.state.overlay
        self.rec.undo.setdefault(slot, overlay.get(slot))
        overlay[slot] = written

    def rollback(self, *, keep_reads: bool) -> None:
        """Undo this operation's writes to the segment's state (it missed or refused)."""
        rec = self.rec
        overlay = self.state.overlay
        for slot, before in rec.undo.items():
            if before is None:
                overlay.pop(slot, None)
            else:
                overlay[slot] = before
        if rec.cleared is not None:
            self.state.cleared = rec.cleared
        rec.undo.clear()
        rec.writes.clear()
        rec.cleared = rec.clear = None
        if not keep_reads:
            rec.reads.clear()

    # -- View ----------------------------------------------------------------------------
    def get(self, ns: str, key: bytes, now: int) -> Entry | None:
        """The live entry, as fetched or as written earlier in the batch."""
        entry = self._touch((ns, key))[1]
        return entry if entry is not None and entry.expires_at > now else None

    def put(self, ns: str, key: bytes, entry: Entry) -> None:
        """Remember the write; a change of expiry alone is sent without the value."""
        slot = (ns, key)
        head, current = self._touch(slot)
        rec = self.rec
        previous = rec.writes.get(slot)
        # The same bytes object as the key's current value means an expiry change (EXPIRE,
        # EXTEND, GETEX): only the header and the expiry go to Redis.
        same_value = current is not None and entry.value is current.value
        meta = same_value and (previous[0] == b"M" if previous else bool(head))
        new_head = HEADER.pack(FORMAT, entry.expires_at, entry.version, self.stamp())
        before = self.state.overlay.get(slot)
        created = before.created if before is not None else not head
        self._overlay(slot, _Written(entry, new_head, created))
        rec.writes[slot] = (b"M" if meta else b"S", entry, new_head)

    def delete(self, ns: str, key: bytes, now: int) -> bool:
        """Remember the removal; True when a live entry was removed."""
        slot = (ns, key)
        head, current = self._touch(slot)
        if not head:
            return False
        self._overlay(slot, _Written(None, b"", created=False))
        self.rec.writes[slot] = (b"D", None, b"")
        return current is not None and current.expires_at > now

    def scan(
        self, ns: str, cursor: int, count: int, now: int
    ) -> tuple[int, list[tuple[bytes, Entry]]]:
        """A page of a SCAN MATCH walk, with this batch's writes applied."""
        state = self.state
        if ns in state.cleared:
            return 0, self._written_live(ns, now, set(), count)
        page = state.pages.get((ns, cursor, count))
        if page is None:
            raise _Miss(page=(ns, cursor, count))
        nxt, rows = page
        out: list[tuple[bytes, Entry]] = []
        seen: set[bytes] = set()
        overlay = state.overlay
        for key, entry in rows:
            seen.add(key)
            written = overlay.get((ns, key))
            current = entry if written is None else written.entry
            if current is not None and current.expires_at > now:
                out.append((key, current))
        if nxt == 0 and overlay:
            # Keys this operation created before scanning (inside MULTI): Redis has not
            # seen them yet, so the walk's last page carries them, room permitting.
            out += self._written_live(ns, now, seen, count - len(out))
        return nxt, out

    def _written_live(
        self, ns: str, now: int, seen: set[bytes], room: int
    ) -> list[tuple[bytes, Entry]]:
        out: list[tuple[bytes, Entry]] = []
        cleared = ns in self.state.cleared
        for (space, key), written in self.state.overlay.items():
            if len(out) >= room:
                break
            entry = written.entry
            if (
                space == ns
                and key not in seen
                and (written.created or cleared)
                and entry is not None
                and entry.expires_at > now
            ):
                out.append((key, entry))
        return out

    def count(self, ns: str, now: int) -> int:
        """Live keys: Redis's count, corrected by this batch's writes."""
        state = self.state
        if ns in state.cleared:
            return len(self._written_live(ns, now, set(), len(state.overlay)))
        n = state.counts.get(ns)
        if n is None:
            raise _Miss(count=ns)
        for slot, written in state.overlay.items():
            if slot[0] != ns:
                continue
            base = state.base.get(slot)
            if base is None:
                raise _Miss(keys=(slot,))
            was = base[1] is not None and base[1].expires_at > now
            entry = written.entry
            n += (entry is not None and entry.expires_at > now) - was
        return n

    def clear(self, ns: str) -> None:
        """Remember that the namespace is emptied: later reads see only later writes."""
        state = self.state
        rec = self.rec
        if rec.cleared is None:
            rec.cleared = set(state.cleared)
        for slot in [s for s in state.overlay if s[0] == ns]:
            rec.undo.setdefault(slot, state.overlay[slot])
            del state.overlay[slot]
        for slot in [s for s in rec.writes if s[0] == ns]:
            del rec.writes[slot]
        state.cleared.add(ns)
        rec.clear = ns
        rec.clear_at = len(rec.reads)


# -- the plan ------------------------------------------------------------------------------

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
        if all(_is_native(ops[i]) for i in segment):
            return (yield from self._native(segment, now))
        state = _State()
        view = _PlanView(state, self.stamp)
        wanted: dict[str, dict[bytes, None]] = {}
        for i in segment:
            op = ops[i]
            if type(op) is not Get and type(op) is not GetMany:
                for ns, key in keys_of(op):
                    wanted.setdefault(ns, {})[key] = None
        if wanted:
            yield from self._fetch_keys(state, {ns: list(keys) for ns, keys in wanted.items()})
        # Run every operation in order; Get and GetMany only note what the writes before
        # them will have left, to compare with what Redis answers in their place.
        runs: list[tuple[int, _Record | None, dict[Slot, bytes]]] = []
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
            if rec is not None and not rec.reads and not rec.writes:
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
        """An APPLY that found a key changed (0) or an error reply."""
        if is_noscript(reply):
            self.noscript = True
            failed.append(i)
        elif isinstance(reply, ReplyError):
            self.results[i] = StoreUnavailable(f"Redis refused the write: {reply}")
        else:
            failed.append(i)

    def _command(self, op: Op, rec: _Record | None, now: int) -> Command | None:
        if rec is None:
            return self._native_command(op, now)
        if not rec.reads and not rec.writes:
            return None
        return _apply(list(rec.reads.items()), list(rec.writes.items()), now)

    def _speculate(self, state: _State, view: _PlanView, op: Op, now: int) -> Steps:
        """Run ``op`` on the view, fetching what it misses; its record, result included."""
        while True:
            rec = view.rec = _Record()
            try:
                result = op.run(view, now)
            except _Miss as miss:
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

    def _commit_clear(self, i: int, rec: _Record, now: int) -> Steps:
        """FLUSHDB (alone, or in MULTI): check, empty the namespace, then the later writes."""
        assert rec.clear is not None
        reads = list(rec.reads.items())
        before, after = reads[: rec.clear_at], reads[rec.clear_at :]
        if before:
            (reply,) = yield [_apply(before, [], now)]
            if reply != 1:
                failed: list[int] = []
                self._refused(i, reply, failed)
                return failed
        yield from self._walk(rec.clear, now, unlink=True)
        if after or rec.writes:
            (reply,) = yield [_apply(after, list(rec.writes.items()), now)]
            if reply != 1:
                failed = []
                self._refused(i, reply, failed)
                return failed
        self.results[i] = rec.result
        return []

    # -- fetching ----------------------------------------------------------------------------
    def _fetch(self, state: _State, miss: _Miss, now: int) -> Steps:
        if miss.keys:
            wanted: dict[str, list[bytes]] = {}
            for ns, key in miss.keys:
                wanted.setdefault(ns, []).append(key)
            yield from self._fetch_keys(state, wanted)
        elif miss.page is not None:
            state.pages[miss.page] = yield from self._fetch_page(*miss.page)
        elif miss.count is not None:
            state.counts[miss.count] = yield from self._walk(miss.count, now, unlink=False)

    def _fetch_keys(self, state: _State, wanted: dict[str, list[bytes]]) -> Steps:
        """One MGET per namespace, in one round."""
        spaces = list(wanted.items())
        commands: list[Command] = []
        for ns, keys in spaces:
            prefix = key_prefix(ns)
            commands.append(("MGET", *[prefix + k for k in keys]))
        replies = yield commands
        base = state.base
        for (ns, keys), reply in zip(spaces, replies, strict=True):
            if isinstance(reply, ReplyError):
                raise _RoundFailed(f"Redis refused MGET: {reply}")
            for key, raw in zip(keys, reply, strict=True):
                base[(ns, key)] = decode(raw)

    def _fetch_page(self, ns: str, cursor: int, count: int) -> Steps:
        """At most ``count`` live entries from ``cursor`` on, each SCAN step whole.

        SCAN MATCH examines keys of the whole Redis, other namespaces' included, so a page
        keeps asking until it holds ``count`` keys of the namespace, the walk ends, or
        :data:`PAGE_BUDGET` keys of Redis were examined (or ``count``, if more: KEYS asks for
        everything at once): a small namespace in a small
        Redis comes back whole, as it would from its own Redis. Redis's COUNT grows
        where the namespace is sparse and is halved, from the same cursor, when a step
        would overflow the page, so every step taken is one Redis really gave and its
        guarantee holds: a key present for the whole walk is returned. Only when a
        single minimal step brings too many keys (they share a hash bucket) is that
        step split by the keys' CRC32, marked in the cursor with :data:`SPLIT`.
        """
        prefix = key_prefix(ns)
        pattern = match_pattern(prefix)
        split_from: int | None = None
        if cursor >= SPLIT:
            cursor, split_from = (cursor - SPLIT) >> 32, cursor & 0xFFFFFFFF
        keys: list[bytes] = []
        seen: set[bytes] = set()
        examined = 0
        budget = max(PAGE_BUDGET, count)  # KEYS asks for everything in one page
        nxt = cursor
        step = 1 if split_from is not None else max(1, min(count, WALK_COUNT))
        while True:
            while True:
                command = Routed(("SCAN", cursor, "MATCH", pattern, "COUNT", step), prefix)
                (reply,) = yield [command]
                after, found = _scan_reply(reply, prefix)
                found = [k for k in found if k not in seen]
                if split_from is not None:
                    found = [k for k in found if zlib.crc32(k) >= split_from]
                if len(keys) + len(found) <= count:
                    break
                if step > 1:
                    step //= 2
                    continue
                # One minimal step brought more than fits: split it by CRC32.
                taken, resume = _split(found, count - len(keys))
                if resume is not None and cursor < _SPLIT_MAX_CURSOR:
                    keys += taken
                    nxt = SPLIT + (cursor << 32) + resume
                    return (yield from self._entries(ns, nxt, keys))
                break  # cannot mark the cursor: return the whole step, over count
            keys += found
            seen.update(found)
            examined += step
            cursor = nxt = after
            split_from = None
            room = count - len(keys)
            if after == 0 or room <= 0 or examined >= budget:
                break
            # Aim the next step at the room left, from the share of matches seen so far.
            step = room * step // len(found) if found else step * 4
            step = max(1, min(step, WALK_COUNT, budget - examined))
        return (yield from self._entries(ns, nxt, keys))

    def _entries(self, ns: str, nxt: int, keys: list[bytes]) -> Steps:
        """The entries of a page's keys (MGET in chunks); keys gone meanwhile are left out."""
        prefix = key_prefix(ns)
        rows: list[tuple[bytes, Entry]] = []
        for start in range(0, len(keys), MGET_CHUNK):
            chunk = keys[start : start + MGET_CHUNK]
            (reply,) = yield [("MGET", *[prefix + k for k in chunk])]
            if isinstance(reply, ReplyError):
                raise _RoundFailed(f"Redis refused MGET: {reply}")
            for key, raw in zip(chunk, reply, strict=True):
                entry = decode(raw)[1]
                if entry is not None:
                    rows.append((key, entry))
        return nxt, rows

    def _walk(self, ns: str, now: int, *, unlink: bool) -> Steps:
        """Walk a whole namespace with SCAN MATCH: count its live keys, or unlink them all.

        Each round sends the next SCAN together with the work on the previous page, so
        the walk costs one round per page.
        """
        prefix = key_prefix(ns)
        pattern = match_pattern(prefix)
        cursor: int | None = 0
        pending: list[bytes] = []
        total = 0
        while cursor is not None or pending:
            commands: list[Command] = []
            if cursor is not None:
                commands.append(
                    Routed(("SCAN", cursor, "MATCH", pattern, "COUNT", WALK_COUNT), prefix)
                )
            if pending:
                full = [prefix + k for k in pending]
                commands.append(("UNLINK", *full) if unlink else LIVE.call(full, [now]))
            replies = yield commands
            if pending:
                done = replies[-1]
                if isinstance(done, ReplyError):
                    raise _RoundFailed(
                        f"Redis refused to {'UNLINK' if unlink else 'count'}: {done}"
                    )
                total += int(done)
            pending = []
            if cursor is not None:
                after, pending = _scan_reply(replies[0], prefix)
                cursor = after or None
        return total


def native_commands(ops: list[Op], now: int, stamp: Callable[[], int]) -> list[Command] | None:
    """The commands of a batch of only GET, MGET, PING and plain SET; None for any other."""
    out: list[Command] = []
    append = out.append
    sha = SET.sha
    for op in ops:
        kind = type(op)
        if kind is Get:
            append(("GET", key_prefix(op.ns) + op.key))
        elif kind is SetOp:
            if op.cond or op.keep_ttl:  # type: ignore[attr-defined]
                return None
            expires_at = op.expires_at  # type: ignore[attr-defined]
            append(
                (
                    "EVALSHA",
                    sha,
                    1,
                    key_prefix(op.ns) + op.key,
                    op.value,  # type: ignore[attr-defined]
                    expires_at,
                    expires_at - now,
                    now,
                    stamp().to_bytes(8, "big"),
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


def _scan_reply(reply: Any, prefix: bytes) -> tuple[int, list[bytes]]:  # noqa: ANN401
    """SCAN's reply as (next cursor, the keys under ``prefix`` without it)."""
    if isinstance(reply, ReplyError):
        raise _RoundFailed(f"Redis refused SCAN: {reply}")
    cursor, keys = reply
    cut = len(prefix)
    return int(cursor), [k[cut:] for k in keys if k.startswith(prefix)]


def _split(keys: list[bytes], room: int) -> tuple[list[bytes], int | None]:
    """The first keys by CRC32 that fit in ``room``, and the CRC32 to resume from.

    Keys with equal CRC32 stay together; None means no split point fits in ``room``.
    """
    ordered = sorted(keys, key=zlib.crc32)
    crcs = [zlib.crc32(k) for k in ordered]
    cut = room
    while 0 < cut < len(ordered) and crcs[cut] == crcs[cut - 1]:
        cut -= 1
    if cut <= 0 or cut >= len(ordered):
        return ordered, None
    return ordered[:cut], crcs[cut]


def _apply(
    reads: list[tuple[Slot, bytes]],
    writes: list[tuple[Slot, tuple[bytes, Entry | None, bytes]]],
    now: int,
) -> Command:
    """The APPLY call of one operation: its checks, then its writes."""
    keys: list[bytes] = []
    index: dict[Slot, int] = {}

    def at(slot: Slot) -> int:
        n = index.get(slot)
        if n is None:
            keys.append(redis_key(slot))
            n = index[slot] = len(keys)
        return n

    args: list[Any] = [len(reads)]
    for slot, head in reads:
        args += (at(slot), head)
    for slot, (mode, entry, head) in writes:
        if entry is None:
            args += (at(slot), b"D", b"", 0)
        elif mode == b"M":
            args += (at(slot), b"M", head, entry.expires_at - now)
        else:
            args += (at(slot), b"S", head + entry.value, entry.expires_at - now)
    return APPLY.call(keys, args)
