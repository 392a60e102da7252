"""The store contract: the rules and every operation, on every backend, with an injected clock.

Each test runs once per backend in tests/support/backends.py (memory; SQLite through its
direct path, batched on the loop, and batched on its worker thread; Redis batched,
direct, and on a Redis Cluster), so every backend must give exactly the same results.
Time never passes by sleeping: the clock is set.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stashd import ops
from stashd.errors import (
    Conflict,
    IncrOverflow,
    InvalidTTL,
    NoSuchKey,
    NotInteger,
    PayloadTooLarge,
    PersistRefused,
)
from stashd.service import MemoryService
from stashd.types import Entry, Limits, Principal
from tests.support.backends import BACKENDS, REDIS_BACKENDS, Backend, open_backend

LIMITS = Limits(max_payload=1000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)
ALICE = Principal("alice", LIMITS)
BOB = Principal("bob", LIMITS)


class Clock:
    """A settable clock in ms."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


class Service(MemoryService):
    """The memory service over one backend, remembering how that backend runs operations."""

    def __init__(self, backend: Backend) -> None:
        super().__init__(backend.store)
        self.backend = backend


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, clock: Clock, tmp_path: Path) -> Iterator[Backend]:
    url = ""
    if request.param in REDIS_BACKENDS:
        server = request.getfixturevalue(
            "redis_cluster" if request.param == "redis-cluster" else "redis_store"
        )
        server.flush()
        url = server.url
    opened = open_backend(request.param, clock, tmp_path, url)
    yield opened
    opened.close()


@pytest.fixture
def svc(backend: Backend) -> Service:
    return Service(backend)


def run(svc: Service, op: ops.Op) -> Any:  # noqa: ANN401 - each op has its own result
    return svc.backend.run(op)


def test_default_ttl_and_expiry_is_exact(svc: Service, clock: Clock) -> None:
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


def test_ttl_above_maximum_is_refused_and_changes_nothing(svc: Service, clock: Clock) -> None:
    """SET, EXPIRE and UPDATE EXTEND all refuse a TTL past the maximum, naming both numbers."""
    with pytest.raises(InvalidTTL, match="ttl 90000 seconds exceeds the maximum of 86400 seconds"):
        svc.set(ALICE, b"k", b"v", expires_at=svc.expiry(ALICE, 90_000_000))
    run(svc, svc.set(ALICE, b"k", b"v"))
    with pytest.raises(InvalidTTL):
        run(svc, svc.expire(ALICE, b"k", clock.now + 90_000_000))
    mid = run(svc, svc.stash(ALICE, b"{}", 86_000_000))
    assert isinstance(mid, bytes)
    with pytest.raises(InvalidTTL):
        run(svc, svc.update(ALICE, mid, extend_seconds=1000))
    entry = run(svc, svc.get(ALICE, mid))
    assert isinstance(entry, Entry)
    assert entry.expires_at == clock.now + 86_000_000
    with pytest.raises(PersistRefused, match="PERSIST is not supported"):
        svc.persist_expiry(ALICE)


def test_payload_limit(svc: Service) -> None:
    """A value over the limit is refused with both sizes, and APPEND cannot grow past it."""
    with pytest.raises(PayloadTooLarge, match="value is 1001 bytes, the limit is 1000 bytes"):
        svc.set(ALICE, b"k", b"x" * 1001)
    assert run(svc, svc.get(ALICE, b"k")) is None
    run(svc, svc.set(ALICE, b"k", b"x" * 999))
    assert run(svc, svc.append(ALICE, b"k", b"y")) == 1000
    with pytest.raises(PayloadTooLarge):
        run(svc, svc.append(ALICE, b"k", b"z"))


def test_update_extend_merge_and_versions(svc: Service, clock: Clock) -> None:
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


