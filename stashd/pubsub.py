"""The event hub: channels and glob patterns per namespace, their subscribers, and fan-out.

A channel or pattern is known under its namespace, so a tenant never hears another's
messages and PUBSUB answers only about the caller's own. A message reaches each
subscriber through its ``deliver`` callback, which writes it at once (the connection
bounds what it holds unsent with the ``pubsub`` class of client-output-buffer-limit and
disconnects a subscriber past it, as Redis does); the hub itself holds nothing per
message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stashd.glob import compile_glob

if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Iterable

#: A message as it is delivered: ``message`` channel data, or ``pmessage`` pattern channel data.
Message = list[bytes | int | None]
_Name = tuple[str, bytes]  # (namespace, channel or pattern)

MESSAGE: Final = b"message"
PMESSAGE: Final = b"pmessage"
KEYSPACE: Final = b"__keyspace@0__:"
KEYEVENT: Final = b"__keyevent@0__:"
EXPIRED: Final = b"expired"


class Subscriber:
    """One connection's subscriptions; ``deliver`` sends it a message (a push).

    ``namespace`` is where its subscriptions live: the principal's at subscribe time.
    """

    __slots__ = ("channels", "deliver", "patterns")

    def __init__(self, deliver: Callable[[Message], None]) -> None:
        self.deliver = deliver
        self.channels: dict[_Name, None] = {}  # in subscription order, as UNSUBSCRIBE lists them
        self.patterns: dict[_Name, None] = {}

    @property
    def count(self) -> int:
        """Channels and patterns together: the number SUBSCRIBE's replies carry."""
        return len(self.channels) + len(self.patterns)


