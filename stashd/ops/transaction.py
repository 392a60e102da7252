"""MULTI/EXEC as one operation, and the undoable view its operations run on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stashd import log
from stashd.errors import (
    StashError,
    TransactionAborted,
)
from stashd.quota import check, growth

if TYPE_CHECKING:
    from stashd.types import Entry, Quota, View
from stashd.ops.base import (
    NO_WORK,
    Op,
    Slot,
    Touch,
)

logger = log.get("stashd.ops")


def snapshot(entry: Entry | None) -> tuple[bytes, int, int] | None:
    """What WATCH remembers of a key: any change to value, TTL or version differs from it."""
    return None if entry is None else (entry.value, entry.expires_at, entry.version)


class Transaction(Op):
    """MULTI/EXEC: WATCHed keys checked, then every queued operation, all in one atomic unit.

    The result is None when a watched key changed (nothing ran), else one result per
    operation, an operation's own error standing in its place as Redis does (no rollback:
    operations refuse before writing, so a refused one changed nothing).

    An operation that fails any other way (a bug) aborts the whole transaction: the
    writes of the operations before it are undone, the failure is logged, and the
    transaction's result is :class:`~stashd.errors.TransactionAborted`. This holds on
    every store alike, since the operations run on an :class:`Undoable` over the store's
    view. A failure of the store's view itself passes through untouched, for the store to
    handle as it handles any (a rolled-back batch, a key to fetch first).
    """

    __slots__ = ("ops", "watched")

    def __init__(
        self, ops: list[Op], watched: list[tuple[str, bytes, tuple[bytes, int, int] | None]]
    ) -> None:
        super().__init__("")
        self.ops = ops
        self.watched = watched
        self.writes = any(op.writes for op in ops)
        # Namespace-wide when one of its operations is; otherwise it reads the watched
        # keys and runs its operations on theirs.
        self.touch = Touch.SPACE if any(op.touch is Touch.SPACE for op in ops) else Touch.WRITE

    def slots(self) -> list[Slot]:
        """The watched keys, then those of each operation."""
        out = [(ns, key) for ns, key, _ in self.watched]
        for op in self.ops:
            out += op.slots()
        return out

    def usage_read(self) -> list[str]:
        """Those of each operation."""
        return [ns for op in self.ops for ns in op.usage_read()]

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - [result] | None | error
        """What its operations did, each by its own result."""
        if type(result) is not list:
            return NO_WORK
        entries = nbytes = 0
        for op, res in zip(self.ops, result, strict=True):
            e, b = op.work(res)
            entries += e
            nbytes += b
        return entries, nbytes

    def run(self, view: View, now: int) -> list[Any] | None:
        """Check, then run each; undo them all if one fails with a bug."""
        for ns, key, snap in self.watched:
            if snapshot(view.get(ns, key, now)) != snap:
                return None
        undoable = Undoable(view, now)
        results: list[Any] = []
        op: Op | None = None
        try:
            for op in self.ops:
                try:
                    results.append(op.run(undoable, now))
                except StashError as exc:
                    results.append(exc)
        except Exception as exc:
            if exc is undoable.fault:
                raise
            undoable.undo()
            logger.exception("transaction_aborted", operation=type(op).__name__)
            raise TransactionAborted(type(exc).__name__) from None
        undoable.commit()
        return results


class Undoable:
    """A view over a store's view that can take back every write made through it.

    Reads and writes go through to the store's view at once (operations see their own
    writes, and the store its usual calls), and the first write to each key remembers
    the live entry it replaced, so :meth:`undo` can put it back. A namespace cleared
    here is held apart instead: the store's view is cleared, and given what was written
    after, only at :meth:`commit`, so an undo never has to bring back a whole namespace.
    Quota checks and usage go to the store's view, which has seen every earlier write;
    a cleared namespace counts what it holds here instead (what :meth:`commit` writes).
    ``fault`` is the exception the store's view raised, if it raised one.
    """

    __slots__ = ("_cleared", "_held", "_now", "_prior", "_view", "fault")

    def __init__(self, view: View, now: int) -> None:
        self._view = view
        self._now = now
        self._prior: dict[Slot, Entry | None] = {}
        # Namespaces cleared here: what was written to each since, in SCAN order.
        self._cleared: dict[str, dict[bytes, Entry]] = {}
        # The [keys, bytes] each cleared namespace holds here, kept as it is written.
        self._held: dict[str, list[int]] = {}
        self.fault: BaseException | None = None

    def _remember(self, ns: str, key: bytes) -> None:
        slot = (ns, key)
        if slot not in self._prior:
            self._prior[slot] = self._view.get(ns, key, self._now)

    def get(self, ns: str, key: bytes, now: int) -> Entry | None:
        """The live entry, from the store or from what this cleared namespace holds."""
        space = self._cleared.get(ns)
        if space is not None:
            entry = space.get(key)
            return entry if entry is not None and entry.expires_at > now else None
        try:
            return self._view.get(ns, key, now)
        except BaseException as exc:
            self.fault = exc
            raise

    def put(self, ns: str, key: bytes, entry: Entry) -> None:
        """Write through, after remembering what the key held."""
        space = self._cleared.get(ns)
        if space is not None:
            old = space.get(key)
            self._count(ns, *growth(key, None if old is None else old.value, entry.value))
            space[key] = entry
            return
        try:
            self._remember(ns, key)
            self._view.put(ns, key, entry)
        except BaseException as exc:
            self.fault = exc
            raise

    def delete(self, ns: str, key: bytes, now: int) -> bool:
        """Delete through, after remembering what the key held."""
        space = self._cleared.get(ns)
        if space is not None:
            entry = space.pop(key, None)
            if entry is None:
                return False
            self._count(ns, *growth(key, entry.value, None))
            return entry.expires_at > now
        try:
            self._remember(ns, key)
            return self._view.delete(ns, key, now)
        except BaseException as exc:
            self.fault = exc
            raise

    def scan(
        self, ns: str, cursor: int, count: int, now: int
    ) -> tuple[int, list[tuple[bytes, Entry]]]:
        """The store's page; in a namespace cleared here, all it holds now, in one page."""
        space = self._cleared.get(ns)
        if space is not None:
            return 0, [(k, e) for k, e in space.items() if e.expires_at > now]
        try:
            return self._view.scan(ns, cursor, count, now)
        except BaseException as exc:
            self.fault = exc
            raise

    def count(self, ns: str, now: int) -> int:
        """The store's count, or what this cleared namespace holds."""
        space = self._cleared.get(ns)
        if space is not None:
            return sum(1 for e in space.values() if e.expires_at > now)
        try:
            return self._view.count(ns, now)
        except BaseException as exc:
            self.fault = exc
            raise

    def clear(self, ns: str) -> None:
        """Hold the namespace apart, empty, until :meth:`commit`."""
        self._cleared[ns] = {}
        self._held[ns] = [0, 0]

    def _count(self, ns: str, keys: int, size: int) -> None:
        held = self._held[ns]
        held[0] += keys
        held[1] += size

    def check_quota(self, ns: str, add_keys: int, add_bytes: int, quota: Quota) -> None:
        """The store's check; in a namespace cleared here, one against what it holds here."""
        held = self._held.get(ns)
        if held is not None:
            check(held[0], held[1], add_keys, add_bytes, quota)
            return
        try:
            self._view.check_quota(ns, add_keys, add_bytes, quota)
        except StashError:
            raise  # the operation's refusal, not a failure of the store's view
        except BaseException as exc:
            self.fault = exc
            raise

    def usage(self, ns: str, now: int) -> tuple[int, int]:
        """The store's usage, or what this cleared namespace holds."""
        held = self._held.get(ns)
        if held is not None:
            return held[0], held[1]
        try:
            return self._view.usage(ns, now)
        except BaseException as exc:
            self.fault = exc
            raise

    def undo(self) -> None:
        """Put back every key written through this view as it was; drop the cleared ones."""
        view = self._view
        for (ns, key), entry in self._prior.items():
            if entry is None:
                view.delete(ns, key, self._now)
            else:
                view.put(ns, key, entry)
        self._prior.clear()
        self._cleared.clear()
        self._held.clear()

    def commit(self) -> None:
        """Clear the namespaces cleared here in the store, and write what they hold now."""
        view = self._view
        for ns, space in self._cleared.items():
            view.clear(ns)
            for key, entry in space.items():
                view.put(ns, key, entry)
