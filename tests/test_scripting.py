"""Lua scripting against a real daemon on every backend: the libraries that need EVAL work.

redis-py's Lock (sync and asyncio), register_script and its NOSCRIPT retry, and the
``limits`` library run as their users run them; scripts that loop or allocate without
end are stopped while the server keeps answering; the sandbox, the namespace wall and
Stash's TTL rules hold inside a script.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import limits
import pytest
import redis
import redis.asyncio
from limits.storage import storage_from_string
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from redis.exceptions import LockNotOwnedError, ResponseError

from stashd.registry import SQLiteRegistry
from tests.support.servers import RedisServer, StashDaemon
from tests.test_strict import Strict, _key

#: A short time limit, so the loop tests take a fraction of a second.
TIME_LIMIT_MS = 300


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def daemon(request: pytest.FixtureRequest) -> Iterator[StashDaemon]:
    """A daemon per backend, with a short script time limit."""
    extra: tuple[str, ...] = ("--lua-time-limit", str(TIME_LIMIT_MS), "--no-http")
    if request.param == "redis":
        store: RedisServer = request.getfixturevalue("redis_store")
        extra += ("--redis-url", store.url)
    with StashDaemon("--backend", request.param, *extra) as d:
        yield d


@pytest.fixture
def r(daemon: StashDaemon) -> Iterator[redis.Redis]:
    """A redis-py client in a namespace of its own."""
    client = redis.Redis(port=daemon.port, password=f"key-{uuid.uuid4().hex}")
    yield client
    client.close()


def test_redis_py_lock_acquires_extends_releases_and_hands_over(
    daemon: StashDaemon, r: redis.Redis
) -> None:
    """Lock: acquire, extend, release; a second waiter gets it only after the release."""
    lock = r.lock("job", timeout=10)
    assert lock.acquire(blocking=False)
    assert lock.owned()
    assert lock.extend(20)
    assert 20_000 < r.pttl("job") <= 30_000
    assert lock.reacquire()
    assert 9_000 < r.pttl("job") <= 10_000

    other = redis.Redis(port=daemon.port, password=r.connection_pool.connection_kwargs["password"])
    # Not thread-local: it is acquired in the thread below and checked here.
    waiter = other.lock("job", timeout=10, blocking_timeout=5, thread_local=False)
    got = threading.Event()

    def wait() -> None:
        if waiter.acquire():
            got.set()

    thread = threading.Thread(target=wait)
    thread.start()
    assert not got.wait(0.3)  # held: the waiter keeps waiting
    token = lock.local.token
    lock.release()
    assert got.wait(5)
    thread.join()
    assert waiter.owned()
    assert not lock.owned()
    lock.local.token = token  # a stale holder: the release script finds another's token
    with pytest.raises(LockNotOwnedError):
        lock.release()
    assert waiter.owned()
    waiter.release()
    assert r.exists("job") == 0
    other.close()


async def test_redis_py_async_lock(daemon: StashDaemon) -> None:
    """The asyncio Lock does the same over the same scripts."""
    password = f"key-{uuid.uuid4().hex}"
    a = redis.asyncio.Redis(port=daemon.port, password=password)
    b = redis.asyncio.Redis(port=daemon.port, password=password)
    try:
        first = a.lock("job", timeout=10)
        assert await first.acquire(blocking=False)
        assert await first.extend(5)
        second = b.lock("job", timeout=10, blocking_timeout=5, sleep=0.01)
        waiting = asyncio.create_task(second.acquire())
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await first.release()
        assert await asyncio.wait_for(waiting, 5)
        assert await second.owned()
        await second.release()
        assert await a.exists("job") == 0
    finally:
        await a.aclose()
        await b.aclose()


def test_register_script_and_the_noscript_retry(r: redis.Redis) -> None:
    """A Script object runs by EVALSHA; after SCRIPT FLUSH, redis-py loads it again."""
    add = r.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
    assert add(keys=["n"], args=[2]) == 2
    assert r.script_exists(add.sha) == [True]
    assert r.script_flush() is True
    assert r.script_exists(add.sha) == [False]
    with pytest.raises(redis.exceptions.NoScriptError):
        r.evalsha(add.sha, 1, "n", 1)
    assert add(keys=["n"], args=[3]) == 5  # NOSCRIPT, then SCRIPT LOAD and EVALSHA again
    assert r.script_exists(add.sha) == [True]
    pipe = r.pipeline()
    add(keys=["n"], args=[1], client=pipe)
    pipe.get("n")
    assert pipe.execute() == [6, b"6"]


@pytest.mark.parametrize(
    "strategy",
    [FixedWindowRateLimiter, SlidingWindowCounterRateLimiter, MovingWindowRateLimiter],
    ids=["fixed", "sliding", "moving"],
)
def test_limits_library_allows_up_to_the_limit_then_refuses(
    daemon: StashDaemon, strategy: type[FixedWindowRateLimiter]
) -> None:
    """The limits library (Flask-Limiter, SlowAPI) over stashd: 5 hits pass, the 6th not.

    The moving window keeps each hit's time in a list, with LPUSH, LTRIM and LINDEX
    inside its Lua scripts.
    """
    storage = storage_from_string(f"redis://:key-{uuid.uuid4().hex}@127.0.0.1:{daemon.port}")
    limiter = strategy(storage)
    rule = limits.parse("5/minute")
    assert [limiter.hit(rule, "user", "login") for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.hit(rule, "other", "login")  # another identity has its own window
    stats = limiter.get_window_stats(rule, "user", "login")
    assert stats.remaining == 0
    assert time.time() < stats.reset_time <= time.time() + 121


def test_a_script_that_loops_forever_is_stopped_and_keeps_nothing(r: redis.Redis) -> None:
    """A loop past the time limit answers an error, its writes are undone, PING answers."""
    started = time.monotonic()
    with pytest.raises(ResponseError, match="time limit"):
        r.eval("redis.call('set', KEYS[1], 'x') while true do end", 1, "k")
    assert time.monotonic() - started < 5
    assert r.exists("k") == 0
    with pytest.raises(ResponseError, match="time limit"):
        r.eval("while true do pcall(function() while true do end end) end", 0)
    assert r.ping()
    assert r.eval("return 1", 0) == 1


def test_a_script_that_allocates_without_end_is_stopped(r: redis.Redis) -> None:
    """Unbounded allocation hits the Lua memory cap: an error reply, and the server lives."""
    with pytest.raises(ResponseError, match="bytes of Lua memory and was stopped"):
        r.eval("redis.call('set', KEYS[1], 'x') local s = 'x' while true do s = s .. s end", 1, "k")
    assert r.exists("k") == 0
    assert r.ping()
    assert r.eval("return #string.rep('x', 1000)", 0) == 1000


def test_the_sandbox_has_no_way_out(r: redis.Redis) -> None:
    """os, io, require, debug, package, the runtime's python table: none is reachable."""
    for name in ("os", "io", "require", "debug", "package", "dofile", "loadfile", "python"):
        with pytest.raises(ResponseError, match=f"nonexistent global variable '{name}'"):
            r.eval(f"return type({name})", 0)
    assert r.eval("return loadstring(string.dump(function() end))", 0) is None
    with pytest.raises(ResponseError, match="readonly table"):
        r.eval("redis.call = function() end", 0)
    # A Python callable's attributes are not reachable from Lua.
    with pytest.raises(ResponseError):
        r.eval("return redis.call.__globals__", 0)
    assert r.eval("return getmetatable('')", 0) is None


