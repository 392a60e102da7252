"""The HTTP door's connections: deadlines, half-close, send stalls and refused bytes, under aiohttp.

aiohttp's low-level server (``web.Server``) is a protocol factory; what its public API
does not offer is done one level down, in asyncio. :class:`Connection` is each socket's
protocol: it passes the bytes on to aiohttp's protocol and gives it :class:`Wire` as its
transport. From there it bounds each request from its first byte (slowloris), keeps a
half-closed connection open for the answer under way, drops a client that has read
nothing for too long, and answers in the JSON shape, quoting nothing, the requests
aiohttp refuses itself because it cannot parse them. :class:`Guard` is the watchdog
that checks the deadlines of every open connection.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final, cast

from stashd import log
from stashd.errors import BadRequest, NoRoute, RequestTimeout
from stashd.http.answer import closing_answer
from stashd.http.errors import INTERNAL_ERROR, error_body

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stashd.admission import Slot

logger = log.get("stashd.http")

#: Longest a request may take from its first byte to its last (headers and body): a client
#: that trickles bytes (slowloris) holds a connection and a buffer at most this long. With
#: the watchdog's interval on top, a cut-off comes within 10 s of the first byte.
REQUEST_TIMEOUT: Final = 9.5
#: A connection whose client has read nothing of its answers for this long, while the
#: socket's send buffer stayed full, is dropped: it pins a handler, a socket and up to
#: the transport's high-water mark of answer bytes, and a client that reads again gets
#: the rest, so only one that has stopped reading loses anything.
SEND_TIMEOUT: Final = 60.0
#: How often request deadlines are checked: a cut-off comes at most this much late, and
#: the check costs one pass over open connections, not a timer per request.
WATCH_INTERVAL: Final = 0.25
#: Request line and each header line: aiohttp's default, stated so it is visible here.
MAX_LINE: Final = 8190
#: Answers are sent once the reads of this turn of the loop have been handled, as Redis
#: does, not one by one as each is written: writing each at once cost a third more CPU
#: per request (every write wakes the client for one answer). A connection holding this
#: many unsent bytes sends them at once, so the transport's own limit, which aiohttp
#: waits on for a slow reader, sees them.
SEND_AT: Final = 64 * 1024

#: The answer to bytes aiohttp cannot parse as a request. Which rule they broke is not
#: said: aiohttp's own text quotes the offending bytes.
MALFORMED: Final = (
    f"request is not valid HTTP/1.1, or a request line or header is longer than {MAX_LINE} bytes"
)


class Connection(asyncio.Protocol):
    """The asyncio protocol of one client socket, in front of aiohttp's.

    Bytes and events from the socket go on to ``inner`` (aiohttp's protocol for this
    connection); aiohttp writes through :attr:`wire`. ``deadline`` is armed by a
    request's first byte and bounds headers and body together; the watchdog
    (:class:`Guard`) ends a connection whose request is not whole by then. While the
    handler runs (``in_handler``) the body read enforces the same deadline itself, and a
    half-close ends that read at once (``body_timeout``).
    """

    __slots__ = (
        "arrived",
        "body_timeout",
        "deadline",
        "draining",
        "guard",
        "in_handler",
        "inner",
        "loop",
        "peer_eof",
        "slot",
        "stalled",
        "transport",
        "unsent",
        "unsent_size",
        "wire",
    )

    def __init__(self, guard: Guard, inner: asyncio.Protocol, slot: Slot | None = None) -> None:
        self.guard = guard
        self.loop = guard.loop
        self.inner = inner
        self.slot = slot  # its place in the count of clients, released when it is lost
        self.wire = Wire(self)
        self.transport: asyncio.Transport | None = None
        self.deadline = 0.0  # loop time; 0 when no request is arriving
        self.in_handler = False
        self.draining = False
        self.arrived = 0  # bytes received while the handler ran: the next request began
        self.peer_eof = False
        self.body_timeout: asyncio.Timeout | None = None  # the body read under way
        self.stalled = 0.0  # loop time the socket's send buffer filled up; 0 when it is not
        self.unsent: list[bytes] = []  # written by aiohttp, sent at the end of the turn
        self.unsent_size = 0

    # -- from the socket ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the watchdog and start aiohttp's protocol on the wire."""
        self.transport = self.wire.socket = cast("asyncio.Transport", transport)
        self.guard.connections.add(self)
        self.inner.connection_made(self.wire)

    def data_received(self, data: bytes) -> None:
        """Arm the deadline on a request's first byte, then let aiohttp parse."""
        if self.in_handler:
            self.arrived += len(data)
        elif not self.deadline:
            self.deadline = self.loop.time() + self.guard.request_timeout
        self.inner.data_received(data)

    def eof_received(self) -> bool:
        """A half-close: keep the socket open for the answer if a request is under way.

        A body that ends before its Content-Length then gets its 400 at once instead of
        a reset or a wait for the deadline.
        """
        self.peer_eof = True
        self.inner.eof_received()
        if self.body_timeout is not None:
            self.body_timeout.reschedule(self.loop.time())
        if self.draining or not (self.in_handler or self.deadline):
            # Nothing more will come and nothing is under way: the transport closes once
            # the answers written so far are sent.
            self.flush()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """Unregister and give the slot back; aiohttp ends what it had under way."""
        self.guard.connections.discard(self)
        if self.slot is not None:
            self.slot.release()
        self.unsent.clear()
        self.unsent_size = 0
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """The send buffer is full: aiohttp's writes wait, and the stall is timed."""
        self.stalled = self.loop.time()
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        """The client reads again."""
        self.stalled = 0.0
        self.inner.resume_writing()

    # -- sending ----------------------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for the end of this turn of the loop (at once past SEND_AT)."""
        if not self.unsent:
            self.loop.call_soon(self.flush)
        # A transport copies what it cannot send at once; a buffer of the writer's could
        # change before the queue is sent.
        self.unsent.append(data if type(data) is bytes else bytes(data))
        self.unsent_size += len(data)
        if self.unsent_size >= SEND_AT:
            self.flush()

    def flush(self) -> None:
        """Hand what is queued to the socket's transport."""
        unsent = self.unsent
        if not unsent:
            return
        self.unsent = []
        self.unsent_size = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if len(unsent) == 1:
                transport.write(unsent[0])
            else:
                transport.writelines(unsent)

    # -- from the handler -----------------------------------------------------------------
    def enter(self) -> None:
        """The handler starts: the request's headers are complete."""
        self.in_handler = True
        self.arrived = 0
        if not self.deadline:  # pipelined behind the previous request
            self.deadline = self.loop.time() + self.guard.request_timeout

    def leave(self, *, draining: bool = False) -> None:
        """The answer is written: the next request's clock starts with its first byte.

        ``draining``: the answer went out before the body was read, and aiohttp drops the
        rest for up to LINGER seconds before closing; the request's own deadline still
        bounds that, so no client holds the connection past it.
        """
        self.in_handler = False
        self.draining = draining
        if not draining:
            self.deadline = self.loop.time() + self.guard.request_timeout if self.arrived else 0.0

    # -- from the watchdog ----------------------------------------------------------------
    def expire(self, now: float) -> None:
        """End a request that has not arrived in time, or a client that stopped reading."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        guard = self.guard
        if self.stalled and now - self.stalled >= guard.send_timeout:
            logger.info("http_send_timeout", seconds=guard.send_timeout)
            transport.abort()  # what it holds can never be delivered
            return
        if self.in_handler or not self.deadline or now < self.deadline:
            return
        self.flush()
        if not self.draining:  # nothing answered yet: say why the connection ends
            _, body = error_body(RequestTimeout(guard.request_timeout))
            transport.write(closing_answer(408, body))
        logger.info("http_request_timeout", seconds=guard.request_timeout)
        transport.close()

    # -- from aiohttp -----------------------------------------------------------------------
    def refuse(self, first: bytes) -> None:
        """An answer aiohttp made to a request it never handed to the API: ours goes instead.

        That happens when it cannot parse the bytes (its text would quote them). The
        status is read from its status line (RFC 9112); the answer has the JSON shape
        and a 404 or 400 says no more than that, and the connection ends with it.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        status = int(first[9:12]) if first[:7] == b"HTTP/1." and first[9:12].isdigit() else 500
        if status >= 500:
            answer = closing_answer(500, INTERNAL_ERROR)
        else:
            answer = closing_answer(
                *error_body(NoRoute() if status == 404 else BadRequest(MALFORMED))
            )
        self.flush()
        transport.write(answer)
        transport.close()


