"""The Redis store: entries in Redis or Valkey (one server or a cluster), shared by many nodes.

stashd nodes keep nothing of their own: any number of them can serve the same Redis,
and a load balancer may send each connection anywhere. How operations stay atomic
across nodes (run in Python against fetched state, committed by a server-side check)
and how entries are laid out is described in :mod:`stashd.store.redis.plan`; this module
drives those plans:

- :meth:`RedisStore.run_many` is the daemon's path. The batcher hands it everything all
  connections asked for in one turn of the loop, and the plan's rounds go over the
  event loop's link (:class:`~stashd.redislink.LeanLink`, or redis-py for a cluster):
  one round for a batch of reads (GET, MGET), two (fetch, commit) for one with
  writes. Replies go out after the last round, so an acknowledged write is in Redis.
- :meth:`RedisStore.run` is the synchronous path for in-process use, over redis-py's
  thread-safe client; it needs no event loop and no :meth:`open`.

When Redis cannot be reached, or stops answering within the link's timeout, every
operation still waiting gets ``UNAVAILABLE`` with the cause, at once rather than after
a hang; the next batch connects again, so a Redis that comes back is used without
restarting anything. A write answered ``UNAVAILABLE`` because the connection broke
mid-round may or may not have been applied, as with any networked store.

Entries written before namespaces had an index (:mod:`stashd.store.redis.layout`) are
indexed once per Redis, before the store serves: :meth:`RedisStore.index_old_entries`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from stashd import log
from stashd.errors import StashError
from stashd.quota import entry_bytes
from stashd.redislink import LinkError, ReplyError, async_link, round_with_scripts_sync
from stashd.redistarget import RedisTarget
from stashd.store.base import Store, StoreOpenError
from stashd.store.redis.layout import ENTRY_PATTERN, INDEXED_MARK, decode, index_keys, prefix_of
from stashd.store.redis.lua import ADOPT, SCRIPTS
from stashd.store.redis.plan import Plan, Stamps
from stashd.types import Clock, wall_clock_ms

if TYPE_CHECKING:
    from stashd.ops import Op
    from stashd.redislink import AsyncLink, SyncLink

logger = log.get("stashd.store.redis")

#: Keys asked of each SCAN call, and at most read per round, when old entries are indexed.
ADOPT_CHUNK: Final = 500


class RedisStore(Store):
    """Entries in Redis; see the module docstring."""

    def __init__(self, target: RedisTarget, clock: Clock = wall_clock_ms) -> None:
        super().__init__(clock)
        self.target = target
        self.stamps = Stamps()
        self._link: AsyncLink | None = None
        self._sync: SyncLink | None = None
        self._sync_lock = threading.Lock()
        self._indexed = False  # old entries indexed (or found to be) by this store
        self._index_lock = threading.Lock()

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
            link = self._link = async_link(self.target, SCRIPTS)
        return link

    async def open(self) -> None:
        """Connect and load the scripts now, so that an unreachable Redis fails the start.

        Entries from before the index are indexed first (:meth:`index_old_entries`).
        """
        try:
            await self._async_link().round([("PING",)])
            await asyncio.to_thread(self._index_once)
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
                commands = steps.send(replies)
                if plan.noscript:  # Redis lost the scripts: load them before the next round
                    plan.noscript = False
                    await link.load_scripts()
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
            if not self._indexed:
                self._index_once()
            commands = next(steps)
            while True:
                replies = link.round(commands)
                commands = steps.send(replies)
                if plan.noscript:
                    plan.noscript = False
                    link.load_scripts()
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

    # -- entries from before the index -------------------------------------------------
    def _index_once(self) -> None:
        with self._index_lock:
            if not self._indexed:
                self.index_old_entries(self._sync_link())
                self._indexed = True

    def index_old_entries(self, link: SyncLink) -> int:
        """Index every entry written before namespaces had an index; how many it indexed.

        Runs once per Redis: a Redis marked :data:`INDEXED_MARK` is skipped at the cost
        of one EXISTS, and the mark is set when the walk is done. The walk is SCAN MATCH
        ``user:{*`` over the whole Redis (every primary of a cluster), reading entries
        :data:`ADOPT_CHUNK` at a time; each namespace's live entries are indexed by the
        ADOPT script, which leaves alone an entry indexed, changed or deleted meanwhile,
        so nodes starting at once, or serving while another walks, do no harm. Entries
        keep their SCAN order as found; their accounted bytes are worked out here
        (:func:`~stashd.quota.entry_bytes`), as for every write.
        """
        (marked,) = link.round([("EXISTS", INDEXED_MARK)])
        if isinstance(marked, ReplyError):
            raise LinkError(f"Redis refused EXISTS: {marked}")
        if marked:
            return 0
        started = time.monotonic()
        indexed = 0
        held: dict[bytes, list[bytes]] = {}  # prefix -> keys found, not indexed yet
        waiting = 0
        for key in link.scan_keys(ENTRY_PATTERN, ADOPT_CHUNK):
            prefix = prefix_of(key)
            if prefix is None:
                continue
            held.setdefault(prefix, []).append(key)
            waiting += 1
            if waiting >= ADOPT_CHUNK:
                indexed += self._adopt(link, held)
                held, waiting = {}, 0
        indexed += self._adopt(link, held)
        link.round([("SET", INDEXED_MARK, b"1")])
        logger.info(
            "redis_index_built", indexed=indexed, seconds=round(time.monotonic() - started, 3)
        )
        return indexed

    def _adopt(self, link: SyncLink, held: dict[bytes, list[bytes]]) -> int:
        """Read the entries of ``held`` in one round and index each namespace's in another."""
        groups = list(held.items())
        if not groups:
            return 0
        replies = link.round([("MGET", *keys) for _, keys in groups])
        now = self.clock()
        calls = []
        for (prefix, keys), values in zip(groups, replies, strict=True):
            if isinstance(values, ReplyError):
                raise LinkError(f"Redis refused MGET: {values}")
            entries: list[bytes] = []
            args: list[Any] = [len(prefix), now]
            for key, raw in zip(keys, values, strict=True):
                head, entry = decode(raw)
                if entry is not None and entry.expires_at > now:
                    entries.append(key)
                    args += (head, entry_bytes(key[len(prefix) :], entry.value), entry.expires_at)
            if entries:
                calls.append(ADOPT.call([*index_keys(prefix), *entries], args))
        done = round_with_scripts_sync(link, calls) if calls else []
        for reply in done:
            if isinstance(reply, ReplyError):
                raise LinkError(f"Redis refused to index old entries: {reply}")
        return sum(int(n) for n in done)

    async def close(self) -> None:
        """Close the loop's link and the synchronous client."""
        link, self._link = self._link, None
        if link is not None:
            await link.close()
        with self._sync_lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()
