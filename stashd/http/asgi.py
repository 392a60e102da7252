"""One aiohttp request served by an ASGI application: how the HTTP door hosts the MCP endpoint.

The MCP SDK serves streamable HTTP as an ASGI application; the HTTP door is aiohttp's.
Rather than a second web server on a second port, the door reads the request as it
reads every other (its deadlines, its body limit, its key and its rate limit) and then
hands the ASGI application a scope built from it (ASGI 3.0, HTTP), the body already
read, and a ``send`` that writes an aiohttp response. Both sides are public interfaces:
the ASGI specification and aiohttp's ``StreamResponse``.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Message = MutableMapping[str, Any]
    App = Callable[
        [
            MutableMapping[str, Any],
            Callable[[], Awaitable[Message]],
            Callable[[Message], Awaitable[None]],
        ],
        Awaitable[None],
    ]


async def serve(
    app: App, request: web.BaseRequest, body: bytes, state: dict[str, Any]
) -> web.StreamResponse:
    """Run ``app`` for ``request`` (its ``body`` read), with ``state`` as the scope's state.

    The answer is written as the application sends it and returned prepared and
    finished; an application that ends without answering gets a 500.
    """
    peer = request.transport.get_extra_info("peername") if request.transport else None
    host = request.host.rpartition(":")[0] or request.host
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"{request.version.major}.{request.version.minor}",
        "method": request.method,
        "scheme": "https" if request.secure else "http",
        "path": request.path,
        "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1", "replace"),
        "query_string": request.query_string.encode("latin-1", "replace"),
        "root_path": "",
        # Header names lowercased, values as bytes, in order, duplicates kept (ASGI).
        "headers": [
            (name.lower().encode("latin-1"), value.encode("utf-8", "surrogateescape"))
            for name, value in request.headers.items()
        ],
        "client": tuple(peer[:2]) if isinstance(peer, tuple) else None,
        "server": (host, request.url.port),
        "state": state,
    }
    answered = asyncio.Event()
    response: web.StreamResponse | None = None
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        # Nothing more will come: the body was read whole. An application that listens
        # for the client going away hears so once its answer is sent.
        await answered.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal response
        kind = message["type"]
        if kind == "http.response.start":
            response = web.StreamResponse(status=message["status"])
            for name, value in message.get("headers", ()):
                response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
        elif kind == "http.response.body":
            if response is None:
                msg = "http.response.body before http.response.start"
                raise RuntimeError(msg)
            if not response.prepared:
                await response.prepare(request)
            chunk = message.get("body", b"")
            if chunk:
                await response.write(chunk)
            if not message.get("more_body", False):
                await response.write_eof()
                answered.set()

    try:
        await app(scope, receive, send)
    finally:
        answered.set()
    if response is None:
        return web.Response(status=500)
    if not response.prepared:
        await response.prepare(request)
        await response.write_eof()
    return response
