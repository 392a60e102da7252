"""The Redis store beyond the contract: layout, escaping, atomicity under other writers, recovery.

Every test uses a redis-server started for the session (tests/conftest.py), flushed
first, and inspects it with redis-py where the layout matters. Two RedisStore objects
on one server stand for two stashd nodes.
"""

from __future__ import annotations

import asyncio
import signal
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stashd import ops
from stashd.batch import Batcher
from stashd.errors import Conflict, StoreUnavailable
from stashd.redislink import LinkError, SyncLink
from stashd.redistarget import RedisTarget
from stashd.service import MemoryService
from stashd.store import open_store
from stashd.store.base import StoreOpenError
from stashd.store.redis.layout import HEAD_SIZE, key_prefix
from stashd.store.redis.lua import SCRIPTS
from stashd.store.redis.plan import APPLY_OPS, MAX_TRIES, Plan, Stamps
from stashd.store.redis.store import RedisStore
from stashd.types import Entry, Limits, Principal
from tests.support.servers import RedisServer, free_port

LIMITS = Limits(max_payload=10_000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)
ALICE = Principal("alice", LIMITS)


@pytest.fixture
def store(server: RedisServer) -> Iterator[RedisStore]:
    opened = RedisStore.from_url(server.url)
    yield opened
    asyncio.run(opened.close())


def svc_of(store: RedisStore) -> MemoryService:
    return MemoryService(store)


def blob(raw: redis.Redis, key: bytes) -> bytes:
    """The string Redis holds under ``key``."""
    value = raw.get(key)
    assert isinstance(value, bytes)
    return value


def test_layout_is_one_hash_tagged_string_with_header_and_native_expiry(
    store: RedisStore, raw: redis.Redis
) -> None:
    """SET stores user:{ns}:key as a 25-byte header then the value, with PX set natively."""
    svc = svc_of(store)
    now = store.clock()
    store.run(svc.set(ALICE, b"plan", b'{"step":1}', expires_at=now + 600_000))
    stored = blob(raw, b"user:{alice}:plan")
    fmt, expires_at, version, _ = struct.unpack(">BqqQ", stored[:HEAD_SIZE])
    assert (fmt, expires_at, version, stored[HEAD_SIZE:]) == (1, now + 600_000, 1, b'{"step":1}')
    assert 590_000 < raw.pttl(b"user:{alice}:plan") <= 600_000
    store.run(svc.set(ALICE, b"plan", b"2"))
    assert struct.unpack(">BqqQ", blob(raw, b"user:{alice}:plan")[:HEAD_SIZE])[2] == 2


def test_an_expiry_change_keeps_the_value_and_moves_the_native_ttl(
    store: RedisStore, raw: redis.Redis
) -> None:
    """EXPIRE rewrites only the header (new expiry, same version) and the key's PTTL."""
    svc = svc_of(store)
    now = store.clock()
    value = b"x" * 5000
    store.run(svc.set(ALICE, b"k", value, expires_at=now + 60_000))
    assert store.run(svc.expire(ALICE, b"k", now + 7_200_000)) == 1
    stored = blob(raw, b"user:{alice}:k")
    assert stored[HEAD_SIZE:] == value
    assert struct.unpack(">BqqQ", stored[:HEAD_SIZE])[1:3] == (now + 7_200_000, 1)
    assert raw.pttl(b"user:{alice}:k") > 7_000_000


def test_namespace_text_is_escaped_in_tags(store: RedisStore, raw: redis.Redis) -> None:
    """Glob characters and braces in a namespace never reach another namespace's keys."""
    svc = svc_of(store)
    spaces = ["a*", "ab", "a?", "[a]", "a\\", "x}y", "x", "%7D"]
    for ns in spaces:
        store.run(svc.set(Principal(ns, LIMITS), b"k", ns.encode()))
    for ns in spaces:
        me = Principal(ns, LIMITS)
        assert store.run(svc.scan(me, 0, 2**62)) == (0, [b"k"])
        assert store.run(svc.count(me)) == 1
        assert store.run(svc.get(me, b"k")).value == ns.encode()
    assert key_prefix("x}y") == b"user:{x%7Dy}:"
    store.run(svc.flush(Principal("a*", LIMITS)))
    entries = raw.keys("user:*")
    assert sorted(entries) == sorted(key_prefix(ns) + b"k" for ns in spaces if ns != "a*")


