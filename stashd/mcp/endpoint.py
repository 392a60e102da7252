"""The MCP door over HTTP: the SDK's streamable HTTP transport at ``/mcp`` of the HTTP door.

Stateless: every POST is a whole exchange (the SDK makes a fresh transport for it and
answers with one JSON body), so no session lives in a node's memory, any node of a
cluster can answer any request, and clients that ask for stateless HTTP (or send no
session id) work. The HTTP door has authenticated the request, rate limited it and read
its body within the caller's limit before this runs (:meth:`HttpApi.mcp`); the caller's
client travels to the tools in the ASGI scope's ``state``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Final

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from stashd.client import AsyncStash, ServedStash
from stashd.http import asgi
from stashd.mcp.server import build

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aiohttp import web
    from mcp.server import ServerRequestContext

    from stashd.batch import Batcher
    from stashd.service import MemoryService
    from stashd.types import Principal

#: How this door's writes are marked in their log events (stashd.events).
DOOR: Final = "mcp"
#: The scope state's entry holding the request's client.
_STASH: Final = "stash"
#: The SDK's own body limit: the door has already read the body within the caller's, so
#: this only has to be above every caller's.
_SDK_BODY_LIMIT: Final = 2**62


def _stash_of(ctx: ServerRequestContext[Any, Any]) -> AsyncStash:
    request = ctx.request
    if request is None:  # pragma: no cover - the HTTP transport always attaches it
        msg = "an MCP request over HTTP without its HTTP request"
        raise RuntimeError(msg)
    stash: AsyncStash = request.scope["state"][_STASH]
    return stash


class McpEndpoint:
    """The /mcp endpoint of one daemon: the server, its transport manager, and the bridge."""

    def __init__(self, service: MemoryService, batcher: Batcher, *, loopback: bool) -> None:
        self.service = service
        self.batcher = batcher
        # A daemon on a loopback address is reachable from any web page the user opens:
        # the Host and Origin checks refuse a page that rebinds its name to 127.0.0.1.
        security = (
            TransportSecuritySettings(
                enable_dns_rebinding_protection=True,
                allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
                allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
            )
            if loopback
            else TransportSecuritySettings(enable_dns_rebinding_protection=False)
        )
        self.manager = StreamableHTTPSessionManager(
            app=build(_stash_of),
            json_response=True,
            stateless=True,
            security_settings=security,
            max_request_body_size=_SDK_BODY_LIMIT,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The transport manager's lifetime: entered when the door starts, left when it stops."""
        async with self.manager.run():
            yield

    async def handle(
        self, request: web.BaseRequest, principal: Principal, body: bytes
    ) -> web.StreamResponse:
        """Serve one /mcp request for ``principal``, its body read."""
        stash = ServedStash(self.service, self.batcher, principal, DOOR)
        return await asgi.serve(self.manager.handle_request, request, body, {_STASH: stash})
