"""What only the memory store does: free expired keys nobody reads, in bounded slices."""

from __future__ import annotations

from stashd.service import MemoryService
from stashd.store.memory import MemoryStore
from stashd.tenancy import Limits, Principal

ALICE = Principal(
    "alice", Limits(max_payload=1000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)
)


class Clock:
    """A settable clock in ms."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def test_active_expiry_frees_unread_keys_with_bounded_slices() -> None:
    """Keys nobody reads again are freed by bounded sweeps, so memory levels off under churn."""
    clock = Clock()
    store = MemoryStore(clock)
    svc = MemoryService(store)
    sizes = []
    for second in range(120):
        for i in range(200):
            store.run(
                svc.set(ALICE, b"churn:%d:%d" % (second, i), b"x", expires_at=clock.now + 5000)
            )
        clock.now += 1000
        store.maintain()
        sizes.append(sum(len(s.data) for s in store.spaces.values()))
    assert max(sizes[60:]) <= 200 * 8, sizes[-5:]
    assert sizes[-1] <= sizes[30] + 200
    clock.now += 10_000
    assert store.sweep(clock.now, 10) <= 10