class Wire(asyncio.Transport):
    """The transport aiohttp writes to: the socket's, as long as the API is answering.

    Everything the handler sends (the answer, a ``100 Continue``) is written while
    :attr:`Connection.in_handler`, and queued to go out at the end of the loop's turn
    (:meth:`Connection.send`); a write at any other time is an answer aiohttp made by
    itself, which :meth:`Connection.refuse` replaces.
    """

    __slots__ = ("conn", "socket")

    #: The socket's transport, set as the connection is made: aiohttp is handed the wire
    #: only then, so every call it makes finds it here, one attribute away.
    socket: asyncio.Transport

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self.conn = conn

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send, or replace aiohttp's own answer."""
        conn = self.conn
        if conn.in_handler:
            conn.send(data)
        else:
            conn.refuse(bytes(data[:12]))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Send, or replace aiohttp's own answer."""
        conn = self.conn
        if conn.in_handler:
            for data in list_of_data:
                conn.send(data)
        else:
            conn.refuse(b"".join(bytes(chunk) for chunk in list_of_data)[:12])

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: ANN401 - asyncio's signature
        """The socket's."""
        return self.socket.get_extra_info(name, default)

    def is_closing(self) -> bool:
        """The socket's."""
        return self.socket.is_closing()

    def close(self) -> None:
        """Close the socket once what is queued and buffered is sent."""
        self.conn.flush()
        self.socket.close()

    def abort(self) -> None:
        """Close the socket now, dropping what is queued."""
        self.conn.unsent.clear()
        self.conn.unsent_size = 0
        self.socket.abort()

    def is_reading(self) -> bool:
        """The socket's."""
        return self.socket.is_reading()

    def pause_reading(self) -> None:
        """Stop reading the socket: back-pressure on pipelined requests, from aiohttp."""
        self.socket.pause_reading()

    def resume_reading(self) -> None:
        """Read the socket again."""
        self.socket.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """The socket's."""
        self.socket.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        """What is queued and what the socket's transport holds."""
        return self.conn.unsent_size + self.socket.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """The socket's."""
        return self.socket.get_write_buffer_limits()

    def write_eof(self) -> None:
        """Half-close the socket after what is queued."""
        self.conn.flush()
        self.socket.write_eof()

    def can_write_eof(self) -> bool:
        """The socket's."""
        return self.socket.can_write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Another protocol for the socket's bytes (aiohttp never asks)."""
        self.conn.inner = cast("asyncio.Protocol", protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The protocol the socket's bytes go to (aiohttp's)."""
        return self.conn.inner


class Guard:
    """The watchdog: every WATCH_INTERVAL, end requests past their deadline."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, request_timeout: float, send_timeout: float
    ) -> None:
        self.loop = loop
        self.request_timeout = request_timeout
        self.send_timeout = send_timeout
        self.connections: set[Connection] = set()

    async def watch(self) -> None:
        """Run until cancelled."""
        loop = self.loop
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = loop.time()
            for conn in list(self.connections):
                conn.expire(now)
