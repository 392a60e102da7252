"""The in-process door: the client's calls as memory-service operations run by a local store.

No RESP and no socket: each call asks :class:`~stashd.service.MemoryService` for the
operation (so the payload limit, the TTL rules and id generation are the daemon's own)
and runs it on the store. The synchronous transport calls :meth:`Store.run` on the
calling thread (for SQLite one short transaction on that thread's connection, with no
event loop and no thread hop); the asynchronous one awaits a :class:`~stashd.batch.Batcher`
on the running loop, so concurrent tasks share transactions (group commit) as the
daemon's connections do. Results are turned into the values the remote door reads off
the wire, so the client above cannot tell the two apart.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

from stashd.batch import Batcher
from stashd.errors import LeaseHeld, RateLimited, StoreUnavailable
from stashd.ratelimit import LocalLimiter
from stashd.service import MemoryService, seconds_left
from stashd.tenancy import DEFAULT_NAMESPACE
from stashd.types import Principal

if TYPE_CHECKING:
    from stashd.ops import Create, LeaseAnswer, Op
    from stashd.store.base import Store
    from stashd.types import Entry, Limits

#: What :meth:`recall` returns: the stored bytes, whole seconds left (rounded to the
#: nearest, as RESP's WITHMETA), the expiry in whole Unix seconds, and the version.
Meta = tuple[bytes, int, int, int]
#: What a write's metadata is without the value (STASH and UPDATE ... WITHMETA, each
#: entry of a MEMORIES page): whole seconds left, the expiry in Unix seconds, the version.
Info = tuple[int, int, int]
#: One entry of a listing page: its key, its :data:`Info` and its size in bytes.
Listed = tuple[bytes, Info, int]

#: The error after close(): the same in every mode (see stashd.remote).
CLOSED: Final = "the client is closed"


class Calls:
    """The operations behind each client call, and what their results mean, in one place.

    ``limited`` says whether the calls count against the principal's rate here; a door
    of the daemon that admitted its request already (the MCP door) says no.
    """

    __slots__ = ("clock", "limiter", "principal", "rate", "service")

    def __init__(self, service: MemoryService, principal: Principal, *, limited: bool) -> None:
        self.service = service
        self.clock = service.clock
        self.principal = principal
        self.rate = principal.limits.rate if limited else None
        self.limiter = LocalLimiter() if self.rate is not None else None

    @classmethod
    def embedded(cls, store: Store, limits: Limits) -> Calls:
        """The calls of a client with a store of its own, rate limited by ``limits``."""
        # Embedded data is the default namespace: the one a RESP or HTTP client that never
        # authenticates uses, so an application and a daemon on one file share it.
        return cls(MemoryService(store), Principal(DEFAULT_NAMESPACE, limits), limited=True)

    def admit(self) -> None:
        """Count one call against the rate limit, as every RESP command counts."""
        if self.limiter is not None and self.rate is not None:
            decision = self.limiter.acquire(self.principal.namespace, self.rate)
            if not decision.allowed:
                raise RateLimited(decision.retry_after_ms)

    # -- operations ------------------------------------------------------------------
    def set(self, key: bytes, value: bytes, ttl: int | None, *, nx: bool = False) -> Op:
        """SET key value [EX ttl] [NX]."""
        service, p = self.service, self.principal
        expires_at = service.expiry(p, None if ttl is None else ttl * 1000)
        return service.set(p, key, value, expires_at=expires_at, cond=b"NX" if nx else b"")

    def get(self, key: bytes) -> Op:
        """GET, RECALL: one string's entry."""
        return self.service.get(self.principal, key)

    def lookup(self, key: bytes) -> Op:
        """TTL, EXISTS: one key's entry, whatever its kind."""
        return self.service.lookup(self.principal, key)

    def stash(self, value: bytes, ttl: int | None) -> Create:
        """STASH value [EX ttl]."""
        return self.service.stash(self.principal, value, None if ttl is None else ttl * 1000)

    def update(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
        *,
        entry: bool = False,
    ) -> Op:
        """UPDATE key [DATA d | MERGE m] [EXTEND s] [IFVERSION v] [WITHMETA: ``entry``]."""
        return self.service.update(
            self.principal,
            key,
            data=data,
            merge=merge,
            extend_seconds=extend or 0,
            if_version=if_version,
            entry=entry,
        )

    def forget(self, keys: list[bytes]) -> Op:
        """FORGET key [key ...]."""
        return self.service.forget(self.principal, keys)

    def scan(self, cursor: int, pattern: bytes, count: int) -> Op:
        """SCAN cursor MATCH pattern COUNT count."""
        return self.service.scan(self.principal, cursor, count, pattern)

    def page(self, cursor: int, pattern: bytes, count: int) -> Op:
        """MEMORIES cursor MATCH pattern COUNT count."""
        return self.service.page(self.principal, cursor, count, pattern)

    def lease_claim(self, key: bytes, owner: bytes, ttl: int) -> Op:
        """LEASE CLAIM key owner ttl."""
        return self.service.lease_claim(self.principal, key, owner, ttl)

    def lease_renew(self, key: bytes, owner: bytes, token: int, ttl: int) -> Op:
        """LEASE RENEW key owner token ttl."""
        return self.service.lease_renew(self.principal, key, owner, token, ttl)

    def lease_release(self, key: bytes, owner: bytes, token: int) -> Op:
        """LEASE RELEASE key owner token."""
        return self.service.lease_release(self.principal, key, owner, token)

    def claimed(self, answer: LeaseAnswer) -> int:
        """A claim's token; LeaseHeld, saying for how long, when another owner holds it."""
        lease = answer.lease
        assert lease is not None, "a claim always answers with a lease"
        if not answer.granted:
            raise LeaseHeld(max(lease.expires_at - self.clock(), 0))
        return lease.token

    def ping(self) -> Op:
        """A round trip through the store."""
        return self.service.ping()

    # -- results, as the remote door reads them off the wire ---------------------------
    def meta(self, entry: Entry | None) -> Meta | None:
        """RECALL ... WITHMETA."""
        if entry is None:
            return None
        left = seconds_left(entry.expires_at, self.clock())
        return entry.value, left, entry.expires_at // 1000, entry.version

    def ttl(self, entry: Entry | None) -> int | None:
        """TTL, None for a missing key."""
        return None if entry is None else seconds_left(entry.expires_at, self.clock())

    def info(self, entry: Entry | None) -> Info | None:
        """UPDATE ... WITHMETA."""
        return None if entry is None else _info(entry, self.clock())

    def created(self, op: Create) -> Info:
        """STASH ... WITHMETA: a new entry's metadata, from the operation that made it."""
        expires_at = op.expires_at
        return seconds_left(expires_at, self.clock()), expires_at // 1000, 1

    def listed(self, page: tuple[int, list[tuple[bytes, Entry]]]) -> tuple[int, list[Listed]]:
        """MEMORIES: each entry's key, metadata and size."""
        nxt, items = page
        now = self.clock()
        return nxt, [(k, _info(e, now), len(e.value)) for k, e in items]


