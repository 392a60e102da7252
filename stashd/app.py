"""Runs the daemon: open the keyring and store, serve RESP and HTTP, shut down in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import sys
from typing import TYPE_CHECKING, Final

from stashd import log
from stashd.admission import ClientSlots
from stashd.config import ConfigError, is_loopback
from stashd.connbudget import PER_ADDRESS, ConnectionBudget
from stashd.events import WriteEvents
from stashd.held import HeldMemory
from stashd.http.api import HttpApi
from stashd.http.server import HttpServer
from stashd.ratelimit import LocalLimiter
from stashd.ratelimit_redis import RedisLimiter
from stashd.registry import SQLiteRegistry
from stashd.registry_redis import RedisRegistry
from stashd.scripting.cache import Scripts
from stashd.server import ServerContext, listener
from stashd.service import MemoryService
from stashd.store import open_store
from stashd.store.redis.store import RedisStore
from stashd.store.sqlite import SQLiteStore
from stashd.tenancy import Keyring, OpenKeyring, StrictKeyring, open_limits

if TYPE_CHECKING:
    import socket

    from stashd.config import Config
    from stashd.ratelimit import RateLimiter, SharedLimiter
    from stashd.registry import Registry
    from stashd.store.base import Store

logger = log.get("stashd.app")

# How often the store gets a slice of background work (the active expire cycle): ten
# times a second, as Redis's default hz does.
MAINTENANCE_INTERVAL: Final = 0.1
# How long shutdown waits for in-flight batches before closing connections anyway.
DRAIN_TIMEOUT: Final = 10.0
# How often strict mode asks the registry which keys were revoked, to close their
# connections: one indexed query a second, and a revoked key is cut off within about that.
REVOCATION_INTERVAL: Final = 1.0
#: File descriptors kept beyond --max-clients for all that is not a client: the
#: listening sockets, the database and its journal, the key registry, Redis
#: connections, logs and the loop's own. The daemon holds 16 (memory) to 23 (SQLite with
#: the key registry) before its first client, and opens a few more later; Redis keeps
#: 32 (CONFIG_MIN_RESERVED_FDS), for a process that starts with fewer.
RESERVED_FDS: Final = 64


class ListenError(Exception):
    """A door cannot bind its address; the message names the port and the setting to change."""


def _listen_error(exc: OSError, host: str, port: int, door: str, settings: str) -> ListenError:
    """One line for a failed bind: the port, the door, and how to choose another."""
    if exc.errno == errno.EADDRINUSE:
        return ListenError(
            f"port {port} ({door}) is already in use on {host}: choose another with {settings}"
        )
    reason = exc.strerror or str(exc)
    return ListenError(f"cannot listen on {host}:{port} ({door}): {reason}; see --host, {settings}")


def connect_hint(host: str, port: int, http_port: int | None) -> str:
    """One line saying how to reach the doors just opened: a redis-cli and a curl command."""
    # A wildcard address is reached on loopback from this machine.
    target = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - compared, not bound
    hint = (
        "connect with: redis-cli "
        + ("" if target == "127.0.0.1" else f"-h {target} ")
        + f"-p {port}"
    )
    if http_port is not None:
        hint += f"  or  curl http://{target}:{http_port}/healthz"
    return hint


def make_store(config: Config) -> Store:
    """The backend named by the config."""
    if config.backend == "redis":
        return RedisStore(config.redis_target)
    return open_store(config.backend, path=config.db_path, synchronous=config.sqlite_synchronous)


def make_registry(config: Config) -> Registry:
    """The key registry: in Redis with ``--backend redis``, else in the SQLite file."""
    if config.backend == "redis":
        return RedisRegistry(config.redis_target)
    return SQLiteRegistry(config.db_path)


def make_keyring(config: Config) -> Keyring:
    """Open mode's keyring, or strict mode's on the registry (file or Redis)."""
    if config.auth == "open":
        return OpenKeyring(open_limits(config))
    return StrictKeyring(make_registry(config), config.tier_table())


def log_opened(config: Config, keyring: Keyring, store: Store) -> None:
    """What start-up opened, logged once both doors listen: a failed start prints one line."""
    if isinstance(store, SQLiteStore):
        logger.info("database_opened", path=str(store.path), synchronous=store.synchronous)
    elif isinstance(store, RedisStore):
        logger.info("redis_connected", redis=store.target.display())
    if isinstance(keyring, StrictKeyring) and not keyring.registry.records():
        if config.backend == "redis":
            where = f"--backend redis --redis-url {config.redis_target.display()}"
        else:
            where = f"--db {config.db_path}"
        logger.warning("no_api_keys", hint=f"create one with: stash keys create {where}")


def make_limiter(config: Config) -> RateLimiter | SharedLimiter:
    """Rate limits in Redis with ``--backend redis`` (one limit for all nodes), else local."""
    if config.backend == "redis":
        return RedisLimiter(config.redis_target)
    return LocalLimiter()


def raise_fd_limit(max_clients: int) -> int:
    """Make room for --max-clients sockets and RESERVED_FDS; the clients that fit.

    The soft open-file limit is raised toward the hard limit as far as needed (never
    lowered). When even that cannot hold them all, max-clients is lowered to what fits
    and a warning says so once, with both numbers, as Redis does; so client sockets
    never take the descriptors the store and the logs need. Raises
    :class:`ConfigError` when not one client fits.
    """
    try:
        import resource  # noqa: PLC0415 - POSIX only
    except ImportError:  # pragma: no cover - Windows
        return max_clients
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max_clients + RESERVED_FDS
    if soft == resource.RLIM_INFINITY or soft >= want:
        return max_clients
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError) as exc:
        logger.warning("fd_limit_not_raised", fd_limit=soft, wanted=new, error=str(exc))
    else:
        logger.info("fd_limit_raised", old=soft, fd_limit=new)
        soft = new
    if soft >= want:
        return max_clients
    fits = soft - RESERVED_FDS
    if fits < 1:
        msg = (
            f"the open-file limit is {soft}, stashd needs at least {RESERVED_FDS + 1} "
            f"({RESERVED_FDS} reserved and one client); raise it with ulimit -n"
        )
        raise ConfigError(msg)
    logger.warning(
        "max_clients_reduced",
        requested=max_clients,
        max_clients=fits,
        fd_limit=soft,
        reserved_fds=RESERVED_FDS,
        hint=f"maxclients has been reduced to {fits} to compensate for low ulimit; "
        f"{max_clients} clients need an open-file limit of {want} (ulimit -n)",
    )
    return fits


async def serve(
    config: Config,
    stop: asyncio.Event,
    *,
    sock: socket.socket | None = None,
    ready: asyncio.Future[int] | None = None,
) -> None:
    """Serve until ``stop`` is set; ``ready`` gets the bound RESP port (useful with port 0).

    RESP starts first, then the HTTP sidecar on the same loop and the same store; shutdown
    runs in reverse.
    """
    slots = ClientSlots(raise_fd_limit(config.max_clients))
    keyring = make_keyring(config)
    store = make_store(config)
    try:
        await store.open()
    except BaseException:
        await _close_keyring(keyring)
        raise
    held = HeldMemory(config.maxmemory_bytes, store.memory_bytes, config.max_query_buffer)
    ctx = ServerContext(
        MemoryService(store, held, Scripts(config.lua_time_limit)),
        keyring,
        store,
        slots=slots,
        auth_timeout=float(config.auth_timeout),
        max_query_buffer=config.max_query_buffer,
        output_limits=config.output_limits,
        limiter=make_limiter(config),
        # One event per committed write, at the levels that show them.
        events=WriteEvents(config.log_format, store.clock)
        if config.log_level in ("debug", "info")
        else None,
        # Every client of a loopback daemon comes from one address: no address budget.
        connection_budget=ConnectionBudget(
            per_address=None if is_loopback(config.host) else PER_ADDRESS
        ),
    )
    store.expired = ctx.hub  # keys the sweep removes are announced as expired
    loop = asyncio.get_running_loop()
    server = listener(ctx)
    http: HttpServer | None = None
    http_port: int | None = None
    try:
        try:
            port = await server.start(config.host, config.port, sock=sock)
        except OSError as exc:
            raise _listen_error(
                exc, config.host, config.port, "RESP", "--port or STASH_PORT"
            ) from None
        if config.http:
            # One limiter for both doors: a user's RESP commands and HTTP requests share a rate.
            api = HttpApi(
                ctx,
                backend=config.backend,
                limiter=ctx.limiter,
                rate_of=lambda p: p.limits.rate,
                mcp=config.mcp,
                loopback=is_loopback(config.host),
            )
            http = HttpServer(api)
            try:
                http_port = await http.start(config.host, config.http_port)
            except OSError as exc:
                settings = "--http-port or STASH_HTTP_PORT, or turn HTTP off with --no-http"
                raise _listen_error(exc, config.host, config.http_port, "HTTP", settings) from None
    except BaseException:
        server.close()
        await store.close()
        await _close_limiter(ctx)
        await _close_keyring(keyring)
        raise
    log_opened(config, keyring, store)
    logger.info(
        "listening",
        host=config.host,
        port=port,
        http_port=http_port,
        max_clients=slots.limit,
        backend=config.backend,
        auth=config.auth,
    )
    if sys.stderr.isatty():  # a person at a terminal (make run); logs to files stay pure
        print(connect_hint(config.host, port, http_port), file=sys.stderr, flush=True)  # noqa: T201 - for the person, not the log
    if ready is not None and not ready.done():
        ready.set_result(port)

    async def maintain() -> None:
        while True:
            await asyncio.sleep(MAINTENANCE_INTERVAL)
            # A script running on its thread holds the store: the memory store's sweep
            # would touch it meanwhile.
            if ctx.batcher is None or not ctx.batcher.exclusive:
                store.maintain()

    async def watch_revocations(strict: StrictKeyring) -> None:
        failing = False  # one warning per run of failures, not one a second
        while True:
            await asyncio.sleep(REVOCATION_INTERVAL)
            try:
                revoked = await strict.revoked_async() if strict.remote else strict.revoked()
            except Exception as exc:  # noqa: BLE001 - a broken file or Redis down must not stop us
                if not failing:
                    logger.warning("revocation_check_failed", error=str(exc))
                failing = True
                continue
            if failing:
                logger.info("revocation_check_recovered")
                failing = False
            if revoked and (closed := ctx.close_connections_of(revoked)):
                logger.info("revoked_key_connections_closed", connections=closed)

    maintenance = loop.create_task(maintain())
    revocations = (
        loop.create_task(watch_revocations(keyring)) if isinstance(keyring, StrictKeyring) else None
    )
    try:
        await stop.wait()
    finally:
        logger.info("stopping", connections=slots.count)
        if http is not None:
            await http.close()  # the HTTP door first: its requests finish on a live store
        server.close()  # stop accepting
        for task in (maintenance, revocations):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if ctx.batcher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ctx.batcher.drain(), DRAIN_TIMEOUT)
        for conn in list(ctx.connections):
            conn.close_when_idle()
        await server.wait_closed()
        await store.close()
        await _close_limiter(ctx)
        await _close_keyring(keyring)
        slots.flush()  # the refusals of the last second
        logger.info("stopped")


async def _close_keyring(keyring: Keyring) -> None:
    if isinstance(keyring, StrictKeyring):
        await keyring.aclose()


async def _close_limiter(ctx: ServerContext) -> None:
    await ctx.limiter.aclose()


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
