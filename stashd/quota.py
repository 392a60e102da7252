"""Storage quotas: how much one namespace may hold, in keys and in bytes, and the one check.

A namespace holds what its writes put there and nothing has removed yet: one key per
entry, and :func:`entry_bytes` (the key plus the value) for its size. Entries that have
expired count until the store frees them, which it does before it refuses a write, so
expiry always frees quota. The check refuses only a write that *grows* the namespace
past a limit; one that shrinks it or keeps its size is allowed even over quota, so a
lowered quota never keeps a tenant from deleting, or from overwriting with less.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stashd.errors import QuotaExceeded

if TYPE_CHECKING:
    from stashd.types import Quota


def entry_bytes(key: bytes, value: bytes) -> int:
    """What one entry counts against a byte quota: its key and its value."""
    return len(key) + len(value)


def growth(key: bytes, old: bytes | None, new: bytes | None) -> tuple[int, int]:
    """Keys and bytes a namespace gains when ``key`` goes from ``old`` to ``new`` (None: absent)."""
    keys = 0
    size = 0
    if old is not None:
        keys -= 1
        size -= entry_bytes(key, old)
    if new is not None:
        keys += 1
        size += entry_bytes(key, new)
    return keys, size


def grows(add_keys: int, add_bytes: int) -> bool:
    """True when a write adds keys or bytes: only such a write is ever refused."""
    return add_keys > 0 or add_bytes > 0


def check(usage_keys: int, usage_bytes: int, add_keys: int, add_bytes: int, quota: Quota) -> None:
    """Refuse a write that would take a namespace holding ``usage_*`` past ``quota``.

    Each side is checked only when the write grows it, so a namespace already over a
    lowered quota can still shrink. The error carries what the namespace would hold and
    the limits, 0 standing for a side without one.
    """
    keys = usage_keys + add_keys
    size = usage_bytes + add_bytes
    max_keys = quota.max_keys
    max_bytes = quota.max_bytes
    if (add_keys > 0 and max_keys is not None and keys > max_keys) or (
        add_bytes > 0 and max_bytes is not None and size > max_bytes
    ):
        raise QuotaExceeded(keys, size, max_keys or 0, max_bytes or 0)
