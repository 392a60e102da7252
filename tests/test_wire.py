"""Malformed and hostile input over raw sockets: answered or closed, never fatal to others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stashd.jsontext import MAX_DEPTH
from tests.support.resp_client import CLOSED, RespClient
from tests.support.servers import RedisServer, StashDaemon


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    """A daemon with a small payload limit, so the pre-read gate is cheap to exercise."""
    with StashDaemon("--max-payload-bytes", "1000") as d:
        yield d


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_inline_commands_work(daemon: StashDaemon) -> None:
    """PING typed into nc, and quoted inline arguments, are understood as Redis does."""
    c = RespClient(daemon.port)
    c.send_raw(b"PING\r\n")
    assert c.read().render() == "+PONG"
    c.send_raw(b'ECHO "a b\\x41"\r\n')
    assert c.read().render() == "$'a bA'"
    c.send_raw(b"ECHO 'c d'\r\n")
    assert c.read().render() == "$'c d'"
    c.send_raw(b'ECHO "unbalanced\r\n')
    assert c.read().render() == "-ERR Protocol error: unbalanced quotes in request"
    assert c.read() is CLOSED


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"*2147483648\r\n", "-ERR Protocol error: invalid multibulk length"),
        (
            b"*2000000000\r\n",
            "-ERR Protocol error: request has 2000000000 arguments, the limit is 16384",
        ),
        (
            b"*16385\r\n$3\r\nDEL\r\n",
            "-ERR Protocol error: request has 16385 arguments, the limit is 16384",
        ),
        (b"*1\r\n+PING\r\n", "-ERR Protocol error: expected '$', got '+'"),
        (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nabcdef\r\n", "-ERR Protocol error: bulk length"),
        (b"*1\r\n$-5\r\n", "-ERR Protocol error: invalid bulk length"),
    ],
)
def test_protocol_errors_close_only_that_connection(
    daemon: StashDaemon, raw: bytes, error: str
) -> None:
    """A protocol error is answered, that connection closes, and another client is untouched."""
    bystander = RespClient(daemon.port)
    assert bystander.call("SET", "k", "before").render() == "+OK"
    before = _rss_kib(daemon.pid)
    c = RespClient(daemon.port)
    c.send_raw(raw)
    assert c.read().render().startswith(error)
    assert c.read() is CLOSED
    assert _rss_kib(daemon.pid) - before < 50_000, "a 12-byte header must not reserve memory"
    assert bystander.call("GET", "k").render() == "$'before'"


@pytest.mark.parametrize("line", [b"POST / HTTP/1.1\r\n", b"Host: example.com\r\n"])
def test_http_lines_close_without_reply(daemon: StashDaemon, line: bytes) -> None:
    """An HTTP request smuggled to the RESP port closes the connection, as in Redis."""
    c = RespClient(daemon.port)
    c.send_raw(line)
    assert c.read() is CLOSED


def test_oversized_bulk_is_refused_before_buffering(daemon: StashDaemon) -> None:
    """A bulk header over the payload limit gets TOOLARGE, stores nothing, and the connection lives."""
    c = RespClient(daemon.port)
    c.send_raw(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$5000\r\n")
    for _ in range(5):
        c.send_raw(b"x" * 1000)
    c.send_raw(b"\r\n")
    assert c.read().render() == "-TOOLARGE value is 5000 bytes, the limit is 1000 bytes"
    assert c.call("EXISTS", "big").render() == ":0"
    assert c.call("SET", "small", "x" * 1000).render() == "+OK"
    assert c.call("APPEND", "small", "y").render().startswith("-TOOLARGE")
    assert c.call("STRLEN", "small").render() == ":1000"


def test_byte_by_byte_and_big_pipelines(daemon: StashDaemon) -> None:
    """A request split into single bytes works, and 1000 pipelined requests come back in order."""
    c = RespClient(daemon.port)
    for b in b"*3\r\n$3\r\nSET\r\n$5\r\nslow!\r\n$2\r\nok\r\n":
        c.send_raw(bytes([b]))
    assert c.read().render() == "+OK"
    c.send_raw(
        b"".join(b"*2\r\n$4\r\nECHO\r\n$%d\r\n%d\r\n" % (len(str(i)), i) for i in range(1000))
    )
    assert [c.read().value for _ in range(1000)] == [str(i).encode() for i in range(1000)]


def test_unknown_and_arity_errors_use_redis_text(daemon: StashDaemon) -> None:
    """Unknown commands and wrong arity get Redis's exact wording."""
    c = RespClient(daemon.port)
    assert c.call("FOO", "a", "b").render() == (
        "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' "
    )
    assert c.call("GET").render() == "-ERR wrong number of arguments for 'get' command"


