"""Links to Redis or Valkey: three ways to send rounds of commands, with scripts and errors.

Everything Stash keeps in Redis (entries, the key registry, rate limits) goes through a
*link*, which sends one *round*: a list of commands written at once and answered in
order, each error reply standing in its place as a :class:`ReplyError` value. Every
link is made from one :class:`~stashd.redistarget.RedisTarget`, the settings of a URL.

- :class:`LeanLink` is the daemon's link to a single Redis: one connection owned by the
  event loop, commands encoded by ``hiredis.pack_command`` and replies parsed by one
  ``hiredis.Reader``, rounds answered in the order they were sent. Measured on a 2-core
  machine with rounds of 50 commands, it costs about 1.4 us of client CPU per EVALSHA,
  where a redis-py asyncio pipeline costs about 12 us (its command packing is Python
  and it awaits each reply separately); that difference is most of stashd's budget
  per command (bench/README.md).
- :class:`ClusterLink` speaks to a Redis Cluster through redis-py's asyncio
  ``RedisCluster``, which follows slot moves and failovers.
- :class:`SyncLink` is the synchronous path for in-process use and the ``stash keys``
  commands: redis-py's thread-safe client, cluster or not.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

import hiredis

from stashd import log
from stashd.redistarget import TLSFileError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    import redis as redis_sync
    import redis.asyncio.cluster as redis_cluster

    from stashd.redistarget import RedisTarget

logger = log.get("stashd.redis")

#: After a failed attempt to connect, rounds fail at once for this long, with the same
#: error, instead of each trying again: a dead Redis costs clients nothing extra, and a
#: Redis that is back is used again within this time.
RETRY_INTERVAL: Final = 0.5
#: redis-py's clients retry a failed command once at once: a pooled connection may have
#: died with a Redis restart, and a Redis that is down is then reported within two
#: refused connects instead of after redis-py's default backoff of seconds. A cluster
#: client keeps a few quick retries, for a node that is failing over.
SYNC_RETRIES: Final = 1
CLUSTER_RETRIES: Final = 3
CLUSTER_BACKOFF_S: Final = (0.05, 0.5)  # base, cap
#: The name stashd's connections carry (CLIENT LIST on the Redis side).
CLIENT_NAME: Final = "stashd"


class ReplyError(Exception):
    """An error reply from Redis, kept as a value in its place among a round's replies."""

    @property
    def code(self) -> str:
        """The first word of the error (``NOSCRIPT``, ``OOM``, ``ERR``)."""
        return str(self).partition(" ")[0]


class LinkError(ConnectionError):
    """Redis cannot be reached, refused the connection, or did not answer in time."""


#: One command: its name and arguments. Every command Stash sends names its keys, so a
#: cluster client routes each by them.
Command = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script, run with EVALSHA by its SHA-1; loaded again when Redis lost it."""

    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        """The SHA-1 Redis will give the script, known without asking Redis."""
        digest = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()
        object.__setattr__(self, "sha", digest)

    def call(self, keys: Sequence[bytes], args: Iterable[Any]) -> tuple[Any, ...]:
        """The EVALSHA command running this script on ``keys`` with ``args``."""
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


def is_noscript(reply: object) -> bool:
    """True for Redis's answer to EVALSHA of a script it does not have."""
    return isinstance(reply, ReplyError) and reply.code == "NOSCRIPT"


async def round_with_scripts(link: AsyncLink, commands: Sequence[Command]) -> list[Any]:
    """One round; if Redis lost the scripts (a restart, SCRIPT FLUSH), load them and redo it."""
    replies = await link.round(commands)
    if any(is_noscript(r) for r in replies):
        await link.load_scripts()
        replies = await link.round(commands)
    return replies


def round_with_scripts_sync(link: SyncLink, commands: Sequence[Command]) -> list[Any]:
    """:func:`round_with_scripts` on the synchronous link."""
    replies = link.round(commands)
    if any(is_noscript(r) for r in replies):
        link.load_scripts()
        replies = link.round(commands)
    return replies


def describe(exc: BaseException) -> str:
    """An exception as a short cause for an error reply: the class, then the message."""
    text = str(exc)
    if isinstance(exc, (LinkError, TLSFileError)):
        return text
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


