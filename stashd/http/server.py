"""The HTTP door as the daemon runs it: aiohttp's low-level server behind the shared listener.

It runs on aiohttp's low-level server (``web.Server``, a documented protocol factory)
through its public API only, each connection wrapped in a
:class:`~stashd.http.protocol.Connection`. Sockets are accepted by
:class:`~stashd.listener.Listener`: each connection holds a slot of the daemon's one
count of clients, shared with RESP, for as long as it is open (idle keep-alive
included), and one over ``--max-clients`` gets 503 before a byte of its request is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Final

from aiohttp import web

from stashd import log
from stashd.http.errors import refusal
from stashd.http.protocol import MAX_LINE, REQUEST_TIMEOUT, SEND_TIMEOUT, Connection, Guard
from stashd.listener import Listener

if TYPE_CHECKING:
    from stashd.http.api import HttpApi

logger = log.get("stashd.http")

#: A keep-alive connection with no request in progress is closed after this long; it costs
#: a socket and a little memory, not a handler.
IDLE_TIMEOUT: Final = 60.0
#: On shutdown, in-flight requests get this long to finish before connections are closed.
SHUTDOWN_TIMEOUT: Final = 5.0
#: After answering a request whose body we did not read (413, a liar), keep reading and
#: dropping it this long before closing, so the client sees our answer rather than a reset
#: caused by unread bytes; bounded, so it cannot be used to hold the connection.
LINGER: Final = 2.0


class _AiohttpLog(logging.Handler):
    """aiohttp's own log records as this module's events, never quoting a request's bytes.

    aiohttp logs each request it cannot parse with a traceback whose text quotes the
    bytes; here it is one ``http_malformed_request`` event naming the error's class (an
    HTTP error of aiohttp's carries its status as ``code``). Anything else it logs is
    ours to look at: an error with its traceback, or a debug event.
    """

    def emit(self, record: logging.LogRecord) -> None:
        """One event per record."""
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(exc, "code", None)
        if exc is not None and isinstance(code, int) and 400 <= code < 500:
            logger.info("http_malformed_request", error=type(exc).__name__)
        elif record.levelno >= logging.ERROR:
            logger.error(
                "http_aiohttp_error", message=record.getMessage(), exc_info=record.exc_info
            )
        else:
            logger.debug("http_aiohttp", message=record.getMessage())


def _aiohttp_logger() -> logging.Logger:
    """The logger handed to aiohttp (its ``logger`` protocol option), set up once."""
    bridge = logging.getLogger("stashd.http.aiohttp")
    if not bridge.handlers:
        bridge.addHandler(_AiohttpLog())
        bridge.setLevel(logging.DEBUG)  # the handler decides: aiohttp logs some at debug
        bridge.propagate = False
    return bridge


class HttpServer:
    """The sidecar as the daemon runs it: bound, served in the running loop, closed first."""

    def __init__(
        self,
        api: HttpApi,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.api = api
        self.request_timeout = request_timeout
        self.send_timeout = send_timeout
        self.guard: Guard | None = None
        self.runner: web.ServerRunner | None = None
        self.listener: Listener | None = None
        self.watchdog: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        # aiohttp's low-level server: a protocol factory calling the handler with each
        # request; the options are the protocol's, as documented for AppRunner.
        server = web.Server(
            self.api.handle,
            access_log=None,  # write events are logged by the handlers, never request lines
            logger=_aiohttp_logger(),
            keepalive_timeout=IDLE_TIMEOUT,
            lingering_time=LINGER,
            # A compressed body is refused, never inflated: a small gzip can expand past
            # any payload limit before a handler sees a byte of it.
            auto_decompress=False,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
        )
        self.runner = runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        loop = asyncio.get_running_loop()
        self.guard = guard = Guard(loop, self.request_timeout, self.send_timeout)
        # Every connection holds a slot of the daemon's one count of clients (RESP's
        # too); one over it is answered 503 and closed, unread.
        slots = self.api.ctx.slots
        self.listener = Listener(
            "http", slots, lambda slot: Connection(guard, server(), slot), refusal(slots.limit)
        )
        self.port = await self.listener.start(host, port)
        # Once bound: a port in use must fail with nothing of the endpoint left running.
        if self.api.mcp_door is not None:
            self.api.mcp_door.start()
        self.watchdog = loop.create_task(guard.watch())
        return self.port

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), close connections."""
        if self.listener is not None:
            self.listener.close()
        self.api.ctx.watch.cut_all()  # open event streams end now, not at the shutdown timeout
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.api.mcp_door is not None:
            await self.api.mcp_door.stop()
        if self.watchdog is not None:
            self.watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watchdog
            self.watchdog = None
        if self.listener is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.listener.wait_closed(), SHUTDOWN_TIMEOUT)
            self.listener = None
