"""The Redis backend's per-namespace index: cursors, expiry, usage and quotas across nodes.

Stores run on the session's redis-server (flushed first) with an injected clock, and
redis-py looks at what Redis holds; the cross-node tests start two stashd daemons on a
redis-server of their own. Nothing sleeps for a TTL: a test that needs Redis to expire
an entry natively gives it a TTL of milliseconds and waits until the key is gone.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from stashd import ops
from stashd.errors import QuotaExceeded
from stashd.quota import check, entry_bytes
from stashd.redislink import SyncLink
from stashd.service import MemoryService
from stashd.store.redis.layout import (
    CLEAN_PER_CALL,
    HEADER,
    INDEXED_MARK,
    caps,
    index_keys,
    key_prefix,
    over,
)
from stashd.store.redis.lua import SCRIPTS
from stashd.store.redis.plan import Plan
from stashd.store.redis.store import RedisStore
from stashd.store.redis.walk import WALK_COUNT
from stashd.types import Kind, Limits, Principal, Quota
from tests.support.clock import Clock
from tests.support.servers import RedisClusterServers, RedisServer, StashDaemon, redis_nodes

T0 = 1_700_000_000_000
LIMITS = Limits(max_payload=10_000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)
ALICE = Principal("alice", LIMITS)
BOB = Principal("bob", LIMITS)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(server: RedisServer, clock: Clock) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(server.url, clock=clock)
    yield opened
    asyncio.run(opened.close())


def index_of(ns: str) -> tuple[bytes, bytes, bytes, bytes]:
    """The index keys of namespace ``ns``: meta, order, expiry, size."""
    return index_keys(key_prefix(ns))


def order(raw: redis.Redis, ns: str) -> list[tuple[bytes, int]]:
    """The namespace's keys with their sequence numbers, in order."""
    pairs: list[Any] = raw.zrange(index_of(ns)[1], 0, -1, withscores=True)
    return [(key, int(score)) for key, score in pairs]


def usage(raw: redis.Redis, ns: str) -> tuple[int, int]:
    """What the index says the namespace holds: (keys, bytes); meta's count is the order's."""
    meta, ordered, _, _ = index_of(ns)
    keys: int = raw.zcard(ordered)
    assert int(raw.hget(meta, b"keys") or 0) == keys
    return keys, int(raw.hget(meta, b"bytes") or 0)


def walk(store: RedisStore, who: Principal, count: int) -> list[tuple[int, list[bytes]]]:
    """Every page of a SCAN with ``count``: (cursor, keys)."""
    svc = MemoryService(store)
    pages, cursor = [], 0
    while True:
        cursor, keys = store.run(svc.scan(who, cursor, count))
        pages.append((cursor, keys))
        if cursor == 0:
            return pages


def old_entry(  # noqa: PLR0917 - a test helper, read as a sentence
    raw: redis.Redis | redis.RedisCluster,
    ns: str,
    key: bytes,
    value: bytes,
    expires_at: int,
    px: int = 600_000,
) -> None:
    """Write an entry as stashd did before the index: the string alone, no index."""
    raw.set(key_prefix(ns) + key, HEADER.pack(Kind.STRING, expires_at, 1, 7) + value, px=px)


def batch(store: RedisStore, batched: list[ops.Op]) -> list[Any]:
    """Run ``batched`` as the daemon does (one batch on the loop's link), then close the link."""

    async def run() -> list[Any]:
        try:
            return await store.run_many(batched)
        finally:
            await store.close()

    return asyncio.run(run())


def open_store(store: RedisStore) -> None:
    """Open ``store`` as the daemon does when it starts (old entries indexed), then close it."""

    async def run() -> None:
        await store.open()
        await store.close()

    asyncio.run(run())


# -- layout and cursors --------------------------------------------------------------------