def test_counters_follow_redis(svc: Service) -> None:
    """INCR refuses non-integers and overflow with Redis's texts, and counts versions."""
    assert run(svc, svc.incr(ALICE, b"n", 5)) == 5
    run(svc, svc.set(ALICE, b"s", b"abc"))
    with pytest.raises(NotInteger, match="value is not an integer or out of range"):
        run(svc, svc.incr(ALICE, b"s", 1))
    run(svc, svc.set(ALICE, b"big", b"9223372036854775807"))
    with pytest.raises(IncrOverflow, match="increment or decrement would overflow"):
        run(svc, svc.incr(ALICE, b"big", 1))
    assert run(svc, svc.get(ALICE, b"big")).value == b"9223372036854775807"


def test_id_collisions_retry_then_fall_back_to_uuid(svc: Service, clock: Clock) -> None:
    """A colliding id generator is retried, and after a few tries a UUID is used."""
    run(svc, svc.set(ALICE, b"taken", b"1"))
    attempts: list[int] = []

    def make_id(attempt: int) -> bytes:
        attempts.append(attempt)
        return b"taken" if attempt < ops.Create.TRIES else b"f" * 32

    key = run(svc, ops.Create("alice", b"{}", clock.now + 1000, make_id))
    assert key == b"f" * 32
    assert attempts == list(range(ops.Create.TRIES + 1))


def test_namespaces_and_flush(svc: Service) -> None:
    """Namespaces never see each other's keys, and FLUSH clears only its own."""
    run(svc, svc.set(ALICE, b"k", b"a"))
    run(svc, svc.set(BOB, b"k", b"b"))
    run(svc, svc.flush(BOB))
    assert run(svc, svc.get(ALICE, b"k")).value == b"a"
    assert run(svc, svc.get(BOB, b"k")) is None


@given(
    keys=st.lists(st.integers(0, 50), min_size=1, max_size=40, unique=True),
    churn=st.lists(st.tuples(st.booleans(), st.integers(51, 99)), max_size=40),
    count=st.integers(1, 7),
)
# One backend serves every example; each example works in a namespace of its own.
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_scan_returns_every_key_present_throughout(
    svc: Service, keys: list[int], churn: list[tuple[bool, int]], count: int
) -> None:
    """SCAN returns each key that exists for the whole iteration, despite inserts and deletes."""
    me = Principal(uuid.uuid4().hex, LIMITS)
    for k in keys:
        run(svc, svc.set(me, b"%d" % k, b"v"))
    seen: set[bytes] = set()
    cursor = 0
    steps = iter(churn)
    while True:
        result = run(svc, svc.scan(me, cursor, count))
        assert isinstance(result, tuple)
        cursor, page = result
        seen.update(page)
        step = next(steps, None)
        if step is not None:
            insert, k = step
            if insert:
                run(svc, svc.set(me, b"%d" % k, b"v"))
            else:
                run(svc, svc.delete(me, [b"%d" % k]))
        if cursor == 0:
            break
    assert {b"%d" % k for k in keys} <= seen


def test_scan_order_is_creation_order_and_a_key_set_after_expiry_is_new(
    svc: Service, clock: Clock
) -> None:
    """An overwritten live key keeps its SCAN place; one set again after it expired is new.

    The rule is the View's (a replaced key keeps its place, an expired one is gone), so
    every write path of every backend orders keys the same way: by the write that
    created them.
    """
    me = Principal(uuid.uuid4().hex, LIMITS)
    run(svc, svc.set(me, b"a", b"1", expires_at=clock.now + 1000))
    run(svc, svc.set(me, b"b", b"1"))
    run(svc, svc.stash(me, b"{}"))
    run(svc, svc.set_many(me, [(b"c", b"1"), (b"d", b"1")]))
    run(svc, svc.set(me, b"b", b"2"))  # live: keeps its place
    run(svc, svc.incr(me, b"n", 1))
    clock.now += 2000  # a has expired, nothing has swept it
    run(svc, svc.set(me, b"a", b"again"))
    run(svc, svc.append(me, b"d", b"+"))  # live: keeps its place
    cursor, keys = run(svc, svc.scan(me, 0, 100))
    assert cursor == 0
    assert [k for k in keys if len(k) == 1] == [b"b", b"c", b"d", b"n", b"a"]
    assert keys.index(b"b") < next(i for i, k in enumerate(keys) if len(k) > 1) < keys.index(b"c")


