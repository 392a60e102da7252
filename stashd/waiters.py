"""Clients blocked on list keys (BLPOP and its kin), woken when a write to one commits.

One registry per node: each waiter is registered under every (namespace, key) it
waits on, in arrival order, and keeps its place until its wait ends. A waiter pops
only from the keys it is first in line for (:meth:`Waiters.first`), so the client
that blocked first on a key is served first, as in Redis. The batcher calls
:meth:`Waiters.wake` after a write commits: the first waiter on each written key is
woken and retries its pop through the normal operation path; when a waiter leaves
(served, timed out, gone), the next in line on its keys is woken in turn, so a push of
several items serves as many waiters, one after the other.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stashd.ops import Op

Slot = tuple[str, bytes]


class Waiter:
    """One blocked client: the keys it waits on and the signal a write to one sets."""

    __slots__ = ("signal", "slots")

    def __init__(self, slots: Sequence[Slot]) -> None:
        self.slots = slots
        self.signal = asyncio.Event()


class Waiters:
    """Blocked clients by the keys they wait on, oldest first."""

    __slots__ = ("_by_slot", "_per_ns")

    def __init__(self) -> None:
        # A dict keeps insertion order, so iterating one key's waiters is FIFO.
        self._by_slot: dict[Slot, dict[Waiter, None]] = {}
        # Blocked clients per namespace (INFO's blocked_clients shows the caller's own,
        # as the other tenants' activity is not theirs to see).
        self._per_ns: dict[str, int] = {}

    def __bool__(self) -> bool:
        """Whether anyone waits (False: nothing to wake, the writer's fast path)."""
        return bool(self._by_slot)

    def blocked(self, ns: str) -> int:
        """How many clients of ``ns`` are waiting now."""
        return self._per_ns.get(ns, 0)

    def add(self, slots: Sequence[Slot]) -> Waiter:
        """A waiter signalled at each committed write to any of ``slots``."""
        waiter = Waiter(slots)
        ns = slots[0][0]
        self._per_ns[ns] = self._per_ns.get(ns, 0) + 1
        for slot in slots:
            self._by_slot.setdefault(slot, {})[waiter] = None
        return waiter

    def oldest(self, waiter: Waiter) -> bool:
        """Whether ``waiter`` has waited longest on one of its keys."""
        by_slot = self._by_slot
        return any(next(iter(by_slot[slot])) is waiter for slot in waiter.slots)

    def first(self, waiter: Waiter, slot: Slot) -> bool:
        """Whether ``waiter`` is first in line on ``slot``: the one a pop there serves."""
        waiting = self._by_slot.get(slot)
        return waiting is not None and next(iter(waiting)) is waiter

    def remove(self, waiter: Waiter) -> None:
        """Forget a waiter (served, timed out or disconnected), so none is left behind."""
        ns = waiter.slots[0][0]
        left = self._per_ns.get(ns, 0) - 1
        if left > 0:
            self._per_ns[ns] = left
        else:
            self._per_ns.pop(ns, None)
        for slot in waiter.slots:
            waiting = self._by_slot.get(slot)
            if waiting is None:
                continue
            was_first = next(iter(waiting)) is waiter
            waiting.pop(waiter, None)
            if not waiting:
                del self._by_slot[slot]
            elif was_first:
                # The next in line may pop now: an item left after this one's pop, or
                # one this waiter never took (it timed out or went away).
                next(iter(waiting)).signal.set()

    def wake(self, op: Op) -> None:
        """Signal the first waiter on each key a committed write touched."""
        by_slot = self._by_slot
        for slot in op.slots():
            waiting = by_slot.get(slot)
            if waiting is not None:
                next(iter(waiting)).signal.set()
