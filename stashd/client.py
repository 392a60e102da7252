"""The Python API: ``Stash`` and ``AsyncStash``, in-process or against a stashd, one behaviour.

Where the data is decided once, when the client is made (:mod:`stashd.clientmode`):

- **Embedded** (the default): a store in this process, SQLite at ``path`` (``STASH_DB``,
  else ``stash.db`` in the user data directory, the daemon's default file) or memory.
  Calls go to the memory service and the store directly (:mod:`stashd.embedded`); the
  limits are the daemon's settings (``STASH_DEFAULT_TTL``, ``STASH_MAX_TTL``,
  ``STASH_MAX_PAYLOAD_BYTES``, ``STASH_RATE_LIMIT``, ``STASH_MAX_KEYS``,
  ``STASH_MAX_BYTES``) unless given as arguments. The
  data is the default namespace, the one a RESP or HTTP client without a key uses, so
  an application and a daemon on the same file see the same entries.
- **Remote**: a running stashd over RESP (:mod:`stashd.remote`, redis-py underneath),
  when ``url`` or ``api_key`` is given, or ``STASH_URL`` / ``STASH_API_KEY`` is set
  (in the environment or a ``.env`` file) and no ``backend``/``path`` is given.

Everything above the door is shared: keys are text, values any JSON value encoded
compactly before anything is sent, TTLs whole seconds. A value that cannot be encoded
and a number of seconds that no server could accept raise ``TypeError``/``ValueError``
before anything is sent; everything the rules refuse raises the same
:class:`~stashd.errors.StashError` subclass, with the same attributes, in both modes.

The module is one piece past 600 lines on purpose: ``Stash`` and ``AsyncStash`` are one
API, blocking and awaited, method for method over the argument checks they share, and
they sit side by side so that a change to one is made to the other; over a third of the
lines are the docstrings and examples users read.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, Self, overload

from stashd.clientmode import Embedded, Remote, choose
from stashd.embedded import AsyncEmbeddedTransport, EmbeddedTransport
from stashd.errors import BadExtend, DataAndMerge, EmptyUpdate, StashError
from stashd.jsontext import dump_json, load_stored
from stashd.leasing import AsyncLease, Lease
from stashd.ops import INT64_MAX
from stashd.service import PAGE_DEFAULT

if TYPE_CHECKING:
    import os
    from collections.abc import AsyncIterator, Iterator
    from types import TracebackType

    from stashd.batch import Batcher
    from stashd.embedded import Info, Listed, Meta
    from stashd.service import MemoryService
    from stashd.types import Principal

#: The longest TTL any call can send: seconds whose milliseconds still fit in 64 bits,
#: which is what the server counts in. Larger numbers are refused before sending.
MAX_SECONDS: Final = INT64_MAX // 1000
#: Keys asked for per SCAN page by :meth:`Stash.keys`: bounds every reply.
SCAN_COUNT: Final = 100


class _Unset:
    """Marks an argument that was not given: ``None`` is a JSON value (null) like any other."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Final = _Unset()


@dataclass(frozen=True, slots=True)
class Memory:
    """A stored value with its metadata, as :meth:`Stash.recall` returns it with ``with_meta``.

    ``ttl_remaining`` is whole seconds, rounded to the nearest; ``expires_at`` is an
    aware UTC datetime, to the second; ``version`` is 1 when created and one more on
    every change of the data (an extension alone keeps it).
    """

    id: str
    data: Any
    ttl_remaining: int
    expires_at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class MemoryInfo:
    """A memory's metadata without its value: what ``stash``/``update`` return with ``with_meta``.

    The fields mean what :class:`Memory`'s do; ``size`` (bytes stored) is known in a
    listing (:meth:`Stash.memories`) and when stashing, None after an update.
    """

    id: str
    ttl_remaining: int
    expires_at: datetime
    version: int
    size: int | None = None


