"""The view operations run against while a plan runs on Redis, and what it records.

:class:`PlanView` is the :class:`~stashd.types.View` of :mod:`stashd.store.redis.plan`:
it answers from the state the plan fetched (:class:`State`) and from the writes of the
operations before in the batch, and raises :class:`Miss` for anything not fetched yet,
so the plan fetches it and runs the operation again. For each operation it keeps a
:class:`Record`: the header of every key read, every write, and every quota decision,
which the operation's APPLY call checks and applies atomically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stashd.errors import QuotaExceeded
from stashd.quota import check, growth
from stashd.store.redis.layout import HEADER, caps

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.types import Entry, Quota

Slot = tuple[str, bytes]  # (namespace, key)

#: A quota decision as APPLY checks it: F (fit) or O (over), the keys and bytes the
#: operation's writes add up to it, the limits of :func:`~stashd.store.redis.layout.caps`.
QuotaCheck = tuple[bytes, int, int, int, int]


class Miss(Exception):
    """The view lacks state an operation asked for; the plan fetches it and runs it again.

    ``usage`` names a namespace whose usage is wanted; with ``free``, after freeing up
    to QUOTA_FREE_KEYS expired keys first (a write over its quota, before it is refused).
    """

    def __init__(
        self,
        keys: tuple[Slot, ...] = (),
        page: tuple[str, int, int] | None = None,
        count: str | None = None,
        usage: str | None = None,
        *,
        free: bool = False,
    ) -> None:
        super().__init__()
        self.keys = keys
        self.page = page
        self.count = count
        self.usage = usage
        self.free = free


class Written:
    """A key's state after an earlier write of this batch (entry None: deleted)."""

    __slots__ = ("created", "entry", "head")

    def __init__(self, entry: Entry | None, head: bytes, created: bool) -> None:
        self.entry = entry
        self.head = head
        self.created = created  # absent before this batch wrote it


class State:
    """What a segment of the batch knows: fetched entries, pages, counts, usage, its own writes.

    ``usage`` is each namespace's (keys, bytes) as Redis held them when fetched, and
    ``growth`` what the segment's writes since add to them, as :func:`stashd.quota.growth`
    counts it (an expired entry counts as absent, so the figure errs high, never low).
    ``freed`` names the namespaces whose usage was fetched after freeing expired keys.
    """

    __slots__ = ("base", "cleared", "counts", "freed", "growth", "overlay", "pages", "usage")

    def __init__(self) -> None:
        self.base: dict[Slot, tuple[bytes, Entry | None]] = {}
        self.overlay: dict[Slot, Written] = {}
        self.cleared: set[str] = set()
        self.pages: dict[tuple[str, int, int], tuple[int, list[tuple[bytes, Entry]]]] = {}
        self.counts: dict[str, int] = {}
        self.usage: dict[str, tuple[int, int]] = {}
        self.growth: dict[str, list[int]] = {}
        self.freed: set[str] = set()


class Record:
    """One operation's run: what it read (headers) and wrote, its quota decisions, its result."""

    __slots__ = (
        "clear",
        "clear_at",
        "cleared",
        "growth",
        "quotas",
        "quotas_at",
        "reads",
        "result",
        "undo",
        "writes",
    )

    def __init__(self) -> None:
        self.reads: dict[Slot, bytes] = {}
        # slot -> (mode S/M/D, entry, new header)
        self.writes: dict[Slot, tuple[bytes, Entry | None, bytes]] = {}
        self.undo: dict[Slot, Written | None] = {}
        self.quotas: list[QuotaCheck] = []
        self.growth: dict[str, list[int]] = {}  # what its writes add, per namespace
        self.cleared: set[str] | None = None  # the segment's cleared set before this op
        self.clear: str | None = None  # the namespace this op cleared
        self.clear_at = 0  # reads recorded before the clear
        self.quotas_at = 0  # quota decisions recorded before the clear
        self.result: Any = None