class AsyncLink(Protocol):
    """Rounds of commands on the event loop; raises :class:`LinkError` when Redis fails."""

    target: RedisTarget

    async def round(self, commands: Sequence[Command]) -> list[Any]:
        """Send the commands at once; their replies, in order, errors as ReplyError."""
        ...

    async def load_scripts(self) -> None:
        """Load the link's scripts into Redis again (after NOSCRIPT)."""
        ...

    async def close(self) -> None:
        """Close the connections."""
        ...


def async_link(target: RedisTarget, scripts: Sequence[Script] = ()) -> AsyncLink:
    """The event loop's link to ``target``: lean for one Redis, redis-py for a cluster."""
    if target.cluster:
        return ClusterLink(target, scripts)
    return LeanLink(target, scripts)


# -- the lean link ------------------------------------------------------------------------


class _Wire(asyncio.Protocol):
    """One connection: rounds written at once, replies handed to rounds in order."""

    def __init__(self, on_lost: Any) -> None:  # noqa: ANN401 - a callable taking the wire
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader(replyError=ReplyError)
        self.waiting: deque[tuple[int, asyncio.Future[list[Any]]]] = deque()
        self.got: list[Any] = []
        self.on_lost = on_lost
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:  # pragma: no cover - a broken server
                self.fail(LinkError(f"Redis sent bytes that are not RESP: {exc}"))
                return
            if reply is False:
                return
            if not waiting:  # pragma: no cover - a reply nobody asked for
                self.fail(LinkError("Redis sent a reply that no command asked for"))
                return
            got = self.got
            got.append(reply)
            n, future = waiting[0]
            if len(got) == n:
                waiting.popleft()
                self.got = []
                if not future.done():
                    future.set_result(got)

    def send(self, payload: bytes, count: int) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        if self.lost is not None or self.transport is None:
            future.set_exception(self.lost or LinkError("the connection to Redis is closed"))
            return future
        self.waiting.append((count, future))
        self.transport.write(payload)
        return future

    def fail(self, exc: BaseException) -> None:
        """Fail every round still waiting and close the connection."""
        if self.lost is None:
            self.lost = exc
        waiting, self.waiting = self.waiting, deque()
        for _, future in waiting:
            if not future.done():
                future.set_exception(self.lost)
        if self.transport is not None:
            self.transport.close()
        self.on_lost(self)

    def connection_lost(self, exc: Exception | None) -> None:
        cause = "Redis closed the connection" if exc is None else f"connection lost: {exc}"
        self.fail(LinkError(cause))


def _pack(commands: Sequence[Command]) -> bytes:
    pack = hiredis.pack_command
    return b"".join([pack(c) for c in commands])


