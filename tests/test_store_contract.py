"""The memory store and the rules, run in-process with an injected clock (no sleeping for TTLs)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd import ops
from stashd.errors import BadTTL, Conflict, IncrOverflow, NotInteger, PersistRefused, TooLarge
from stashd.jsonmerge import merge_patch
from stashd.service import MemoryService
from stashd.store.base import Entry
from stashd.store.memory import MemoryStore
from stashd.tenancy import Limits, Principal

LIMITS = Limits(max_payload=1000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)
ALICE = Principal("alice", LIMITS)
BOB = Principal("bob", LIMITS)


class Clock:
    """A settable clock in ms."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def svc(clock: Clock) -> MemoryService:
    return MemoryService(MemoryStore(clock))


def run(svc: MemoryService, op: ops.Op) -> Any:  # noqa: ANN401 - each op has its own result
    return svc.store.run(op)


def test_default_ttl_and_expiry_is_exact(svc: MemoryService, clock: Clock) -> None:
    """A write without TTL gets the default, and the key vanishes the millisecond it expires."""
    run(svc, svc.set(ALICE, b"k", b"v"))
    entry = run(svc, svc.get(ALICE, b"k"))
    assert entry is not None
    clock.now += 3_600_000 - 1
    assert run(svc, svc.get(ALICE, b"k")) is not None
    clock.now += 1
    assert run(svc, svc.get(ALICE, b"k")) is None
    assert run(svc, svc.get_many(ALICE, [b"k"])) == [None]
    assert run(svc, svc.count(ALICE)) == 0
    assert run(svc, svc.scan(ALICE, 0, 100)) == (0, [])
    with pytest.raises(Exception, match="no such key"):
        run(svc, svc.rename(ALICE, b"k", b"k2"))


def test_ttl_above_maximum_is_refused_and_changes_nothing(svc: MemoryService, clock: Clock) -> None:
    """SET, EXPIRE and UPDATE EXTEND all refuse a TTL past the maximum, naming both numbers."""
    with pytest.raises(BadTTL, match="ttl 90000 seconds exceeds the maximum of 86400 seconds"):
        svc.set(ALICE, b"k", b"v", expires_at=svc.expiry(ALICE, 90_000_000))
    run(svc, svc.set(ALICE, b"k", b"v"))
    with pytest.raises(BadTTL):
        run(svc, svc.expire(ALICE, b"k", clock.now + 90_000_000))
    mid = run(svc, svc.stash(ALICE, b"{}", 86_000_000))
    assert isinstance(mid, bytes)
    with pytest.raises(BadTTL):
        run(svc, svc.update(ALICE, mid, extend_seconds=1000))
    entry = run(svc, svc.get(ALICE, mid))
    assert isinstance(entry, Entry)
    assert entry.expires_at == clock.now + 86_000_000
    assert "PERSIST is not supported" in str(svc.refuse_persist(ALICE))
    assert isinstance(svc.refuse_persist(ALICE), PersistRefused)


def test_payload_limit(svc: MemoryService) -> None:
    """A value over the limit is refused with both sizes, and APPEND cannot grow past it."""
    with pytest.raises(TooLarge, match="value is 1001 bytes, the limit is 1000 bytes"):
        svc.set(ALICE, b"k", b"x" * 1001)
    assert run(svc, svc.get(ALICE, b"k")) is None
    run(svc, svc.set(ALICE, b"k", b"x" * 999))
    assert run(svc, svc.append(ALICE, b"k", b"y")) == 1000
    with pytest.raises(TooLarge):
        run(svc, svc.append(ALICE, b"k", b"z"))


def test_update_extend_merge_and_versions(svc: MemoryService, clock: Clock) -> None:
    """EXTEND adds to what is left, MERGE patches, versions count data changes only."""
    mid = run(svc, svc.stash(ALICE, b'{"task":"summarize","n":1}', 3_600_000))
    assert isinstance(mid, bytes)
    assert re.fullmatch(rb"[0-9A-Za-z]{8}", mid)
    clock.now += 355_000  # 3245 s left
    assert run(svc, svc.update(ALICE, mid, extend_seconds=1800)) == 5_045_000
    run(svc, svc.expire(ALICE, mid, clock.now + 5_000_000))
    assert run(svc, svc.get(ALICE, mid)).version == 1
    run(svc, svc.update(ALICE, mid, merge=b'{"n":null,"progress":0.5}'))
    entry = run(svc, svc.get(ALICE, mid))
    assert entry.value == b'{"task":"summarize","progress":0.5}'
    assert entry.version == 2
    with pytest.raises(Conflict, match="version is 2, IFVERSION expected 1"):
        run(svc, svc.update(ALICE, mid, data=b"[]", if_version=1))
    assert run(svc, svc.get(ALICE, mid)).version == 2
    assert run(svc, svc.update(ALICE, mid, data=b"[]", if_version=2)) is not None
    assert run(svc, svc.update(ALICE, b"missing", data=b"1")) is None


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # RFC 7396, Appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7396(target: object, patch: object, result: object) -> None:
    """Every example of RFC 7396 Appendix A."""
    assert merge_patch(target, patch) == result


