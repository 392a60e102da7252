"""The guards of a server facing a network: query buffer cap, pre-auth caps, max clients,
and open mode's rate limit; the framing rules first, then a real daemon for each guard.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd.errors import PayloadTooLarge, ProtocolError, QueryBufferFull
from stashd.resp import MAX_ARGS, MAX_BULK, PREAUTH_MAX_ARGS, PREAUTH_MAX_BULK, RequestReader
from stashd.server import Connection, ServerContext
from stashd.service import MemoryService
from stashd.store.memory import MemoryStore
from stashd.tenancy import OpenKeyring
from stashd.types import Limits, Principal
from tests.support.resp_client import CLOSED, Reply, RespClient
from tests.support.servers import RedisServer, StashDaemon
from tests.support.transport import Transport


def _request(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _reader(max_payload: int, max_request: int) -> RequestReader:
    reader = RequestReader()
    reader.set_limits(
        max_args=MAX_ARGS, max_bulk=MAX_BULK, max_payload=max_payload, max_request=max_request
    )
    return reader


def _retry_ms(reply: Reply) -> int:
    match = re.fullmatch(r"-RATELIMIT rate limit exceeded, retry after (\d+) ms", reply.render())
    assert match, reply.render()
    return int(match.group(1))


@given(
    requests=st.lists(
        st.lists(st.binary(max_size=300), min_size=1, max_size=4), min_size=1, max_size=5
    ),
    cuts=st.lists(st.integers(1, 97), max_size=40),
)
@settings(max_examples=200)
def test_a_request_within_the_cap_passes_however_it_is_split(
    requests: list[list[bytes]], cuts: list[int]
) -> None:
    """Each bulk counts once against the query buffer, however many reads it arrives in."""
    stream = b"".join(_request(*r) for r in requests)
    biggest = max(len(_request(*r)) for r in requests)
    reader = _reader(max_payload=1000, max_request=biggest)
    got: list[object] = []
    pos = 0
    for cut in cuts:
        got += reader.feed(stream[pos : pos + cut])
        pos += cut
    got += reader.feed(stream[pos:])
    assert got == [list(r) for r in requests]


def test_a_big_value_arriving_in_many_reads_is_not_counted_again_per_read() -> None:
    """A 300 MiB value under a 1 GiB cap is accepted even when it trickles in (it used not to be)."""
    reader = _reader(max_payload=MAX_BULK, max_request=1024 * 1024 * 1024)
    size = 300 * 1024 * 1024
    assert reader.feed(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % size) == []
    chunk = b"v" * (1024 * 1024)
    for _ in range(size // len(chunk)):
        assert reader.feed(chunk) == []
    (request,) = reader.feed(b"\r\n")
    assert isinstance(request, list)
    assert [len(a) for a in request] == [3, 1, size]


def test_the_query_buffer_cap_is_enforced_at_the_header_and_skipped_bulks_are_free() -> None:
    """Kept bulks count, the header that passes the cap is refused, oversized bulks cost nothing."""
    reader = _reader(max_payload=100, max_request=200)
    oversized = _request(b"SET", b"k", b"x" * 5000)
    # Refused as soon as the header is in, before the value arrives; then skipped.
    (refused,) = reader.feed(oversized[:30])
    assert isinstance(refused, PayloadTooLarge)
    assert reader.feed(oversized[30:]) == []
    out = reader.feed(b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$100\r\n" + b"x" * 100 + b"\r\n")
    assert out == []
    out = reader.feed(b"$1\r\nb\r\n$100\r\n")
    assert len(out) == 1
    assert isinstance(out[0], QueryBufferFull)
    assert (out[0].limit, out[0].needed) == (200, 244)  # 14 + 7 + 108 + 7 + 108
    assert out[0].wire == (
        "ERR Protocol error: request needs at least 244 bytes of query buffer, "
        "the limit is 200 bytes"
    )


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"*11\r\n", "unauthenticated multibulk length"),
        (b"*99999999999\r\n", "invalid multibulk length"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n$16385\r\n", "unauthenticated bulk length"),
        (b"*1\r\n$999999999999\r\n", "invalid bulk length"),
        (b"*1\r\n$-3\r\n", "invalid bulk length"),
    ],
)
def test_pre_auth_caps_use_redis_words(data: bytes, text: str) -> None:
    """Before AUTH: 10 arguments of 16 KiB, refused in Redis's words (nonsense stays 'invalid')."""
    reader = RequestReader()
    reader.set_limits(
        max_args=PREAUTH_MAX_ARGS,
        max_bulk=PREAUTH_MAX_BULK,
        max_payload=PREAUTH_MAX_BULK,
        authenticated=False,
    )
    (error,) = reader.feed(data)
    assert isinstance(error, ProtocolError)
    assert error.message == f"Protocol error: {text}"


