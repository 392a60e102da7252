"""Scripting: EVAL, EVALSHA, their read-only forms, and SCRIPT LOAD|EXISTS|FLUSH|KILL|HELP.

A script is one :class:`~stashd.ops.Script` operation: its ``redis.call`` runs the very
handlers of the command table, in the caller's session, and runs the operation each
builds inside the script's own run, so every rule of Stash (the default and maximum TTL,
payload caps, versions, quotas) holds inside a script with no copy of any of them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Final

from stashd.commands.base import (
    LOADING,
    READONLY,
    STALE,
    TABLE,
    WRITE,
    Awaiting,
    Command,
    Deferred,
    Reply,
    Session,
    help_lines,
    int_arg,
    name_writes,
    run_subcommand,
    subcommand_rows,
)
from stashd.errors import CommandError, NoScript, NotBusy, StashError
from stashd.ops import Script
from stashd.resp import OK

if TYPE_CHECKING:
    from stashd.ops import Op
    from stashd.types import View

#: Commands a script may not run, as Redis refuses them (its ``noscript`` flag): those
#: that act on the connection or a transaction, and scripting itself.
NOT_IN_SCRIPTS: Final = frozenset(
    {
        b"auth",
        b"hello",
        b"quit",
        b"reset",
        b"client",
        b"config",
        b"multi",
        b"exec",
        b"discard",
        b"watch",
        b"unwatch",
        b"eval",
        b"evalsha",
        b"eval_ro",
        b"evalsha_ro",
        b"script",
        b"bzpopmin",  # Redis 7.0 flags these blocking commands noscript too
        b"bzpopmax",
        b"blpop",
        b"brpop",
        b"blmove",
        b"brpoplpush",
    }
)


def _script(s: Session, args: list[bytes], by_sha: bool, read_only: bool) -> Reply:
    """EVAL script|sha numkeys [key ...] [arg ...], and its three kin."""
    p = s.require()
    ns = p.namespace
    numkeys = int_arg(args[2])
    if numkeys < 0:
        raise CommandError("Number of keys can't be negative")
    if numkeys > len(args) - 3:
        raise CommandError("Number of keys can't be greater than number of args")
    scripts = s.service.scripts
    if by_sha:
        sha = args[1].decode("latin-1").lower()
        source = scripts.text(ns, sha)
        if source is None:
            raise NoScript
    else:
        source = args[1]
        sha = scripts.load(ns, source)
    keys = args[3 : 3 + numkeys]
    argv = args[3 + numkeys :]

    def body(view: View, now: int, ran: list[tuple[Op | None, Any]]) -> Reply:
        sandbox = scripts.sandbox(ns)

        # A command's reply takes the shape of the script's protocol, not the client's
        # (ZRANGE ... WITHSCORES is flat in RESP2), as in Redis: a copy of the session
        # speaks it, since the connection's own may be encoding replies meanwhile (a
        # script runs on the SQLite store's thread).
        sessions = {s.proto: s}

        def call(words: list[bytes]) -> Reply:
            proto = sandbox.proto
            session = sessions.get(proto)
            if session is None:
                session = sessions[proto] = dataclasses.replace(s, proto=proto)
            return _call(session, words, read_only, view, now, ran)

        return sandbox.run(sha, source, keys, argv, call)

    op = Script(ns, keys, body, not read_only, s.service.scripts.time_limit_ms)
    quota = p.limits.quota
    if quota.limited and not read_only:
        # Its commands' writes are checked against the quota: a store reads the usage first.
        op.quota = quota
    return Deferred(op)


def _call(  # noqa: PLR0917 - the one place redis.call lands
    s: Session,
    words: list[bytes],
    read_only: bool,
    view: View,
    now: int,
    ran: list[tuple[Op | None, Any]],
) -> Reply:
    """One redis.call: the command's reply, its operation run on the script's view."""
    name = words[0].lower()
    cmd = TABLE.get(name)
    if cmd is None:
        raise CommandError("Unknown Redis command called from script")
    if name in NOT_IN_SCRIPTS:
        raise CommandError("This Redis command is not allowed from script")
    n = len(words)
    if (cmd.arity > 0 and n != cmd.arity) or n < -cmd.arity:
        raise CommandError("Wrong number of args calling Redis command from script")
    if read_only and WRITE in cmd.flags:
        raise CommandError("Write commands are not allowed from read-only scripts.")
    reply = name_writes(cmd.handler(s, words), cmd.name)
    if type(reply) is Awaiting:
        # It needs a step awaited outside the store's atomic unit (KEYS' pages).
        raise CommandError("This Redis command is not allowed from script")
    if type(reply) is not Deferred:
        ran.append((None, None))
        return reply
    op = reply.op
    try:
        result = op.run(view, now)
    except StashError as exc:
        ran.append((op, exc))
        raise
    ran.append((op, result))
    return result if reply.finish is None else reply.finish(result)


def eval_(s: Session, args: list[bytes]) -> Reply:
    """EVAL script numkeys [key ...] [arg ...]."""
    return _script(s, args, by_sha=False, read_only=False)


def evalsha(s: Session, args: list[bytes]) -> Reply:
    """EVALSHA sha1 numkeys [key ...] [arg ...]."""
    return _script(s, args, by_sha=True, read_only=False)


def eval_ro(s: Session, args: list[bytes]) -> Reply:
    """EVAL_RO script numkeys [key ...] [arg ...]: write commands refused."""
    return _script(s, args, by_sha=False, read_only=True)


def evalsha_ro(s: Session, args: list[bytes]) -> Reply:
    """EVALSHA_RO sha1 numkeys [key ...] [arg ...]: write commands refused."""
    return _script(s, args, by_sha=True, read_only=True)


# -- SCRIPT -------------------------------------------------------------------------------


def script_load(s: Session, args: list[bytes]) -> Reply:
    """SCRIPT LOAD script: compile and keep it; its SHA1."""
    return s.service.scripts.load(s.require().namespace, args[2]).encode()


def script_exists(s: Session, args: list[bytes]) -> Reply:
    """SCRIPT EXISTS sha1 [sha1 ...]: 1 or 0 for each, in the caller's namespace."""
    return s.service.scripts.exists(s.require().namespace, args[2:])