def test_a_value_not_in_stash_format_reads_as_absent(store: RedisStore, raw: redis.Redis) -> None:
    """A string someone else wrote under the prefix is no entry; a write replaces it."""
    svc = svc_of(store)
    raw.set(b"user:{alice}:foreign", b"plain text")
    assert store.run(svc.get(ALICE, b"foreign")) is None
    assert store.run(svc.incr(ALICE, b"foreign", 2)) == 2
    assert store.run(svc.get(ALICE, b"foreign")).value == b"2"


def drive(plan: Plan, link: SyncLink, before: Callable[[int, list[Any]], None]) -> list[Any]:
    """Run a plan over a link, calling ``before(round, commands)`` ahead of each round."""
    steps = plan.steps()
    try:
        commands = next(steps)
        n = 0
        while True:
            before(n, commands)
            replies = link.round(commands)
            if plan.noscript:
                plan.noscript = False
                link.load_scripts()
            n += 1
            commands = steps.send(replies)
    except StopIteration as done:
        results: list[Any] = done.value
        return results


def _is_apply(commands: list[Any]) -> bool:
    return any(isinstance(c, tuple) and c[0] == "EVALSHA" for c in commands)


def test_a_write_between_read_and_commit_makes_the_operation_run_again(
    store: RedisStore, server: RedisServer
) -> None:
    """INCR reads 1; another node sets 10 before the commit; the check fails and INCR gives 11."""
    svc = svc_of(store)
    store.run(svc.set(ALICE, b"n", b"1"))
    other = RedisStore.from_url(server.url)
    link = SyncLink(store.target, SCRIPTS)
    interfered: list[int] = []

    def before(n: int, commands: list[Any]) -> None:
        if _is_apply(commands) and not interfered:
            interfered.append(n)
            other.run(svc.set(ALICE, b"n", b"10"))

    (result,) = drive(Plan([svc.incr(ALICE, b"n", 1)], store.clock, Stamps()), link, before)
    assert result == 11
    entry = store.run(svc.get(ALICE, b"n"))
    assert (entry.value, entry.version) == (b"11", 3)
    link.close()


def test_an_operation_whose_keys_never_stop_changing_gets_unavailable(
    store: RedisStore, server: RedisServer
) -> None:
    """After MAX_TRIES failed checks the operation answers UNAVAILABLE and wrote nothing."""
    svc = svc_of(store)
    store.run(svc.set(ALICE, b"n", b"1"))
    other = RedisStore.from_url(server.url)
    link = SyncLink(store.target, SCRIPTS)
    writes = 0

    def before(_: int, commands: list[Any]) -> None:
        nonlocal writes
        if _is_apply(commands):
            writes += 1
            other.run(svc.set(ALICE, b"n", b"%d" % (100 + writes)))

    (result,) = drive(Plan([svc.incr(ALICE, b"n", 1)], store.clock, Stamps()), link, before)
    assert isinstance(result, StoreUnavailable)
    assert "kept changing" in str(result)
    assert writes == MAX_TRIES
    assert store.run(svc.get(ALICE, b"n")).value == b"%d" % (100 + MAX_TRIES)
    link.close()


def test_later_operations_on_a_key_wait_for_an_earlier_one_that_must_run_again(
    store: RedisStore, server: RedisServer
) -> None:
    """In one batch, GET and APPEND after a conflicting INCR see the INCR, as sent."""
    svc = svc_of(store)
    store.run(svc.set(ALICE, b"n", b"1"))
    other = RedisStore.from_url(server.url)
    link = SyncLink(store.target, SCRIPTS)
    done = False

    def before(_: int, commands: list[Any]) -> None:
        nonlocal done
        if _is_apply(commands) and not done:
            done = True
            other.run(svc.set(ALICE, b"n", b"5"))

    batch = [svc.incr(ALICE, b"n", 1), svc.get(ALICE, b"n"), svc.append(ALICE, b"n", b"0")]
    results = drive(Plan(batch, store.clock, Stamps()), link, before)
    assert results[0] == 6
    assert results[1].value == b"6"
    assert results[2] == 2
    assert store.run(svc.get(ALICE, b"n")).value == b"60"
    link.close()