def test_values_and_keys_are_binary_safe(svc: Service) -> None:
    """Keys and values keep every byte, NUL and invalid UTF-8 included."""
    key, value = b"k\x00\xff\xfe", b"\x00\x01\xff" * 50
    run(svc, svc.set(ALICE, key, value))
    entry = run(svc, svc.get(ALICE, key))
    assert entry.value == value
    assert run(svc, svc.get(ALICE, b"k")) is None
    assert run(svc, svc.scan(ALICE, 0, 10))[1] == [key]


def test_an_expired_key_is_gone_for_every_operation(svc: Service, clock: Clock) -> None:
    """Once expired, a key is new to SET and INCR, and DEL, GETDEL and EXPIRE find nothing."""
    run(svc, svc.set(ALICE, b"k", b"old", expires_at=clock.now + 1000))
    run(svc, svc.set(ALICE, b"k", b"older", expires_at=clock.now + 1000))
    run(svc, svc.set(ALICE, b"n", b"41", expires_at=clock.now + 1000))
    run(svc, svc.set(ALICE, b"d", b"x", expires_at=clock.now + 1000))
    clock.now += 1000
    assert run(svc, svc.delete(ALICE, [b"d"])) == 0
    assert run(svc, svc.getdel(ALICE, b"d")) is None
    assert run(svc, svc.expire(ALICE, b"d", clock.now + 5000)) == 0
    assert run(svc, svc.incr(ALICE, b"n", 1)) == 1
    written, old = run(svc, svc.set(ALICE, b"k", b"new"))
    assert written
    assert old is None
    entry = run(svc, svc.get(ALICE, b"k"))
    assert (entry.value, entry.version) == (b"new", 1)
    written, _ = run(svc, svc.set(ALICE, b"k", b"again", cond=b"NX"))
    assert not written


def test_expiry_changes_keep_the_version_and_data(svc: Service, clock: Clock) -> None:
    """EXPIRE, GETEX and GT/LT move only the expiry; a time not in the future deletes."""
    run(svc, svc.set(ALICE, b"k", b"v", expires_at=clock.now + 10_000))
    assert run(svc, svc.expire(ALICE, b"k", clock.now + 5_000, b"GT")) == 0
    assert run(svc, svc.expire(ALICE, b"k", clock.now + 5_000, b"LT")) == 1
    assert run(svc, svc.expire(ALICE, b"k", clock.now + 70_000, b"XX")) == 1
    old = run(svc, svc.getex(ALICE, b"k", clock.now + 200_000))
    assert old.expires_at == clock.now + 70_000
    entry = run(svc, svc.get(ALICE, b"k"))
    assert (entry.value, entry.expires_at, entry.version) == (b"v", clock.now + 200_000, 1)
    assert run(svc, svc.getex(ALICE, b"k", clock.now)).value == b"v"
    assert run(svc, svc.get(ALICE, b"k")) is None
    run(svc, svc.set(ALICE, b"k", b"v"))
    assert run(svc, svc.expire(ALICE, b"k", clock.now - 1)) == 1
    assert run(svc, svc.get(ALICE, b"k")) is None


def test_rename_moves_data_ttl_and_version(svc: Service, clock: Clock) -> None:
    """RENAME carries the entry over whatever the target held; a missing source is refused."""
    run(svc, svc.set(ALICE, b"a", b"1", expires_at=clock.now + 5000))
    run(svc, svc.set(ALICE, b"a", b"2", expires_at=clock.now + 6000))
    run(svc, svc.set(ALICE, b"b", b"other"))
    run(svc, svc.rename(ALICE, b"a", b"b"))
    assert run(svc, svc.get(ALICE, b"a")) is None
    entry = run(svc, svc.get(ALICE, b"b"))
    assert (entry.value, entry.expires_at, entry.version) == (b"2", clock.now + 6000, 2)
    run(svc, svc.rename(ALICE, b"b", b"b"))
    assert run(svc, svc.get(ALICE, b"b")).value == b"2"
    with pytest.raises(NoSuchKey):
        run(svc, svc.rename(ALICE, b"missing", b"b"))
    assert run(svc, svc.count(ALICE)) == 1


