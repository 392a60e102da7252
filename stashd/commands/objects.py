"""What a key's value is made of: OBJECT ENCODING|IDLETIME|FREQ|REFCOUNT and MEMORY USAGE.

Stash keeps every value as one stored entry, so these answer what Redis 7.0 would for
the same value, worked out from it: the encoding Redis would pick by its default
thresholds, the reference count Redis gives shared small integers. They read the key
as TYPE does, whatever its kind.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stashd.commands.base import (
    READONLY,
    Command,
    Deferred,
    Reply,
    Session,
    help_lines,
    run_subcommand,
    subcommand_rows,
)
from stashd.containers import unpack_map, unpack_members, unpack_scores
from stashd.errors import CommandError, NotInteger, SyntaxErr
from stashd.ops import parse_int64
from stashd.quota import entry_bytes
from stashd.types import Kind

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from stashd.commands.base import Handler
    from stashd.types import Entry

# Redis 7.0's defaults: hash-max-listpack-entries/-value, zset-max-listpack-entries/
# -value, set-max-intset-entries, and the longest string kept with its header (embstr).
_LISTPACK_ENTRIES: Final = 128
_LISTPACK_VALUE: Final = 64
_INTSET_ENTRIES: Final = 512
_EMBSTR_MAX: Final = 44
#: Redis shares the integers 0..9999 among keys and reports their count as INT_MAX.
_SHARED_INTEGERS: Final = 10_000
_SHARED_REFCOUNT: Final = 2**31 - 1


def _integer(value: bytes) -> int | None:
    try:
        return parse_int64(value)
    except NotInteger:
        return None


def _small(count: int, items: Iterable[bytes]) -> bool:
    """Few and short enough for a listpack, by Redis's default thresholds."""
    return count <= _LISTPACK_ENTRIES and all(len(i) <= _LISTPACK_VALUE for i in items)


def encoding(entry: Entry) -> bytes:
    """The encoding Redis 7.0 gives a fresh value like this one, by its default thresholds."""
    value, kind = entry.value, entry.kind
    if kind == Kind.HASH:
        fields = unpack_map(value)
        small = _small(len(fields), [*fields, *fields.values()])
        return b"listpack" if small else b"hashtable"
    if kind == Kind.LIST:
        return b"quicklist"
    if kind == Kind.SET:
        members = list(unpack_members(value))
        ints = len(members) <= _INTSET_ENTRIES and all(_integer(m) is not None for m in members)
        return b"intset" if ints else b"hashtable"
    if kind == Kind.ZSET:
        scores = unpack_scores(value)
        return b"listpack" if _small(len(scores), scores) else b"skiplist"
    if _integer(value) is not None:
        return b"int"
    return b"embstr" if len(value) <= _EMBSTR_MAX else b"raw"


def _refcount(entry: Entry) -> int:
    if entry.kind == Kind.STRING:
        n = _integer(entry.value)
        if n is not None and 0 <= n < _SHARED_INTEGERS:
            return _SHARED_REFCOUNT
    return 1


def _about(s: Session, key: bytes, answer: Callable[[Entry], Reply]) -> Reply:
    """OBJECT's reading of ``key``: ``answer(entry)``, nil for a missing key."""

    def finish(entry: Entry | None) -> Reply:
        return None if entry is None else answer(entry)

    return Deferred(s.service.lookup(s.require(), key), finish)


def object_encoding(s: Session, args: list[bytes]) -> Reply:
    """OBJECT ENCODING key."""
    return _about(s, args[2], encoding)


def object_idletime(s: Session, args: list[bytes]) -> Reply:
    """OBJECT IDLETIME key: 0, as Stash does not track reads (SPEC, Differences)."""
    return _about(s, args[2], lambda _: 0)


class _NoLFU(CommandError):
    """OBJECT FREQ under a policy that does not count accesses: Redis's words."""

    template = (
        "An LFU maxmemory policy is not selected, access frequency not tracked. Please note "
        "that when switching between policies at runtime LRU and LFU data will take some "
        "time to adjust."
    )