async def test_two_nodes_incrementing_one_key_lose_no_update(server: RedisServer) -> None:
    """Batches of INCRs from two stores and a thread on a third all count, exactly once."""
    nodes = [RedisStore.from_url(server.url) for _ in range(2)]
    for node in nodes:
        await node.open()
    direct = RedisStore.from_url(server.url)
    svc = svc_of(nodes[0])

    def thread() -> None:
        for _ in range(50):
            direct.run(svc.incr(ALICE, b"n", 1))

    async def hammer(node: RedisStore) -> list[Any]:
        out: list[Any] = []
        for _ in range(10):
            out += await node.run_many([svc.incr(ALICE, b"n", 1) for _ in range(20)])
        return out

    worker = threading.Thread(target=thread)
    worker.start()
    results = await asyncio.gather(*(hammer(n) for n in nodes))
    await asyncio.to_thread(worker.join)
    flat = [r for rs in results for r in rs]
    assert all(isinstance(r, int) for r in flat), [r for r in flat if not isinstance(r, int)]
    assert len(set(flat)) == len(flat)  # every INCR saw a value no other one saw
    final = await nodes[0].run_many([svc.get(ALICE, b"n")])
    assert final[0].value == b"%d" % (len(flat) + 50)
    for node in nodes:
        await node.close()
    await direct.close()


async def test_concurrent_merges_and_ifversion_are_atomic(server: RedisServer) -> None:
    """Merges sent to two nodes at once all land; of updates IFVERSION 1, exactly one wins.

    Each node has its batcher, as the daemon does: one batch in flight per node.
    """
    a, b = RedisStore.from_url(server.url), RedisStore.from_url(server.url)
    nodes = [Batcher(a), Batcher(b)]
    svc = svc_of(a)
    mid = await nodes[0].run(svc.stash(ALICE, b"{}"))
    merges = [
        nodes[i % 2].run_many([svc.update(ALICE, mid, merge=b'{"f%d":%d}' % (i, i))])
        for i in range(40)
    ]
    merged = [r[0] for r in await asyncio.gather(*merges)]
    assert all(type(r) is int and 0 < r <= 3_600_000 for r in merged), merged
    entry = await nodes[0].run(svc.get(ALICE, mid))
    assert all(b'"f%d":%d' % (i, i) in entry.value for i in range(40))
    assert entry.version == 41
    mid2 = await nodes[0].run(svc.stash(ALICE, b"{}"))
    racers = [
        nodes[i % 2].run_many([svc.update(ALICE, mid2, data=b"%d" % i, if_version=1)])
        for i in range(10)
    ]
    outcomes = [r[0] for r in await asyncio.gather(*racers)]
    assert sum(type(o) is int for o in outcomes) == 1, outcomes
    assert sum(isinstance(o, Conflict) for o in outcomes) == 9
    await a.close()
    await b.close()


def test_scripts_flushed_from_redis_are_loaded_again(store: RedisStore, raw: redis.Redis) -> None:
    """After SCRIPT FLUSH (a restart, a failover) both paths load the scripts and go on."""
    svc = svc_of(store)
    store.run(svc.set(ALICE, b"k", b"1"))
    raw.script_flush()
    assert store.run(svc.incr(ALICE, b"k", 1)) == 2
    raw.script_flush()

    async def batched() -> list[Any]:
        try:
            return await store.run_many([svc.set(ALICE, b"k", b"5"), svc.incr(ALICE, b"k", 1)])
        finally:
            await store.close()

    (written, old), incremented = asyncio.run(batched())
    assert written
    assert old.value == b"2"
    assert incremented == 6
    assert store.run(svc.get(ALICE, b"k")).value == b"6"


def test_an_unreachable_redis_is_a_clear_error_not_a_hang() -> None:
    """Opening fails naming the URL and the cause; operations answer UNAVAILABLE at once."""
    port = free_port()
    store = open_store("redis", redis_url=f"redis://127.0.0.1:{port}/0")
    assert isinstance(store, RedisStore)

    async def attempt() -> list[Any]:
        with pytest.raises(
            StoreOpenError, match=f"cannot connect to Redis at redis://127.0.0.1:{port}/0"
        ):
            await store.open()
        started = time.monotonic()
        results = await store.run_many([ops.Get("alice", b"k"), ops.Ping("")])
        assert time.monotonic() - started < 2
        return results

    results = asyncio.run(attempt())
    assert all(isinstance(r, StoreUnavailable) for r in results)
    assert "Connection refused" in str(results[0]) or "connect" in str(results[0])
    with pytest.raises(StoreUnavailable, match=f"127.0.0.1:{port}"):
        store.run(ops.Get("alice", b"k"))


