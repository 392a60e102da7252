"""Lists on every backend: the rules of a key hold, blocking pops wake and end, libraries use them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.backoff import NoBackoff
from redis.retry import Retry

from stashd import lists
from stashd.errors import PayloadTooLarge, WrongType
from stashd.types import Kind
from tests.support.backends import Backend
from tests.support.door import DEFAULT_TTL_MS, Door
from tests.support.servers import RedisServer, StashDaemon, redis_nodes


def test_a_new_list_gets_the_default_ttl_and_a_push_keeps_it(backend: Backend) -> None:
    """RPUSH on no key makes a list with the default TTL; later pushes leave the expiry."""
    door = Door(backend)
    assert door.call(b"RPUSH", b"l", b"a") == 1
    assert door.call(b"PTTL", b"l") == DEFAULT_TTL_MS
    assert door.call(b"PEXPIRE", b"l", b"5000") == 1
    assert door.call(b"LPUSH", b"l", b"b") == 2
    assert door.call(b"PTTL", b"l") == 5000
    assert door.entries()[b"l"][3] == Kind.LIST


def test_a_push_past_the_payload_cap_is_refused_and_changes_nothing(backend: Backend) -> None:
    """Items that fit one by one are refused once the whole list passes the cap."""
    door = Door(backend)
    item = b"x" * 60
    assert door.call(b"RPUSH", b"l", item, item) == 2
    before = door.entries()
    refused = door.call(b"LPUSH", b"l", item)
    assert isinstance(refused, PayloadTooLarge)
    assert refused.actual == len(lists.pack([item, item, item]) or b"")
    assert door.entries() == before


def test_a_list_command_on_a_string_changes_nothing(backend: Backend) -> None:
    """LPUSH, LPOP, LMOVE and BLPOP on a string are WRONGTYPE; both keys stay."""
    door = Door(backend)
    door.call(b"SET", b"s", b"text")
    door.call(b"RPUSH", b"l", b"a")
    before = door.entries()
    for words in (
        (b"LPUSH", b"s", b"x"),
        (b"LPOP", b"s"),
        (b"LRANGE", b"s", b"0", b"-1"),
        (b"LMOVE", b"l", b"s", b"LEFT", b"LEFT"),
        (b"APPEND", b"l", b"x"),
    ):
        assert isinstance(door.call(*words), WrongType), words
    assert door.entries() == before


def test_popping_the_last_item_deletes_the_key(backend: Backend) -> None:
    """An emptied list is no key, and the namespace's usage goes back to zero."""
    door = Door(backend)
    door.call(b"RPUSH", b"l", b"a", b"b")
    assert door.call(b"RPOP", b"l", b"5") == [b"b", b"a"]
    assert door.entries() == {}


@given(
    st.lists(st.binary(max_size=30), max_size=30),
    st.integers(-40, 40),
    st.integers(-40, 40),
)
def test_the_codec_reads_ranges_and_indexes_as_a_python_list(
    items: list[bytes], start: int, stop: int
) -> None:
    """Ranges, indexes and pops from either end match a plain list under Redis's index rules."""
    value = lists.pack(items)
    assert lists.unpack(value) == items
    n = len(items)
    lo = max(start + n, 0) if start < 0 else start
    hi = min(stop + n if stop < 0 else stop, n - 1)
    assert lists.span(value, start, stop) == (items[lo : hi + 1] if lo <= hi else [])
    assert lists.index(value, start) == (items[start] if -n <= start < n else None)
    if value is not None:
        k = abs(start) or 1
        rest, popped = lists.pop(value, k, left=start >= 0)
        expect = items[:k] if start >= 0 else items[::-1][:k]
        assert popped == expect
        remain = items[k:] if start >= 0 else items[: max(n - k, 0)]
        assert lists.unpack(rest) == remain
        assert lists.unpack(lists.push(rest, popped[::-1], left=start >= 0)) == (
            items if start >= 0 else items[: max(n - k, 0)] + popped[::-1]
        )


def _daemon_args(kind: str, url: str) -> tuple[str, ...]:
    return ("--backend", kind, "--redis-url", url) if kind == "redis" else ("--backend", kind)


@pytest.fixture(params=["memory", "sqlite", "redis"])
def daemon(request: pytest.FixtureRequest, server: RedisServer) -> Iterator[StashDaemon]:
    with StashDaemon(*_daemon_args(request.param, server.url)) as d:
        yield d


def _blpop_in_thread(port: int, *args: Any) -> tuple[threading.Thread, list[Any]]:  # noqa: ANN401
    """BLPOP on a connection of its own, in a thread; its reply lands in the list."""
    got: list[Any] = []
    client = redis.Redis(port=port)

    def run() -> None:
        got.append(client.blpop(*args))
        client.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, got


def _wait_blocked(client: redis.Redis, n: int) -> None:
    """Until ``n`` clients of the caller's namespace are blocked (INFO's blocked_clients)."""
    deadline = time.monotonic() + 10
    while client.info("clients")["blocked_clients"] != n:
        assert time.monotonic() < deadline, "never blocked"
        time.sleep(0.01)


