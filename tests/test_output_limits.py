"""No client makes the server build or hold replies without bound, or hold the loop.

Pipelines run in slices and wait for the client to read; the client output buffer
limits cut a client that leaves too much unread; a bug in one command is that command's
error; long commands (KEYS, FLUSHDB, huge SCAN COUNTs) never hold the loop for long.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog.testing

from stashd.config import ConfigError, load
from stashd.outputlimit import DEFAULT, OutputLimit, OutputLimits
from stashd.server import Connection, ServerContext
from stashd.service import MemoryService
from stashd.store.memory import FREE_SLICE, MemoryStore
from stashd.tenancy import OpenKeyring
from stashd.types import Limits
from tests.support.resp_client import RespClient
from tests.support.servers import StashDaemon
from tests.support.transport import Transport

MIB = 1024 * 1024


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _request(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%b\r\n" % (len(a), a) for a in args)


def _ping_ms(client: RespClient) -> float:
    start = time.perf_counter()
    assert client.call("PING").render() == "+PONG"
    return (time.perf_counter() - start) * 1000


def _read_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        data = sock.recv(min(4 * MIB, n - len(chunks)))
        assert data, f"closed after {len(chunks)} of {n} bytes"
        chunks += data
    return bytes(chunks)


# -- the setting ----------------------------------------------------------------------


def test_the_setting_reads_as_redis_writes_it() -> None:
    """Sizes take Redis's suffixes; classes left out keep their defaults."""
    limits = OutputLimits.parse("normal 1mb 512kb 30")
    assert limits.normal == OutputLimit(MIB, 512 * 1024, 30)
    assert limits.pubsub == OutputLimits.parse(DEFAULT).pubsub
    assert OutputLimits.parse("pubsub 2k 1000 0 normal 0 0 0").render() == (
        "normal 0 0 0 pubsub 2000 1000 0"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("normal 1mb 1mb", "groups of"),
        ("replica 1 1 1", "unknown class 'replica'"),
        ("normal lots 1 1", "'lots' is not a size"),
        ("normal 1 1 -5", "soft seconds of normal must be a whole number of seconds, got '-5'"),
    ],
)
def test_a_bad_setting_names_what_is_wrong(text: str, says: str) -> None:
    """The daemon refuses to start on a setting it cannot read, saying which part."""
    with pytest.raises(ConfigError, match=says):
        load({"client_output_buffer_limit": text}, env={}, dotenv_path=Path("/nonexistent"))


def test_the_limits_break_as_redis_measures_them() -> None:
    """Hard at once; soft only after its seconds above it."""
    limit = OutputLimit(hard=100, soft=10, soft_seconds=5)
    assert limit.over(101, None, 0.0) == "hard"
    assert limit.over(50, 0.0, 4.9) is None
    assert limit.over(50, 0.0, 5.0) == "soft"
    assert limit.over(10, 0.0, 99.0) is None
    assert OutputLimit(0, 0, 0).over(10**12, 0.0, 99.0) is None


# -- a real daemon --------------------------------------------------------------------


@pytest.fixture(scope="module", params=["memory", "sqlite"])
def daemon(request: pytest.FixtureRequest) -> Iterator[StashDaemon]:
    with StashDaemon("--backend", request.param, "--no-http") as d:
        yield d


def test_config_get_shows_the_limits(daemon: StashDaemon) -> None:
    """CONFIG GET client-output-buffer-limit answers in bytes, as Redis does."""
    c = RespClient(daemon.port)
    reply = c.call("CONFIG", "GET", "client-output-buffer-limit").render()
    assert "normal 67108864 16777216 60 pubsub 33554432 8388608 60" in reply


def test_a_pipeline_that_is_not_read_is_not_answered_ahead(daemon: StashDaemon) -> None:
    """400 GETs of a 1 MiB value in one write, unread: the server holds a slice, not 400 MiB.

    Once the client reads, every reply arrives whole and in order.
    """
    c = RespClient(daemon.port, timeout=30)
    value = b"v" * MIB
    assert c.call("SET", "big", value).render() == "+OK"
    bystander = RespClient(daemon.port)
    before = _rss_mib(daemon.pid)
    n = 400
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    c.send_raw(b"GET big\r\n" * n)
    # However long we look, the server does not run ahead of the reader. Unbounded,
    # it built the 400 MiB in well under a second.
    worst = 0.0
    for _ in range(20):
        _ping_ms(bystander)
        worst = max(worst, _rss_mib(daemon.pid) - before)
    assert worst < 100, f"the server's RSS grew by {worst:.0f} MiB for an unread pipeline"
    one = b"$%d\r\n%b\r\n" % (MIB, value)
    got = _read_exactly(c.sock, n * len(one), time.monotonic() + 120)
    assert got == one * n
    assert c.call("PING").render() == "+PONG"


