"""Connection commands: AUTH, HELLO, PING, ECHO, QUIT, RESET, SELECT, CLIENT.

These answer what redis-cli and redis-py send on connect (HELLO 3 with AUTH, CLIENT
SETINFO, CLIENT MAINT_NOTIFICATIONS) so that no error or warning reaches the user.
"""

from __future__ import annotations

import time
from typing import Final

from stashd import __version__
from stashd.commands.base import FAST, LOADING, NOAUTH, STALE, Command, Reply, Session
from stashd.errors import (
    CommandError,
    NoAuth,
    NoProto,
    NotInteger,
    SyntaxErr,
    UnknownSubcommand,
    WrongArity,
    WrongPass,
)
from stashd.ops import parse_int64
from stashd.resp import OK, Verbatim

#: The Redis version whose commands and replies Stash follows; clients key features on it.
REDIS_COMPAT_VERSION: Final = "7.0.0"


def _authenticate(s: Session, username: bytes | None, key: bytes) -> None:
    principal = s.keyring.authenticate(
        None if username is None else username.decode("utf-8", "replace"), key
    )
    if principal is None:
        raise WrongPass
    s.principal = principal


def auth(s: Session, args: list[bytes]) -> Reply:
    """AUTH [username] key."""
    if len(args) > 3:
        raise SyntaxErr
    if len(args) == 3:
        _authenticate(s, args[1], args[2])
    else:
        _authenticate(s, None, args[1])
    return OK


def hello(s: Session, args: list[bytes]) -> Reply:
    """HELLO [protover [AUTH username key] [SETNAME name]]: the server's map, in that protocol."""
    proto = s.proto
    name: bytes | None = None
    i = 1
    if len(args) > 1:
        try:
            proto = parse_int64(args[1])
        except NotInteger:
            raise CommandError("Protocol version is not an integer or out of range") from None
        if proto not in (2, 3):
            raise NoProto
        i = 2
    creds: tuple[bytes, bytes] | None = None
    while i < len(args):
        opt = args[i].upper()
        if opt == b"AUTH" and i + 2 < len(args):
            creds = (args[i + 1], args[i + 2])
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(args):
            name = _client_name(args[i + 1])
            i += 2
        else:
            raise CommandError(
                f"Syntax error in HELLO option '{args[i].decode('utf-8', 'replace')}'"
            )
    if creds is not None:
        _authenticate(s, creds[0], creds[1])
    elif s.principal is None:
        raise NoAuth
    if name is not None:
        s.name = name or None
    s.proto = int(proto)
    return {
        b"server": b"stash",
        b"version": REDIS_COMPAT_VERSION.encode(),
        b"stash_version": __version__.encode(),
        b"proto": s.proto,
        b"id": s.client_id,
        b"mode": b"standalone",
        b"role": b"master",
        b"modules": [],
    }


