"""Backends: where entries live. One factory opens any of them, for the daemon and the client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stashd.types import Clock, wall_clock_ms

if TYPE_CHECKING:
    import os

    from stashd.store.base import Store


def open_store(
    backend: str,
    *,
    path: str | os.PathLike[str] | None = None,
    synchronous: str = "normal",
    redis_url: str | None = None,
    redis_cluster: bool = False,
    clock: Clock = wall_clock_ms,
    create: bool = True,
) -> Store:
    """A store of the named backend: ``memory``, ``sqlite`` or ``redis``.

    ``sqlite`` keeps the file at ``path``; ``redis`` uses the Redis or Valkey at
    ``redis_url`` (``redis_cluster`` for a Redis Cluster). ``create=False`` makes a
    missing SQLite file an error instead of a new database. A Redis store needs no
    ``open()`` for its synchronous ``run``; the daemon opens it so that an unreachable
    Redis fails the start.
    """
    if backend == "memory":
        from stashd.store.memory import MemoryStore  # noqa: PLC0415 - import what is used

        return MemoryStore(clock)
    if backend == "sqlite":
        from stashd.store.sqlite import SQLiteStore  # noqa: PLC0415

        if path is None:
            msg = "the sqlite backend needs a file path"
            raise ValueError(msg)
        return SQLiteStore(path, clock, synchronous=synchronous, create=create)
    if backend == "redis":
        from stashd.store.redis.store import RedisStore  # noqa: PLC0415

        if not redis_url:
            msg = "the redis backend needs a URL such as redis://localhost:6379/0"
            raise ValueError(msg)
        return RedisStore.from_url(redis_url, cluster=redis_cluster, clock=clock)
    msg = f"unknown backend {backend!r}: choose memory, sqlite or redis"
    raise ValueError(msg)
