"""Connection commands: AUTH, HELLO, PING, ECHO, QUIT, RESET, SELECT, CLIENT.

These answer what redis-cli and redis-py send on connect (HELLO 3 with AUTH, CLIENT
SETINFO, CLIENT MAINT_NOTIFICATIONS) so that no error or warning reaches the user.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final, Protocol, cast

from stashd import log
from stashd._version import __version__
from stashd.commands.base import (
    FAST,
    LOADING,
    NOAUTH,
    STALE,
    Awaiting,
    Command,
    Reply,
    Session,
    help_lines,
    run_subcommand,
    subcommand_rows,
)
from stashd.errors import (
    CommandError,
    HelloNoAuth,
    NoProto,
    NotInteger,
    SyntaxErr,
    WrongArity,
    WrongPass,
)
from stashd.ops import parse_int64
from stashd.resp import OK, Verbatim

if TYPE_CHECKING:
    from collections.abc import Callable

    from stashd.types import Principal

logger = log.get("stashd.auth")


class RemoteKeyring(Protocol):
    """A keyring that looks keys up over the network (its ``remote`` is True)."""

    async def authenticate_async(self, username: str | None, key: bytes) -> Principal | None:
        """The principal for ``key``, or None; raises StoreUnavailable if it cannot tell."""
        ...


#: The Redis version whose commands and replies Stash follows; clients key features on it.
REDIS_COMPAT_VERSION: Final = "7.0.0"


def _authenticate(
    s: Session, username: bytes | None, key: bytes, then: Callable[[], Reply]
) -> Reply:
    """The AUTH and HELLO AUTH path: throttle check, keyring lookup, new principal.

    Every refusal is the same WRONGPASS. An address that has failed too often is not
    looked up at all, and its connection is closed after the reply. On success the
    reply is ``then()``. A keyring whose registry is remote (Redis) is asked without
    blocking the loop: the reply is then an :class:`Awaiting`.
    """
    throttle = s.throttle
    if throttle is not None and throttle.blocked(s.address):
        s.close_after_reply = True
        raise WrongPass
    user = None if username is None else username.decode("utf-8", "replace")
    keyring = s.keyring
    if keyring.remote:
        remote = cast("RemoteKeyring", keyring)
        return Awaiting(lambda: remote.authenticate_async(user, key), lambda p: _accept(s, p, then))
    return _accept(s, keyring.authenticate(user, key), then)


def _accept(s: Session, principal: Principal | None, then: Callable[[], Reply]) -> Reply:
    if principal is None:
        logger.info("auth_failed", peer=s.peer)
        if s.throttle is not None:
            s.throttle.failed(s.address)
        raise WrongPass
    s.principal = principal
    return then()


def _ok() -> Reply:
    return OK


def auth(s: Session, args: list[bytes]) -> Reply:
    """AUTH [username] key."""
    if len(args) > 3:
        raise SyntaxErr
    if len(args) == 3:
        return _authenticate(s, args[1], args[2], _ok)
    return _authenticate(s, None, args[1], _ok)


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

    def answer() -> Reply:
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

    if creds is not None:
        return _authenticate(s, creds[0], creds[1], answer)
    if s.principal is None:
        raise HelloNoAuth
    return answer()


def ping(s: Session, args: list[bytes]) -> Reply:
    """PING [message]; in RESP2's subscribed mode Redis's ``pong`` push, with the message."""
    if len(args) > 2:
        raise WrongArity("ping")
    if s.proto == 2 and s.subscribed:
        return [b"pong", args[1] if len(args) == 2 else b""]
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
    s.end_multi()
    s.watched.clear()
    if s.subscriber is not None:  # out of subscribed mode, with no confirmations
        s.hub.drop(s.subscriber)
    return "RESET"


def select(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """SELECT index: Stash has one database per namespace, index 0."""
    if parse_int64(args[1]) != 0:
        raise CommandError("DB index is out of range")
    return OK


# The bytes a client name may hold (Redis: no spaces, newlines or special characters).
_NAME_BYTES: Final = bytes(range(33, 127))


def _client_name(raw: bytes) -> bytes:
    # translate() deletes every allowed byte in C: a 1 MiB name is checked in microseconds.
    if raw.translate(None, _NAME_BYTES):
        raise CommandError("Client names cannot contain spaces, newlines or special characters.")
    return raw


def client_info_line(s: Session) -> str:
    """One CLIENT INFO / CLIENT LIST line in Redis's field=value format."""
    age = int(time.monotonic() - s.created)
    name = (s.name or b"").decode()
    lib = (s.lib_name or b"").decode("utf-8", "replace")
    ver = (s.lib_ver or b"").decode("utf-8", "replace")
    sub = s.subscriber
    channels, patterns = (0, 0) if sub is None else (len(sub.channels), len(sub.patterns))
    flags = "P" if channels or patterns else "N"  # Redis's flag of a subscribed client
    return (
        f"id={s.client_id} addr={s.peer} laddr={s.local} fd=0 name={name} age={age} idle=0 "
        f"flags={flags} db=0 sub={channels} psub={patterns} ssub=0 multi=-1 qbuf=0 qbuf-free=0 "
        "argv-mem=0 "
        f"multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r "
        f"cmd={s.last_command or 'NULL'} user=default redir=-1 resp={s.proto} "
        f"lib-name={lib} lib-ver={ver}\n"
    )


