"""The leaf of the package: the values every layer passes around, importing nothing of Stash.

An :class:`Entry` is what a store holds under a key, a :class:`View` how operations
reach entries, a :class:`Clock` where their time comes from; :class:`Limits` and its
:class:`Quota` say what one caller may do, and a :class:`Principal` who the caller is.
Doors, the memory service, operations and stores all depend on these, and these on
nothing, so no import among them can go round in a circle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from stashd.ratelimit import Rate

#: The user of open mode and of anonymous callers.
DEFAULT_USER: Final = "default"

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch: expiry times are absolute, so they survive restarts."""
    return time.time_ns() // 1_000_000


class Kind:
    """What a key holds, as TYPE names it: each stored entry carries one of these numbers.

    Plain ints, not an enum: they are stored as they are (SQLite's kind column, the first
    byte of a Redis entry's header), compared on every read of a string command, and an
    int compares fastest. A container's value is its encoding in :mod:`stashd.containers`.
    """

    STRING: Final = 1
    HASH: Final = 2
    LIST: Final = 3
    SET: Final = 4
    ZSET: Final = 5
    #: A lease (LEASE CLAIM): its owner and fencing token, see :mod:`stashd.ops.leases`.
    LEASE: Final = 6


#: TYPE's answer for each kind.
KIND_NAMES: Final = {
    Kind.STRING: "string",
    Kind.HASH: "hash",
    Kind.LIST: "list",
    Kind.SET: "set",
    Kind.ZSET: "zset",
    Kind.LEASE: "lease",
}
#: SCAN TYPE's argument, lower-cased, to the kind it names.
KIND_BY_NAME: Final = {name.encode(): kind for kind, name in KIND_NAMES.items()}


class Entry:
    """One stored value: the bytes, the absolute expiry in ms, the data version, its kind."""

    # Slots: entries are the most numerous objects a memory store holds.
    __slots__ = ("expires_at", "kind", "value", "version")

    def __init__(
        self, value: bytes, expires_at: int, version: int = 1, kind: int = Kind.STRING
    ) -> None:
        self.value = value
        self.expires_at = expires_at
        self.version = version
        self.kind = kind

    def __repr__(self) -> str:
        name = KIND_NAMES.get(self.kind, self.kind)
        return (
            f"Entry({len(self.value)} bytes, expires_at={self.expires_at}, v{self.version}, {name})"
        )


class View(Protocol):
    """Synchronous access to entries; an expired entry is never returned, nor counted by count."""

    def get(self, ns: str, key: bytes, now: int) -> Entry | None:
        """The live entry under ``key``, or None."""
        ...

    def put(self, ns: str, key: bytes, entry: Entry) -> None:
        """Insert or replace ``key``; a replaced live key keeps its place in SCAN order.

        A key that :meth:`get` found expired is gone: written again, it is a new key,
        placed at the end of SCAN order like any other (every operation reads a key
        before it writes it, so this is how every store orders a key set after expiry).
        """
        ...

    def delete(self, ns: str, key: bytes, now: int) -> bool:
        """Remove ``key``; True when a live entry was removed."""
        ...

    def scan(
        self, ns: str, cursor: int, count: int, now: int
    ) -> tuple[int, list[tuple[bytes, Entry]]]:
        """About ``count`` live entries after ``cursor``; the next cursor is 0 at the end.

        A key present for the whole of an iteration is returned at least once.
        """
        ...

    def count(self, ns: str, now: int) -> int:
        """How many live keys the namespace holds."""
        ...

    def clear(self, ns: str) -> None:
        """Remove every key of the namespace."""
        ...

    def check_quota(self, ns: str, add_keys: int, add_bytes: int, quota: Quota) -> None:
        """Raise :class:`~stashd.errors.QuotaExceeded` if a write of this growth passes ``quota``.

        An operation calls this before its first write, with the keys and bytes
        (:func:`~stashd.quota.entry_bytes`) its writes will add, negative for what they
        take away. What a store must guarantee:

        - It compares the namespace's :meth:`usage` plus the growth with
          :func:`stashd.quota.check`, that function deciding, so a write that does not
          grow the namespace is always allowed.
        - The usage it compares is exact and current within the atomic unit: it counts
          every earlier write of the same batch or transaction, and no write of another
          client can land between this check and the operation's writes.
        - Before it refuses, it frees expired entries of the namespace (a bounded number,
          expired by the store's clock) and compares again, so that expiry frees quota
          even before the background sweep comes by.
        - Refusing, it changes nothing but that freeing of expired entries, which no
          reader can tell apart from the sweep.
        """
        ...

    def usage(self, ns: str, now: int) -> tuple[int, int]:
        """What the namespace holds, as quotas count it: (keys, bytes).

        Every entry written and not yet removed counts, the expired ones too until the
        store frees them (by the sweep, a read, or :meth:`check_quota`), so the numbers
        are never below the live entries' and, once expired entries are swept, equal to
        them. Writes earlier in the same atomic unit are included. ``now`` is the
        operation's clock, for a store that frees expired entries while counting.
        """
        ...


@dataclass(frozen=True, slots=True)
class Quota:
    """The most a namespace may hold: keys and bytes, each None for no limit."""

    max_keys: int | None = None
    max_bytes: int | None = None
    #: False when neither side has a limit: the memory service then attaches no quota to
    #: operations, so they skip the check altogether.
    limited: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Refuse limits below 1 (None is no limit), and work out :attr:`limited` once."""
        for name, value in (("max_keys", self.max_keys), ("max_bytes", self.max_bytes)):
            if value is not None and value < 1:
                msg = f"{name} must be at least 1 (None for no limit), got {value}"
                raise ValueError(msg)
        object.__setattr__(self, "limited", self.max_keys is not None or self.max_bytes is not None)


#: No limit on either side: the default of every :class:`Limits`.
UNLIMITED = Quota()


@dataclass(frozen=True, slots=True)
class Limits:
    """What one caller may do: payload size, TTL bounds, rate and storage quota."""

    max_payload: int  # bytes per value
    default_ttl_ms: int  # applied to writes that name no TTL
    max_ttl_ms: int  # no key may live longer than this from now
    rate: Rate | None = None  # commands per period with a burst; None: unlimited
    quota: Quota = UNLIMITED  # keys and bytes the namespace may hold
    # A TTL past max_ttl_ms: refused (False), or stored as max_ttl_ms (True: --over-max-ttl
    # clamp, for libraries whose defaults ask for longer, such as 14-day sessions).
    clamp_ttl: bool = False


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated (or anonymous) caller: its namespace, limits and display name.

    ``namespace`` is also the subject of rate limits, so every door and every connection
    of one user draws on one budget. ``key_id`` names the registered key used (strict
    mode), so connections can be closed when that key is revoked.
    """

    namespace: str
    limits: Limits
    user: str = DEFAULT_USER
    key_id: str | None = None