def test_a_long_pipeline_runs_in_order_while_others_are_served(daemon: StashDaemon) -> None:
    """50,000 INCRs in one write: replies 1..50000 in order; a bystander waits little."""
    c = RespClient(daemon.port, timeout=60)
    c.call("DEL", "counter")
    bystander = RespClient(daemon.port)
    n = 50_000
    c.send_raw(b"INCR counter\r\n" * n)
    pings = [_ping_ms(bystander) for _ in range(20)]
    expected = b"".join(b":%d\r\n" % i for i in range(1, n + 1))
    assert _read_exactly(c.sock, len(expected), time.monotonic() + 60) == expected
    # Generous for a loaded machine: held for the whole pipeline it takes seconds.
    assert sorted(pings)[-2] < 1000, pings


def test_keys_over_a_large_namespace_lets_others_in(daemon: StashDaemon) -> None:
    """KEYS reads a page at a time: every key comes back once, and PING answers meanwhile."""
    c = RespClient(daemon.port, timeout=60)
    c.call("FLUSHDB")
    total = 30_000
    for start in range(0, total, 5000):
        pairs = [x for i in range(start, start + 5000) for x in (b"k:%d" % i, b"v")]
        assert c.call("MSET", *pairs).render() == "+OK"
    c.send("KEYS", "k:*")
    bystander = RespClient(daemon.port)
    _ping_ms(bystander)
    reply = c.read()
    assert reply.kind == "*"
    found = [item.value for item in reply.value]
    assert sorted(found) == sorted(b"k:%d" % i for i in range(total))
    page = c.call("SCAN", "0", "COUNT", "100000000").value
    assert len(page[1].value) <= 1000
    assert c.call("FLUSHDB").render() == "+OK"
    assert c.call("DBSIZE").render() == ":0"


def test_keys_inside_multi_and_long_patterns_are_refused(daemon: StashDaemon) -> None:
    """Both with an error saying why; the transaction's other commands still run."""
    c = RespClient(daemon.port)
    assert c.call("MULTI").render() == "+OK"
    assert c.call("KEYS", "*").render() == "+QUEUED"
    assert c.call("PING").render() == "+QUEUED"
    reply = c.call("EXEC").render()
    assert "KEYS cannot run inside MULTI" in reply
    assert "PONG" in reply
    pattern = "*" * 1025
    assert c.call("KEYS", pattern).render() == (
        "-ERR pattern is 1025 bytes, the limit is 1024 bytes"
    )
    assert c.call("SCAN", "0", "MATCH", pattern).render() == (
        "-ERR pattern is 1025 bytes, the limit is 1024 bytes"
    )


def test_a_reply_over_the_hard_limit_cuts_only_that_client() -> None:
    """MGET of 40 MiB against a 4 MiB limit: closed without building it; logged; others fine."""
    with StashDaemon(
        "--backend",
        "memory",
        "--no-http",
        "--client-output-buffer-limit",
        "normal 4mb 0 0",
        log_level="info",
    ) as d:
        c = RespClient(d.port, timeout=30)
        value = b"x" * MIB
        for i in range(40):
            assert c.call("SET", f"big{i}", value).render() == "+OK"
        bystander = RespClient(d.port)
        before = _rss_mib(d.pid)
        c.send("MGET", *[f"big{i}" for i in range(40)])
        got = b""
        c.sock.settimeout(30)
        while chunk := c.sock.recv(MIB):
            got += chunk
        assert len(got) <= 4 * MIB
        assert _rss_mib(d.pid) - before < 30
        assert bystander.call("GET", "big0").render().startswith("$'xxx")
        assert d.stop() == 0
    assert "client_output_buffer_limit_reached" in d.stderr
    assert "hard" in d.stderr


def test_a_client_over_the_soft_limit_for_its_seconds_is_cut() -> None:
    """A 16 MiB reply left unread past a 1 MiB soft limit of 1 s: the connection is cut."""
    with StashDaemon(
        "--backend",
        "memory",
        "--no-http",
        "--client-output-buffer-limit",
        "normal 0 1mb 1",
        "--max-payload-bytes",
        str(4 * MIB),
        log_level="info",
    ) as d:
        c = RespClient(d.port, timeout=30)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        for i in range(4):
            assert c.call("SET", f"big{i}", b"y" * 4 * MIB).render() == "+OK"
        c.send("MGET", "big0", "big1", "big2", "big3")
        # Reading far slower than the server sends: the unsent reply stays above 1 MiB
        # for more than a second, and the server drops it and the connection.
        total = 0
        c.sock.settimeout(30)
        try:
            while chunk := c.sock.recv(64 * 1024):
                total += len(chunk)
                time.sleep(0.05)  # the slow reader this test is about
        except ConnectionResetError:
            pass
        assert total < 16 * MIB
        assert d.stop() == 0
    assert "client_output_buffer_limit_reached" in d.stderr
    assert "soft" in d.stderr


