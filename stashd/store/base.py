"""The store interface: what every backend offers the operations in :mod:`stashd.ops`.

A backend provides a :class:`View` (synchronous, namespace-scoped reads and writes of
entries, expiry already applied) and runs operations against it atomically. Operations
hold the semantics; a backend only decides where bytes live and how a batch of
operations becomes one atomic unit (a dict on the loop thread, one SQLite transaction).
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from stashd.errors import StashError

if TYPE_CHECKING:
    from stashd.ops import Op
    from stashd.quota import Quota

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch: expiry times are absolute, so they survive restarts."""
    return time.time_ns() // 1_000_000


class StoreOpenError(RuntimeError):
    """A store cannot start (unwritable path, unusable file); the message says which and why."""


class Entry:
    """One stored value: the bytes, the absolute expiry in ms, and the data version."""

    # stashd/_fastpath.c reads and builds entries through these slots directly: keep
    # them slots, and keep __init__ a plain assignment of the three.
    __slots__ = ("expires_at", "value", "version")

    def __init__(self, value: bytes, expires_at: int, version: int = 1) -> None:
        self.value = value
        self.expires_at = expires_at
        self.version = version

    def __repr__(self) -> str:
        return f"Entry({len(self.value)} bytes, expires_at={self.expires_at}, v{self.version})"


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


class Store(abc.ABC):
    """A backend: runs operations atomically, one at a time or in batches."""

    #: True when :meth:`run` is cheap enough to call on the event loop thread (no I/O).
    inline: bool = False
    #: True when :meth:`read_now` may run operations that only read on the event loop
    #: thread, in the order requests arrive, instead of queueing them for a batch.
    inline_reads: bool = False

    def __init__(self, clock: Clock = wall_clock_ms) -> None:
        self.clock = clock

    @abc.abstractmethod
    def run(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result type
        """Run one operation synchronously and return its result (or raise its error)."""

    @abc.abstractmethod
    async def run_many(self, ops: list[Op]) -> list[Any]:
        """Run a batch atomically; an operation's :class:`StashError` is its result."""

    def read_now(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result type
        """Run an operation that only reads, on the loop thread (used when ``inline_reads``).

        It must see every write whose batch has returned, and raises the operation's
        error as :meth:`run` does.
        """
        return self.run(op)

    async def open(self) -> None:  # noqa: B027 - optional hook, most stores need nothing
        """Prepare the store inside the running loop (files, connections, timers)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release what :meth:`open` took; pending work is finished first."""

    def memory_bytes(self) -> int:
        """Bytes of entries this store holds in this process's memory, as accounted.

        What ``--maxmemory`` counts of the store: 0 for stores whose data lives in a file
        or another process (SQLite's page cache is bounded by its own setting).
        """
        return 0

    def close_threads(self) -> None:  # noqa: B027 - optional hook, for SQLite's
        """Close what threads other than the loop's opened for themselves (synchronous calls)."""

    def maintain(self) -> None:  # noqa: B027 - optional hook
        """Do a bounded slice of background work (expiry sweeps); called periodically."""


def run_each(view: View, ops: list[Op], now: int) -> list[Any]:
    """Run operations in order on one view, turning each one's own error into its result."""
    results: list[Any | StashError] = []
    for op in ops:
        try:
            results.append(op.run(view, now))
        except StashError as exc:
            results.append(exc)
    return results
