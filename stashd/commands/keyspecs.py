"""Which arguments of a request are keys, and what it does with each, as Redis's key specs say.

COMMAND GETKEYS and GETKEYSANDFLAGS answer from here. The positions come from the
command's row (first key, last key, step); the scripting commands name their key count
in an argument, as Redis's ``keynum`` specs do. The flags are Redis 7.0's for each
command: how the key is reached (RO, RW, OW: overwrite, RM: remove) and what is done to
it (access: its value is read back, update, insert, delete). Most commands are a read
(``RO access``) or a read and change (``RW access update``) and need no entry below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from stashd.commands.base import WRITE
from stashd.errors import NotInteger
from stashd.ops import parse_int64

if TYPE_CHECKING:
    from stashd.commands.base import Command

Flags = frozenset[str]

_RO_ACCESS: Final = frozenset({"RO", "access"})
_RW_ACCESS_UPDATE: Final = frozenset({"RW", "access", "update"})
_RO: Final = frozenset({"RO"})
_OW_UPDATE: Final = frozenset({"OW", "update"})
_OW_INSERT: Final = frozenset({"OW", "insert"})
_RW_UPDATE: Final = frozenset({"RW", "update"})
_RW_INSERT: Final = frozenset({"RW", "insert"})
_RW_DELETE: Final = frozenset({"RW", "delete"})
_RM_DELETE: Final = frozenset({"RM", "delete"})
_RW_ACCESS_DELETE: Final = frozenset({"RW", "access", "delete"})


def _each(flags: Flags, *names: str) -> dict[str, tuple[Flags, ...]]:
    return dict.fromkeys(names, (flags,))


#: Flags per key, for the commands that differ from the default; a command with two
#: entries gives the first to its first key and the second to the others.
KEY_FLAGS: Final[dict[str, tuple[Flags, ...]]] = {
    **_each(_OW_UPDATE, "setex", "psetex", "mset"),
    **_each(_OW_INSERT, "setnx", "msetnx"),
    **_each(_RW_INSERT, "append", "hsetnx", "lpush", "rpush", "lpushx", "rpushx", "linsert"),
    **_each(_RW_INSERT, "sadd"),
    **_each(_RW_ACCESS_DELETE, "spop"),
    **_each(_RW_DELETE, "srem"),
    **_each(_RO, "sismember", "scard"),
    "smove": (_RW_ACCESS_DELETE, _RW_INSERT),
    **_each(_RW_UPDATE, "zadd"),
    **_each(_RW_DELETE, "zrem", "zremrangebyrank", "zremrangebyscore", "zremrangebylex"),
    **_each(_RO, "zcard"),
    **_each(_RW_ACCESS_DELETE, "zpopmin", "zpopmax", "bzpopmin", "bzpopmax", "zmpop", "bzmpop"),
    **dict.fromkeys(
        ("zrangestore", "zunionstore", "zinterstore", "zdiffstore"), (_OW_UPDATE, _RO_ACCESS)
    ),
    **dict.fromkeys(("sinterstore", "sunionstore", "sdiffstore"), (_RW_UPDATE, _RO_ACCESS)),
    **_each(_RW_ACCESS_DELETE, "getdel", "lpop", "rpop", "blpop", "brpop"),
    **_each(_RW_UPDATE, "setrange", "expire", "pexpire", "expireat", "pexpireat", "persist"),
    **_each(_RW_UPDATE, "hset", "hmset", "lset"),
    **_each(_RW_DELETE, "hdel", "lrem", "ltrim"),
    **_each(_RM_DELETE, "del", "unlink", "forget"),
    **_each(_RO, "strlen", "exists", "type", "touch", "hkeys", "hlen", "hexists", "hstrlen"),
    **_each(_RO, "llen", "lpos", "watch", "object|encoding", "object|idletime"),
    **_each(_RO, "object|freq", "object|refcount", "memory|usage"),
    **_each(_RO_ACCESS, "eval_ro", "evalsha_ro"),
    # A script's keys may be read and written, whatever the command's own flags say.
    **_each(_RW_ACCESS_UPDATE, "eval", "evalsha"),
    "rename": (_RW_ACCESS_DELETE, _OW_UPDATE),
    "renamenx": (_RW_ACCESS_DELETE, _OW_INSERT),
    "copy": (_RO_ACCESS, _OW_UPDATE),
    **dict.fromkeys(
        ("lmove", "blmove", "rpoplpush", "brpoplpush"), (_RW_ACCESS_DELETE, _RW_INSERT)
    ),
}
#: Commands whose keys are counted by an argument, by the index of that argument (the
#: keys follow it), as EVAL's numkeys; a STORE form's destination comes before it.
_COUNTED: Final = {
    **dict.fromkeys(("eval", "evalsha", "eval_ro", "evalsha_ro", "bzmpop"), 2),
    **dict.fromkeys(("sintercard", "zunion", "zinter", "zdiff", "zintercard", "zmpop"), 1),
    **dict.fromkeys(("zunionstore", "zinterstore", "zdiffstore"), 2),
}
_DESTINATION_FIRST: Final = frozenset({"zunionstore", "zinterstore", "zdiffstore"})


#: Commands a request of which may name no key at all (Redis's NO_MANDATORY_KEYS).
_KEYS_OPTIONAL: Final = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro"})


def keys_optional(cmd: Command) -> bool:
    """Whether a request may name no key: COMMAND GETKEYS then answers none, not an error."""
    return cmd.name in _KEYS_OPTIONAL


def has_keys(cmd: Command) -> bool:
    """Whether the command takes keys at all (COMMAND GETKEYS refuses one that does not)."""
    return cmd.first_key > 0 or cmd.name in _COUNTED


def key_positions(cmd: Command, args: list[bytes]) -> list[int]:
    """The indexes of ``args`` (the whole request, its name first) that are keys.

    A key count that does not fit the request names no key (COMMAND GETKEYS then
    answers by :func:`keys_optional`).
    """
    at = _COUNTED.get(cmd.name)
    if at is not None:
        if len(args) <= at:
            return []
        try:
            count = parse_int64(args[at])
        except NotInteger:
            return []
        if not 0 <= count <= len(args) - at - 1:
            return []
        counted = list(range(at + 1, at + 1 + count))
        return [1, *counted] if cmd.name in _DESTINATION_FIRST and counted else counted
    if not cmd.first_key:
        return []
    last = cmd.last_key if cmd.last_key >= 0 else len(args) + cmd.last_key
    return list(range(cmd.first_key, min(last, len(args) - 1) + 1, max(cmd.key_step, 1)))


def key_flags(cmd: Command, args: list[bytes], nth: int) -> Flags:
    """The flags of the request's ``nth`` key (0 for its first)."""
    if cmd.name == "set":
        # SET's flags vary: with GET it reads the old value back (Redis's setGetKeys).
        wants_old = any(a.upper() == b"GET" for a in args[3:])
        return _RW_ACCESS_UPDATE if wants_old else _OW_UPDATE
    given = KEY_FLAGS.get(cmd.name)
    if given is None:
        return _RW_ACCESS_UPDATE if WRITE in cmd.flags else _RO_ACCESS
    return given[min(nth, len(given) - 1)]