# -- in process -----------------------------------------------------------------------


class _FaultyStore(MemoryStore):
    """A memory store whose GET has a bug."""

    def run(self, op):  # type: ignore[no-untyped-def]
        if type(op).__name__ == "Get":
            msg = "a bug"
            raise RuntimeError(msg)
        return super().run(op)


async def test_a_bug_in_one_command_is_its_error_alone() -> None:
    """The command answers -ERR naming the failure, it is logged, the rest of the read runs."""
    store = _FaultyStore()
    ctx = ServerContext(
        MemoryService(store), OpenKeyring(Limits(1024 * 1024, 3_600_000, 86_400_000)), store
    )
    conn = Connection(ctx)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    with structlog.testing.capture_logs() as logs:
        conn.data_received(_request(b"SET", b"a", b"1") + _request(b"GET", b"a") + b"PING\r\n")
    assert bytes(transport.out) == (
        b"+OK\r\n-ERR internal error in 'get' command (RuntimeError); it was logged\r\n+PONG\r\n"
    )
    assert not transport.closed
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["command_failed"]


def test_a_flushed_namespace_is_freed_a_slice_at_a_time() -> None:
    """FLUSHDB answers at once; the entries are freed by later maintenance, in slices."""
    store = MemoryStore()
    view = store.view
    from stashd.types import Entry  # noqa: PLC0415 - only this test builds entries

    far = store.clock() + 60_000
    for i in range(3 * FREE_SLICE):
        view.put("ns", b"%d" % i, Entry(b"v", far))
    view.clear("ns")
    assert view.count("ns", store.clock()) == 0
    assert sum(map(len, store.retired)) == 3 * FREE_SLICE
    store.free_retired()
    assert sum(map(len, store.retired)) == 2 * FREE_SLICE
    store.maintain()
    assert store.retired == []


def test_a_refused_bulk_among_a_sliced_pipeline_keeps_every_reply(daemon: StashDaemon) -> None:
    """300 SETs, a SET over the payload limit, a PING, in one write: 300 OKs, TOOLARGE, PONG."""
    c = RespClient(daemon.port, timeout=30)
    big = b"x" * (MIB + 1)
    c.send_raw(_request(b"SET", b"k", b"v") * 300 + _request(b"SET", b"k", big) + b"PING\r\n")
    for _ in range(300):
        assert c.read().render() == "+OK"
    assert c.read().render() == "-TOOLARGE value is 1048577 bytes, the limit is 1048576 bytes"
    assert c.read().render() == "+PONG"


@pytest.mark.parametrize(
    ("patch", "holds"),
    [(b'{"a":1e400}', "a number out of the range"), (b'{"b":"\\ud800"}', "a lone surrogate")],
)
def test_a_merge_that_json_cannot_write_is_refused(
    daemon: StashDaemon, patch: bytes, holds: str
) -> None:
    """Python reads these, JSON cannot write them back: NOTJSON, and the memory is unchanged."""
    c = RespClient(daemon.port)
    key = c.call("STASH", '{"a":1}').value
    assert isinstance(key, bytes)
    reply = c.call("UPDATE", key, "MERGE", patch).render()
    assert reply.startswith("-NOTJSON merge patch is not valid JSON: the merged document holds")
    assert holds in reply
    assert c.call("RECALL", key).render() == "$'{\"a\":1}'"


def test_config_get_refuses_a_long_pattern(daemon: StashDaemon) -> None:
    """The same pattern limit as KEYS: a 1 MiB pattern would hold the loop for seconds."""
    c = RespClient(daemon.port)
    assert c.call("CONFIG", "GET", "?" * MIB).render() == (
        "-ERR pattern is 1048576 bytes, the limit is 1024 bytes"
    )


def test_command_info_takes_a_bounded_list_of_names(daemon: StashDaemon) -> None:
    """1,024 names answer; more are refused, saying the limit and the count."""
    c = RespClient(daemon.port)
    assert len(c.call("COMMAND", "INFO", *["get"] * 1024).value) == 1024
    assert c.call("COMMAND", "DOCS", *["get"] * 1025).render() == (
        "-ERR COMMAND DOCS takes at most 1024 command names, got 1025"
    )
