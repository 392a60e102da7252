"""The memory store: dicts on the event loop thread, with Redis-like active expiry.

Everything runs on the loop thread, so an operation is atomic simply by not awaiting.
Expired entries are invisible at once (every read checks the clock) and are also freed
when nobody reads them again: :meth:`MemoryStore.maintain` walks each namespace's keys in
insertion order with a clock hand, a bounded slice at a time, and keeps going while a
good share of what it examines has expired, like Redis's active expire cycle. The walk
reuses the order that SCAN needs anyway, so a write costs no expiry bookkeeping at all
(an index of expiry times would grow with every write of a long TTL, even to one key).

Each namespace counts what it holds for its storage quota as entries come and go: its
keys are its dict's length, and ``nbytes`` adds each key and value
(:func:`~stashd.quota.entry_bytes`). Expired entries count until the sweep or a read
frees them; a write the quota would refuse first frees a slice of the namespace's own.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from typing import TYPE_CHECKING, Any, Final

from stashd.errors import QuotaExceeded
from stashd.quota import check, entry_bytes
from stashd.store.base import Store, run_each
from stashd.types import Clock, Entry, wall_clock_ms

if TYPE_CHECKING:
    from stashd.ops import Op
    from stashd.types import Quota

# Keys one slice examines: bounds how long a slice holds the loop (~20 us per 200).
SLICE_KEYS: Final = 200
# Every key is examined at least once per this many maintain() calls (1 s at ten a
# second), so an expired key nobody reads is freed, and its ``expired`` notification
# sent, within about one cycle (the bound protocol/SPEC.md states), and memory under
# churn stays bounded by what is written in one cycle. Each call is still held to
# MAINTAIN_BUDGET_S.
CYCLE_TICKS: Final = 10
# Past that quota, a slice that finds more than this share expired is followed by
# another, as in Redis: when much has expired, freeing it is worth more time.
REPEAT_RATIO: Final = 0.1
# Time one maintain() call may spend in slices: a quarter of the 100 ms tick, Redis's
# ACTIVE_EXPIRE_CYCLE_SLOW_TIME_PERC.
MAINTAIN_BUDGET_S: Final = 0.025
# New keys between opportunistic slices, for embedded use where no timer calls maintain().
INSERTS_PER_SLICE: Final = 1024
# A flushed namespace with more entries than this is freed by maintain() in slices of
# this many: dropping a million entries at once holds the loop for a few hundred ms.
FREE_SLICE: Final = 4096
# Keys of its namespace a write the quota would refuse examines for expired entries to
# free before it is refused: bounds the work a tenant at its quota can cause (~0.3 ms).
QUOTA_FREE_KEYS: Final = 2048
# What one entry holds beyond its key and value bytes, for memory_bytes(). Measured with
# tracemalloc on CPython 3.11 (x86-64), entries written through the view as SET writes
# them (fresh bytes for key and value, version 1, an expiry of its own), the keyspace's
# dicts and lists included: 266 bytes per entry at 20,000 keys of one namespace, 311 at
# 100,000 and 200,000, 291 at 1,000,000 (the dicts' fill moves it). The parts: two bytes
# objects' headers (2 x 33), the Entry and its three slots (48), its expiry int and its
# seq int (2 x 32), a slot in each of the data and seq_of dicts (~2 x 50 at their usual
# fill) and two list slots (16). The upper end is taken: --maxmemory should not trust
# more room than there is. tests/test_quotas.py measures it again.
ENTRY_OVERHEAD: Final = 312


class Totals:
    """Keys and bytes of every namespace together, kept as they change (memory_bytes())."""

    __slots__ = ("keys", "nbytes")

    def __init__(self) -> None:
        self.keys = 0
        self.nbytes = 0


class Keyspace:
    """One namespace: the entries, plus insertion order for SCAN cursors and the sweep.

    Every new key gets the namespace's next sequence number, and ``seqs``/``order`` list
    (seq, key) pairs in insertion order. The numbers are this namespace's own (``last``),
    so a cursor says nothing of how many keys other namespaces created meanwhile. A
    cursor is the last sequence number returned, so resuming is a bisect, and a key
    present throughout an iteration keeps its number and is returned.
    Deleted keys leave stale pairs that are skipped and compacted away in bulk. ``hand``
    is the sweep's cursor, in the same numbers.
    """

    __slots__ = ("data", "hand", "last", "nbytes", "order", "seq_of", "seqs", "totals")

    def __init__(self, totals: Totals) -> None:
        self.data: dict[bytes, Entry] = {}
        self.nbytes = 0  # every entry's key and value, expired or not, as quotas count
        self.totals = totals  # the store's, which this namespace's changes also go to
        self.seq_of: dict[bytes, int] = {}
        self.seqs: list[int] = []
        self.order: list[bytes] = []
        self.hand = 0
        self.last = 0  # the sequence number of the key created last

    def compact(self) -> None:
        """Drop stale (seq, key) pairs once they outnumber live keys."""
        seq_of = self.seq_of
        pairs = [(s, k) for s, k in zip(self.seqs, self.order, strict=True) if seq_of.get(k) == s]
        self.seqs = [s for s, _ in pairs]
        self.order = [k for _, k in pairs]

    def append(self, key: bytes) -> None:
        """Give a new key its place at the end of the order (its entry is stored by the caller)."""
        self.last = seq = self.last + 1
        self.seq_of[key] = seq
        self.seqs.append(seq)
        self.order.append(key)

    def drop(self, key: bytes) -> None:
        """Remove a key; its order pair goes stale and is compacted away later."""
        size = entry_bytes(key, self.data.pop(key).value)
        self.nbytes -= size
        totals = self.totals
        totals.keys -= 1
        totals.nbytes -= size
        del self.seq_of[key]
        if len(self.order) > 2 * len(self.data) + 1024:
            self.compact()


class MemoryStore(Store):
    """Entries in process memory; gone when the process exits."""

    inline = True

    def __init__(self, clock: Clock = wall_clock_ms) -> None:
        super().__init__(clock)
        self.spaces: dict[str, Keyspace] = {}
        self._inserts = 0
        self._turn = 0  # which keyspace the sweep visits next
        # Entries of flushed namespaces, gone from every view, still to be freed, and
        # what memory_bytes() counts for each until it is.
        self.retired: list[dict[bytes, Entry]] = []
        self._retired_bytes: list[int] = []
        self.totals = Totals()
        self.view = _MemoryView(self)
        # Keys a read or a delete found expired and removed, to be announced as expired
        # at the next maintain() (an operation may run on a script's thread, and the
        # listener lives on the loop); kept only while someone listens.
        self.lazily_expired: list[tuple[str, bytes]] = []

    # -- Store ---------------------------------------------------------------------
    def run(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result type
        """Run one operation now; a dict needs no transaction to be atomic on one thread."""
        return op.run(self.view, self.clock())

    async def run_many(self, ops: list[Op]) -> list[Any]:
        """Run a batch in order, each operation's error becoming its result."""
        return run_each(self.view, ops, self.clock())

    def maintain(self) -> None:
        """Free expired keys: this tick's share of a full cycle, more while many expire.

        Stops when the time budget is spent, whatever is left, so a tick never stalls
        clients for long; the hand resumes there on the next tick.
        """
        deadline = time.perf_counter() + MAINTAIN_BUDGET_S
        if self.lazily_expired:
            self.announce_lazily_expired()
        while self.retired and time.perf_counter() < deadline:
            self.free_retired()
        quota = sum(len(space.seqs) for space in self.spaces.values()) // CYCLE_TICKS
        now = self.clock()
        while True:
            examined, freed = self.sweep(now, SLICE_KEYS)
            quota -= examined
            if examined == 0 or (quota <= 0 and freed <= examined * REPEAT_RATIO):
                return
            if time.perf_counter() >= deadline:
                return

    def announce_lazily_expired(self) -> None:
        """Tell the listener of the keys reads and deletes removed because they expired."""
        found, self.lazily_expired = self.lazily_expired, []
        if self.expired is None:
            return
        for ns, key in found:
            self.expired.expired(ns, [key])

    def expired_on_access(self, ns: str, key: bytes) -> None:
        """A read or delete removed ``key`` because it had expired: kept for announcing."""
        listener = self.expired
        if listener is not None and listener.listening:
            self.lazily_expired.append((ns, key))

    def free_retired(self) -> None:
        """Free one slice of a flushed namespace's entries."""
        data = self.retired[-1]
        for _ in range(min(len(data), FREE_SLICE)):
            data.popitem()
        if not data:
            self.retired.pop()
            self._retired_bytes.pop()

    def retire(self, space: Keyspace) -> None:
        """Take a flushed namespace's entries out of sight, to be freed a slice per tick."""
        self.retired.append(space.data)
        self._retired_bytes.append(space.nbytes + ENTRY_OVERHEAD * len(space.data))

    # -- expiry --------------------------------------------------------------------
    def sweep(self, now: int, budget: int) -> tuple[int, int]:
        """Examine up to ``budget`` keys at the hand, freeing the expired: (examined, freed).

        Namespaces take turns, so one busy namespace cannot starve the others' sweep.
        """
        spaces = self.spaces
        if not spaces:
            return 0, 0
        if len(spaces) == 1:
            name = next(iter(spaces))
        else:
            self._turn = (self._turn + 1) % len(spaces)
            name = list(spaces)[self._turn]
        return self.sweep_space(name, now, budget)

    def sweep_space(self, name: str, now: int, budget: int) -> tuple[int, int]:
        """Examine up to ``budget`` keys of one namespace at its hand: (examined, freed)."""
        spaces = self.spaces
        space = spaces[name]
        seqs = space.seqs
        order = space.order
        data = space.data
        seq_of = space.seq_of
        start = bisect_right(seqs, space.hand)
        stop = min(len(seqs), start + budget)
        expired = []
        for j in range(start, stop):
            key = order[j]
            if seq_of.get(key) != seqs[j]:
                continue  # stale pair
            if data[key].expires_at <= now:
                expired.append(key)
        # Wrap to the start once the hand passes the newest key.
        space.hand = seqs[stop - 1] if stop < len(seqs) else 0
        for key in expired:
            space.drop(key)
        if not data:
            del spaces[name]  # an emptied namespace costs nothing until written again
        if expired and self.expired is not None:
            self.expired.expired(name, expired)
        return stop - start, len(expired)

    def memory_bytes(self) -> int:
        """Every namespace's entries as quotas count them, plus ENTRY_OVERHEAD for each.

        Flushed namespaces still being freed count as they were until they are gone.
        """
        totals = self.totals
        return totals.nbytes + ENTRY_OVERHEAD * totals.keys + sum(self._retired_bytes)

    def space(self, ns: str) -> Keyspace:
        """The keyspace of a namespace, created on first write."""
        space = self.spaces.get(ns)
        if space is None:
            space = self.spaces[ns] = Keyspace(self.totals)
        return space

    def insert(self, space: Keyspace, key: bytes, entry: Entry) -> None:
        """Store a key new to ``space``, giving it the next place in SCAN order.

        Every INSERTS_PER_SLICE new keys a sweep slice runs, after the write: run before
        it, a slice could free the keyspace being written to, and the key would land in
        a keyspace no longer listed.
        """
        space.append(key)
        space.data[key] = entry
        size = entry_bytes(key, entry.value)
        space.nbytes += size
        totals = self.totals
        totals.keys += 1
        totals.nbytes += size
        self._inserts += 1
        if self._inserts >= INSERTS_PER_SLICE:
            self._inserts = 0
            self.sweep(self.clock(), SLICE_KEYS)
            if self.retired:  # embedded use has no maintain() timer to free them
                self.free_retired()


