"""Rate limits: a GCRA per subject, behind one small interface a shared limiter can replace.

GCRA (the generic cell rate algorithm) keeps one number per subject, the theoretical
arrival time (TAT) of its next request, and so needs no timer and no queue. A rate of
``limit`` units per ``period`` spaces units ``period / limit`` apart; ``burst`` units may
be spent at once. A request costs one unit or more (:mod:`stashd.cost` says how many):

- it may run when its cost fits in what is left of the burst, and a cost larger than
  the burst fits once the whole burst is left: then the TAT moves on by the whole
  cost, past the burst, and later requests wait until it is back within it;
- work learned only after a request ran is *charged* (:meth:`LocalLimiter.charge`):
  the TAT moves on by it without refusing anything, a debt that later requests wait off.

The limiter answers with a :class:`Decision` carrying everything the doors report:
RESP's ``-RATELIMIT ... retry after N ms`` and HTTP's ``Retry-After``, ``RateLimit``
and ``RateLimit-Policy`` fields. A deployment with many nodes swaps in a limiter that
keeps the TAT in shared storage with one clock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

_UNITS: Final = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
}
_RATE: Final = re.compile(r"^\s*(\d+)\s*/\s*([a-z]+)\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` units per ``period_s`` seconds, with up to ``burst`` at once."""

    limit: int
    period_s: int
    burst: int
    #: Milliseconds between units at the sustained rate, and how far the TAT may run
    #: ahead of now (a whole burst): worked out once, since every metered request uses them.
    interval_ms: float = field(init=False, repr=False, compare=False)
    tolerance_ms: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Refuse rates that cannot be enforced, naming the value."""
        if self.limit <= 0 or self.period_s <= 0:
            msg = f"rate must be positive, got {self.limit}/{self.period_s}s"
            raise ValueError(msg)
        if self.burst <= 0:
            msg = f"burst must be at least 1, got {self.burst}"
            raise ValueError(msg)
        interval = self.period_s * 1000 / self.limit
        object.__setattr__(self, "interval_ms", interval)
        object.__setattr__(self, "tolerance_ms", interval * self.burst)

    @classmethod
    def parse(cls, text: str, burst: int | None = None) -> Rate:
        """``"600/min"`` (units s, min, h) and an optional burst (default: one period's worth)."""
        match = _RATE.match(text.lower())
        if match is None or match.group(2) not in _UNITS:
            msg = f"rate must look like 600/min, 10/s or 1000/h, got {text!r}"
            raise ValueError(msg)
        limit = int(match.group(1))
        return cls(limit, _UNITS[match.group(2)], limit if burst is None else burst)

    def __str__(self) -> str:
        unit = {1: "s", 60: "min", 3600: "h"}.get(self.period_s, f"{self.period_s}s")
        return f"{self.limit}/{unit} burst {self.burst}"


@dataclass(frozen=True, slots=True)
class Decision:
    """The limiter's answer for one request."""

    allowed: bool
    retry_after_ms: int  # 0 when allowed
    remaining: int  # requests that could still go through right now
    reset_ms: int  # until the subject is back to a full burst


class RateLimiter(Protocol):
    """Decides whether ``subject`` may spend ``cost`` more units at ``rate`` now."""

    #: False: it answers at once, in this process (a :class:`SharedLimiter` is asked).
    shared: bool

    def acquire(self, subject: str, rate: Rate, cost: int = 1) -> Decision:
        """Count the units if allowed; a refused request is not counted."""
        ...

    def wait_ms(self, subject: str, rate: Rate, cost: int = 1) -> int:
        """:meth:`acquire`'s answer as the wait alone: 0 when counted, else the ms to wait."""
        ...

    def charge(self, subject: str, rate: Rate, cost: int) -> None:
        """Count ``cost`` units of work already done, refusing nothing (a debt)."""
        ...

    async def aclose(self) -> None:
        """Release what it holds."""
        ...


@dataclass(frozen=True, slots=True)
class Grant:
    """How many of the requests asked about may run now, in order, and a decision.

    The decision is on the first request refused or, when all may run, on the last one.
    """

    granted: int
    decision: Decision


class SharedLimiter(Protocol):
    """A limiter whose state is elsewhere (Redis), asked without blocking the event loop.

    A connection asks once about the metered commands one read brought, giving each
    one's cost, and those commands wait for the answer as they wait for a batch; the
    first ``granted`` run, the rest are refused, as if each had been asked in turn.
    """

    #: True: its answers come later, through ``done`` (a :class:`RateLimiter`'s at once).
    shared: bool

    def request(
        self, subject: str, rate: Rate, costs: Sequence[int], done: Callable[[Grant], None]
    ) -> None:
        """Ask about requests of these costs, in order; ``done`` gets the grant, always."""
        ...

    async def take(self, subject: str, rate: Rate, costs: Sequence[int] = (1,)) -> Grant:
        """:meth:`request`, awaited."""
        ...

    def charge(self, subject: str, rate: Rate, cost: int) -> None:
        """Count ``cost`` units of work already done, refusing nothing; never waits."""
        ...

    async def aclose(self) -> None:
        """Release the connection."""
        ...


def monotonic_ms() -> float:
    """A clock that never goes back, for spacing requests."""
    return time.monotonic() * 1000


def step(tat: float, now: float, rate: Rate, cost: int) -> float | None:
    """GCRA's one rule: the TAT after spending ``cost`` units now, or None when they must wait.

    ``tat`` is the subject's TAT (``now`` or earlier for a subject with a full burst).
    A cost fits when the TAT, moved on by the cost, stays within the burst; a cost over
    the burst fits when the whole burst is left, and then moves the TAT on by all of it.
    """
    if tat < now:  # noqa: PLR1730 - every metered request comes here: cheaper than max()
        tat = now
    interval = rate.interval_ms
    burst = rate.burst
    need = cost if cost < burst else burst  # noqa: FURB136 - as above, cheaper than min()
    # The nanosecond of slack absorbs rounding in intervals such as 1000/3 ms.
    if tat - now + need * interval > rate.tolerance_ms + 1e-6:
        return None
    return tat + cost * interval


def decision(tat: float, now: float, rate: Rate, cost: int, new_tat: float | None) -> Decision:
    """What :func:`step` decided, in the terms the doors report."""
    interval = rate.interval_ms
    tolerance = rate.tolerance_ms
    tat = max(tat, now)
    if new_tat is None:
        wait = tat + min(cost, rate.burst) * interval - tolerance - now
        remaining = int((tolerance - (tat - now)) // interval)
        return Decision(False, max(1, int(wait + 0.999)), max(0, remaining), int(tat - now + 0.999))
    remaining = int((tolerance - (new_tat - now) + 1e-6) // interval)
    return Decision(True, 0, max(0, remaining), int(new_tat - now + 0.999))


class LocalLimiter:
    """GCRA in this process's memory: one TAT per subject.

    Subjects whose TAT lies in the past hold no state worth keeping (they are back to a
    full burst), so they are dropped when the table grows, which bounds its memory.
    """

    #: Table size that triggers dropping idle subjects.
    PRUNE_AT: Final = 10_000
    #: Answered here, at once.
    shared = False

    def __init__(self, clock: Callable[[], float] = monotonic_ms) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}

    def acquire(self, subject: str, rate: Rate, cost: int = 1) -> Decision:
        """Allow when the cost fits in the burst tolerance; otherwise say how long to wait."""
        now = self.clock()
        tat = self._tat.get(subject, now)
        new_tat = step(tat, now, rate, cost)
        if new_tat is not None:
            self._store(subject, new_tat, now)
        return decision(tat, now, rate, cost, new_tat)

    def wait_ms(self, subject: str, rate: Rate, cost: int = 1) -> int:
        """:meth:`acquire` for a door that needs only the wait: 0 when counted, else the ms.

        The RESP door asks this for every metered command, so it builds no decision.
        """
        now = self.clock()
        tats = self._tat
        tat = tats.get(subject, now)
        new_tat = step(tat, now, rate, cost)
        if new_tat is None:
            return decision(tat, now, rate, cost, None).retry_after_ms
        if subject in tats or len(tats) < self.PRUNE_AT:
            tats[subject] = new_tat
        else:
            self._store(subject, new_tat, now)
        return 0

    def charge(self, subject: str, rate: Rate, cost: int) -> None:
        """Move the subject's TAT on by ``cost`` units of work already done: a debt."""
        now = self.clock()
        self._store(subject, max(self._tat.get(subject, now), now) + cost * rate.interval_ms, now)

    async def aclose(self) -> None:
        """Nothing to release: the table is plain memory."""

    def _store(self, subject: str, tat: float, now: float) -> None:
        if len(self._tat) >= self.PRUNE_AT and subject not in self._tat:
            self._tat = {s: t for s, t in self._tat.items() if t > now}
        self._tat[subject] = tat
