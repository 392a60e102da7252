"""Real clients against a real daemon: redis-py (sync, asyncio; RESP3 and RESP2)."""

from __future__ import annotations

import logging
import re
import uuid
import warnings

import pytest
import redis
import redis.asyncio

from tests.support.servers import StashDaemon

BASE62_ID = re.compile(rb"^[0-9A-Za-z]{8}$")


@pytest.fixture
def password() -> str:
    """A fresh key, so each test has its own namespace on the shared daemon."""
    return f"key-{uuid.uuid4().hex}"


@pytest.mark.parametrize("protocol", [3, 2])
def test_redis_py_sync_does_everything_without_warnings(
    stashd_server: StashDaemon, password: str, protocol: int, caplog: pytest.LogCaptureFixture
) -> None:
    """redis-py with default settings (HELLO 3 AUTH) and with protocol=2 works cleanly."""
    caplog.set_level(logging.DEBUG, logger="redis")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = redis.Redis(port=stashd_server.port, password=password, protocol=protocol)
        assert r.set("plan", '{"step":1}', ex=600)
        assert r.get("plan") == b'{"step":1}'
        assert r.ttl("plan") in (599, 600)
        assert r.expire("plan", 100)
        assert r.ttl("plan") in (99, 100)
        assert sorted(r.scan_iter()) == [b"plan"]
        pipe = r.pipeline()
        pipe.set("n", 1).incr("n").get("n")
        assert pipe.execute() == [True, 2, b"2"]
        pipe = r.pipeline(transaction=False)
        pipe.incr("n").decr("n")
        assert pipe.execute() == [3, 2]
        mid = r.execute_command("STASH", '{"task":"summarize"}', "EX", 3600)
        assert BASE62_ID.match(mid)
        assert r.execute_command("RECALL", mid) == b'{"task":"summarize"}'
        assert r.execute_command("UPDATE", mid, "EXTEND", 1800) in (5399, 5400)
        r.execute_command("UPDATE", mid, "MERGE", '{"progress":0.5}')
        meta = r.execute_command("RECALL", mid, "WITHMETA")
        if protocol == 2:
            meta = dict(zip(meta[::2], meta[1::2], strict=True))
        assert meta[b"data"] == b'{"task":"summarize","progress":0.5}'
        assert meta[b"version"] == 2
        with pytest.raises(redis.ResponseError, match="version is 2, IFVERSION expected 1"):
            r.execute_command("UPDATE", mid, "DATA", "{}", "IFVERSION", 1)
        assert r.execute_command("FORGET", mid) == 1
        assert r.delete("plan", "n") == 2
        # What langchain's get_client and monitoring tools read, parsed by redis-py.
        assert r.info("cluster") == {"cluster_enabled": 0}
        assert isinstance(r.info("memory")["used_memory"], int)
        r.close()
    bad = [rec for rec in caplog.records if rec.levelno >= logging.WARNING]
    assert not bad, [rec.getMessage() for rec in bad]


def test_watch_conflict_aborts_exec(stashd_server: StashDaemon, password: str) -> None:
    """A WATCHed key changed by another client makes EXEC run nothing."""
    r = redis.Redis(port=stashd_server.port, password=password)
    other = redis.Redis(port=stashd_server.port, password=password)
    r.set("x", 1)
    with r.pipeline() as pipe:
        pipe.watch("x")
        other.set("x", 5)
        pipe.multi()
        pipe.incr("x")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert r.get("x") == b"5"
    r.close()
    other.close()


@pytest.mark.parametrize("protocol", [3, 2])
async def test_redis_py_asyncio(stashd_server: StashDaemon, password: str, protocol: int) -> None:
    """redis.asyncio does the same round trips, pipelines included."""
    r = redis.asyncio.Redis(port=stashd_server.port, password=password, protocol=protocol)
    assert await r.set("k", "v", ex=50)
    assert await r.get("k") == b"v"
    assert await r.ttl("k") in (49, 50)
    async with r.pipeline() as pipe:
        pipe.set("a", 1).incr("a")
        assert await pipe.execute() == [True, 2]
    mid = await r.execute_command("STASH", "[1, 2]")
    assert await r.execute_command("RECALL", mid) == b"[1, 2]"
    # Not "a*": the 8-character STASH id may start with "a" too.
    assert [k async for k in r.scan_iter(match="[a]")] == [b"a"]
    assert await r.delete("k", "a", mid) == 3
    await r.aclose()


def test_namespaces_do_not_leak(stashd_server: StashDaemon) -> None:
    """Two keys see disjoint data through every command that lists, counts or moves keys."""
    alice = redis.Redis(port=stashd_server.port, password=f"alice-{uuid.uuid4().hex}")
    bob = redis.Redis(port=stashd_server.port, password=f"bob-{uuid.uuid4().hex}")
    alice.set("shared-name", "alice's")
    alice.set("only-alice", "1")
    assert bob.get("shared-name") is None
    assert bob.mget("shared-name", "only-alice") == [None, None]
    assert bob.exists("shared-name", "only-alice") == 0
    assert bob.keys("*") == []
    assert list(bob.scan_iter()) == []
    assert bob.dbsize() == 0
    with pytest.raises(redis.ResponseError, match="no such key"):
        bob.rename("only-alice", "stolen")
    bob.set("shared-name", "bob's")
    bob.flushall()
    assert alice.get("shared-name") == b"alice's"
    assert alice.dbsize() == 2
    anonymous = redis.Redis(port=stashd_server.port)
    assert anonymous.get("only-alice") is None
    alice.flushdb()
    for client in (alice, bob, anonymous):
        client.close()