def test_mset_mget_and_append(svc: Service) -> None:
    """MSET writes every pair with versions, MGET reads them in order, APPEND grows a value."""
    run(svc, svc.set(ALICE, b"a", b"old"))
    run(svc, svc.set_many(ALICE, [(b"a", b"1"), (b"b", b"2")]))
    a, missing, b = run(svc, svc.get_many(ALICE, [b"a", b"zz", b"b"]))
    assert (a.value, a.version, missing, b.value, b.version) == (b"1", 2, None, b"2", 1)
    assert run(svc, svc.append(ALICE, b"b", b"34")) == 3
    assert run(svc, svc.append(ALICE, b"c", b"new")) == 3
    assert [e.value for e in run(svc, svc.get_many(ALICE, [b"b", b"c"]))] == [b"234", b"new"]


def test_scan_filters_and_count(svc: Service, clock: Clock) -> None:
    """SCAN's MATCH and TYPE filter a page, expired keys are skipped, DBSIZE counts live keys."""
    for name in (b"user:1", b"user:2", b"task:1"):
        run(svc, svc.set(ALICE, name, b"v"))
    run(svc, svc.set(ALICE, b"user:old", b"v", expires_at=clock.now + 10))
    clock.now += 10
    assert sorted(run(svc, svc.scan(ALICE, 0, 100, b"user:*"))[1]) == [b"user:1", b"user:2"]
    assert run(svc, svc.scan(ALICE, 0, 100, None, b"hash")) == (0, [])
    assert sorted(run(svc, svc.scan(ALICE, 0, 100, None, b"STRING"))[1]) == [
        b"task:1",
        b"user:1",
        b"user:2",
    ]
    assert run(svc, svc.count(ALICE)) == 3
    assert run(svc, svc.count(BOB)) == 0
    seen: list[bytes] = []
    cursor = 0
    while True:
        cursor, page = run(svc, svc.scan(ALICE, cursor, 1))
        assert len(page) <= 1
        seen += page
        if cursor == 0:
            break
    assert sorted(seen) == [b"task:1", b"user:1", b"user:2"]
    # Redis takes cursors up to 2**64 - 1: past any store's cursors, the end.
    for past in (2**63, 2**64 - 1):
        assert run(svc, svc.scan(ALICE, past, 10)) == (0, [])


def test_a_batch_runs_in_order_and_sees_its_own_writes(svc: Service, clock: Clock) -> None:
    """A batch (one group commit) gives each operation the state the ones before it left."""
    k = b"k"
    results = svc.backend.run_many(
        [
            svc.set(ALICE, k, b"1"),
            svc.get(ALICE, k),
            svc.incr(ALICE, k, 1),
            svc.incr(ALICE, k, 1),
            svc.set(ALICE, b"s", b"text"),
            svc.incr(ALICE, b"s", 1),
            svc.scan(ALICE, 0, 100),
            svc.count(ALICE),
            svc.delete(ALICE, [k]),
            svc.get(ALICE, k),
            svc.count(ALICE),
            svc.set(ALICE, k, b"again"),
            svc.rename(ALICE, k, b"moved"),
            svc.get(ALICE, b"moved"),
            svc.flush(ALICE),
            svc.get(ALICE, b"s"),
            svc.set(ALICE, b"after", b"x"),
            svc.count(ALICE),
        ]
    )
    assert results[0] == (True, None)
    assert results[1].value == b"1"
    assert results[2:4] == [2, 3]
    assert isinstance(results[5], NotInteger)
    assert sorted(results[6][1]) == [b"k", b"s"]
    assert results[7] == 2
    assert results[8] == 1
    assert results[9] is None
    assert results[10] == 1
    assert results[13].value == b"again"
    assert results[13].version == 1
    assert results[15] is None
    assert results[17] == 1
    after = run(svc, svc.get_many(ALICE, [b"after", b"moved", b"s", k]))
    assert [e and e.value for e in after] == [b"x", None, None, None]
    assert run(svc, svc.get(ALICE, b"after")).expires_at == clock.now + 3_600_000


