"""Group commit: what every caller asked for in one turn of the loop runs as one batch.

A store that does I/O (SQLite, Redis) cannot afford one round trip per command, so the
RESP connections, the HTTP handlers and the embedded async client all hand their
operations to one :class:`Batcher` per store. It runs one batch at a time; whatever
arrives meanwhile forms the next one. Each caller gets its own slice of the results only
after the batch has returned, which for SQLite means after its commit: an acknowledged
write is a durable write. On an inline store (memory) operations simply run at once,
and so do small reads on a store that answers them at once (SQLite): :meth:`Batcher.now`
is the one place that decides, for every door.

It is also where every write is seen committed, so it notes the write events
(:mod:`stashd.events`) when the daemon logs them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final

from stashd import log
from stashd.errors import StashError, StoreUnavailable
from stashd.waiters import Waiters

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.events import WriteEvents
    from stashd.ops import Op
    from stashd.store.base import Store

logger = log.get("stashd.batch")

# A read that touches more keys than this goes to the batch (SQLite's thread) even when
# the store could answer it at once: MGET of 16,384 keys read on the loop takes 100 ms.
INLINE_READ_MAX: Final = 256

_Waiter = tuple[int, int, "Callable[[list[Any]], None]", "str | None"]


class Batcher:
    """Gathers operations from every caller in one loop turn and runs them as one batch.

    ``events`` notes every committed write (None: writes are not logged); ``blocked``
    holds the clients waiting for a write to a list (BLPOP), woken once one commits.
    """

    def __init__(self, store: Store, events: WriteEvents | None = None) -> None:
        self.store = store
        self.events = events
        self.blocked = Waiters()
        self._ops: list[Op] = []
        self._waiters: list[_Waiter] = []
        self._scheduled = False
        self._running: asyncio.Task[None] | None = None

    def now(self, op: Op, behind: bool = False) -> bool:
        """Whether ``op`` runs at once, on the loop, rather than in the next batch.

        Everything runs at once on an inline store (memory). A store that answers reads
        at once (SQLite) does so for a small read, unless the caller has operations of
        the same request still waiting in a batch (``behind``): its reply would then
        overtake theirs.
        """
        store = self.store
        return store.inline or (
            store.inline_reads and not behind and not op.writes and op.size <= INLINE_READ_MAX
        )

    def run_now(self, op: Op, door: str | None = None) -> Any:  # noqa: ANN401 - its own result
        """Run an operation :meth:`now` allows on the loop; a refusal is raised."""
        store = self.store
        result = store.run(op) if store.inline else store.read_now(op)
        if op.writes:
            if self.events is not None:
                self.events.note(op, result, door)
            if self.blocked:
                self.blocked.wake(op)
        return result

    def submit(
        self, ops: list[Op], done: Callable[[list[Any]], None], door: str | None = None
    ) -> None:
        """Queue ``ops``; ``done(results)`` is called once their batch has returned.

        A result is the operation's value or its :class:`StashError`, in order.
        """
        start = len(self._ops)
        self._ops.extend(ops)
        self._waiters.append((start, len(self._ops), done, door))
        if not self._scheduled and self._running is None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    async def run_many(self, ops: list[Op], door: str | None = None) -> list[Any]:
        """Await the results of ``ops`` (values or :class:`StashError`), batched with others."""
        if all(self.now(op) for op in ops):
            return [self._result_now(op, door) for op in ops]
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def done(results: list[Any]) -> None:
            if not future.done():
                future.set_result(results)

        self.submit(ops, done, door)
        return await future

    async def run(self, op: Op, door: str | None = None) -> Any:  # noqa: ANN401 - its own result
        """Await one operation's result; its :class:`StashError` is raised."""
        if self.now(op):
            return self.run_now(op, door)
        (result,) = await self.run_many([op], door)
        if isinstance(result, StashError):
            raise result
        return result

    def _result_now(self, op: Op, door: str | None) -> Any:  # noqa: ANN401 - its own result
        """An operation run at once, its refusal as its result (as in a batch)."""
        try:
            return self.run_now(op, door)
        except StashError as exc:
            return exc

    def _start(self) -> None:
        self._scheduled = False
        if self._running is not None or not self._ops:
            return
        ops, waiters = self._ops, self._waiters
        self._ops, self._waiters = [], []
        self._running = asyncio.get_running_loop().create_task(self._run(ops, waiters))

    async def _run(self, ops: list[Op], waiters: list[_Waiter]) -> None:
        try:
            results = await self.store.run_many(ops)
        except Exception as exc:
            # The store itself failed (disk gone, Redis down): every caller in the batch
            # gets a clear error instead of a hang, and the next batch tries again.
            logger.exception("batch_failed", operations=len(ops))
            results = [StoreUnavailable(type(exc).__name__)] * len(ops)
        finally:
            self._running = None
        events, blocked = self.events, self.blocked
        for start, stop, done, door in waiters:
            if events is not None or blocked:
                for i in range(start, stop):
                    op = ops[i]
                    if op.writes and not isinstance(results[i], StashError):
                        if events is not None:
                            events.note(op, results[i], door)
                        if blocked:
                            blocked.wake(op)
            try:
                done(results[start:stop])
            except Exception:
                # One caller's failure to take its answer must not keep the batch's other
                # callers waiting for theirs.
                logger.exception("batch_callback_failed")
        if self._ops:
            self._start()

    async def drain(self) -> None:
        """Wait until nothing is queued or running (shutdown)."""
        while self._running is not None or self._ops:
            if self._running is not None:
                with contextlib.suppress(Exception):
                    await self._running
            else:
                self._start()
