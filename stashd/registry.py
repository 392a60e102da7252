"""The API key registry: users, tiers and key digests, behind a small storage interface.

:class:`Registry` is all that :mod:`stashd.tenancy` needs from storage, so the Redis
backend can keep the registry in Redis. :class:`SQLiteRegistry` keeps it in the SQLite
file named by ``--db`` (tables of its own, see ``registry.sql``), which ``stash keys``
and a daemon share: WAL lets the daemon read while the CLI writes, and ``busy_timeout``
makes a writer wait for another instead of failing. Nothing here ever sees a plaintext
key; records carry digests only.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from pathlib import Path

#: The tier of a user created without one.
DEFAULT_TIER: Final = "free"
#: How long a statement waits for another connection's write lock before failing.
BUSY_TIMEOUT_MS: Final = 5000

_SCHEMA: Final = resources.files("stashd").joinpath("registry.sql").read_text()

_RECORD: Final = (
    "SELECT k.key_id, k.digest, k.user_name, u.tier, k.created_at, k.revoked_at "
    "FROM api_keys AS k JOIN api_users AS u ON u.name = k.user_name"
)


class RegistryError(Exception):
    """The registry cannot be opened, read or written; the message names the file and cause."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One registered key as stored: never the key, only its digest."""

    key_id: str
    digest: bytes
    user: str
    tier: str  # the user's tier
    created_at_ms: int
    revoked_at_ms: int | None = None


class Registry(Protocol):
    """Storage of users and key digests; every method is one short atomic step."""

    #: True when it is reached over the network, as an :class:`AsyncRegistry`: the
    #: daemon then awaits its lookups instead of blocking the loop on them.
    remote: bool

    def add_key(
        self, key_id: str, digest: bytes, user: str, tier: str | None, now_ms: int
    ) -> tuple[KeyRecord, str | None]:
        """Store a key for ``user`` (created with ``tier`` or the default tier if new).

        A ``tier`` for an existing user moves the user to it. Returns the new record and
        the user's previous tier when this call changed it.
        """
        ...

    def find(self, digest: bytes) -> KeyRecord | None:
        """The key with this digest, revoked or not, or None."""
        ...

    def revoke(self, key_id: str, now_ms: int) -> KeyRecord | None:
        """Mark a key revoked (once; a second call keeps the first time); None if unknown."""
        ...

    def records(self) -> list[KeyRecord]:
        """Every key, by user and then creation time."""
        ...

    def revoked_since(self, since_ms: int) -> set[str]:
        """Ids of keys revoked at or after ``since_ms``."""
        ...

    def close(self) -> None:
        """Release the storage."""
        ...


class AsyncRegistry(Registry, Protocol):
    """A registry reached over the network (Redis): the daemon's lookups are awaited."""

    async def find_async(self, digest: bytes) -> KeyRecord | None:
        """:meth:`find` without blocking the event loop."""
        ...

    async def revoked_since_async(self, since_ms: int) -> set[str]:
        """:meth:`revoked_since` without blocking the event loop."""
        ...

    async def aclose(self) -> None:
        """Release the storage, asynchronous connections included."""
        ...


class SQLiteRegistry:
    """The registry in a SQLite file, shared with the data store and other processes."""

    #: A file on this machine: lookups are answered at once.
    remote = False

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit: every lookup sees the latest committed keys; writes say BEGIN.
            self._db = sqlite3.connect(path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise RegistryError(f"cannot open the key registry {path}: {exc}") from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise RegistryError(
                    f"cannot use {path} for the key registry: SQLite refused WAL mode "
                    f"(got {mode!r}; is it on a network file system?)"
                )
            self._db.execute("PRAGMA foreign_keys = ON")
            self._db.executescript(f"BEGIN IMMEDIATE;\n{_SCHEMA}\nCOMMIT;")
        except sqlite3.Error as exc:
            self._rollback()
            self._db.close()
            raise RegistryError(f"cannot use {path} for the key registry: {exc}") from None
        except RegistryError:
            self._db.close()
            raise

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def add_key(
        self, key_id: str, digest: bytes, user: str, tier: str | None, now_ms: int
    ) -> tuple[KeyRecord, str | None]:
        """Create the user if needed, adjust its tier if asked, insert the digest."""
        db = self._db
        previous: str | None = None
        try:
            db.execute("BEGIN IMMEDIATE")
            row = db.execute("SELECT tier FROM api_users WHERE name = ?", (user,)).fetchone()
            if row is None:
                tier = tier or DEFAULT_TIER
                db.execute(
                    "INSERT INTO api_users (name, tier, created_at) VALUES (?, ?, ?)",
                    (user, tier, now_ms),
                )
            elif tier is not None and tier != row[0]:
                previous = row[0]
                db.execute("UPDATE api_users SET tier = ? WHERE name = ?", (tier, user))
            else:
                tier = row[0]
            db.execute(
                "INSERT INTO api_keys (key_id, digest, user_name, created_at) VALUES (?, ?, ?, ?)",
                (key_id, digest, user, now_ms),
            )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise RegistryError(f"cannot add a key to {self.path}: {exc}") from None
        assert tier is not None
        return KeyRecord(key_id, digest, user, tier, now_ms), previous

    def find(self, digest: bytes) -> KeyRecord | None:
        """One lookup on the UNIQUE index of digests."""
        try:
            row = self._db.execute(f"{_RECORD} WHERE k.digest = ?", (digest,)).fetchone()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read the key registry {self.path}: {exc}") from None
        return None if row is None else KeyRecord(*row)

    def revoke(self, key_id: str, now_ms: int) -> KeyRecord | None:
        """Set ``revoked_at`` unless it is already set."""
        try:
            self._db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                (now_ms, key_id),
            )
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot revoke a key in {self.path}: {exc}") from None
        row = self._db.execute(f"{_RECORD} WHERE k.key_id = ?", (key_id,)).fetchone()
        return None if row is None else KeyRecord(*row)

    def records(self) -> list[KeyRecord]:
        """Every key with its user's tier."""
        try:
            rows = self._db.execute(
                f"{_RECORD} ORDER BY k.user_name, k.created_at, k.key_id"
            ).fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read the key registry {self.path}: {exc}") from None
        return [KeyRecord(*row) for row in rows]

    def revoked_since(self, since_ms: int) -> set[str]:
        """Uses the partial index of revoked keys."""
        try:
            rows = self._db.execute(
                "SELECT key_id FROM api_keys WHERE revoked_at IS NOT NULL AND revoked_at >= ?",
                (since_ms,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot read the key registry {self.path}: {exc}") from None
        return {row[0] for row in rows}

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
