"""Where the Redis backend keeps things: entries, and each namespace's own index.

An entry is the string ``user:{<namespace>}:<key>`` (:func:`key_prefix`): a 25-byte
header (:data:`HEADER`: format byte 1, expiry in ms and version as big-endian int64, an
8-byte stamp written anew with every change) and then the value, with a native expiry
set with ``PX`` to the time left. Next to its entries, each namespace has an index
under ``stash:ns:{<namespace>}:`` (:func:`index_keys`), in the same hash tag and so the
same cluster slot. No user key can be one of them: every user key starts ``user:``.

- ``meta``, a hash: ``seq``, the last sequence number given to a key of the namespace;
  ``keys`` and ``bytes``, what the namespace holds as storage quotas count it (one per
  key, and :func:`stashd.quota.entry_bytes`, worked out in Python and passed in); and
  ``due``, a time no key of the index expires before (the earliest expiry, or earlier
  once that key has gone). A script reads it once (HMGET) and writes it back once, so
  a SET that finds nothing expired and its quota far off pays one read for all of it.
- ``order``, a sorted set: each key -> its sequence number. SCAN cursors are these
  numbers (the last one a page examined), so they count the namespace's own keys and
  tell a tenant nothing of others'. A key keeps its number while it lives: writing it
  again keeps its place.
- ``expiry``, a sorted set: each key -> when it expires (ms since the epoch).
- ``size``, a hash: each key -> its accounted bytes, so that the bytes of a key Redis
  has already expired natively can still be taken off ``bytes``.

A key is in all of ``order``, ``expiry`` and ``size`` or in none, and ``keys`` is how
many. Every script that writes entries updates the index in the
same call (:data:`INDEX_LUA`), and removes up to :data:`CLEAN_PER_CALL` keys whose
expiry has passed by the caller's clock. Redis expires the entries themselves; the
index keeps no expiry of its own, and goes when its last key does (deleted, expired and
forgotten, or flushed), so the numbers start again at 1, as on the other stores. Scripts
touch only the keys they are given (``KEYS``), as Redis Cluster requires.
"""

from __future__ import annotations

import functools
import struct
from typing import TYPE_CHECKING, Final

from stashd.redislink import Script
from stashd.types import Entry

if TYPE_CHECKING:
    from stashd.types import Quota

#: Expired keys one script call takes out of the index: the cost of catching up stays
#: a fraction of a millisecond of Redis time whatever has piled up.
CLEAN_PER_CALL: Final = 64
#: Expired keys a write over its quota frees before it is refused (stashd.quota: expiry
#: always frees quota), as the memory store's QUOTA_FREE_KEYS: bounded work per refusal.
QUOTA_FREE_KEYS: Final = 2048
#: Marks a Redis whose entries from before the index have been indexed (see
#: :meth:`stashd.store.redis.RedisStore.index_old_entries`); the suffix is the layout's
#: version, so a later layout can tell an older one.
INDEXED_MARK: Final = b"stash:index:v1"
#: What SCAN MATCH looks for when old entries are indexed: every entry key.
ENTRY_PATTERN: Final = b"user:{*"


#: The header before every value: format, expires_at (ms), version, stamp.
HEADER: Final = struct.Struct(">BqqQ")
HEAD_SIZE: Final = HEADER.size  # 25
#: The header layout's version, its first byte; anything else is not an entry.
FORMAT: Final = 1


@functools.lru_cache(maxsize=4096)
def key_prefix(ns: str) -> bytes:
    """``user:{<namespace>}:`` with ``%``, ``{`` and ``}`` percent-encoded in the namespace.

    The encoding keeps the hash tag exactly the namespace: a ``}`` inside it would end
    the tag early and let two namespaces' key names overlap.
    """
    text = ns.encode().replace(b"%", b"%25").replace(b"{", b"%7B").replace(b"}", b"%7D")
    return b"user:{" + text + b"}:"


