"""What every operation is: the base class, what it declares it touches, and the rules all share."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

from stashd import log
from stashd.errors import (
    InvalidTTL,
    NotInteger,
    PayloadTooLarge,
    StashError,
    WrongType,
)
from stashd.quota import grows, growth
from stashd.types import Entry, Kind, View

if TYPE_CHECKING:
    from collections.abc import Container

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


def capped_ttl(left_ms: int, max_ttl_ms: int, clamp: bool) -> int:
    """The rule for a TTL past the maximum, once: refused with InvalidTTL, or clamped to it."""
    if left_ms <= max_ttl_ms:
        return left_ms
    if clamp:
        return max_ttl_ms
    raise InvalidTTL(ttl_seconds_up(left_ms), max_ttl_ms // 1000)


def check_payload(size: int, max_payload: int) -> None:
    """The payload cap, once: a value of ``size`` bytes over it is refused, naming both."""
    if size > max_payload:
        raise PayloadTooLarge(max_payload, size)


def read_kind(view: View, ns: str, key: bytes, now: int, kind: int) -> Entry | None:
    """The live entry under ``key`` if it holds ``kind``: the one-type-per-key rule, once.

    A key of another kind is refused with Redis's WRONGTYPE before anything is written,
    so a command for one kind never reads, changes or replaces another's value (a plain
    SET and a STORE's destination, which replace whatever was there, are the writes
    that do not ask).
    """
    entry = view.get(ns, key, now)
    if entry is not None and entry.kind != kind:
        raise WrongType
    return entry


def read_any(view: View, ns: str, key: bytes, now: int, kinds: Container[int]) -> Entry | None:
    """:func:`read_kind` for a command that takes any of several kinds (ZUNION reads sets)."""
    entry = view.get(ns, key, now)
    if entry is not None and entry.kind not in kinds:
        raise WrongType
    return entry


def read_string(view: View, ns: str, key: bytes, now: int) -> Entry | None:
    """The live string under ``key``, WRONGTYPE for a key of another kind."""
    return read_kind(view, ns, key, now, Kind.STRING)


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
    #: True for an operation that may run long (a Lua script): the batcher runs it
    #: alone, on a thread of its own, so the loop keeps answering (BUSY past its
    #: ``busy_after_ms``) and SCRIPT KILL reaches it.
    RUNS_LONG: bool = False
    #: For a long operation, the ms after which other requests are answered BUSY (0:
    #: never); one that runs long sets its own.
    busy_after_ms: int = 0
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


class OnKeys(Op):
    """An operation on the several keys in ``keys`` (MGET, SINTER, ZMPOP).

    It declares each of them, and its size is one per key. A subclass holds ``keys`` in
    its slots.
    """

    __slots__ = ()
    keys: list[bytes]

    def slots(self) -> list[Slot]:
        """Each key."""
        ns = self.ns
        return [(ns, key) for key in self.keys]

    @property
    def size(self) -> int:
        """One per key."""
        return len(self.keys)


def entry_work(result: object) -> tuple[int, int]:
    """The work of reading back one entry: its value's bytes (none for a miss or an error)."""
    return (0, len(result.value)) if type(result) is Entry else NO_WORK


def check_put(  # noqa: PLR0917 - hot path: positional arguments are cheapest
    view: View, ns: str, key: bytes, old: Entry | None, value: bytes, quota: Quota
) -> None:
    """Refuse, before anything is written, putting ``value`` over ``old`` past ``quota``."""
    add_keys, add_bytes = growth(key, None if old is None else old.value, value)
    check_growth(view, ns, add_keys, add_bytes, quota)


def check_growth(view: View, ns: str, add_keys: int, add_bytes: int, quota: Quota) -> None:
    """Refuse a namespace's growth past ``quota``; a write that does not grow it never is."""
    if grows(add_keys, add_bytes):
        view.check_quota(ns, add_keys, add_bytes, quota)


def walked_work(walked: int, result: object) -> tuple[int, int]:
    """The work of a walk: the entries it read (none when it was refused)."""
    return NO_WORK if isinstance(result, StashError) else (walked, 0)


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