class Hub:
    """Every subscription of one daemon, by namespace and name."""

    __slots__ = ("_channels", "_listened", "_matchers", "_patterns", "_taps")

    def __init__(self) -> None:
        # Subscribers per (namespace, channel) and per (namespace, pattern), each in
        # subscription order (dicts used as ordered sets).
        self._channels: dict[_Name, dict[Subscriber, None]] = {}
        self._patterns: dict[_Name, dict[Subscriber, None]] = {}
        # Each namespace's patterns, compiled: a publish tries its own namespace's only.
        self._matchers: dict[str, dict[bytes, re.Pattern[bytes]]] = {}
        # How many channels and patterns each namespace has subscribers on.
        self._listened: dict[str, int] = {}
        # One tap per namespace hears its keyspace events as (event, key): the watch log.
        self._taps: dict[str, Callable[[bytes, bytes], None]] = {}

    def tap(self, ns: str, hear: Callable[[bytes, bytes], None]) -> None:
        """Have ``hear(event, key)`` called with every keyspace event of ``ns``."""
        self._taps[ns] = hear

    def untap(self, ns: str) -> None:
        """Stop the tap of ``ns``."""
        self._taps.pop(ns, None)

    def subscribe(self, sub: Subscriber, ns: str, channel: bytes) -> int:
        """Add ``channel`` to ``sub``'s subscriptions; its count afterwards."""
        name = (ns, channel)
        if name not in sub.channels:
            sub.channels[name] = None
            if name not in self._channels:
                self._channels[name] = {}
                self._listened[ns] = self._listened.get(ns, 0) + 1
            self._channels[name][sub] = None
        return sub.count

    def psubscribe(self, sub: Subscriber, ns: str, pattern: bytes) -> int:
        """Add ``pattern`` to ``sub``'s subscriptions; its count afterwards."""
        name = (ns, pattern)
        if name not in sub.patterns:
            sub.patterns[name] = None
            if name not in self._patterns:
                self._matchers.setdefault(ns, {})[pattern] = compile_glob(pattern)
                self._patterns[name] = {}
                self._listened[ns] = self._listened.get(ns, 0) + 1
            self._patterns[name][sub] = None
        return sub.count

    def unsubscribe(
        self, sub: Subscriber, ns: str, channels: Iterable[bytes] | None
    ) -> list[Message]:
        """Drop channels (None: every one); the replies, one per channel, as Redis sends them."""
        return self._drop(sub, ns, channels, sub.channels, self._channels, b"unsubscribe")

    def punsubscribe(
        self, sub: Subscriber, ns: str, patterns: Iterable[bytes] | None
    ) -> list[Message]:
        """Drop patterns (None: every one); the replies, one per pattern."""
        return self._drop(sub, ns, patterns, sub.patterns, self._patterns, b"punsubscribe")

    def _drop(  # noqa: PLR0917 - one body for channels and for patterns
        self,
        sub: Subscriber,
        ns: str,
        names: Iterable[bytes] | None,
        own: dict[_Name, None],
        table: dict[_Name, dict[Subscriber, None]],
        kind: bytes,
    ) -> list[Message]:
        # With no names, every subscription goes, whichever namespace it was made in.
        targets = list(own) if names is None else [(ns, n) for n in names]
        replies: list[Message] = []
        for name in targets:
            if own.pop(name, 0) is None:  # it was there (the stored value is None)
                members = table[name]
                del members[sub]
                if not members:
                    del table[name]
                    if table is self._patterns:
                        self._forget_matcher(*name)
                    left = self._listened[name[0]] - 1
                    if left:
                        self._listened[name[0]] = left
                    else:
                        del self._listened[name[0]]
            replies.append([kind, name[1], sub.count])
        if not replies:  # nothing to drop: one reply with no name, as Redis sends
            replies.append([kind, None, sub.count])
        return replies

    def _forget_matcher(self, ns: str, pattern: bytes) -> None:
        space = self._matchers[ns]
        del space[pattern]
        if not space:
            del self._matchers[ns]

    def drop(self, sub: Subscriber) -> None:
        """Forget every subscription of ``sub`` (its connection closed or was reset)."""
        self._drop(sub, "", None, sub.channels, self._channels, b"")
        self._drop(sub, "", None, sub.patterns, self._patterns, b"")

    def publish(self, ns: str, channel: bytes, data: bytes) -> int:
        """Send ``data`` on ``channel`` in ``ns``; how many subscriptions received it.

        As in Redis, a client subscribed to the channel and to a matching pattern
        receives it twice and is counted twice.
        """
        received = 0
        members = self._channels.get((ns, channel))
        if members:
            message: Message = [MESSAGE, channel, data]
            for sub in list(members):  # a delivery may disconnect a subscriber
                sub.deliver(message)
                received += 1
        matchers = self._matchers.get(ns)
        if matchers:
            for pattern, matcher in list(matchers.items()):
                subs = self._patterns.get((ns, pattern))
                if not subs or not matcher.match(channel):
                    continue
                pmessage: Message = [PMESSAGE, pattern, channel, data]
                for sub in list(subs):
                    sub.deliver(pmessage)
                    received += 1
        return received

    def notify(self, ns: str, event: bytes, key: bytes) -> None:
        """A keyspace notification, on both of Redis's channels for it in ``ns``.

        ``__keyspace@0__:<key>`` carries the event's name, ``__keyevent@0__:<event>``
        the key, as Redis publishes them (database 0: Stash has no other).
        """
        hear = self._taps.get(ns)
        if hear is not None:
            hear(event, key)
        self.publish(ns, KEYSPACE + key, event)
        self.publish(ns, KEYEVENT + event, key)

    @property
    def listening(self) -> bool:
        """Whether any namespace has a subscriber at all (most writes then skip notifying)."""
        return bool(self._listened) or bool(self._taps)

    def expired(self, ns: str, keys: list[bytes]) -> None:
        """Keys a store's sweep removed because they expired: Redis's ``expired`` event."""
        if ns in self._listened or ns in self._taps:
            for key in keys:
                self.notify(ns, EXPIRED, key)

    def has_listeners(self, ns: str) -> bool:
        """Whether anyone in ``ns`` listens at all (so notifications can be skipped cheaply)."""
        return ns in self._listened or ns in self._taps

    def channels(self, ns: str, pattern: bytes | None) -> list[bytes]:
        """PUBSUB CHANNELS: the channels of ``ns`` with a subscriber, matching ``pattern``."""
        match = None if pattern is None else compile_glob(pattern).match
        return [
            channel
            for space, channel in self._channels
            if space == ns and (match is None or match(channel))
        ]

    def numsub(self, ns: str, channel: bytes) -> int:
        """PUBSUB NUMSUB: how many subscribe to ``channel`` in ``ns``."""
        return len(self._channels.get((ns, channel), ()))

    def numpat(self, ns: str) -> int:
        """PUBSUB NUMPAT: how many distinct patterns ``ns`` has subscriptions to."""
        return sum(1 for space, _ in self._patterns if space == ns)