@functools.lru_cache(maxsize=4096)
def index_keys(prefix: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """The index of the namespace whose entries start with ``prefix``: meta, order, expiry, size."""
    base = b"stash:ns:" + prefix[5:]  # the same {tag}, then ':'
    return base + b"meta", base + b"order", base + b"expiry", base + b"size"


def prefix_of(key: bytes) -> bytes | None:
    """The ``user:{...}:`` prefix of an entry key, None for a key that has none."""
    end = key.find(b"}:", 6)
    if not key.startswith(b"user:{") or end < 0:
        return None
    return key[: end + 2]


def decode(raw: bytes | None) -> tuple[bytes, Entry | None]:
    """A stored string as (its first 25 bytes, the entry): (b"", None) when absent.

    A string that is not in Stash's format reads as absent, though its bytes are still
    what a check compares, so a write over it is checked like any other.
    """
    if raw is None:
        return b"", None
    if len(raw) < HEAD_SIZE or raw[0] != FORMAT:
        return raw[:HEAD_SIZE], None
    _, expires_at, version, _ = HEADER.unpack_from(raw)
    return raw[:HEAD_SIZE], Entry(raw[HEAD_SIZE:], expires_at, version)


def caps(add_keys: int, add_bytes: int, quota: Quota) -> tuple[int, int]:
    """The limits a script compares a write's growth with: keys and bytes, -1 for no check.

    :func:`stashd.quota.check` checks a side only when the write grows it and the quota
    limits it; this passes that side's limit and -1 for the others, so the script does
    nothing but add and compare (:func:`over` is its comparison, in Python).
    """
    max_keys = quota.max_keys
    max_bytes = quota.max_bytes
    keys = max_keys if add_keys > 0 and max_keys is not None else -1
    size = max_bytes if add_bytes > 0 and max_bytes is not None else -1
    return keys, size


def over(keys: int, size: int, add_keys: int, add_bytes: int, limits: tuple[int, int]) -> bool:
    """The scripts' comparison: True when usage plus growth passes a limit of :func:`caps`."""
    max_keys, max_bytes = limits
    return (max_keys >= 0 and keys + add_keys > max_keys) or (
        max_bytes >= 0 and size + add_bytes > max_bytes
    )


#: The index's part of every script: KEYS[1..4] are :func:`index_keys`, and the
#: functions keep the layout above true. ``index_meta`` reads ``meta`` into locals and
#: ``index_save`` writes them back (deleting ``meta`` once no key is left; Redis drops
#: the emptied sets itself): every script that may change the index calls it before it
#: returns. ``index_put`` indexes a key just written, with its accounted size and its
#: expiry; ``index_drop`` forgets a key just deleted; ``index_forget`` forgets indexed
#: keys, taking their bytes off the usage; ``index_over`` compares the usage plus a
#: growth with limits (:func:`over`); and ``index_clean`` forgets up to ``limit`` keys
#: expired by ``now`` and says how many.
INDEX_LUA: Final = """
local META, ORDER, EXPIRY, SIZE = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
-- meta, read at most once per call and written back once by index_save.
local seq, keys, bytes, due, meta_read, meta_changed = 0, 0, 0, nil, false, false
local function index_meta()
  if not meta_read then
    local v = redis.call('HMGET', META, 'seq', 'keys', 'bytes', 'due')
    seq, keys, bytes = tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0)
    due = v[4] and tonumber(v[4]) or nil
    meta_read = true
  end
end
local function index_save()
  if meta_changed then
    if keys == 0 then
      redis.call('UNLINK', META)  -- nothing left: numbering starts again at 1
      seq, due = 0, nil
    elseif due then
      redis.call('HSET', META, 'seq', seq, 'keys', keys, 'bytes', bytes, 'due', due)
    else
      redis.call('HSET', META, 'seq', seq, 'keys', keys, 'bytes', bytes)
    end
    meta_changed = false
  end
end
local function index_put(member, size, expires_at)
  index_meta()
  local was = redis.call('HGET', SIZE, member)
  if not was then
    seq, keys, bytes = seq + 1, keys + 1, bytes + size
    redis.call('ZADD', ORDER, seq, member)
    redis.call('HSET', SIZE, member, size)
    meta_changed = true
  else
    was = tonumber(was)
    if was ~= size then
      redis.call('HSET', SIZE, member, size)
      bytes = bytes + size - was
      meta_changed = true
    end
  end
  redis.call('ZADD', EXPIRY, expires_at, member)
  if due == nil or expires_at < due then
    due = expires_at
    meta_changed = true
  end
end
local function index_drop(member)
  index_meta()
  local was = redis.call('HGET', SIZE, member)
  if was then
    redis.call('HDEL', SIZE, member)
    redis.call('ZREM', ORDER, member)
    redis.call('ZREM', EXPIRY, member)
    keys, bytes = keys - 1, bytes - tonumber(was)
    meta_changed = true
  end
end
local function index_forget(members)
  index_meta()
  for _, size in ipairs(redis.call('HMGET', SIZE, unpack(members))) do
    if size then
      keys, bytes = keys - 1, bytes - tonumber(size)
    end
  end
  redis.call('HDEL', SIZE, unpack(members))
  redis.call('ZREM', ORDER, unpack(members))
  redis.call('ZREM', EXPIRY, unpack(members))
  meta_changed = true
end
-- True when the namespace's usage plus a growth passes a limit (-1: none); the same
-- comparison as stashd.store.redis_index.over.
local function index_over(add_keys, add_bytes, max_keys, max_bytes)
  index_meta()
  return (max_keys >= 0 and keys + add_keys > max_keys)
    or (max_bytes >= 0 and bytes + add_bytes > max_bytes)
end
local function index_clean(now, limit)
  index_meta()
  if due == nil or due > now then
    return 0  -- nothing has expired: the common case costs the one read of meta
  end
  local gone = redis.call('ZRANGEBYSCORE', EXPIRY, '-inf', now, 'LIMIT', 0, limit)
  if #gone > 0 then
    index_forget(gone)
  end
  local first = redis.call('ZRANGE', EXPIRY, 0, 0, 'WITHSCORES')
  due = first[2] and tonumber(first[2]) or nil
  meta_changed = true
  return #gone
end
"""

USAGE: Final = Script(
    INDEX_LUA
    + """
-- What the namespace holds, after forgetting up to ARGV[2] keys expired by ARGV[1] ms:
-- {keys, bytes}.
index_clean(tonumber(ARGV[1]), tonumber(ARGV[2]))
index_save()
return {keys, bytes}
"""
)

PAGE: Final = Script(
    INDEX_LUA
    + """
-- A page of the namespace in key order: up to ARGV[3] keys after sequence number ARGV[2]
-- (key, number, key, number...), once keys expired by ARGV[1] ms are forgotten.
index_clean(tonumber(ARGV[1]), CLEAN)
index_save()
return redis.call('ZRANGEBYSCORE', ORDER, '(' .. ARGV[2], '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[3])
""".replace("CLEAN", str(CLEAN_PER_CALL))
)

DROP: Final = Script(
    INDEX_LUA
    + """
-- FLUSHDB, a page at a time: delete the entries KEYS[5..] (whose keys are ARGV) and
-- forget them; the call that leaves the order empty deletes the index.
if #ARGV > 0 then
  redis.call('UNLINK', unpack(KEYS, 5))
  index_forget(ARGV)
end
if redis.call('ZCARD', ORDER) == 0 then
  index_meta()
  keys, bytes, meta_changed = 0, 0, true
end
index_save()
return #ARGV
"""
)

ADOPT: Final = Script(
    INDEX_LUA
    + """
-- Index entries written before the index existed: KEYS[5..] are entries; ARGV[1] is the
-- prefix's length, then for each entry its first 25 bytes as read, its accounted size
-- and its expiry (ms). An entry already indexed, changed since it was read, or expired
-- by ARGV[2] ms is left alone. Returns how many were indexed.
local cut = tonumber(ARGV[1]) + 1
local now = tonumber(ARGV[2])
local n = 0
local i = 3
for j = 5, #KEYS do
  local member = string.sub(KEYS[j], cut)
  if tonumber(ARGV[i + 2]) > now
    and redis.call('GETRANGE', KEYS[j], 0, 24) == ARGV[i]
    and redis.call('HEXISTS', SIZE, member) == 0 then
    index_put(member, tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]))
    n = n + 1
  end
  i = i + 3
end
index_save()
return n
"""
)