def test_every_write_indexes_its_key_in_the_namespaces_slot(
    store: RedisStore, raw: redis.Redis
) -> None:
    """SET, MSET and INCR give keys the numbers 1, 2, 3...; expiry, size and bytes follow."""
    svc = MemoryService(store)
    store.run(svc.set(ALICE, b"a", b"xy", expires_at=T0 + 5000))
    store.run(svc.set_many(ALICE, [(b"b", b"1"), (b"c", b"22")]))
    store.run(svc.incr(BOB, b"n", 7))
    meta, ordered, expiry, size = index_of("alice")
    assert (meta, ordered) == (b"stash:ns:{alice}:meta", b"stash:ns:{alice}:order")
    assert order(raw, "alice") == [(b"a", 1), (b"b", 2), (b"c", 3)]
    assert order(raw, "bob") == [(b"n", 1)]  # each namespace counts its own
    assert int(raw.zscore(expiry, b"a") or 0) == T0 + 5000
    assert raw.hgetall(size) == {b"a": b"3", b"b": b"2", b"c": b"3"}
    assert usage(raw, "alice") == (3, 8)
    # meta: the last number, the usage, and the earliest expiry (a's).
    assert raw.hmget(meta, ["seq", "keys", "bytes", "due"]) == [
        b"3",
        b"3",
        b"8",
        b"%d" % (T0 + 5000),
    ]
    slot = key_slot(key_prefix("alice") + b"a")
    assert {key_slot(key) for key in index_of("alice")} == {slot}


def test_a_key_written_again_keeps_its_place_and_a_new_one_goes_last(
    store: RedisStore, raw: redis.Redis
) -> None:
    """Re-SET (another size too), EXPIRE and INCR keep a key's number; delete and re-create
    gives it a new one; a SCAN in progress still returns every key present throughout."""
    svc = MemoryService(store)
    for key in (b"a", b"b", b"c"):
        store.run(svc.set(ALICE, key, b"v"))
    cursor, first = store.run(svc.scan(ALICE, 0, 1))
    assert (cursor, first) == (1, [b"a"])
    store.run(svc.set(ALICE, b"b", b"longer value"))
    store.run(svc.expire(ALICE, b"c", T0 + 60_000))
    store.run(svc.set(ALICE, b"a", b"again"))
    store.run(svc.delete(ALICE, [b"b"]))
    store.run(svc.set(ALICE, b"b", b"back"))
    rest: list[bytes] = []
    while cursor:
        cursor, keys = store.run(svc.scan(ALICE, cursor, 1))
        rest += keys
    assert rest == [b"c", b"b"]
    assert order(raw, "alice") == [(b"a", 1), (b"c", 3), (b"b", 4)]
    assert usage(raw, "alice") == (3, entry_bytes(b"a", b"again") + 2 + 5)


def test_the_index_survives_a_restart_of_the_nodes(server: RedisServer) -> None:
    """A daemon stopped and another started on the same Redis give the same SCAN walk."""
    with StashDaemon("--backend", "redis", "--redis-url", server.url, "--no-http") as first:
        client = redis.Redis(port=first.port, password="team-key", protocol=2)
        client.mset({f"k{i}": "v" for i in range(30)})
        before = [client.scan(c, count=7) for c in (0, 7, 14, 21, 28)]
        client.close()
    with StashDaemon("--backend", "redis", "--redis-url", server.url, "--no-http") as second:
        client = redis.Redis(port=second.port, password="team-key", protocol=2)
        after = [client.scan(c, count=7) for c in (0, 7, 14, 21, 28)]
        assert client.dbsize() == 30
        client.close()
    assert after == before
    assert before[0][0] == 7
    assert before[-1][0] == 0


def test_a_namespace_left_empty_loses_its_index(
    store: RedisStore, raw: redis.Redis, clock: Clock
) -> None:
    """Deleting the last key, or its expiring, leaves nothing of the index; numbering
    starts again at 1, as on the other stores."""
    svc = MemoryService(store)
    store.run(svc.set(ALICE, b"a", b"v"))
    store.run(svc.set(ALICE, b"b", b"v", expires_at=T0 + 10))
    store.run(svc.delete(ALICE, [b"a"]))
    assert order(raw, "alice") == [(b"b", 2)]
    clock.now += 100
    assert store.run(svc.usage(ALICE)) == (0, 0, 0)
    assert all(not raw.exists(key) for key in index_of("alice"))
    store.run(svc.set(ALICE, b"c", b"v"))
    assert order(raw, "alice") == [(b"c", 1)]


# -- expiry and usage ----------------------------------------------------------------------