def test_errors_name_the_line_of_the_script(r: redis.Redis) -> None:
    """The failing redis.call's line, as Redis 7 words it."""
    source = "local a = 1\nlocal b = 2\nreturn redis.call('incr', KEYS[1])"
    r.set("s", "text")
    with pytest.raises(ResponseError) as info:
        r.eval(source, 1, "s")
    assert str(info.value).endswith(", on @user_script:3.")
    assert "value is not an integer or out of range script: " in str(info.value)


def test_ttl_rules_hold_inside_a_script(r: redis.Redis) -> None:
    """A SET without a TTL gets the default TTL; one past the maximum is refused, unwritten."""
    assert r.eval("return redis.call('set', KEYS[1], 'v')", 1, "plain") == b"OK"
    assert 3590 <= r.ttl("plain") <= 3600
    with pytest.raises(ResponseError, match="TTL"):
        r.eval("return redis.call('set', KEYS[1], 'v', 'EX', 10000000)", 1, "long")
    assert r.exists("long") == 0
    # A script that fails after a write keeps the write, as Redis does.
    with pytest.raises(ResponseError, match="boom"):
        r.eval("redis.call('set', KEYS[1], 'v') error('boom')", 1, "kept")
    assert r.get("kept") == b"v"


def test_a_script_reaches_keys_it_did_not_declare(r: redis.Redis) -> None:
    """A key named only in ARGV is read and written like a declared one (non-cluster Redis)."""
    r.set("a", "1")
    assert (
        r.eval(
            "redis.call('set', ARGV[1], redis.call('get', ARGV[2])) return redis.call('get', ARGV[1])",
            0,
            "copy",
            "a",
        )
        == b"1"
    )
    assert r.eval("return redis.call('dbsize')", 0) == 2
    assert sorted(r.eval("return redis.call('scan', 0)[2]", 0)) == [b"a", b"copy"]


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Strict]:
    """A strict-mode daemon; each test makes its own keys."""
    db: Path = tmp_path_factory.mktemp("strict") / "stash.db"
    SQLiteRegistry(db).close()
    with StashDaemon("--auth", "keys", "--db", str(db), "--no-http") as daemon:
        yield Strict(daemon, db)


