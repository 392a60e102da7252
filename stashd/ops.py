"""Atomic operations on one namespace: the data semantics every store runs the same way.

An operation is built by the memory service (which has already applied the caller's
limits and resolved relative TTLs) and run by a store against its :class:`View` inside
one atomic unit. It reads, decides, and only then writes, so an operation that raises
has changed nothing. Results are domain values (entries, counts); the command layer
turns them into wire replies.

Each operation also declares what it touches, so stores plan it without knowing its
class: :class:`Touch` (a plain read of its keys, a write of its keys, or a whole
namespace), :meth:`Op.slots` and :meth:`Op.usage_read` (what it will read),
:meth:`Op.fresh` (one new entry a store may insert without reading) and
:meth:`Op.work` (what its request did not show, for the rate limit).

(This module is longer than most, about 1,100 lines, because it is the one place the
data semantics live: every operation, the version rule and the undo that transactions
run on are read together, and splitting them would spread one rule over modules.)
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

from stashd import log
from stashd.errors import (
    Conflict,
    IncrOverflow,
    InvalidTTL,
    NoSuchKey,
    NotInteger,
    NotJSON,
    PayloadTooLarge,
    StashError,
    TransactionAborted,
)
from stashd.glob import compile_glob
from stashd.jsonmerge import merge_patch
from stashd.jsontext import dump_parsed, load_stored, unwritable
from stashd.quota import check, grows, growth
from stashd.types import Entry, View

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.types import Quota

logger = log.get("stashd.ops")

INT64_MAX: Final = 2**63 - 1
#: The work of an operation that did none beyond its request: (entries walked, stored bytes).
NO_WORK: Final = (0, 0)
INT64_MIN: Final = -(2**63)


Slot = tuple[str, bytes]  # (namespace, key)


def ttl_seconds_up(ms: int) -> int:
    """Milliseconds as whole seconds, rounded up, for error texts that speak in seconds."""
    return -(-ms // 1000)


def next_version(old: Entry | None) -> int:
    """The version rule, once: 1 for a key created, one up on every change of its value."""
    return 1 if old is None else old.version + 1


class Touch(enum.Enum):
    """What an operation touches, so a store can plan it without knowing its class."""

    #: Reads its keys (:meth:`Op.slots`) and nothing else, writes nothing: its result is
    #: what its keys hold, so a store may answer it with its own read (GET, MGET, PING).
    READ = "read"
    #: Reads and writes its keys (and its namespace's usage, under a quota), and nothing
    #: of the namespace beyond them.
    WRITE = "write"
    #: Reads or clears a whole namespace (SCAN, KEYS, DBSIZE, INFO, FLUSHDB, listings):
    #: a store runs it after the operations before it have landed, and alone.
    SPACE = "space"


class Op:
    """Base of all operations: ``run`` is called by a store inside one atomic unit.

    ``quota`` is the namespace's storage quota, attached by the memory service to the
    operations that can grow a namespace (``GROWS``); None means no check, so an
    operation without one pays a single attribute test. An operation with one asks its
    view (:meth:`~stashd.types.View.check_quota`) before its first write, with the
    growth worked out from the entries it has already read.
    """

    __slots__ = ("key", "ns", "quota", "touch", "writes")
    #: False for operations that only read, so a store may skip a write transaction.
    writes: bool
    #: What it touches (its keys only, read or written, or a whole namespace), so a store
    #: plans it by this declaration, never by its class.
    touch: Touch

    def __init__(self, ns: str, key: bytes = b"") -> None:
        self.ns = ns
        self.key = key
        self.writes = type(self).WRITES
        self.touch = type(self).TOUCH
        self.quota: Quota | None = None

    #: Class default for :attr:`writes`.
    WRITES: bool = True
    #: Class default for :attr:`touch`.
    TOUCH: Touch = Touch.WRITE
    #: False for an operation that names no key of its own (``key`` is unused; the empty
    #: key is a key like any other).
    KEYED: bool = True
    #: True for an operation whose running can show work its request did not
    #: (:meth:`work`); False lets the rate limit skip asking.
    WORKS: bool = False
    #: True for an operation whose writes can make its namespace hold more keys or
    #: bytes: the memory service gives those the caller's quota.
    GROWS: bool = False
    #: True for an operation whose whole work is reading one row with one statement: a
    #: store may run it without opening a transaction of its own, since a single
    #: statement already reads one consistent snapshot (SQLite's direct path saves its
    #: BEGIN and COMMIT this way).
    ONE_READ: bool = False

    def run(self, view: View, now: int) -> Any:  # noqa: ANN401 - each op has its own result
        """Apply the operation; raise a StashError before writing anything to refuse it."""
        raise NotImplementedError

    def slots(self) -> list[Slot]:
        """The (namespace, key) pairs it will read or write, as far as known before it runs.

        A store may fetch them ahead; a key found only while running (an id that
        collided) is asked of the view like any other.
        """
        return [(self.ns, self.key)] if self.KEYED else []

    def usage_read(self) -> list[str]:
        """The namespaces whose usage it will ask for: its own when a quota limits it."""
        return [] if self.quota is None else [self.ns]

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401, ARG002 - any result
        """What running it did that its request did not show: (entries walked, stored bytes).

        Stored bytes are those read back or written beyond the request's own (a value
        read, a document merged); ``result`` is what it returned, the error it was
        refused with, or None before it has one. :mod:`stashd.cost` turns this into rate
        limit units; only operations with ``WORKS`` ever learn any.
        """
        return NO_WORK

    def fresh(self) -> tuple[bytes, Entry] | None:
        """Its one write when that is a new entry under a key it draws, or None.

        For an operation whose whole work is writing one entry under a key no live entry
        may use (STASH), a store may insert the entry without reading first, and run the
        operation the general way only when the key turns out to be in use (the key
        drawn again then is the same).
        """
        return None

    @property
    def size(self) -> int:
        """How many keys it reads or writes: a measure of its work (one for most)."""
        return 1


def entry_work(result: object) -> tuple[int, int]:
    """The work of reading back one entry: its value's bytes (none for a miss or an error)."""
    return (0, len(result.value)) if type(result) is Entry else NO_WORK


