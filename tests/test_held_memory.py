"""Memory held for clients: queued MULTI requests and --maxmemory, over the wire on real daemons."""

from __future__ import annotations

import time
from collections.abc import Iterator

import aiohttp
import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from stashd.errors import OutOfMemory, QueueFull
from stashd.held import HeldMemory, request_bytes
from tests.support.resp_client import RespClient
from tests.support.servers import StashDaemon

KIB = 1024
MIB = 1024 * KIB
OOM = "-OOM command not allowed when used memory > 'maxmemory'."


def _queued(c: RespClient, n: int, size: int, key: str = "k") -> list[str]:
    """Queue ``n`` SETs of ``size`` bytes inside an open MULTI; their replies."""
    value = b"x" * size
    return [c.call("SET", f"{key}{i}", value).render() for i in range(n)]


def _eventually(check: Iterator[bool], timeout: float = 10.0) -> None:
    """Wait until ``check`` yields True (each attempt one round trip), or fail."""
    deadline = time.monotonic() + timeout
    for ok in check:
        if ok:
            return
        assert time.monotonic() < deadline, "condition not reached in time"


def test_a_connection_queues_no_more_than_its_query_buffer_limit() -> None:
    """Past --max-query-buffer of queued bytes: refused naming both numbers, EXEC aborts."""
    with StashDaemon("--backend", "memory", "--max-query-buffer", str(3 * MIB)) as d:
        c = RespClient(d.port)
        assert c.call("MULTI").render() == "+OK"
        replies = _queued(c, 3, MIB)
        assert replies[:2] == ["+QUEUED", "+QUEUED"]
        size = 3 * request_bytes([b"SET", b"k0", b"x" * MIB])
        assert replies[2] == (
            f"-ERR queued MULTI requests would hold {size} bytes on this connection, "
            f"the limit is {3 * MIB} bytes"
        )
        assert c.call("EXEC").render().startswith("-EXECABORT")
        assert c.call("DBSIZE").render() == ":0"
        # EXEC let the queue go: the same connection may queue as much again.
        assert c.call("MULTI").render() == "+OK"
        assert _queued(c, 2, MIB) == ["+QUEUED", "+QUEUED"]
        assert c.call("EXEC").render() == "[+OK, +OK]"


def test_queues_of_one_namespace_share_its_storage_quota() -> None:
    """Two connections of one namespace together queue at most its quota's bytes; close frees."""
    with StashDaemon("--backend", "memory", "--max-bytes", "3mb") as d:
        first, second = RespClient(d.port), RespClient(d.port)
        for c in (first, second):
            assert c.call("AUTH", "tenant-a").render() == "+OK"
            assert c.call("MULTI").render() == "+OK"
        assert _queued(first, 2, MIB) == ["+QUEUED", "+QUEUED"]
        refused = _queued(second, 1, MIB)[0]
        assert refused.startswith("-ERR queued MULTI requests would hold ")
        assert refused.endswith(f" bytes in this namespace, the limit is {3 * MIB} bytes")
        # Another namespace is not held back by this one's queues.
        other = RespClient(d.port)
        assert other.call("AUTH", "tenant-b").render() == "+OK"
        assert other.call("MULTI").render() == "+OK"
        assert _queued(other, 2, MIB) == ["+QUEUED", "+QUEUED"]
        # A connection closed with its queue unsent lets the queue go.
        first.close()
        assert second.call("DISCARD").render() == "+OK"

        def retry() -> Iterator[bool]:
            while True:
                assert second.call("MULTI").render() == "+OK"
                replies = _queued(second, 2, MIB)
                yield replies == ["+QUEUED", "+QUEUED"]
                assert second.call("DISCARD").render() == "+OK"

        _eventually(retry())