def test_a_redis_that_restarts_is_used_again(redis_store: RedisServer) -> None:
    """Stopping Redis turns operations into UNAVAILABLE; once it is back they work again."""
    server = RedisServer()
    server.start()
    try:
        store = RedisStore.from_url(server.url)
        svc = svc_of(store)

        async def scenario() -> None:
            await store.open()
            assert await store.run_many([svc.set(ALICE, b"k", b"1")]) == [(True, None)]
            server.stop()
            down = await store.run_many([svc.get(ALICE, b"k")])
            assert isinstance(down[0], StoreUnavailable)
            server.start()
            for _ in range(50):  # the link waits RETRY_INTERVAL after a failed connect
                up = await store.run_many([svc.incr(ALICE, b"n", 1)])
                if up == [1]:
                    break
                await asyncio.sleep(0.05)
            assert up == [1]
            await store.close()

        asyncio.run(scenario())
    finally:
        server.stop()
    assert redis_store.port != server.port


def test_scan_pages_never_hold_more_than_count(store: RedisStore) -> None:
    """Pages of SCAN COUNT 1..3 over 200 keys hold at most COUNT keys and miss none."""
    svc = svc_of(store)
    for i in range(200):
        store.run(svc.set(ALICE, b"k%d" % i, b"v"))
    for count in (1, 2, 3):
        seen: list[bytes] = []
        cursor = 0
        while True:
            cursor, page = store.run(svc.scan(ALICE, cursor, count))
            assert len(page) <= count
            seen += page
            if cursor == 0:
                break
        assert {b"k%d" % i for i in range(200)} <= set(seen)


def test_a_namespace_pages_like_its_own_redis_among_other_keys(
    store: RedisStore, raw: redis.Redis
) -> None:
    """Among 25,000 keys of others, a 3-key namespace's pages are its own index: SCAN 0
    COUNT 10 brings it whole, and COUNT 1 takes exactly three pages, cursors 1, 2, 0."""
    svc = svc_of(store)
    pipe = raw.pipeline(transaction=False)
    for i in range(25_000):
        pipe.set(b"user:{someone-else}:%d" % i, b"x")
    pipe.execute()
    for key in (b"a", b"b", b"c"):
        store.run(svc.set(ALICE, key, b"v"))
    # The store itself takes any COUNT (the service caps what a client may ask for).
    cursor, page = store.run(ops.Scan(ALICE.namespace, 0, 2**62, None, None))
    assert (cursor, sorted(page)) == (0, [b"a", b"b", b"c"])
    assert store.run(svc.scan(ALICE, 0, 10)) == (0, [b"a", b"b", b"c"])
    walk = []
    cursor = 0
    while True:
        cursor, page = store.run(svc.scan(ALICE, cursor, 1))
        walk.append((cursor, page))
        if cursor == 0:
            break
    assert walk == [(1, [b"a"]), (2, [b"b"]), (0, [b"c"])]
    assert store.run(svc.count(ALICE)) == 3


def test_urls_name_host_db_credentials_tls_and_cluster() -> None:
    """redis://, rediss://, unix:// and +cluster URLs, with redis-py's option names."""
    t = RedisTarget.parse("redis://u:p%40ss@h.example:7000/3?socket_timeout=2.5")
    assert (t.host, t.port, t.db, t.username, t.password, t.timeout) == (
        "h.example",
        7000,
        3,
        "u",
        "p@ss",
        2.5,
    )
    assert t.display() == "redis://h.example:7000/3"
    assert "p@ss" not in t.display()
    s = RedisTarget.parse("rediss://h/0")
    assert (s.tls, s.ca_certs, s.cert_reqs, s.check_hostname) == (True, None, "required", True)
    assert RedisTarget.parse("rediss://h?ssl_cert_reqs=none").check_hostname is False
    assert RedisTarget.parse("unix:///run/r.sock?db=2").path == "/run/r.sock"
    assert RedisTarget.parse("redis+cluster://h:7000").cluster
    assert RedisTarget.parse("redis://h:7000", cluster=True).display() == "redis+cluster://h:7000/0"
    for bad, why in [
        ("http://h", "a Redis URL starts with"),
        ("redis://h:99999", "port"),
        ("redis://h/x", "database number"),
        ("redis://h?nope=1", "unknown option 'nope'"),
        ("redis://h?socket_timeout=0", "must be positive"),
        ("rediss://h?ssl_cert_reqs=maybe", "ssl_cert_reqs"),
        ("redis+cluster://h/2", "only database 0"),
        ("unix://", "socket's path"),
    ]:
        with pytest.raises(ValueError, match=why):
            RedisTarget.parse(bad)
    with pytest.raises(ValueError) as caught:
        RedisTarget.parse("http://u:secret@h")
    assert "secret" not in str(caught.value)


