"""Pub/sub over RESP, as redis-py's ``pubsub()`` uses it, in RESP2 and RESP3, per namespace."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from stashd.pubsub import Hub, Subscriber
from tests.support.resp_client import RespClient
from tests.support.servers import RedisServer, StashDaemon

MIB = 1024 * 1024
WAIT = 10.0  # seconds a message may take to arrive before the test fails


@pytest.fixture(scope="module", params=["memory", "sqlite", "redis"])
def daemon(request: pytest.FixtureRequest) -> Iterator[StashDaemon]:
    extra: tuple[str, ...] = ()
    if request.param == "redis":
        extra = ("--redis-url", request.getfixturevalue("redis_store").url)
    with StashDaemon("--backend", request.param, "--no-http", *extra) as d:
        yield d


@pytest.fixture
def swept(request: pytest.FixtureRequest) -> None:
    """Only the stores whose own sweep removes expired keys announce ``expired``."""
    if request.node.callspec.params["daemon"] == "redis":
        pytest.skip("Redis removes the Redis backend's expired keys itself: not announced")


def _client(port: int, proto: int, password: str | None = None) -> redis.Redis:
    return redis.Redis(port=port, protocol=proto, password=password)


def _next(ps: Any, timeout: float = WAIT) -> dict[str, Any]:  # noqa: ANN401 - redis-py's PubSub
    """The next message of any type, waited for (never a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = ps.get_message(timeout=deadline - time.monotonic())
        if message is not None:
            return dict(message)
    pytest.fail("no message arrived")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.parametrize("proto", [2, 3])
def test_subscribe_publish_and_patterns_as_redis_py_uses_them(
    daemon: StashDaemon, proto: int
) -> None:
    """Confirmations, messages and pattern messages, in order; PUBLISH counts receivers."""
    r = _client(daemon.port, proto)
    ps = r.pubsub()
    ps.subscribe("news", "alerts")
    assert _next(ps) == {"type": "subscribe", "pattern": None, "channel": b"news", "data": 1}
    assert _next(ps)["data"] == 2  # noqa: PLR2004 - two channels
    ps.psubscribe("n*")
    assert _next(ps) == {"type": "psubscribe", "pattern": None, "channel": b"n*", "data": 3}
    other = _client(daemon.port, proto)
    assert other.publish("news", "one") == 2  # noqa: PLR2004 - the channel and the pattern
    assert other.publish("alerts", "two") == 1
    assert other.publish("nobody", "three") == 1  # the pattern only
    assert other.publish("zzz", "four") == 0
    got = [
        (m["type"], m["pattern"], m["channel"], m["data"]) for m in (_next(ps) for _ in range(4))
    ]
    assert got == [
        ("message", None, b"news", b"one"),
        ("pmessage", b"n*", b"news", b"one"),
        ("message", None, b"alerts", b"two"),
        ("pmessage", b"n*", b"nobody", b"three"),
    ]
    assert other.pubsub_channels() == [b"news", b"alerts"] or set(other.pubsub_channels()) == {
        b"news",
        b"alerts",
    }
    assert other.pubsub_numsub("news", "zzz") == [(b"news", 1), (b"zzz", 0)]
    assert other.pubsub_numpat() == 1
    ps.unsubscribe("news")
    assert _next(ps) == {"type": "unsubscribe", "pattern": None, "channel": b"news", "data": 2}
    ps.punsubscribe()
    assert _next(ps)["type"] == "punsubscribe"
    assert other.pubsub_numpat() == 0
    ps.close()
    other.close()
    r.close()


def test_a_subscribed_resp2_connection_refuses_other_commands_as_redis() -> None:
    """The same bytes from Stash and from redis-server for a subscribed RESP2 session."""
    script = [
        ["SUBSCRIBE", "a", "b"],
        ["GET", "x"],
        ["PING"],
        ["PING", "hi"],
        ["PSUBSCRIBE", "h*"],
        ["UNSUBSCRIBE", "a", "b"],  # with none named, Redis goes in its hash table's order
        ["PUNSUBSCRIBE"],
        ["UNSUBSCRIBE"],
        ["PUBSUB", "NUMSUB", "a"],
        ["PUBSUB", "NUMPAT"],
        ["PUBSUB", "CHANNELS"],
        ["PUBLISH", "a", "b"],
        ["PUBSUB", "FOO"],
        ["SUBSCRIBE"],
        ["SUBSCRIBE", "a"],
        ["RESET"],
        ["PING"],
        ["HELLO", "3"],
        ["SUBSCRIBE", "a"],
        ["PUBSUB", "NUMSUB", "a", "z"],
        ["PUBLISH", "a", "hello"],
        ["PING"],
        ["GET", "x"],
        ["UNSUBSCRIBE", "zz"],
        ["QUIT"],
    ]
    with StashDaemon("--backend", "memory", "--no-http") as stash, RedisServer() as real:
        ours = _transcript(stash.port, script)
        theirs = _transcript(real.port, script)
    # HELLO's map names the server and its version: compare everything but that reply.
    assert _without_hello(ours) == _without_hello(theirs)


def _transcript(port: int, script: list[list[str]]) -> bytes:
    request = b"".join(
        b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a.encode()) for a in c)
        for c in script
    )
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(request)
        got = bytearray()
        while chunk := sock.recv(65536):  # QUIT closes the connection after its +OK
            got += chunk
    return bytes(got)


