"""The store interface: what every backend offers the operations in :mod:`stashd.ops`.

A backend provides a :class:`View` (synchronous, namespace-scoped reads and writes of
entries, expiry already applied) and runs operations against it atomically. Operations
hold the semantics; a backend only decides where bytes live and how a batch of
operations becomes one atomic unit (a dict on the loop thread, one SQLite transaction).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, Protocol

from stashd.errors import StashError
from stashd.types import Clock, View, wall_clock_ms

if TYPE_CHECKING:
    from stashd.ops import Op


class StoreOpenError(RuntimeError):
    """A store cannot start (unwritable path, unusable file); the message says which and why."""


class ExpiredListener(Protocol):
    """Who hears of keys a sweep removed because they expired (the daemon's event hub)."""

    @property
    def listening(self) -> bool:
        """Whether anyone listens at all: a store may skip finding expired keys otherwise."""
        ...

    def expired(self, ns: str, keys: list[bytes]) -> None:
        """Keys of ``ns`` the sweep removed, in the order it found them."""
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
        # Told of the keys the sweep removes because they expired (keyspace
        # notifications); None: nobody asks.
        self.expired: ExpiredListener | None = None

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

    def describe(self) -> str:
        """What kind of store this is, and where its data is when that is a place."""
        return type(self).__name__.removesuffix("Store").lower()

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
