"""Slowloris: many connections that each send a request one byte at a time, never finishing.

:class:`Trickle` keeps N sockets open and, every ``interval``, sends the next byte of each
one's request (a RESP ``SET`` whose value never ends, an inline line without its newline,
HTTP headers or a body that never complete). Between ticks it waits on a selector for
the server to answer or close any of them, and records when it did.
:func:`slowloris` runs one door's attack against a daemon while probes (separate
processes) time PING and ``GET /healthz`` and the daemon's RSS is sampled.
"""

from __future__ import annotations

import itertools
import selectors
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from stashd.registry import SQLiteRegistry
from stashd.tenancy import issue_key
from tests.support.probe import HttpHealth, RespPing
from tests.support.watched import Latencies, Probe, WatchedDaemon

# Requests that never finish. Each is sent from its first byte, one byte per tick, and
# its last "byte" repeats forever. The RESP value is announced at 16,000 bytes, under
# the pre-auth cap (16 KiB), so only the auth timeout can end it before AUTH.
RESP_PARTIAL: Final = (
    (b"*3\r\n$3\r\nSET\r\n$7\r\nslowkey\r\n$16000\r\n", b"x"),
    (b"SET slowkey ", b"a"),  # an inline line with no newline
)
_SLOW_POST: Final = (
    b"POST /stash HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100000\r\n\r\n{"data": "'
)
HTTP_PARTIAL: Final = (
    (b"GET /healthz HTTP/1.1\r\nHost: slow\r\nX-Slow: ", b"a"),  # headers never end
    (_SLOW_POST, b"a"),  # a body that never ends
)
# HTTP: a request must arrive whole within 9.5 s of its first byte (stashd.http).
HTTP_REQUEST_TIMEOUT: Final = 9.5
# Connections opened between two round trips on a control connection (see Trickle.open).
CONNECT_BURST: Final = 50


def _stream(head: bytes, tail: bytes) -> Iterator[bytes]:
    for i in range(len(head)):
        yield head[i : i + 1]
    yield from itertools.repeat(tail)


@dataclass
class _Conn:
    sock: socket.socket
    stream: Iterator[bytes]
    opened: float
    sent: int = 0
    first_byte: float | None = None  # monotonic time its first byte went out
    closed: float | None = None  # monotonic time the server ended it
    answer: bytes = b""  # what the server sent before closing (a 408, an error)


@dataclass
class TrickleResult:
    """What happened to the slow connections."""

    opened: int
    refused: int  # connections the server would not take
    lifetimes: list[float] = field(default_factory=list)  # connect to server's close, s
    since_first_byte: list[float] = field(default_factory=list)  # first byte to close, s
    still_open: int = 0
    answers: dict[bytes, int] = field(default_factory=dict)  # first line -> connections
    bytes_sent: int = 0


class Trickle:
    """``count`` connections to ``port``, each trickling one of ``requests``."""

    def __init__(self, port: int, requests: tuple[tuple[bytes, bytes], ...], count: int) -> None:
        self.port = port
        self.requests = requests
        self.count = count
        self.conns: list[_Conn] = []
        self.refused = 0
        self.selector = selectors.DefaultSelector()

    def open(self, sync: Callable[[], None], timeout: float = 10.0) -> None:
        """Connect all of them (the first byte goes with the first tick).

        ``sync`` (a round trip on another connection) runs after every
        :data:`CONNECT_BURST` connects: the server has taken the earlier ones off its
        listen queue once it answers, so the test's own burst never overflows the queue
        (whose drops would add a second per retried SYN to what is measured).
        """
        for i in range(self.count):
            if i and i % CONNECT_BURST == 0:
                sync()
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            except OSError:
                self.refused += 1
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = _Conn(sock, _stream(*self.requests[i % len(self.requests)]), time.monotonic())
            self.conns.append(conn)
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _close(self, conn: _Conn, now: float) -> None:
        if conn.closed is None:
            conn.closed = now
            self.selector.unregister(conn.sock)
            conn.sock.close()

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            conn.answer += data[:4096]
        else:
            self._close(conn, time.monotonic())

    def tick(self) -> None:
        """Send every open connection its next byte."""
        now = time.monotonic()
        for conn in self.conns:
            if conn.closed is not None:
                continue
            try:
                conn.sent += conn.sock.send(next(conn.stream))
                if conn.first_byte is None:
                    conn.first_byte = now
            except BlockingIOError:
                pass  # the server stopped reading: still an open, hanging connection
            except OSError:
                self._close(conn, now)

    def run(
        self,
        interval: float,
        until: Callable[[], bool],
        every_tick: Callable[[], None] = lambda: None,
    ) -> None:
        """Tick every ``interval`` s until ``until()``, handling closes as they come."""
        next_tick = time.monotonic()
        while not until():
            now = time.monotonic()
            if now >= next_tick:
                self.tick()
                every_tick()
                next_tick = now + interval
            for key, _ in self.selector.select(timeout=max(0.0, next_tick - time.monotonic())):
                self._read(key.data)

    @property
    def open_count(self) -> int:
        """Connections the server has not ended."""
        return sum(c.closed is None for c in self.conns)

    def close(self) -> TrickleResult:
        """Close what is still open; what happened."""
        result = TrickleResult(len(self.conns), self.refused)
        for conn in self.conns:
            result.bytes_sent += conn.sent
            if conn.closed is None:
                result.still_open += 1
                self.selector.unregister(conn.sock)
                conn.sock.close()
            else:
                result.lifetimes.append(conn.closed - conn.opened)
                if conn.first_byte is not None:
                    result.since_first_byte.append(conn.closed - conn.first_byte)
            first = conn.answer.split(b"\r\n", 1)[0][:60]
            result.answers[first] = result.answers.get(first, 0) + 1
        self.selector.close()
        return result


