"""The remote door's reading of redis-py's exceptions: every shape redis-py gives them in."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator

import pytest
import redis

from stashd import Stash
from stashd.embedded import Info
from stashd.errors import (
    Conflict,
    EmptyUpdate,
    InvalidRequest,
    MaxClients,
    NoAuth,
    PayloadTooLarge,
    StoreUnavailable,
    WrongPass,
)
from stashd.remote import (
    AsyncRemoteTransport,
    RemoteTransport,
    redact,
    translate,
    wire_text,
)
from tests.support.servers import StashDaemon

WHERE = "redis://127.0.0.1:6380"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # Codes redis-py strips, with the code kept in status_code (redis-py 8) ...
        (redis.ResponseError("syntax error", status_code="ERR"), "ERR syntax error"),
        (
            redis.AuthenticationError("Authentication required.", status_code="NOAUTH"),
            "NOAUTH Authentication required.",
        ),
        # ... and without it (older versions): the code is told by the message.
        (
            redis.ResponseError("UPDATE needs at least one of DATA, MERGE or EXTEND"),
            "ERR UPDATE needs at least one of DATA, MERGE or EXTEND",
        ),
        (redis.AuthenticationError("Authentication required."), "NOAUTH Authentication required."),
        (
            redis.AuthenticationError("HELLO must be called with the client already ..."),
            "NOAUTH HELLO must be called with the client already ...",
        ),
        (
            redis.AuthenticationError("invalid username-password pair or user is disabled."),
            "WRONGPASS invalid username-password pair or user is disabled.",
        ),
        # Codes redis-py does not know keep the whole line.
        (
            redis.ResponseError("TOOLARGE value is 5 bytes, the limit is 4 bytes"),
            "TOOLARGE value is 5 bytes, the limit is 4 bytes",
        ),
    ],
)
def test_the_error_line_is_put_back_together(exc: redis.RedisError, expected: str) -> None:
    """What redis-py kept of the line gives the line the server sent."""
    assert wire_text(exc) == expected


def test_translate_gives_stash_classes() -> None:
    """Replies become their classes; transport failures become StoreUnavailable."""
    assert isinstance(
        translate(redis.ResponseError("UPDATE needs at least one of DATA, MERGE or EXTEND"), WHERE),
        EmptyUpdate,
    )
    too_large = translate(
        redis.ResponseError("TOOLARGE value is 5 bytes, the limit is 4 bytes"), WHERE
    )
    assert isinstance(too_large, PayloadTooLarge)
    assert (too_large.limit, too_large.actual) == (4, 5)
    assert isinstance(
        translate(redis.AuthenticationError("Authentication required."), WHERE), NoAuth
    )
    assert isinstance(
        translate(
            redis.AuthenticationError("invalid username-password pair or user is disabled."), WHERE
        ),
        WrongPass,
    )
    assert isinstance(
        translate(redis.ConnectionError("max number of clients reached"), WHERE), MaxClients
    )
    timeout = translate(redis.TimeoutError("Timeout reading from socket"), WHERE)
    assert isinstance(timeout, StoreUnavailable)
    assert timeout.cause == f"no reply from {WHERE} within 30 s"
    refused = translate(redis.ConnectionError("Error 111 connecting"), WHERE)
    assert refused.message == f"store unavailable: cannot reach {WHERE}: Error 111 connecting"
    odd = translate(redis.InvalidResponse("Protocol Error: x"), WHERE)
    assert isinstance(odd, StoreUnavailable)
    assert odd.cause == f"unexpected reply from {WHERE}: Protocol Error: x"


def test_redact_hides_only_the_password() -> None:
    """User, host, port and path stay; the password is starred."""
    assert redact("redis://127.0.0.1:6380") == "redis://127.0.0.1:6380"
    assert redact("redis://:k@h:1/0") == "redis://:***@h:1/0"
    assert redact("rediss://alice:k@h") == "rediss://alice:***@h"


@pytest.fixture
def one_client() -> Iterator[StashDaemon]:
    """A stashd that serves one connection at a time."""
    with StashDaemon("--no-http", "--max-clients", "1") as d:
        yield d


def test_a_full_daemon_raises_max_clients(one_client: StashDaemon) -> None:
    """Connection two of one is told so in Redis's words: MaxClients, a StashError."""
    holder = redis.Redis(port=one_client.port)
    assert holder.ping()
    with (
        Stash(url=f"redis://127.0.0.1:{one_client.port}") as stash,
        pytest.raises(MaxClients) as caught,
    ):
        stash.get("k")
    assert caught.value.wire == "ERR max number of clients reached"
    holder.close()


