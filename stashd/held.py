"""What the server holds in memory for its clients, counted, and the limits on it.

Two things grow with what clients send: the entries a store keeps in this process (the
memory store; SQLite's and Redis's data live in a file or another process) and the
requests queued between MULTI and EXEC, which hold their values until EXEC, or for as
long as the connection lives. Redis bounds both with ``maxmemory``: past it, commands
that add data (its ``denyoom`` flag) are refused with ``-OOM``, while reads, deletes and
expiry go on and free space. Stash does the same with ``--maxmemory`` (0: no limit, as
in Redis) and never evicts a live key to make room (Redis's ``noeviction``).

Queued requests have limits of their own, checked as each one is queued: a connection
may queue at most its query buffer limit (``--max-query-buffer``, Redis's
``client-query-buffer-limit``), and the connections of one namespace together at most
its storage quota's bytes: EXEC could never store more, so a tenant cannot make the
server hold more by never sending it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stashd.errors import OutOfMemory, QueueFull
from stashd.resp import MAX_REQUEST_BYTES

if TYPE_CHECKING:
    from collections.abc import Callable

#: What a queued request is counted as beyond the bytes of its arguments: the list and
#: bytes objects that hold it. Measured with tracemalloc on requests as hiredis reads
#: them: a SET of 18 argument bytes holds 206 bytes, 64 + 3 * 40 + 18.
ARG_OVERHEAD: Final = 40
REQUEST_OVERHEAD: Final = 64


def request_bytes(args: list[bytes]) -> int:
    """The memory one queued request holds, as counted against the limits."""
    return REQUEST_OVERHEAD + sum(len(a) for a in args) + ARG_OVERHEAD * len(args)


class HeldMemory:
    """The server's count of held memory: one per daemon, shared by every connection.

    ``store_bytes`` says what the store holds in this process (the memory store's
    accounted entries, 0 for stores whose data lives elsewhere).
    """

    __slots__ = ("by_namespace", "max_queue", "maxmemory", "queued", "store_bytes")

    def __init__(
        self,
        maxmemory: int = 0,
        store_bytes: Callable[[], int] = lambda: 0,
        max_queue: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.maxmemory = maxmemory
        self.store_bytes = store_bytes
        self.max_queue = max_queue
        self.queued = 0  # bytes of every connection's queued requests
        self.by_namespace: dict[str, int] = {}

    def used(self) -> int:
        """Bytes counted now: the store's entries and every queued request (INFO used_memory)."""
        return self.store_bytes() + self.queued

    def check(self) -> None:
        """Refuse, with Redis's OOM, a command that adds data while over maxmemory."""
        if self.maxmemory and self.used() > self.maxmemory:
            raise OutOfMemory

    def hold(self, ns: str, connection_held: int, size: int, quota_bytes: int | None) -> None:
        """Count ``size`` more queued bytes for a connection of ``ns`` holding ``connection_held``.

        Raises :class:`QueueFull` (nothing counted) past the connection's or the
        namespace's limit.
        """
        if connection_held + size > self.max_queue:
            raise QueueFull(connection_held + size, self.max_queue, "on this connection")
        in_ns = self.by_namespace.get(ns, 0) + size
        if quota_bytes is not None and in_ns > quota_bytes:
            raise QueueFull(in_ns, quota_bytes, "in this namespace")
        self.by_namespace[ns] = in_ns
        self.queued += size

    def release(self, ns: str, size: int) -> None:
        """Forget ``size`` queued bytes of ``ns``: its queue ran, was discarded or closed."""
        if not size:
            return
        self.queued -= size
        left = self.by_namespace.get(ns, 0) - size
        if left > 0:
            self.by_namespace[ns] = left
        else:
            self.by_namespace.pop(ns, None)