def test_many_writes_to_one_key_in_a_batch_all_count(svc: Service) -> None:
    """Fifty INCRs and SETs of one key in one batch leave exactly what running them one by one would."""
    batch: list[ops.Op] = [svc.incr(ALICE, b"n", 1) for _ in range(50)]
    batch += [svc.set(ALICE, b"v", b"%d" % i) for i in range(50)]
    results = svc.backend.run_many(batch)
    assert results[:50] == list(range(1, 51))
    n, v = run(svc, svc.get_many(ALICE, [b"n", b"v"]))
    assert (n.value, n.version) == (b"50", 50)
    assert (v.value, v.version) == (b"49", 50)


def test_transaction_checks_watches_then_runs_everything(svc: Service) -> None:
    """MULTI/EXEC as one operation: a changed watched key runs nothing, else all run in order."""
    run(svc, svc.set(ALICE, b"w", b"1"))
    snap = ops.snapshot(run(svc, svc.get(ALICE, b"w")))
    run(svc, svc.set(ALICE, b"w", b"2"))
    stale = ops.Transaction([svc.set(ALICE, b"x", b"1")], [("alice", b"w", snap)])
    assert run(svc, stale) is None
    assert run(svc, svc.get(ALICE, b"x")) is None
    fresh = ops.snapshot(run(svc, svc.get(ALICE, b"w")))
    txn = ops.Transaction(
        [svc.set(ALICE, b"x", b"a"), svc.incr(ALICE, b"x", 1), svc.get(ALICE, b"x")],
        [("alice", b"w", fresh)],
    )
    results = run(svc, txn)
    assert results[0] == (True, None)
    assert isinstance(results[1], NotInteger)
    assert results[2].value == b"a"


def test_stash_then_recall_and_forget(svc: Service) -> None:
    """STASH picks a fresh id that RECALL finds and FORGET removes."""
    ids = {run(svc, svc.stash(ALICE, b'{"n":%d}' % i)) for i in range(20)}
    assert len(ids) == 20
    some = min(ids)
    assert run(svc, svc.get(ALICE, some)).value.startswith(b'{"n":')
    assert run(svc, svc.delete(ALICE, [some, some, b"nope"])) == 1
    assert run(svc, svc.count(ALICE)) == 19


def test_a_transaction_sees_its_own_writes_in_namespace_wide_commands(svc: Service) -> None:
    """Inside MULTI, DBSIZE, SCAN and FLUSHDB see the writes queued before them."""
    run(svc, svc.set(ALICE, b"old", b"1"))
    txn = ops.Transaction(
        [
            svc.set(ALICE, b"a", b"1"),
            svc.count(ALICE),
            svc.scan(ALICE, 0, 100),
            svc.delete(ALICE, [b"old"]),
            svc.count(ALICE),
            svc.flush(ALICE),
            svc.set(ALICE, b"b", b"2"),
            svc.get(ALICE, b"a"),
            svc.scan(ALICE, 0, 100),
            svc.count(ALICE),
        ],
        [],
    )
    results = run(svc, txn)
    assert results[1] == 2
    assert sorted(results[2][1]) == [b"a", b"old"]
    assert results[4] == 1
    assert results[7] is None
    assert results[8] == (0, [b"b"])
    assert results[9] == 1
    after = run(svc, svc.get_many(ALICE, [b"a", b"b", b"old"]))
    assert [e and e.value for e in after] == [None, b"2", None]
    assert run(svc, svc.count(ALICE)) == 1