def test_over_maxmemory_writes_that_add_data_get_oom_and_the_rest_goes_on() -> None:
    """--maxmemory on the memory store: OOM in Redis's words, reads and deletes still work."""
    with StashDaemon("--backend", "memory", "--maxmemory", "4mb") as d:
        r = redis.Redis(port=d.port)
        assert r.config_get("maxmemory") == {"maxmemory": str(4 * MIB)}
        assert r.info("memory")["maxmemory"] == 4 * MIB
        c = RespClient(d.port)
        value = b"v" * (256 * KIB)
        written = 0
        for i in range(64):
            reply = c.call("SET", f"big{i}", value).render()
            if reply != "+OK":
                assert reply == OOM
                break
            written += 1
        assert 12 <= written <= 17, written  # 4 MiB of 256 KiB values, give or take overhead
        for command in (
            ("STASH", "{}"),
            ("APPEND", "big0", "x"),
            ("INCR", "n"),
            ("MSET", "a", "1"),
        ):
            assert c.call(*command).render() == OOM, command
        assert c.call("GET", "big0").render().startswith("$'vvv")
        assert c.call("EXPIRE", "big0", "100").render() == ":1"
        # Queued while over: refused at EXEC in its place; the rest of the queue runs.
        assert c.call("MULTI").render() == "+OK"
        assert c.call("SET", "q", "1").render() == "+QUEUED"
        assert c.call("DEL", "big2").render() == "+QUEUED"
        assert c.call("EXEC").render() == f"[{OOM}, :1]"
        # Deleting frees: the next write fits again.
        assert c.call("DEL", "big0", "big1").render() == ":2"
        assert c.call("SET", "after", value).render() == "+OK"


def test_expiry_frees_what_maxmemory_counts() -> None:
    """Keys that expire stop counting once freed: writes fit again without any delete."""
    with StashDaemon("--backend", "memory", "--maxmemory", "2mb") as d:
        c = RespClient(d.port)
        value = b"v" * (256 * KIB)
        for i in range(16):
            if c.call("SET", f"short{i}", value, "PX", "300").render() == OOM:
                break
        else:
            pytest.fail("maxmemory was never reached")

        def retry() -> Iterator[bool]:
            while True:
                yield c.call("SET", "later", value).render() == "+OK"

        _eventually(retry())


async def test_http_writes_over_maxmemory_are_507() -> None:
    """POST /stash over maxmemory: 507 out_of_memory; GET still answers."""
    with StashDaemon("--backend", "memory", "--maxmemory", "1mb") as d:
        c = RespClient(d.port)
        filled = 0
        while c.call("SET", f"fill{filled}", b"f" * (64 * KIB)).render() == "+OK":
            filled += 1
        async with aiohttp.ClientSession(d.http_url) as http:
            async with http.post("/stash", json={"data": {"a": 1}}) as resp:
                assert resp.status == 507
                body = await resp.json()
                assert body["error"]["code"] == "out_of_memory"
                assert body["error"]["message"] == OOM[5:]
            async with http.get("/stash") as resp:
                assert resp.status == 200


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), st.integers(1, 400)),
        max_size=60,
    )
)
def test_held_counts_stay_the_sum_of_what_is_held(steps: list[tuple[str, int, int]]) -> None:
    """Random holds and releases: totals are exact, limits never passed, refusals change nothing."""
    held = HeldMemory(max_queue=1000)
    conns: dict[tuple[str, int], int] = {}
    for ns, conn, size in steps:
        key = (ns, conn)
        have = conns.get(key, 0)
        if size % 5 == 0 and have:
            held.release(ns, have)
            conns[key] = 0
            continue
        before = (held.queued, dict(held.by_namespace))
        try:
            held.hold(ns, have, size, 1500)
        except QueueFull:
            assert (held.queued, held.by_namespace) == before
            continue
        conns[key] = have + size
        assert conns[key] <= 1000
    assert held.queued == sum(conns.values())
    for ns in ("a", "b"):
        total = sum(v for (n, _), v in conns.items() if n == ns)
        assert held.by_namespace.get(ns, 0) == total <= 1500


def test_check_counts_the_store_and_the_queues() -> None:
    """maxmemory compares the store's bytes plus queued bytes; 0 is no limit."""
    store = [900]
    held = HeldMemory(maxmemory=1000, store_bytes=lambda: store[0])
    held.check()
    held.hold("a", 0, 100, None)
    held.check()  # exactly at the limit is not over it
    held.hold("a", 100, 1, None)
    with pytest.raises(OutOfMemory):
        held.check()
    held.release("a", 101)
    held.check()
    HeldMemory(store_bytes=lambda: 10**12).check()
