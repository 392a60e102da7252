"""COMMAND: what the command table tells a client of every command, and of its keys.

COUNT, LIST (with FILTERBY), INFO and DOCS read the rows of the table; GETKEYS and
GETKEYSANDFLAGS find the keys of a request by the row's key positions, as Redis finds
them by its key specs, so a client that routes or checks keys by them (redis-py's
cluster client, proxies) sees the keys Redis would name.
"""

from __future__ import annotations

import re
from typing import Final

from stashd.commands import keyspecs
from stashd.commands.base import (
    LOADING,
    STALE,
    TABLE,
    WRITE,
    Command,
    Reply,
    Session,
    help_lines,
    run_subcommand,
    subcommand_rows,
)
from stashd.errors import CommandError, SyntaxErr
from stashd.glob import compile_glob
from stashd.service import check_pattern

_S: Final = (LOADING, STALE)


def _info_entry(cmd: Command) -> Reply:
    return [
        cmd.name.encode(),
        cmd.arity,
        set(cmd.flags),
        cmd.first_key,
        cmd.last_key,
        cmd.key_step,
        _categories(cmd),
        [],
        [],
        [_info_entry(sub) for sub in cmd.subcommands],
    ]


_TOKEN: Final = re.compile(r"\[|\]|\||\.\.\.|[^\s\[\]|]+")


#: Argument names whose values are integers.
_INTEGERS: Final = frozenset(
    {
        "seconds",
        "milliseconds",
        "count",
        "increment",
        "decrement",
        "index",
        "cursor",
        "version",
        "protover",
    }
)


def _is_token(tok: str) -> bool:
    """A keyword of the syntax (EX, IFVERSION, WITHMETA), written in capitals."""
    return tok.isupper() or tok.replace("-", "").isupper()


def _kind(name: str) -> bytes:
    """The COMMAND DOCS type of an argument called ``name``."""
    if name in ("key", "newkey"):
        return b"key"
    if name in _INTEGERS:
        return b"integer"
    return b"unix-time" if name.startswith("unix-time") else b"string"


def _arguments(syntax: str, words: int) -> list[Reply]:
    """COMMAND DOCS arguments from a syntax line, after the ``words`` of the command's name."""
    tokens = _TOKEN.findall(syntax)[words:]  # drop the command's name
    pos = 0

    def parse_seq(stop: str | None) -> list[dict[bytes, Reply]]:
        nonlocal pos
        alternatives: list[list[dict[bytes, Reply]]] = [[]]
        while pos < len(tokens) and tokens[pos] != stop:
            tok = tokens[pos]
            pos += 1
            current = alternatives[-1]
            if tok == "[":
                inner = parse_seq("]")
                pos += 1
                for arg in inner:
                    arg[b"flags"] = {*arg.get(b"flags", set()), "optional"}
                current.extend(inner)
            elif tok == "|":
                alternatives.append([])
            elif tok == "...":
                if current:
                    current[-1][b"flags"] = {*current[-1].get(b"flags", set()), "multiple"}
            elif _is_token(tok):
                nxt = tokens[pos] if pos < len(tokens) else ""
                if nxt and nxt not in "[]|..." and not _is_token(nxt):
                    # A keyword and its value (EXTEND seconds) are one argument, as Redis
                    # documents EX seconds: the value, introduced by its token.
                    pos += 1
                    current.append(
                        {b"name": nxt.encode(), b"type": _kind(nxt), b"token": tok.encode()}
                    )
                else:
                    current.append(
                        {
                            b"name": tok.lower().encode(),
                            b"type": b"pure-token",
                            b"token": tok.encode(),
                        }
                    )
            else:
                current.append({b"name": tok.encode(), b"type": _kind(tok)})
        if len(alternatives) == 1:
            return alternatives[0]
        merged: list[dict[bytes, Reply]] = []
        for alt in alternatives:
            if len(alt) == 1:
                merged.append(alt[0])
            else:
                merged.append(
                    {
                        b"name": b"-".join(a[b"name"] for a in alt),
                        b"type": b"block",
                        b"arguments": alt,
                    }
                )
        return [{b"name": b"choice", b"type": b"oneof", b"arguments": merged}]

    return parse_seq(None)


