"""The SQLite store's view: an open transaction's reads and writes of entries, batched.

:class:`SQLiteView` is what operations run against inside one transaction of
:mod:`stashd.store.sqlite`: it fetches the rows of a batch's keys with one ``SELECT ...
IN`` per namespace, remembers every row read or written, and applies the writes with one
``executemany`` per kind before COMMIT. :class:`OneReadView` answers an operation that
reads one row with one statement, outside any transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd.errors import QuotaExceeded
from stashd.quota import check, growth
from stashd.store.sqlite_usage import free_expired, read_usage
from stashd.types import Clock, Entry, wall_clock_ms

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Iterable

    from stashd.ops import Op
    from stashd.types import Quota

#: Batched reads bind this many keys per statement at most, padded up to one of these
#: sizes so that only a few statement texts are ever prepared (and stay cached).
FETCH_SIZES: Final = (1, 4, 16, 64)

#: The sweep finds rows by ``sweep_at``: ``expires_at`` rounded up to a multiple of
#: 2**16 ms (about 65 s). A write that moves a key's expiry within the same window (SET
#: over a key with the same TTL, UPDATE EXTEND, EXPIRE) then leaves the expiry index
#: alone, which halves the pages a random-key write dirties (measured: ~8.5 KB of WAL
#: per SET of a random key with an index on expires_at itself, ~4.2 KB with this one).
#: The price is that a row is physically removed up to ~65 s after it expired; it is
#: invisible from the millisecond it expires either way.
SWEEP_WINDOW_BITS: Final = 16

_GET: Final = (
    "SELECT value, expires_at, version, sweep_at, kind FROM entries WHERE namespace = ? AND key = ?"
)
_GET_ENTRY: Final = (
    "SELECT value, expires_at, version, kind FROM entries WHERE namespace = ? AND key = ?"
)
# Built from placeholders only, never from data.
_FETCH: Final = {
    n: "SELECT key, value, expires_at, version, sweep_at, kind FROM entries "  # noqa: S608
    f"WHERE namespace = ? AND key IN ({', '.join('?' * n)})"
    for n in FETCH_SIZES
}
# A new key's seq is one more than its namespace's largest (the end of an index range).
_UPSERT: Final = (
    "INSERT INTO entries (namespace, key, value, expires_at, version, sweep_at, kind, seq) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, "
    "(SELECT ifnull(max(seq), 0) FROM entries WHERE namespace = ?1) + 1) "
    "ON CONFLICT (namespace, key) DO UPDATE SET "
    "value = excluded.value, expires_at = excluded.expires_at, version = excluded.version, "
    "sweep_at = excluded.sweep_at, kind = excluded.kind"
)
# For a row whose sweep_at stays the same: not naming sweep_at keeps its index untouched.
_UPDATE: Final = (
    "UPDATE entries SET value = ?, expires_at = ?, version = ?, kind = ? "
    "WHERE namespace = ? AND key = ?"
)
_DELETE: Final = "DELETE FROM entries WHERE namespace = ? AND key = ?"
_SCAN: Final = (
    "SELECT seq, key, value, expires_at, version, kind FROM entries "
    "WHERE namespace = ? AND seq > ? ORDER BY seq LIMIT ?"
)
_COUNT: Final = "SELECT count(*) FROM entries WHERE namespace = ? AND expires_at > ?"
_CLEAR: Final = "DELETE FROM entries WHERE namespace = ?"

Slot = tuple[str, bytes]  # (namespace, key)


def sweep_at(expires_at: int) -> int:
    """The first millisecond of the sweep window after the one ``expires_at`` falls in."""
    return ((expires_at >> SWEEP_WINDOW_BITS) + 1) << SWEEP_WINDOW_BITS


class SQLiteView:
    """The :class:`~stashd.types.View` of one connection inside one transaction.

    ``_rows`` holds every row read or written in this transaction (None: no row),
    ``_stored`` the ``sweep_at`` of each such row as the database has it (None: no row),
    and ``_dirty`` the writes not yet sent to SQLite. All three are emptied by
    :meth:`reset` when the transaction ends, so nothing is served from a previous one.

    Quota usage is the usage table's row (``_base``, read once per namespace and
    transaction, its triggers' work added at each :meth:`flush`) plus what the writes
    not yet sent add (``_delta``, counted as they are made), so a check costs no
    statement of its own. ``hands`` (shared by a store's views) says where in each
    namespace a refused write last looked for expired rows.
    """

    __slots__ = (
        "_base",
        "_clock",
        "_delta",
        "_dirty",
        "_execute",
        "_executemany",
        "_gone",
        "_hands",
        "_reborn",
        "_rows",
        "_stored",
    )

    def __init__(
        self,
        conn: sqlite3.Connection,
        clock: Clock = wall_clock_ms,
        hands: dict[str, int] | None = None,
    ) -> None:
        self._execute = conn.execute
        self._executemany = conn.executemany
        self._clock = clock
        self._hands: dict[str, int] = {} if hands is None else hands
        self._rows: dict[Slot, Entry | None] = {}
        self._stored: dict[Slot, int | None] = {}
        self._dirty: dict[Slot, Entry | None] = {}
        self._base: dict[str, list[int]] = {}
        self._delta: dict[str, list[int]] = {}
        self._gone: set[Slot] = set()  # rows read as expired in this transaction
        self._reborn: list[Slot] = []  # such rows written again: deleted, then inserted

    # -- the transaction's memory ----------------------------------------------------
    def reset(self) -> None:
        """Forget everything (the transaction ended, committed or not)."""
        self._rows.clear()
        self._stored.clear()
        self._dirty.clear()
        self._base.clear()
        self._delta.clear()
        self._gone.clear()
        self._reborn.clear()

    def prefetch(self, ops: Iterable[Op]) -> None:
        """Read the rows of every operation's key, one statement per namespace."""
        rows = self._rows
        wanted: dict[str, dict[bytes, None]] = {}
        for op in ops:
            key = op.key
            if key and (op.ns, key) not in rows:
                wanted.setdefault(op.ns, {})[key] = None
        for ns, keys in wanted.items():
            self._fetch(ns, list(keys))

    def _fetch(self, ns: str, keys: list[bytes]) -> None:
        rows, stored = self._rows, self._stored
        step = FETCH_SIZES[-1]
        for start in range(0, len(keys), step):
            chunk = keys[start : start + step]
            size = next(n for n in FETCH_SIZES if n >= len(chunk))
            params = [ns, *chunk, *[chunk[-1]] * (size - len(chunk))]
            found = {row[0]: row for row in self._execute(_FETCH[size], params)}
            for key in chunk:
                row = found.get(key)
                slot = (ns, key)
                if row is None:
                    rows[slot] = stored[slot] = None
                else:
                    rows[slot] = Entry(row[1], row[2], row[3], row[5])
                    stored[slot] = row[4]

    def _row(self, ns: str, key: bytes) -> Entry | None:
        """The row under ``key`` as stored, expired or not."""
        slot = (ns, key)
        try:
            return self._rows[slot]
        except KeyError:
            pass
        row = self._execute(_GET, slot).fetchone()
        if row is None:
            self._rows[slot] = self._stored[slot] = None
            return None
        entry = self._rows[slot] = Entry(row[0], row[1], row[2], row[4])
        self._stored[slot] = row[3]
        return entry

    def flush(self) -> None:
        """Send the collected writes to SQLite (before COMMIT, and before SQL reads)."""
        dirty = self._dirty
        if not dirty:
            return
        stored = self._stored
        upserts: list[tuple[str, bytes, bytes, int, int, int, int]] = []
        updates: list[tuple[bytes, int, int, int, str, bytes]] = []
        deletes: list[Slot] = self._reborn[:]
        self._reborn.clear()
        for slot, e in dirty.items():
            if e is None:
                deletes.append(slot)
                stored[slot] = None
                continue
            window = sweep_at(e.expires_at)
            if stored.get(slot) == window:
                updates.append((e.value, e.expires_at, e.version, e.kind, slot[0], slot[1]))
            else:
                upserts.append((slot[0], slot[1], e.value, e.expires_at, e.version, window, e.kind))
                stored[slot] = window
        dirty.clear()
        if deletes:
            self._executemany(_DELETE, deletes)
        if updates:
            self._executemany(_UPDATE, updates)
        if upserts:
            self._executemany(_UPSERT, upserts)
        # The triggers have now counted these writes in the usage table.
        base = self._base
        for ns, (keys, size) in self._delta.items():
            row = base.get(ns)
            if row is not None:
                row[0] += keys
                row[1] += size
        self._delta.clear()

    def _count(self, ns: str, key: bytes, old: Entry | None, new: Entry | None) -> None:
        """Count a write not yet sent: ``key`` goes from row ``old`` to ``new``."""
        keys, size = growth(
            key, None if old is None else old.value, None if new is None else new.value
        )
        delta = self._delta.get(ns)
        if delta is None:
            self._delta[ns] = [keys, size]
        else:
            delta[0] += keys
            delta[1] += size

    # -- View ------------------------------------------------------------------------
    def get(self, ns: str, key: bytes, now: int) -> Entry | None:
        """The live entry, from this transaction's memory or one SELECT."""
        entry = self._row(ns, key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            self._gone.add((ns, key))  # as the memory store drops it when read
            return None
        return entry

    def put(self, ns: str, key: bytes, entry: Entry) -> None:
        """Remember the write; :meth:`flush` sends it (an upsert keeps the row's id)."""
        slot = (ns, key)
        rows = self._rows
        # An operation has read the key first, all but always: the row is known.
        old = rows[slot] if slot in rows else self._row(ns, key)
        if slot in self._gone:
            # A row read as expired is a key that is gone: written again, it is created
            # anew, at the end of SCAN order, as on every store (View.put); so its row is
            # deleted before the new one goes in, which takes the next seq.
            self._gone.discard(slot)
            self._reborn.append(slot)
            self._stored[slot] = None
        self._count(ns, key, old, entry)
        rows[slot] = entry
        self._dirty[slot] = entry

    def delete(self, ns: str, key: bytes, now: int) -> bool:
        """Remember the removal; True when the key was live."""
        entry = self._row(ns, key)
        if entry is None:
            return False
        slot = (ns, key)
        self._count(ns, key, entry, None)
        self._rows[slot] = None
        self._dirty[slot] = None
        return entry.expires_at > now

    def scan(
        self, ns: str, cursor: int, count: int, now: int
    ) -> tuple[int, list[tuple[bytes, Entry]]]:
        """A page in seq order; the cursor is the last seq examined, 0 at the end."""
        self.flush()
        count = max(count, 1)
        # One row more than asked says whether there is a next page.
        rows = self._execute(_SCAN, (ns, cursor, count + 1)).fetchall()
        page = rows[:count]
        out = [
            (key, Entry(value, exp, ver, kind))
            for _, key, value, exp, ver, kind in page
            if exp > now
        ]
        return (page[-1][0] if len(rows) > count else 0), out

    def count(self, ns: str, now: int) -> int:
        """Live rows of the namespace."""
        self.flush()
        n: int = self._execute(_COUNT, (ns, now)).fetchone()[0]
        return n

    def clear(self, ns: str) -> None:
        """Delete the namespace's rows."""
        self.flush()
        self._execute(_CLEAR, (ns,))
        self._base.pop(ns, None)  # the triggers changed it: read it again when asked
        rows, stored = self._rows, self._stored
        for slot in [slot for slot in rows if slot[0] == ns]:
            rows[slot] = stored[slot] = None

    def usage(self, ns: str, now: int) -> tuple[int, int]:  # noqa: ARG002 - part of View
        """The usage table's row, plus what the writes not yet sent add."""
        base = self._base.get(ns)
        if base is None:
            base = self._base[ns] = list(read_usage(self._execute, ns))
        delta = self._delta.get(ns)
        if delta is None:
            return base[0], base[1]
        return base[0] + delta[0], base[1] + delta[1]

    def check_quota(self, ns: str, add_keys: int, add_bytes: int, quota: Quota) -> None:
        """Check against :meth:`usage`; before refusing, delete a slice of expired rows."""
        keys, size = self.usage(ns, 0)
        try:
            check(keys, size, add_keys, add_bytes, quota)
        except QuotaExceeded:
            self._free_expired(ns)
            keys, size = self.usage(ns, 0)
            check(keys, size, add_keys, add_bytes, quota)

    def _free_expired(self, ns: str) -> None:
        """Delete the namespace's expired rows that this transaction knows, and a slice more."""
        now = self._clock()
        self.flush()
        rows, stored = self._rows, self._stored
        known = [
            slot
            for slot, entry in rows.items()
            if slot[0] == ns and entry is not None and entry.expires_at <= now
        ]
        if known:
            self._executemany(_DELETE, known)
            for slot in known:
                rows[slot] = stored[slot] = None
        # Rows this transaction holds were dealt with above; the slice finds others.
        self._hands[ns] = free_expired(self._execute, ns, self._hands.get(ns, 0), now)
        self._base.pop(ns, None)  # the triggers changed it: read it again


class OneReadView:
    """The view of an operation that reads one row with one statement (``Op.ONE_READ``).

    No transaction is open and nothing is remembered: the SELECT is its own snapshot,
    and skipping the bookkeeping of :class:`SQLiteView` is most of what makes a direct
    GET cheaper than a transaction would. Any other access is a bug in the operation's
    ONE_READ claim.
    """

    __slots__ = ("_execute",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._execute = conn.execute

    def get(self, ns: str, key: bytes, now: int) -> Entry | None:
        """The live entry, by one SELECT."""
        row = self._execute(_GET_ENTRY, (ns, key)).fetchone()
        if row is None or row[1] <= now:
            return None
        return Entry(row[0], row[1], row[2], row[3])

    def _not_one_read(self, *_: object) -> Any:  # noqa: ANN401 - stands in for any method
        msg = "an operation marked ONE_READ did more than read one row"
        raise AssertionError(msg)

    put = delete = scan = count = clear = check_quota = usage = _not_one_read