class _MemoryView:
    """The :class:`View` of a memory store."""

    __slots__ = ("store",)

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def get(self, ns: str, key: bytes, now: int) -> Entry | None:
        space = self.store.spaces.get(ns)
        if space is None:
            return None
        entry = space.data.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            space.drop(key)
            self.store.expired_on_access(ns, key)
            return None
        return entry

    def put(self, ns: str, key: bytes, entry: Entry) -> None:
        store = self.store
        space = store.spaces.get(ns)
        if space is None:
            space = store.space(ns)
        data = space.data
        old = data.get(key)
        if old is None:
            store.insert(space, key, entry)
        else:
            grown = len(entry.value) - len(old.value)
            space.nbytes += grown
            store.totals.nbytes += grown
            data[key] = entry

    def delete(self, ns: str, key: bytes, now: int) -> bool:
        space = self.store.spaces.get(ns)
        if space is None:
            return False
        entry = space.data.get(key)
        if entry is None:
            return False
        space.drop(key)
        if entry.expires_at > now:
            return True
        self.store.expired_on_access(ns, key)
        return False

    def scan(
        self, ns: str, cursor: int, count: int, now: int
    ) -> tuple[int, list[tuple[bytes, Entry]]]:
        space = self.store.spaces.get(ns)
        if space is None:
            return 0, []
        seqs = space.seqs
        order = space.order
        i = bisect_right(seqs, cursor)
        stop = min(len(seqs), i + max(count, 1))
        data = space.data
        seq_of = space.seq_of
        out: list[tuple[bytes, Entry]] = []
        for j in range(i, stop):
            key = order[j]
            if seq_of.get(key) != seqs[j]:
                continue  # stale pair: deleted, or re-created with a newer number
            entry = data[key]
            if entry.expires_at > now:
                out.append((key, entry))
        return (seqs[stop - 1] if stop < len(seqs) else 0), out

    def count(self, ns: str, now: int) -> int:
        space = self.store.spaces.get(ns)
        if space is None:
            return 0
        return sum(1 for e in space.data.values() if e.expires_at > now)

    def clear(self, ns: str) -> None:
        store = self.store
        space = store.spaces.pop(ns, None)
        if space is None:
            return
        store.totals.keys -= len(space.data)
        store.totals.nbytes -= space.nbytes
        if len(space.data) > FREE_SLICE:
            store.retire(space)  # freed a slice per tick, not now

    def check_quota(self, ns: str, add_keys: int, add_bytes: int, quota: Quota) -> None:
        store = self.store
        space = store.spaces.get(ns)
        if space is None:
            check(0, 0, add_keys, add_bytes, quota)
            return
        try:
            check(len(space.data), space.nbytes, add_keys, add_bytes, quota)
        except QuotaExceeded:
            # Expired entries count until freed: free those of a bounded slice first, so
            # that expiry frees quota even before the sweep comes by.
            now = store.clock()
            left = QUOTA_FREE_KEYS
            while left > 0 and ns in store.spaces:
                examined, _ = store.sweep_space(ns, now, left)
                if examined == 0:
                    break
                left -= examined
            space = store.spaces.get(ns)
            if space is None:
                check(0, 0, add_keys, add_bytes, quota)
            else:
                check(len(space.data), space.nbytes, add_keys, add_bytes, quota)

    def usage(self, ns: str, now: int) -> tuple[int, int]:  # noqa: ARG002 - part of View
        space = self.store.spaces.get(ns)
        if space is None:
            return 0, 0
        return len(space.data), space.nbytes
