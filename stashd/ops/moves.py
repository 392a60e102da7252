"""Operations that move or copy an entry to another name: RENAME, RENAMENX and COPY.

An entry moves whole, whatever kind it holds: its value, its expiry and its kind go
with it, so a list renamed is the same list with the same time left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stashd.errors import NoSuchKey
from stashd.ops.base import Op, Slot, check_put, next_version
from stashd.quota import grows, growth
from stashd.types import Entry

if TYPE_CHECKING:
    from stashd.types import View


class Rename(Op):
    """RENAME and RENAMENX: move an entry, with its TTL and version, to a new name.

    RENAME replaces whatever the new name held; with ``nx`` (RENAMENX) a new name in
    use leaves both as they are. The result says whether the entry moved (a key
    renamed to itself did not, and RENAMENX answers 0 for it, as Redis does). It grows
    the namespace when the new name is longer than the old one (and held less than the
    difference), so with a quota it reads the new name's entry first.
    """

    __slots__ = ("dst", "nx")
    GROWS = True

    def __init__(self, ns: str, key: bytes, dst: bytes, *, nx: bool = False) -> None:
        super().__init__(ns, key)
        self.dst = dst
        self.nx = nx

    def run(self, view: View, now: int) -> bool:
        """Move, refusing a missing source."""
        old = view.get(self.ns, self.key, now)
        if old is None:
            raise NoSuchKey
        if self.dst == self.key:
            return False
        replaced = view.get(self.ns, self.dst, now) if self.nx or self.quota is not None else None
        if self.nx and replaced is not None:
            return False
        if self.quota is not None:
            gone_keys, gone_bytes = growth(self.key, old.value, None)
            add_keys, add_bytes = growth(
                self.dst, None if replaced is None else replaced.value, old.value
            )
            add_keys += gone_keys
            add_bytes += gone_bytes
            if grows(add_keys, add_bytes):
                view.check_quota(self.ns, add_keys, add_bytes, self.quota)
        view.delete(self.ns, self.key, now)
        view.put(self.ns, self.dst, old)
        return True

    def slots(self) -> list[Slot]:
        """The key, and the new name."""
        return [(self.ns, self.key), (self.ns, self.dst)]


class Copy(Op):
    """COPY: the entry under ``key`` written under ``dst`` too, with its kind and expiry.

    A ``dst`` in use is left as it is unless ``replace``; the result says whether the
    copy was made. The copy is a new value for ``dst``: its version goes one up from
    what ``dst`` held (1 for a new key). The handler refuses ``dst == key`` first.
    """

    __slots__ = ("dst", "replace")
    GROWS = True

    def __init__(self, ns: str, key: bytes, dst: bytes, *, replace: bool = False) -> None:
        super().__init__(ns, key)
        self.dst = dst
        self.replace = replace

    def run(self, view: View, now: int) -> bool:
        """Copy unless the source is missing or the destination is kept."""
        ns = self.ns
        old = view.get(ns, self.key, now)
        if old is None:
            return False
        replaced = view.get(ns, self.dst, now)
        if replaced is not None and not self.replace:
            return False
        if self.quota is not None:
            check_put(view, ns, self.dst, replaced, old.value, self.quota)
        view.put(ns, self.dst, Entry(old.value, old.expires_at, next_version(replaced), old.kind))
        return True

    def slots(self) -> list[Slot]:
        """The key, and the copy's name."""
        return [(self.ns, self.key), (self.ns, self.dst)]