def test_protocol_switch_inside_a_pipeline_matches_redis(
    daemon: StashDaemon, redis_server: RedisServer
) -> None:
    """Replies before HELLO 3 in one pipeline stay RESP2, later ones are RESP3, as in Redis."""
    pipeline = (
        b"*2\r\n$3\r\nGET\r\n$9\r\nnosuchkey\r\n"
        b"*2\r\n$3\r\nDEL\r\n$9\r\nnosuchkey\r\n"
        b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"
        b"*2\r\n$3\r\nGET\r\n$9\r\nnosuchkey\r\n"
        b"*1\r\n$5\r\nRESET\r\n"
        b"*2\r\n$3\r\nGET\r\n$9\r\nnosuchkey\r\n"
    )
    kinds = []
    for port in (daemon.port, redis_server.port):
        c = RespClient(port)
        c.send_raw(pipeline)
        kinds.append([c.read().kind for _ in range(6)])
        c.close()
    assert kinds[0] == kinds[1] == ["$", ":", "%", "_", "+", "$"]


def test_command_info_reads_the_same_in_every_process(daemon: StashDaemon) -> None:
    """Set replies are sorted, so COMMAND INFO does not depend on the process's hash seed."""
    c = RespClient(daemon.port)
    get = c.call("COMMAND", "INFO", "get").value[0].value
    c.close()
    assert get[2].render() == "[+fast, +readonly]"  # declared as (readonly, fast)
    assert get[6].render() == "[+@read, +@string]"


@pytest.fixture(scope="module")
def memory_daemon() -> Iterator[StashDaemon]:
    """The memory backend, where plain GET and SET take the C hot path."""
    with StashDaemon("--backend", "memory", "--no-http") as d:
        yield d


@pytest.mark.parametrize(
    "raw",
    [
        b"*02\r\n$3\r\nGET\r\n$1\r\na\r\n",
        b"*+2\r\n$3\r\nGET\r\n$1\r\na\r\n",
        b"* 2\r\n$3\r\nGET\r\n$1\r\na\r\n",
        b"*-0\r\n*1\r\n$4\r\nPING\r\n",
        b"*00\r\n*1\r\n$4\r\nPING\r\n",
        b"*-5\r\n*1\r\n$4\r\nPING\r\n",
        b"*2\r\n$03\r\nGET\r\n$1\r\na\r\n",
        b"*2\r\n$3\r\nGET\r\n$+1\r\na\r\n",
        b"*2\r\n$3\r\nGET\r\n$1_0\r\na\r\n",
        b"*2\r\n$3\r\nGET\r\n$-0\r\n",
        b"*3\r\n$3\r\nsEt\r\n$1\r\na\r\n$2\r\nv1\r\n*2\r\n$3\r\ngEt\r\n$1\r\na\r\n*2\r\n$3\r\nget\r\n",
    ],
)
def test_header_numbers_read_as_redis_reads_them(
    memory_daemon: StashDaemon, redis_server: RedisServer, raw: bytes
) -> None:
    """Leading zeros, signs and spaces in a header: the same reply, or the same refusal."""
    seen = []
    for port in (memory_daemon.port, redis_server.port):
        c = RespClient(port)
        c.send_raw(raw)
        c.sock.settimeout(0.5)  # a silence this long ends the replies, like a close
        replies = []
        while (reply := c.read()) is not CLOSED:
            replies.append(reply.render())
        c.close()
        seen.append(replies)
    assert seen[0] == seen[1]
    assert seen[0]


def test_json_nested_too_deeply_is_refused_and_the_connection_lives(
    memory_daemon: StashDaemon,
) -> None:
    """Past the depth limit: -NOTJSON naming the limit and the depth, then the next command."""
    c = RespClient(memory_daemon.port)
    deep = b"[" * 5000 + b"]" * 5000
    assert c.call("STASH", deep).render() == (
        f"-NOTJSON value is not valid JSON: nested 5000 levels deep, the limit is {MAX_DEPTH} levels"
    )
    assert c.call("PING").render() == "+PONG"