@dataclass
class SlowRun:
    """One door's slowloris run: what the slow connections saw, and the probes' figures."""

    door: str
    conns: int
    seconds: float
    trickle: TrickleResult
    resp: Latencies
    http: Latencies
    rss_start_kib: int
    rss_max_kib: int
    rss_end_kib: int
    log_problems: list[str]
    exit_code: int

    def summary(self) -> str:
        """One paragraph of figures."""
        t = self.trickle
        life = sorted(t.lifetimes)
        closed = (
            f"{len(life)} closed by the server after {life[0]:.1f}-{life[-1]:.1f} s"
            if life
            else "none closed by the server"
        )
        return (
            f"{self.door}: {t.opened} slow connections ({t.refused} refused), {closed}, "
            f"{t.still_open} still open at the end, {t.bytes_sent} bytes trickled in "
            f"{self.seconds:.1f} s; PING {self.resp.summary()}; GET /healthz "
            f"{self.http.summary()}; RSS {self.rss_start_kib // 1024} MiB, at most "
            f"{self.rss_max_kib // 1024} MiB, {self.rss_end_kib // 1024} MiB at the end; "
            f"{len(self.log_problems)} log problems, exit {self.exit_code}"
        )


def slowloris(
    door: str,
    conns: int,
    *,
    hold: float = 5.0,
    interval: float = 0.25,
    auth_timeout: int = 2,
    backend: str = "memory",
) -> SlowRun:
    """Attack one door of a fresh daemon with ``conns`` slow connections.

    ``door``: ``resp-preauth`` (strict mode; runs until the auth timeout has closed every
    connection, at most ``auth_timeout + 30`` s), ``resp-open`` (open mode; holds them
    ``hold`` s) or ``http`` (open mode; runs until the request deadline has closed every
    one, at most 40 s).
    """
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "stash.db"
        extra = ["--backend", backend, "--max-clients", str(conns + 100)]
        key = None
        if door == "resp-preauth":
            registry = SQLiteRegistry(db)
            try:
                key = issue_key(registry, "probe", "enterprise").secret
            finally:
                registry.close()
            extra += ["--auth", "keys", "--db", str(db), "--auth-timeout", str(auth_timeout)]
        with WatchedDaemon(*extra, db=db) as daemon:
            requests = HTTP_PARTIAL if door == "http" else RESP_PARTIAL
            port = daemon.http_port if door == "http" else daemon.port
            rss = [daemon.rss_kib()]
            with (
                Probe("resp", daemon.port, key=key) as ping,
                Probe("http", daemon.http_port) as health,
            ):
                trickle = Trickle(port, requests, conns)
                started = time.monotonic()
                control = (HttpHealth if door == "http" else RespPing)(port, key)
                try:
                    trickle.open(control.round_trip)
                finally:
                    control.close()
                if door == "resp-open":
                    deadline = started + hold
                    done = lambda: time.monotonic() >= deadline  # noqa: E731
                else:
                    limit = auth_timeout if door == "resp-preauth" else HTTP_REQUEST_TIMEOUT
                    deadline = started + limit + 30
                    done = lambda: trickle.open_count == 0 or time.monotonic() >= deadline  # noqa: E731
                try:
                    trickle.run(interval, done, lambda: rss.append(daemon.rss_kib()))
                finally:
                    result = trickle.close()
                seconds = time.monotonic() - started
                resp, http = ping.finish(), health.finish()
            rss_end = daemon.rss_kib()
            code = daemon.stop()
        return SlowRun(
            door, conns, seconds, result, resp, http, rss[0], max(rss), rss_end,
            daemon.problems, code,
        )  # fmt: skip
