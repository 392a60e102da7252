"""Write events: noted as a tuple when a write commits, rendered and written once per loop turn.

Every committed write is logged (``stash_created``, ``key_set``, ...: namespace, key or
id, ``ttl_seconds``, ``payload_bytes``; never the value). Through structlog each event
cost 11-20 us to render, more than the write itself, so they take their own way out:
:meth:`WriteEvents.note` appends the operation and its result to a list (well under a
microsecond), and once the loop has finished the turn's callbacks (the replies already
written) :meth:`WriteEvents.flush` renders them with one timestamp and writes them to the
log stream in one call, in the same line format structlog gives every other event
(``--log-format json`` or ``console``).

What each kind of operation's event says is :data:`DESCRIBE`, one entry per kind; the
same entry names the write's keyspace notifications (:func:`notifications`), so a write
is described once for the log and for subscribers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO, TypeAlias

from stashd import ops
from stashd.errors import StashError
from stashd.service import seconds_left

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: The most events held for one flush: a turn that commits more renders and writes them
#: at once, so the list never holds more than this many operations alive.
MAX_HELD: Final = 4096

# As structlog's JSONRenderer writes strings: ASCII, everything else escaped.
_ENCODE: Final = json.JSONEncoder().encode
#: The bytes of text that is the same in JSON and on a console line: printable ASCII but
#: quote, backslash and space. Anything else is written as a JSON string (so a key holding
#: a newline cannot forge a log line).
_PLAIN: Final = bytes(b for b in range(0x21, 0x7F) if b not in b'"\\')


#: An event's fields after its namespace, in order (names for a key or id say which).
Shape = tuple[str, ...]
#: What a write event says beyond its name and namespace: its fields and their values.
Noted = tuple[Shape, tuple[Any, ...]]
#: A write's keyspace notifications: (event, key) pairs, Redis's event names.
Notices = tuple[tuple[bytes, bytes], ...]
Notify: TypeAlias = "Callable[[Any, Any], Notices]"

_KEY_TTL_SIZE: Final = ("key", "ttl_seconds", "payload_bytes")
_ID_TTL_SIZE: Final = ("id", "ttl_seconds", "payload_bytes")
_ID_TTL: Final = ("id", "ttl_seconds")
_KEY_TTL: Final = ("key", "ttl_seconds")
_KEYS_TTL_SIZE: Final = ("keys", "ttl_seconds", "payload_bytes")
_KEY_REMOVED: Final = ("key", "removed")
_ID_REMOVED: Final = ("id", "removed")
_KEYS_REMOVED: Final = ("keys", "removed")
_KEY: Final = ("key",)
_KEY_SIZE: Final = ("key", "payload_bytes")
_REMOVED: Final = ("removed",)
#: Fields whose values are text (quoted in JSON); the others are integers.
_TEXT: Final = frozenset({"key", "id"})

# Each takes the operation, its result and the time in ms, and returns what the event
# says, or None when nothing was written. The arguments are Any: each function serves
# the one kind DESCRIBE gives it.


def _set(op: Any, result: Any, now: int) -> Noted | None:  # noqa: ANN401
    if not result[0]:  # NX or XX said no
        return None
    return _KEY_TTL_SIZE, (op.key, seconds_left(op.expires_at, now), len(op.value))


def _set_many(op: Any, written: Any, now: int) -> Noted | None:  # noqa: ANN401
    if not written:  # MSETNX found a key in use
        return None
    size = sum(len(value) for _, value in op.pairs)
    return _KEYS_TTL_SIZE, (len(op.pairs), seconds_left(op.expires_at, now), size)


def _create(op: Any, key: Any, now: int) -> Noted:  # noqa: ANN401
    return _ID_TTL_SIZE, (key, seconds_left(op.expires_at, now), len(op.value))


def _update(op: Any, ttl_ms: Any, now: int) -> Noted | None:  # noqa: ANN401
    # RESP's UPDATE: the TTL left afterwards, in ms.
    if ttl_ms is None:
        return None
    ttl = seconds_left(now + ttl_ms, now)
    if op.data is None:  # a merge or an extension: no new document of known size
        return _ID_TTL, (op.key, ttl)
    return _ID_TTL_SIZE, (op.key, ttl, len(op.data))


def _update_entry(op: Any, entry: Any, now: int) -> Noted | None:  # noqa: ANN401
    # The HTTP door's UPDATE: the entry as written.
    if entry is None:
        return None
    return _ID_TTL_SIZE, (op.key, seconds_left(entry.expires_at, now), len(entry.value))


def _removing(one: Shape) -> Callable[[Any, Any, int], Noted]:
    """DEL's event and FORGET's: ``one`` names a single key (``key`` or ``id``)."""

    def describe(op: Any, removed: Any, _: int) -> Noted:  # noqa: ANN401
        if len(op.keys) == 1:
            return one, (op.keys[0], removed)
        return _KEYS_REMOVED, (len(op.keys), removed)

    return describe


def _getdel(op: Any, old: Any, _: int) -> Noted | None:  # noqa: ANN401
    return None if old is None else (_KEY_REMOVED, (op.key, 1))


def _getex(op: Any, old: Any, now: int) -> Noted | None:  # noqa: ANN401
    if old is None or op.expires_at is None:
        return None
    return _KEY_TTL, (op.key, seconds_left(op.expires_at, now))


def _expire(op: Any, changed: Any, now: int) -> Noted | None:  # noqa: ANN401
    return (_KEY_TTL, (op.key, seconds_left(op.when, now))) if changed else None


def _key(op: Any, _: Any, __: int) -> Noted:  # noqa: ANN401
    return _KEY, (op.key,)


def _moved(op: Any, moved: Any, _: int) -> Noted | None:  # noqa: ANN401
    # RENAMENX onto a name in use, COPY onto one without REPLACE: nothing was written.
    return (_KEY, (op.key,)) if moved else None


def _append(op: Any, length: Any, _: int) -> Noted:  # noqa: ANN401
    return _KEY_SIZE, (op.key, length)


def _edited(op: Any, _: Any, __: int) -> Noted | None:  # noqa: ANN401
    # A container's new size; 0 when it was emptied, and so deleted.
    return None if op.written < 0 else (_KEY_SIZE, (op.key, op.written))


def _edited_two(op: Any, _: Any, __: int) -> Noted:  # noqa: ANN401
    return _KEY, (op.key,)


def _stored(op: Any, _: Any, __: int) -> Noted | None:  # noqa: ANN401
    # The destination's new size; 0 when the result was empty, and so deleted; nothing
    # when the result was empty and there was no destination to delete.
    return None if op.written < 0 else (_KEY_SIZE, (op.key, op.written))


def _flush(op: Any, _: Any, __: int) -> Noted:  # noqa: ANN401
    return _REMOVED, (op.freed,)


# Keyspace notifications: each takes the operation and its result (which the log's
# description has already said is a write), and gives (event, key) pairs in Redis's names.


def _named(event: bytes) -> Notify:
    """One notification of ``event`` on the operation's key."""
    return lambda op, _: ((event, op.key),)


