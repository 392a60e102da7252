"""An HTTP sidecar served in the test's own loop, with an injected clock, keyring and limiter."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp

from stashd.events import WriteEvents
from stashd.http.api import HttpApi
from stashd.http.protocol import REQUEST_TIMEOUT, SEND_TIMEOUT
from stashd.http.server import HttpServer
from stashd.ratelimit import Rate, RateLimiter
from stashd.server import ServerContext
from stashd.service import MemoryService
from stashd.store.memory import MemoryStore
from stashd.tenancy import Keyring, OpenKeyring
from stashd.types import Limits, Principal
from tests.support.clock import Clock

LIMITS = Limits(max_payload=1000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)
START_MS = 1_800_000_000_000  # 2027-01-15, a fixed "now" for the injected clock


class StrictKeyring:
    """Registered keys only: no key or an unknown key is refused (what strict mode does)."""

    remote = False

    def __init__(self, keys: dict[bytes, str], limits: Limits = LIMITS) -> None:
        self.principals = {k: Principal(ns, limits, ns) for k, ns in keys.items()}

    def anonymous(self) -> Principal | None:
        return None

    def authenticate(self, username: str | None, key: bytes) -> Principal | None:
        return self.principals.get(key)


@dataclass
class Sidecar:
    """What a test needs to talk to and inspect an in-process sidecar."""

    url: str
    port: int
    store: MemoryStore
    clock: Clock
    session: aiohttp.ClientSession
    api: HttpApi
    server: HttpServer

    def count(self, ns: str) -> int:
        """Live entries in a namespace, read from the store itself."""
        return self.store.view.count(ns, self.clock())


@contextlib.asynccontextmanager
async def sidecar(
    *,
    store: MemoryStore | None = None,
    keyring: Keyring | None = None,
    limiter: RateLimiter | None = None,
    rate_of: Callable[[Principal], Rate | None] | None = None,
    request_timeout: float = REQUEST_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
    events: WriteEvents | None = None,
    mcp: bool = False,
) -> AsyncIterator[Sidecar]:
    """Serve the HTTP API on a free port of this loop until the block ends."""
    clock = Clock(START_MS)
    store = store or MemoryStore(clock)
    store.clock = clock
    ctx = ServerContext(MemoryService(store), keyring or OpenKeyring(LIMITS), store, events=events)
    api = HttpApi(ctx, limiter=limiter, rate_of=rate_of, mcp=mcp)
    server = HttpServer(api, request_timeout=request_timeout, send_timeout=send_timeout)
    port = await server.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(url) as session:
        try:
            yield Sidecar(url, port, store, clock, session, api, server)
        finally:
            await server.close()


async def raw_exchange(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers (lower-cased names) and body of one raw HTTP/1.1 response."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(rest)))
    return status, headers, rest[:length]


async def read_answer(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """One whole answer from a stream: the head, then Content-Length bytes of body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    length = int(split_response(head)[1]["content-length"])
    return head + await asyncio.wait_for(reader.readexactly(length), timeout)


async def exchange(port: int, *requests: bytes) -> list[bytes]:
    """Send each request as its own write on one connection; one answer to each."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            writer.write(request)
            await writer.drain()
        return [await read_answer(reader) for _ in requests]
    finally:
        writer.close()


def post(
    body: bytes, headers: bytes = b"X-API-KEY: alice-key\r\n", *, path: bytes = b"/stash"
) -> bytes:
    """A POST with a Content-Length, as raw bytes."""
    return (
        b"POST " + path + b" HTTP/1.1\r\nHost: t\r\n" + headers
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip
