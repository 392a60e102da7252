"""Group commit: what every caller asked for in one turn of the loop runs as one batch.

A store that does I/O (SQLite, Redis) cannot afford one round trip per command, so the
RESP connections, the HTTP handlers and the embedded async client all hand their
operations to one :class:`Batcher` per store. It runs one batch at a time; whatever
arrives meanwhile forms the next one. Each caller gets its own slice of the results only
after the batch has returned, which for SQLite means after its commit: an acknowledged
write is a durable write. On an inline store (memory) operations simply run at once,
and so do reads on a store that answers them at once (SQLite).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from stashd import log
from stashd.errors import StashError, StoreUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.ops import Op
    from stashd.store.base import Store

logger = log.get("stashd.batch")


class Batcher:
    """Gathers operations from every caller in one loop turn and runs them as one batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._ops: list[Op] = []
        self._waiters: list[tuple[int, int, Callable[[list[Any]], None]]] = []
        self._scheduled = False
        self._running: asyncio.Task[None] | None = None

    def submit(self, ops: list[Op], done: Callable[[list[Any]], None]) -> None:
        """Queue ``ops``; ``done(results)`` is called once their batch has returned.

        A result is the operation's value or its :class:`StashError`, in order.
        """
        start = len(self._ops)
        self._ops.extend(ops)
        self._waiters.append((start, len(self._ops), done))
        if not self._scheduled and self._running is None:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start)

    async def run_many(self, ops: list[Op]) -> list[Any]:
        """Await the results of ``ops`` (values or :class:`StashError`), batched with others."""
        store = self.store
        if store.inline:
            return await store.run_many(ops)
        if store.inline_reads and not any(op.writes for op in ops):
            return [_read_now(store, op) for op in ops]
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()

        def done(results: list[Any]) -> None:
            if not future.done():
                future.set_result(results)

        self.submit(ops, done)
        return await future

    async def run(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result
        """Await one operation's result; its :class:`StashError` is raised."""
        if self.store.inline:
            return self.store.run(op)
        if self.store.inline_reads and not op.writes:
            return self.store.read_now(op)
        (result,) = await self.run_many([op])
        if isinstance(result, StashError):
            raise result
        return result

    def _start(self) -> None:
        self._scheduled = False
        if self._running is not None or not self._ops:
            return
        ops, waiters = self._ops, self._waiters
        self._ops, self._waiters = [], []
        self._running = asyncio.get_running_loop().create_task(self._run(ops, waiters))

    async def _run(
        self, ops: list[Op], waiters: list[tuple[int, int, Callable[[list[Any]], None]]]
    ) -> None:
        try:
            results = await self.store.run_many(ops)
        except Exception as exc:
            # The store itself failed (disk gone, Redis down): every caller in the batch
            # gets a clear error instead of a hang, and the next batch tries again.
            logger.exception("batch_failed", operations=len(ops))
            results = [StoreUnavailable(type(exc).__name__)] * len(ops)
        finally:
            self._running = None
        for start, stop, done in waiters:
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


def _read_now(store: Store, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result
    """A read answered at once, its error as its result (as in a batch)."""
    try:
        return store.read_now(op)
    except StashError as exc:
        return exc
