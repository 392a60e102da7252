"""Server commands: INFO, DBSIZE, FLUSHDB/FLUSHALL, TIME, CONFIG GET."""

from __future__ import annotations

import os
import platform
import time
from typing import Final

from stashd._version import __version__
from stashd.commands.base import (
    FAST,
    LOADING,
    READONLY,
    STALE,
    WRITE,
    Command,
    Deferred,
    Reply,
    Session,
    help_lines,
    run_subcommand,
    subcommand_rows,
)
from stashd.commands.connection import REDIS_COMPAT_VERSION
from stashd.errors import SyntaxErr
from stashd.glob import compile_glob
from stashd.resp import OK, Verbatim
from stashd.service import check_pattern

_STARTED: Final = time.monotonic()
_S: Final = (LOADING, STALE)


def dbsize(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """DBSIZE: keys in the caller's namespace."""
    return Deferred(s.service.count(s.require()))


def _ok(_: object) -> Reply:
    return OK


def flush(s: Session, args: list[bytes]) -> Reply:
    """FLUSHDB / FLUSHALL [ASYNC|SYNC]: the caller's namespace only."""
    if len(args) > 2 or (len(args) == 2 and args[1].upper() not in (b"ASYNC", b"SYNC")):
        raise SyntaxErr
    return Deferred(s.service.flush(s.require()), _ok)


def time_(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """TIME: [unix seconds, microseconds]."""
    now = time.time_ns() // 1000
    return [b"%d" % (now // 1_000_000), b"%d" % (now % 1_000_000)]


# A small, safe set of settings that GUI tools ask for; none can be changed at runtime.
_CONFIG: Final = {
    b"databases": b"1",
    b"maxmemory-policy": b"noeviction",
    b"save": b"",
    b"appendonly": b"no",
    b"timeout": b"0",
    b"proto-max-bulk-len": b"536870912",
}


def config_get(s: Session, args: list[bytes]) -> Reply:
    """CONFIG GET parameter [parameter ...]: every setting matching any glob pattern."""
    for pattern in args[2:]:
        check_pattern(pattern)
    matchers = [compile_glob(pattern.lower()).match for pattern in args[2:]]
    settings = {
        **_CONFIG,
        b"maxclients": b"%d" % s.clients.limit,
        b"maxmemory": b"%d" % s.held.maxmemory,
        b"client-output-buffer-limit": s.output_buffer_limit.encode(),
    }
    return {name: value for name, value in settings.items() if any(m(name) for m in matchers)}


def config_help(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """CONFIG HELP."""
    return help_lines("CONFIG", CONFIG_SUBCOMMANDS)


CONFIG_SUBCOMMANDS: Final = (
    Command(
        "config|get",
        config_get,
        -3,
        _S,
        "server",
        "The settings whose names match any of the glob patterns.",
        "CONFIG GET parameter [parameter ...]",
        "2.0.0",
    ),
    Command(
        "config|help",
        config_help,
        2,
        _S,
        "server",
        "The subcommands of CONFIG.",
        "CONFIG HELP",
        "5.0.0",
    ),
)
_CONFIG_ROWS: Final = subcommand_rows(CONFIG_SUBCOMMANDS)


def config(s: Session, args: list[bytes]) -> Reply:
    """CONFIG subcommand [argument ...]: GET and HELP; nothing can be set at runtime."""
    return run_subcommand(_CONFIG_ROWS, s, args)


def info(s: Session, args: list[bytes]) -> Reply:
    """INFO [section ...]: Redis-style text; the keyspace line counts the caller's namespace.

    Past Redis's fields the keyspace line carries the namespace's storage quota: the keys
    and bytes it holds as the quota counts them and its limits (0: none).
    """
    wanted = {a.decode("utf-8", "replace").lower() for a in args[1:]}
    # The principal of this request: a RESET later in the pipeline may clear the
    # session's before the reply is rendered.
    principal = s.principal

    def render(usage: tuple[int, int, int, int]) -> Reply:
        keys, held_keys, held_bytes, avg_ttl = usage
        keyspace: list[str] = []
        if principal is not None and (keys or held_keys):
            quota = principal.limits.quota
            keyspace.append(
                f"db0:keys={keys},expires={keys},avg_ttl={avg_ttl},"
                f"quota_keys={held_keys},quota_bytes={held_bytes},"
                f"max_keys={quota.max_keys or 0},max_bytes={quota.max_bytes or 0}"
            )
        sections = {
            "server": [
                f"redis_version:{REDIS_COMPAT_VERSION}",
                f"stash_version:{__version__}",
                "redis_mode:standalone",
                f"os:{platform.system()} {platform.release()} {platform.machine()}",
                f"process_id:{os.getpid()}",
                f"python_version:{platform.python_version()}",
                f"uptime_in_seconds:{int(time.monotonic() - _STARTED)}",
            ],
            # Redis's fields: every door's connections together, and the cap on them.
            "clients": [
                f"connected_clients:{s.clients.count}",
                f"maxclients:{s.clients.limit}",
                f"client_id:{s.client_id}",
                f"blocked_clients:{_blocked(s)}",
            ],
            # used_memory is the caller's namespace's bytes, as its quota counts them:
            # the server's total would tell one tenant of the others.
            "memory": [
                f"used_memory:{held_bytes}",
                f"used_memory_human:{human_bytes(held_bytes)}",
                f"maxmemory:{s.held.maxmemory}",
                "maxmemory_policy:noeviction",
            ],
            "persistence": ["loading:0"],
            "replication": ["role:master", "connected_slaves:0"],
            # To its clients stashd is one server, whatever it keeps its data in (a Redis
            # Cluster included): they must not route by slot.
            "cluster": ["cluster_enabled:0"],
            "keyspace": keyspace,
        }
        show = (
            sections
            if not wanted or wanted & {"all", "everything", "default"}
            else {k: v for k, v in sections.items() if k in wanted}
        )
        text = "".join(
            f"# {name.capitalize()}\r\n" + "".join(line + "\r\n" for line in lines) + "\r\n"
            for name, lines in show.items()
        )
        # Sections are separated by a blank line; nothing chosen is an empty string.
        return Verbatim(text[:-2])

    if principal is None:
        return render((0, 0, 0, 0))
    return Deferred(s.service.keyspace(principal), render)


def human_bytes(n: int) -> str:
    """Bytes as Redis's INFO writes them for people: 512B, 1.50K, 2.00M, up to P."""
    if n < 1024:
        return f"{n}B"
    value = float(n)
    for unit in "KMGTP":
        value /= 1024
        if value < 1024 or unit == "P":
            break
    return f"{value:.2f}{unit}"


COMMANDS: Final = (
    Command(
        "info",
        info,
        -1,
        _S,
        "server",
        "Server information and the namespace's size.",
        "INFO [section ...]",
        "1.0.0",
    ),
    Command(
        "dbsize",
        dbsize,
        1,
        (READONLY, FAST),
        "server",
        "How many keys the caller's namespace holds.",
        "DBSIZE",
        "1.0.0",
    ),
    Command(
        "flushdb",
        flush,
        -1,
        (WRITE,),
        "server",
        "Empty the caller's namespace.",
        "FLUSHDB [ASYNC | SYNC]",
        "1.0.0",
    ),
    Command(
        "flushall",
        flush,
        -1,
        (WRITE,),
        "server",
        "Empty the caller's namespace (never another's).",
        "FLUSHALL [ASYNC | SYNC]",
        "1.0.0",
    ),
    Command("time", time_, 1, (FAST, *_S), "server", "The server's clock.", "TIME", "2.6.0"),
    Command(
        "config",
        config,
        -2,
        _S,
        "server",
        "Read a small set of settings.",
        "CONFIG subcommand [argument ...]",
        "2.0.0",
        subcommands=CONFIG_SUBCOMMANDS,
    ),
)


def _blocked(s: Session) -> int:
    """The caller's namespace's clients waiting in BLPOP and its kin on this node."""
    if s.blocked is None or s.principal is None:
        return 0
    return s.blocked.blocked(s.principal.namespace)
