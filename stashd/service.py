"""The memory service: the rules that make Stash, applied once for every door.

RESP commands, the HTTP API and the embedded client all come here to turn a caller's
request into an atomic operation: the caller's namespace, payload limit, default and
maximum TTL, JSON validation and id generation are decided here, never in a door and
never in a store. Relative TTLs become absolute expiry times here, against the store's
clock; checks that depend on the stored state (EXTEND past the maximum) travel inside
the operation so they run atomically with it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar

from stashd import ops
from stashd.errors import (
    BadExtend,
    CommandError,
    DataAndMerge,
    EmptyUpdate,
    InvalidRequest,
    NotJSON,
    PersistRefused,
    TTLNotPositive,
)
from stashd.held import HeldMemory
from stashd.ids import POOLS
from stashd.jsontext import (
    check_depth,
    check_json,
    dump_parsed,
    load_json,
    too_deep,
    unwritable,
    value_nesting,
)
from stashd.ops import capped_ttl
from stashd.scripting.cache import Scripts
from stashd.types import Kind

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.store.base import Store
    from stashd.types import Principal

_Args = ParamSpec("_Args")
_Op = TypeVar("_Op", bound=ops.Op)
_Update = TypeVar("_Update", bound=ops.Update)


#: Listing pages: the default size, and the largest a caller may ask for (bounds the work
#: and the reply of one request).
PAGE_DEFAULT: Final = 100
PAGE_MAX: Final = 1000
#: Entries one SCAN call examines at most, whatever its COUNT asks (COUNT is a hint in
#: Redis too): a page of a huge namespace must not hold the loop every client shares.
SCAN_COUNT_MAX: Final = 1000
#: Bytes of a KEYS/SCAN MATCH pattern. Compiling costs a few microseconds per pattern
#: byte and matching grows with it; Redis has no cap, but no real pattern comes near.
PATTERN_MAX: Final = 1024
#: Bytes of a lease's owner: a worker's name or id, kept with the lease and compared on
#: every renew and release, so it has no reason to be long.
OWNER_MAX: Final = 256


def check_pattern(pattern: bytes) -> None:
    """Refuse a glob pattern over PATTERN_MAX bytes (KEYS, SCAN MATCH, CONFIG GET)."""
    if len(pattern) > PATTERN_MAX:
        raise CommandError(f"pattern is {len(pattern)} bytes, the limit is {PATTERN_MAX} bytes")


def check_owner(owner: bytes) -> None:
    """Refuse a lease owner that is empty or over OWNER_MAX bytes."""
    if not 1 <= len(owner) <= OWNER_MAX:
        raise InvalidRequest(
            f"lease owner is {len(owner)} bytes, it must be 1 to {OWNER_MAX} bytes",
            field="owner",
            minimum=1,
            maximum=OWNER_MAX,
            requested=len(owner),
        )


def seconds_left(expires_at: int, now: int) -> int:
    """Remaining TTL in whole seconds, rounded to nearest, never negative (as TTL replies)."""
    return max((expires_at - now + 500) // 1000, 0)


def rfc3339(ms: int) -> str:
    """An absolute time in ms as RFC 3339 UTC with a Z, to the second: 2026-11-24T12:00:00Z."""
    global _last_rfc3339  # noqa: PLW0603 - a one-entry cache, replaced whole
    second = ms // 1000
    cached = _last_rfc3339  # one read: another thread may replace it, never half of it
    if cached[0] != second:
        # Writes in one second mostly share their expiry second: format it once.
        cached = _last_rfc3339 = (second, datetime.fromtimestamp(second, UTC).strftime(_RFC3339))
    return cached[1]


_RFC3339: Final = "%Y-%m-%dT%H:%M:%SZ"
_last_rfc3339: tuple[int, str] = (-1, "")


def encode_json(value: object, what: str = "value") -> bytes:
    r"""A parsed JSON value as the compact text Stash stores, within the depth limit.

    ``1e400`` parses as infinity and ``"\ud800"`` as a lone surrogate, which have no JSON
    text (:func:`~stashd.jsontext.unwritable`), so they cannot be stored. A value
    nested past :data:`~stashd.jsontext.MAX_DEPTH` is refused as a text would be (a value
    an HTTP body held is within it already; one from a Python caller may not be).
    """
    try:
        raw = dump_parsed(value)
    except ValueError as exc:
        raise NotJSON(unwritable(exc, "it"), what) from None
    except RecursionError:  # deeper than the writer can follow, so far past the limit
        raise too_deep(value_nesting(value), what) from None
    check_depth(raw, what)
    return raw


class MemoryService:
    """Builds the operation for each request, after the caller's limits are applied."""

    def __init__(
        self, store: Store, held: HeldMemory | None = None, scripts: Scripts | None = None
    ) -> None:
        self.store = store
        self.clock = store.clock
        # Each namespace's Lua scripts and sandbox (EVAL), kept apart from every other's.
        self.scripts = Scripts() if scripts is None else scripts
        # What the server holds for clients, and its maxmemory (none unless given).
        self.held = HeldMemory(store_bytes=store.memory_bytes) if held is None else held

    def for_caller(
        self,
        kind: Callable[Concatenate[str, _Args], _Op],
        p: Principal,
        *args: _Args.args,
        **kwargs: _Args.kwargs,
    ) -> _Op:
        """The operation ``kind`` in the caller's namespace, under the caller's storage quota.

        Every operation the service builds is made here, so the quota reaches each one
        that can grow a namespace (``Op.GROWS``) without a builder having to remember it;
        an unlimited quota is left off, and the operation skips the check altogether.
        Such an operation is also refused while the server is over its maxmemory.
        """
        op = kind(p.namespace, *args, **kwargs)
        if op.GROWS:
            self.held.check()
            quota = p.limits.quota
            if quota.limited:
                op.quota = quota
        return op

    # -- rules ---------------------------------------------------------------------
    @staticmethod
    def check_payload(p: Principal, value: bytes) -> None:
        """Refuse a value over the caller's payload limit."""
        MemoryService.check_size(p, len(value))

    @staticmethod
    def check_size(p: Principal, size: int) -> None:
        """Refuse a value of ``size`` bytes over the caller's payload limit, before it is made.

        SETRANGE and SETBIT name an offset: the value they would write is at least that
        long, so it is refused before a byte of it is allocated.
        """
        ops.check_payload(size, p.limits.max_payload)

    def expiry(self, p: Principal, ttl_ms: int | None) -> int:
        """Absolute expiry for a relative TTL (None: the caller's default), within the maximum."""
        limits = p.limits
        if ttl_ms is None:
            ttl_ms = limits.default_ttl_ms
        else:
            ttl_ms = capped_ttl(ttl_ms, limits.max_ttl_ms, limits.clamp_ttl)
        return self.clock() + ttl_ms

    def expiry_at(self, p: Principal, at_ms: int) -> int:
        """An absolute expiry (EXAT/PXAT), within the maximum TTL as :meth:`expiry` is."""
        now = self.clock()
        limits = p.limits
        if at_ms - now <= limits.max_ttl_ms:
            return at_ms
        return now + capped_ttl(at_ms - now, limits.max_ttl_ms, limits.clamp_ttl)

    def persist_expiry(self, p: Principal) -> int:
        """What PERSIST (and GETEX PERSIST) sets: the maximum TTL, when TTLs are clamped.

        Every key in Stash expires, so where a TTL past the maximum is refused, a key
        without one is refused too (PersistRefused).
        """
        if not p.limits.clamp_ttl:
            raise PersistRefused(p.limits.max_ttl_ms // 1000)
        return self.clock() + p.limits.max_ttl_ms

    # -- strings and keys ----------------------------------------------------------
    def get(self, p: Principal, key: bytes) -> ops.Get:
        """GET, RECALL and every read of one string (WRONGTYPE for another kind)."""
        return self.for_caller(ops.Get, p, key)

    def lookup(self, p: Principal, key: bytes) -> ops.Get:
        """TTL, TYPE and every read of a key's metadata, whatever kind it holds."""
        return self.for_caller(ops.Get, p, key, 0)

    def get_many(self, p: Principal, keys: list[bytes]) -> ops.GetMany:
        """MGET, EXISTS."""
        return self.for_caller(ops.GetMany, p, keys)

    def set(
        self,
        p: Principal,
        key: bytes,
        value: bytes,
        *,
        expires_at: int | None = None,
        cond: bytes = b"",
        keep_ttl: bool = False,
        want_old: bool = False,
    ) -> ops.Set:
        """SET family; ``expires_at`` None means the caller's default TTL."""
        self.check_payload(p, value)
        if expires_at is None:
            expires_at = self.expiry(p, None)
        return self.for_caller(
            ops.Set, p, key, value, expires_at, cond=cond, keep_ttl=keep_ttl, want_old=want_old
        )

    def set_many(
        self, p: Principal, pairs: list[tuple[bytes, bytes]], *, only_new: bool = False
    ) -> ops.SetMany:
        """MSET (MSETNX with ``only_new``), all with the default TTL."""
        for _, value in pairs:
            self.check_payload(p, value)
        return self.for_caller(ops.SetMany, p, pairs, self.expiry(p, None), only_new=only_new)

    def delete(self, p: Principal, keys: list[bytes]) -> ops.Delete:
        """DEL, UNLINK."""
        return self.for_caller(ops.Delete, p, keys)

    def forget(self, p: Principal, keys: list[bytes]) -> ops.Forget:
        """FORGET, and the HTTP door's DELETE /forget."""
        return self.for_caller(ops.Forget, p, keys)

    def getdel(self, p: Principal, key: bytes) -> ops.GetDel:
        """GETDEL."""
        return self.for_caller(ops.GetDel, p, key)

    def getex(self, p: Principal, key: bytes, expires_at: int | None) -> ops.GetEx:
        """GETEX; ``expires_at`` already checked by :meth:`expiry`/:meth:`expiry_at`."""
        return self.for_caller(ops.GetEx, p, key, expires_at)

    def expire(self, p: Principal, key: bytes, when: int, cond: bytes = b"") -> ops.Expire:
        """EXPIRE family with an absolute time; the maximum is checked when it runs."""
        limits = p.limits
        return self.for_caller(
            ops.Expire, p, key, when, cond, limits.max_ttl_ms, clamp_ttl=limits.clamp_ttl
        )

    def incr(self, p: Principal, key: bytes, delta: int) -> ops.IncrBy:
        """INCR family; a new counter gets the default TTL."""
        return self.for_caller(ops.IncrBy, p, key, delta, self.expiry(p, None))

    def append(self, p: Principal, key: bytes, value: bytes) -> ops.Append:
        """APPEND, within the payload limit."""
        self.check_payload(p, value)
        return self.for_caller(
            ops.Append, p, key, value, self.expiry(p, None), p.limits.max_payload
        )

    # -- containers: hashes, lists, sets ---------------------------------------------
    def inspect(
        self, p: Principal, key: bytes, kind: int, look: Callable[[bytes | None], Any]
    ) -> ops.Inspect:
        """A read of a container of ``kind`` (HGET, LRANGE, SMEMBERS...)."""
        return self.for_caller(ops.Inspect, p, key, kind, look)

    def inspect_many(
        self,
        p: Principal,
        keys: list[bytes],
        kinds: tuple[int, ...],
        look: Callable[[list[tuple[int, bytes] | None]], Any],
    ) -> ops.InspectMany:
        """A read of several containers, each of one of ``kinds`` (ZUNION, ZINTER...)."""
        return self.for_caller(ops.InspectMany, p, keys, kinds, look)

    def edit_first(
        self,
        p: Principal,
        keys: list[bytes],
        kind: int,
        edit: Callable[[bytes], tuple[bytes | None, Any]],
    ) -> ops.EditFirst:
        """A change to the first of ``keys`` that holds a container of ``kind`` (ZMPOP)."""
        return self.for_caller(
            ops.EditFirst, p, keys, kind, edit, self.expiry(p, None), p.limits.max_payload
        )

    def store_from(
        self,
        p: Principal,
        dst: bytes,
        sources: list[bytes],
        kinds: tuple[tuple[int, ...], int],
        edit: Callable[[list[tuple[int, bytes] | None]], tuple[bytes | None, Any]],
    ) -> ops.StoreFrom:
        """A container replaced by one made from others (ZUNIONSTORE): the default TTL."""
        return self.for_caller(
            ops.StoreFrom,
            p,
            dst,
            sources,
            kinds,
            edit,
            self.expiry(p, None),
            p.limits.max_payload,
        )

    def edit(
        self,
        p: Principal,
        key: bytes,
        kind: int,
        edit: Callable[[bytes | None], tuple[Any, Any]],
    ) -> ops.Edit:
        """A change to a container of ``kind``: a new one gets the default TTL."""
        return self.for_caller(
            ops.Edit, p, key, kind, edit, self.expiry(p, None), p.limits.max_payload
        )

    def edit_two(
        self,
        p: Principal,
        key: bytes,
        dst: bytes,
        kinds: tuple[int, int],
        edit: Callable[[bytes | None, bytes | None], tuple[Any, Any, Any]],
    ) -> ops.EditTwo:
        """A change to two containers at once (LMOVE, SMOVE)."""
        return self.for_caller(
            ops.EditTwo, p, key, dst, kinds, edit, self.expiry(p, None), p.limits.max_payload
        )

    def rename(self, p: Principal, key: bytes, dst: bytes, *, nx: bool = False) -> ops.Rename:
        """RENAME (RENAMENX with ``nx``) inside the caller's namespace."""
        return self.for_caller(ops.Rename, p, key, dst, nx=nx)

    def copy(self, p: Principal, key: bytes, dst: bytes, *, replace: bool = False) -> ops.Copy:
        """COPY inside the caller's namespace, kind and expiry included."""
        return self.for_caller(ops.Copy, p, key, dst, replace=replace)

    def scan(
        self,
        p: Principal,
        cursor: int,
        count: int = 10,
        pattern: bytes | None = None,
        kind: bytes | None = None,
    ) -> ops.Scan:
        """SCAN and each page of KEYS: at most SCAN_COUNT_MAX entries examined."""
        if pattern is not None:
            check_pattern(pattern)
        return self.for_caller(ops.Scan, p, cursor, min(count, SCAN_COUNT_MAX), pattern, kind)

    def random_key(self, p: Principal) -> ops.RandomKey:
        """RANDOMKEY."""
        return self.for_caller(ops.RandomKey, p)

    def count(self, p: Principal) -> ops.Count:
        """DBSIZE."""
        return self.for_caller(ops.Count, p)

    def usage(self, p: Principal) -> ops.Usage:
        """Live keys, and the keys and bytes the caller's quota counts."""
        return self.for_caller(ops.Usage, p)

    def keyspace(self, p: Principal) -> ops.Keyspace:
        """INFO keyspace: the usage, and the average time left of the caller's keys."""
        return self.for_caller(ops.Keyspace, p)

    def flush(self, p: Principal) -> ops.Flush:
        """FLUSHDB/FLUSHALL: the caller's namespace only."""
        return self.for_caller(ops.Flush, p)

    # -- stash commands ------------------------------------------------------------
    def stash(self, p: Principal, raw: bytes, ttl_ms: int | None = None) -> ops.Create:
        """STASH: validate the JSON and store it under a new id."""
        self.check_payload(p, raw)
        check_json(raw)
        return self.for_caller(ops.Create, p, raw, self.expiry(p, ttl_ms), POOLS.maker(p.namespace))

    def stash_value(
        self, p: Principal, value: object, ttl_seconds: int | None = None
    ) -> ops.Create:
        """STASH of an already parsed JSON value (the HTTP door), stored in compact form."""
        raw = encode_json(value)
        self.check_payload(p, raw)
        ttl_ms = None if ttl_seconds is None else self.ttl_ms(p, ttl_seconds)
        return self.for_caller(ops.Create, p, raw, self.expiry(p, ttl_ms), POOLS.maker(p.namespace))

    def ttl_ms(self, p: Principal, seconds: int) -> int:
        """A TTL in whole seconds as ms, refused outside 1..maximum."""
        if seconds <= 0:
            raise TTLNotPositive(seconds, p.limits.max_ttl_ms // 1000)
        limits = p.limits
        return capped_ttl(seconds * 1000, limits.max_ttl_ms, limits.clamp_ttl)

    def update(
        self,
        p: Principal,
        key: bytes,
        *,
        data: bytes | None = None,
        merge: bytes | None = None,
        extend_seconds: int = 0,
        if_version: int | None = None,
        entry: bool = False,
    ) -> ops.Update:
        """UPDATE: replace or merge-patch the JSON, extend the TTL, optionally on a version.

        The result is the ms left afterwards; with ``entry``, the operation is an
        :class:`ops.UpdateEntry`, whose result is the entry written (UPDATE WITHMETA).
        """
        self._check_update(data is not None, merge is not None, extend_seconds)
        patch: Any = None
        if data is not None:
            self.check_payload(p, data)
            check_json(data)
        if merge is not None:
            self.check_payload(p, merge)
            patch = load_json(merge, "merge patch")
        return self._update(
            ops.UpdateEntry if entry else ops.Update,
            p,
            key,
            data=data,
            patch=patch,
            has_patch=merge is not None,
            extend_seconds=extend_seconds,
            if_version=if_version,
        )

    def update_value(
        self,
        p: Principal,
        key: bytes,
        *,
        data: object = None,
        has_data: bool = False,
        merge: object = None,
        has_merge: bool = False,
        extend_seconds: int = 0,
        if_version: int | tuple[int, ...] | None = None,
    ) -> ops.UpdateEntry:
        """UPDATE with already parsed JSON (the HTTP door); the result is the entry written.

        ``has_data``/``has_merge`` say whether the field was given at all, since JSON
        ``null`` is a value like any other (``data: null`` stores null, a ``null`` merge
        patch replaces the document with null, as RFC 7396 says).
        """
        raw: bytes | None = None
        if has_data:
            raw = encode_json(data)
            self.check_payload(p, raw)
        if has_merge:
            self.check_payload(p, encode_json(merge, "merge patch"))
        self._check_update(has_data, has_merge, extend_seconds)
        return self._update(
            ops.UpdateEntry,
            p,
            key,
            data=raw,
            patch=merge,
            has_patch=has_merge,
            extend_seconds=extend_seconds,
            if_version=if_version,
        )

    @staticmethod
    def _check_update(has_data: bool, has_patch: bool, extend_seconds: int) -> None:
        """The rules every UPDATE follows, whichever door it came through."""
        if has_data and has_patch:
            raise DataAndMerge
        if not has_data and not has_patch and not extend_seconds:
            raise EmptyUpdate
        if extend_seconds < 0:
            raise BadExtend(extend_seconds)

    def _update(
        self,
        kind: type[_Update],
        p: Principal,
        key: bytes,
        *,
        data: bytes | None,
        patch: object,
        has_patch: bool,
        extend_seconds: int,
        if_version: int | tuple[int, ...] | None,
    ) -> _Update:
        """The operation, once :meth:`_check_update` passed; EXTEND within the maximum TTL."""
        limits = p.limits
        extend_ms = capped_ttl(extend_seconds * 1000, limits.max_ttl_ms, limits.clamp_ttl)
        return self.for_caller(
            kind,
            p,
            key,
            data=data,
            patch=patch,
            has_patch=has_patch,
            extend_ms=extend_ms,
            if_version=if_version,
            max_ttl_ms=limits.max_ttl_ms,
            max_payload=limits.max_payload,
            clamp_ttl=limits.clamp_ttl,
        )

    # -- leases ----------------------------------------------------------------------
    def lease_claim(
        self, p: Principal, key: bytes, owner: bytes, ttl_seconds: int
    ) -> ops.LeaseClaim:
        """LEASE CLAIM: ``owner`` takes ``key`` for a TTL within the caller's limits."""
        check_owner(owner)
        return self.for_caller(ops.LeaseClaim, p, key, owner, self.ttl_ms(p, ttl_seconds))

    def lease_renew(
        self, p: Principal, key: bytes, owner: bytes, token: int | None, ttl_seconds: int
    ) -> ops.LeaseRenew:
        """LEASE RENEW: the owner's lease (with ``token``, when given) gets a new TTL."""
        check_owner(owner)
        return self.for_caller(ops.LeaseRenew, p, key, owner, token, self.ttl_ms(p, ttl_seconds))

    def lease_release(
        self, p: Principal, key: bytes, owner: bytes, token: int | None
    ) -> ops.LeaseRelease:
        """LEASE RELEASE: the owner's lease (with ``token``, when given) is let go."""
        check_owner(owner)
        return self.for_caller(ops.LeaseRelease, p, key, owner, token)

    def lease_info(self, p: Principal, key: bytes) -> ops.Get:
        """LEASE INFO: the lease entry under ``key`` (WRONGTYPE for another kind)."""
        return self.for_caller(ops.Get, p, key, Kind.LEASE)

    def page(
        self, p: Principal, cursor: int, limit: int = PAGE_DEFAULT, pattern: bytes | None = None
    ) -> ops.Page:
        """A page of the caller's entries with their metadata, the keys matching ``pattern``.

        The listings of GET /stash and MEMORIES.
        """
        if pattern is not None:
            check_pattern(pattern)
        if not 1 <= limit <= PAGE_MAX:
            raise InvalidRequest(
                f"limit must be between 1 and {PAGE_MAX}, got {limit}",
                field="limit",
                minimum=1,
                maximum=PAGE_MAX,
                requested=limit,
            )
        # Cursors are row ids, 64-bit signed: a larger number was never returned.
        if not 0 <= cursor <= ops.INT64_MAX:
            raise InvalidRequest("cursor must be a value returned as next_cursor", field="cursor")
        return self.for_caller(ops.Page, p, cursor, limit, pattern)

    @staticmethod
    def ping() -> ops.Ping:
        """A health check that goes through the store like any operation."""
        return ops.Ping("")
