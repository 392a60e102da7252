"""The remote door of the client: the same calls as RESP commands to a stashd, over redis-py.

redis-py does the connecting (RESP3 with ``HELLO 3 AUTH`` when a key is given), the
pooling and the framing; this module only names the command for each call, reads the
reply into the values the embedded door returns, and turns redis-py's exceptions back
into Stash's own with :func:`stashd.errors.from_wire`, so the same cause raises the same
exception, with the same attributes, in both modes. A connection that cannot be made or
that stops answering is a :class:`~stashd.errors.StoreUnavailable`.

The pools block when full instead of failing (a thread or task waits its turn for a
connection), so one client can be shared by any number of threads (sync) or tasks
(asyncio, on one loop).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio

from stashd.embedded import CLOSED
from stashd.errors import WIRE_CODES, LeaseHeld, StashError, StoreUnavailable, from_wire

if TYPE_CHECKING:
    from stashd.embedded import Info, Listed, Meta

#: Connections one client keeps open at most; a thread or task beyond that waits.
MAX_CONNECTIONS: Final = 64
#: Seconds to wait for a free connection from a full pool before giving up.
POOL_TIMEOUT: Final = 20.0
#: Seconds to wait for TCP (and TLS) setup: a daemon that is down should fail fast.
CONNECT_TIMEOUT: Final = 5.0
#: Seconds to wait for a reply. Far above any command's time (a SQLite write that waits
#: for another process's lock gives up after 5 s), so it only fires on a hung daemon.
REPLY_TIMEOUT: Final = 30.0

_NOAUTH_TEXTS: Final = ("Authentication required.", "HELLO must be called")


def redact(url: str) -> str:
    """The URL without its password, fit for messages and repr()."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + host))


def wire_text(exc: redis.RedisError) -> str:
    """The error line the server sent, put back together from what redis-py kept of it.

    redis-py strips the code of the errors it knows (ERR, NOAUTH, WRONGPASS, ...) and
    keeps the whole line of the others (TOOLARGE, CONFLICT, ...). Recent versions keep
    the stripped code in ``status_code``; without it, the code is told by the message.
    """
    message = str(exc)
    code = getattr(exc, "status_code", None)
    if code:
        # From 8.2 redis-py names the code of a line it does not know too, and keeps
        # that line whole: the code is then in the message already.
        return message if message.startswith(f"{code} ") else f"{code} {message}"
    if message.partition(" ")[0] in WIRE_CODES:
        return message
    if isinstance(exc, redis.AuthenticationError):
        return f"{'NOAUTH' if message.startswith(_NOAUTH_TEXTS) else 'WRONGPASS'} {message}"
    return f"ERR {message}"


def translate(exc: redis.RedisError, where: str) -> StashError:
    """The Stash exception for what redis-py raised talking to ``where``."""
    if isinstance(exc, redis.ResponseError | redis.AuthenticationError) or (
        isinstance(exc, redis.ConnectionError) and getattr(exc, "status_code", None)
    ):
        # A reply from the server (AUTH refused, max clients reached included).
        return from_wire(wire_text(exc))
    if isinstance(exc, redis.TimeoutError):
        return StoreUnavailable(f"no reply from {where} within {REPLY_TIMEOUT:g} s")
    if isinstance(exc, redis.ConnectionError):
        if str(exc) == "max number of clients reached":
            return from_wire(f"ERR {exc}")
        return StoreUnavailable(f"cannot reach {where}: {exc}")
    return StoreUnavailable(f"unexpected reply from {where}: {exc}")


def _pool_options(api_key: str | None) -> dict[str, Any]:
    return {
        "password": api_key,
        "protocol": 3,
        "max_connections": MAX_CONNECTIONS,
        "timeout": POOL_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": REPLY_TIMEOUT,
    }


# -- replies, read the same way by both transports -------------------------------------


def _map(reply: Any) -> dict[bytes, Any]:  # noqa: ANN401 - a RESP map, or RESP2's flat array
    if isinstance(reply, list):
        return dict(zip(reply[::2], reply[1::2], strict=True))
    fields: dict[bytes, Any] = reply
    return fields


def _info(fields: dict[bytes, Any]) -> Info:
    expires = datetime.fromisoformat(fields[b"expires_at"].decode())
    return int(fields[b"ttl_remaining"]), int(expires.timestamp()), int(fields[b"version"])


def _meta(reply: Any) -> Meta | None:  # noqa: ANN401 - a RESP map, or RESP2's flat array
    if reply is None:
        return None
    fields = _map(reply)
    return (fields[b"data"], *_info(fields))


def _stashed(reply: Any) -> tuple[str, Info]:  # noqa: ANN401 - a RESP map, or a flat array
    fields = _map(reply)
    return fields[b"memory_id"].decode(), _info(fields)


def _updated(reply: Any) -> Info | None:  # noqa: ANN401 - a RESP map, a flat array, or nil
    return None if reply is None else _info(_map(reply))