class PlanView:
    """The :class:`~stashd.types.View` operations run against during a plan."""

    __slots__ = ("metered", "now", "rec", "stamp", "state")

    def __init__(
        self, state: State, stamp: Callable[[], int], now: int, *, metered: bool = True
    ) -> None:
        self.state = state
        self.stamp = stamp
        self.now = now  # the segment's clock, for what a write adds to its namespace
        self.rec = Record()
        # False when no operation of the segment declared it reads a namespace's usage
        # (Op.usage_read): then what writes add is not counted, which is most of a
        # plain write's work here.
        self.metered = metered

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
                raise Miss(keys=(slot,)) from None
        self.rec.reads.setdefault(slot, current[0])
        return current

    def _overlay(self, slot: Slot, written: Written) -> None:
        overlay = self.state.overlay
        self.rec.undo.setdefault(slot, overlay.get(slot))
        overlay[slot] = written

    def _grow(self, ns: str, key: bytes, old: Entry | None, new: Entry | None) -> None:
        """Count what a write adds to its namespace, for later quota decisions."""
        if not self.metered:
            return
        was = old.value if old is not None and old.expires_at > self.now else None
        keys, size = growth(key, was, None if new is None else new.value)
        if keys or size:
            for totals in (self.state.growth, self.rec.growth):
                total = totals.setdefault(ns, [0, 0])
                total[0] += keys
                total[1] += size

    def rollback(self, *, keep_reads: bool) -> None:
        """Undo this operation's writes to the segment's state (it missed or refused).

        Kept with the reads, for an operation that refused: its decisions that a write
        would be over its quota, which its refusal rests on as much as on what it read.
        """
        rec = self.rec
        state = self.state
        overlay = state.overlay
        for slot, before in rec.undo.items():
            if before is None:
                overlay.pop(slot, None)
            else:
                overlay[slot] = before
        if rec.cleared is not None:
            state.cleared = rec.cleared
        for ns, (keys, size) in rec.growth.items():
            total = state.growth[ns]
            total[0] -= keys
            total[1] -= size
        rec.growth.clear()
        rec.undo.clear()
        rec.writes.clear()
        rec.cleared = rec.clear = None
        rec.quotas_at = 0
        if keep_reads:
            rec.quotas = [q for q in rec.quotas if q[0] == b"O"]
        else:
            rec.reads.clear()
            rec.quotas = []

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
        mode = b"S"
        # The same bytes object as the key's current value means an expiry change (EXPIRE,
        # EXTEND, GETEX): only the header and the expiry go to Redis.
        if current is not None and entry.value is current.value:
            previous = rec.writes.get(slot)
            if previous[0] == b"M" if previous else head:
                mode = b"M"
        new_head = HEADER.pack(entry.kind, entry.expires_at, entry.version, self.stamp())
        overlay = self.state.overlay
        before = overlay.get(slot)
        rec.undo.setdefault(slot, before)
        overlay[slot] = Written(entry, new_head, before.created if before else not head)
        rec.writes[slot] = (mode, entry, new_head)
        if self.metered:
            self._grow(ns, key, current, entry)

    def delete(self, ns: str, key: bytes, now: int) -> bool:
        """Remember the removal; True when a live entry was removed."""
        slot = (ns, key)
        head, current = self._touch(slot)
        if not head:
            return False
        self._overlay(slot, Written(None, b"", created=False))
        self.rec.writes[slot] = (b"D", None, b"")
        self._grow(ns, key, current, None)
        return current is not None and current.expires_at > now

    def scan(
        self, ns: str, cursor: int, count: int, now: int
    ) -> tuple[int, list[tuple[bytes, Entry]]]:
        """A page of the namespace's key order, with this batch's writes applied."""
        state = self.state
        if ns in state.cleared:
            return 0, self._written_live(ns, now, set(), count)
        page = state.pages.get((ns, cursor, count))
        if page is None:
            raise Miss(page=(ns, cursor, count))
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
        """Live keys: the index's count, corrected by this batch's writes."""
        state = self.state
        if ns in state.cleared:
            return len(self._written_live(ns, now, set(), len(state.overlay)))
        n = state.counts.get(ns)
        if n is None:
            raise Miss(count=ns)
        for slot, written in state.overlay.items():
            if slot[0] != ns:
                continue
            base = state.base.get(slot)
            if base is None:
                raise Miss(keys=(slot,))
            was = base[1] is not None and base[1].expires_at > now
            entry = written.entry
            n += (entry is not None and entry.expires_at > now) - was
        return n

    def clear(self, ns: str) -> None:
        """Remember that the namespace is emptied: later reads see only later writes.

        Quotas after a clear inside MULTI are decided by :class:`~stashd.ops.Undoable`,
        which counts what the cleared namespace holds itself; they never reach here.
        """
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
        rec.quotas_at = len(rec.quotas)

    def check_quota(self, ns: str, add_keys: int, add_bytes: int, quota: Quota) -> None:
        """Decide with :func:`stashd.quota.check` on the fetched usage; APPLY checks it again.

        The decision is recorded either way: that the write fits, or (raised) that it is
        over, after a fetch that first freed expired keys of the namespace. The commit
        then compares the same growth with the usage in Redis at that moment, and an
        operation whose decision would come out otherwise runs again.
        """
        state = self.state
        held = self._held(ns)
        grown = state.growth.get(ns, (0, 0))
        mine = self.rec.growth.get(ns, (0, 0))
        limits = caps(add_keys, add_bytes, quota)
        # What APPLY adds to Redis's usage: this operation's earlier writes, then this one.
        decision = (mine[0] + add_keys, mine[1] + add_bytes, *limits)
        try:
            check(held[0] + grown[0], held[1] + grown[1], add_keys, add_bytes, quota)
        except QuotaExceeded:
            if ns not in state.freed:
                raise Miss(usage=ns, free=True) from None
            self.rec.quotas.append((b"O", *decision))
            raise
        self.rec.quotas.append((b"F", *decision))

    def usage(self, ns: str, now: int) -> tuple[int, int]:  # noqa: ARG002 - part of View
        """The namespace's usage as fetched, plus what this segment's writes add."""
        held = self._held(ns)
        grown = self.state.growth.get(ns, (0, 0))
        return held[0] + grown[0], held[1] + grown[1]

    def _held(self, ns: str) -> tuple[int, int]:
        """The namespace's usage as fetched, or a Miss to fetch it."""
        if not self.metered:
            # Writes before were not counted: an operation read a usage it did not declare.
            msg = "an operation read a namespace's usage it did not declare (Op.usage_read)"
            raise RuntimeError(msg)
        held = self.state.usage.get(ns)
        if held is None:
            raise Miss(usage=ns)
        return held
