"""Every store backend, opened the same way for the store contract suite: add new ones here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from stashd.commands import TABLE
from stashd.commands.base import Deferred
from stashd.errors import StashError
from stashd.store.memory import MemoryStore
from stashd.store.redis.store import RedisStore
from stashd.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from stashd.commands.base import Session
    from stashd.ops import Op
    from stashd.store.base import Store
    from stashd.types import Clock

#: Backend name -> how operations reach it. ``sqlite`` runs each operation through the
#: direct path (its own transaction on the calling thread's connection); the batched
#: variants go through ``run_many`` as the daemon does: on the loop thread with
#: synchronous=NORMAL, on the worker thread for writes with FULL; their reads are
#: answered at once on the loop (``read_now``), as the daemon answers them. ``redis``
#: runs batches over the event loop's lean link as the daemon does, ``redis-direct``
#: each operation over redis-py's synchronous client, and ``redis-cluster`` batches on a
#: three-master Redis Cluster; each on a redis-server the test session started.
BACKENDS: Final = (
    "memory",
    "sqlite",
    "sqlite-batched",
    "sqlite-full",
    "redis",
    "redis-direct",
    "redis-cluster",
)
#: The backends that need a Redis URL.
REDIS_BACKENDS: Final = frozenset({"redis", "redis-direct", "redis-cluster"})


@dataclass
class Backend:
    """A store opened for a test, with a way to run one operation or a batch on it."""

    name: str
    store: Store
    loop: asyncio.AbstractEventLoop
    batched: bool

    def run(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result
        """One operation; its StashError is raised, as a direct caller would see it.

        Batched backends answer reads the way the daemon does: at once on the loop when
        the store offers it, else in a batch.
        """
        if not self.batched:
            return self.store.run(op)
        if self.store.inline_reads and not op.writes:
            return self.loop.run_until_complete(self._read_now(op))
        (result,) = self.run_many([op])
        if isinstance(result, StashError):
            raise result
        return result

    async def _read_now(self, op: Op) -> Any:  # noqa: ANN401 - each operation has its own result
        return self.store.read_now(op)

    def run_many(self, ops: list[Op]) -> list[Any]:
        """A batch, as the daemon's batcher hands it over: errors are results."""
        return self.loop.run_until_complete(self.store.run_many(ops))

    def call(self, session: Session, *words: bytes) -> Any:  # noqa: ANN401 - any reply
        """Run one request as dispatch does: handler, its operation here, the reply.

        A refusal is returned, not raised, so a test compares it like any reply.
        """
        try:
            reply = TABLE[words[0].lower()].handler(session, list(words))
            if type(reply) is Deferred:
                result = self.run(reply.op)
                reply = result if reply.finish is None else reply.finish(result)
        except StashError as exc:
            return exc
        return reply

    def close(self) -> None:
        """Close the store and the loop."""
        self.loop.run_until_complete(self.store.close())
        self.loop.close()


def open_backend(name: str, clock: Clock, tmp: Path, redis_url: str = "") -> Backend:
    """Open backend ``name`` with ``clock``, keeping any files under ``tmp``.

    Redis backends use the server at ``redis_url``.
    """
    loop = asyncio.new_event_loop()
    store: Store
    if name == "memory":
        store = MemoryStore(clock)
    elif name in ("sqlite", "sqlite-batched"):
        store = SQLiteStore(tmp / "stash.db", clock)
    elif name == "sqlite-full":
        store = SQLiteStore(tmp / "stash.db", clock, synchronous="full")
    elif name in REDIS_BACKENDS:
        store = RedisStore.from_url(redis_url, clock=clock)
    else:  # pragma: no cover - a typo in BACKENDS
        msg = f"unknown backend {name!r}"
        raise ValueError(msg)
    loop.run_until_complete(store.open())
    return Backend(name, store, loop, batched=name not in ("memory", "sqlite", "redis-direct"))


def server_url(request: pytest.FixtureRequest, name: str) -> str:
    """The URL of the Redis backend ``name``'s server, flushed first; "" for other backends.

    The servers are the session's (tests/conftest.py): ``redis_cluster`` for
    ``redis-cluster``, ``redis_store`` for the others.
    """
    if name not in REDIS_BACKENDS:
        return ""
    server = request.getfixturevalue("redis_cluster" if name == "redis-cluster" else "redis_store")
    server.flush()
    url: str = server.url
    return url