def check_put(  # noqa: PLR0917 - hot path: positional arguments are cheapest
    view: View, ns: str, key: bytes, old: Entry | None, value: bytes, quota: Quota
) -> None:
    """Refuse, before anything is written, putting ``value`` over ``old`` past ``quota``."""
    add_keys, add_bytes = growth(key, None if old is None else old.value, value)
    if grows(add_keys, add_bytes):
        view.check_quota(ns, add_keys, add_bytes, quota)


class Get(Op):
    """The live entry under a key, or None (GET, RECALL, TTL, TYPE, STRLEN, EXISTS)."""

    __slots__ = ()
    WRITES = False
    TOUCH = Touch.READ
    ONE_READ = True
    WORKS = True

    def run(self, view: View, now: int) -> Entry | None:
        """Read one key."""
        return view.get(self.ns, self.key, now)

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - Entry | None | error
        """The value read back."""
        return entry_work(result)


class GetMany(Op):
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

    def slots(self) -> list[Slot]:
        """Each key."""
        ns = self.ns
        return [(ns, key) for key in self.keys]

    @property
    def size(self) -> int:
        """One per key."""
        return len(self.keys)


class Set(Op):
    """SET and its relatives: conditional write, optional old value, TTL or KEEPTTL.

    ``expires_at`` is absolute; with ``keep_ttl`` an existing key keeps its expiry and a
    new one gets ``expires_at`` (the caller's default TTL). The result is
    ``(written, old_entry)``.
    """

    __slots__ = ("cond", "expires_at", "keep_ttl", "value")
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
    ) -> None:
        super().__init__(ns, key)
        self.value = value
        self.expires_at = expires_at
        self.cond = cond  # b"", b"NX" or b"XX"
        self.keep_ttl = keep_ttl

    def run(self, view: View, now: int) -> tuple[bool, Entry | None]:
        """Write unless the NX/XX condition says no."""
        if not self.cond and not self.keep_ttl:
            return True, put_value(
                view, now, self.ns, self.key, self.value, self.expires_at, self.quota
            )
        old = view.get(self.ns, self.key, now)
        if (self.cond == b"NX" and old is not None) or (self.cond == b"XX" and old is None):
            return False, old
        if self.quota is not None:
            check_put(view, self.ns, self.key, old, self.value, self.quota)
        expires = old.expires_at if self.keep_ttl and old is not None else self.expires_at
        view.put(self.ns, self.key, Entry(self.value, expires, next_version(old)))
        return True, old


