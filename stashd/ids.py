"""Ids of new memories (STASH, POST /stash): uniform, unique, and each namespace's own.

Ids are drawn in blocks that share a random prefix and are handed out in ascending
order, so the ids of one write batch sit side by side in a B-tree index: a batch of new
ids then dirties one or two index pages instead of one page per id, which is what a
SQLite commit writes (and its checkpoint copies). The store's index is on (namespace,
key), so only one namespace's ids can ever be neighbours there; the blocks are therefore
kept per namespace, and a tenant's ids say nothing about what other tenants create (a
shared block put another tenant's ids between one's own, and their count showed).
"""

from __future__ import annotations

import functools
import os
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Final

from stashd import ops

if TYPE_CHECKING:
    from collections.abc import Callable

BASE62: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH: Final = 8
#: Characters the ids of one block share: 62**3 prefixes, so blocks seldom meet.
PREFIX_LENGTH: Final = 3
#: Random bytes of a namespace's first block (about 74 ids): a namespace that makes a
#: few ids holds a few hundred bytes, not a full block.
FIRST_BLOCK_BYTES: Final = 384
#: The largest block, reached by doubling: about 1,190 ids (248 of every 256 random
#: bytes are kept, 5 characters an id after the prefix), under 10 KB held.
BLOCK_BYTES: Final = 6144
#: A namespace's block unused for this long is dropped (and it starts again from a
#: small one), which bounds the memory of many namespaces that each made a few ids.
#: Whether a block survives depends on its own namespace's pauses only, never on how
#: many other namespaces draw ids.
IDLE_S: Final = 10.0

# Random bytes map onto base62 by a translation table: a byte below 248 (4 * 62) becomes
# BASE62[byte % 62], the 8 bytes above are dropped, so every character is uniform. The
# bytes come from the OS CSPRNG in blocks, where secrets.choice made a call per character.
_UNIFORM: Final = 4 * len(BASE62)
_TO_BASE62: Final = bytes(ord(BASE62[b % 62]) if b < _UNIFORM else 0 for b in range(256))
_DROP: Final = bytes(range(_UNIFORM, 256))


def block(random_bytes: int) -> bytes:
    """Fresh ids from ``random_bytes`` random bytes, concatenated, ascending from a random one.

    They share a random prefix and ascend, but start at a uniformly chosen id of the
    sorted block and wrap around once: a block cut short (its namespace went idle) then
    handed out a uniform sample of its ids, not its smallest, so every id stays uniform.
    """
    step = ID_LENGTH - PREFIX_LENGTH
    while True:
        chars = secrets.token_bytes(random_bytes).translate(_TO_BASE62, _DROP)
        prefix = chars[:PREFIX_LENGTH]
        # A set: with 5 random characters after a shared prefix, two ids of one block
        # are equal about once in 1,300 full blocks; an id must not be handed out twice.
        cuts = range(PREFIX_LENGTH, len(chars) - step + 1, step)
        ids = sorted({prefix + chars[i : i + step] for i in cuts})
        if ids:
            start = secrets.randbelow(len(ids))
            return b"".join(ids[start:] + ids[:start])


class _Pool:
    """One namespace's block: the ids still to hand out, and when it last gave one."""

    __slots__ = ("at", "ids", "next_bytes", "used")

    def __init__(self, now: float) -> None:
        self.ids = b""
        self.at = 0  # offset of the next id in ids
        self.next_bytes = FIRST_BLOCK_BYTES
        self.used = now


class IdPools:
    """Per-namespace blocks of ids; safe to draw from on several threads at once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pools: OrderedDict[str, _Pool] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def maker(self, namespace: str) -> Callable[[int], bytes]:
        """The ``make_id(attempt)`` of an :class:`~stashd.ops.Create` in ``namespace``."""
        return functools.partial(self.draw, namespace)

    def draw(self, namespace: str, attempt: int) -> bytes:
        """A fresh id: 8 base62 characters from ``secrets`` (~47.6 bits), a UUID as last resort."""
        if attempt >= ops.Create.TRIES:
            return uuid.uuid4().hex.encode()
        now = self._clock()
        with self._lock:
            pools = self._pools
            pool = pools.get(namespace)
            if pool is None or now - pool.used > IDLE_S:
                pool = pools[namespace] = _Pool(now)
            pools.move_to_end(namespace)
            pool.used = now
            if pool.at >= len(pool.ids):
                pool.ids, pool.at = block(pool.next_bytes), 0
                pool.next_bytes = min(2 * pool.next_bytes, BLOCK_BYTES)
            out = pool.ids[pool.at : pool.at + ID_LENGTH]
            pool.at += ID_LENGTH
            # Other namespaces' idle blocks, oldest first: each is dropped only once it
            # would be dropped at its own namespace's next draw anyway.
            while pools:
                oldest = next(iter(pools.values()))
                if now - oldest.used <= IDLE_S:
                    break
                pools.popitem(last=False)
            return out

    def held(self) -> int:
        """How many namespaces hold a block."""
        return len(self._pools)

    def reset(self) -> None:
        """Forget every block (in a forked child: the parent may hand the same ids out)."""
        self._pools = OrderedDict()
        self._lock = threading.Lock()


#: The process's blocks, which the memory service draws from.
POOLS: Final = IdPools()
os.register_at_fork(after_in_child=POOLS.reset)
