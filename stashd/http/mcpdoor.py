"""The /mcp endpoint's life in the HTTP door: loaded beside the running daemon, stopped with it.

Loading the MCP SDK takes about half a second (its models are built at import), which
would double the daemon's start; so the daemon starts and answers without it, and the
endpoint is imported on a worker thread once the door listens. A request that comes
before it is ready waits for it. The SDK's transport manager is an anyio task group,
which must be left by the task that entered it: it runs in a task of its own from load
to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from typing import TYPE_CHECKING

from stashd import log

if TYPE_CHECKING:
    from stashd.batch import Batcher
    from stashd.mcp.endpoint import McpEndpoint
    from stashd.service import MemoryService

logger = log.get("stashd.http")


class McpDoor:
    """The endpoint, made when first loaded and served until :meth:`stop`."""

    def __init__(self, service: MemoryService, batcher: Batcher, *, loopback: bool) -> None:
        self.service = service
        self.batcher = batcher
        self.loopback = loopback
        self._ready: asyncio.Future[McpEndpoint] | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin loading the endpoint in the background; requests wait for it."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._task = loop.create_task(self._serve(self._ready))

    async def _serve(self, ready: asyncio.Future[McpEndpoint]) -> None:
        try:
            module = await asyncio.to_thread(importlib.import_module, "stashd.mcp.endpoint")
            endpoint: McpEndpoint = module.McpEndpoint(
                self.service, self.batcher, loopback=self.loopback
            )
            async with endpoint.running():
                ready.set_result(endpoint)
                await self._stopping.wait()
        except Exception as exc:
            logger.exception("mcp_unavailable")
            if not ready.done():
                ready.set_exception(exc)

    def state(self) -> str:
        """starting, ready or failed (GET /healthz reports it)."""
        ready = self._ready
        if ready is None or not ready.done():
            return "starting"
        return "failed" if ready.exception() is not None else "ready"

    async def endpoint(self) -> McpEndpoint:
        """The endpoint, once loaded; raises what stopped it from loading."""
        assert self._ready is not None, "start() first"
        return await asyncio.shield(self._ready)

    async def stop(self) -> None:
        """Stop the endpoint's transport manager and wait for it."""
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
