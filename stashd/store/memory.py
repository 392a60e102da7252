"""The memory store: dicts on the event loop thread, with Redis-like active expiry.

Everything runs on the loop thread, so an operation is atomic simply by not awaiting.
Expired entries are invisible at once (every read checks the clock) and are also freed
when nobody reads them again: a timing wheel of one-second buckets remembers which keys
expire when, and :meth:`MemoryStore.maintain` frees due keys in slices of bounded cost,
like Redis's active expire cycle, so memory does not grow under churn.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from typing import TYPE_CHECKING, Any, Final

from stashd.store.base import Clock, Entry, Store, run_each, wall_clock_ms

if TYPE_CHECKING:
    from stashd.ops import Op

# How many wheel entries one maintenance slice may examine: bounds the time a slice can
# hold the loop (~50 us per 1000 on these machines) however much has expired at once.
SWEEP_BUDGET: Final = 2000
# Writes between opportunistic slices, for embedded use where no timer calls maintain().
WRITES_PER_SWEEP: Final = 1024


class Keyspace:
    """One namespace: the entries, plus insertion order for SCAN cursors.

    Every new key gets a sequence number, and ``seqs``/``order`` list (seq, key) pairs in
    insertion order. A cursor is the last sequence number returned, so resuming is a
    bisect, and a key present throughout an iteration keeps its number and is returned.
    Deleted keys leave stale pairs that are skipped and compacted away in bulk.
    """

    __slots__ = ("data", "order", "seq_of", "seqs")

    def __init__(self) -> None:
        self.data: dict[bytes, Entry] = {}
        self.seq_of: dict[bytes, int] = {}
        self.seqs: list[int] = []
        self.order: list[bytes] = []

    def compact(self) -> None:
        """Drop stale (seq, key) pairs once they outnumber live keys."""
        seq_of = self.seq_of
        pairs = [(s, k) for s, k in zip(self.seqs, self.order, strict=True) if seq_of.get(k) == s]
        self.seqs = [s for s, _ in pairs]
        self.order = [k for _, k in pairs]


class MemoryStore(Store):
    """Entries in process memory; gone when the process exits."""

    inline = True

    def __init__(self, clock: Clock = wall_clock_ms) -> None:
        super().__init__(clock)
        self.spaces: dict[str, Keyspace] = {}
        self._seq = 0
        # Timing wheel: second -> keys that were set to expire in that second. A key whose
        # expiry later moved is found stale when its bucket comes due and is skipped.
        self._wheel: dict[int, list[tuple[Keyspace, bytes]]] = {}
        self._due: list[int] = []  # heap of the wheel's seconds
        self._writes = 0
        self.view = _MemoryView(self)

    # -- Store ---------------------------------------------------------------------
    def run(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result type
        """Run one operation now; a dict needs no transaction to be atomic on one thread."""
        return op.run(self.view, self.clock())

    async def run_many(self, ops: list[Op]) -> list[Any]:
        """Run a batch in order, each operation's error becoming its result."""
        return run_each(self.view, ops, self.clock())

    def maintain(self) -> None:
        """Free a bounded number of expired keys (the active expire cycle)."""
        self.sweep(self.clock(), SWEEP_BUDGET)

    # -- expiry --------------------------------------------------------------------
    def track(self, space: Keyspace, key: bytes, expires_at: int) -> None:
        """Remember that ``key`` is due at ``expires_at`` (called on every put)."""
        second = expires_at // 1000
        bucket = self._wheel.get(second)
        if bucket is None:
            bucket = self._wheel[second] = []
            heapq.heappush(self._due, second)
        bucket.append((space, key))
        self._writes += 1
        if self._writes >= WRITES_PER_SWEEP:
            self._writes = 0
            self.sweep(self.clock(), SWEEP_BUDGET // 4)

    def sweep(self, now: int, budget: int) -> int:
        """Examine at most ``budget`` due wheel entries, deleting the expired; return freed."""
        freed = 0
        due = self._due
        wheel = self._wheel
        while due and due[0] * 1000 + 999 < now and budget > 0:
            second = due[0]
            bucket = wheel[second]
            take = min(budget, len(bucket))
            budget -= take
            for space, key in bucket[len(bucket) - take :]:
                entry = space.data.get(key)
                if entry is not None and entry.expires_at <= now:
                    self._drop(space, key)
                    freed += 1
            del bucket[len(bucket) - take :]
            if not bucket:
                heapq.heappop(due)
                del wheel[second]
        return freed

    def _drop(self, space: Keyspace, key: bytes) -> None:
        del space.data[key]
        del space.seq_of[key]
        if len(space.order) > 2 * len(space.data) + 1024:
            space.compact()

    def space(self, ns: str) -> Keyspace:
        """The keyspace of a namespace, created on first write."""
        space = self.spaces.get(ns)
        if space is None:
            space = self.spaces[ns] = Keyspace()
        return space

    def next_seq(self) -> int:
        """A new SCAN sequence number (starts at 1: cursor 0 means 'from the start')."""
        self._seq += 1
        return self._seq


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
            self.store._drop(space, key)  # noqa: SLF001 - the view is part of the store
            return None
        return entry

    def put(self, ns: str, key: bytes, entry: Entry) -> None:
        store = self.store
        space = store.space(ns)
        if key not in space.data:
            seq = store.next_seq()
            space.seq_of[key] = seq
            space.seqs.append(seq)
            space.order.append(key)
        space.data[key] = entry
        store.track(space, key, entry.expires_at)

    def delete(self, ns: str, key: bytes, now: int) -> bool:
        space = self.store.spaces.get(ns)
        if space is None:
            return False
        entry = space.data.get(key)
        if entry is None:
            return False
        self.store._drop(space, key)  # noqa: SLF001 - the view is part of the store
        return entry.expires_at > now

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
        # Wheel entries that point at the old keyspace find nothing and are skipped.
        self.store.spaces.pop(ns, None)
