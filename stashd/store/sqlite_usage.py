"""The SQLite store's side of storage quotas: reading the usage table, and freeing room.

The ``usage`` table (see schema.sql) holds each namespace's keys and bytes, kept exact by
triggers on ``entries``; :class:`~stashd.store.sqlite_view.SQLiteView` adds the writes it has
not sent yet. This module holds the statements around it: reading a row, filling the
table for a file from before it, freeing expired rows before a write is refused, and
checking a whole batch of new ids at once for the store's fast STASH path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stashd.errors import QuotaExceeded
from stashd.quota import check, entry_bytes

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

    from stashd.ops import Op
    from stashd.types import Entry

    Execute = Callable[..., sqlite3.Cursor]

#: Rows of its namespace a write the quota would refuse examines for expired rows to
#: delete before it is refused: bounds what a tenant at its quota can make one write
#: cost (a few milliseconds at most); the next refusal goes on from there.
QUOTA_FREE_ROWS: Final = 2048

_USAGE: Final = "SELECT keys, bytes FROM usage WHERE namespace = ?"
#: The rows a refused write examines for expired ones, from where the last one stopped.
_EXAMINE: Final = (
    "SELECT id, seq, expires_at FROM entries WHERE namespace = ? AND seq > ? ORDER BY seq LIMIT ?"
)
_DELETE_ID: Final = "DELETE FROM entries WHERE id = ?"
#: Fills the usage table of a file from before it (see schema.sql).
FILL_USAGE: Final = (
    "INSERT INTO usage (namespace, keys, bytes) "
    "SELECT namespace, count(*), sum(length(key) + length(value)) FROM entries GROUP BY namespace"
)


def read_usage(execute: Execute, ns: str) -> tuple[int, int]:
    """The namespace's (keys, bytes) as the usage table has them."""
    row = execute(_USAGE, (ns,)).fetchone()
    return (0, 0) if row is None else (row[0], row[1])


def free_expired(execute: Execute, ns: str, hand: int, now: int) -> int:
    """Delete the expired rows among the namespace's next QUOTA_FREE_ROWS after ``hand``.

    ``hand`` is a seq (SCAN order); the result is where the next call goes on, 0 once
    the namespace's end was reached, so refusals in a row look at all of it in turn.
    """
    examined = execute(_EXAMINE, (ns, hand, QUOTA_FREE_ROWS)).fetchall()
    for row_id, _, expires_at in examined:
        if expires_at <= now:
            execute(_DELETE_ID, (row_id,))
    return examined[-1][1] if len(examined) == QUOTA_FREE_ROWS else 0


def lacks_usage(conn: sqlite3.Connection) -> bool:
    """True for a file whose usage table the schema is about to create.

    Its rows (if any: a file from before the table) are then counted into it by
    :data:`FILL_USAGE` in the same transaction, after the triggers exist, so no write
    can fall between the count and the triggers.
    """
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'usage'")
    return found.fetchone() is None


def creates_fit(conn: sqlite3.Connection, ops: list[Op], rows: list[tuple[bytes, Entry]]) -> bool:
    """True when every operation's fresh row stays within its quota, counting those before it.

    Each row is counted as a new key, though one may replace an expired row: a batch
    that does not fit this way runs the general way, where the operations check (and
    free expired rows) one by one.
    """
    if all(op.quota is None for op in ops):
        return True
    usage: dict[str, list[int]] = {}
    for op, (key, entry) in zip(ops, rows, strict=True):
        held = usage.get(op.ns)
        if held is None:
            held = usage[op.ns] = list(read_usage(conn.execute, op.ns))
        size = entry_bytes(key, entry.value)
        if op.quota is not None:
            try:
                check(held[0], held[1], 1, size, op.quota)
            except QuotaExceeded:
                return False
        held[0] += 1
        held[1] += size
    return True