def client_setname(s: Session, args: list[bytes]) -> Reply:
    """CLIENT SETNAME name: an empty name clears it."""
    s.name = _client_name(args[2]) or None
    return OK


def client_getname(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """CLIENT GETNAME: the name, or null."""
    return s.name


def client_id(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """CLIENT ID: this connection's id."""
    return s.client_id


def client_info(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """CLIENT INFO and CLIENT LIST: this connection's line.

    CLIENT LIST shows only the caller's own connection: other connections may belong to
    other namespaces, whose names and addresses are not the caller's to see.
    """
    return Verbatim(client_info_line(s))


def client_setinfo(s: Session, args: list[bytes]) -> Reply:
    """CLIENT SETINFO LIB-NAME name | LIB-VER version, which CLIENT INFO then shows."""
    attr = args[2].upper()
    if attr not in (b"LIB-NAME", b"LIB-VER"):
        raise CommandError(f"Unrecognized option '{args[2].decode('utf-8', 'replace')}'")
    value = args[3]
    if value.translate(None, _NAME_BYTES):
        raise CommandError(
            f"{args[2].decode('utf-8', 'replace')} cannot contain spaces, newlines or "
            "special characters."
        )
    if attr == b"LIB-NAME":
        s.lib_name = value
    else:
        s.lib_ver = value
    return OK


def client_switch(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """CLIENT NO-EVICT, NO-TOUCH, MAINT_NOTIFICATIONS: ON or OFF, accepted with nothing to do.

    Stash never evicts a client and keeps no access times; it sends no maintenance
    notifications (redis-py 8 asks for them on connect, with options after ON).
    """
    if args[2].upper() not in (b"ON", b"OFF"):
        raise SyntaxErr
    return OK


def client_reply(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """CLIENT REPLY ON; OFF and SKIP are refused, since Stash answers every request."""
    mode = args[2].upper()
    if mode == b"ON":
        return OK
    if mode in (b"OFF", b"SKIP"):
        # Accepting OFF and replying anyway would desynchronise a client that relies on it.
        raise CommandError("CLIENT REPLY OFF and SKIP are not supported: every request is answered")
    raise SyntaxErr


def client_help(s: Session, args: list[bytes]) -> Reply:  # noqa: ARG001 - fixed handler signature
    """CLIENT HELP: the subcommands, with their syntax."""
    return help_lines("CLIENT", CLIENT_SUBCOMMANDS)


_CS = (LOADING, STALE)

CLIENT_SUBCOMMANDS: Final = (
    Command(
        "client|setname",
        client_setname,
        3,
        _CS,
        "connection",
        "Name the connection.",
        "CLIENT SETNAME connection-name",
        "2.6.9",
    ),
    Command(
        "client|getname",
        client_getname,
        2,
        _CS,
        "connection",
        "The connection's name.",
        "CLIENT GETNAME",
        "2.6.9",
    ),
    Command(
        "client|id", client_id, 2, _CS, "connection", "The connection's id.", "CLIENT ID", "5.0.0"
    ),
    Command(
        "client|info",
        client_info,
        2,
        _CS,
        "connection",
        "A line describing the connection.",
        "CLIENT INFO",
        "6.2.0",
    ),
    Command(
        "client|list",
        client_info,
        2,
        _CS,
        "connection",
        "The caller's own connection, in CLIENT LIST's format.",
        "CLIENT LIST",
        "2.4.0",
    ),
    Command(
        "client|setinfo",
        client_setinfo,
        4,
        _CS,
        "connection",
        "Record the client library's name or version.",
        "CLIENT SETINFO LIB-NAME libname | LIB-VER libver",
        "7.2.0",
    ),
    Command(
        "client|no-evict",
        client_switch,
        3,
        _CS,
        "connection",
        "Accepted: Stash never evicts a connection.",
        "CLIENT NO-EVICT ON | OFF",
        "7.0.0",
    ),
    Command(
        "client|no-touch",
        client_switch,
        3,
        _CS,
        "connection",
        "Accepted: Stash keeps no access times.",
        "CLIENT NO-TOUCH ON | OFF",
        "7.2.0",
    ),
    Command(
        "client|maint_notifications",
        client_switch,
        -3,
        _CS,
        "connection",
        "Accepted: Stash sends no maintenance notifications.",
        "CLIENT MAINT_NOTIFICATIONS ON | OFF [option value ...]",
        "0.1.0",
    ),
    Command(
        "client|reply",
        client_reply,
        3,
        _CS,
        "connection",
        "ON is accepted; OFF and SKIP are refused.",
        "CLIENT REPLY ON | OFF | SKIP",
        "3.2.0",
    ),
    Command(
        "client|help",
        client_help,
        2,
        _CS,
        "connection",
        "The subcommands of CLIENT.",
        "CLIENT HELP",
        "5.0.0",
    ),
)
_CLIENT_ROWS: Final = subcommand_rows(CLIENT_SUBCOMMANDS)


def client(s: Session, args: list[bytes]) -> Reply:
    """CLIENT subcommand [argument ...]."""
    return run_subcommand(_CLIENT_ROWS, s, args)


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
        subcommands=CLIENT_SUBCOMMANDS,
    ),
)
