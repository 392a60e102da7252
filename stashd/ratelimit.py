"""Rate limits: a GCRA per subject, behind one small interface a shared limiter can replace.

GCRA (the generic cell rate algorithm) keeps one number per subject, the theoretical
arrival time (TAT) of its next request, and so needs no timer and no queue. A rate of
``limit`` per ``period`` spaces requests ``period / limit`` apart; ``burst`` requests may
arrive at once. The limiter answers with a :class:`Decision` carrying everything the
doors report: RESP's ``-RATELIMIT ... retry after N ms`` and HTTP's ``Retry-After``,
``RateLimit`` and ``RateLimit-Policy`` fields. A deployment with many nodes swaps in a
limiter that keeps the TAT in shared storage with one clock.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

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
    """``limit`` requests per ``period_s`` seconds, with up to ``burst`` at once."""

    limit: int
    period_s: int
    burst: int

    def __post_init__(self) -> None:
        """Refuse rates that cannot be enforced, naming the value."""
        if self.limit <= 0 or self.period_s <= 0:
            msg = f"rate must be positive, got {self.limit}/{self.period_s}s"
            raise ValueError(msg)
        if self.burst <= 0:
            msg = f"burst must be at least 1, got {self.burst}"
            raise ValueError(msg)

    @property
    def interval_ms(self) -> float:
        """Milliseconds between requests at the sustained rate."""
        return self.period_s * 1000 / self.limit

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
    """Decides whether ``subject`` may make ``cost`` more requests at ``rate`` now."""

    def acquire(self, subject: str, rate: Rate, cost: int = 1) -> Decision:
        """Count the requests if allowed; a refused request is not counted."""
        ...


@dataclass(frozen=True, slots=True)
class Grant:
    """How many of the requests asked for may run now, in order, and a decision.

    The decision is on the first request refused or, when all may run, on the last one.
    """

    granted: int
    decision: Decision


class SharedLimiter(Protocol):
    """A limiter whose state is elsewhere (Redis), asked without blocking the event loop.

    A connection asks once for all the metered commands one read brought, and those
    commands wait for the answer as they wait for a batch; the first ``granted`` run,
    the rest are refused, as if each had been asked in turn.
    """

    def request(self, subject: str, rate: Rate, wanted: int, done: Callable[[Grant], None]) -> None:
        """Ask for ``wanted`` requests; ``done`` is called with the grant, always."""
        ...

    async def take(self, subject: str, rate: Rate, wanted: int = 1) -> Grant:
        """:meth:`request`, awaited."""
        ...

    async def aclose(self) -> None:
        """Release the connection."""
        ...


def monotonic_ms() -> float:
    """A clock that never goes back, for spacing requests."""
    return time.monotonic() * 1000


class LocalLimiter:
    """GCRA in this process's memory: one TAT per subject.

    Subjects whose TAT lies in the past hold no state worth keeping (they are back to a
    full burst), so they are dropped when the table grows, which bounds its memory.
    """

    #: Table size that triggers dropping idle subjects.
    PRUNE_AT: Final = 10_000

    def __init__(self, clock: Callable[[], float] = monotonic_ms) -> None:
        self.clock = clock
        self._tat: dict[str, float] = {}

    def acquire(self, subject: str, rate: Rate, cost: int = 1) -> Decision:
        """Allow when the request fits in the burst tolerance; otherwise say how long to wait."""
        now = self.clock()
        interval = rate.interval_ms
        tolerance = interval * rate.burst  # how far the TAT may run ahead of now
        tat = max(self._tat.get(subject, now), now)
        new_tat = tat + interval * cost
        if new_tat - now > tolerance:
            wait = new_tat - tolerance - now
            remaining = int((tolerance - (tat - now)) // interval)
            return Decision(
                False, max(1, int(wait + 0.999)), max(0, remaining), int(tat - now + 0.999)
            )
        if len(self._tat) >= self.PRUNE_AT and subject not in self._tat:
            self._prune(now)
        self._tat[subject] = new_tat
        remaining = int((tolerance - (new_tat - now)) // interval)
        return Decision(True, 0, max(0, remaining), int(new_tat - now + 0.999))

    def _prune(self, now: float) -> None:
        self._tat = {s: t for s, t in self._tat.items() if t > now}
