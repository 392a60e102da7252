"""Rate limits kept in Redis: one GCRA per subject, one script, Redis's clock for every node.

Each check is one EVALSHA of :data:`GCRA`, which reads Redis ``TIME``, computes how many
of the requests asked about (each with its cost in units) fit under the subject's
theoretical arrival time (TAT), and stores the new TAT, atomically. Every stashd node on
one Redis therefore applies one limit with one clock: a client spreading its requests
over many nodes gets no more than it would from one.

The daemon never waits on Redis inside a callback: :meth:`RedisLimiter.request` queues
the question, every question of one turn of the event loop goes out as one round (one
pipelined write), and each connection's commands wait for their answer as they wait
for a batch. A connection asks once per read about the requests the read brought.
Debts (:meth:`RedisLimiter.charge`: work learned after a request ran) go out in the
same rounds and are waited for by nobody.

When Redis cannot be reached the limiter answers from a :class:`LocalLimiter` in this
process, so limits hold per node instead of not at all, and logs it once; the commands
themselves then fail with UNAVAILABLE anyway if they need the store.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from stashd import log
from stashd.ratelimit import Decision, Grant, LocalLimiter
from stashd.redislink import LinkError, ReplyError, Script, async_link, round_with_scripts
from stashd.store.redis.layout import key_prefix

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from stashd.ratelimit import Rate
    from stashd.redislink import AsyncLink
    from stashd.redistarget import RedisTarget

logger = log.get("stashd.ratelimit")

GCRA: Final = Script("""
-- GCRA on Redis's clock, the rule of stashd.ratelimit.step. KEYS[1]: the subject's TAT
-- (ms, as text). ARGV: interval ms between units at the sustained rate, burst, 'take'
-- or 'charge', then the cost in units of each request, in order. 'take' grants the
-- requests in order while each fits (a cost over the burst fits once the whole burst is
-- left, and moves the TAT on by all of it); 'charge' counts them all, refusing nothing.
-- Stores the new TAT with an expiry at which it would lie in the past anyway.
-- Returns {granted, retry after ms (for the first refused), remaining, reset ms}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tolerance = interval * burst
local charge = ARGV[3] == 'charge'
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then
  tat = now
end
local granted = 0
local retry = 0
for i = 4, #ARGV do
  local cost = tonumber(ARGV[i])
  local need = math.min(cost, burst) * interval
  if not charge and tat - now + need > tolerance + 1e-6 then
    retry = math.max(1, math.ceil(tat + need - tolerance - now))
    break
  end
  tat = tat + cost * interval
  granted = granted + 1
end
if granted > 0 then
  local ttl = math.max(1, math.ceil(tat - now))
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', ttl)
end
local remaining = math.max(0, math.floor((tolerance - (tat - now)) / interval + 1e-9))
return {granted, retry, remaining, math.ceil(tat - now)}
""")


def rate_key(subject: str) -> bytes:
    """``stash:rate:{<subject>}``: the subject's TAT, hash-tagged like its namespace."""
    return b"stash:rate:" + key_prefix(subject)[5:-1]


def grant_of(reply: list[Any], wanted: int) -> Grant:
    """GCRA's reply, for ``wanted`` requests asked about, as a grant."""
    granted, retry, remaining, reset = (int(x) for x in reply)
    decision = Decision(granted >= wanted, retry, remaining, max(0, reset))
    return Grant(granted, decision)


class RedisLimiter:
    """Rate limits in Redis; see the module docstring."""

    #: Asked without blocking the loop; the answer comes through a callback.
    shared = True

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self._link: AsyncLink | None = None
        # Questions and debts of this turn of the loop; a debt has no callback.
        self._queue: list[tuple[str, Rate, Sequence[int], Callable[[Grant], None] | None]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._fallback = LocalLimiter()
        self._degraded = False

    def request(
        self, subject: str, rate: Rate, costs: Sequence[int], done: Callable[[Grant], None]
    ) -> None:
        """Queue the question; the loop turn's questions go to Redis in one round."""
        self._put((subject, rate, costs, done))

    async def take(self, subject: str, rate: Rate, costs: Sequence[int] = (1,)) -> Grant:
        """Ask and wait for the grant."""
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()

        def done(grant: Grant) -> None:
            if not future.done():
                future.set_result(grant)

        self.request(subject, rate, costs, done)
        return await future

    def charge(self, subject: str, rate: Rate, cost: int) -> None:
        """Queue a debt of ``cost`` units; it goes out with the loop turn's questions."""
        if cost > 0:
            self._put((subject, rate, (cost,), None))

    def _put(self, item: tuple[str, Rate, Sequence[int], Callable[[Grant], None] | None]) -> None:
        self._queue.append(item)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._queue = self._queue, []
        if batch:
            task = asyncio.get_running_loop().create_task(self._ask(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _ask(
        self, batch: list[tuple[str, Rate, Sequence[int], Callable[[Grant], None] | None]]
    ) -> None:
        """One round for the batch's questions; every question is answered, whatever happens.

        A debt Redis did not take is kept by this process's own limiter instead.
        """
        try:
            replies = await self._round(batch)
        except Exception:  # a bug must not leave connections waiting for good
            logger.exception("rate_limit_round_failed")
            replies = None
        for i, (subject, rate, costs, done) in enumerate(batch):
            reply = None if replies is None else replies[i]
            if reply is None or isinstance(reply, ReplyError):
                if done is None:
                    self._fallback.charge(subject, rate, sum(costs))
                else:
                    done(self._local(subject, rate, costs))
            elif done is not None:
                done(grant_of(reply, len(costs)))

    async def _round(
        self, batch: list[tuple[str, Rate, Sequence[int], Callable[[Grant], None] | None]]
    ) -> list[Any] | None:
        """GCRA for each question, in one round; None when Redis cannot be reached."""
        if self._link is None:
            self._link = async_link(self.target, [GCRA])
        commands = [
            GCRA.call(
                [rate_key(subject)],
                [repr(rate.interval_ms), rate.burst, "take" if done else "charge", *costs],
            )
            for subject, rate, costs, done in batch
        ]
        try:
            replies = await round_with_scripts(self._link, commands)
        except LinkError as exc:
            if not self._degraded:
                logger.warning("rate_limits_per_node", redis=self.target.display(), error=str(exc))
            self._degraded = True
            return None
        if self._degraded:
            logger.info("rate_limits_shared_again", redis=self.target.display())
        self._degraded = False
        return replies

    def _local(self, subject: str, rate: Rate, costs: Sequence[int]) -> Grant:
        """The grant of this process's own limiter, asked one request at a time."""
        decision = Decision(True, 0, 0, 0)
        for granted, cost in enumerate(costs):
            decision = self._fallback.acquire(subject, rate, cost)
            if not decision.allowed:
                return Grant(granted, decision)
        return Grant(len(costs), decision)

    async def aclose(self) -> None:
        """Close the link once questions in flight are answered."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        link, self._link = self._link, None
        if link is not None:
            await link.close()
