"""Operations on the entries of given keys: the reads and writes of strings, ids and expiry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd.errors import (
    Conflict,
    IncrOverflow,
    NotJSON,
)
from stashd.jsonmerge import merge_patch
from stashd.jsontext import dump_parsed, load_stored, unwritable
from stashd.quota import grows, growth
from stashd.types import Entry, Kind, View

if TYPE_CHECKING:
    from collections.abc import Callable

from stashd.ops.base import (
    INT64_MAX,
    INT64_MIN,
    NO_WORK,
    OnKeys,
    Op,
    Slot,
    Touch,
    capped_ttl,
    check_payload,
    check_put,
    entry_work,
    next_version,
    parse_int64,
    read_kind,
    read_string,
)


class Get(Op):
    """The live entry under a key, or None (GET, RECALL, STRLEN; TTL, TYPE of any kind).

    ``kind`` is the kind the command reads (WRONGTYPE for another), 0 for any.
    """

    __slots__ = ("kind",)
    WRITES = False
    TOUCH = Touch.READ
    ONE_READ = True
    WORKS = True

    def __init__(self, ns: str, key: bytes, kind: int = Kind.STRING) -> None:
        super().__init__(ns, key)
        self.kind = kind

    def run(self, view: View, now: int) -> Entry | None:
        """Read one key."""
        if self.kind:
            return read_kind(view, self.ns, self.key, now, self.kind)
        return view.get(self.ns, self.key, now)

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - Entry | None | error
        """The value read back."""
        return entry_work(result)


class GetMany(OnKeys):
    """Entries for several keys, None where missing (MGET, EXISTS)."""

    __slots__ = ("keys",)
    WRITES = False
    WORKS = True
    TOUCH = Touch.READ

    def __init__(self, ns: str, keys: list[bytes]) -> None:
        super().__init__(ns)
        self.keys = keys

    def run(self, view: View, now: int) -> list[Entry | None]:
        """Read each key."""
        return [view.get(self.ns, k, now) for k in self.keys]

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - [Entry | None] | error
        """The values read back."""
        if type(result) is not list:
            return NO_WORK
        return 0, sum(len(e.value) for e in result if e is not None)


class Set(Op):
    """SET and its relatives: conditional write, optional old value, TTL or KEEPTTL.

    ``expires_at`` is absolute; with ``keep_ttl`` an existing key keeps its expiry and a
    new one gets ``expires_at`` (the caller's default TTL). The result is
    ``(written, old_entry)``.
    """

    __slots__ = ("cond", "expires_at", "keep_ttl", "value", "want_old")
    GROWS = True

    def __init__(
        self,
        ns: str,
        key: bytes,
        value: bytes,
        expires_at: int,
        *,
        cond: bytes = b"",
        keep_ttl: bool = False,
        want_old: bool = False,
    ) -> None:
        super().__init__(ns, key)
        self.value = value
        self.expires_at = expires_at
        self.cond = cond  # b"", b"NX" or b"XX"
        self.keep_ttl = keep_ttl
        # SET ... GET and GETSET return the old value, so it must be a string; a plain
        # SET replaces a key of any kind, as in Redis.
        self.want_old = want_old

    def run(self, view: View, now: int) -> tuple[bool, Entry | None]:
        """Write unless the NX/XX condition says no."""
        ns, key = self.ns, self.key
        old = read_string(view, ns, key, now) if self.want_old else view.get(ns, key, now)
        cond = self.cond
        if cond and (old is None) is (cond == b"XX"):  # NX found a key, or XX none
            return False, old
        if self.quota is not None:
            check_put(view, ns, key, old, self.value, self.quota)
        expires = old.expires_at if self.keep_ttl and old is not None else self.expires_at
        view.put(ns, key, Entry(self.value, expires, next_version(old)))
        return True, old


class SetMany(Op):
    """MSET and MSETNX: every pair written with one expiry, all or nothing.

    The quota is checked once, for the growth of the whole batch (a key given twice
    counts with its last value), so either every pair is written or none. With
    ``only_new`` (MSETNX) nothing is written when any of the keys exists, of any kind.
    The result says whether the pairs were written.
    """

    __slots__ = ("expires_at", "only_new", "pairs")
    GROWS = True

    def __init__(
        self,
        ns: str,
        pairs: list[tuple[bytes, bytes]],
        expires_at: int,
        *,
        only_new: bool = False,
    ) -> None:
        super().__init__(ns)
        self.pairs = pairs
        self.expires_at = expires_at
        self.only_new = only_new

    def run(self, view: View, now: int) -> bool:
        """Read every key, check the batch's growth, then write each pair."""
        ns = self.ns
        olds: dict[bytes, Entry | None] = {}
        for key, _ in self.pairs:
            if key not in olds:
                olds[key] = view.get(ns, key, now)
        if self.only_new and any(old is not None for old in olds.values()):
            return False
        quota = self.quota
        if quota is not None:
            add_keys = add_bytes = 0
            for key, value in dict(self.pairs).items():
                old = olds[key]
                keys, size = growth(key, None if old is None else old.value, value)
                add_keys += keys
                add_bytes += size
            if grows(add_keys, add_bytes):
                view.check_quota(ns, add_keys, add_bytes, quota)
        for key, value in self.pairs:
            old = olds[key]
            entry = Entry(value, self.expires_at, next_version(old))
            view.put(ns, key, entry)
            olds[key] = entry  # a key given again goes one more version up
        return True

    def slots(self) -> list[Slot]:
        """Each key written."""
        ns = self.ns
        return [(ns, key) for key, _ in self.pairs]


class Create(Op):
    """STASH: store a value under a new id that no live key uses; the result is the id."""

    __slots__ = ("expires_at", "make_id", "value")
    GROWS = True

    #: Fresh 8-character ids collide only when a namespace is very full; after this many
    #: tries the id falls back to a UUID, which does not collide.
    TRIES: Final = 5

    def __init__(
        self,
        ns: str,
        value: bytes,
        expires_at: int,
        make_id: Callable[[int], bytes],
    ) -> None:
        super().__init__(ns)
        self.value = value
        self.expires_at = expires_at
        # make_id(attempt) -> id; attempt TRIES gives a UUID. Each attempt's id is drawn
        # once, so running again (a store fetched the first id ahead, or tried to insert
        # it without reading) tries the same ids.
        self.make_id = FirstIds(make_id)

    def run(self, view: View, now: int) -> bytes:
        """Pick an unused id and write."""
        for attempt in range(self.TRIES + 1):
            key = self.make_id(attempt)
            if view.get(self.ns, key, now) is None:
                if self.quota is not None:
                    check_put(view, self.ns, key, None, self.value, self.quota)
                view.put(self.ns, key, self.entry())
                return key
        msg = "could not find a free id"  # pragma: no cover - a UUID never collides
        raise RuntimeError(msg)  # pragma: no cover

    def entry(self) -> Entry:
        """The entry it writes: a new one."""
        return Entry(self.value, self.expires_at, next_version(None))

    def slots(self) -> list[Slot]:
        """The first id it will try."""
        return [(self.ns, self.make_id(0))]

    def fresh(self) -> tuple[bytes, Entry]:
        """The first id, and the entry."""
        return self.make_id(0), self.entry()


class FirstIds:
    """Create's id source, remembered per attempt: ``made`` holds the ids drawn, by attempt."""

    __slots__ = ("made", "make")

    def __init__(self, make: Callable[[int], bytes]) -> None:
        self.make = make
        self.made: dict[int, bytes] = {}

    def __call__(self, attempt: int) -> bytes:
        """The id of ``attempt``, drawn once."""
        made = self.made.get(attempt)
        if made is None:
            made = self.made[attempt] = self.make(attempt)
        return made


class Delete(Op):
    """DEL, UNLINK, FORGET: the result is how many live keys were removed."""

    __slots__ = ("gone", "keys")

    def __init__(self, ns: str, keys: list[bytes]) -> None:
        super().__init__(ns)
        self.keys = keys
        self.gone: list[bytes] = []  # the keys removed, once it has run (notifications)

    def run(self, view: View, now: int) -> int:
        """Remove each key once."""
        ns = self.ns
        self.gone = gone = [k for k in self.keys if view.delete(ns, k, now)]
        return len(gone)

    def slots(self) -> list[Slot]:
        """Each key."""
        ns = self.ns
        return [(ns, key) for key in self.keys]


class Forget(Delete):
    """FORGET: DEL by its Stash name, so its event says what happened to the memories."""

    __slots__ = ()


class GetDel(Op):
    """GETDEL: the entry that was removed, or None."""

    __slots__ = ()

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - Entry | None | error
        """The value read back."""
        return entry_work(result)

    def run(self, view: View, now: int) -> Entry | None:
        """Read, then remove."""
        old = read_string(view, self.ns, self.key, now)
        if old is not None:
            view.delete(self.ns, self.key, now)
        return old


class GetEx(Op):
    """GETEX: the entry, with its expiry moved to ``expires_at`` (None: unchanged).

    An ``expires_at`` in the past deletes the key after reading it, as Redis does.
    """

    __slots__ = ("expires_at",)

    def __init__(self, ns: str, key: bytes, expires_at: int | None) -> None:
        super().__init__(ns, key)
        self.expires_at = expires_at

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - Entry | None | error
        """The value read back."""
        return entry_work(result)

    def run(self, view: View, now: int) -> Entry | None:
        """Read and maybe change the expiry."""
        old = read_string(view, self.ns, self.key, now)
        if old is None or self.expires_at is None:
            return old
        if self.expires_at <= now:
            view.delete(self.ns, self.key, now)
        else:
            view.put(self.ns, self.key, Entry(old.value, self.expires_at, old.version, old.kind))
        return old


class Expire(Op):
    """The EXPIRE family: result 1 when the expiry was set (or the key deleted), else 0.

    ``cond`` is NX, XX, GT or LT. Every Stash key has an expiry, so NX never applies and
    XX always does. A time not in the future deletes the key, as in Redis. The maximum
    TTL is checked against the clock of this run, so nothing changes when it is refused.
    """

    __slots__ = ("clamp_ttl", "cond", "max_ttl_ms", "when")

    def __init__(
        self,
        ns: str,
        key: bytes,
        when: int,
        cond: bytes,
        max_ttl_ms: int,
        *,
        clamp_ttl: bool = False,
    ) -> None:
        super().__init__(ns, key)
        self.when = when
        self.cond = cond
        self.max_ttl_ms = max_ttl_ms
        self.clamp_ttl = clamp_ttl

    def run(self, view: View, now: int) -> int:
        """Change the expiry if the condition holds."""
        old = view.get(self.ns, self.key, now)
        if old is None:
            return 0
        cond = self.cond
        if (
            cond == b"NX"
            or (cond == b"GT" and self.when <= old.expires_at)
            or (cond == b"LT" and self.when >= old.expires_at)
        ):
            return 0
        if self.when <= now:
            view.delete(self.ns, self.key, now)
            return 1
        when = now + capped_ttl(self.when - now, self.max_ttl_ms, self.clamp_ttl)
        view.put(self.ns, self.key, Entry(old.value, when, old.version, old.kind))
        return 1


class IncrBy(Op):
    """INCR/INCRBY/DECR/DECRBY: the new value; a new key starts at 0 with the default TTL."""

    __slots__ = ("default_expires_at", "delta")
    GROWS = True

    def __init__(self, ns: str, key: bytes, delta: int, default_expires_at: int) -> None:
        super().__init__(ns, key)
        self.delta = delta
        self.default_expires_at = default_expires_at

    def run(self, view: View, now: int) -> int:
        """Add, refusing non-integers and 64-bit overflow."""
        old = read_string(view, self.ns, self.key, now)
        current = 0 if old is None else parse_int64(old.value)
        result = current + self.delta
        if not INT64_MIN <= result <= INT64_MAX:
            raise IncrOverflow
        value = b"%d" % result
        if self.quota is not None:
            check_put(view, self.ns, self.key, old, value, self.quota)
        expires = self.default_expires_at if old is None else old.expires_at
        view.put(self.ns, self.key, Entry(value, expires, next_version(old)))
        return result


class Append(Op):
    """APPEND: the new length; refused (nothing changed) when it would pass the payload limit."""

    __slots__ = ("default_expires_at", "max_payload", "value")
    GROWS = True

    def __init__(
        self, ns: str, key: bytes, value: bytes, default_expires_at: int, max_payload: int
    ) -> None:
        super().__init__(ns, key)
        self.value = value
        self.default_expires_at = default_expires_at
        self.max_payload = max_payload

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - the new length | error
        """The old value, read and written again with the request's bytes after it."""
        if type(result) is not int:
            return NO_WORK
        return 0, 2 * (result - len(self.value))

    def run(self, view: View, now: int) -> int:
        """Concatenate."""
        old = read_string(view, self.ns, self.key, now)
        value = self.value if old is None else old.value + self.value
        check_payload(len(value), self.max_payload)
        if self.quota is not None:
            check_put(view, self.ns, self.key, old, value, self.quota)
        expires = self.default_expires_at if old is None else old.expires_at
        view.put(self.ns, self.key, Entry(value, expires, next_version(old)))
        return len(value)


class Update(Op):
    """UPDATE: replace (DATA) or merge-patch (MERGE) the JSON, extend the TTL, check version.

    The result is the remaining TTL in ms afterwards, or None when the key is missing.
    ``patch`` is already parsed JSON; the stored value must be JSON for a merge.
    ``stored_bytes`` is the work its request did not show, for the rate limit
    (:mod:`stashd.cost`): the stored value it read, and a merged document it wrote,
    counted as they are handled, so an update refused halfway still counts them.
    """

    __slots__ = (
        "clamp_ttl",
        "data",
        "extend_ms",
        "if_version",
        "max_payload",
        "max_ttl_ms",
        "patch",
        "stored_bytes",
    )
    GROWS = True

    def __init__(
        self,
        ns: str,
        key: bytes,
        *,
        data: bytes | None,
        patch: object,
        has_patch: bool,
        extend_ms: int,
        if_version: int | tuple[int, ...] | None,
        max_ttl_ms: int,
        max_payload: int,
        clamp_ttl: bool = False,
    ) -> None:
        super().__init__(ns, key)
        self.clamp_ttl = clamp_ttl
        self.data = data
        self.patch = _NO_PATCH if not has_patch else patch
        self.extend_ms = extend_ms
        self.if_version = if_version
        self.max_ttl_ms = max_ttl_ms
        self.max_payload = max_payload
        self.stored_bytes = 0

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401, ARG002 - any result
        """The stored document read and a merged one written, even when refused halfway."""
        return 0, self.stored_bytes

    def run(self, view: View, now: int) -> int | None:
        """Check, compute the new value and expiry, then write once; the TTL left in ms."""
        entry = self.apply(view, now)
        return None if entry is None else entry.expires_at - now

    def apply(self, view: View, now: int) -> Entry | None:
        """The update itself: the entry as written, or None when the key is missing."""
        old = read_string(view, self.ns, self.key, now)
        if old is None:
            return None
        self.stored_bytes = len(old.value)  # a store running it again counts it once
        wanted = self.if_version
        if wanted is not None:
            if isinstance(wanted, tuple):
                if old.version not in wanted:
                    raise Conflict(old.version, wanted[0])
            elif old.version != wanted:
                raise Conflict(old.version, wanted)
        expires = old.expires_at
        if self.extend_ms:
            expires += self.extend_ms
            if expires - now > self.max_ttl_ms:
                expires = now + capped_ttl(expires - now, self.max_ttl_ms, self.clamp_ttl)
        value = old.value
        version = old.version
        if self.data is not None:
            value = self.data
            version = next_version(old)
        elif self.patch is not _NO_PATCH:
            merged = merge_patch(load_stored(old.value), self.patch)
            try:
                value = dump_parsed(merged)
            except ValueError as exc:
                raise NotJSON(unwritable(exc, "the merged document"), "merge patch") from None
            self.stored_bytes += len(value)
            check_payload(len(value), self.max_payload)
            version = next_version(old)
        if self.quota is not None and value is not old.value:
            check_put(view, self.ns, self.key, old, value, self.quota)
        entry = Entry(value, expires, version)
        view.put(self.ns, self.key, entry)
        return entry


class UpdateEntry(Update):
    """UPDATE for a door that reports the new expiry and version: the entry as written."""

    __slots__ = ()

    def run(self, view: View, now: int) -> Entry | None:  # type: ignore[override]
        """Update, returning the entry (None when the key is missing)."""
        return self.apply(view, now)


class _NoPatch:
    """Marks an UPDATE without MERGE (a JSON ``null`` patch is a real patch)."""


_NO_PATCH: Final = _NoPatch()