def _without_hello(data: bytes) -> bytes:
    start = data.index(b"\r\n%") + 2  # the one map in the transcript
    end = data.index(b"*0\r\n", start) + 4  # HELLO's map ends with its empty modules list
    return data[:start] + data[end:]


@pytest.mark.parametrize("proto", [2, 3])
def test_another_namespace_hears_nothing(daemon: StashDaemon, proto: int) -> None:
    """Open mode: a subscriber under one password never hears another's publishes."""
    mine = _client(daemon.port, proto, password="tenant-a").pubsub()
    mine.psubscribe("*")
    assert _next(mine)["type"] == "psubscribe"
    theirs = _client(daemon.port, proto, password="tenant-b")
    assert theirs.publish("chat", "secret") == 0
    assert theirs.pubsub_numpat() == 0
    same = _client(daemon.port, proto, password="tenant-a")
    assert same.publish("chat", "hello") == 1
    message = _next(mine)
    assert (message["channel"], message["data"]) == (b"chat", b"hello")
    mine.close()
    theirs.close()
    same.close()


@pytest.mark.parametrize("proto", [2, 3])
def test_run_in_thread_delivers_to_handlers(daemon: StashDaemon, proto: int) -> None:
    """redis-py's ``run_in_thread`` with a handler per channel, unchanged."""
    r = _client(daemon.port, proto)
    got: list[bytes] = []
    arrived = threading.Event()

    def handler(message: dict[str, Any]) -> None:
        got.append(message["data"])
        if len(got) == 3:  # noqa: PLR2004 - three published
            arrived.set()

    ps = r.pubsub(ignore_subscribe_messages=True)
    ps.subscribe(jobs=handler)
    thread = ps.run_in_thread(sleep_time=0.01, daemon=True)
    try:
        deadline = time.monotonic() + WAIT
        while r.pubsub_numsub("jobs") != [(b"jobs", 1)]:  # wait for the subscription
            assert time.monotonic() < deadline
        for word in (b"a", b"b", b"c"):
            assert r.publish("jobs", word) == 1
        assert arrived.wait(WAIT)
        assert got == [b"a", b"b", b"c"]
    finally:
        thread.stop()
        thread.join(WAIT)
        r.close()