def _set_keys(op: Any, _: Any) -> Notices:  # noqa: ANN401
    return tuple((b"set", key) for key, _ in op.pairs)


def _created(_: Any, key: Any) -> Notices:  # noqa: ANN401
    return ((b"stash", key),)


def _gone(event: bytes) -> Notify:
    """DEL's notifications and FORGET's: one per key that was removed."""
    return lambda op, _: tuple((event, key) for key in op.gone)


def _renamed(op: Any, _: Any) -> Notices:  # noqa: ANN401
    return ((b"rename_from", op.key), (b"rename_to", op.dst))


def _copied(op: Any, _: Any) -> Notices:  # noqa: ANN401
    return ((b"copy_to", op.dst),)


def _container(op: Any, _: Any) -> Notices:  # noqa: ANN401
    # Named by the command that made it; an emptied container is deleted, as Redis says.
    event = CONTAINER_EVENTS.get(op.event, op.event).encode() or b"changed"
    if op.written == 0:
        return ((event, op.key), (b"del", op.key))
    return ((event, op.key),)


def _container_two(op: Any, _: Any) -> Notices:  # noqa: ANN401
    event = CONTAINER_EVENTS.get(op.event, op.event).encode() or b"changed"
    return ((event, op.key), (event, op.dst))


def _nothing(_: Any, __: Any) -> Notices:  # noqa: ANN401
    return ()