class LeanLink:
    """One connection to one Redis, owned by the event loop; see the module docstring.

    Rounds share the connection and are answered in the order they were written. The
    connection is made on first use (AUTH, SELECT, CLIENT SETNAME and SCRIPT LOAD of the
    link's scripts, in one round) and again after it is lost, so a Redis that restarts
    is used again without restarting stashd, its scripts loaded before anything runs.
    """

    def __init__(self, target: RedisTarget, scripts: Sequence[Script] = ()) -> None:
        self.target = target
        self.scripts = tuple(scripts)
        self._wire: _Wire | None = None
        self._connecting: asyncio.Future[_Wire] | None = None
        self._failure: LinkError | None = None
        self._failed_at = 0.0
        # Whether Redis answered this link once: a link that never reached it is a
        # start-up failure, which its caller reports in its own words, not an outage.
        self._reached = False
        self._closed = False

    async def round(self, commands: Sequence[Command]) -> list[Any]:
        """Write every command at once and wait for their replies, at most the timeout."""
        wire = self._wire
        if wire is None:
            wire = await self._connect()
        future = wire.send(_pack(commands), len(commands))
        timer = asyncio.get_running_loop().call_later(self.target.timeout, self._expire, wire)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, wire: _Wire) -> None:
        wire.fail(
            LinkError(
                f"Redis at {self.target.display()} did not answer within {self.target.timeout:g} s"
            )
        )

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script of this link (Redis lost them: flushed or failed over)."""
        if self.scripts:
            await self.round([("SCRIPT", "LOAD", s.text) for s in self.scripts])

    async def _connect(self) -> _Wire:
        if self._closed:
            raise LinkError("the store is closed")
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        failure = self._failure
        if failure is not None and time.monotonic() - self._failed_at < RETRY_INTERVAL:
            raise failure
        loop = asyncio.get_running_loop()
        connecting: asyncio.Future[_Wire] = loop.create_future()
        connecting.add_done_callback(_retrieved)
        self._connecting = connecting
        try:
            wire = await asyncio.wait_for(self._open(), self.target.connect_timeout)
        except (OSError, TimeoutError, LinkError, ssl.SSLError) as exc:
            if isinstance(exc, TimeoutError):
                cause = f"no answer within {self.target.connect_timeout:g} s"
            else:
                cause = str(exc) if isinstance(exc, LinkError) else describe(exc)
            error = LinkError(f"cannot connect to Redis at {self.target.display()}: {cause}")
            if self._failure is None and self._reached:
                logger.warning("redis_unreachable", redis=self.target.display(), error=cause)
            self._failure, self._failed_at = error, time.monotonic()
            connecting.set_exception(error)
            raise error from None
        finally:
            self._connecting = None
        if self._failure is not None and self._reached:
            logger.info("redis_reachable_again", redis=self.target.display())
        self._failure, self._reached = None, True
        self._wire = wire
        connecting.set_result(wire)
        return wire

    async def _open(self) -> _Wire:
        target = self.target
        loop = asyncio.get_running_loop()
        wire: _Wire
        if target.path:
            _, wire = await loop.create_unix_connection(lambda: _Wire(self._lost), target.path)
        else:
            context = target.ssl_context()
            _, wire = await loop.create_connection(
                lambda: _Wire(self._lost),
                target.host,
                target.port,
                ssl=context,
                server_hostname=target.host if context is not None else None,
            )
        setup: list[tuple[Any, ...]] = []
        if target.password is not None:
            if target.username:
                setup.append(("AUTH", target.username, target.password))
            else:
                setup.append(("AUTH", target.password))
        if target.db:
            setup.append(("SELECT", target.db))
        setup += [("SCRIPT", "LOAD", s.text) for s in self.scripts]
        setup.append(("CLIENT", "SETNAME", CLIENT_NAME))
        try:
            replies = await wire.send(_pack(setup), len(setup))
        except BaseException:
            wire.fail(LinkError("connection setup failed"))
            raise
        # CLIENT SETNAME only labels the connection; a server that refuses it is fine.
        for reply in replies[:-1]:
            if isinstance(reply, ReplyError):
                wire.fail(LinkError(str(reply)))
                raise LinkError(f"Redis refused the connection setup: {reply}")
        return wire

    def _lost(self, wire: _Wire) -> None:
        if self._wire is wire:
            self._wire = None
            if not self._closed:
                logger.warning(
                    "redis_connection_lost", redis=self.target.display(), error=str(wire.lost)
                )

    async def close(self) -> None:
        """Close the connection; rounds in flight fail."""
        self._closed = True
        wire, self._wire = self._wire, None
        if wire is not None:
            wire.fail(LinkError("the store is closed"))


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a shared future's exception as seen, so nobody waiting is not a warning."""
    if not future.cancelled():
        future.exception()


# -- redis-py links ------------------------------------------------------------------------


def _redis_py_options(target: RedisTarget, *, asyncio: bool = False) -> dict[str, Any]:
    """The target's settings as keyword arguments of redis-py's clients (or its asyncio ones)."""
    from redis.backoff import ExponentialBackoff, NoBackoff  # noqa: PLC0415 - redis-py

    if asyncio:
        from redis.asyncio.retry import Retry  # noqa: PLC0415
    else:
        from redis.retry import Retry  # type: ignore[assignment]  # noqa: PLC0415

    if target.cluster:
        base, cap = CLUSTER_BACKOFF_S
        retry = Retry(ExponentialBackoff(cap=cap, base=base), CLUSTER_RETRIES)
    else:
        retry = Retry(NoBackoff(), SYNC_RETRIES)
    options: dict[str, Any] = {
        "retry": retry,
        "username": target.username,
        "password": target.password,
        "socket_timeout": target.timeout,
        "socket_connect_timeout": target.connect_timeout,
        "client_name": CLIENT_NAME,
    }
    if target.tls:
        options.update(
            ssl=True,
            ssl_cert_reqs=target.cert_reqs,
            ssl_ca_certs=target.ca_certs,
            ssl_certfile=target.certfile,
            ssl_keyfile=target.keyfile,
            ssl_check_hostname=target.check_hostname and target.cert_reqs != "none",
        )
    return options


