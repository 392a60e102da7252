"""The remote door's reading of redis-py's exceptions: every shape redis-py gives them in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from stashd import Stash
from stashd.errors import (
    EmptyUpdate,
    MaxClients,
    NoAuth,
    PayloadTooLarge,
    StoreUnavailable,
    WrongPass,
)
from stashd.remote import redact, translate, wire_text
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
