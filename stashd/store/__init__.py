"""Backends: where entries live. One factory opens any of them, for the daemon and the client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stashd.store.base import Clock, wall_clock_ms

if TYPE_CHECKING:
    import os

    from stashd.store.base import Store


def open_store(
    backend: str,
    *,
    path: str | os.PathLike[str] | None = None,
    synchronous: str = "normal",
    clock: Clock = wall_clock_ms,
) -> Store:
    """A store of the named backend: ``memory``, or ``sqlite`` (the file at ``path``)."""
    if backend == "memory":
        from stashd.store.memory import MemoryStore  # noqa: PLC0415 - import what is used

        return MemoryStore(clock)
    if backend == "sqlite":
        from stashd.store.sqlite import SQLiteStore  # noqa: PLC0415

        if path is None:
            msg = "the sqlite backend needs a file path"
            raise ValueError(msg)
        return SQLiteStore(path, clock, synchronous=synchronous)
    msg = f"unknown backend {backend!r}: choose memory or sqlite"
    raise ValueError(msg)