def test_the_sync_link_reports_a_dead_redis_as_a_link_error() -> None:
    """redis-py's connection errors become LinkError naming the target."""
    link = SyncLink(
        RedisTarget.parse(f"redis://127.0.0.1:{free_port()}/0?socket_connect_timeout=1")
    )
    with pytest.raises(LinkError, match=r"127\.0\.0\.1"):
        link.round([("PING",)])
    link.close()


def test_the_cluster_store_runs_directly_too(redis_cluster: Any) -> None:  # noqa: ANN401
    """The synchronous path on a Redis Cluster: SCAN and FLUSH reach the namespace's node."""
    redis_cluster.flush()
    store = RedisStore.from_url(redis_cluster.url)
    svc = svc_of(store)
    people = [Principal(f"ns{i}", LIMITS) for i in range(6)]
    for p in people:
        for k in range(5):
            store.run(svc.set(p, b"k%d" % k, b"v"))
    for p in people:
        assert sorted(store.run(svc.scan(p, 0, 2**62))[1]) == [b"k%d" % k for k in range(5)]
        assert store.run(svc.count(p)) == 5
    store.run(svc.flush(people[0]))
    assert store.run(svc.count(people[0])) == 0
    assert store.run(svc.count(people[1])) == 5
    entry = store.run(svc.get(people[1], b"k1"))
    assert isinstance(entry, Entry)
    asyncio.run(store.close())


def test_a_password_a_user_and_a_database_from_the_url(tmp_path: Path) -> None:
    """AUTH (with or without a user name) and SELECT come from the URL; a wrong one is named."""
    with RedisServer("--requirepass", "s3cret", "--unixsocket", str(tmp_path / "r.sock")) as own:
        for n, url in enumerate(
            (
                f"redis://:s3cret@127.0.0.1:{own.port}/2",
                f"redis://default:s3cret@127.0.0.1:{own.port}/2",
                f"unix://default:s3cret@{tmp_path}/r.sock?db=2",
            ),
            start=1,
        ):
            store = RedisStore.from_url(url)

            async def use(store: RedisStore = store) -> list[Any]:
                await store.open()
                try:
                    return await store.run_many([svc_of(store).incr(ALICE, b"n", 1)])
                finally:
                    await store.close()

            assert asyncio.run(use()) == [n]
            assert store.run(svc_of(store).get(ALICE, b"n")).value == b"%d" % n
        raw = redis.Redis(port=own.port, password="s3cret", db=2, protocol=2)
        assert raw.get(b"user:{alice}:n") is not None
        raw.close()
        wrong = RedisStore.from_url(f"redis://:nope@127.0.0.1:{own.port}/0")
        with pytest.raises(StoreOpenError, match="Redis refused the connection setup: WRONGPASS"):
            asyncio.run(wrong.open())


def test_a_redis_that_stops_answering_is_an_error_within_the_timeout() -> None:
    """A frozen Redis (SIGSTOP) gets UNAVAILABLE after socket_timeout, and serves once thawed."""
    with RedisServer() as own:
        assert own.proc is not None
        store = RedisStore.from_url(f"{own.url}?socket_timeout=0.5")
        svc = svc_of(store)

        async def scenario() -> None:
            await store.open()
            own.proc.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                (frozen,) = await store.run_many([svc.set(ALICE, b"k", b"v")])
                assert 0.4 < time.monotonic() - started < 2
                assert isinstance(frozen, StoreUnavailable)
                assert "did not answer within 0.5 s" in str(frozen)
            finally:
                own.proc.send_signal(signal.SIGCONT)
            for _ in range(40):
                (thawed,) = await store.run_many([svc.incr(ALICE, b"n", 1)])
                if thawed == 1:
                    break
                await asyncio.sleep(0.05)
            assert thawed == 1
            await store.close()

        asyncio.run(scenario())