def test_a_subscriber_that_never_reads_is_disconnected_past_the_limit() -> None:
    """Past the pubsub class's hard limit the subscriber is cut; the server's memory stays bounded."""
    with StashDaemon(
        "--backend",
        "memory",
        "--no-http",
        "--client-output-buffer-limit",
        "pubsub 2mb 0 0",
        log_level="info",
    ) as d:
        slow = socket.create_connection(("127.0.0.1", d.port))
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nfeed\r\n")
        slow.settimeout(WAIT)
        assert slow.recv(100).startswith(b"*3\r\n$9\r\nsubscribe")
        publisher = redis.Redis(port=d.port)
        before = _rss_mib(d.pid)
        payload = b"x" * 64 * 1024
        sent = 0
        while publisher.publish("feed", payload) == 1:  # until the subscriber is gone
            sent += 1
            assert sent < 2000, "never disconnected"  # noqa: PLR2004 - 128 MiB offered
        assert _rss_mib(d.pid) - before < 30  # noqa: PLR2004 - far below what was offered
        assert publisher.pubsub_numsub("feed") == [(b"feed", 0)]
        assert publisher.ping()
        publisher.close()
        slow.close()
        assert d.stop() == 0
    assert "client_output_buffer_limit_reached" in d.stderr


def _events(ps: Any, n: int) -> list[tuple[bytes, bytes]]:  # noqa: ANN401 - redis-py's PubSub
    """The next ``n`` keyevent messages: (event, key)."""
    out: list[tuple[bytes, bytes]] = []
    for _ in range(n):
        message = ps.get_message(timeout=WAIT)
        assert message is not None, f"after {out}"
        assert message["type"] == "pmessage", message
        out.append((message["channel"].removeprefix(b"__keyevent@0__:"), message["data"]))
    return out


@pytest.mark.parametrize("proto", [2, 3])
def test_committed_writes_are_announced_in_order(daemon: StashDaemon, proto: int) -> None:
    """Keyspace and keyevent notifications, Redis's names, for the caller's namespace only."""
    password = f"notify-{proto}"
    ps = _client(daemon.port, proto, password=password).pubsub()
    ps.psubscribe("__keyevent@0__:*")
    assert _next(ps)["type"] == "psubscribe"
    space = _client(daemon.port, proto, password=password).pubsub()
    space.subscribe("__keyspace@0__:k")
    assert _next(space)["type"] == "subscribe"
    stranger = _client(daemon.port, proto, password=f"stranger-{proto}").pubsub()
    stranger.psubscribe("*")
    assert _next(stranger)["type"] == "psubscribe"
    r = _client(daemon.port, proto, password=password)
    r.set("k", "1")
    r.set("k", "2", nx=True)  # nothing written: nothing announced
    r.incrby("k", 5)
    r.append("k", "x")
    r.expire("k", 100)
    r.rename("k", "k2")
    r.delete("k2", "missing")
    r.lpush("l", "a")
    r.hset("h", "f", "v")
    r.lpop("l")  # emptied: the list is deleted
    pipe = r.pipeline(transaction=True)
    pipe.set("t", "1")
    pipe.delete("t")
    pipe.execute()
    ident = r.execute_command("STASH", '{"a": 1}')
    r.execute_command("UPDATE", ident, "MERGE", '{"b": 2}')
    r.execute_command("FORGET", ident)
    assert _events(ps, 15) == [
        (b"set", b"k"),
        (b"incrby", b"k"),
        (b"append", b"k"),
        (b"expire", b"k"),
        (b"rename_from", b"k"),
        (b"rename_to", b"k2"),
        (b"del", b"k2"),
        (b"lpush", b"l"),
        (b"hset", b"h"),
        (b"lpop", b"l"),
        (b"del", b"l"),
        (b"set", b"t"),
        (b"del", b"t"),
        (b"stash", ident),
        (b"update", ident),
    ]
    assert _events(ps, 1) == [(b"forget", ident)]
    got = [_next(space) for _ in range(5)]
    assert [(m["channel"], m["data"]) for m in got] == [
        (b"__keyspace@0__:k", b"set"),
        (b"__keyspace@0__:k", b"incrby"),
        (b"__keyspace@0__:k", b"append"),
        (b"__keyspace@0__:k", b"expire"),
        (b"__keyspace@0__:k", b"rename_from"),
    ]
    assert stranger.get_message(timeout=0.2) is None  # a bounded look: nothing is due
    for sub in (ps, space, stranger):
        sub.close()
    r.close()