def _page(reply: Any) -> tuple[int, list[Listed]]:  # noqa: ANN401 - see above
    nxt, items = reply
    page = []
    for item in items:
        fields = _map(item)
        page.append((fields[b"memory_id"], _info(fields), int(fields[b"size"])))
    return int(nxt), page


def _held(pttl: int) -> LeaseHeld:
    """A refused claim, with the time the lease has left as embedded clients say it.

    CLAIM's nil says only "held"; the PTTL read after it tells for how long (none when
    the lease ended in between).
    """
    return LeaseHeld(pttl if pttl >= 0 else None)


def _ttl(reply: int) -> int | None:
    return None if reply == -2 else reply


def _update_args(
    key: bytes, data: bytes | None, merge: bytes | None, extend: int | None, if_version: int | None
) -> list[bytes | int]:
    args: list[bytes | int] = [b"UPDATE", key]
    if data is not None:
        args += [b"DATA", data]
    if merge is not None:
        args += [b"MERGE", merge]
    if extend is not None:
        args += [b"EXTEND", extend]
    if if_version is not None:
        args += [b"IFVERSION", if_version]
    return args


def _with_ttl(args: list[bytes | int], ttl: int | None) -> list[bytes | int]:
    return args if ttl is None else [*args, b"EX", ttl]


def _set_args(key: bytes, value: bytes, ttl: int | None, nx: bool) -> list[bytes | int]:
    args = _with_ttl([b"SET", key, value], ttl)
    return [*args, b"NX"] if nx else args


def _memories_args(cursor: int, pattern: bytes, count: int) -> list[bytes | int]:
    return [b"MEMORIES", cursor, b"MATCH", pattern, b"COUNT", count]