def test_max_clients_refuses_connection_n_plus_one_like_redis() -> None:
    """Connection N+1 gets Redis's exact error and is closed; a freed slot is usable again."""
    with RedisServer("--maxclients", "2") as real:
        held = [_served(real.port) for _ in range(2)]
        expected = RespClient(real.port).read().render()
        assert len(held) == 2
    assert expected == "-ERR max number of clients reached"
    with StashDaemon("--max-clients", "3") as daemon:
        clients = [_served(daemon.port) for _ in range(3)]
        extra = RespClient(daemon.port)
        assert extra.read().render() == expected
        assert extra.read() is CLOSED
        clients.pop().close()
        c = _served(daemon.port)
        assert c.call("CONFIG", "GET", "maxclients").render() == "[$'maxclients', $'3']"


def _served(port: int) -> RespClient:
    """A connection that got PONG, retried while a just-closed one still holds its slot."""
    deadline = time.monotonic() + 5
    while True:
        c = RespClient(port)
        if c.call("PING").render() == "+PONG":
            return c
        c.close()
        assert time.monotonic() < deadline, "no connection slot came free"
        time.sleep(0.05)


def test_query_buffer_cap_closes_a_connection_before_buffering() -> None:
    """A request whose kept bulks would pass --max-query-buffer is refused at the header."""
    with StashDaemon("--max-payload-bytes", "1000", "--max-query-buffer", "5000") as daemon:
        c = RespClient(daemon.port)
        pair = b"$1\r\nk\r\n$1000\r\n" + b"v" * 1000 + b"\r\n"  # 1016 bytes
        c.send_raw(b"*11\r\n$4\r\nMSET\r\n" + pair * 4)  # 15 + 4064 bytes
        c.send_raw(pair[:14])  # the header of a fifth value: 15 + 5 * 1016 > 5000
        assert c.read().render() == (
            "-ERR Protocol error: request needs at least 5095 bytes of query buffer, "
            "the limit is 5000 bytes"
        )
        assert c.read() is CLOSED
        ok = RespClient(daemon.port)
        # An oversized bulk is skipped, not held, so it does not count against the cap.
        assert ok.call("SET", "k", b"v" * 20000).render().startswith("-TOOLARGE")
        assert ok.call("MSET", "a", b"v" * 1000, "b", b"v" * 1000).render() == "+OK"


def test_open_mode_rate_limit_from_env_is_per_namespace() -> None:
    """STASH_RATE_LIMIT and STASH_RATE_BURST limit each open-mode namespace separately."""
    env = {"STASH_RATE_LIMIT": "1/min", "STASH_RATE_BURST": "3"}
    with StashDaemon(env=env) as daemon:
        a = RespClient(daemon.port)
        assert a.call("AUTH", "key-a").render() == "+OK"  # AUTH is not metered
        assert [a.call("PING").render() for _ in range(3)] == ["+PONG"] * 3
        assert 59_000 <= _retry_ms(a.call("PING")) <= 60_000
        b = RespClient(daemon.port)
        assert b.call("AUTH", "key-b").render() == "+OK"
        assert b.call("PING").render() == "+PONG"


# -- closing a connection whose key was revoked, in process -------------------------------


class BatchingMemoryStore(MemoryStore):
    """The memory store run through the batcher, as a store doing I/O would be."""

    inline = False


async def test_a_revoked_keys_connection_finishes_its_batch_then_closes() -> None:
    """A command in flight still gets its reply; then the connection closes and runs nothing."""
    store = BatchingMemoryStore()
    limits = Limits(max_payload=100, default_ttl_ms=10_000, max_ttl_ms=100_000)
    ctx = ServerContext(MemoryService(store), OpenKeyring(limits), store)
    revoked, kept = Connection(ctx), Connection(ctx)
    transports = [Transport(), Transport()]
    for conn, transport, key_id in zip((revoked, kept), transports, ("k1", "k2"), strict=True):
        conn.connection_made(transport)  # type: ignore[arg-type]
        assert conn.session is not None
        conn.session.principal = Principal("user:alice", limits, "alice", key_id)
    revoked.data_received(_request(b"SET", b"k", b"v"))  # handed to the batcher
    assert ctx.close_connections_of({"k1"}) == 1
    assert not transports[0].closed  # not while its batch is in flight
    for _ in range(5):
        await asyncio.sleep(0)
    assert bytes(transports[0].out) == b"+OK\r\n"
    assert transports[0].closed
    assert revoked.session is not None
    assert revoked.session.principal is None
    assert not transports[1].closed
    assert kept.session is not None
    assert kept.session.principal is not None