@pytest.mark.parametrize("proto", [2, 3])
@pytest.mark.usefixtures("swept")
def test_expired_arrives_without_anyone_reading_the_key(daemon: StashDaemon, proto: int) -> None:
    """The sweep announces ``expired`` for a key nobody reads, within the stated bound."""
    password = f"expiry-{proto}"
    ps = _client(daemon.port, proto, password=password).pubsub()
    ps.subscribe("__keyevent@0__:expired")
    assert _next(ps)["type"] == "subscribe"
    r = _client(daemon.port, proto, password=password)
    r.set("soon", "1", px=200)
    start = time.monotonic()
    message = _next(ps, timeout=5.0)
    assert (message["channel"], message["data"]) == (b"__keyevent@0__:expired", b"soon")
    assert time.monotonic() - start < 0.2 + 1.0 + 0.5  # noqa: PLR2004 - the TTL, the bound, slack
    ps.close()
    r.close()


@pytest.mark.usefixtures("swept")
def test_a_key_read_after_it_expired_is_announced_as_expired(daemon: StashDaemon) -> None:
    """A read that finds the key expired before the sweep does: still one ``expired``."""
    ps = _client(daemon.port, 3, password="expiry-read").pubsub()
    ps.subscribe("__keyspace@0__:gone")
    assert _next(ps)["type"] == "subscribe"
    r = _client(daemon.port, 3, password="expiry-read")
    r.set("gone", "1", px=1)
    deadline = time.monotonic() + WAIT
    while r.get("gone") is not None:  # read until it has expired: the read may remove it
        assert time.monotonic() < deadline
    message = _next(ps)
    assert (message["channel"], message["data"]) == (b"__keyspace@0__:gone", b"set")
    message = _next(ps)
    assert (message["channel"], message["data"]) == (b"__keyspace@0__:gone", b"expired")
    assert ps.get_message(timeout=0.3) is None  # announced once, not again by the sweep
    ps.close()
    r.close()


def test_the_hub_keeps_channels_and_patterns_apart() -> None:
    """A channel and a pattern of the same text, in two namespaces: each dropped on its own."""
    hub = Hub()
    got: list[list[Any]] = []
    sub = Subscriber(got.append)
    assert hub.subscribe(sub, "a", b"n*") == 1
    assert hub.psubscribe(sub, "a", b"n*") == 2  # noqa: PLR2004 - a channel and a pattern
    assert hub.psubscribe(sub, "b", b"n*") == 3  # noqa: PLR2004 - and another namespace's
    assert hub.unsubscribe(sub, "a", [b"n*"]) == [[b"unsubscribe", b"n*", 2]]
    assert hub.publish("a", b"news", b"x") == 1
    assert got == [[b"pmessage", b"n*", b"news", b"x"]]
    assert hub.publish("c", b"news", b"x") == 0
    hub.drop(sub)
    assert not hub.listening
    assert hub.publish("b", b"news", b"x") == 0


def test_client_info_counts_subscriptions(daemon: StashDaemon) -> None:
    """CLIENT INFO shows sub, psub and the P flag, as Redis does (RESP3 may ask while subscribed)."""
    c = RespClient(daemon.port, timeout=WAIT)
    c.call("HELLO", "3")
    assert c.call("SUBSCRIBE", "a").render() == "[$'subscribe', $'a', :1]"
    assert c.call("PSUBSCRIBE", "b*").render() == "[$'psubscribe', $'b*', :2]"
    text = c.call("CLIENT", "INFO").render()
    assert " flags=P " in text
    assert " sub=1 psub=1 " in text
    c.sock.close()
