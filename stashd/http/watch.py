"""GET /watch: a namespace's keyspace events as Server-Sent Events, resumable by ``Last-Event-ID``.

The stream is a ``web.StreamResponse`` whose ``write_eof`` sends events until the watch
ends, so the API's one way of answering (:meth:`HttpApi.handle` prepares, then ends the
answer) serves it with the rate-limit fields on its headers like any other answer. What
a watcher that does not read can make the door hold is bounded twice: its events
waiting to be sent (:data:`~stashd.watchlog.WATCHER_BUFFER`; past it the stream is cut)
and the socket's buffer, whose stall the door's send timeout ends.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Final

from aiohttp import web

from stashd import log
from stashd.errors import BadRequest
from stashd.http.request import query_bytes
from stashd.service import check_pattern

if TYPE_CHECKING:
    from stashd.watchlog import Event, Watcher, WatchLog

logger = log.get("stashd.http")

#: Seconds between keep-alive comments on a quiet stream: under the 60 s idle timeouts of
#: common proxies, and how soon a watcher that vanished without a word is noticed.
KEEPALIVE: Final = 15.0
#: Milliseconds an EventSource waits before reconnecting (the SSE ``retry`` field).
RETRY_MS: Final = 1000


def last_event_id(request: web.BaseRequest) -> int | None:
    """The id to resume after: ``Last-Event-ID``, else ``?last_event_id=``; None: none."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        sent = query_bytes(request, "last_event_id")
        raw = None if sent is None else sent.decode("latin-1")
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not text.isdigit() or not text.isascii():
        shown = text[:40]
        raise BadRequest(f"last event id must be a non-negative integer, got {shown!r}")
    return int(text)


def frame(event: Event) -> bytes:
    """One event as SSE: its id, its name, and its data as JSON."""
    name = event.event.decode("ascii", "replace")
    data: dict[str, str] = {"event": name}
    if event.key or name != "reset":
        data["key"] = event.key.decode("utf-8", "replace")
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"id: {event.id}\nevent: {name}\ndata: {body}\n\n".encode()


class EventStream(web.StreamResponse):
    """The answer to GET /watch: its ``write_eof`` streams until the watch ends."""

    def __init__(
        self, watches: WatchLog, request: web.BaseRequest, namespace: str, pattern: bytes
    ) -> None:
        super().__init__(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a proxy that buffers would hold events back
            },
        )
        self.watches = watches
        self.arrived = asyncio.Event()
        self.writing = False
        self.streamed = False
        self.transport = request.transport
        last = last_event_id(request)
        self.watcher: Watcher = watches.open(namespace, pattern, last, self._wake)

    def _wake(self, watcher: Watcher) -> None:
        self.arrived.set()
        if watcher.cut and self.writing and self.transport is not None:
            # Cut while a write waits on a client that does not read: nothing more
            # can reach it, so the socket goes now, with what it holds.
            self.transport.abort()

    async def write_eof(self, data: bytes = b"") -> None:
        """Send the events as they come, then end the answer (cut, or the daemon closing).

        aiohttp calls it again once the handler returns; the stream runs once.
        """
        watcher = self.watcher
        if self.streamed:
            await super().write_eof(data)
            return
        self.streamed = True
        try:
            await self._send(f"retry: {RETRY_MS}\n\n".encode())
            while not watcher.cut:
                if not watcher.pending:
                    self.arrived.clear()
                    try:
                        await asyncio.wait_for(self.arrived.wait(), KEEPALIVE)
                    except TimeoutError:
                        await self._send(b": keep-alive\n\n")
                    continue
                await self._send(b"".join(frame(e) for e in watcher.take()))
        finally:
            self.watches.close(watcher)
        if watcher.overflow:
            logger.info("http_watch_cut", namespace=watcher.namespace)
        await super().write_eof(data)

    async def _send(self, data: bytes) -> None:
        self.writing = True
        try:
            await self.write(data)
        finally:
            self.writing = False


def open_stream(watches: WatchLog, request: web.BaseRequest, namespace: str) -> EventStream:
    """The stream GET /watch?pattern= answers with; bad input is refused before it opens."""
    pattern = query_bytes(request, "pattern")
    if pattern is None or pattern == b"":
        pattern = b"*"
    check_pattern(pattern)
    return EventStream(watches, request, namespace, pattern)