def put_value(  # noqa: PLR0917 - hot path: positional arguments are cheapest
    view: View,
    now: int,
    ns: str,
    key: bytes,
    value: bytes,
    expires_at: int,
    quota: Quota | None = None,
) -> Entry | None:
    """A plain SET: write the value with its expiry, one version up; the result is the old entry.

    Shared by :class:`Set` and the direct path of inline stores, so the rule is written
    once; with a ``quota``, a write that would pass it is refused before it happens.
    """
    old = view.get(ns, key, now)
    if quota is not None:
        check_put(view, ns, key, old, value, quota)
    view.put(ns, key, Entry(value, expires_at, next_version(old)))
    return old


class SetMany(Op):
    """MSET: every pair written with one expiry, all or nothing.

    The quota is checked once, for the growth of the whole batch (a key given twice
    counts with its last value), so either every pair is written or none.
    """

    __slots__ = ("expires_at", "pairs")
    GROWS = True

    def __init__(self, ns: str, pairs: list[tuple[bytes, bytes]], expires_at: int) -> None:
        super().__init__(ns)
        self.pairs = pairs
        self.expires_at = expires_at

    def run(self, view: View, now: int) -> None:
        """Read every key, check the batch's growth, then write each pair."""
        ns = self.ns
        olds: dict[bytes, Entry | None] = {}
        for key, _ in self.pairs:
            if key not in olds:
                olds[key] = view.get(ns, key, now)
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

    __slots__ = ("keys",)

    def __init__(self, ns: str, keys: list[bytes]) -> None:
        super().__init__(ns)
        self.keys = keys

    def run(self, view: View, now: int) -> int:
        """Remove each key once."""
        return sum(view.delete(self.ns, k, now) for k in self.keys)

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
        old = view.get(self.ns, self.key, now)
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
        old = view.get(self.ns, self.key, now)
        if old is None or self.expires_at is None:
            return old
        if self.expires_at <= now:
            view.delete(self.ns, self.key, now)
        else:
            view.put(self.ns, self.key, Entry(old.value, self.expires_at, old.version))
        return old


