"""The API key registry in Redis, so that every stashd node on one Redis knows the same keys.

It implements :class:`~stashd.registry.Registry` synchronously (redis-py), for ``stash
keys`` and in-process use, and offers the lookups a daemon makes per connection and per
second (:meth:`RedisRegistry.find_async`, :meth:`RedisRegistry.revoked_since_async`)
on the event loop's link, so that AUTH never blocks the loop on a network round trip.

Everything lives under one hash tag, ``stash:{registry}:``, so in a Redis Cluster it is
one slot and every change is one atomic script:

- ``stash:{registry}:digests``, a hash from each key's SHA-256 digest to its key id;
- ``stash:{registry}:key:<key id>``, a hash: digest, user, created_at, revoked_at;
- ``stash:{registry}:user:<name>``, a hash: tier, created_at;
- ``stash:{registry}:revoked``, a sorted set of revoked key ids by revocation time.

As in the SQLite registry, no plaintext key is ever stored: records carry digests only.
Data keys are named ``user:{...}:...``, so these never meet them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd.redislink import (
    LinkError,
    ReplyError,
    Script,
    async_link,
    round_with_scripts,
    round_with_scripts_sync,
)
from stashd.registry import DEFAULT_TIER, KeyRecord, RegistryError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stashd.redislink import AsyncLink, Command, SyncLink
    from stashd.redistarget import RedisTarget

PREFIX: Final = b"stash:{registry}:"
DIGESTS: Final = PREFIX + b"digests"
REVOKED: Final = PREFIX + b"revoked"
KEY_PREFIX: Final = PREFIX + b"key:"
USER_PREFIX: Final = PREFIX + b"user:"

ADD: Final = Script("""
-- Add a key for a user, creating the user or moving it to another tier. KEYS: the user's
-- hash, the key's hash, the digest index. ARGV: key id, digest, user, tier ("" keeps the
-- user's or gives a new user the default), now ms, the default tier.
-- Returns {tier, previous tier or ""}.
if redis.call('HEXISTS', KEYS[3], ARGV[2]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('ERR a key with this digest or id is registered already')
end
local current = redis.call('HGET', KEYS[1], 'tier')
local tier = ARGV[4]
local previous = ''
if not current then
  if tier == '' then tier = ARGV[6] end
  redis.call('HSET', KEYS[1], 'tier', tier, 'created_at', ARGV[5])
elseif tier ~= '' and tier ~= current then
  previous = current
  redis.call('HSET', KEYS[1], 'tier', tier)
else
  tier = current
end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], 'digest', ARGV[2], 'user', ARGV[3], 'created_at', ARGV[5])
return {tier, previous}
""")

FIND: Final = Script("""
-- The record of the key with digest ARGV[1]: {id, digest, user, tier, created_at,
-- revoked_at or ""}, or nil. KEYS[1]: the digest index; the key's and the user's hashes
-- are named from it (ARGV[2], ARGV[3] are their prefixes) and share its hash tag, so
-- they are in the same slot.
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then
  return nil
end
local rec = redis.call('HMGET', ARGV[2] .. id, 'digest', 'user', 'created_at', 'revoked_at')
if not rec[2] then
  return nil
end
local tier = redis.call('HGET', ARGV[3] .. rec[2], 'tier') or ''
return {id, rec[1], rec[2], tier, rec[3], rec[4] or ''}
""")

REVOKE: Final = Script("""
-- Revoke a key once: the first time is kept. KEYS: the key's hash, the revoked set.
-- ARGV: now ms, key id. Returns {digest, user, created_at, revoked_at}, nil if unknown.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
if not redis.call('HGET', KEYS[1], 'revoked_at') then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
end
return redis.call('HMGET', KEYS[1], 'digest', 'user', 'created_at', 'revoked_at')
""")

SCRIPTS: Final = (ADD, FIND, REVOKE)


def _text(raw: Any) -> str:  # noqa: ANN401 - a reply field
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _record(reply: list[Any]) -> KeyRecord:
    """FIND's reply as a record."""
    key_id, digest, user, tier, created, revoked = reply
    return KeyRecord(
        _text(key_id),
        bytes(digest),
        _text(user),
        _text(tier),
        int(created),
        int(revoked) if revoked else None,
    )