@pytest.fixture(params=[2, 3])
def transports(
    request: pytest.FixtureRequest, stashd_server: StashDaemon
) -> Iterator[tuple[RemoteTransport, AsyncRemoteTransport]]:
    """Both transports to the session's stashd, in the protocol the test is parametrized with."""
    # redis-py reads ``protocol`` from the URL, over the transport's own default of 3.
    url = f"redis://127.0.0.1:{stashd_server.port}/?protocol={request.param}"
    sync, asynchronous = RemoteTransport(url, None), AsyncRemoteTransport(url, None)
    yield sync, asynchronous
    sync.close()


def _near(info: Info, ttl: int) -> None:
    """An Info for a memory written just now with ``ttl`` seconds: consistent, version aside."""
    left, expires_at, _ = info
    assert ttl - 1 <= left <= ttl
    assert abs(expires_at - (time.time() + ttl)) <= 2  # noqa: PLR2004 - seconds of slack


def test_stash_info_and_update_info_report_the_metadata(
    transports: tuple[RemoteTransport, AsyncRemoteTransport],
) -> None:
    """STASH and UPDATE WITHMETA read back as (id, Info) and Info, in both transports."""
    sync, asynchronous = transports
    memory_id, info = sync.stash_info(b'{"a":1}', 120)
    _near(info, 120)
    assert info[2] == 1
    assert sync.recall(memory_id.encode()) == (b'{"a":1}', *info)
    updated = sync.update_info(memory_id.encode(), None, b'{"b":2}', 30, 1)
    assert updated is not None
    _near(updated, 150)
    assert updated[2] == 2  # noqa: PLR2004 - one change
    assert sync.update_info(b"nosuch", b"1", None, None, None) is None

    async def run() -> None:
        key, meta = await asynchronous.stash_info(b"[1]", None)
        _near(meta, 3600)
        again = await asynchronous.update_info(key.encode(), b"[2]", None, None, 1)
        assert again is not None
        assert again[2] == 2  # noqa: PLR2004 - one change
        assert await asynchronous.update_info(b"nosuch", None, None, 5, None) is None
        with pytest.raises(Conflict):
            await asynchronous.update_info(key.encode(), b"[3]", None, None, 1)
        await asynchronous.aclose()

    asyncio.run(run())


def test_memories_pages_a_pattern_in_both_transports(
    transports: tuple[RemoteTransport, AsyncRemoteTransport],
) -> None:
    """MEMORIES reads back as (cursor, [(id, Info, size)]), page by page, to cursor 0."""
    sync, asynchronous = transports
    prefix = secrets.token_hex(4).encode()
    for i in range(7):
        sync.set(prefix + b":%d" % i, b"x" * i, 60)
    sync.set(b"other" + prefix, b"1", 60)

    def check(seen: list[tuple[bytes, Info, int]]) -> None:
        assert sorted(key for key, _, _ in seen) == [prefix + b":%d" % i for i in range(7)]
        for key, info, size in seen:
            _near(info, 60)
            assert size == int(key.rpartition(b":")[2])

    seen: list[tuple[bytes, Info, int]] = []
    cursor, page = sync.memories(0, prefix + b":*", 3)
    while True:
        assert len(page) <= 3  # noqa: PLR2004 - the COUNT
        seen.extend(page)
        if cursor == 0:
            break
        cursor, page = sync.memories(cursor, prefix + b":*", 3)
    check(seen)
    with pytest.raises(InvalidRequest):
        sync.memories(0, b"*", 0)

    async def run() -> None:
        found: list[tuple[bytes, Info, int]] = []
        cursor = 0
        while True:
            cursor, page = await asynchronous.memories(cursor, prefix + b":*", 1000)
            found.extend(page)
            if cursor == 0:
                break
        check(found)
        await asynchronous.aclose()

    asyncio.run(run())