def test_blpop_is_woken_by_a_push_from_another_connection(daemon: StashDaemon) -> None:
    """A blocked BLPOP returns the item LPUSH'd by another redis-py client."""
    other = redis.Redis(port=daemon.port)
    thread, got = _blpop_in_thread(daemon.port, ["jobs", "other"], 0)
    _wait_blocked(other, 1)
    other.lpush("other", "task-1")
    thread.join(10)
    assert got == [(b"other", b"task-1")]
    assert other.exists("other") == 0
    _wait_blocked(other, 0)
    other.close()


def test_blpop_times_out_with_nil(daemon: StashDaemon) -> None:
    """A timeout with nothing pushed is nil, after about the timeout."""
    client = redis.Redis(port=daemon.port)
    started = time.monotonic()
    assert client.blpop(["nothing"], 0.2) is None
    assert time.monotonic() - started >= 0.2  # noqa: PLR2004 - the timeout
    client.close()


def test_the_longest_waiting_client_is_served_first(daemon: StashDaemon) -> None:
    """Two blocked clients and one push: the first to block gets it."""
    other = redis.Redis(port=daemon.port)
    first, got_first = _blpop_in_thread(daemon.port, ["q"], 0)
    _wait_blocked(other, 1)
    second, got_second = _blpop_in_thread(daemon.port, ["q"], 0)
    _wait_blocked(other, 2)
    other.rpush("q", "one")
    first.join(10)
    assert got_first == [(b"q", b"one")]
    other.rpush("q", "two")
    second.join(10)
    assert got_second == [(b"q", b"two")]
    other.close()


def test_one_push_of_several_items_serves_the_waiters_in_the_order_they_blocked(
    daemon: StashDaemon,
) -> None:
    """Three blocked clients, one RPUSH of three items: each gets the next, oldest first."""
    other = redis.Redis(port=daemon.port)
    waiting = []
    for n in range(3):
        waiting.append(_blpop_in_thread(daemon.port, ["line"], 0))
        _wait_blocked(other, n + 1)
    other.rpush("line", "a", "b", "c")
    for thread, _ in waiting:
        thread.join(10)
    assert [got for _, got in waiting] == [[(b"line", b"a")], [(b"line", b"b")], [(b"line", b"c")]]
    assert other.exists("line") == 0
    other.close()


def test_a_disconnecting_blocked_client_leaves_no_waiter(daemon: StashDaemon) -> None:
    """A client that closes while blocked is no longer counted, and a later push stays."""
    # No retries: redis-py's default retries a timed-out command with a backoff, which
    # would only make the test wait longer for the same answer.
    blocked = redis.Redis(port=daemon.port, socket_timeout=0.3, retry=Retry(NoBackoff(), 0))
    other = redis.Redis(port=daemon.port)
    with pytest.raises(redis.TimeoutError):
        blocked.blpop(["gone"], 0)
    blocked.close()
    _wait_blocked(other, 0)
    other.rpush("gone", "kept")
    assert other.lrange("gone", 0, -1) == [b"kept"]
    other.close()


@pytest.mark.slow
def test_blpop_on_one_node_is_woken_by_a_push_through_another(server: RedisServer) -> None:
    """Two nodes on one Redis: BLPOP via A returns what LPUSH via B pushed."""
    a, b = redis_nodes(server.url, "--no-http")
    with a, b:
        ca, cb = redis.Redis(port=a.port), redis.Redis(port=b.port)
        thread, got = _blpop_in_thread(a.port, ["handoff"], 5)
        _wait_blocked(ca, 1)
        cb.lpush("handoff", "from-b")
        thread.join(10)
        assert got == [(b"handoff", b"from-b")]
        ca.close()
        cb.close()


# langchain-community warns of its own deprecation and of a default it will change.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_langchain_chat_history_keeps_messages_in_order_with_a_ttl(server: RedisServer) -> None:
    """RedisChatMessageHistory adds messages (LPUSH), reads them back in order, sets a TTL."""
    from langchain_community.chat_message_histories import (  # noqa: PLC0415 - heavy
        RedisChatMessageHistory,
    )
    from langchain_core.messages import AIMessage, HumanMessage  # noqa: PLC0415

    with StashDaemon("--backend", "memory", "--no-http") as d:
        history = RedisChatMessageHistory("s1", url=f"redis://127.0.0.1:{d.port}", ttl=300)
        history.add_message(HumanMessage("hello"))
        history.add_message(AIMessage("hi, how can I help?"))
        assert [m.content for m in history.messages] == ["hello", "hi, how can I help?"]
        client = redis.Redis(port=d.port)
        (key,) = client.keys("*")
        assert client.type(key) == b"list"
        assert 0 < client.ttl(key) <= 300  # noqa: PLR2004 - the history's TTL
        history.clear()
        assert client.exists(key) == 0
        client.close()