class RedisRegistry:
    """Users, tiers and key digests in Redis; see the module docstring."""

    #: Reached over the network: the daemon awaits :meth:`find_async`.
    remote = True

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self._sync: SyncLink | None = None
        self._link: AsyncLink | None = None

    # -- plumbing --------------------------------------------------------------------------
    def _error(self, what: str, exc: Exception) -> RegistryError:
        return RegistryError(
            f"cannot {what} the key registry in Redis at {self.target.display()}: {exc}"
        )

    def _checked(self, replies: list[Any], what: str) -> list[Any]:
        """The replies of a round, or the registry error for the first that is an error."""
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise self._error(what, reply)
        return replies

    def _round(self, commands: Sequence[Command], what: str) -> list[Any]:
        if self._sync is None:
            from stashd.redislink import SyncLink  # noqa: PLC0415 - imports redis-py

            self._sync = SyncLink(self.target, SCRIPTS)
        try:
            replies = round_with_scripts_sync(self._sync, commands)
        except LinkError as exc:
            raise self._error(what, exc) from None
        return self._checked(replies, what)

    async def _round_async(self, commands: Sequence[Command], what: str) -> list[Any]:
        if self._link is None:
            self._link = async_link(self.target, SCRIPTS)
        try:
            replies = await round_with_scripts(self._link, commands)
        except LinkError as exc:
            raise self._error(what, exc) from None
        return self._checked(replies, what)

    # -- Registry ----------------------------------------------------------------------------
    def add_key(
        self, key_id: str, digest: bytes, user: str, tier: str | None, now_ms: int
    ) -> tuple[KeyRecord, str | None]:
        """Create the user if needed, move it to ``tier`` if given, store the digest."""
        keys = [USER_PREFIX + user.encode(), KEY_PREFIX + key_id.encode(), DIGESTS]
        args = [key_id, digest, user, tier or "", now_ms, DEFAULT_TIER]
        ((got, previous),) = self._round([ADD.call(keys, args)], "add a key to")
        record = KeyRecord(key_id, digest, user, _text(got), now_ms)
        return record, _text(previous) or None

    def find(self, digest: bytes) -> KeyRecord | None:
        """One script: the digest index, then the key's and its user's hashes."""
        (reply,) = self._round([self._find(digest)], "read")
        return None if reply is None else _record(reply)

    async def find_async(self, digest: bytes) -> KeyRecord | None:
        """:meth:`find` on the event loop's link."""
        (reply,) = await self._round_async([self._find(digest)], "read")
        return None if reply is None else _record(reply)

    @staticmethod
    def _find(digest: bytes) -> Command:
        return FIND.call([DIGESTS], [digest, KEY_PREFIX, USER_PREFIX])

    def revoke(self, key_id: str, now_ms: int) -> KeyRecord | None:
        """Set ``revoked_at`` unless it is already set; the record as it now is."""
        command = REVOKE.call([KEY_PREFIX + key_id.encode(), REVOKED], [now_ms, key_id])
        (reply,) = self._round([command], "revoke a key in")
        if reply is None:
            return None
        digest, user, created, revoked = reply
        (tier,) = self._round([("HGET", USER_PREFIX + bytes(user), "tier")], "read")
        return KeyRecord(
            key_id, bytes(digest), _text(user), _text(tier or b""), int(created), int(revoked)
        )

    def records(self) -> list[KeyRecord]:
        """Every key with its user's tier, by user, creation time and id."""
        (index,) = self._round([("HGETALL", DIGESTS)], "read")
        ids = sorted(_text(v) for v in _pairs(index).values())
        if not ids:
            return []
        fields = ("digest", "user", "created_at", "revoked_at")
        rows = self._round([("HMGET", KEY_PREFIX + k.encode(), *fields) for k in ids], "read")
        users = sorted({_text(row[1]) for row in rows if row[1] is not None})
        tiers = self._round([("HGET", USER_PREFIX + u.encode(), "tier") for u in users], "read")
        tier_of = {u: _text(t or b"") for u, t in zip(users, tiers, strict=True)}
        out = [
            KeyRecord(
                key_id,
                bytes(digest),
                _text(user),
                tier_of[_text(user)],
                int(created),
                int(revoked) if revoked else None,
            )
            for key_id, (digest, user, created, revoked) in zip(ids, rows, strict=True)
            if user is not None
        ]
        out.sort(key=lambda r: (r.user, r.created_at_ms, r.key_id))
        return out

    def revoked_since(self, since_ms: int) -> set[str]:
        """Ids of keys revoked at or after ``since_ms`` (the sorted set's range)."""
        (ids,) = self._round([("ZRANGEBYSCORE", REVOKED, since_ms, "+inf")], "read")
        return {_text(i) for i in ids}

    async def revoked_since_async(self, since_ms: int) -> set[str]:
        """:meth:`revoked_since` on the event loop's link."""
        command = ("ZRANGEBYSCORE", REVOKED, since_ms, "+inf")
        (ids,) = await self._round_async([command], "read")
        return {_text(i) for i in ids}

    def close(self) -> None:
        """Close the synchronous client."""
        sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    async def aclose(self) -> None:
        """Close the event loop's link and the synchronous client."""
        link, self._link = self._link, None
        if link is not None:
            await link.close()
        self.close()


def _pairs(reply: Any) -> dict[Any, Any]:  # noqa: ANN401 - HGETALL in either client's shape
    """HGETALL's reply as a dict: redis-py gives one, the lean link a flat list."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))