def _docs_entry(cmd: Command) -> Reply:
    doc: dict[bytes, Reply] = {
        b"summary": cmd.summary.encode(),
        b"since": cmd.since.encode(),
        b"group": cmd.group.encode(),
    }
    words = cmd.name.count("|") + 1
    if cmd.syntax and not cmd.subcommands:
        doc[b"arguments"] = _arguments(cmd.syntax, words)
    if cmd.subcommands:
        # As Redis gives them, so redis-cli's hints cover "CLIENT SETNAME" and the rest.
        doc[b"subcommands"] = {sub.name.encode(): _docs_entry(sub) for sub in cmd.subcommands}
    return doc


def command_count(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """COMMAND COUNT: how many commands (a container counts once, as in Redis)."""
    return len(TABLE)


def _categories(cmd: Command) -> set[str]:
    """The command's ACL categories: its group, and whether it reads or writes."""
    return {f"@{cmd.group}", "@write" if WRITE in cmd.flags else "@read"}


def _every_row() -> list[Command]:
    """Every command and, after each container, its subcommands, as COMMAND LIST names them."""
    return [row for cmd in TABLE.values() for row in (cmd, *cmd.subcommands)]


def command_list(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """COMMAND LIST [FILTERBY MODULE name | ACLCAT category | PATTERN pattern].

    Subcommands are listed by their full names (``client|list``), as Redis lists them.
    """
    rows = _every_row()
    if len(args) == 2:
        return [row.name.encode() for row in rows]
    if len(args) != 5 or args[2].upper() != b"FILTERBY":
        raise SyntaxErr
    kind, arg = args[3].upper(), args[4]
    if kind == b"MODULE":
        return []  # no module is loaded into Stash
    if kind == b"ACLCAT":
        category = "@" + arg.decode("utf-8", "replace").lower()
        return [row.name.encode() for row in rows if category in _categories(row)]
    if kind == b"PATTERN":
        check_pattern(arg)
        # Redis matches without case; command names are lower case, so lower the pattern.
        match = compile_glob(arg.lower()).match
        return [row.name.encode() for row in rows if match(row.name.encode())]
    raise SyntaxErr


def _lookup(words: list[bytes]) -> Command | None:
    """The row a request names: a command, or a container's subcommand."""
    cmd = TABLE.get(words[0].lower())
    if cmd is None or not cmd.subcommands:
        return cmd
    if len(words) < 2:
        return None
    wanted = f"{cmd.name}|{words[1].decode('utf-8', 'replace').lower()}"
    return next((sub for sub in cmd.subcommands if sub.name == wanted), None)


def _getkeys(args: list[bytes], with_flags: bool) -> Reply:
    """COMMAND GETKEYS and GETKEYSANDFLAGS: the keys of the request after the subcommand."""
    request = args[2:]
    cmd = _lookup(request)
    if cmd is None:
        raise CommandError("Invalid command specified")
    if not keyspecs.has_keys(cmd):
        raise CommandError("The command has no key arguments")
    n = len(request)
    if (cmd.arity > 0 and n != cmd.arity) or n < -cmd.arity:
        raise CommandError("Invalid number of arguments specified for command")
    positions = keyspecs.key_positions(cmd, request)
    if not positions and not keyspecs.keys_optional(cmd):
        raise CommandError("Invalid arguments specified for command")
    if not with_flags:
        return [request[i] for i in positions]
    return [
        [request[i], set(keyspecs.key_flags(cmd, request, nth))] for nth, i in enumerate(positions)
    ]


def command_getkeys(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """COMMAND GETKEYS command [arg ...]: which arguments are keys."""
    return _getkeys(args, with_flags=False)


def command_getkeysandflags(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """COMMAND GETKEYSANDFLAGS command [arg ...]: the keys, each with what is done to it."""
    return _getkeys(args, with_flags=True)


#: Names one COMMAND INFO or DOCS may ask about. Each entry costs about 10 us to build
#: and encode, so the 16,384 a request may carry would hold the loop for 200 ms or more;
#: the whole table is far smaller than this.
COMMAND_NAMES_MAX: Final = 1024


def _names(args: list[bytes]) -> list[bytes]:
    """The lower-case command names of COMMAND INFO/DOCS, at most COMMAND_NAMES_MAX."""
    names = args[2:]
    if len(names) > COMMAND_NAMES_MAX:
        raise CommandError(
            f"COMMAND {args[1].decode('utf-8', 'replace').upper()} takes at most "
            f"{COMMAND_NAMES_MAX} command names, got {len(names)}"
        )
    return [a.lower() for a in names]


def command_info(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """COMMAND INFO [name ...]: one entry per name, null for an unknown one."""
    table = TABLE
    names = _names(args)
    if not names:
        return [_info_entry(c) for c in table.values()]
    return [_info_entry(table[n]) if n in table else None for n in names]


def command_docs(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """COMMAND DOCS [name ...]: a map of name to docs; unknown names are left out."""
    table = TABLE
    names = _names(args)
    chosen = [table[n] for n in names if n in table] if names else list(table.values())
    return {c.name.encode(): _docs_entry(c) for c in chosen}


def command_help(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """COMMAND HELP."""
    return help_lines("COMMAND", COMMAND_SUBCOMMANDS)


COMMAND_SUBCOMMANDS: Final = (
    Command(
        "command|count",
        command_count,
        2,
        _S,
        "server",
        "How many commands there are.",
        "COMMAND COUNT",
        "2.8.13",
    ),
    Command(
        "command|list",
        command_list,
        -2,
        _S,
        "server",
        "Every command's name, subcommands included, or those a filter picks.",
        "COMMAND LIST [FILTERBY MODULE module-name | ACLCAT category | PATTERN pattern]",
        "7.0.0",
    ),
    Command(
        "command|getkeys",
        command_getkeys,
        -4,
        _S,
        "server",
        "The keys of a request.",
        "COMMAND GETKEYS command [arg ...]",
        "2.8.13",
    ),
    Command(
        "command|getkeysandflags",
        command_getkeysandflags,
        -4,
        _S,
        "server",
        "The keys of a request, each with what the command does with it.",
        "COMMAND GETKEYSANDFLAGS command [arg ...]",
        "7.0.0",
    ),
    Command(
        "command|info",
        command_info,
        -2,
        _S,
        "server",
        "Arity, flags and key positions of commands.",
        "COMMAND INFO [command-name ...]",
        "2.8.13",
    ),
    Command(
        "command|docs",
        command_docs,
        -2,
        _S,
        "server",
        "Summary, group and arguments of commands.",
        "COMMAND DOCS [command-name ...]",
        "7.0.0",
    ),
    Command(
        "command|help",
        command_help,
        2,
        _S,
        "server",
        "The subcommands of COMMAND.",
        "COMMAND HELP",
        "5.0.0",
    ),
)
_COMMAND_ROWS: Final = subcommand_rows(COMMAND_SUBCOMMANDS)


def command(s: Session, args: list[bytes]) -> Reply:
    """COMMAND [subcommand [argument ...]]: alone, the details of every command."""
    if len(args) == 1:
        return [_info_entry(c) for c in TABLE.values()]
    return run_subcommand(_COMMAND_ROWS, s, args)


COMMANDS: Final = (
    Command(
        "command",
        command,
        -1,
        _S,
        "server",
        "Describe the commands Stash serves.",
        "COMMAND [subcommand [argument ...]]",
        "2.8.13",
        subcommands=COMMAND_SUBCOMMANDS,
    ),
)