class RemoteTransport:
    """Synchronous calls to a stashd through a blocking redis-py pool; thread-safe."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.where = redact(url)
        pool = redis.BlockingConnectionPool.from_url(url, **_pool_options(api_key))
        self.redis = redis.Redis(connection_pool=pool)
        self._closed = False

    def describe(self) -> str:
        """What this client talks to, for repr()."""
        return f"remote {self.where}"

    def _call(self, *args: bytes | int) -> Any:  # noqa: ANN401 - each command has its reply
        if self._closed:
            raise StoreUnavailable(CLOSED)
        try:
            return self.redis.execute_command(*args)  # type: ignore[no-untyped-call]  # redis-py
        except redis.RedisError as exc:
            raise translate(exc, self.where) from None

    def set(self, key: bytes, value: bytes, ttl: int | None, *, nx: bool = False) -> bool:
        """SET key value [EX ttl] [NX]: whether it was written."""
        return self._call(*_set_args(key, value, ttl, nx)) is not None

    def get(self, key: bytes) -> bytes | None:
        """GET key."""
        value: bytes | None = self._call(b"GET", key)
        return value

    def stash(self, value: bytes, ttl: int | None) -> str:
        """STASH value [EX ttl]."""
        key: bytes = self._call(*_with_ttl([b"STASH", value], ttl))
        return key.decode()

    def stash_info(self, value: bytes, ttl: int | None) -> tuple[str, Info]:
        """STASH value [EX ttl] WITHMETA: the new id and its metadata."""
        return _stashed(self._call(*_with_ttl([b"STASH", value], ttl), b"WITHMETA"))

    def recall(self, key: bytes) -> Meta | None:
        """RECALL key WITHMETA."""
        return _meta(self._call(b"RECALL", key, b"WITHMETA"))

    def update(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> int | None:
        """UPDATE key [DATA d | MERGE m] [EXTEND s] [IFVERSION v]."""
        left: int | None = self._call(*_update_args(key, data, merge, extend, if_version))
        return left

    def update_info(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> Info | None:
        """UPDATE key [...] WITHMETA: the entry's metadata as written, None when missing."""
        args = _update_args(key, data, merge, extend, if_version)
        return _updated(self._call(*args, b"WITHMETA"))

    def forget(self, keys: list[bytes]) -> int:
        """FORGET key [key ...]."""
        removed: int = self._call(b"FORGET", *keys)
        return removed

    def ttl(self, key: bytes) -> int | None:
        """TTL key."""
        return _ttl(self._call(b"TTL", key))

    def exists(self, key: bytes) -> bool:
        """EXISTS key."""
        return bool(self._call(b"EXISTS", key))

    def scan(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[bytes]]:
        """SCAN cursor MATCH pattern COUNT count."""
        nxt, keys = self._call(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", count)
        return int(nxt), list(keys)

    def memories(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[Listed]]:
        """MEMORIES cursor MATCH pattern COUNT count: (next cursor, [(id, info, size)])."""
        return _page(self._call(*_memories_args(cursor, pattern, count)))

    def lease_claim(self, key: bytes, owner: bytes, ttl: int) -> int:
        """LEASE CLAIM key owner ttl: the token, or LeaseHeld."""
        token: int | None = self._call(b"LEASE", b"CLAIM", key, owner, ttl)
        if token is None:
            raise _held(self._call(b"PTTL", key))
        return token

    def lease_renew(self, key: bytes, owner: bytes, token: int, ttl: int) -> bool:
        """LEASE RENEW key owner token ttl: whether it was held."""
        return bool(self._call(b"LEASE", b"RENEW", key, owner, token, ttl))

    def lease_release(self, key: bytes, owner: bytes, token: int) -> bool:
        """LEASE RELEASE key owner token: whether it was held."""
        return bool(self._call(b"LEASE", b"RELEASE", key, owner, token))

    def close(self) -> None:
        """Close the pool's connections."""
        if not self._closed:
            self._closed = True
            # The pool was made here and handed to the client, which therefore does not
            # close it by itself: disconnect its connections explicitly.
            self.redis.close()
            self.redis.connection_pool.disconnect()


class AsyncRemoteTransport:
    """Asynchronous calls to a stashd through a redis.asyncio pool; safe to share between tasks."""

    def __init__(self, url: str, api_key: str | None) -> None:
        self.where = redact(url)
        pool = redis.asyncio.BlockingConnectionPool.from_url(url, **_pool_options(api_key))
        self.redis = redis.asyncio.Redis(connection_pool=pool)
        self._closed = False

    def describe(self) -> str:
        """What this client talks to, for repr()."""
        return f"remote {self.where}"

    async def _call(self, *args: bytes | int) -> Any:  # noqa: ANN401 - each command has its reply
        if self._closed:
            raise StoreUnavailable(CLOSED)
        try:
            return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            raise translate(exc, self.where) from None

    async def set(self, key: bytes, value: bytes, ttl: int | None, *, nx: bool = False) -> bool:
        """SET key value [EX ttl] [NX]: whether it was written."""
        return await self._call(*_set_args(key, value, ttl, nx)) is not None

    async def get(self, key: bytes) -> bytes | None:
        """GET key."""
        value: bytes | None = await self._call(b"GET", key)
        return value

    async def stash(self, value: bytes, ttl: int | None) -> str:
        """STASH value [EX ttl]."""
        key: bytes = await self._call(*_with_ttl([b"STASH", value], ttl))
        return key.decode()

    async def stash_info(self, value: bytes, ttl: int | None) -> tuple[str, Info]:
        """STASH value [EX ttl] WITHMETA: the new id and its metadata."""
        return _stashed(await self._call(*_with_ttl([b"STASH", value], ttl), b"WITHMETA"))

    async def recall(self, key: bytes) -> Meta | None:
        """RECALL key WITHMETA."""
        return _meta(await self._call(b"RECALL", key, b"WITHMETA"))

    async def update(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> int | None:
        """UPDATE key [DATA d | MERGE m] [EXTEND s] [IFVERSION v]."""
        left: int | None = await self._call(*_update_args(key, data, merge, extend, if_version))
        return left

    async def update_info(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> Info | None:
        """UPDATE key [...] WITHMETA: the entry's metadata as written, None when missing."""
        args = _update_args(key, data, merge, extend, if_version)
        return _updated(await self._call(*args, b"WITHMETA"))

    async def forget(self, keys: list[bytes]) -> int:
        """FORGET key [key ...]."""
        removed: int = await self._call(b"FORGET", *keys)
        return removed

    async def ttl(self, key: bytes) -> int | None:
        """TTL key."""
        return _ttl(await self._call(b"TTL", key))

    async def exists(self, key: bytes) -> bool:
        """EXISTS key."""
        return bool(await self._call(b"EXISTS", key))

    async def scan(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[bytes]]:
        """SCAN cursor MATCH pattern COUNT count."""
        nxt, keys = await self._call(b"SCAN", cursor, b"MATCH", pattern, b"COUNT", count)
        return int(nxt), list(keys)

    async def memories(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[Listed]]:
        """MEMORIES cursor MATCH pattern COUNT count: (next cursor, [(id, info, size)])."""
        return _page(await self._call(*_memories_args(cursor, pattern, count)))

    async def lease_claim(self, key: bytes, owner: bytes, ttl: int) -> int:
        """LEASE CLAIM key owner ttl: the token, or LeaseHeld."""
        token: int | None = await self._call(b"LEASE", b"CLAIM", key, owner, ttl)
        if token is None:
            raise _held(await self._call(b"PTTL", key))
        return token

    async def lease_renew(self, key: bytes, owner: bytes, token: int, ttl: int) -> bool:
        """LEASE RENEW key owner token ttl: whether it was held."""
        return bool(await self._call(b"LEASE", b"RENEW", key, owner, token, ttl))

    async def lease_release(self, key: bytes, owner: bytes, token: int) -> bool:
        """LEASE RELEASE key owner token: whether it was held."""
        return bool(await self._call(b"LEASE", b"RELEASE", key, owner, token))

    async def aclose(self) -> None:
        """Close the pool's connections."""
        if not self._closed:
            self._closed = True
            # The pool was handed to the client, which then leaves it open unless told.
            await self.redis.aclose(close_connection_pool=True)