def test_keys_redis_expired_leave_the_index_and_their_bytes_the_usage(
    store: RedisStore, raw: redis.Redis, clock: Clock
) -> None:
    """Once Redis has expired an entry itself, the next write forgets it, bytes and all."""
    svc = MemoryService(store)
    store.run(svc.set(ALICE, b"short", b"12345", expires_at=T0 + 50))
    store.run(svc.set(ALICE, b"long", b"x"))
    assert usage(raw, "alice") == (2, 15)
    deadline = time.monotonic() + 10
    while raw.exists(key_prefix("alice") + b"short"):  # Redis's own expiry, in real time
        assert time.monotonic() < deadline, "Redis did not expire the entry"
        time.sleep(0.01)
    assert usage(raw, "alice") == (2, 15)  # the index still holds it, until a script runs
    clock.now += 1000
    assert store.run(svc.count(ALICE)) == 1  # DBSIZE never counts an expired key
    store.run(svc.set(BOB, b"other", b"1"))  # another namespace's write leaves alice's be
    assert usage(raw, "alice") == (2, 15)
    store.run(svc.set(ALICE, b"long", b"y"))
    assert usage(raw, "alice") == (1, 5)
    assert order(raw, "alice") == [(b"long", 2)]
    assert raw.hkeys(index_of("alice")[3]) == [b"long"]
    assert raw.zrange(index_of("alice")[2], 0, -1) == [b"long"]


def test_each_call_forgets_a_bounded_number_of_expired_keys(
    store: RedisStore, raw: redis.Redis, clock: Clock
) -> None:
    """Of 150 expired keys one SET forgets CLEAN_PER_CALL; DBSIZE is exact all along;
    reading the usage and listing forget more, until none is left."""
    svc = MemoryService(store)
    batch(store, [svc.set(ALICE, b"e%d" % i, b"v", expires_at=T0 + 10) for i in range(150)])
    clock.now += 100
    assert store.run(svc.count(ALICE)) == 0
    store.run(svc.set(ALICE, b"live", b"v"))
    assert usage(raw, "alice")[0] == 151 - CLEAN_PER_CALL
    assert store.run(svc.count(ALICE)) == 1
    assert store.run(svc.usage(ALICE))[0] == 1  # live keys, exact
    cursor, rows = store.run(ops.Page("alice", 0, 10))
    assert (cursor, [key for key, _ in rows]) == (0, [b"live"])
    assert usage(raw, "alice") == (1, 5)


def test_flushdb_deletes_the_entries_the_index_and_the_usage(
    store: RedisStore, raw: redis.Redis
) -> None:
    """FLUSHDB of a namespace larger than one page leaves no entry and no index; numbering
    starts again at 1; another namespace keeps everything."""
    svc = MemoryService(store)
    pairs = [(b"k%d" % i, b"v") for i in range(WALK_COUNT * 2 + 5)]
    batch(store, [svc.set_many(ALICE, pairs[i : i + 500]) for i in range(0, len(pairs), 500)])
    store.run(svc.set(BOB, b"kept", b"v"))
    assert store.run(svc.count(ALICE)) == len(pairs)
    store.run(svc.flush(ALICE))
    assert raw.keys("user:{alice}:*") == []
    assert all(not raw.exists(key) for key in index_of("alice"))
    assert store.run(svc.count(ALICE)) == 0
    assert store.run(svc.usage(ALICE)) == (0, 0, 0)
    store.run(svc.set(ALICE, b"new", b"v"))
    assert order(raw, "alice") == [(b"new", 1)]
    assert usage(raw, "bob") == (1, 5)
    assert store.run(svc.get(BOB, b"kept")) is not None


# -- quotas --------------------------------------------------------------------------------


@given(
    keys=st.integers(0, 20),
    size=st.integers(0, 200),
    add_keys=st.integers(-3, 3),
    add_bytes=st.integers(-50, 50),
    max_keys=st.none() | st.integers(1, 20),
    max_bytes=st.none() | st.integers(1, 200),
)
def test_the_scripts_comparison_refuses_exactly_what_the_check_refuses(
    keys: int, size: int, add_keys: int, add_bytes: int, max_keys: int | None, max_bytes: int | None
) -> None:
    """over() with caps() (what the scripts compare) agrees with stashd.quota.check."""
    quota = Quota(max_keys, max_bytes)
    try:
        check(keys, size, add_keys, add_bytes, quota)
    except QuotaExceeded:
        refused = True
    else:
        refused = False
    assert over(keys, size, add_keys, add_bytes, caps(add_keys, add_bytes, quota)) == refused


def rounds_of(store: RedisStore, op: ops.Op) -> tuple[Any, int]:
    """Run ``op`` through a plan over a synchronous link: its result and the rounds it took."""
    link = SyncLink(store.target, SCRIPTS)
    link.load_scripts()
    plan = Plan([op], store.clock, store.stamps)
    steps = plan.steps()
    n = 0
    try:
        commands = next(steps)
        while True:
            replies = link.round(commands)
            n += 1
            commands = steps.send(replies)
    except StopIteration as done:
        (result,) = done.value
    finally:
        link.close()
    return result, n


