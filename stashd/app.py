"""Runs the daemon: open the store, serve RESP, and shut down in reverse order on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Final

from stashd import log
from stashd.server import Connection, ServerContext
from stashd.service import MemoryService
from stashd.store.memory import MemoryStore
from stashd.store.sqlite import SQLiteStore
from stashd.tenancy import Limits, OpenKeyring

if TYPE_CHECKING:
    import socket

    from stashd.config import Config
    from stashd.store.base import Store

logger = log.get("stashd.app")

# How often the store gets a slice of background work (the active expire cycle): ten
# times a second, as Redis's default hz does.
MAINTENANCE_INTERVAL: Final = 0.1
# How long shutdown waits for in-flight batches before closing connections anyway.
DRAIN_TIMEOUT: Final = 10.0


def make_store(config: Config) -> Store:
    """The backend named by the config."""
    if config.backend == "memory":
        return MemoryStore()
    if config.backend == "sqlite":
        return SQLiteStore(config.db_path, synchronous=config.sqlite_synchronous)
    msg = f"unknown backend {config.backend!r}"  # pragma: no cover - Config validates
    raise ValueError(msg)  # pragma: no cover


def limits_of(config: Config) -> Limits:
    """Open-mode limits for every caller."""
    return Limits(
        max_payload=config.max_payload_bytes,
        default_ttl_ms=config.default_ttl * 1000,
        max_ttl_ms=config.max_ttl * 1000,
    )


async def serve(
    config: Config,
    stop: asyncio.Event,
    *,
    sock: socket.socket | None = None,
    ready: asyncio.Future[int] | None = None,
) -> None:
    """Serve until ``stop`` is set; ``ready`` gets the bound port (useful with port 0)."""
    if config.auth != "open":  # pragma: no cover - replaced when the key registry lands
        msg = "auth mode 'keys' is not available yet"
        raise ValueError(msg)
    store = make_store(config)
    await store.open()
    if isinstance(store, SQLiteStore):
        logger.info("database_opened", path=str(store.path), synchronous=store.synchronous)
    ctx = ServerContext(MemoryService(store), OpenKeyring(limits_of(config)), store)
    ctx.log_writes = config.log_level in ("debug", "info")
    loop = asyncio.get_running_loop()
    if sock is not None:
        server = await loop.create_server(lambda: Connection(ctx), sock=sock)
    else:
        server = await loop.create_server(
            lambda: Connection(ctx), config.host, config.port, reuse_address=True
        )
    port = server.sockets[0].getsockname()[1]
    logger.info("listening", host=config.host, port=port, backend=config.backend)
    if ready is not None and not ready.done():
        ready.set_result(port)

    async def maintain() -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            store.maintain()

    maintenance = loop.create_task(maintain())
    try:
        await stop.wait()
    finally:
        logger.info("stopping", connections=len(ctx.connections))
        server.close()  # stop accepting
        maintenance.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await maintenance
        if ctx.batcher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.batcher.drain(), DRAIN_TIMEOUT)
        for conn in list(ctx.connections):
            conn.close_when_idle()
        await server.wait_closed()
        await store.close()
        logger.info("stopped")


def run(config: Config) -> None:
    """Run the daemon in this process until SIGTERM or SIGINT; exits normally after them."""
    try:
        import uvloop  # noqa: PLC0415 - optional on platforms without it
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    else:
        runner = uvloop.run

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, stop)

    runner(main())