def test_a_script_sees_only_its_own_namespace(strict: Strict) -> None:
    """Two API keys: neither's scripts nor keys are visible to the other's scripts."""
    alice = redis.Redis(port=strict.port, password=_key(strict.db)[0])
    bob = redis.Redis(port=strict.port, password=_key(strict.db)[0])
    alice.set("secret", "alice's", ex=100)
    sha = alice.script_load("return redis.call('get', 'secret')")
    assert alice.evalsha(sha, 0) == b"alice's"
    assert bob.script_exists(sha) == [False]
    with pytest.raises(redis.exceptions.NoScriptError):
        bob.evalsha(sha, 0)
    assert bob.eval("return redis.call('get', 'secret')", 0) is None
    assert bob.eval("return redis.call('dbsize')", 0) == 0
    bob.script_flush()
    assert alice.script_exists(sha) == [True]
    alice.close()
    bob.close()


def test_each_command_a_script_runs_counts_against_the_rate_limit() -> None:
    """A script of ten calls spends ten units, as ten commands sent one by one would.

    With a burst of 12, two more commands are served after it, and the third refused.
    """
    with StashDaemon("--backend", "memory", "--rate-limit", "12/hour", "--rate-burst", "12") as d:
        client = redis.Redis(port=d.port, password=f"key-{uuid.uuid4().hex}")
        try:
            script = "for i = 1, 10 do redis.call('SET', KEYS[1], i) end return 1"
            assert client.eval(script, 1, "k") == 1
            assert client.get("k") == b"10"
            assert client.get("k") == b"10"
            with pytest.raises(ResponseError, match="RATELIMIT"):
                client.get("k")
        finally:
            client.close()


def _busy(client: redis.Redis) -> bool:
    """Whether a read is answered BUSY now (a script runs past its time limit)."""
    try:
        client.get("probe")
    except ResponseError as exc:
        assert str(exc).startswith("BUSY Redis is busy running a script"), exc
        return True
    return False


def test_past_the_time_limit_others_get_busy_and_script_kill_stops_it(
    daemon: StashDaemon,
) -> None:
    """As in Redis: a script past lua-time-limit makes every client BUSY until it ends;
    SCRIPT KILL from its namespace stops it, from another one does not, and nothing it
    wrote is kept."""
    key = f"key-{uuid.uuid4().hex}"
    owner = redis.Redis(port=daemon.port, password=key)
    other = redis.Redis(port=daemon.port, password=f"key-{uuid.uuid4().hex}")
    got: list[object] = []

    def run() -> None:
        try:
            got.append(owner.eval("redis.call('set', KEYS[1], 'x') while true do end", 1, "k"))
        except ResponseError as exc:
            got.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 10
    while not _busy(other):  # each GET waits its turn, then is answered BUSY or nil
        assert time.monotonic() < deadline, "never BUSY"
    with pytest.raises(ResponseError, match="NOTBUSY"):
        other.script_kill()  # another namespace's script is not its to kill
    killer = redis.Redis(port=daemon.port, password=key)
    assert killer.script_kill()
    thread.join(10)
    assert got == ["Script killed by user with SCRIPT KILL..."]
    assert other.ping()
    assert owner.exists("k") == 0
    for client in (owner, other, killer):
        client.close()