class Expire(Op):
    """The EXPIRE family: result 1 when the expiry was set (or the key deleted), else 0.

    ``cond`` is NX, XX, GT or LT. Every Stash key has an expiry, so NX never applies and
    XX always does. A time not in the future deletes the key, as in Redis. The maximum
    TTL is checked against the clock of this run, so nothing changes when it is refused.
    """

    __slots__ = ("cond", "max_ttl_ms", "when")

    def __init__(self, ns: str, key: bytes, when: int, cond: bytes, max_ttl_ms: int) -> None:
        super().__init__(ns, key)
        self.when = when
        self.cond = cond
        self.max_ttl_ms = max_ttl_ms

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
        if self.when - now > self.max_ttl_ms:
            raise InvalidTTL(ttl_seconds_up(self.when - now), self.max_ttl_ms // 1000)
        view.put(self.ns, self.key, Entry(old.value, self.when, old.version))
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
        old = view.get(self.ns, self.key, now)
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
        old = view.get(self.ns, self.key, now)
        value = self.value if old is None else old.value + self.value
        if len(value) > self.max_payload:
            raise PayloadTooLarge(self.max_payload, len(value))
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
    ) -> None:
        super().__init__(ns, key)
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
        old = view.get(self.ns, self.key, now)
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
                raise InvalidTTL(ttl_seconds_up(expires - now), self.max_ttl_ms // 1000)
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
            if len(value) > self.max_payload:
                raise PayloadTooLarge(self.max_payload, len(value))
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


class Rename(Op):
    """RENAME: move an entry, with its TTL and version, over whatever the new name held.

    It grows the namespace when the new name is longer than the old one (and held
    less than the difference), so with a quota it reads the new name's entry first.
    """

    __slots__ = ("dst",)
    GROWS = True

    def __init__(self, ns: str, key: bytes, dst: bytes) -> None:
        super().__init__(ns, key)
        self.dst = dst

    def run(self, view: View, now: int) -> None:
        """Move, refusing a missing source."""
        old = view.get(self.ns, self.key, now)
        if old is None:
            raise NoSuchKey
        if self.dst == self.key:
            return
        if self.quota is not None:
            replaced = view.get(self.ns, self.dst, now)
            gone_keys, gone_bytes = growth(self.key, old.value, None)
            add_keys, add_bytes = growth(
                self.dst, None if replaced is None else replaced.value, old.value
            )
            add_keys += gone_keys
            add_bytes += gone_bytes
            if grows(add_keys, add_bytes):
                view.check_quota(self.ns, add_keys, add_bytes, self.quota)
        view.delete(self.ns, self.key, now)
        view.put(self.ns, self.dst, old)

    def slots(self) -> list[Slot]:
        """The key, and the new name."""
        return [(self.ns, self.key), (self.ns, self.dst)]


class Scan(Op):
    """SCAN/KEYS: one page of keys matching a glob; cursor 0 in the result means done.

    ``count`` bounds the entries examined, as Redis's COUNT does, so a page may come back
    short or empty before the end. ``kind`` filters by TYPE (every key is a string).
    ``walked`` is how many entries the page read, matching or not, for the rate limit.
    """

    __slots__ = ("count", "cursor", "kind", "pattern", "walked")
    KEYED = False
    WRITES = False
    TOUCH = Touch.SPACE

    def __init__(
        self, ns: str, cursor: int, count: int, pattern: bytes | None, kind: bytes | None
    ) -> None:
        super().__init__(ns)
        self.cursor = cursor
        self.count = count
        self.pattern = pattern
        self.kind = kind
        self.walked = 0

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The entries the page read."""
        return walked_work(self.walked, result)

    def run(self, view: View, now: int) -> tuple[int, list[bytes]]:
        """Read one page."""
        if self.cursor > INT64_MAX:
            # SCAN takes cursors up to 2**64 - 1, as Redis does; no store hands out one
            # past a signed 64-bit number, so such a cursor is past the end.
            return 0, []
        nxt, items = view.scan(self.ns, self.cursor, self.count, now)
        self.walked = len(items)
        if self.kind is not None and self.kind.lower() != b"string":
            return nxt, []
        keys = [k for k, _ in items]
        if self.pattern is not None and self.pattern != b"*":
            match = compile_glob(self.pattern).match
            keys = [k for k in keys if match(k)]
        return nxt, keys


class Page(Op):
    """A page of live entries with their metadata, for listings: up to ``limit`` of them.

    Unlike :class:`Scan`, it keeps reading until the page is full or the namespace ends
    (at most ``limit * ROUNDS`` entries examined, so a namespace full of expired entries
    cannot make one request unbounded); the result is ``(next_cursor, [(key, entry)])``
    with cursor 0 at the end. ``walked`` is how many entries it read, for the rate limit.
    """

    __slots__ = ("cursor", "limit", "walked")
    KEYED = False
    WRITES = False
    TOUCH = Touch.SPACE

    #: Scan rounds per page: bounds the work of one request.
    ROUNDS: Final = 8

    def __init__(self, ns: str, cursor: int, limit: int) -> None:
        super().__init__(ns)
        self.cursor = cursor
        self.limit = limit
        self.walked = 0

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The entries it read."""
        return walked_work(self.walked, result)

    def run(self, view: View, now: int) -> tuple[int, list[tuple[bytes, Entry]]]:
        """Read until the page is full, the namespace ends, or the rounds run out."""
        cursor = self.cursor
        out: list[tuple[bytes, Entry]] = []
        for _ in range(self.ROUNDS):
            cursor, items = view.scan(self.ns, cursor, self.limit - len(out), now)
            out.extend(items)
            if cursor == 0 or len(out) >= self.limit:
                break
        self.walked = len(out)
        return cursor, out


def walked_work(walked: int, result: object) -> tuple[int, int]:
    """The work of a walk: the entries it read (none when it was refused)."""
    return NO_WORK if isinstance(result, StashError) else (walked, 0)


class Ping(Op):
    """A round trip through the store that touches no data: the health check."""

    __slots__ = ()
    KEYED = False
    WRITES = False
    TOUCH = Touch.READ  # of no key: a round trip and nothing else

    def run(self, view: View, now: int) -> bool:  # noqa: ARG002 - part of the Op signature
        """Nothing to do: reaching here proves the store runs operations."""
        return True


class Count(Op):
    """DBSIZE: live keys in the namespace."""

    __slots__ = ()
    KEYED = False
    WRITES = False
    TOUCH = Touch.SPACE

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - the count | error
        """The keys counted."""
        return (result, 0) if type(result) is int else NO_WORK

    def run(self, view: View, now: int) -> int:
        """Count."""
        return view.count(self.ns, now)


class Usage(Op):
    """INFO keyspace: the live keys, and what the namespace holds as quotas count it.

    The result is ``(live_keys, keys, bytes)``; see :meth:`View.usage` for how held keys
    and bytes differ from live keys.
    """

    __slots__ = ()
    KEYED = False
    WRITES = False
    TOUCH = Touch.SPACE

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - (live, keys, bytes) | error
        """The live keys counted."""
        return (result[0], 0) if type(result) is tuple else NO_WORK

    def run(self, view: View, now: int) -> tuple[int, int, int]:
        """Count, and read the usage."""
        keys, size = view.usage(self.ns, now)
        return view.count(self.ns, now), keys, size

    def usage_read(self) -> list[str]:
        """Its namespace, whatever the quota."""
        return [self.ns]


class Flush(Op):
    """FLUSHDB/FLUSHALL: empty the caller's namespace, and only that.

    ``freed`` is how many keys it held (expired ones not yet swept included), for the
    rate limit: freeing them is the work.
    """

    __slots__ = ("freed",)
    KEYED = False
    TOUCH = Touch.SPACE

    def __init__(self, ns: str) -> None:
        super().__init__(ns)
        self.freed = 0

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The keys it freed."""
        return walked_work(self.freed, result)

    def run(self, view: View, now: int) -> None:
        """Clear."""
        self.freed = view.usage(self.ns, now)[0]
        view.clear(self.ns)

    def usage_read(self) -> list[str]:
        """Its namespace: what it frees is counted from the usage."""
        return [self.ns]


class _NoPatch:
    """Marks an UPDATE without MERGE (a JSON ``null`` patch is a real patch)."""


_NO_PATCH: Final = _NoPatch()


def parse_int64(raw: bytes) -> int:
    """A stored or sent integer as Redis reads one: plain decimal, 64-bit, no spaces or '+'."""
    if not raw or len(raw) > 20 or raw[0] in b" +" or raw[-1:] in (b" ", b"\n"):
        raise NotInteger
    try:
        n = int(raw)
    except ValueError:
        raise NotInteger from None
    if not INT64_MIN <= n <= INT64_MAX or (raw[0] == 48 and len(raw) > 1):  # leading 0
        raise NotInteger
    if raw[:2] == b"-0":
        raise NotInteger
    return n


def snapshot(entry: Entry | None) -> tuple[bytes, int, int] | None:
    """What WATCH remembers of a key: any change to value, TTL or version differs from it."""
    return None if entry is None else (entry.value, entry.expires_at, entry.version)


class Transaction(Op):
    """MULTI/EXEC: WATCHed keys checked, then every queued operation, all in one atomic unit.

    The result is None when a watched key changed (nothing ran), else one result per
    operation, an operation's own error standing in its place as Redis does (no rollback:
    operations refuse before writing, so a refused one changed nothing).

    An operation that fails any other way (a bug) aborts the whole transaction: the
    writes of the operations before it are undone, the failure is logged, and the
    transaction's result is :class:`~stashd.errors.TransactionAborted`. This holds on
    every store alike, since the operations run on an :class:`Undoable` over the store's
    view. A failure of the store's view itself passes through untouched, for the store to
    handle as it handles any (a rolled-back batch, a key to fetch first).
    """

    __slots__ = ("ops", "watched")

    def __init__(
        self, ops: list[Op], watched: list[tuple[str, bytes, tuple[bytes, int, int] | None]]
    ) -> None:
        super().__init__("")
        self.ops = ops
        self.watched = watched
        self.writes = any(op.writes for op in ops)
        # Namespace-wide when one of its operations is; otherwise it reads the watched
        # keys and runs its operations on theirs.
        self.touch = Touch.SPACE if any(op.touch is Touch.SPACE for op in ops) else Touch.WRITE

    def slots(self) -> list[Slot]:
        """The watched keys, then those of each operation."""
        out = [(ns, key) for ns, key, _ in self.watched]
        for op in self.ops:
            out += op.slots()
        return out

    def usage_read(self) -> list[str]:
        """Those of each operation."""
        return [ns for op in self.ops for ns in op.usage_read()]

    WORKS = True

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - [result] | None | error
        """What its operations did, each by its own result."""
        if type(result) is not list:
            return NO_WORK
        entries = nbytes = 0
        for op, res in zip(self.ops, result, strict=True):
            e, b = op.work(res)
            entries += e
            nbytes += b
        return entries, nbytes

    def run(self, view: View, now: int) -> list[Any] | None:
        """Check, then run each; undo them all if one fails with a bug."""
        for ns, key, snap in self.watched:
            if snapshot(view.get(ns, key, now)) != snap:
                return None
        undoable = Undoable(view, now)
        results: list[Any] = []
        op: Op | None = None
        try:
            for op in self.ops:
                try:
                    results.append(op.run(undoable, now))
                except StashError as exc:
                    results.append(exc)
        except Exception as exc:
            if exc is undoable.fault:
                raise
            undoable.undo()
            logger.exception("transaction_aborted", operation=type(op).__name__)
            raise TransactionAborted(type(exc).__name__) from None
        undoable.commit()
        return results


class Undoable:
    """A view over a store's view that can take back every write made through it.

    Reads and writes go through to the store's view at once (operations see their own
    writes, and the store its usual calls), and the first write to each key remembers
    the live entry it replaced, so :meth:`undo` can put it back. A namespace cleared
    here is held apart instead: the store's view is cleared, and given what was written
    after, only at :meth:`commit`, so an undo never has to bring back a whole namespace.
    Quota checks and usage go to the store's view, which has seen every earlier write;
    a cleared namespace counts what it holds here instead (what :meth:`commit` writes).
    ``fault`` is the exception the store's view raised, if it raised one.
    """

    __slots__ = ("_cleared", "_held", "_now", "_prior", "_view", "fault")

    def __init__(self, view: View, now: int) -> None:
        self._view = view
        self._now = now
        self._prior: dict[Slot, Entry | None] = {}
        # Namespaces cleared here: what was written to each since, in SCAN order.
        self._cleared: dict[str, dict[bytes, Entry]] = {}
        # The [keys, bytes] each cleared namespace holds here, kept as it is written.
        self._held: dict[str, list[int]] = {}
        self.fault: BaseException | None = None

    def _remember(self, ns: str, key: bytes) -> None:
        slot = (ns, key)
        if slot not in self._prior:
            self._prior[slot] = self._view.get(ns, key, self._now)

    def get(self, ns: str, key: bytes, now: int) -> Entry | None:
        """The live entry, from the store or from what this cleared namespace holds."""
        space = self._cleared.get(ns)
        if space is not None:
            entry = space.get(key)
            return entry if entry is not None and entry.expires_at > now else None
        try:
            return self._view.get(ns, key, now)
        except BaseException as exc:
            self.fault = exc
            raise

    def put(self, ns: str, key: bytes, entry: Entry) -> None:
        """Write through, after remembering what the key held."""
        space = self._cleared.get(ns)
        if space is not None:
            old = space.get(key)
            self._count(ns, *growth(key, None if old is None else old.value, entry.value))
            space[key] = entry
            return
        try:
            self._remember(ns, key)
            self._view.put(ns, key, entry)
        except BaseException as exc:
            self.fault = exc
            raise

    def delete(self, ns: str, key: bytes, now: int) -> bool:
        """Delete through, after remembering what the key held."""
        space = self._cleared.get(ns)
        if space is not None:
            entry = space.pop(key, None)
            if entry is None:
                return False
            self._count(ns, *growth(key, entry.value, None))
            return entry.expires_at > now
        try:
            self._remember(ns, key)
            return self._view.delete(ns, key, now)
        except BaseException as exc:
            self.fault = exc
            raise

    def scan(
        self, ns: str, cursor: int, count: int, now: int
    ) -> tuple[int, list[tuple[bytes, Entry]]]:
        """The store's page; in a namespace cleared here, all it holds now, in one page."""
        space = self._cleared.get(ns)
        if space is not None:
            return 0, [(k, e) for k, e in space.items() if e.expires_at > now]
        try:
            return self._view.scan(ns, cursor, count, now)
        except BaseException as exc:
            self.fault = exc
            raise

    def count(self, ns: str, now: int) -> int:
        """The store's count, or what this cleared namespace holds."""
        space = self._cleared.get(ns)
        if space is not None:
            return sum(1 for e in space.values() if e.expires_at > now)
        try:
            return self._view.count(ns, now)
        except BaseException as exc:
            self.fault = exc
            raise

    def clear(self, ns: str) -> None:
        """Hold the namespace apart, empty, until :meth:`commit`."""
        self._cleared[ns] = {}
        self._held[ns] = [0, 0]

    def _count(self, ns: str, keys: int, size: int) -> None:
        held = self._held[ns]
        held[0] += keys
        held[1] += size

    def check_quota(self, ns: str, add_keys: int, add_bytes: int, quota: Quota) -> None:
        """The store's check; in a namespace cleared here, one against what it holds here."""
        held = self._held.get(ns)
        if held is not None:
            check(held[0], held[1], add_keys, add_bytes, quota)
            return
        try:
            self._view.check_quota(ns, add_keys, add_bytes, quota)
        except StashError:
            raise  # the operation's refusal, not a failure of the store's view
        except BaseException as exc:
            self.fault = exc
            raise

    def usage(self, ns: str, now: int) -> tuple[int, int]:
        """The store's usage, or what this cleared namespace holds."""
        held = self._held.get(ns)
        if held is not None:
            return held[0], held[1]
        try:
            return self._view.usage(ns, now)
        except BaseException as exc:
            self.fault = exc
            raise

    def undo(self) -> None:
        """Put back every key written through this view as it was; drop the cleared ones."""
        view = self._view
        for (ns, key), entry in self._prior.items():
            if entry is None:
                view.delete(ns, key, self._now)
            else:
                view.put(ns, key, entry)
        self._prior.clear()
        self._cleared.clear()
        self._held.clear()

    def commit(self) -> None:
        """Clear the namespaces cleared here in the store, and write what they hold now."""
        view = self._view
        for ns, space in self._cleared.items():
            view.clear(ns)
            for key, entry in space.items():
                view.put(ns, key, entry)