json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)


@given(
    target=st.dictionaries(st.text(max_size=3), json_scalars, max_size=5),
    patch=st.dictionaries(st.text(max_size=3), st.booleans() | st.integers(), max_size=5),
)
def test_merge_without_nulls_keeps_patch_members(
    target: dict[str, object], patch: dict[str, object]
) -> None:
    """A null-free patch's members all appear in the result, and other members survive."""
    merged = merge_patch(target, patch)
    assert all(merged[k] == v for k, v in patch.items())
    assert all(merged[k] == v for k, v in target.items() if k not in patch)


def test_counters_follow_redis(svc: MemoryService) -> None:
    """INCR refuses non-integers and overflow with Redis's texts, and counts versions."""
    assert run(svc, svc.incr(ALICE, b"n", 5)) == 5
    run(svc, svc.set(ALICE, b"s", b"abc"))
    with pytest.raises(NotInteger, match="value is not an integer or out of range"):
        run(svc, svc.incr(ALICE, b"s", 1))
    run(svc, svc.set(ALICE, b"big", b"9223372036854775807"))
    with pytest.raises(IncrOverflow, match="increment or decrement would overflow"):
        run(svc, svc.incr(ALICE, b"big", 1))
    assert run(svc, svc.get(ALICE, b"big")).value == b"9223372036854775807"


def test_id_collisions_retry_then_fall_back_to_uuid(svc: MemoryService, clock: Clock) -> None:
    """A colliding id generator is retried, and after a few tries a UUID is used."""
    run(svc, svc.set(ALICE, b"taken", b"1"))
    attempts: list[int] = []

    def make_id(attempt: int) -> bytes:
        attempts.append(attempt)
        return b"taken" if attempt < ops.Create.TRIES else b"f" * 32

    key = run(svc, ops.Create("alice", b"{}", clock.now + 1000, make_id))
    assert key == b"f" * 32
    assert attempts == list(range(ops.Create.TRIES + 1))


def test_namespaces_and_flush(svc: MemoryService) -> None:
    """Namespaces never see each other's keys, and FLUSH clears only its own."""
    run(svc, svc.set(ALICE, b"k", b"a"))
    run(svc, svc.set(BOB, b"k", b"b"))
    run(svc, svc.flush(BOB))
    assert run(svc, svc.get(ALICE, b"k")).value == b"a"
    assert run(svc, svc.get(BOB, b"k")) is None


def test_active_expiry_frees_unread_keys_with_bounded_slices(clock: Clock) -> None:
    """Keys nobody reads again are freed by bounded sweeps, so memory levels off under churn."""
    store = MemoryStore(clock)
    svc = MemoryService(store)
    sizes = []
    for second in range(120):
        for i in range(200):
            run(
                svc, svc.set(ALICE, b"churn:%d:%d" % (second, i), b"x", expires_at=clock.now + 5000)
            )
        clock.now += 1000
        store.maintain()
        sizes.append(sum(len(s.data) for s in store.spaces.values()))
    assert max(sizes[60:]) <= 200 * 8, sizes[-5:]
    assert sizes[-1] <= sizes[30] + 200
    clock.now += 10_000
    assert store.sweep(clock.now, 10) <= 10


@given(
    keys=st.lists(st.integers(0, 50), min_size=1, max_size=40, unique=True),
    churn=st.lists(st.tuples(st.booleans(), st.integers(51, 99)), max_size=40),
    count=st.integers(1, 7),
)
@settings(max_examples=100)
def test_scan_returns_every_key_present_throughout(
    keys: list[int], churn: list[tuple[bool, int]], count: int
) -> None:
    """SCAN returns each key that exists for the whole iteration, despite inserts and deletes."""
    clock = Clock()
    svc = MemoryService(MemoryStore(clock))
    for k in keys:
        run(svc, svc.set(ALICE, b"%d" % k, b"v"))
    seen: set[bytes] = set()
    cursor = 0
    steps = iter(churn)
    while True:
        result = run(svc, svc.scan(ALICE, cursor, count))
        assert isinstance(result, tuple)
        cursor, page = result
        seen.update(page)
        step = next(steps, None)
        if step is not None:
            insert, k = step
            if insert:
                run(svc, svc.set(ALICE, b"%d" % k, b"v"))
            else:
                run(svc, svc.delete(ALICE, [b"%d" % k]))
        if cursor == 0:
            break
    assert {b"%d" % k for k in keys} <= seen
