"""Pub/sub commands: SUBSCRIBE, PSUBSCRIBE, UNSUBSCRIBE, PUNSUBSCRIBE, PUBLISH, PUBSUB.

Channels and patterns live in the caller's namespace (:mod:`stashd.pubsub`); the
replies are Redis's, confirmations as pushes (RESP2 arrays).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stashd.commands.base import (
    FAST,
    LOADING,
    STALE,
    Command,
    Reply,
    Session,
    help_lines,
    run_subcommand,
    subcommand_rows,
)
from stashd.errors import CommandError
from stashd.resp import Push, Replies
from stashd.service import check_pattern

if TYPE_CHECKING:
    from stashd.pubsub import Subscriber

PUBSUB: Final = "pubsub"
NOSCRIPT: Final = "noscript"
_P: Final = (PUBSUB, LOADING, STALE)
_SUB: Final = (PUBSUB, NOSCRIPT, LOADING, STALE)

#: What a RESP2 connection in subscribed mode may still send, as in Redis.
SUBSCRIBED_ALLOWED: Final = frozenset(
    {b"subscribe", b"psubscribe", b"unsubscribe", b"punsubscribe", b"ping", b"quit", b"reset"}
)


class SubscribedOnly(CommandError):
    """A command a RESP2 connection in subscribed mode may not send, in Redis's words."""

    template = (
        "Can't execute '{command}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / "
        "RESET are allowed in this context"
    )
    command: str

    def __init__(self, command: str) -> None:
        self._fill(command=command.lower()[:128])


def _subscriber(s: Session) -> Subscriber:
    sub = s.subscriber
    if sub is None:
        if s.make_subscriber is None:
            msg = "this connection cannot receive messages"
            raise CommandError(msg)
        sub = s.subscriber = s.make_subscriber()
    return sub


def subscribe(s: Session, args: list[bytes]) -> Reply:
    """SUBSCRIBE channel [channel ...]: one confirmation per channel."""
    ns = s.require().namespace
    sub = _subscriber(s)
    hub = s.hub
    return Replies(Push([b"subscribe", ch, hub.subscribe(sub, ns, ch)]) for ch in args[1:])


def psubscribe(s: Session, args: list[bytes]) -> Reply:
    """PSUBSCRIBE pattern [pattern ...]: one confirmation per pattern."""
    ns = s.require().namespace
    for pattern in args[1:]:
        check_pattern(pattern)  # refused before any is added
    sub = _subscriber(s)
    hub = s.hub
    return Replies(Push([b"psubscribe", p, hub.psubscribe(sub, ns, p)]) for p in args[1:])


def unsubscribe(s: Session, args: list[bytes]) -> Reply:
    """UNSUBSCRIBE [channel ...]: one confirmation per channel (every one when none is named)."""
    return _leave(s, args, patterns=False)


def punsubscribe(s: Session, args: list[bytes]) -> Reply:
    """PUNSUBSCRIBE [pattern ...]: one confirmation per pattern (every one when none is named)."""
    return _leave(s, args, patterns=True)


def _leave(s: Session, args: list[bytes], *, patterns: bool) -> Reply:
    ns = s.require().namespace
    sub = _subscriber(s)
    names = args[1:] or None
    drop = s.hub.punsubscribe if patterns else s.hub.unsubscribe
    return Replies(Push(reply) for reply in drop(sub, ns, names))


def publish(s: Session, args: list[bytes]) -> Reply:
    """PUBLISH channel message: how many subscriptions in the namespace received it."""
    return s.hub.publish(s.require().namespace, args[1], args[2])


def pubsub(s: Session, args: list[bytes]) -> Reply:
    """PUBSUB subcommand [argument ...]."""
    return run_subcommand(_ROWS, s, args)


def pubsub_channels(s: Session, args: list[bytes]) -> Reply:
    """PUBSUB CHANNELS [pattern]: the namespace's channels with a subscriber."""
    if len(args) > 3:
        # Redis's own words for this one case.
        msg = "unknown subcommand or wrong number of arguments for 'CHANNELS'. Try PUBSUB HELP."
        raise CommandError(msg)
    pattern = args[2] if len(args) == 3 else None
    if pattern is not None:
        check_pattern(pattern)
    return s.hub.channels(s.require().namespace, pattern)


def pubsub_numsub(s: Session, args: list[bytes]) -> Reply:
    """PUBSUB NUMSUB [channel ...]: each channel and its subscriber count, flat."""
    ns = s.require().namespace
    out: list[bytes | int] = []
    for ch in args[2:]:
        out += (ch, s.hub.numsub(ns, ch))
    return out


def pubsub_numpat(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """PUBSUB NUMPAT: how many distinct patterns the namespace has subscriptions to."""
    return s.hub.numpat(s.require().namespace)


def pubsub_help(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """PUBSUB HELP."""
    return help_lines("PUBSUB", PUBSUB_SUBCOMMANDS)


PUBSUB_SUBCOMMANDS: Final = (
    Command(
        "pubsub|channels",
        pubsub_channels,
        -2,
        _P,
        "pubsub",
        "The namespace's channels that have a subscriber, optionally matching a pattern.",
        "PUBSUB CHANNELS [pattern]",
        "2.8.0",
    ),
    Command(
        "pubsub|numsub",
        pubsub_numsub,
        -2,
        _P,
        "pubsub",
        "Each channel and how many subscribe to it in the namespace.",
        "PUBSUB NUMSUB [channel [channel ...]]",
        "2.8.0",
    ),
    Command(
        "pubsub|numpat",
        pubsub_numpat,
        2,
        _P,
        "pubsub",
        "How many distinct patterns the namespace has subscriptions to.",
        "PUBSUB NUMPAT",
        "2.8.0",
    ),
    Command(
        "pubsub|help",
        pubsub_help,
        2,
        (LOADING, STALE),
        "pubsub",
        "The subcommands of PUBSUB.",
        "PUBSUB HELP",
        "6.2.0",
    ),
)
_ROWS: Final = subcommand_rows(PUBSUB_SUBCOMMANDS)

COMMANDS: Final = (
    Command(
        "subscribe",
        subscribe,
        -2,
        _SUB,
        "pubsub",
        "Listen for messages on channels of the namespace.",
        "SUBSCRIBE channel [channel ...]",
        "2.0.0",
    ),
    Command(
        "psubscribe",
        psubscribe,
        -2,
        _SUB,
        "pubsub",
        "Listen for messages on channels of the namespace matching glob patterns.",
        "PSUBSCRIBE pattern [pattern ...]",
        "2.0.0",
    ),
    Command(
        "unsubscribe",
        unsubscribe,
        -1,
        _SUB,
        "pubsub",
        "Stop listening on channels (every one when none is named).",
        "UNSUBSCRIBE [channel [channel ...]]",
        "2.0.0",
    ),
    Command(
        "punsubscribe",
        punsubscribe,
        -1,
        _SUB,
        "pubsub",
        "Stop listening on patterns (every one when none is named).",
        "PUNSUBSCRIBE [pattern [pattern ...]]",
        "2.0.0",
    ),
    Command(
        "publish",
        publish,
        3,
        (PUBSUB, LOADING, STALE, FAST),
        "pubsub",
        "Send a message to the namespace's subscribers of a channel.",
        "PUBLISH channel message",
        "2.0.0",
    ),
    Command(
        "pubsub",
        pubsub,
        -2,
        (),
        "pubsub",
        "Introspect the namespace's channels and patterns.",
        "PUBSUB subcommand [argument ...]",
        "2.8.0",
        subcommands=PUBSUB_SUBCOMMANDS,
    ),
)