def test_redis_refusing_a_write_is_unavailable_with_its_reason(
    store: RedisStore, raw: redis.Redis
) -> None:
    """A key of another type under the prefix: Redis's WRONGTYPE, passed on, nothing changed."""
    raw.hset(b"user:{alice}:h", b"f", b"v")
    with pytest.raises(StoreUnavailable, match="Redis refused the write: WRONGTYPE"):
        store.run(svc_of(store).incr(ALICE, b"h", 1))
    assert raw.type(b"user:{alice}:h") == b"hash"


def test_plain_sets_and_gets_take_one_fetch_and_one_commit_with_one_apply_per_run(
    store: RedisStore,
) -> None:
    """A batch of SETs with a GET among them: one MGET round, then one round holding an
    APPLY for the SETs before the GET, the GET itself, and an APPLY for those after."""
    svc = svc_of(store)
    store.run(svc.set(ALICE, b"k0", b"old"))
    link = SyncLink(store.target, SCRIPTS)
    rounds: list[list[str]] = []

    def before(_: int, commands: list[Any]) -> None:
        rounds.append([c[0] for c in commands])

    sets = [svc.set(ALICE, b"k%d" % (n % 3), b"v%d" % n) for n in range(6)]
    batch = [*sets[:3], svc.get(ALICE, b"k0"), *sets[3:]]
    results = drive(Plan(batch, store.clock, Stamps()), link, before)
    assert rounds == [["MGET"], ["EVALSHA", "GET", "EVALSHA"]]
    assert [r[0] for r in results[:3] + results[4:]] == [True] * 6
    assert results[0][1].value == b"old"  # SET's old entry, as it read it
    assert results[3].value == b"v0"  # the GET sees the writes before it, not after
    entry = store.run(svc.get(ALICE, b"k0"))
    assert (entry.value, entry.version) == (b"v3", 3)  # old, v0, v3: one version each
    link.close()


def test_in_one_apply_an_operation_whose_check_fails_leaves_the_others_applied(
    store: RedisStore, server: RedisServer
) -> None:
    """Another node changes one key between fetch and commit: only the SET of that key
    runs again, the others in the same APPLY call land at once, and all end as sent."""
    svc = svc_of(store)
    for name in (b"a", b"b", b"c"):
        store.run(svc.set(ALICE, name, b"0"))
    other = RedisStore.from_url(server.url)
    link = SyncLink(store.target, SCRIPTS)
    applies: list[int] = []

    def before(_: int, commands: list[Any]) -> None:
        if _is_apply(commands):
            applies.append(len(commands))
            if len(applies) == 1:
                other.run(svc.set(ALICE, b"b", b"other"))

    batch: list[ops.Op] = [svc.set(ALICE, name, b"1") for name in (b"a", b"b", b"c")]
    results = drive(Plan(batch, store.clock, Stamps()), link, before)
    assert [r[0] for r in results] == [True, True, True]
    assert applies == [1, 1]  # one call for all three, then one for the SET of b alone
    versions = {n: store.run(svc.get(ALICE, n)).version for n in (b"a", b"b", b"c")}
    assert versions == {b"a": 2, b"b": 3, b"c": 2}
    link.close()


def test_a_long_run_of_writes_is_cut_into_calls_of_apply_ops(store: RedisStore) -> None:
    """APPLY_OPS + 1 SETs to one namespace commit in two calls, so no call holds Redis long."""
    svc = svc_of(store)
    link = SyncLink(store.target, SCRIPTS)
    commits: list[int] = []

    def before(_: int, commands: list[Any]) -> None:
        if _is_apply(commands):
            commits.append(len(commands))

    batch: list[ops.Op] = [svc.set(ALICE, b"k%d" % n, b"v") for n in range(APPLY_OPS + 1)]
    results = drive(Plan(batch, store.clock, Stamps()), link, before)
    assert all(r == (True, None) for r in results)
    assert commits == [2]
    assert store.run(svc.count(ALICE)) == APPLY_OPS + 1
    link.close()
