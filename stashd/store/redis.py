"""The Redis store: entries in Redis or Valkey (one server or a cluster), shared by many nodes.

stashd nodes keep nothing of their own: any number of them can serve the same Redis,
and a load balancer may send each connection anywhere. How operations stay atomic
across nodes (run in Python against fetched state, committed by a server-side check)
and how entries are laid out is described in :mod:`stashd.store.redis_plan`; this module
drives those plans:

- :meth:`RedisStore.run_many` is the daemon's path. The batcher hands it everything all
  connections asked for in one turn of the loop, and the plan's rounds go over the
  event loop's link (:class:`~stashd.redislink.LeanLink`, or redis-py for a cluster):
  typically one round for GET and SET, two for other writes. Replies go out after the
  last round, so an acknowledged write is in Redis.
- :meth:`RedisStore.run` is the synchronous path for in-process use, over redis-py's
  thread-safe client; it needs no event loop and no :meth:`open`.

When Redis cannot be reached, or stops answering within the link's timeout, every
operation still waiting gets ``UNAVAILABLE`` with the cause, at once rather than after
a hang; the next batch connects again, so a Redis that comes back is used without
restarting anything. A write answered ``UNAVAILABLE`` because the connection broke
mid-round may or may not have been applied, as with any networked store.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from stashd.errors import StashError
from stashd.redislink import LinkError, RedisTarget
from stashd.store.base import Clock, Store, StoreOpenError, wall_clock_ms
from stashd.store.redis_plan import SCRIPTS, Plan, Stamps

if TYPE_CHECKING:
    from stashd.ops import Op
    from stashd.redislink import AsyncLink, SyncLink


class RedisStore(Store):
    """Entries in Redis; see the module docstring."""

    def __init__(self, target: RedisTarget, clock: Clock = wall_clock_ms) -> None:
        super().__init__(clock)
        self.target = target
        self.stamps = Stamps()
        self._link: AsyncLink | None = None
        self._sync: SyncLink | None = None
        self._sync_lock = threading.Lock()

    @classmethod
    def from_url(
        cls, url: str, *, cluster: bool = False, clock: Clock = wall_clock_ms
    ) -> RedisStore:
        """A store on the Redis named by ``url`` (see :meth:`RedisTarget.parse`)."""
        return cls(RedisTarget.parse(url, cluster=cluster), clock)

    # -- the batched path ----------------------------------------------------------------
    def _async_link(self) -> AsyncLink:
        link = self._link
        if link is None:
            link = self._link = self.target.async_link(SCRIPTS)
        return link

    async def open(self) -> None:
        """Connect and load the scripts now, so that an unreachable Redis fails the start."""
        try:
            await self._async_link().round([("PING",)])
        except LinkError as exc:
            await self.close()
            raise StoreOpenError(str(exc)) from None

    async def run_many(self, ops: list[Op]) -> list[Any]:
        """Run the batch's plan over the loop's link; results after the last round."""
        if not ops:
            return []
        plan = Plan(ops, self.clock, self.stamps)
        link = self._async_link()
        steps = plan.steps()
        try:
            commands = next(steps)
            while True:
                replies = await link.round(commands)
                if plan.noscript:
                    plan.noscript = False
                    await link.load_scripts()
                commands = steps.send(replies)
                if plan.backoff:
                    await asyncio.sleep(plan.backoff)
                    plan.backoff = 0.0
        except StopIteration as done:
            results: list[Any] = done.value
            return results
        except LinkError as exc:
            steps.close()
            return plan.abandon(str(exc))

    # -- the direct path -----------------------------------------------------------------
    def _sync_link(self) -> SyncLink:
        with self._sync_lock:
            link = self._sync
            if link is None:
                from stashd.redislink import SyncLink  # noqa: PLC0415 - imports redis-py

                link = self._sync = SyncLink(self.target, SCRIPTS)
            return link

    def run(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result type
        """Run one operation on the calling thread (redis-py); its error is raised."""
        plan = Plan([op], self.clock, self.stamps)
        link = self._sync_link()
        steps = plan.steps()
        try:
            commands = next(steps)
            while True:
                replies = link.round(commands)
                if plan.noscript:
                    plan.noscript = False
                    link.load_scripts()
                commands = steps.send(replies)
                if plan.backoff:
                    time.sleep(plan.backoff)
                    plan.backoff = 0.0
        except StopIteration as done:
            (result,) = done.value
        except LinkError as exc:
            steps.close()
            (result,) = plan.abandon(str(exc))
        if isinstance(result, StashError):
            raise result
        return result

    async def close(self) -> None:
        """Close the loop's link and the synchronous client."""
        link, self._link = self._link, None
        if link is not None:
            await link.close()
        with self._sync_lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()