def script_flush(s: Session, args: list[bytes]) -> Reply:
    """SCRIPT FLUSH [ASYNC|SYNC]: forget the namespace's scripts (both modes alike)."""
    if len(args) > 3 or (len(args) == 3 and args[2].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError("SCRIPT FLUSH only support SYNC|ASYNC option")
    s.service.scripts.flush(s.require().namespace)
    return OK


def script_kill(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """SCRIPT KILL: stop the namespace's running script; what it wrote is not kept."""
    if not s.service.scripts.kill(s.require().namespace):
        raise NotBusy
    return OK


def script_help(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """SCRIPT HELP."""
    return help_lines("SCRIPT", SCRIPT_SUBCOMMANDS)


_G: Final = "scripting"
_S: Final = ("noscript", STALE)

SCRIPT_SUBCOMMANDS: Final = (
    Command(
        "script|exists",
        script_exists,
        -3,
        ("noscript",),
        _G,
        "Whether each script is in the namespace's cache (1 or 0).",
        "SCRIPT EXISTS sha1 [sha1 ...]",
        "2.6.0",
    ),
    Command(
        "script|flush",
        script_flush,
        -2,
        ("noscript",),
        _G,
        "Forget every script of the namespace.",
        "SCRIPT FLUSH [ASYNC|SYNC]",
        "2.6.0",
    ),
    Command(
        "script|kill",
        script_kill,
        2,
        ("noscript", "allow_busy"),
        _G,
        "Stop the namespace's running script; nothing it wrote is kept.",
        "SCRIPT KILL",
        "2.6.0",
    ),
    Command(
        "script|load",
        script_load,
        3,
        _S,
        _G,
        "Load a script into the namespace's cache without running it.",
        "SCRIPT LOAD script",
        "2.6.0",
    ),
    Command(
        "script|help",
        script_help,
        2,
        (LOADING, STALE),
        _G,
        "Prints this help.",
        "SCRIPT HELP",
        "5.0.0",
    ),
)
_SCRIPT_ROWS: Final = subcommand_rows(SCRIPT_SUBCOMMANDS)


def script(s: Session, args: list[bytes]) -> Reply:
    """SCRIPT subcommand [argument ...]."""
    return run_subcommand(_SCRIPT_ROWS, s, args)


_E: Final = ("noscript", STALE, "skip_monitor", "no_mandatory_keys", "movablekeys")
_RO: Final = (READONLY, *_E)

COMMANDS: Final = (
    Command(
        "eval",
        eval_,
        -3,
        _E,
        _G,
        "Run a Lua script as one atomic operation.",
        "EVAL script numkeys [key ...] [arg ...]",
        "2.6.0",
    ),
    Command(
        "evalsha",
        evalsha,
        -3,
        _E,
        _G,
        "Run a cached Lua script by its SHA1.",
        "EVALSHA sha1 numkeys [key ...] [arg ...]",
        "2.6.0",
    ),
    Command(
        "eval_ro",
        eval_ro,
        -3,
        _RO,
        _G,
        "Run a Lua script that may only read.",
        "EVAL_RO script numkeys [key ...] [arg ...]",
        "7.0.0",
    ),
    Command(
        "evalsha_ro",
        evalsha_ro,
        -3,
        _RO,
        _G,
        "Run a cached Lua script that may only read.",
        "EVALSHA_RO sha1 numkeys [key ...] [arg ...]",
        "7.0.0",
    ),
    Command(
        "script",
        script,
        -2,
        ("noscript",),
        _G,
        "Manage the namespace's script cache.",
        "SCRIPT subcommand [argument ...]",
        "2.6.0",
        subcommands=SCRIPT_SUBCOMMANDS,
    ),
)