def ping(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """PING [message]."""
    if len(args) > 2:
        raise WrongArity("ping")
    return "PONG" if len(args) == 1 else args[1]


def echo(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """ECHO message."""
    return args[1]


def quit_(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """QUIT: +OK, then the connection closes."""
    s.close_after_reply = True
    return OK


def reset(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """RESET: back to a fresh connection (RESP2, anonymous, no name, no MULTI, no WATCH).

    The library's name and version stay: they still describe the client, as in Redis.
    """
    s.principal = s.keyring.anonymous()
    s.proto = 2
    s.name = None
    s.multi = None
    s.multi_dirty = False
    s.watched.clear()
    return "RESET"


def select(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """SELECT index: Stash has one database per namespace, index 0."""
    if parse_int64(args[1]) != 0:
        raise CommandError("DB index is out of range")
    return OK


def _client_name(raw: bytes) -> bytes:
    if any(c <= 32 or c > 126 for c in raw):
        raise CommandError("Client names cannot contain spaces, newlines or special characters.")
    return raw


def client_info_line(s: Session) -> str:
    """One CLIENT INFO / CLIENT LIST line in Redis's field=value format."""
    age = int(time.monotonic() - s.created)
    name = (s.name or b"").decode()
    lib = (s.lib_name or b"").decode("utf-8", "replace")
    ver = (s.lib_ver or b"").decode("utf-8", "replace")
    return (
        f"id={s.client_id} addr={s.peer} laddr={s.local} fd=0 name={name} age={age} idle=0 "
        f"flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 "
        f"multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r "
        f"cmd={s.last_command or 'NULL'} user=default redir=-1 resp={s.proto} "
        f"lib-name={lib} lib-ver={ver}\n"
    )


_CLIENT_OK_SUBCOMMANDS: Final = (b"NO-EVICT", b"NO-TOUCH", b"REPLY")


def client(s: Session, args: list[bytes]) -> Reply:
    """CLIENT SETNAME|GETNAME|SETINFO|ID|INFO|LIST|MAINT_NOTIFICATIONS|NO-EVICT|NO-TOUCH."""
    sub = args[1].upper()
    n = len(args)
    if sub == b"SETNAME" and n == 3:
        s.name = _client_name(args[2]) or None
        return OK
    if sub == b"GETNAME" and n == 2:
        return s.name
    if sub == b"ID" and n == 2:
        return s.client_id
    if sub == b"INFO" and n == 2:
        return Verbatim(client_info_line(s))
    if sub == b"LIST" and n == 2:
        return Verbatim(client_info_line(s))
    if sub == b"SETINFO" and n == 4:
        attr = args[2].upper()
        if attr == b"LIB-NAME":
            s.lib_name = _client_name(args[3])
        elif attr == b"LIB-VER":
            s.lib_ver = _client_name(args[3])
        else:
            raise CommandError(f"Unrecognized option '{args[2].decode('utf-8', 'replace')}'")
        return OK
    if sub == b"MAINT_NOTIFICATIONS" and n >= 3:
        # Accepted so redis-py 8 connects cleanly; Stash never sends such notifications.
        return OK
    if sub in _CLIENT_OK_SUBCOMMANDS and n == 3:
        return OK
    if sub in (b"SETNAME", b"GETNAME", b"ID", b"INFO", b"LIST", b"SETINFO"):
        raise WrongArity(f"client|{sub.decode().lower()}")
    raise UnknownSubcommand(args[1].decode("utf-8", "replace"), "CLIENT")


_C = (FAST, NOAUTH, LOADING, STALE)

COMMANDS: Final = (
    Command(
        "auth",
        auth,
        -2,
        _C,
        "connection",
        "Authenticate; the key selects the connection's namespace.",
        "AUTH [username] key",
        "1.0.0",
    ),
    Command(
        "hello",
        hello,
        -1,
        _C,
        "connection",
        "Pick the protocol (2 or 3), optionally authenticate and name the connection.",
        "HELLO [protover [AUTH username key] [SETNAME clientname]]",
        "6.0.0",
    ),
    Command(
        "ping",
        ping,
        -1,
        (FAST, STALE),
        "connection",
        "PONG, or the message.",
        "PING [message]",
        "1.0.0",
    ),
    Command(
        "echo", echo, 2, (FAST, STALE), "connection", "The message, back.", "ECHO message", "1.0.0"
    ),
    Command("quit", quit_, -1, _C, "connection", "Close the connection.", "QUIT", "1.0.0"),
    Command("reset", reset, 1, _C, "connection", "Reset the connection's state.", "RESET", "6.2.0"),
    Command(
        "select",
        select,
        2,
        (FAST, LOADING, STALE),
        "connection",
        "Only database 0 exists.",
        "SELECT index",
        "1.0.0",
    ),
    Command(
        "client",
        client,
        -2,
        (LOADING, STALE),
        "connection",
        "Connection settings and information.",
        "CLIENT subcommand [argument ...]",
        "2.4.0",
    ),
)
