"""Leases on every backend: one owner at a time, fencing tokens that only grow, owners checked."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stashd.errors import InvalidRequest, TTLNotPositive, WrongType
from stashd.ops import TOKENS_PER_MS
from stashd.types import Kind, Quota
from tests.support.door import MAX_TTL_MS, T0, Door

if TYPE_CHECKING:
    from tests.support.backends import Backend
    from tests.support.clock import Clock


def _clock(backend: Backend) -> Clock:
    clock = backend.store.clock
    assert hasattr(clock, "now")
    return clock  # type: ignore[return-value]


def test_a_claim_takes_a_free_key_and_refuses_while_held(backend: Backend) -> None:
    """The first claim gets a token; any other claim, the owner's too, gets nil while held."""
    door = Door(backend)
    token = door.call(b"LEASE", b"CLAIM", b"task:1", b"w1", b"30")
    assert token == T0 * TOKENS_PER_MS
    assert door.call(b"LEASE", b"CLAIM", b"task:1", b"w2", b"30") is None
    assert door.call(b"LEASE", b"CLAIM", b"task:1", b"w1", b"30") is None
    assert door.call(b"TYPE", b"task:1") == "lease"
    assert door.entries()[b"task:1"][3] == Kind.LEASE
    info = door.call(b"LEASE", b"INFO", b"task:1")
    assert info == {b"owner": b"w1", b"token": token, b"pttl": 30_000}


def test_tokens_grow_across_release_and_claim(backend: Backend) -> None:
    """A claim right after a release, in the same millisecond, gets a larger token."""
    door = Door(backend)
    tokens = []
    for _ in range(5):
        token = door.call(b"LEASE", b"CLAIM", b"k", b"w", b"10")
        assert isinstance(token, int)
        tokens.append(token)
        assert door.call(b"LEASE", b"RELEASE", b"k", b"w", str(token).encode()) == 1
    assert tokens == sorted(set(tokens))
    assert door.call(b"LEASE", b"INFO", b"k")[b"owner"] is None


def test_tokens_grow_across_expiry_and_claim(backend: Backend) -> None:
    """Once a lease expired its entry is gone, and the next claim's token is still larger."""
    door = Door(backend)
    clock = _clock(backend)
    first = door.call(b"LEASE", b"CLAIM", b"k", b"w1", b"1")
    # Claims and releases in one millisecond push the token ahead of the clock.
    for _ in range(3):
        assert door.call(b"LEASE", b"RELEASE", b"k", b"w1", str(first).encode()) == 1
        first = door.call(b"LEASE", b"CLAIM", b"k", b"w1", b"1")
    clock.now += 1000
    assert door.call(b"LEASE", b"INFO", b"k") is None
    second = door.call(b"LEASE", b"CLAIM", b"k", b"w2", b"1")
    assert second > first
    assert door.call(b"LEASE", b"RENEW", b"k", b"w1", str(first).encode(), b"5") == 0
    assert door.call(b"LEASE", b"RELEASE", b"k", b"w1", str(first).encode()) == 0


def test_renew_and_release_by_another_owner_or_token_are_refused(backend: Backend) -> None:
    """Only the owner, with its token, renews or releases; a refusal changes nothing."""
    door = Door(backend)
    clock = _clock(backend)
    token = door.call(b"LEASE", b"CLAIM", b"k", b"w1", b"10")
    before = door.entries()
    other = str(token + 1).encode()
    assert door.call(b"LEASE", b"RENEW", b"k", b"w2", str(token).encode(), b"20") == 0
    assert door.call(b"LEASE", b"RENEW", b"k", b"w1", other, b"20") == 0
    assert door.call(b"LEASE", b"RELEASE", b"k", b"w2", str(token).encode()) == 0
    assert door.call(b"LEASE", b"RELEASE", b"k", b"w1", other) == 0
    assert door.entries() == before
    clock.now += 5000
    assert door.call(b"LEASE", b"RENEW", b"k", b"w1", str(token).encode(), b"20") == 1
    assert door.call(b"LEASE", b"INFO", b"k")[b"pttl"] == 20_000
    assert door.call(b"LEASE", b"RELEASE", b"k", b"w1", str(token).encode()) == 1
    assert door.call(b"LEASE", b"RENEW", b"k", b"w1", str(token).encode(), b"20") == 0
    assert door.call(b"LEASE", b"RELEASE", b"k", b"w1", str(token).encode()) == 0


def test_bad_input_names_the_limit_and_changes_nothing(backend: Backend) -> None:
    """A TTL outside 1..max, an empty or long owner, a key of another kind: refused."""
    door = Door(backend)
    door.call(b"SET", b"s", b"v")
    before = door.entries()
    over = str(MAX_TTL_MS // 1000 + 1).encode()
    refused = door.call(b"LEASE", b"CLAIM", b"k", b"w", over)
    assert "3600" in str(refused)
    assert isinstance(door.call(b"LEASE", b"CLAIM", b"k", b"w", b"0"), TTLNotPositive)
    empty = door.call(b"LEASE", b"CLAIM", b"k", b"", b"5")
    assert isinstance(empty, InvalidRequest)
    assert empty.field == "owner"
    long = door.call(b"LEASE", b"CLAIM", b"k", b"o" * 257, b"5")
    assert isinstance(long, InvalidRequest)
    assert (long.maximum, long.requested) == (256, 257)
    assert isinstance(door.call(b"LEASE", b"CLAIM", b"s", b"w", b"5"), WrongType)
    assert isinstance(door.call(b"LEASE", b"INFO", b"s"), WrongType)
    assert door.entries() == before


def test_a_claim_counts_against_the_quota(backend: Backend) -> None:
    """A claim that would pass the namespace's key quota is refused."""
    door = Door(backend, quota=Quota(max_keys=1))
    assert isinstance(door.call(b"LEASE", b"CLAIM", b"a", b"w", b"5"), int)
    refused = door.call(b"LEASE", b"CLAIM", b"b", b"w", b"5")
    assert type(refused).__name__ == "QuotaExceeded"