def _info(entry: Entry, now: int) -> Info:
    """An entry's :data:`Info` at ``now``."""
    return seconds_left(entry.expires_at, now), entry.expires_at // 1000, entry.version


def value_of(entry: Entry | None) -> bytes | None:
    """GET."""
    return None if entry is None else entry.value


def seconds_of(ms: int | None) -> int | None:
    """UPDATE's reply: the TTL left in ms as whole seconds, rounded as RESP rounds it."""
    return None if ms is None else max((ms + 500) // 1000, 0)


class EmbeddedTransport:
    """Synchronous calls on the calling thread, safe to share between threads.

    SQLite gives every thread its own connection, and each call is one transaction on
    it. The memory store's dicts are not safe for the read-decide-write of an operation
    from several threads at once, so calls on an inline store take a lock; a rate
    limit takes it too, since the limiter's table is shared.
    """

    def __init__(self, store: Store, limits: Limits) -> None:
        self.calls = Calls.embedded(store, limits)
        self.store = store
        self._lock = threading.Lock() if store.inline or limits.rate is not None else None
        self._closed = False
        store.run(self.calls.ping())  # a file that cannot be opened fails here, not later

    def describe(self) -> str:
        """What this client talks to, for repr()."""
        return _describe(self.store)

    def _run(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result
        if self._closed:
            raise StoreUnavailable(CLOSED)
        lock = self._lock
        if lock is None:  # SQLite without a rate limit: each thread has its own connection
            return self.store.run(op)
        with lock:
            self.calls.admit()
            return self.store.run(op)

    def set(self, key: bytes, value: bytes, ttl: int | None, *, nx: bool = False) -> bool:
        """Store ``value`` under ``key`` (with ``nx``, only where there is none); whether it was."""
        written: tuple[bool, Entry | None] = self._run(self.calls.set(key, value, ttl, nx=nx))
        return written[0]

    def get(self, key: bytes) -> bytes | None:
        """The bytes under ``key``."""
        return value_of(self._run(self.calls.get(key)))

    def stash(self, value: bytes, ttl: int | None) -> str:
        """Store under a new id."""
        key: bytes = self._run(self.calls.stash(value, ttl))
        return key.decode()

    def recall(self, key: bytes) -> Meta | None:
        """The bytes with their metadata."""
        return self.calls.meta(self._run(self.calls.get(key)))

    def stash_info(self, value: bytes, ttl: int | None) -> tuple[str, Info]:
        """Store under a new id; the id and the entry's metadata."""
        op = self.calls.stash(value, ttl)
        key: bytes = self._run(op)
        return key.decode(), self.calls.created(op)

    def update_info(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> Info | None:
        """Replace, merge or extend; the entry's metadata after it."""
        return self.calls.info(
            self._run(self.calls.update(key, data, merge, extend, if_version, entry=True))
        )

    def memories(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[Listed]]:
        """One page of a listing with metadata."""
        return self.calls.listed(self._run(self.calls.page(cursor, pattern, count)))

    def update(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> int | None:
        """Replace, merge or extend; the seconds left."""
        return seconds_of(self._run(self.calls.update(key, data, merge, extend, if_version)))

    def forget(self, keys: list[bytes]) -> int:
        """Delete; how many existed."""
        removed: int = self._run(self.calls.forget(keys))
        return removed

    def ttl(self, key: bytes) -> int | None:
        """Seconds left."""
        return self.calls.ttl(self._run(self.calls.lookup(key)))

    def exists(self, key: bytes) -> bool:
        """Whether a live entry is there."""
        return self._run(self.calls.lookup(key)) is not None

    def scan(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[bytes]]:
        """One SCAN page."""
        page: tuple[int, list[bytes]] = self._run(self.calls.scan(cursor, pattern, count))
        return page

    def lease_claim(self, key: bytes, owner: bytes, ttl: int) -> int:
        """Claim ``key`` for ``owner``: the fencing token, or LeaseHeld."""
        return self.calls.claimed(self._run(self.calls.lease_claim(key, owner, ttl)))

    def lease_renew(self, key: bytes, owner: bytes, token: int, ttl: int) -> bool:
        """Renew the owner's lease; whether it was held."""
        answer: LeaseAnswer = self._run(self.calls.lease_renew(key, owner, token, ttl))
        return answer.granted

    def lease_release(self, key: bytes, owner: bytes, token: int) -> bool:
        """Release the owner's lease; whether it was held."""
        answer: LeaseAnswer = self._run(self.calls.lease_release(key, owner, token))
        return answer.granted

    def close(self) -> None:
        """Close every thread's connection to the file (nothing to do for memory)."""
        if self._closed:
            return
        self._closed = True
        # The synchronous path never starts the store's worker or loop connection: only
        # the connections threads made for themselves are left, and a store that keeps
        # such connections closes them here.
        self.store.close_threads()


class AsyncEmbeddedTransport:
    """Asynchronous calls through a Batcher on the running loop: group commit, as in stashd.

    It belongs to one event loop at a time, like the daemon's store does. Made with
    :meth:`open` it owns a store of its own; made with :meth:`serving` it is a door of a
    running daemon, for one caller: that daemon's service and batcher, the caller's
    namespace and limits, and writes marked with the door's name (stashd.events).
    """

    def __init__(
        self, calls: Calls, batcher: Batcher, *, door: str | None, own_store: bool
    ) -> None:
        self.calls = calls
        self.batcher = batcher
        self.store = batcher.store
        self.door = door
        self._own_store = own_store
        # A store that answers reads on the loop (SQLite) shares one read transaction per
        # loop turn among them (Store.read_now). That suits the daemon, where every request
        # starts a new turn; but a task may call many times without yielding, and must
        # still see what other threads and processes committed in between. So a client's
        # own read runs in a transaction of its own on the loop thread (Store.run), which
        # costs no more than the sync client's reads and no thread hop.
        store = self.store
        self._own_read = own_store and store.inline_reads and not store.inline
        self._closed = False

    @classmethod
    def open(cls, store: Store, limits: Limits) -> AsyncEmbeddedTransport:
        """A client's own store, in the default namespace, limited by ``limits``."""
        transport = cls(Calls.embedded(store, limits), Batcher(store), door=None, own_store=True)
        # A file that cannot be opened fails here, on the constructing thread; the loop's
        # own connection is made on first use.
        store.run(transport.calls.ping())
        return transport

    @classmethod
    def serving(
        cls, service: MemoryService, batcher: Batcher, principal: Principal, door: str
    ) -> AsyncEmbeddedTransport:
        """One caller of a running daemon; the door rate limited its request already."""
        return cls(Calls(service, principal, limited=False), batcher, door=door, own_store=False)

    def describe(self) -> str:
        """What this client talks to, for repr()."""
        return _describe(self.store)

    async def _run(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result
        if self._closed:
            raise StoreUnavailable(CLOSED)
        self.calls.admit()  # one loop thread: the limiter needs no lock
        if self._own_read and not op.writes:
            return self.store.run(op)
        return await self.batcher.run(op, self.door)

    async def set(self, key: bytes, value: bytes, ttl: int | None, *, nx: bool = False) -> bool:
        """Store ``value`` under ``key`` (with ``nx``, only where there is none); whether it was."""
        op = self.calls.set(key, value, ttl, nx=nx)
        written: tuple[bool, Entry | None] = await self._run(op)
        return written[0]

    async def get(self, key: bytes) -> bytes | None:
        """The bytes under ``key``."""
        return value_of(await self._run(self.calls.get(key)))

    async def stash(self, value: bytes, ttl: int | None) -> str:
        """Store under a new id."""
        key: bytes = await self._run(self.calls.stash(value, ttl))
        return key.decode()

    async def recall(self, key: bytes) -> Meta | None:
        """The bytes with their metadata."""
        return self.calls.meta(await self._run(self.calls.get(key)))

    async def stash_info(self, value: bytes, ttl: int | None) -> tuple[str, Info]:
        """Store under a new id; the id and the entry's metadata."""
        op = self.calls.stash(value, ttl)
        key: bytes = await self._run(op)
        return key.decode(), self.calls.created(op)

    async def update_info(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> Info | None:
        """Replace, merge or extend; the entry's metadata after it."""
        op = self.calls.update(key, data, merge, extend, if_version, entry=True)
        return self.calls.info(await self._run(op))

    async def memories(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[Listed]]:
        """One page of a listing with metadata."""
        return self.calls.listed(await self._run(self.calls.page(cursor, pattern, count)))

    async def update(
        self,
        key: bytes,
        data: bytes | None,
        merge: bytes | None,
        extend: int | None,
        if_version: int | None,
    ) -> int | None:
        """Replace, merge or extend; the seconds left."""
        op = self.calls.update(key, data, merge, extend, if_version)
        return seconds_of(await self._run(op))

    async def forget(self, keys: list[bytes]) -> int:
        """Delete; how many existed."""
        removed: int = await self._run(self.calls.forget(keys))
        return removed

    async def ttl(self, key: bytes) -> int | None:
        """Seconds left."""
        return self.calls.ttl(await self._run(self.calls.lookup(key)))

    async def exists(self, key: bytes) -> bool:
        """Whether a live entry is there."""
        return await self._run(self.calls.lookup(key)) is not None

    async def scan(self, cursor: int, pattern: bytes, count: int) -> tuple[int, list[bytes]]:
        """One SCAN page."""
        page: tuple[int, list[bytes]] = await self._run(self.calls.scan(cursor, pattern, count))
        return page

    async def lease_claim(self, key: bytes, owner: bytes, ttl: int) -> int:
        """Claim ``key`` for ``owner``: the fencing token, or LeaseHeld."""
        return self.calls.claimed(await self._run(self.calls.lease_claim(key, owner, ttl)))

    async def lease_renew(self, key: bytes, owner: bytes, token: int, ttl: int) -> bool:
        """Renew the owner's lease; whether it was held."""
        answer: LeaseAnswer = await self._run(self.calls.lease_renew(key, owner, token, ttl))
        return answer.granted

    async def lease_release(self, key: bytes, owner: bytes, token: int) -> bool:
        """Release the owner's lease; whether it was held."""
        answer: LeaseAnswer = await self._run(self.calls.lease_release(key, owner, token))
        return answer.granted

    async def aclose(self) -> None:
        """Finish what is queued, then close the store (its worker and connections).

        A transport :meth:`serving` a daemon closes nothing: the daemon owns its store.
        """
        if self._closed:
            return
        self._closed = True
        if self._own_store:
            await self.batcher.drain()
            await self.store.close()


def _describe(store: Store) -> str:
    return f"embedded {store.describe()}"
