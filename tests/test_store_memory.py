"""What only the memory store does: free expired keys nobody reads, in bounded slices."""

from __future__ import annotations

from stashd.service import MemoryService
from stashd.store.memory import INSERTS_PER_SLICE, MemoryStore
from stashd.types import Entry, Limits, Principal

ALICE = Principal(
    "alice", Limits(max_payload=1000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)
)
BOB = Principal("bob", ALICE.limits)


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
        for tick in range(10):  # maintain() runs ten times a second, as in the daemon
            for i in range(20):
                key = b"churn:%d:%d:%d" % (second, tick, i)
                store.run(svc.set(ALICE, key, b"x", expires_at=clock.now + 5000))
            clock.now += 100
            store.maintain()
        sizes.append(sum(len(s.data) for s in store.spaces.values()))
    # 1000 live keys, plus at most about one 5 s cycle of expired ones not yet freed.
    assert max(sizes[30:]) <= 2400, sizes[-5:]
    assert max(sizes[90:]) <= max(sizes[30:60]) + 200
    clock.now += 10_000
    examined, freed = store.sweep(clock.now, 10)
    assert examined <= 10
    assert freed <= examined


def test_every_namespace_gets_swept() -> None:
    """A busy namespace does not keep the sweep from another one's expired keys."""
    clock = Clock()
    store = MemoryStore(clock)
    svc = MemoryService(store)
    for i in range(3000):
        store.run(svc.set(ALICE, b"a%d" % i, b"x", expires_at=clock.now + 60_000))
    for i in range(300):
        store.run(svc.set(BOB, b"b%d" % i, b"x", expires_at=clock.now + 1000))
    clock.now += 2000
    for _ in range(60):  # six seconds of ticks
        store.maintain()
    assert BOB.namespace not in store.spaces
    assert len(store.spaces[ALICE.namespace].data) == 3000


def test_rewriting_one_key_costs_no_expiry_bookkeeping() -> None:
    """Overwriting a key with a long TTL leaves nothing behind per write."""
    store = MemoryStore(Clock())
    svc = MemoryService(store)
    for _ in range(5000):
        store.run(svc.set(ALICE, b"hot", b"x"))
    space = store.spaces[ALICE.namespace]
    assert len(space.order) == len(space.seqs) == 1


def test_a_sweep_set_off_by_an_insert_never_loses_that_key() -> None:
    """The slice every INSERTS_PER_SLICE new keys runs after the key is stored.

    Run before, it could free the keyspace being written to (its only other key had
    expired) and the new key would land in a keyspace the store no longer lists.
    """
    clock = Clock()
    store = MemoryStore(clock)
    view = store.view
    for i in range(INSERTS_PER_SLICE - 2):
        view.put("other", b"%d" % i, Entry(b"v", clock.now + 60_000))
    view.put("ns", b"old", Entry(b"v", clock.now + 1))
    clock.now += 10
    # The slice this insert sets off visits "ns": the sweep takes namespaces in turns.
    view.put("ns", b"new", Entry(b"kept", clock.now + 60_000))
    entry = view.get("ns", b"new", clock.now)
    assert entry is not None
    assert entry.value == b"kept"
    assert view.get("ns", b"old", clock.now) is None
