"""Command handlers run in-process on the memory store with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from stashd.commands import TABLE
from stashd.commands.base import Deferred, Session
from stashd.errors import StashError
from stashd.service import MemoryService
from stashd.store.memory import MemoryStore
from stashd.tenancy import Limits, OpenKeyring

LIMITS = Limits(max_payload=1000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)


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
def session(clock: Clock) -> Session:
    keyring = OpenKeyring(LIMITS)
    return Session(MemoryService(MemoryStore(clock)), keyring, keyring.anonymous())


def call(session: Session, *words: bytes) -> Any:
    """Run one request the way dispatch does (arity aside): handler, operation, reply."""
    try:
        reply = TABLE[words[0].lower()].handler(session, list(words))
        if type(reply) is Deferred:
            result = session.service.store.run(reply.op)
            reply = result if reply.finish is None else reply.finish(result)
    except StashError as exc:
        return exc
    return reply


@pytest.mark.parametrize(
    ("expires_ms", "seconds"),
    [(499, 1_700_000_100), (500, 1_700_000_101), (999, 1_700_000_101), (0, 1_700_000_100)],
)
def test_expiretime_rounds_to_the_nearest_second(
    session: Session, clock: Clock, expires_ms: int, seconds: int
) -> None:
    """EXPIRETIME rounds the expiry in ms to the nearest second, as Redis does."""
    at = b"%d" % (clock.now + 100_000 + expires_ms)
    assert call(session, b"SET", b"k", b"v", b"PXAT", at) == "OK"
    assert call(session, b"EXPIRETIME", b"k") == seconds
    assert call(session, b"PEXPIRETIME", b"k") == int(at)


def test_reset_leaves_multi_and_forgets_watches(session: Session) -> None:
    """RESET inside MULTI ends the transaction, drops the queue and every WATCH."""
    assert call(session, b"WATCH", b"k") == "OK"
    assert call(session, b"MULTI") == "OK"
    session.multi_dirty = True  # as after a queueing error
    assert session.multi is not None
    assert call(session, b"RESET") == "RESET"
    assert session.multi is None
    assert not session.multi_dirty
    assert session.watched == {}
    assert str(call(session, b"EXEC")) == "EXEC without MULTI"


def test_info_of_no_known_section_is_empty(session: Session) -> None:
    """INFO with only unknown sections is an empty string, as in Redis."""
    assert str(call(session, b"INFO", b"nosuch")) == ""
    assert str(call(session, b"INFO", b"keyspace")) == "# Keyspace\r\n"
