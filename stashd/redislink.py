"""Connections to Redis or Valkey: the settings a URL gives, and three ways to send commands.

Everything Stash keeps in Redis (entries, the key registry, rate limits) goes through a
*link*, which sends one *round*: a list of commands written at once and answered in
order, each error reply standing in its place as a :class:`ReplyError` value.

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

A URL is read once into a :class:`RedisTarget`, and every link made from it uses the
same host, credentials, database, TLS settings and timeouts. ``rediss://`` is TLS with
the server's certificate checked against the system's CAs (or ``ssl_ca_certs``) and its
host name checked, unless ``ssl_cert_reqs=none`` turns that off explicitly.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from stashd import log

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    import redis as redis_sync
    import redis.asyncio.cluster as redis_cluster

logger = log.get("stashd.redis")

#: Schemes a URL may use. ``+cluster`` marks a Redis Cluster (like ``--redis-cluster``).
SCHEMES: Final = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
#: Seconds to set up a connection (TCP, TLS, AUTH): short, so that a Redis that is down
#: or unreachable turns into a clear error for clients instead of a long wait.
CONNECT_TIMEOUT: Final = 2.0
#: Seconds a round may wait for its replies before the connection is dropped and the
#: round fails. Long enough for the largest payload (500 MiB on the enterprise tier
#: takes seconds over a network); ``socket_timeout`` in the URL changes it.
REPLY_TIMEOUT: Final = 10.0
#: After a failed attempt to connect, rounds fail at once for this long, with the same
#: error, instead of each trying again: a dead Redis costs clients nothing extra, and a
#: Redis that is back is used again within this time.
RETRY_INTERVAL: Final = 0.5
#: Redis's default port.
DEFAULT_PORT: Final = 6379
#: redis-py's clients retry a failed command once at once: a pooled connection may have
#: died with a Redis restart, and a Redis that is down is then reported within two
#: refused connects instead of after redis-py's default backoff of seconds. A cluster
#: client keeps a few quick retries, for a node that is failing over.
SYNC_RETRIES: Final = 1
CLUSTER_RETRIES: Final = 3
CLUSTER_BACKOFF_S: Final = (0.05, 0.5)  # base, cap
#: The name stashd's connections carry (CLIENT LIST on the Redis side).
CLIENT_NAME: Final = "stashd"

_CERT_REQS: Final = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


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


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where Redis is and how to talk to it, from a URL (see :meth:`parse`)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    path: str = ""  # a Unix socket instead of host and port
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_certs: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    cert_reqs: str = "required"
    check_hostname: bool = True
    connect_timeout: float = CONNECT_TIMEOUT
    timeout: float = REPLY_TIMEOUT
    cluster: bool = False

    @classmethod
    def parse(cls, url: str, *, cluster: bool = False) -> RedisTarget:
        """Read ``redis://[user[:password]@]host[:port][/db][?option=value...]``.

        Also ``rediss://`` (TLS), ``unix:///path?db=N``, and ``redis+cluster://`` /
        ``rediss+cluster://`` for a Redis Cluster. Options, as redis-py names them:
        ``db``, ``socket_timeout``, ``socket_connect_timeout``, ``ssl_cert_reqs``
        (required, optional, none), ``ssl_ca_certs``, ``ssl_certfile``,
        ``ssl_keyfile``, ``ssl_check_hostname``. A ValueError names what is wrong.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            schemes = ", ".join(f"{s}://" for s in SCHEMES)
            msg = f"a Redis URL starts with {schemes}; got {_redact(url)!r}"
            raise ValueError(msg)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        known = {
            "db",
            "socket_timeout",
            "socket_connect_timeout",
            "ssl_cert_reqs",
            "ssl_ca_certs",
            "ssl_certfile",
            "ssl_keyfile",
            "ssl_check_hostname",
        }
        unknown = sorted(set(query) - known)
        if unknown:
            msg = (
                f"unknown option {unknown[0]!r} in the Redis URL; "
                f"options are {', '.join(sorted(known))}"
            )
            raise ValueError(msg)
        values: dict[str, Any] = {
            "cluster": cluster or scheme.endswith("+cluster"),
            "tls": scheme.startswith("rediss"),
        }
        if scheme == "unix":
            if not parts.path:
                raise ValueError(
                    "a unix:// Redis URL needs the socket's path: unix:///run/redis.sock"
                )
            values["path"] = unquote(parts.path)
        else:
            try:
                port = parts.port
            except ValueError:
                msg = (
                    "the port in the Redis URL must be a number from 1 to 65535; "
                    f"got {_redact(url)!r}"
                )
                raise ValueError(msg) from None
            values["host"] = parts.hostname or "127.0.0.1"
            values["port"] = port or DEFAULT_PORT
            db_text = parts.path.lstrip("/")
            if db_text:
                values["db"] = _int_option("database number", db_text)
        if parts.username:
            values["username"] = unquote(parts.username)
        if parts.password is not None:
            values["password"] = unquote(parts.password)
        if "db" in query:
            values["db"] = _int_option("db", query["db"])
        if "socket_timeout" in query:
            values["timeout"] = _seconds("socket_timeout", query["socket_timeout"])
        if "socket_connect_timeout" in query:
            values["connect_timeout"] = _seconds(
                "socket_connect_timeout", query["socket_connect_timeout"]
            )
        if "ssl_cert_reqs" in query:
            reqs = query["ssl_cert_reqs"].lower()
            if reqs not in _CERT_REQS:
                given = query["ssl_cert_reqs"]
                msg = f"ssl_cert_reqs must be required, optional or none; got {given!r}"
                raise ValueError(msg)
            values["cert_reqs"] = reqs
            if reqs == "none":
                values["check_hostname"] = False
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if query.get(name):
                values[name.removeprefix("ssl_")] = query[name]
        if "ssl_check_hostname" in query:
            values["check_hostname"] = _flag("ssl_check_hostname", query["ssl_check_hostname"])
        target = cls(**values)
        if target.cluster and (target.path or target.db):
            raise ValueError("a Redis Cluster has only database 0 and is reached over TCP")
        return target

    def display(self) -> str:
        """The target as a URL without credentials, for logs and error messages."""
        if self.path:
            return f"unix://{self.path}?db={self.db}"
        scheme = ("rediss" if self.tls else "redis") + ("+cluster" if self.cluster else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}/{self.db}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of ``rediss://`` (None for plain TCP)."""
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_certs)
        context.check_hostname = self.check_hostname and self.cert_reqs != "none"
        context.verify_mode = _CERT_REQS[self.cert_reqs]
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def redis_py_options(self, *, asyncio: bool = False) -> dict[str, Any]:
        """The same settings as keyword arguments of redis-py's clients (or its asyncio ones)."""
        from redis.backoff import ExponentialBackoff, NoBackoff  # noqa: PLC0415 - redis-py

        if asyncio:
            from redis.asyncio.retry import Retry  # noqa: PLC0415
        else:
            from redis.retry import Retry  # type: ignore[assignment]  # noqa: PLC0415

        if self.cluster:
            base, cap = CLUSTER_BACKOFF_S
            retry = Retry(ExponentialBackoff(cap=cap, base=base), CLUSTER_RETRIES)
        else:
            retry = Retry(NoBackoff(), SYNC_RETRIES)
        options: dict[str, Any] = {
            "retry": retry,
            "username": self.username,
            "password": self.password,
            "socket_timeout": self.timeout,
            "socket_connect_timeout": self.connect_timeout,
            "client_name": CLIENT_NAME,
        }
        if self.tls:
            options.update(
                ssl=True,
                ssl_cert_reqs=self.cert_reqs,
                ssl_ca_certs=self.ca_certs,
                ssl_certfile=self.certfile,
                ssl_keyfile=self.keyfile,
                ssl_check_hostname=self.check_hostname and self.cert_reqs != "none",
            )
        return options

    def sync_link(self) -> SyncLink:
        """A synchronous, thread-safe link (redis-py)."""
        return SyncLink(self)

    def async_link(self, scripts: Sequence[Script] = ()) -> AsyncLink:
        """The event loop's link: lean for one Redis, redis-py for a cluster."""
        if self.cluster:
            return ClusterLink(self, scripts)
        return LeanLink(self, scripts)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


def _int_option(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} in the Redis URL must be an integer; got {text!r}") from None
    if value < 0:
        raise ValueError(f"{name} in the Redis URL must not be negative; got {value}")
    return value


def _seconds(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} in the Redis URL must be seconds; got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{name} in the Redis URL must be positive; got {text!r}")
    return value


def _flag(name: str, text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"{name} in the Redis URL must be true or false; got {text!r}")


def describe(exc: BaseException) -> str:
    """An exception as a short cause for an error reply: the class, then the message."""
    text = str(exc)
    if isinstance(exc, LinkError):
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
            if self._failure is None:
                logger.warning("redis_unreachable", redis=self.target.display(), error=cause)
            self._failure, self._failed_at = error, time.monotonic()
            connecting.set_exception(error)
            raise error from None
        finally:
            self._connecting = None
        if self._failure is not None:
            logger.info("redis_reachable_again", redis=self.target.display())
            self._failure = None
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
            host=target.host, port=target.port, protocol=2, **target.redis_py_options(asyncio=True)
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
        options = target.redis_py_options()
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
