"""Admission: one count of client connections over every door, held to --max-clients.

Every door (RESP, HTTP, and any later one) asks :meth:`ClientSlots.take` before a
connection exists and releases the :class:`Slot` it got once the connection has ended,
so ``--max-clients`` bounds the sockets of all doors together: the rule lives here
once. A connection turned away is reported through :meth:`ClientSlots.refused`, which
logs at most one event a second, each carrying how many were refused since the last,
so a flood of refusals cannot flood the log.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

from stashd import log

if TYPE_CHECKING:
    from collections.abc import Callable

logger = log.get("stashd.admission")

#: Connections served at once when nothing else is configured: Redis's maxclients default.
DEFAULT_MAX_CLIENTS: Final = 10000
#: At most one ``connection_refused`` event per this many seconds; the refusals in
#: between are counted and carried by the next event.
REFUSAL_LOG_INTERVAL: Final = 1.0


class Slot:
    """One admitted connection's place in the count; released once, however often asked."""

    __slots__ = ("_done", "_slots")

    def __init__(self, slots: ClientSlots, done: Callable[[], None] | None) -> None:
        self._slots: ClientSlots | None = slots
        self._done = done

    def release(self) -> None:
        """The connection has ended: its place is free for the next one."""
        slots = self._slots
        if slots is None:
            return
        self._slots = None
        slots.count -= 1
        if self._done is not None:
            self._done()


class ClientSlots:
    """The daemon's client connections, counted over every door against one limit.

    ``limit`` is the effective ``--max-clients`` (lowered at start when the open-file
    limit cannot hold it); ``count`` the connections holding a slot now. ``clock`` (in
    seconds) times the refusal log; it is injected by tests.
    """

    def __init__(
        self,
        limit: int = DEFAULT_MAX_CLIENTS,
        *,
        clock: Callable[[], float] = time.monotonic,
        log_interval: float = REFUSAL_LOG_INTERVAL,
    ) -> None:
        if limit < 1:
            msg = f"max_clients must be at least 1, got {limit}"
            raise ValueError(msg)
        self.limit = limit
        self.count = 0
        self._clock = clock
        self._interval = log_interval
        self._unlogged = 0  # refusals since the last event
        self._latest: tuple[str, str, str] = ("", "", "")  # door, peer, reason
        self._quiet_until = float("-inf")  # no event before this time
        self._timer: asyncio.TimerHandle | None = None

    def take(self, done: Callable[[], None] | None = None) -> Slot | None:
        """A slot for a new connection, or None when all ``limit`` slots are held.

        ``done`` is called when the slot is released (a door waiting for its last
        connection to end at shutdown).
        """
        if self.count >= self.limit:
            return None
        self.count += 1
        return Slot(self, done)

    def refused(self, door: str, peer: str, reason: str = "max_clients") -> None:
        """A connection was turned away: logged now, or counted into the next event.

        The first refusal after a quiet second is logged at once; later ones in that
        second are logged together when it is over (by a timer, when a loop runs; else
        by the next refusal or :meth:`flush`).
        """
        self._unlogged += 1
        self._latest = (door, peer, reason)
        now = self._clock()
        if now >= self._quiet_until:
            self._log(now)
            return
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._timer = loop.call_later(self._quiet_until - now, self._timed)

    def flush(self) -> None:
        """Log the refusals not logged yet (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._unlogged:
            self._log(self._clock())

    def _timed(self) -> None:
        self._timer = None
        if self._unlogged:
            self._log(self._clock())

    def _log(self, now: float) -> None:
        door, peer, reason = self._latest
        logger.warning(
            "connection_refused",
            door=door,
            peer=peer,
            reason=reason,
            max_clients=self.limit,
            clients=self.count,
            refused=self._unlogged,
        )
        self._unlogged = 0
        self._quiet_until = now + self._interval