#: Container commands whose keyspace event Redis names otherwise than the command.
CONTAINER_EVENTS: Final = {
    "hmset": "hset",
    "hsetnx": "hset",
    "zincrby": "zincr",
    "zremrangebyscore": "zrembyscore",
    "zremrangebyrank": "zrembyrank",
    "zremrangebylex": "zrembylex",
    "blpop": "lpop",
    "brpop": "rpop",
    "bzpopmin": "zpopmin",
    "bzpopmax": "zpopmax",
    "bzmpop": "zmpop",
}

#: Per kind of write: its log event's name, what it says, and its keyspace notifications
#: (asked only of a write whose description is not None: one that wrote).
DESCRIBE: Final[dict[type[ops.Op], tuple[str, Callable[[Any, Any, int], Noted | None], Notify]]] = {
    ops.Create: ("stash_created", _create, _created),
    ops.Update: ("stash_updated", _update, _named(b"update")),
    ops.UpdateEntry: ("stash_updated", _update_entry, _named(b"update")),
    ops.Forget: ("stash_forgotten", _removing(_ID_REMOVED), _gone(b"forget")),
    ops.Set: ("key_set", _set, _named(b"set")),
    ops.SetMany: ("key_set", _set_many, _set_keys),
    ops.Delete: ("key_deleted", _removing(_KEY_REMOVED), _gone(b"del")),
    ops.GetDel: ("key_deleted", _getdel, _named(b"del")),
    ops.GetEx: ("key_expiry_set", _getex, _named(b"expire")),
    ops.Expire: ("key_expiry_set", _expire, _named(b"expire")),
    ops.IncrBy: ("key_incremented", _key, _named(b"incrby")),
    ops.Append: ("key_appended", _append, _named(b"append")),
    ops.Rename: ("key_renamed", _moved, _renamed),
    ops.Copy: ("key_copied", _moved, _copied),
    ops.Flush: ("namespace_flushed", _flush, _nothing),  # Redis names no key either
    ops.Edit: ("key_changed", _edited, _container),
    ops.EditFirst: ("key_changed", _edited, _container),
    ops.EditTwo: ("key_moved", _edited_two, _container_two),
    ops.StoreFrom: ("key_stored", _stored, _container),
}


def committed(op: ops.Op, result: Any) -> Iterator[tuple[ops.Op, Any]]:  # noqa: ANN401
    """The writes a committed operation made, with their results.

    A transaction's or a script's steps one by one (those that ran and succeeded), any
    other operation as itself.
    """
    if type(op) is ops.Transaction:
        if result is None:  # a WATCHed key changed: nothing ran
            return
        for inner, inner_result in zip(op.ops, result, strict=True):
            if inner.writes and not isinstance(inner_result, StashError):
                yield from committed(inner, inner_result)
        return
    if type(op) is ops.Script:
        for step, step_result in op.ran:
            if step is not None and step.writes and not isinstance(step_result, StashError):
                yield from committed(step, step_result)
        return
    yield op, result


def notifications(op: ops.Op, result: Any, now: int) -> Iterator[tuple[str, bytes, bytes]]:  # noqa: ANN401
    """A committed write's keyspace notifications, (namespace, event, key), in order.

    Derived from :data:`DESCRIBE`, the same table as the write's log event: a write the
    log says nothing of (SET NX that found the key, EXPIRE of no key) notifies nothing.
    """
    for one, one_result in committed(op, result):
        described = DESCRIBE.get(type(one))
        if described is None:
            continue
        _, describe, notify = described
        if describe(one, one_result, now) is not None:
            ns = one.ns
            for event, key in notify(one, one_result):
                yield ns, event, key


