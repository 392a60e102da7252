"""Operations on a value read or changed in place: one way to read one, one to edit.

Containers (hashes, lists, sets, sorted sets) are read and changed only this way, and
so are strings changed in part (SETRANGE, SETBIT, INCRBYFLOAT). Such a command is a
pure function on the stored value (see :mod:`stashd.containers`): ``look`` maps it to a
result, ``edit`` to a new value and a result. The operations here are the only code
that reads or writes a container, so the rules of a key holding one live once, in
:func:`put_container`: it must be of the command's kind (WRONGTYPE otherwise, nothing
changed), a new one gets the caller's default TTL and a changed one keeps its expiry,
its whole stored size counts against the payload cap and the quota, every change bumps
its version, and an emptied one is deleted, as Redis deletes an empty list, hash or set.
The same holds for the operations on several at once: two edited together (SMOVE,
LMOVE), several read together (SINTER, ZUNION), the first of several that holds one
edited (ZMPOP), or several combined into a new one (SINTERSTORE, ZUNIONSTORE).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from stashd.errors import StashError
from stashd.ops.base import (
    NO_WORK,
    OnKeys,
    Op,
    Slot,
    Touch,
    check_growth,
    check_payload,
    check_put,
    next_version,
    read_any,
    read_kind,
)
from stashd.quota import growth
from stashd.types import Entry

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.types import Quota, View


class _Keep:
    """The new value of an edit that left the container as it was."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


#: What an edit returns as the new value when it changed nothing (None: now empty).
KEEP: Final = _Keep()


def put_container(  # noqa: PLR0917 - every rule's input, positional on the hot path
    view: View,
    ns: str,
    key: bytes,
    kind: int,
    old: Entry | None,
    value: bytes | None,
    default_expires_at: int,
    max_payload: int,
    quota: Quota | None,
    *,
    replace: bool = False,
) -> int:
    """Write a container's new value by the rules for one, once; the bytes written.

    ``value`` None is an empty container: the key is deleted. Raises before writing
    anything when the value passes the payload cap or the quota. With ``replace`` the
    value is a new one whatever the key held (SINTERSTORE's destination): it gets the
    default TTL as a created container does, where a changed one keeps its expiry.
    """
    if value is None:
        if old is not None:
            view.delete(ns, key, 0)
        return 0
    check_payload(len(value), max_payload)
    if quota is not None:
        check_put(view, ns, key, old, value, quota)
    expires = default_expires_at if old is None or replace else old.expires_at
    view.put(ns, key, Entry(value, expires, next_version(old), kind))
    return len(value)


def put_containers(  # noqa: PLR0917 - what every container write needs
    view: View,
    ns: str,
    writes: list[tuple[bytes, int, Entry | None, bytes | None]],
    default_expires_at: int,
    max_payload: int,
    quota: Quota | None,
) -> int:
    """Several containers' new values (key, kind, old entry, value), all or none; the bytes.

    Every value is checked before any is written, so a move refused at its destination
    has not already changed its source; the quota counts their growth together, as a
    move frees in one what it adds to the other. Each is then written by
    :func:`put_container`.
    """
    add_keys = add_bytes = 0
    for key, _, old, value in writes:
        if value is not None:
            check_payload(len(value), max_payload)
        keys, size = growth(key, None if old is None else old.value, value)
        add_keys += keys
        add_bytes += size
    if quota is not None:
        check_growth(view, ns, add_keys, add_bytes, quota)
    written = 0
    for key, kind, old, value in writes:
        written += put_container(
            view, ns, key, kind, old, value, default_expires_at, max_payload, None
        )
    return written


class Inspect(Op):
    """A read of one container: ``look`` applied to its value (None when there is no key)."""

    __slots__ = ("kind", "look", "read")
    WRITES = False
    TOUCH = Touch.READ
    ONE_READ = True
    WORKS = True

    def __init__(self, ns: str, key: bytes, kind: int, look: Callable[[bytes | None], Any]) -> None:
        super().__init__(ns, key)
        self.kind = kind
        self.look = look
        self.read = 0

    def run(self, view: View, now: int) -> Any:  # noqa: ANN401 - the command's own result
        """Read the container and look at it."""
        old = read_kind(view, self.ns, self.key, now, self.kind)
        value = None if old is None else old.value
        self.read = 0 if value is None else len(value)
        return self.look(value)

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The container read back."""
        return NO_WORK if isinstance(result, StashError) else (0, self.read)


class InspectMany(OnKeys):
    """A read of several containers at once (ZUNION, ZINTER): ``look`` gets each one.

    Each key must hold one of ``kinds`` (WRONGTYPE otherwise, checked for every key
    before ``look`` runs, as Redis checks them); ``look`` gets a (kind, value) pair
    per key, None for no key, in the order of ``keys``.
    """

    __slots__ = ("keys", "kinds", "look", "read")
    WRITES = False
    TOUCH = Touch.READ
    WORKS = True

    def __init__(
        self,
        ns: str,
        keys: list[bytes],
        kinds: tuple[int, ...],
        look: Callable[[list[tuple[int, bytes] | None]], Any],
    ) -> None:
        super().__init__(ns, keys[0])
        self.keys = keys
        self.kinds = kinds
        self.look = look
        self.read = 0

    def run(self, view: View, now: int) -> Any:  # noqa: ANN401 - the command's own result
        """Read every container, then look at them together."""
        ns, kinds = self.ns, self.kinds
        found = [read_any(view, ns, key, now, kinds) for key in self.keys]
        self.read = sum(len(e.value) for e in found if e is not None)
        return self.look([None if e is None else (e.kind, e.value) for e in found])

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The containers read back."""
        return NO_WORK if isinstance(result, StashError) else (0, self.read)