def test_a_set_under_a_quota_is_one_fetch_and_one_commit_and_decided_exactly(
    store: RedisStore,
) -> None:
    """Plain SET under a quota takes the two rounds of every write (the usage fetched with
    its key); at the quota, a rewrite of the same size still passes and a new key gets QUOTA."""
    svc = MemoryService(store)
    me = Principal("alice", Limits(10_000, 3_600_000, 86_400_000, quota=Quota(max_keys=2)))
    assert rounds_of(store, svc.set(me, b"a", b"1")) == ((True, None), 2)
    assert rounds_of(store, svc.set(me, b"b", b"1"))[1] == 2
    result, n = rounds_of(store, svc.set(me, b"b", b"2"))
    assert result[0] is True
    assert n == 2
    result, _ = rounds_of(store, svc.set(me, b"c", b"1"))
    assert isinstance(result, QuotaExceeded)
    assert (result.keys, result.max_keys) == (3, 2)


def _race(nodes: list[StashDaemon], write: Callable[[int, str], None], per_node: int = 4) -> int:
    """Run ``write(port, name)`` in ``per_node`` threads per node at once; how many ran."""
    writers = [
        threading.Thread(target=write, args=(node.port, f"w{n}{j}"))
        for n, node in enumerate(nodes)
        for j in range(per_node)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    return len(writers)


def _fill(port: int, prefix: str, count: int, outcomes: list[str]) -> None:
    """SET ``count`` new keys one by one, then in pipelines; note each reply's kind."""
    client = redis.Redis(port=port, password="shared-key", protocol=2)
    try:
        for i in range(count):
            try:
                client.set(f"{prefix}:{i}", "0123456789")
                outcomes.append("ok")
            except redis.ResponseError as exc:
                outcomes.append(str(exc).split()[0])
        pipe = client.pipeline(transaction=False)
        for i in range(count):
            pipe.set(f"{prefix}:p{i}", "0123456789")
        replies = pipe.execute(raise_on_error=False)
        outcomes.extend("ok" if reply is True else str(reply).split()[0] for reply in replies)
    finally:
        client.close()


def test_two_daemons_racing_to_fill_one_namespace_never_pass_its_quota() -> None:
    """Eight writers on two nodes of one Redis, 960 new keys for a quota of 100: exactly 100
    are written, every other write is refused with QUOTA, and the usage is the recount."""
    with RedisServer() as own:
        nodes = redis_nodes(own.url, "--no-http", "--max-keys", "100")
        with nodes[0], nodes[1]:
            outcomes: list[str] = []
            _race(nodes, partial(_fill, count=60, outcomes=outcomes))
            assert outcomes.count("ok") == 100, sorted(set(outcomes))
            assert outcomes.count("QUOTA") == len(outcomes) - 100
            client = redis.Redis(port=nodes[1].port, password="shared-key", protocol=2)
            assert client.dbsize() == 100
            keyspace = client.info("keyspace")["db0"]
            assert (keyspace["quota_keys"], keyspace["quota_bytes"]) == (100, client_bytes(client))
            client.close()


def client_bytes(client: redis.Redis) -> int:
    """Every live key and value's bytes, recounted by reading them all."""
    keys = list(client.scan_iter(count=1000))
    values = client.mget(keys)
    return sum(len(k) + len(v) for k, v in zip(keys, values, strict=True) if v is not None)


def _append_until_refused(port: int, key: str, refusals: list[str]) -> None:
    """APPEND a byte at a time to ``key`` until a write is refused; note the refusal."""
    client = redis.Redis(port=port, password="shared-key", protocol=2)
    try:
        while True:
            try:
                client.append(key, "x")
            except redis.ResponseError as exc:
                refusals.append(str(exc).split()[0])
                return
    finally:
        client.close()


def test_two_daemons_appending_at_once_never_pass_the_byte_quota() -> None:
    """Eight writers on two nodes APPENDing a byte at a time to keys of their own stop at
    the byte limit, met exactly, in each of six races: no two decisions that a byte fits
    passed the limit together, and every writer was told QUOTA."""
    limit = 500
    with RedisServer() as own:
        nodes = redis_nodes(own.url, "--no-http", "--max-bytes", str(limit))
        with nodes[0], nodes[1]:
            client = redis.Redis(port=nodes[0].port, password="shared-key", protocol=2)
            for _ in range(6):
                client.flushdb()
                refusals: list[str] = []
                writers = _race(nodes, partial(_append_until_refused, refusals=refusals))
                assert refusals == ["QUOTA"] * writers
                # Each refusal was for one byte more than fitted: the limit is met exactly.
                assert client_bytes(client) == limit
                assert client.info("keyspace")["db0"]["quota_bytes"] == limit
            client.close()


# -- entries from before the index ---------------------------------------------------------


def test_entries_from_before_the_index_are_indexed_once_when_a_store_opens(
    server: RedisServer, raw: redis.Redis, clock: Clock
) -> None:
    """Old entries of two namespaces become SCAN-able, counted and accounted; an expired
    one, a foreign string and a marked Redis are left alone; indexing again adds none."""
    for i in range(5):
        old_entry(raw, "alice", b"old%d" % i, b"v" * i, T0 + 600_000)
    old_entry(raw, "bob", b"only", b"12", T0 + 600_000)
    old_entry(raw, "alice", b"gone", b"v", T0 - 1)  # expired by its header, not yet by Redis
    raw.set(key_prefix("alice") + b"foreign", b"plain text")
    raw.set(b"unrelated", b"x")
    store = RedisStore.from_url(server.url, clock=clock)
    open_store(store)
    assert raw.get(INDEXED_MARK) == b"1"
    svc = MemoryService(store)
    found = sorted(k for _, keys in walk(store, ALICE, 2) for k in keys)
    assert found == [b"old%d" % i for i in range(5)]
    assert store.run(svc.count(ALICE)) == 5
    assert store.run(svc.usage(ALICE)) == (5, 5, sum(4 + i for i in range(5)))
    assert store.run(svc.scan(BOB, 0, 10)) == (0, [b"only"])
    store.run(svc.set(ALICE, b"new", b"v"))
    assert order(raw, "alice")[-1] == (b"new", 6)
    # Marked: indexing now walks nothing. Without the mark, a walk adds only what is not
    # indexed yet (another old entry), keeping everyone's place.
    link = SyncLink(store.target, SCRIPTS)
    try:
        assert store.index_old_entries(link) == 0
        raw.delete(INDEXED_MARK)
        old_entry(raw, "alice", b"late", b"v", T0 + 600_000)
        places = order(raw, "alice")
        assert store.index_old_entries(link) == 1
        assert order(raw, "alice") == [*places, (b"late", 7)]
    finally:
        link.close()
        asyncio.run(store.close())


def test_a_daemon_on_a_redis_of_old_entries_serves_them_to_scan(server: RedisServer) -> None:
    """stashd started on a Redis written before the index: redis-py's SCAN and DBSIZE see all."""
    raw = redis.Redis(port=server.port, protocol=2)
    for i in range(25):  # "default": the namespace of a connection that never authenticates
        old_entry(raw, "default", b"k%d" % i, b"v", T0 * 2)
    raw.close()
    with StashDaemon("--backend", "redis", "--redis-url", server.url, "--no-http") as d:
        client = redis.Redis(port=d.port, protocol=2)
        assert sorted(client.scan_iter(count=4)) == sorted(b"k%d" % i for i in range(25))
        assert client.dbsize() == 25
        client.close()


# -- Redis Cluster -------------------------------------------------------------------------


def test_on_a_cluster_old_entries_of_every_node_are_indexed_in_their_slot(
    redis_cluster: RedisClusterServers, clock: Clock
) -> None:
    """Namespaces spread over three masters: each one's old entries are found on its node,
    indexed there, and walked, counted and flushed as on a single Redis."""
    redis_cluster.flush()
    client = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port, protocol=2)
    people = [Principal(f"ns{i}", LIMITS) for i in range(6)]
    for p in people:
        for k in range(3):
            old_entry(client, p.namespace, b"k%d" % k, b"v", T0 + 600_000)
    assert len({client.keyslot(key_prefix(p.namespace)) for p in people}) == 6
    store = RedisStore.from_url(redis_cluster.url, clock=clock)
    svc = MemoryService(store)
    for p in people:
        assert sorted(store.run(svc.scan(p, 0, 100))[1]) == [b"k0", b"k1", b"k2"]
        assert store.run(svc.usage(p)) == (3, 3, 9)
        slot = client.keyslot(key_prefix(p.namespace))
        assert {client.keyslot(key) for key in index_keys(key_prefix(p.namespace))} == {slot}
    store.run(svc.flush(people[0]))
    assert store.run(svc.count(people[0])) == 0
    assert store.run(svc.count(people[1])) == 3
    asyncio.run(store.close())
    client.close()
