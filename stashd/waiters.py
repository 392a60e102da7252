"""Clients blocked on list keys (BLPOP and its kin), woken when a write to one commits.

One registry per node: each waiter is registered under every (namespace, key) it
waits on, in arrival order, and keeps its place until its wait ends. The batcher
calls :meth:`Waiters.wake` after a write commits; every waiter on a written key is
woken, oldest first, and retries its pop through the normal operation path, so one
that loses the race simply waits again, still ahead of those who came later.
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
            waiting.pop(waiter, None)
            if not waiting:
                del self._by_slot[slot]

    def wake(self, op: Op) -> None:
        """Signal, oldest first, whoever waits on a key a committed write touched."""
        by_slot = self._by_slot
        for slot in op.slots():
            waiting = by_slot.get(slot)
            if waiting is not None:
                for waiter in waiting:
                    waiter.signal.set()