def object_freq(s: Session, args: list[bytes]) -> Reply:
    """OBJECT FREQ key: refused as Redis refuses it under its default policy (noeviction)."""

    def refuse(_: Entry) -> Reply:
        return _NoLFU()

    return _about(s, args[2], refuse)


def object_refcount(s: Session, args: list[bytes]) -> Reply:
    """OBJECT REFCOUNT key."""
    return _about(s, args[2], _refcount)


def object_help(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """OBJECT HELP."""
    return help_lines("OBJECT", OBJECT_SUBCOMMANDS)


def memory_usage(s: Session, args: list[bytes]) -> Reply:
    """MEMORY USAGE key [SAMPLES count]: the bytes the key counts for against a quota."""
    i = 3
    while i < len(args):
        if args[i].upper() != b"SAMPLES" or i + 1 >= len(args):
            raise SyntaxErr
        if parse_int64(args[i + 1]) < 0:
            raise SyntaxErr
        i += 2
    key = args[2]
    return _about(s, key, lambda entry: entry_bytes(key, entry.value))


def memory_help(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """MEMORY HELP."""
    return help_lines("MEMORY", MEMORY_SUBCOMMANDS)


_R: Final = (READONLY,)


def _sub(  # noqa: PLR0917 - a table row's columns, in the table's order
    name: str, handler: Handler, arity: int, summary: str, syntax: str, since: str
) -> Command:
    keyed = "key" in syntax.split()
    return Command(
        name,
        handler,
        arity,
        _R if keyed else ("loading", "stale"),
        "generic" if name.startswith("object") else "server",
        summary,
        syntax,
        since,
        *((2, 2, 1) if keyed else ()),
    )


OBJECT_SUBCOMMANDS: Final = (
    _sub(
        "object|encoding",
        object_encoding,
        3,
        "The encoding Redis would give the key's value.",
        "OBJECT ENCODING key",
        "2.2.3",
    ),
    _sub(
        "object|idletime",
        object_idletime,
        3,
        "Seconds since the key was last used (0: not tracked).",
        "OBJECT IDLETIME key",
        "2.2.3",
    ),
    _sub(
        "object|freq",
        object_freq,
        3,
        "The key's access frequency (not tracked: refused).",
        "OBJECT FREQ key",
        "4.0.0",
    ),
    _sub(
        "object|refcount",
        object_refcount,
        3,
        "References to the key's value.",
        "OBJECT REFCOUNT key",
        "2.2.3",
    ),
    _sub("object|help", object_help, 2, "The subcommands of OBJECT.", "OBJECT HELP", "6.2.0"),
)
MEMORY_SUBCOMMANDS: Final = (
    _sub(
        "memory|usage",
        memory_usage,
        -3,
        "The bytes a key counts for against the storage quota.",
        "MEMORY USAGE key [SAMPLES count]",
        "4.0.0",
    ),
    _sub("memory|help", memory_help, 2, "The subcommands of MEMORY.", "MEMORY HELP", "4.0.0"),
)
_OBJECT_ROWS: Final = subcommand_rows(OBJECT_SUBCOMMANDS)
_MEMORY_ROWS: Final = subcommand_rows(MEMORY_SUBCOMMANDS)


def object_(s: Session, args: list[bytes]) -> Reply:
    """OBJECT subcommand [argument ...]."""
    return run_subcommand(_OBJECT_ROWS, s, args)


def memory(s: Session, args: list[bytes]) -> Reply:
    """MEMORY subcommand [argument ...]: USAGE and HELP."""
    return run_subcommand(_MEMORY_ROWS, s, args)


COMMANDS: Final = (
    Command(
        "object",
        object_,
        -2,
        (),
        "generic",
        "Inspect how a key's value is kept.",
        "OBJECT subcommand [argument ...]",
        "2.2.3",
        subcommands=OBJECT_SUBCOMMANDS,
    ),
    Command(
        "memory",
        memory,
        -2,
        (),
        "server",
        "Memory figures of keys.",
        "MEMORY subcommand [argument ...]",
        "4.0.0",
        subcommands=MEMORY_SUBCOMMANDS,
    ),
)
