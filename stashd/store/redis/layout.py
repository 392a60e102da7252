"""Where the Redis backend keeps things: entries, and each namespace's own index.

An entry is the string ``user:{<namespace>}:<key>`` (:func:`key_prefix`): a 25-byte
header (:data:`HEADER`: the kind byte, expiry in ms and version as big-endian int64, an
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
many. Every script that writes entries updates the index in the same call (the
functions of ``scripts/index.lua``), and removes up to :data:`CLEAN_PER_CALL` keys
whose expiry has passed by the caller's clock. Redis expires the entries themselves; the
index keeps no expiry of its own, and goes when its last key does (deleted, expired and
forgotten, or flushed), so the numbers start again at 1, as on the other stores. Scripts
touch only the keys they are given (``KEYS``), as Redis Cluster requires.
"""

from __future__ import annotations

import functools
import struct
from typing import TYPE_CHECKING, Final

from stashd.types import KIND_NAMES, Entry

if TYPE_CHECKING:
    from stashd.types import Quota

#: Expired keys one script call takes out of the index: the cost of catching up stays
#: a fraction of a millisecond of Redis time whatever has piled up.
CLEAN_PER_CALL: Final = 64
#: Expired keys a write over its quota frees before it is refused (stashd.quota: expiry
#: always frees quota), as the memory store's QUOTA_FREE_KEYS: bounded work per refusal.
QUOTA_FREE_KEYS: Final = 2048
#: Marks a Redis whose entries from before the index have been indexed (see
#: :meth:`stashd.store.redis.store.RedisStore.index_old_entries`); the suffix is the layout's
#: version, so a later layout can tell an older one.
INDEXED_MARK: Final = b"stash:index:v1"
#: What SCAN MATCH looks for when old entries are indexed: every entry key.
ENTRY_PATTERN: Final = b"user:{*"


#: The header before every value: kind, expires_at (ms), version, stamp.
HEADER: Final = struct.Struct(">BqqQ")
HEAD_SIZE: Final = HEADER.size  # 25
#: The first byte is the entry's kind (:class:`stashd.types.Kind`); any other is not an
#: entry. Strings are 1, the byte every entry had before entries had kinds, so a
#: Redis written by an older stashd reads the same.
KINDS: Final = frozenset(KIND_NAMES)


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
    if len(raw) < HEAD_SIZE or raw[0] not in KINDS:
        return raw[:HEAD_SIZE], None
    kind, expires_at, version, _ = HEADER.unpack_from(raw)
    return raw[:HEAD_SIZE], Entry(raw[HEAD_SIZE:], expires_at, version, kind)


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
