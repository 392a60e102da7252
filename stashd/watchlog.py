"""The watch log: recent keyspace events of each watched namespace, numbered, for resuming.

The log taps the event hub (:meth:`~stashd.pubsub.Hub.tap`) for a namespace while anyone
watches it and for ``MAX_AGE`` seconds after its last watcher left, so a watcher that
drops and reconnects within that time resumes where it stopped. Each event gets an id
from one counter of the daemon, so ids grow in every namespace; the counter starts at the
process's start time in microseconds, so an id from an earlier run is older than any
log holds, and its watcher is told to start over (``reset``) rather than given a gap.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Final, NamedTuple

from stashd.glob import compile_glob

if TYPE_CHECKING:
    import re
    from collections.abc import Callable

    from stashd.pubsub import Hub

#: Events a namespace's log keeps: a watcher that reconnects within this many events of
#: its namespace resumes with none lost; one further behind gets ``reset``.
MAX_EVENTS: Final = 10_000
#: Bytes of keys a namespace's log keeps: bounds the log when keys are long, as
#: MAX_EVENTS does when they are short (10 000 keys of 100 bytes fit).
MAX_KEY_BYTES: Final = 1024 * 1024
#: Seconds an event stays in the log, and a log after its namespace's last watcher left:
#: long enough for a client to notice a dropped stream and reconnect, short enough that
#: namespaces nobody watches any more cost nothing for long.
MAX_AGE: Final = 300.0
#: Events a watcher may have waiting to be sent: one that falls this far behind its
#: namespace's writes is cut (it reconnects and resumes, or gets ``reset``).
WATCHER_BUFFER: Final = 10_000


class Event(NamedTuple):
    """One keyspace event: its id, its name (``set``, ``del``, ``expired``...) and its key."""

    id: int
    event: bytes
    key: bytes
    at: float  # the log's clock when it happened, for MAX_AGE


#: The name of what a watcher gets instead of the events it missed (its id is older than
#: the log): no keyspace event has it. Its id is the last one given before the watch began.
RESET: Final = b"reset"


class Watcher:
    """One watch: the events of one namespace whose key matches a glob, in order.

    ``wake(watcher)`` is called whenever something arrives (an event, a reset, the cut), so the
    door that serves it can send without polling.
    """

    __slots__ = ("cut", "match", "namespace", "overflow", "pending", "wake")

    def __init__(self, namespace: str, pattern: bytes, wake: Callable[[Watcher], None]) -> None:
        self.namespace = namespace
        self.match: Callable[[bytes], re.Match[bytes] | None] = compile_glob(pattern).match
        self.pending: deque[Event] = deque()
        self.wake = wake
        self.cut = False  # fell WATCHER_BUFFER behind, or the daemon is closing
        self.overflow = False  # the first of those

    def push(self, event: Event, *, always: bool = False) -> None:
        """Queue an event if its key matches (or ``always``); cut the watcher past its buffer."""
        if self.cut or not (always or self.match(event.key)):
            return
        if len(self.pending) >= WATCHER_BUFFER:
            self.cut = self.overflow = True
            self.pending.clear()
        else:
            self.pending.append(event)
        self.wake(self)

    def take(self) -> list[Event]:
        """Everything waiting, oldest first."""
        events = list(self.pending)
        self.pending.clear()
        return events


class _Log:
    """One namespace's ring of events and its watchers."""

    __slots__ = ("floor", "idle_since", "key_bytes", "ring", "watchers")

    def __init__(self, floor: int) -> None:
        self.ring: deque[Event] = deque()
        self.key_bytes = 0
        # Every event of the namespace with an id above ``floor`` is in the ring.
        self.floor = floor
        self.watchers: set[Watcher] = set()
        self.idle_since = 0.0  # clock time the last watcher left; 0 while watched


class WatchLog:
    """Every namespace's watch log, and the watchers reading them."""

    def __init__(self, hub: Hub, clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.clock = clock
        self.last_id = time.time_ns() // 1000
        self._logs: dict[str, _Log] = {}

    def open(
        self, namespace: str, pattern: bytes, last_id: int | None, wake: Callable[[Watcher], None]
    ) -> Watcher:
        """Start a watch; with ``last_id``, the logged events after it are queued first.

        When the log no longer holds every event after ``last_id`` (or never did), a
        ``reset`` is queued instead, so the watcher knows to read the state again.
        """
        self.prune()
        log = self._logs.get(namespace)
        if log is None:
            log = self._logs[namespace] = _Log(self.last_id)
            self.hub.tap(namespace, lambda event, key: self._record(namespace, event, key))
        self._trim(log)
        watcher = Watcher(namespace, pattern, wake)
        log.watchers.add(watcher)
        log.idle_since = 0.0
        if last_id is not None:
            if log.floor <= last_id <= self.last_id:
                for event in log.ring:
                    if event.id > last_id:
                        watcher.push(event)
            else:
                watcher.push(Event(self.last_id, RESET, b"", self.clock()), always=True)
        return watcher

    def close(self, watcher: Watcher) -> None:
        """End a watch; the namespace's log stays MAX_AGE seconds for a reconnect."""
        log = self._logs.get(watcher.namespace)
        if log is not None and watcher in log.watchers:
            log.watchers.discard(watcher)
            if not log.watchers:
                log.idle_since = self.clock()
        self.prune()

    def cut_all(self) -> None:
        """Cut every watcher (the daemon is closing)."""
        for log in self._logs.values():
            for watcher in list(log.watchers):
                watcher.cut = True
                watcher.wake(watcher)

    def prune(self) -> None:
        """Drop the logs of namespaces nobody has watched for MAX_AGE seconds."""
        now = self.clock()
        for namespace, log in list(self._logs.items()):
            if log.idle_since and now - log.idle_since >= MAX_AGE:
                del self._logs[namespace]
                self.hub.untap(namespace)

    def _record(self, namespace: str, event: bytes, key: bytes) -> None:
        log = self._logs.get(namespace)
        if log is None:
            return
        if log.idle_since and self.clock() - log.idle_since >= MAX_AGE:
            self.prune()
            return
        self.last_id += 1
        entry = Event(self.last_id, event, key, self.clock())
        log.ring.append(entry)
        log.key_bytes += len(key)
        self._trim(log)
        for watcher in list(log.watchers):
            watcher.push(entry)

    def _trim(self, log: _Log) -> None:
        ring = log.ring
        oldest = self.clock() - MAX_AGE
        while ring and (
            len(ring) > MAX_EVENTS or log.key_bytes > MAX_KEY_BYTES or ring[0].at < oldest
        ):
            gone = ring.popleft()
            log.key_bytes -= len(gone.key)
            log.floor = gone.id

    def logs(self) -> int:
        """How many namespaces have a log (for tests of the bound)."""
        return len(self._logs)
