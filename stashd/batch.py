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

An operation that may run long (a Lua script, ``Op.RUNS_LONG``) runs alone, after the
batch before it, on a thread of its own (the Lua engine lets go of the interpreter
while it runs), so the loop stays free: nothing else reaches the store meanwhile, and
once it has run past its ``busy_after_ms`` every request is answered ``-BUSY``, as
Redis answers them, until it ends; SCRIPT KILL, which needs no store, can stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, Final

from stashd import log
from stashd.errors import Busy, StashError, StoreUnavailable
from stashd.events import notifications
from stashd.waiters import Waiters

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.events import WriteEvents
    from stashd.ops import Op
    from stashd.pubsub import Hub
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

    def __init__(
        self, store: Store, events: WriteEvents | None = None, hub: Hub | None = None
    ) -> None:
        self.store = store
        self.events = events
        # Where committed writes are announced as keyspace notifications (None: nowhere).
        self.hub = hub
        self.blocked = Waiters()
        self._ops: list[Op] = []
        self._waiters: list[_Waiter] = []
        self._scheduled = False
        self._running: asyncio.Task[None] | None = None
        # The long operation running on its thread, and whether it is past its
        # busy_after_ms (requests are then answered BUSY).
        self._long: Op | None = None
        self._busy = False

    @property
    def exclusive(self) -> bool:
        """Whether a long operation holds the store: nothing else may touch it meanwhile."""
        return self._long is not None

    def now(self, op: Op, behind: bool = False) -> bool:
        """Whether ``op`` runs at once, on the loop, rather than in the next batch.

        Everything runs at once on an inline store (memory). A store that answers reads
        at once (SQLite) does so for a small read, unless the caller has operations of
        the same request still waiting in a batch (``behind``): its reply would then
        overtake theirs.
        """
        if self._long is not None or op.RUNS_LONG:
            return False  # it waits its turn, or is the long one itself
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
            hub = self.hub
            if hub is not None and hub.listening:
                self._notify(hub, op, result)
        return result

    def _notify(self, hub: Hub, op: Op, result: Any) -> None:  # noqa: ANN401 - its own result
        """Announce a committed write's keyspace notifications to its namespace, in order."""
        for ns, event, key in notifications(op, result, self.store.clock()):
            if hub.has_listeners(ns):
                hub.notify(ns, event, key)

    def submit(
        self, ops: list[Op], done: Callable[[list[Any]], None], door: str | None = None
    ) -> None:
        """Queue ``ops``; ``done(results)`` is called once their batch has returned.

        A result is the operation's value or its :class:`StashError`, in order.
        """
        if self._busy:
            busy = [Busy()] * len(ops)
            asyncio.get_running_loop().call_soon(done, busy)
            return
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
        loop = asyncio.get_running_loop()
        # A request of one long operation runs alone, once what came before it has run.
        cut = next(
            (
                i
                for i, (start, stop, _, _) in enumerate(waiters)
                if stop - start == 1 and ops[start].RUNS_LONG
            ),
            None,
        )
        if cut == 0:
            self._ops, self._waiters = ops[1:], _shifted(waiters[1:], 1)
            self._running = loop.create_task(self._run_long(ops[0], waiters[0]))
            return
        if cut is not None:
            end = waiters[cut][0]
            self._ops, self._waiters = ops[end:], _shifted(waiters[cut:], end)
            ops, waiters = ops[:end], waiters[:cut]
        else:
            self._ops, self._waiters = [], []
        self._running = loop.create_task(self._run(ops, waiters))

    async def _run_long(self, op: Op, waiter: _Waiter) -> None:
        """Run ``op`` alone on a thread; past its busy_after_ms, every request gets BUSY."""
        loop = asyncio.get_running_loop()
        self._long = op
        busy_after = op.busy_after_ms / 1000
        timer = loop.call_later(busy_after, self._become_busy) if busy_after > 0 else None
        try:
            try:
                result: Any = await asyncio.to_thread(self.store.run, op)
            except StashError as exc:
                result = exc
            except Exception as exc:
                logger.exception("batch_failed", operations=1)
                result = StoreUnavailable(type(exc).__name__)
        finally:
            if timer is not None:
                timer.cancel()
            self._long = None
            self._busy = False
            self._running = None
        self._answer([op], [result], [waiter])
        if self._ops:
            self._start()

    def _become_busy(self) -> None:
        """The long operation ran past its busy_after_ms: what waits for it is answered BUSY."""
        self._busy = True
        waiters = self._waiters
        self._ops, self._waiters = [], []
        for start, stop, done, _ in waiters:
            try:
                done([Busy()] * (stop - start))
            except Exception:
                logger.exception("batch_callback_failed")

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
        self._answer(ops, results, waiters)
        if self._ops:
            self._start()

    def _answer(self, ops: list[Op], results: list[Any], waiters: list[_Waiter]) -> None:
        """Note the committed writes, wake who waits on them, and hand each caller its part."""
        events, blocked, hub = self.events, self.blocked, self.hub
        for start, stop, done, door in waiters:
            if events is not None or blocked or hub is not None:
                for i in range(start, stop):
                    op = ops[i]
                    if op.writes and not isinstance(results[i], StashError):
                        if events is not None:
                            events.note(op, results[i], door)
                        if blocked:
                            blocked.wake(op)
                        if hub is not None and hub.listening:
                            self._notify(hub, op, results[i])
            try:
                done(results[start:stop])
            except Exception:
                # One caller's failure to take its answer must not keep the batch's other
                # callers waiting for theirs.
                logger.exception("batch_callback_failed")

    async def drain(self) -> None:
        """Wait until nothing is queued or running (shutdown)."""
        while self._running is not None or self._ops:
            if self._running is not None:
                with contextlib.suppress(Exception):
                    await self._running
            else:
                self._start()


def _shifted(waiters: list[_Waiter], by: int) -> list[_Waiter]:
    """Waiters whose operations moved ``by`` places toward the front of the queue."""
    return [(start - by, stop - by, done, door) for start, stop, done, door in waiters]