class Edit(Op):
    """A change to one container: ``edit`` gives its new value and the command's result.

    ``written`` is the size of what was written afterwards: -1 when nothing was, 0 when
    the container was emptied and deleted (the write event says which).
    """

    __slots__ = ("default_expires_at", "edit", "event", "kind", "max_payload", "moved", "written")
    GROWS = True
    WORKS = True

    def __init__(  # noqa: PLR0917 - what every container write needs
        self,
        ns: str,
        key: bytes,
        kind: int,
        edit: Callable[[bytes | None], tuple[bytes | _Keep | None, Any]],
        default_expires_at: int,
        max_payload: int,
    ) -> None:
        super().__init__(ns, key)
        # Its keyspace notification's name: the command's, as Redis names them (set by it).
        self.event = ""
        self.kind = kind
        self.edit = edit
        self.default_expires_at = default_expires_at
        self.max_payload = max_payload
        self.moved = 0
        self.written = -1

    def run(self, view: View, now: int) -> Any:  # noqa: ANN401 - the command's own result
        """Read the container, edit it, and write it back if it changed."""
        ns, key = self.ns, self.key
        old = read_kind(view, ns, key, now, self.kind)
        value = None if old is None else old.value
        self.moved = 0 if value is None else len(value)
        self.written = -1
        new, result = self.edit(value)
        if new is not KEEP and (new is not None or old is not None):
            self.written = put_container(
                view,
                ns,
                key,
                self.kind,
                old,
                new,  # type: ignore[arg-type]  # KEEP is ruled out above
                self.default_expires_at,
                self.max_payload,
                self.quota,
            )
            self.moved += self.written
        return result

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The container read, and what was written back."""
        return NO_WORK if isinstance(result, StashError) else (0, self.moved)


class EditFirst(OnKeys):
    """A change to the first of several keys that holds a container (ZMPOP): ``edit`` it.

    The keys are looked at in order: a missing one is passed over, one of another kind
    is WRONGTYPE (only up to the first container, as Redis checks them), and the first
    container is edited as :class:`Edit` edits one. The result is (that key, what
    ``edit`` returned), or None when no key holds one. ``key`` is the key written once
    it has run (the write event's), ``written`` as :class:`Edit`'s.
    """

    __slots__ = (
        "default_expires_at",
        "edit",
        "event",
        "keys",
        "kind",
        "max_payload",
        "moved",
        "written",
    )
    GROWS = True
    WORKS = True

    def __init__(  # noqa: PLR0917 - what every container write needs
        self,
        ns: str,
        keys: list[bytes],
        kind: int,
        edit: Callable[[bytes], tuple[bytes | None, Any]],
        default_expires_at: int,
        max_payload: int,
    ) -> None:
        super().__init__(ns, keys[0])
        # Its keyspace notification's name: the command's, as Redis names them (set by it).
        self.event = ""
        self.keys = keys
        self.kind = kind
        self.edit = edit
        self.default_expires_at = default_expires_at
        self.max_payload = max_payload
        self.moved = 0
        self.written = -1

    def run(self, view: View, now: int) -> Any:  # noqa: ANN401 - the command's own result
        """Find the first container, edit it and write it back."""
        ns = self.ns
        self.moved = 0
        self.written = -1
        for key in self.keys:
            old = read_kind(view, ns, key, now, self.kind)
            if old is None:
                continue
            new, result = self.edit(old.value)
            self.key = key
            self.moved = len(old.value)
            self.written = put_container(
                view,
                ns,
                key,
                self.kind,
                old,
                new,
                self.default_expires_at,
                self.max_payload,
                self.quota,
            )
            self.moved += self.written
            return key, result
        return None

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The container read, and what was written back."""
        return NO_WORK if isinstance(result, StashError) else (0, self.moved)


class StoreFrom(Op):
    """A container written from several read at once (ZUNIONSTORE): ``edit`` gives its value.

    The sources must each hold one of ``kinds``; ``edit`` gets a (kind, value) pair
    per source (None for no key) and returns (the destination's new value, None for
    empty; the result). The destination ``key`` is replaced whatever it held, as in
    Redis, and is deleted when the new value is empty. ``written`` is as :class:`Edit`'s.
    """

    __slots__ = (
        "default_expires_at",
        "edit",
        "event",
        "kind",
        "kinds",
        "max_payload",
        "moved",
        "sources",
        "written",
    )
    GROWS = True
    WORKS = True

    def __init__(  # noqa: PLR0917 - what every container write needs
        self,
        ns: str,
        key: bytes,
        sources: list[bytes],
        kinds: tuple[tuple[int, ...], int],
        edit: Callable[[list[tuple[int, bytes] | None]], tuple[bytes | None, Any]],
        default_expires_at: int,
        max_payload: int,
    ) -> None:
        super().__init__(ns, key)
        # Its keyspace notification's name: the command's, as Redis names them (set by it).
        self.event = ""
        self.sources = sources
        self.kinds, self.kind = kinds
        self.edit = edit
        self.default_expires_at = default_expires_at
        self.max_payload = max_payload
        self.moved = 0
        self.written = -1

    def run(self, view: View, now: int) -> Any:  # noqa: ANN401 - the command's own result
        """Read the sources, then replace the destination with what ``edit`` made of them."""
        ns, kinds = self.ns, self.kinds
        found = [read_any(view, ns, source, now, kinds) for source in self.sources]
        self.moved = sum(len(e.value) for e in found if e is not None)
        self.written = -1
        new, result = self.edit([None if e is None else (e.kind, e.value) for e in found])
        old = view.get(ns, self.key, now)
        if new is not None or old is not None:
            self.written = put_container(
                view,
                ns,
                self.key,
                self.kind,
                old,
                new,
                self.default_expires_at,
                self.max_payload,
                self.quota,
                replace=True,
            )
            self.moved += self.written
        return result

    def slots(self) -> list[Slot]:
        """The destination, then each source."""
        ns = self.ns
        return [(ns, key) for key in dict.fromkeys([self.key, *self.sources])]

    @property
    def size(self) -> int:
        """One per key."""
        return len(self.slots())

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The containers read, and what was written."""
        return NO_WORK if isinstance(result, StashError) else (0, self.moved)


class EditTwo(Op):
    """A change to two containers at once (LMOVE, SMOVE): ``edit`` gives both new values.

    ``edit(src_value, dst_value)`` returns (new src, new dst, result), each value None
    for empty or KEEP; when the two keys are one, it is given the same value twice and
    only its new src counts. ``kinds`` are the kinds each key must hold. A missing
    source moves nothing, so the destination is not even looked at: it is given as None
    and nothing is written (Redis answers nil or 0 then, whatever the destination holds).
    """

    __slots__ = ("default_expires_at", "dst", "edit", "event", "kinds", "max_payload", "moved")
    GROWS = True
    WORKS = True

    def __init__(  # noqa: PLR0917 - what every container write needs
        self,
        ns: str,
        key: bytes,
        dst: bytes,
        kinds: tuple[int, int],
        edit: Callable[[bytes | None, bytes | None], tuple[Any, Any, Any]],
        default_expires_at: int,
        max_payload: int,
    ) -> None:
        super().__init__(ns, key)
        # Its keyspace notification's name: the command's, as Redis names them (set by it).
        self.event = ""
        self.dst = dst
        self.kinds = kinds
        self.edit = edit
        self.default_expires_at = default_expires_at
        self.max_payload = max_payload
        self.moved = 0

    def run(self, view: View, now: int) -> Any:  # noqa: ANN401 - the command's own result
        """Read both, edit, and write back what changed, both checked before either is written."""
        ns, key, dst = self.ns, self.key, self.dst
        src_kind, dst_kind = self.kinds
        old = read_kind(view, ns, key, now, src_kind)
        if old is None:
            return self.edit(None, None)[2]
        other = old if dst == key else read_kind(view, ns, dst, now, dst_kind)
        src_value = old.value
        dst_value = None if other is None else other.value
        self.moved = len(src_value) + (0 if dst == key else len(dst_value or b""))
        new_src, new_dst, result = self.edit(src_value, dst_value)
        writes: list[tuple[bytes, int, Entry | None, Any]] = [(key, src_kind, old, new_src)]
        if dst != key:
            writes.append((dst, dst_kind, other, new_dst))
        changed = [
            write
            for write in writes
            if write[3] is not KEEP and (write[3] is not None or write[2] is not None)
        ]
        if changed:
            self.moved += put_containers(
                view,
                ns,
                changed,
                self.default_expires_at,
                self.max_payload,
                self.quota,
            )
        return result

    def slots(self) -> list[Slot]:
        """Both keys."""
        return [(self.ns, self.key), (self.ns, self.dst)]

    @property
    def size(self) -> int:
        """Two keys."""
        return 2

    def work(self, result: Any) -> tuple[int, int]:  # noqa: ANN401 - any result
        """The containers read, and what was written back."""
        return NO_WORK if isinstance(result, StashError) else (0, self.moved)