class WriteEvents:
    """The daemon's write events: noted at commit, written in one batch per loop turn.

    ``fmt`` is the log format (``json`` or ``console``); ``stream`` where lines go (the
    log's stderr); ``clock`` the wall clock in ms, for ``ttl_seconds``.
    """

    def __init__(self, fmt: str, clock: Callable[[], int], stream: TextIO | None = None) -> None:
        self.fmt = fmt
        self.clock = clock
        self.stream = stream
        self._held: list[tuple[ops.Op, Any, str | None]] = []
        self._scheduled = False
        # A line's template per event, door and set of fields present: built once each.
        self._templates: dict[tuple[str, Shape, str | None], tuple[str, bool]] = {}

    def note(self, op: ops.Op, result: Any, door: str | None = None) -> None:  # noqa: ANN401
        """A committed write's event, to be written once this turn's callbacks have run."""
        if type(op) is ops.Transaction or type(op) is ops.Script:
            for one, one_result in committed(op, result):
                self.note(one, one_result, door)
            return
        held = self._held
        held.append((op, result, door))
        if len(held) >= MAX_HELD:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no loop (a store driven directly): write at once
                self.flush()

    def flush(self) -> None:
        """Render what was noted with one timestamp and write it in one call."""
        self._scheduled = False
        held, self._held = self._held, []
        if not held:
            return
        now = self.clock()
        stamp = (
            dt.datetime.fromtimestamp(now / 1000, dt.UTC)
            .isoformat(timespec="microseconds")
            .replace("+00:00", "Z")
        )
        json_format = self.fmt == "json"
        templates = self._templates
        quoted: dict[str, str] = {}  # each namespace's text, worked out once per flush
        lines = []
        for op, result, door in held:
            described = DESCRIBE.get(type(op))
            if described is None:
                continue
            name, describe, _ = described
            noted = describe(op, result, now)
            if noted is None:
                continue
            shape, values = noted
            made = templates.get((name, shape, door))
            if made is None:
                made = _template(name, shape, door, json_format), shape[0] in _TEXT
                templates[name, shape, door] = made
            template, keyed = made
            ns = quoted.get(op.ns)
            if ns is None:
                ns = quoted[op.ns] = _quote(op.ns.encode(), json_format)
            if keyed:
                values = (_quote(values[0], json_format), *values[1:])
            lines.append(template.format(ns, *values, stamp))
        if lines:
            stream = self.stream if self.stream is not None else sys.stderr
            stream.write("".join(lines))
            stream.flush()


def _quote(text: bytes, json_format: bool = True) -> str:
    """Text as a JSON string; on a console line plain text stays as it is."""
    if not text.translate(None, _PLAIN):  # nothing but plain bytes
        plain = text.decode("ascii")
        return f'"{plain}"' if json_format else plain
    encoded: str = _ENCODE(text.decode("utf-8", "replace"))
    return encoded


def _template(name: str, shape: Shape, door: str | None, json_format: bool) -> str:
    """A line's format template: structlog's JSON or console layout for these fields.

    Its arguments are the namespace, the shape's values and the timestamp; the door, the
    same for every event of a template, is written into it.
    """
    fields = ["namespace", *shape]
    stamp = len(fields)  # the timestamp comes after the fields' values
    if json_format:
        body = "".join(f'"{field}": {{{i}}}, ' for i, field in enumerate(fields))
        if door is not None:
            body = f'"door": {_quote(door.encode())}, ' + body
        return f'{{{{{body}"event": "{name}", "level": "info", "timestamp": "{{{stamp}}}"}}}}\n'
    # The console layout sorts the fields by name, after the timestamp and the event.
    named = {field: f"{{{i}}}" for i, field in enumerate(fields)}
    if door is not None:
        named["door"] = door
    pairs = " ".join(f"{field}={named[field]}" for field in sorted(named))
    return f"{{{stamp}}} [info     ] {name:<30} {pairs}\n"
