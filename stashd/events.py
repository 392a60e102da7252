"""Write events: noted as a tuple when a write commits, rendered and written once per loop turn.

Every committed write is logged (``stash_created``, ``key_set``, ...: namespace, key or
id, ``ttl_seconds``, ``payload_bytes``; never the value). Through structlog each event
cost 11-20 us to render, more than the write itself, so they take their own way out:
:meth:`WriteEvents.note` appends the operation and its result to a list (well under a
microsecond), and once the loop has finished the turn's callbacks (the replies already
written) :meth:`WriteEvents.flush` renders them with one timestamp and writes them to the
log stream in one call, in the same line format structlog gives every other event
(``--log-format json`` or ``console``).

What each kind of operation's event says is :data:`DESCRIBE`, one entry per kind.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TextIO

from stashd import ops
from stashd.errors import StashError
from stashd.service import seconds_left

if TYPE_CHECKING:
    from collections.abc import Callable

#: The most events held for one flush: a turn that commits more renders and writes them
#: at once, so the list never holds more than this many operations alive.
MAX_HELD: Final = 4096

_ENCODE: Final = json.JSONEncoder(ensure_ascii=False).encode


class Noted(NamedTuple):
    """What a write event reports: the key (or id), expiry, size and count removed."""

    key: bytes
    ttl_seconds: int | None = None
    payload_bytes: int | None = None
    removed: int | None = None
    keys: int | None = None


# Each takes the operation, its result and the time in ms; None: nothing was written.
# The arguments are Any: each function serves the one kind DESCRIBE gives it.


def _set(op: Any, result: Any, now: int) -> Noted | None:  # noqa: ANN401
    written, _ = result
    return Noted(op.key, seconds_left(op.expires_at, now), len(op.value)) if written else None


def _set_many(op: Any, _: Any, now: int) -> Noted:  # noqa: ANN401
    size = sum(len(value) for _, value in op.pairs)
    return Noted(b"", seconds_left(op.expires_at, now), size, keys=len(op.pairs))


def _create(op: Any, key: Any, now: int) -> Noted:  # noqa: ANN401
    return Noted(key, seconds_left(op.expires_at, now), len(op.value))


def _update(op: Any, ttl_ms: Any, now: int) -> Noted | None:  # noqa: ANN401
    # RESP's UPDATE: the TTL left afterwards, in ms.
    if ttl_ms is None:
        return None
    size = None if op.data is None else len(op.data)
    return Noted(op.key, seconds_left(now + ttl_ms, now), size)


def _update_entry(op: Any, entry: Any, now: int) -> Noted | None:  # noqa: ANN401
    # The HTTP door's UPDATE: the entry as written.
    if entry is None:
        return None
    return Noted(op.key, seconds_left(entry.expires_at, now), len(entry.value))


def _delete(op: Any, removed: Any, _: int) -> Noted:  # noqa: ANN401
    if len(op.keys) == 1:
        return Noted(op.keys[0], removed=removed)
    return Noted(b"", removed=removed, keys=len(op.keys))


def _getdel(op: Any, old: Any, _: int) -> Noted | None:  # noqa: ANN401
    return None if old is None else Noted(op.key, removed=1)


def _getex(op: Any, old: Any, now: int) -> Noted | None:  # noqa: ANN401
    if old is None or op.expires_at is None:
        return None
    return Noted(op.key, seconds_left(op.expires_at, now))


def _expire(op: Any, changed: Any, now: int) -> Noted | None:  # noqa: ANN401
    return Noted(op.key, seconds_left(op.when, now)) if changed else None


def _key(op: Any, _: Any, __: int) -> Noted:  # noqa: ANN401
    return Noted(op.key)


def _append(op: Any, length: Any, _: int) -> Noted:  # noqa: ANN401
    return Noted(op.key, payload_bytes=length)


def _flush(op: Any, _: Any, __: int) -> Noted:  # noqa: ANN401
    return Noted(b"", removed=op.freed)


#: Per kind of write: its event's name, whether its key is an id, and what it says.
DESCRIBE: Final[dict[type[ops.Op], tuple[str, bool, Callable[[Any, Any, int], Noted | None]]]] = {
    ops.Create: ("stash_created", True, _create),
    ops.Update: ("stash_updated", True, _update),
    ops.UpdateEntry: ("stash_updated", True, _update_entry),
    ops.Forget: ("stash_forgotten", True, _delete),
    ops.Set: ("key_set", False, _set),
    ops.SetMany: ("key_set", False, _set_many),
    ops.Delete: ("key_deleted", False, _delete),
    ops.GetDel: ("key_deleted", False, _getdel),
    ops.GetEx: ("key_expiry_set", False, _getex),
    ops.Expire: ("key_expiry_set", False, _expire),
    ops.IncrBy: ("key_incremented", False, _key),
    ops.Append: ("key_appended", False, _append),
    ops.Rename: ("key_renamed", False, _key),
    ops.Flush: ("namespace_flushed", False, _flush),
}


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

    def note(self, op: ops.Op, result: Any, door: str | None = None) -> None:  # noqa: ANN401
        """A committed write's event, to be written once this turn's callbacks have run."""
        if type(op) is ops.Transaction:
            if result is None:  # a WATCHed key changed: nothing ran
                return
            for inner, inner_result in zip(op.ops, result, strict=True):
                if inner.writes and not isinstance(inner_result, StashError):
                    self.note(inner, inner_result, door)
            return
        self._held.append((op, result, door))
        if len(self._held) >= MAX_HELD:
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
        render = _json_line if self.fmt == "json" else _console_line
        lines = []
        for op, result, door in held:
            described = DESCRIBE.get(type(op))
            if described is None:
                continue
            name, is_id, describe = described
            noted = describe(op, result, now)
            if noted is not None:
                lines.append(render(name, _fields(op.ns, noted, is_id, door), stamp))
        if lines:
            stream = self.stream if self.stream is not None else sys.stderr
            stream.write("".join(lines))
            stream.flush()


def _fields(ns: str, noted: Noted, is_id: bool, door: str | None) -> list[tuple[str, Any]]:
    """An event's fields in the order structlog would show them."""
    fields: list[tuple[str, Any]] = []
    if door is not None:
        fields.append(("door", door))
    fields.append(("namespace", ns))
    if noted.key:
        fields.append(("id" if is_id else "key", noted.key.decode("utf-8", "replace")))
    if noted.keys is not None:
        fields.append(("keys", noted.keys))
    if noted.ttl_seconds is not None:
        fields.append(("ttl_seconds", noted.ttl_seconds))
    if noted.payload_bytes is not None:
        fields.append(("payload_bytes", noted.payload_bytes))
    if noted.removed is not None:
        fields.append(("removed", noted.removed))
    return fields


def _json_line(name: str, fields: list[tuple[str, Any]], stamp: str) -> str:
    """One event as structlog's JSONRenderer writes it."""
    body = ", ".join(f"{_ENCODE(k)}: {_ENCODE(v)}" for k, v in fields)
    return f'{{{body}, "event": {_ENCODE(name)}, "level": "info", "timestamp": "{stamp}"}}\n'


def _console_line(name: str, fields: list[tuple[str, Any]], stamp: str) -> str:
    """One event as structlog's ConsoleRenderer writes it without colours (keys sorted)."""
    pairs = " ".join(f"{k}={v}" for k, v in sorted(fields))
    return f"{stamp} [info     ] {name:<30} {pairs}\n"
