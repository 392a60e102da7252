"""Clients blocked on list keys (BLPOP and its kin), woken when a write to one commits.

One registry per node: each waiter is a future registered under every (namespace, key)
it waits on, in arrival order. The batcher calls :meth:`Waiters.wake` after a write
commits; every waiter on a written key is woken, oldest first, and retries its pop
through the normal operation path, so one that loses the race simply waits again.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stashd.ops import Op

Slot = tuple[str, bytes]


class Waiters:
    """Futures of blocked clients by the keys they wait on, oldest first."""

    __slots__ = ("_by_slot",)

    def __init__(self) -> None:
        # A dict keeps insertion order, so iterating one key's waiters is FIFO.
        self._by_slot: dict[Slot, dict[asyncio.Future[None], None]] = {}

    def __len__(self) -> int:
        """How many keys have a waiter (0: nothing to wake, the writer's fast path)."""
        return len(self._by_slot)

    def add(self, slots: Iterable[Slot]) -> asyncio.Future[None]:
        """A future woken at the next committed write to any of ``slots``."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for slot in slots:
            self._by_slot.setdefault(slot, {})[future] = None
        return future

    def remove(self, future: asyncio.Future[None], slots: Iterable[Slot]) -> None:
        """Forget a waiter (woken, timed out or disconnected), so none is left behind."""
        for slot in slots:
            waiting = self._by_slot.get(slot)
            if waiting is None:
                continue
            waiting.pop(future, None)
            if not waiting:
                del self._by_slot[slot]

    def wake(self, op: Op) -> None:
        """Wake, oldest first, whoever waits on a key a committed write touched."""
        by_slot = self._by_slot
        for slot in op.slots():
            waiting = by_slot.pop(slot, None)
            if waiting is None:
                continue
            for future in waiting:
                if not future.done():
                    future.set_result(None)
