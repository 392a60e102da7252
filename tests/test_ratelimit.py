"""The GCRA limiter: burst, refusal with an exact wait, recovery, isolation, parsing."""

from __future__ import annotations

import pytest

from stashd.ratelimit import LocalLimiter, Rate


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refusal_then_recovery_after_the_advertised_wait() -> None:
    """60/min burst 10: ten pass at once, the eleventh waits one second, then passes."""
    clock = Clock()
    limiter = LocalLimiter(clock)
    rate = Rate(60, 60, 10)
    decisions = [limiter.acquire("alice", rate) for _ in range(10)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == list(range(9, -1, -1))
    refused = limiter.acquire("alice", rate)
    assert not refused.allowed
    assert refused.retry_after_ms == 1000
    clock.now += 999
    assert not limiter.acquire("alice", rate).allowed
    clock.now += 1
    assert limiter.acquire("alice", rate).allowed
    assert not limiter.acquire("alice", rate).allowed


def test_subjects_are_independent_and_refusals_are_not_counted() -> None:
    """One user's flood does not slow another, and refused requests cost nothing."""
    clock = Clock()
    limiter = LocalLimiter(clock)
    rate = Rate(1, 1, 2)
    assert limiter.acquire("a", rate).allowed
    assert limiter.acquire("a", rate).allowed
    for _ in range(100):
        assert not limiter.acquire("a", rate).allowed
    assert limiter.acquire("b", rate).allowed
    clock.now += 1000
    assert limiter.acquire("a", rate).allowed


def test_idle_subjects_are_pruned() -> None:
    """The table does not grow without bound with many one-off subjects."""
    clock = Clock()
    limiter = LocalLimiter(clock)
    rate = Rate(1000, 1, 1)
    for i in range(LocalLimiter.PRUNE_AT + 10):
        limiter.acquire(f"s{i}", rate)
        clock.now += 1
    assert len(limiter._tat) < LocalLimiter.PRUNE_AT


def test_parse() -> None:
    """Rates read as people write them; nonsense names the value."""
    assert Rate.parse("600/min") == Rate(600, 60, 600)
    assert Rate.parse("10/s", burst=3) == Rate(10, 1, 3)
    assert str(Rate.parse("300/min", 50)) == "300/min burst 50"
    with pytest.raises(ValueError, match="got '5 per day'"):
        Rate.parse("5 per day")
    with pytest.raises(ValueError, match="burst must be at least 1, got 0"):
        Rate(1, 1, 0)