@dataclass(frozen=True, slots=True)
class MemoryPage:
    """One page of :meth:`Stash.memories`: the memories, and the cursor of the next page.

    ``next_cursor`` is None when the listing is done; otherwise pass it back as ``cursor``.
    """

    memories: list[MemoryInfo]
    next_cursor: str | None


# -- the arguments and values every mode shares ------------------------------------------


def _key(key: str, what: str = "key") -> bytes:
    """A key as the bytes stored; lone surrogates stand for bytes that are not UTF-8."""
    if not isinstance(key, str):
        msg = f"{what} must be a str, got {type(key).__name__}"
        raise TypeError(msg)
    return key.encode("utf-8", "surrogateescape")


def _text(raw: bytes) -> str:
    """A stored key as text; bytes that are not UTF-8 (written over RESP) survive a round trip."""
    return raw.decode("utf-8", "surrogateescape")


def _seconds(value: int | None, what: str) -> int | None:
    """A number of seconds to send, or None; refused here when no server could take it."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        msg = f"{what} must be an int (seconds), got {type(value).__name__}"
        raise TypeError(msg)
    # Only what no server could take is refused here: the caller's own maximum TTL is
    # the server's to apply, with its number (a bound quoted here would be the wire's,
    # 2**63 ms, which is no one's limit).
    if value < 1:
        msg = f"{what} must be a positive number of seconds, got {value}"
        raise ValueError(msg)
    if value > MAX_SECONDS:
        msg = f"{what} must be at most {MAX_SECONDS} seconds (64-bit milliseconds), got {value}"
        raise ValueError(msg)
    return value


def _lease_ttl(ttl: int) -> int:
    """A lease's TTL: whole seconds, like every TTL of the API (its range is the server's)."""
    seconds = _seconds(ttl, "ttl")
    assert seconds is not None
    return seconds


def _version(value: int | None) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        msg = f"if_version must be an int, got {type(value).__name__}"
        raise TypeError(msg)
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        msg = f"if_version must fit in 64 bits, got {value}"
        raise ValueError(msg)
    return value


def _encode(value: object) -> bytes:
    """Compact JSON, as the service stores it; TypeError/ValueError for what JSON cannot hold."""
    return dump_json(value)


def _decode(raw: bytes) -> Any:  # noqa: ANN401 - any JSON value
    """A stored value as Python; one written raw (over RESP) that is not JSON raises."""
    return load_stored(raw)


def _memory(memory_id: str, meta: Meta | None) -> Memory | None:
    if meta is None:
        return None
    raw, left, expires_at, version = meta
    return Memory(memory_id, _decode(raw), left, datetime.fromtimestamp(expires_at, UTC), version)


def _info(memory_id: str, info: Info | None, size: int | None = None) -> MemoryInfo | None:
    if info is None:
        return None
    left, expires_at, version = info
    return MemoryInfo(memory_id, left, datetime.fromtimestamp(expires_at, UTC), version, size)


def _page(page: tuple[int, list[Listed]]) -> MemoryPage:
    nxt, items = page
    memories = [
        MemoryInfo(_text(k), left, datetime.fromtimestamp(at, UTC), version, size)
        for k, (left, at, version), size in items
    ]
    return MemoryPage(memories, str(nxt) if nxt else None)


def _cursor(cursor: str | None) -> int:
    """A listing cursor to send: None (the start) or a ``next_cursor`` given back."""
    if cursor is None:
        return 0
    if not isinstance(cursor, str):
        msg = f"cursor must be a str (a next_cursor), got {type(cursor).__name__}"
        raise TypeError(msg)
    if not cursor.isdigit() or not 0 < int(cursor) <= INT64_MAX:
        msg = "cursor must be a next_cursor a listing returned"
        raise ValueError(msg)
    return int(cursor)


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool):
        msg = f"limit must be an int, got {type(limit).__name__}"
        raise TypeError(msg)
    return limit


def _update_args(
    data: object, merge: object, extra_seconds: int | None, if_version: int | None
) -> tuple[bytes | None, bytes | None, int | None, int | None]:
    return (
        None if data is _UNSET else _encode(data),
        None if merge is _UNSET else _encode(merge),
        _seconds(extra_seconds, "extra_seconds"),
        _version(if_version),
    )


# -- the transports, as the clients see them ----------------------------------------------


class _Transport(Protocol):
    def describe(self) -> str: ...
    def set(self, key: bytes, value: bytes, ttl: int | None, *, nx: bool = False) -> bool: ...
    def get(self, key: bytes) -> bytes | None: ...
    def stash(self, value: bytes, ttl: int | None) -> str: ...
    def recall(self, key: bytes) -> Meta | None: ...
    def stash_info(self, value: bytes, ttl: int | None) -> tuple[str, Info]: ...
    def update_info(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> Info | None: ...
    def memories(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[Listed]]: ...
    def update(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> int | None: ...
    def forget(self, keys: list[bytes]) -> int: ...
    def ttl(self, key: bytes) -> int | None: ...
    def exists(self, key: bytes) -> bool: ...
    def scan(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[bytes]]: ...
    def close(self) -> None: ...
    def lease_claim(self, key: bytes, owner: bytes, ttl: int) -> int: ...
    def lease_renew(self, key: bytes, owner: bytes, token: int, ttl: int) -> bool: ...
    def lease_release(self, key: bytes, owner: bytes, token: int) -> bool: ...


class _AsyncTransport(Protocol):
    def describe(self) -> str: ...
    async def set(self, key: bytes, value: bytes, ttl: int | None, *, nx: bool = False) -> bool: ...
    async def get(self, key: bytes) -> bytes | None: ...
    async def stash(self, value: bytes, ttl: int | None) -> str: ...
    async def recall(self, key: bytes) -> Meta | None: ...
    async def stash_info(self, value: bytes, ttl: int | None) -> tuple[str, Info]: ...
    async def update_info(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> Info | None: ...
    async def memories(
        self, cursor: int, pattern: bytes, count: int
    ) -> tuple[int, list[Listed]]: ...
    async def update(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> int | None: ...
    async def forget(self, keys: list[bytes]) -> int: ...
    async def ttl(self, key: bytes) -> int | None: ...
    async def exists(self, key: bytes) -> bool: ...
    async def scan(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[bytes]]: ...
    async def aclose(self) -> None: ...
    async def lease_claim(self, key: bytes, owner: bytes, ttl: int) -> int: ...
    async def lease_renew(self, key: bytes, owner: bytes, token: int, ttl: int) -> bool: ...
    async def lease_release(self, key: bytes, owner: bytes, token: int) -> bool: ...


#: The errors whose RESP text names UPDATE's options, in the words of this API's
#: arguments; each keeps its class and fields in both modes (the remote client reads
#: the RESP text back into the class first).
PYTHON_WORDS: Final[dict[type[StashError], str]] = {
    EmptyUpdate: "update() needs at least one of data, merge or extra_seconds",
    DataAndMerge: "update() takes data or merge, not both",
    BadExtend: "extra_seconds must be a positive number, got {requested}",
}


@contextlib.contextmanager
def in_python_words(words: dict[type[StashError], str] = PYTHON_WORDS) -> Iterator[None]:
    """Raise the errors of ``words`` told in those words (the Python API's, by default)."""
    try:
        yield
    except StashError as exc:
        text = words.get(type(exc))
        if text is None:
            raise
        raise exc.in_words(text) from None


class _Opening:
    """What Stash and AsyncStash share: one signature, and how it picks the mode."""

    def __init__(
        self,
        backend: str | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        redis_url: str | None = None,
        redis_cluster: bool | None = None,
        url: str | None = None,
        api_key: str | None = None,
        default_ttl: int | None = None,
        max_ttl: int | None = None,
        over_max_ttl: str | None = None,
        max_payload_bytes: int | None = None,
        rate_limit: str | None = None,
        rate_burst: int | None = None,
        max_keys: int | None = None,
        max_bytes: int | str | None = None,
        create: bool = True,
    ) -> None:
        settings = {
            "redis_url": redis_url,
            "redis_cluster": redis_cluster,
            "default_ttl": default_ttl,
            "max_ttl": max_ttl,
            "over_max_ttl": over_max_ttl,
            "max_payload_bytes": max_payload_bytes,
            "rate_limit": rate_limit,
            "rate_burst": rate_burst,
            "max_keys": max_keys,
            "max_bytes": None if max_bytes is None else str(max_bytes),
        }
        self._open(choose(backend, path, url, api_key, settings, create=create))

    def _open(self, target: Remote | Embedded) -> None:
        raise NotImplementedError


class Stash(_Opening):
    """Working memory that always expires: embedded (SQLite or memory) or a remote stashd.

    ``Stash()`` opens the SQLite file in-process, with no daemon and no configuration;
    ``Stash("memory")`` keeps entries in this process only; ``Stash(path="work.db")``
    opens that file; ``Stash(backend="redis", redis_url="redis://host:6379/0")`` keeps
    them in Redis or Valkey as a stashd node with that backend does (``redis_cluster``
    for a Redis Cluster); ``Stash(url="redis://host:6380", api_key="...")`` talks to a
    stashd. ``default_ttl``, ``max_ttl`` (with ``over_max_ttl``, ``"refuse"`` or ``"clamp"``)
    and ``max_payload_bytes`` (and ``rate_limit``
    such as ``"600/min"`` with ``rate_burst``, and the storage quota ``max_keys`` and
    ``max_bytes``, such as ``"512mb"``, 0 for no limit) override the embedded limits;
    in remote mode the daemon's apply. ``create=False`` opens an existing SQLite file
    only (a missing one raises StoreOpenError). A client is safe to share between
    threads; close it (or use ``with``) when done.

    Example::

        from stashd import Stash

        with Stash() as stash:
            stash.set("plan", {"step": 1}, ttl=600)
            stash.get("plan")  # {'step': 1}

    Raises ``ValueError`` for arguments that contradict each other or a setting out of
    range, and :class:`~stashd.store.base.StoreOpenError` when the SQLite file cannot
    be opened. A remote client connects on first use.
    """

    def _open(self, target: Remote | Embedded) -> None:
        self._t: _Transport
        if isinstance(target, Remote):
            from stashd.remote import RemoteTransport  # noqa: PLC0415 - redis-py only when used

            self._t = RemoteTransport(target.url, target.api_key)
        else:
            self._t = EmbeddedTransport(target.store, target.limits)

    def __repr__(self) -> str:
        return f"<Stash {self._t.describe()}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release connections; later calls raise StoreUnavailable. Calling it twice is fine.

        Example::

            stash = Stash()
            stash.close()
        """
        self._t.close()

    def set(self, key: str, value: object, *, ttl: int | None = None) -> None:
        """Store ``value`` (any JSON value) under ``key`` for ``ttl`` seconds, else the default TTL.

        Raises InvalidTTL over the maximum TTL and PayloadTooLarge over the payload limit
        (nothing is stored); TypeError/ValueError for a value JSON cannot hold.

        Example::

            stash.set("plan", {"step": 1, "of": 3}, ttl=600)
        """
        self._t.set(_key(key), _encode(value), _seconds(ttl, "ttl"))

    def add(self, key: str, value: object, *, ttl: int | None = None) -> bool:
        """Store ``value`` under ``key`` only if nothing live is there (SET NX); whether it was.

        Of several clients adding one key at once, exactly one gets True.

        Example::

            stash.add("lock:report", {"owner": "me"}, ttl=30)  # True
            stash.add("lock:report", {"owner": "you"}, ttl=30)  # False
        """
        return self._t.set(_key(key), _encode(value), _seconds(ttl, "ttl"), nx=True)

    def get(self, key: str, default: Any = None) -> Any:  # noqa: ANN401 - any JSON value
        """The value under ``key``, or ``default`` when it is missing or expired.

        A stored JSON ``null`` is returned as None. A value that is not JSON (written
        raw over RESP) raises StoredNotJSON, a NotJSON.

        Example::

            stash.get("plan")  # {'step': 1, 'of': 3}
            stash.get("nothing-here", {})  # {}
        """
        raw = self._t.get(_key(key))
        return default if raw is None else _decode(raw)

    @overload
    def stash(
        self, value: object, *, ttl: int | None = None, with_meta: Literal[False] = False
    ) -> str: ...
    @overload
    def stash(
        self, value: object, *, ttl: int | None = None, with_meta: Literal[True]
    ) -> MemoryInfo: ...
    def stash(self, value: object, *, ttl: int | None = None, with_meta: bool = False) -> Any:
        """Store ``value`` under a new id (8 base62 characters) and return the id.

        With ``with_meta`` the answer is a :class:`MemoryInfo`: the id, the TTL given
        (or the default), the expiry, version 1 and the size stored.

        Example::

            memory_id = stash.stash({"context": "..."}, ttl=3600)
            stash.stash({"step": 1}, with_meta=True).expires_at
        """
        raw = _encode(value)
        if not with_meta:
            return self._t.stash(raw, _seconds(ttl, "ttl"))
        memory_id, info = self._t.stash_info(raw, _seconds(ttl, "ttl"))
        return _info(memory_id, info, len(raw))

    @overload
    def recall(self, memory_id: str, *, with_meta: Literal[False] = False) -> Any: ...  # noqa: ANN401
    @overload
    def recall(self, memory_id: str, *, with_meta: Literal[True]) -> Memory | None: ...
    def recall(self, memory_id: str, *, with_meta: bool = False) -> Any:
        """The value under an id, or None when missing; with ``with_meta`` a :class:`Memory`.

        Example::

            stash.recall(memory_id)  # {'context': '...'}
            memory = stash.recall(memory_id, with_meta=True)
            memory.version, memory.ttl_remaining, memory.expires_at
        """
        key = _key(memory_id, "memory_id")
        if with_meta:
            return _memory(memory_id, self._t.recall(key))
        raw = self._t.get(key)
        return None if raw is None else _decode(raw)

    @overload
    def update(
        self,
        memory_id: str,
        data: object = _UNSET,
        *,
        merge: object = _UNSET,
        extra_seconds: int | None = None,
        if_version: int | None = None,
        with_meta: Literal[False] = False,
    ) -> int | None: ...
    @overload
    def update(
        self,
        memory_id: str,
        data: object = _UNSET,
        *,
        merge: object = _UNSET,
        extra_seconds: int | None = None,
        if_version: int | None = None,
        with_meta: Literal[True],
    ) -> MemoryInfo | None: ...
    def update(
        self,
        memory_id: str,
        data: object = _UNSET,
        *,
        merge: object = _UNSET,
        extra_seconds: int | None = None,
        if_version: int | None = None,
        with_meta: bool = False,
    ) -> Any:
        """Replace (``data``) or merge-patch (``merge``, RFC 7396) the value, extend its TTL.

        Returns the seconds left afterwards, or None when the id is missing or expired;
        with ``with_meta`` a :class:`MemoryInfo` of the entry as written (its new version).
        ``extra_seconds`` is added to the time left; ``if_version`` applies the whole
        update only at that version, else Conflict (``.current``, ``.expected``) and
        nothing changes. Give at least one of data, merge, extra_seconds, and not both
        data and merge (EmptyUpdate, DataAndMerge).

        Example::

            stash.update(memory_id, merge={"progress": 1.0}, extra_seconds=300)
            stash.update(memory_id, {"done": True}, if_version=2)
        """
        data_raw, merge_raw, extend, version = _update_args(data, merge, extra_seconds, if_version)
        key = _key(memory_id, "memory_id")
        with in_python_words():
            if with_meta:
                info = self._t.update_info(key, data_raw, merge_raw, extend, version)
                return _info(memory_id, info)
            return self._t.update(key, data_raw, merge_raw, extend, version)

    def forget(self, *memory_ids: str) -> int:
        """Delete ids (or any keys); returns how many existed.

        Example::

            stash.forget(memory_id)  # 1
        """
        keys = [_key(m, "memory_id") for m in memory_ids]
        return self._t.forget(keys) if keys else 0

    def ttl(self, key: str) -> int | None:
        """Whole seconds left (rounded to the nearest), or None when missing or expired.

        Example::

            stash.ttl("plan")  # 600
        """
        return self._t.ttl(_key(key))

    def extend(self, key: str, seconds: int) -> int | None:
        """Add ``seconds`` to the time ``key`` has left; the seconds left, or None when missing.

        The result must stay within the maximum TTL (InvalidTTL otherwise, nothing
        changed). The value and its version are untouched.

        Example::

            stash.extend("plan", 300)  # 900
        """
        extend = _seconds(seconds, "seconds")
        return self._t.update(_key(key), None, None, extend, None)

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds a live entry.

        Example::

            stash.exists("plan")  # True
        """
        return self._t.exists(_key(key))

    def memories(
        self, pattern: str = "*", *, cursor: str | None = None, limit: int = PAGE_DEFAULT
    ) -> MemoryPage:
        """One page of the memories (any keys) matching a glob, with their metadata, no values.

        A page holds up to ``limit`` (1 to 1000) live entries; it is short before the
        end only when the pattern matched few of the entries one page reads (the work
        of a page is bounded, as MEMORIES says), so follow ``next_cursor`` until it is
        None. Like SCAN, an entry present throughout is listed at least once.

        Example::

            page = stash.memories("task:*", limit=50)
            [m.id for m in page.memories], page.next_cursor
        """
        pat = _key(pattern, "pattern")
        return _page(self._t.memories(_cursor(cursor), pat, _limit(limit)))

    def lease(self, key: str, *, ttl: int = 30, owner: str | None = None) -> Lease:
        """A lease on ``key`` for ``ttl`` seconds: claimed entering ``with``, released leaving.

        ``owner`` names the holder (a fresh unique name unless given); ``lease.token``
        is the fencing token, larger than any earlier claim's of the key. Entering raises
        LeaseHeld while another owner holds it; ``renew()`` and leaving raise LeaseLost
        once the lease expired or was taken.

        Example::

            with stash.lease("task:42", ttl=30) as lease:
                do_work(fence=lease.token)
                lease.renew()
        """
        return Lease(self._t, _key(key), owner, _lease_ttl(ttl))

    def keys(self, pattern: str = "*") -> Iterator[str]:
        """Iterate over the keys matching a glob pattern, a SCAN page at a time.

        As with SCAN, a key present throughout is returned at least once, and one
        deleted and written again meanwhile may come twice. Ids made by :meth:`stash`
        are keys too.

        Example::

            sorted(stash.keys("plan*"))  # ['plan']
        """
        pat = _key(pattern, "pattern")
        cursor = 0
        while True:
            cursor, page = self._t.scan(cursor, pat, SCAN_COUNT)
            for raw in page:
                yield _text(raw)
            if cursor == 0:
                return


class AsyncStash(_Opening):
    """:class:`Stash` for asyncio: the same arguments, modes and behaviour, with ``await``.

    Embedded, concurrent tasks are group-committed like the daemon's clients; remote, a
    redis.asyncio pool is shared by every task. A client belongs to one event loop.

    Example::

        from stashd import AsyncStash

        async with AsyncStash() as stash:
            await stash.set("plan", {"step": 1}, ttl=600)
            await stash.get("plan")  # {'step': 1}
    """

    def _open(self, target: Remote | Embedded) -> None:
        self._t: _AsyncTransport
        if isinstance(target, Remote):
            from stashd.remote import AsyncRemoteTransport  # noqa: PLC0415 - only when used

            self._t = AsyncRemoteTransport(target.url, target.api_key)
        else:
            self._t = AsyncEmbeddedTransport.open(target.store, target.limits)

    def __repr__(self) -> str:
        return f"<AsyncStash {self._t.describe()}>"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Finish queued work and release connections; calling it twice is fine.

        Example::

            stash = AsyncStash()
            await stash.aclose()
        """
        await self._t.aclose()

    async def set(self, key: str, value: object, *, ttl: int | None = None) -> None:
        """Store ``value`` (any JSON value) under ``key``; see :meth:`Stash.set`.

        Example::

            await stash.set("plan", {"step": 1, "of": 3}, ttl=600)
        """
        await self._t.set(_key(key), _encode(value), _seconds(ttl, "ttl"))

    async def add(self, key: str, value: object, *, ttl: int | None = None) -> bool:
        """Store ``value`` under ``key`` only if nothing live is there; see :meth:`Stash.add`.

        Example::

            await stash.add("lock:report", {"owner": "me"}, ttl=30)  # True
        """
        return await self._t.set(_key(key), _encode(value), _seconds(ttl, "ttl"), nx=True)

    async def get(self, key: str, default: Any = None) -> Any:  # noqa: ANN401 - any JSON value
        """The value under ``key``, or ``default``; see :meth:`Stash.get`.

        Example::

            await stash.get("plan")  # {'step': 1, 'of': 3}
        """
        raw = await self._t.get(_key(key))
        return default if raw is None else _decode(raw)

    @overload
    async def stash(
        self, value: object, *, ttl: int | None = None, with_meta: Literal[False] = False
    ) -> str: ...
    @overload
    async def stash(
        self, value: object, *, ttl: int | None = None, with_meta: Literal[True]
    ) -> MemoryInfo: ...
    async def stash(self, value: object, *, ttl: int | None = None, with_meta: bool = False) -> Any:
        """Store ``value`` under a new id and return it; see :meth:`Stash.stash`.

        Example::

            memory_id = await stash.stash({"context": "..."}, ttl=3600)
        """
        raw = _encode(value)
        if not with_meta:
            return await self._t.stash(raw, _seconds(ttl, "ttl"))
        memory_id, info = await self._t.stash_info(raw, _seconds(ttl, "ttl"))
        return _info(memory_id, info, len(raw))

    @overload
    async def recall(self, memory_id: str, *, with_meta: Literal[False] = False) -> Any: ...  # noqa: ANN401
    @overload
    async def recall(self, memory_id: str, *, with_meta: Literal[True]) -> Memory | None: ...
    async def recall(self, memory_id: str, *, with_meta: bool = False) -> Any:
        """The value under an id, or a :class:`Memory`; see :meth:`Stash.recall`.

        Example::

            memory = await stash.recall(memory_id, with_meta=True)
        """
        key = _key(memory_id, "memory_id")
        if with_meta:
            return _memory(memory_id, await self._t.recall(key))
        raw = await self._t.get(key)
        return None if raw is None else _decode(raw)

    @overload
    async def update(
        self,
        memory_id: str,
        data: object = _UNSET,
        *,
        merge: object = _UNSET,
        extra_seconds: int | None = None,
        if_version: int | None = None,
        with_meta: Literal[False] = False,
    ) -> int | None: ...
    @overload
    async def update(
        self,
        memory_id: str,
        data: object = _UNSET,
        *,
        merge: object = _UNSET,
        extra_seconds: int | None = None,
        if_version: int | None = None,
        with_meta: Literal[True],
    ) -> MemoryInfo | None: ...
    async def update(
        self,
        memory_id: str,
        data: object = _UNSET,
        *,
        merge: object = _UNSET,
        extra_seconds: int | None = None,
        if_version: int | None = None,
        with_meta: bool = False,
    ) -> Any:
        """Replace or merge-patch the value, extend its TTL; see :meth:`Stash.update`.

        Example::

            await stash.update(memory_id, merge={"progress": 1.0}, extra_seconds=300)
        """
        data_raw, merge_raw, extend, version = _update_args(data, merge, extra_seconds, if_version)
        key = _key(memory_id, "memory_id")
        with in_python_words():
            if with_meta:
                info = await self._t.update_info(key, data_raw, merge_raw, extend, version)
                return _info(memory_id, info)
            return await self._t.update(key, data_raw, merge_raw, extend, version)

    async def forget(self, *memory_ids: str) -> int:
        """Delete ids (or any keys); returns how many existed.

        Example::

            await stash.forget(memory_id)  # 1
        """
        keys = [_key(m, "memory_id") for m in memory_ids]
        return await self._t.forget(keys) if keys else 0

    async def ttl(self, key: str) -> int | None:
        """Whole seconds left, or None; see :meth:`Stash.ttl`.

        Example::

            await stash.ttl("plan")  # 600
        """
        return await self._t.ttl(_key(key))

    async def extend(self, key: str, seconds: int) -> int | None:
        """Add ``seconds`` to the time left; see :meth:`Stash.extend`.

        Example::

            await stash.extend("plan", 300)  # 900
        """
        extend = _seconds(seconds, "seconds")
        return await self._t.update(_key(key), None, None, extend, None)

    async def exists(self, key: str) -> bool:
        """Whether ``key`` holds a live entry.

        Example::

            await stash.exists("plan")  # True
        """
        return await self._t.exists(_key(key))

    async def memories(
        self, pattern: str = "*", *, cursor: str | None = None, limit: int = PAGE_DEFAULT
    ) -> MemoryPage:
        """One page of the memories matching a glob, with metadata; see :meth:`Stash.memories`.

        Example::

            page = await stash.memories("task:*")
        """
        pat = _key(pattern, "pattern")
        return _page(await self._t.memories(_cursor(cursor), pat, _limit(limit)))

    def lease(self, key: str, *, ttl: int = 30, owner: str | None = None) -> AsyncLease:
        """A lease on ``key``, used with ``async with``; see :meth:`Stash.lease`.

        Example::

            async with stash.lease("task:42", ttl=30) as lease:
                await do_work(fence=lease.token)
                await lease.renew()
        """
        return AsyncLease(self._t, _key(key), owner, _lease_ttl(ttl))

    async def keys(self, pattern: str = "*") -> AsyncIterator[str]:
        """Iterate over matching keys a SCAN page at a time; see :meth:`Stash.keys`.

        Example::

            [key async for key in stash.keys("plan*")]  # ['plan']
        """
        pat = _key(pattern, "pattern")
        cursor = 0
        while True:
            cursor, page = await self._t.scan(cursor, pat, SCAN_COUNT)
            for raw in page:
                yield _text(raw)
            if cursor == 0:
                return


class ServedStash(AsyncStash):
    """An :class:`AsyncStash` for one caller of a running daemon (its MCP door): no store.

    The calls are the caller's (namespace, limits), run by the daemon's batcher and
    marked with ``door`` in the write log; closing it leaves the daemon's store open.
    """

    def __init__(  # no mode to choose: the daemon's service is the store
        self, service: MemoryService, batcher: Batcher, principal: Principal, door: str
    ) -> None:
        self._t = AsyncEmbeddedTransport.serving(service, batcher, principal, door)