def _reply(value: Any) -> Any:  # noqa: ANN401 - any reply
    """A redis-py pipeline result as the lean link gives it: errors become ReplyError."""
    import redis.exceptions  # noqa: PLC0415 - redis-py is imported only by these links

    if isinstance(value, redis.exceptions.NoScriptError):
        return ReplyError(f"NOSCRIPT {value}")
    if isinstance(value, redis.exceptions.ResponseError):
        return ReplyError(str(value))
    if isinstance(value, redis.exceptions.RedisError):
        raise LinkError(describe(value))
    return value


def _link_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions  # noqa: PLC0415

    return (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.ClusterError,
        redis.exceptions.RedisClusterException,
        OSError,
    )


class ClusterLink:
    """A Redis Cluster through redis-py's asyncio ``RedisCluster``.

    The commands of a round go in one cluster pipeline, which redis-py splits by node
    and answers in order, following MOVED and ASK.
    """

    def __init__(self, target: RedisTarget, scripts: Sequence[Script] = ()) -> None:
        from redis.asyncio.cluster import RedisCluster  # noqa: PLC0415

        self.target = target
        self.scripts = tuple(scripts)
        self.client: redis_cluster.RedisCluster = RedisCluster(
            host=target.host,
            port=target.port,
            protocol=2,
            **_redis_py_options(target, asyncio=True),
        )
        self._loaded = False

    async def round(self, commands: Sequence[Command]) -> list[Any]:
        """The commands as one pipeline, each on the node of its keys."""
        client = self.client
        try:
            if not self._loaded:
                await self.load_scripts()
            results: list[Any] = []
            if commands:
                pipe = client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                replies = await pipe.execute(raise_on_error=False)
                results = [_reply(value) for value in replies]
        except _link_errors() as exc:
            raise LinkError(f"Redis Cluster at {self.target.display()}: {describe(exc)}") from None
        return results

    async def load_scripts(self) -> None:
        """SCRIPT LOAD on every primary (redis-py sends it to all of them)."""
        try:
            for script in self.scripts:
                await self.client.script_load(script.text)
        except _link_errors() as exc:
            raise LinkError(f"Redis Cluster at {self.target.display()}: {describe(exc)}") from None
        self._loaded = True

    async def close(self) -> None:
        """Close every node's connections."""
        await self.client.aclose()


class SyncLink:
    """redis-py's synchronous client (cluster or not): thread-safe, with its own pool."""

    def __init__(self, target: RedisTarget, scripts: Sequence[Script] = ()) -> None:
        import redis  # noqa: PLC0415

        self.target = target
        self.scripts = tuple(scripts)
        options = _redis_py_options(target)
        self.client: redis_sync.Redis | redis_sync.RedisCluster
        if target.cluster:
            self.client = redis.RedisCluster(
                host=target.host, port=target.port, protocol=2, **options
            )
        elif target.path:
            self.client = redis.Redis(
                unix_socket_path=target.path, db=target.db, protocol=2, **options
            )
        else:
            self.client = redis.Redis(
                host=target.host, port=target.port, db=target.db, protocol=2, **options
            )

    def round(self, commands: Sequence[Command]) -> list[Any]:
        """The commands as one pipeline (in a cluster, each on the node of its keys)."""
        client = self.client
        results: list[Any] = []
        try:
            if commands:
                pipe = client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                results = [_reply(value) for value in pipe.execute(raise_on_error=False)]
        except _link_errors() as exc:
            raise LinkError(f"Redis at {self.target.display()}: {describe(exc)}") from None
        return results

    def scan_keys(self, pattern: bytes, count: int) -> Iterator[bytes]:
        """Every key matching ``pattern``, by SCAN ``count`` at a time (on each primary)."""
        try:
            yield from self.client.scan_iter(match=pattern, count=count)
        except _link_errors() as exc:
            raise LinkError(f"Redis at {self.target.display()}: {describe(exc)}") from None

    def load_scripts(self) -> None:
        """SCRIPT LOAD every script (on every primary of a cluster)."""
        try:
            for script in self.scripts:
                self.client.script_load(script.text)
        except _link_errors() as exc:
            raise LinkError(f"Redis at {self.target.display()}: {describe(exc)}") from None

    def close(self) -> None:
        """Close the pool's connections."""
        self.client.close()
