"""Leases: a key owned by one owner for a TTL, claimed with a fencing token that only grows.

A lease is an entry of kind :data:`~stashd.types.Kind.LEASE` whose value is a state byte
(held or released), the last fencing token (big-endian int64) and, while held, the
owner's bytes. A claim gives ``max(last token + 1, now * TOKENS_PER_MS)``: the first
part keeps tokens growing while the entry lives, the second after it expired, when
nothing of the last token is left to read (see SPEC.md, "Leases", for the limits).
A release keeps the entry, released, until the lease's own expiry, so a claim right
after it still reads the last token; only expiry ends the entry.
"""

from __future__ import annotations

import struct
from typing import Final

from stashd.ops.base import Op, check_put, next_version, read_kind
from stashd.types import Entry, Kind, View

#: Tokens a claim may take per millisecond of the store's clock before tokens drawn
#: from the last one run ahead of the clock; no key is claimed anywhere near this often.
TOKENS_PER_MS: Final = 1024

_HEAD: Final = struct.Struct(">Bq")
_HELD: Final = 1
_RELEASED: Final = 0


class LeaseState:
    """A lease as a door reports it: the owner (None once released), token and expiry."""

    __slots__ = ("expires_at", "owner", "token")

    def __init__(self, owner: bytes | None, token: int, expires_at: int) -> None:
        self.owner = owner
        self.token = token
        self.expires_at = expires_at

    def __repr__(self) -> str:
        return f"LeaseState({self.owner!r}, token={self.token}, expires_at={self.expires_at})"


class LeaseAnswer:
    """What a claim, renew or release came to: ``granted``, and the lease as it now is.

    For a refused claim, ``lease`` is the lease that holds the key (the doors say how
    long it is held, not by whom); for a refused renew or release, the lease under the
    key if any. A granted answer's ``lease`` is the one written.
    """

    __slots__ = ("granted", "lease")

    def __init__(self, granted: bool, lease: LeaseState | None) -> None:
        self.granted = granted
        self.lease = lease


def pack_lease(owner: bytes | None, token: int) -> bytes:
    """A lease's stored value: held by ``owner``, or released (None)."""
    if owner is None:
        return _HEAD.pack(_RELEASED, token)
    return _HEAD.pack(_HELD, token) + owner


def unpack_lease(entry: Entry) -> LeaseState:
    """The lease a stored entry of kind LEASE holds."""
    state, token = _HEAD.unpack_from(entry.value)
    owner = entry.value[_HEAD.size :] if state == _HELD else None
    return LeaseState(owner, token, entry.expires_at)


def held_lease(entry: Entry | None) -> LeaseState | None:
    """The lease a LEASE INFO shows: the one held under the entry, None when free or released.

    A released lease's entry stays only to keep its token for the next claim; to a
    reader, nobody holds the key.
    """
    if entry is None:
        return None
    lease = unpack_lease(entry)
    return None if lease.owner is None else lease


def read_lease(view: View, ns: str, key: bytes, now: int) -> tuple[Entry | None, LeaseState | None]:
    """The live entry under ``key`` and its lease; WRONGTYPE for a key of another kind."""
    entry = read_kind(view, ns, key, now, Kind.LEASE)
    return entry, (None if entry is None else unpack_lease(entry))


def next_token(last: LeaseState | None, now: int) -> int:
    """The fencing token rule, once: above the last token, and above any drawn before ``now``."""
    floor = now * TOKENS_PER_MS
    return floor if last is None else max(last.token + 1, floor)


def _owned(lease: LeaseState | None, owner: bytes, token: int | None) -> bool:
    """Whether ``owner`` holds ``lease`` (with ``token``, when one is given)."""
    return lease is not None and lease.owner == owner and (token is None or token == lease.token)


class LeaseClaim(Op):
    """LEASE CLAIM: take the key for ``owner`` for ``ttl_ms`` unless someone holds it.

    The result is a :class:`LeaseAnswer`; a held lease refuses every claim, its own
    owner's too (an owner that still holds it renews).
    """

    __slots__ = ("owner", "ttl_ms")
    GROWS = True

    def __init__(self, ns: str, key: bytes, owner: bytes, ttl_ms: int) -> None:
        super().__init__(ns, key)
        self.owner = owner
        self.ttl_ms = ttl_ms

    def run(self, view: View, now: int) -> LeaseAnswer:
        """Refuse if held; otherwise write the lease with the next token."""
        ns, key = self.ns, self.key
        entry, lease = read_lease(view, ns, key, now)
        if lease is not None and lease.owner is not None:
            return LeaseAnswer(granted=False, lease=lease)
        token = next_token(lease, now)
        value = pack_lease(self.owner, token)
        if self.quota is not None:
            check_put(view, ns, key, entry, value, self.quota)
        expires_at = now + self.ttl_ms
        view.put(ns, key, Entry(value, expires_at, next_version(entry), Kind.LEASE))
        return LeaseAnswer(granted=True, lease=LeaseState(self.owner, token, expires_at))


class LeaseRenew(Op):
    """LEASE RENEW: a new TTL, from now, for the lease ``owner`` holds (with ``token``)."""

    __slots__ = ("owner", "token", "ttl_ms")

    def __init__(self, ns: str, key: bytes, owner: bytes, token: int | None, ttl_ms: int) -> None:
        super().__init__(ns, key)
        self.owner = owner
        self.token = token
        self.ttl_ms = ttl_ms

    def run(self, view: View, now: int) -> LeaseAnswer:
        """Refuse unless the owner holds it; otherwise move its expiry."""
        ns, key = self.ns, self.key
        entry, lease = read_lease(view, ns, key, now)
        if entry is None or lease is None or not _owned(lease, self.owner, self.token):
            return LeaseAnswer(granted=False, lease=lease)
        expires_at = now + self.ttl_ms
        view.put(ns, key, Entry(entry.value, expires_at, next_version(entry), Kind.LEASE))
        return LeaseAnswer(granted=True, lease=LeaseState(self.owner, lease.token, expires_at))


class LeaseRelease(Op):
    """LEASE RELEASE: free the lease ``owner`` holds (with ``token``), keeping its last token."""

    __slots__ = ("owner", "token")

    def __init__(self, ns: str, key: bytes, owner: bytes, token: int | None) -> None:
        super().__init__(ns, key)
        self.owner = owner
        self.token = token

    def run(self, view: View, now: int) -> LeaseAnswer:
        """Refuse unless the owner holds it; otherwise mark it released until its expiry."""
        ns, key = self.ns, self.key
        entry, lease = read_lease(view, ns, key, now)
        if entry is None or lease is None or not _owned(lease, self.owner, self.token):
            return LeaseAnswer(granted=False, lease=lease)
        # Released, not deleted: the entry keeps the token for the next claim until the
        # lease would have expired anyway, and takes no more room than it did.
        value = pack_lease(None, lease.token)
        view.put(ns, key, Entry(value, entry.expires_at, next_version(entry), Kind.LEASE))
        return LeaseAnswer(granted=True, lease=LeaseState(None, lease.token, entry.expires_at))
