"""What every command module shares: the session it acts for, table entries, argument parsing.

A command handler takes the session and the request's arguments and returns either a
reply value (see :mod:`stashd.resp`) or a :class:`Deferred`: an operation for the store
plus the function that turns the operation's result into the reply. Handlers parse and
validate everything before building the operation, so a refused request changes nothing.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from stashd.admission import ClientSlots
from stashd.errors import CommandError, NotInteger, SyntaxErr, UnknownSubcommand, WrongArity
from stashd.glob import compile_glob
from stashd.held import HeldMemory, request_bytes
from stashd.ops import (
    INT64_MAX,
    INT64_MIN,
    KEEP,
    Edit,
    EditFirst,
    EditTwo,
    Op,
    StoreFrom,
    parse_int64,
)
from stashd.pubsub import Hub, Subscriber
from stashd.service import check_pattern

if TYPE_CHECKING:
    from stashd.service import MemoryService
    from stashd.tenancy import AuthThrottle, Keyring
    from stashd.types import Principal
    from stashd.waiters import Waiters

Reply = Any
Finish = Callable[[Any], Reply]
_Items = TypeVar("_Items")


class Deferred:
    """An operation to run on the store, and how its result becomes the reply."""

    __slots__ = ("finish", "op")

    def __init__(self, op: Op, finish: Finish | None = None) -> None:
        self.op = op
        self.finish = finish


class Awaiting:
    """A reply that needs an awaited step first, such as a key lookup in Redis.

    The connection pauses its dispatch (and its reading), awaits ``start()``, and
    resumes with ``finish(result)`` as the reply; an error from either becomes the
    reply instead. Requests after it wait, so replies keep their order. ``ran`` holds
    the operations ``start`` ran, whose work the rate limit charges once it is done.
    """

    __slots__ = ("finish", "in_multi", "listen", "ran", "start")

    def __init__(
        self,
        start: Callable[[], Awaitable[Any]],
        finish: Finish,
        in_multi: str = "",
        *,
        listen: bool = False,
    ) -> None:
        self.start = start
        self.finish = finish
        # Keep reading while it waits (a blocking pop), so a client that closes is seen
        # and its wait ends; what it sends meanwhile waits its turn, one read at most.
        self.listen = listen
        # Why it cannot run inside MULTI (a transaction is one step, nothing is awaited).
        self.in_multi = in_multi
        self.ran: list[Op] = []


Handler = Callable[["Session", list[bytes]], Reply]
# Flags, as COMMAND INFO reports them.
WRITE: Final = "write"
READONLY: Final = "readonly"
FAST: Final = "fast"
DENYOOM: Final = "denyoom"  # adds data: refused past maxmemory
MOVABLEKEYS: Final = "movablekeys"  # its keys' places depend on an argument (numkeys)
NOAUTH: Final = "no_auth"  # allowed before AUTH in strict mode
LOADING: Final = "loading"
STALE: Final = "stale"


@dataclass(frozen=True, slots=True)
class Command:
    """One row of the command table, with what COMMAND INFO and COMMAND DOCS report.

    A container command (CLIENT, COMMAND, CONFIG) lists its subcommands as rows of their
    own, named ``container|sub`` as Redis names them, each with its arity and syntax.
    """

    name: str
    handler: Handler
    arity: int  # Redis convention: n exact, -n at least n (the name counts)
    flags: tuple[str, ...]
    group: str
    summary: str
    syntax: str = ""
    since: str = "1.0.0"
    first_key: int = 0
    last_key: int = 0
    key_step: int = 0
    subcommands: tuple[Command, ...] = ()


#: Every command by its lower-case name, filled once by :mod:`stashd.commands` from the
#: families; here, in the module every family imports, so that EXEC and COMMAND can
#: read it without importing the registry that imports them.
TABLE: Final[dict[bytes, Command]] = {}

_client_ids = itertools.count(1)


@dataclass(slots=True, eq=False)
class Session:
    """The state of one connection: who it is, which protocol, what it is called."""

    service: MemoryService
    keyring: Keyring
    principal: Principal | None
    peer: str = ""
    local: str = ""
    proto: int = 2
    client_id: int = field(default_factory=lambda: next(_client_ids))
    name: bytes | None = None
    lib_name: bytes | None = None
    lib_ver: bytes | None = None
    created: float = field(default_factory=time.monotonic)
    close_after_reply: bool = False
    last_command: str = ""
    # MULTI state: queued requests (None outside MULTI), whether queueing saw an error,
    # and what WATCH remembered of each key.
    multi: list[list[bytes]] | None = None
    multi_dirty: bool = False
    watched: dict[bytes, tuple[bytes, int, int] | None] = field(default_factory=dict)
    # The server's count of held memory, and what this connection's queue holds of it,
    # in the namespace it was queued in (AUTH inside MULTI is queued too, so one
    # namespace; it is kept because a revoked key leaves the session without one).
    held: HeldMemory = field(default_factory=HeldMemory)
    queued_bytes: int = 0
    queued_in: str = ""
    # Failed AUTHs are counted per client address (the peer's host, without the port).
    throttle: AuthThrottle | None = None
    address: str = ""
    # The daemon's count of clients over every door, and its cap (CONFIG GET maxclients,
    # INFO clients).
    clients: ClientSlots = field(default_factory=ClientSlots)
    # The daemon's output buffer limits, as CONFIG GET client-output-buffer-limit shows them.
    output_buffer_limit: str = ""
    # Runs an operation in its turn among every connection's (the server's batcher), for
    # commands that work in several steps (KEYS); None where no server runs them.
    run: Callable[[Op], Awaitable[Any]] | None = None
    # The node's blocked clients (BLPOP waits there); None where no server runs them.
    blocked: Waiters | None = None
    # Inside EXEC or a script a blocking command acts as its non-blocking form, as in Redis.
    nonblocking: bool = False
    # Ends a blocking wait when the connection closes, so no waiter is left behind.
    stop_waiting: Callable[[], object] | None = None
    # The daemon's event hub, and this connection's subscriptions in it (None until the
    # first SUBSCRIBE or where no connection can receive messages).
    hub: Hub = field(default_factory=Hub)
    subscriber: Subscriber | None = None
    # Makes the connection's subscriber (its deliver writes to the socket).
    make_subscriber: Callable[[], Subscriber] | None = None

    @property
    def subscribed(self) -> bool:
        """Whether the connection has a channel or pattern subscription (subscribed mode)."""
        sub = self.subscriber
        return sub is not None and bool(sub.channels or sub.patterns)

    def require(self) -> Principal:
        """The principal; commands that reach data run only once one is set."""
        principal = self.principal
        assert principal is not None, "dispatch checks authentication first"
        return principal

    def queue(self, args: list[bytes]) -> None:
        """Queue a request after MULTI, within the limits on held memory.

        Raises :class:`~stashd.errors.QueueFull` (nothing queued) past the connection's
        or the namespace's share. A write queued while the server is over maxmemory is
        refused at EXEC, in its place, as the memory service builds its operation.
        """
        assert self.multi is not None
        principal = self.require()
        held = self.held
        size = request_bytes(args)
        ns = principal.namespace
        held.hold(ns, self.queued_bytes, size, principal.limits.quota.max_bytes)
        self.queued_in = ns
        self.queued_bytes += size
        self.multi.append(args)

    def end_multi(self) -> None:
        """Leave MULTI (EXEC, DISCARD, RESET, a closed connection): the queue is let go."""
        self.multi = None
        self.multi_dirty = False
        self.held.release(self.queued_in, self.queued_bytes)
        self.queued_bytes = 0


_CONTAINER_WRITES: Final = (Edit, EditFirst, EditTwo, StoreFrom)


def name_writes(reply: Reply, name: str) -> Reply:
    """A handler's reply, its container write named after the command (``name``).

    The store's container operations serve every container command alike; the keyspace
    notification of one is named by the command that made it, as Redis names them.
    """
    if type(reply) is Deferred and isinstance(reply.op, _CONTAINER_WRITES):
        reply.op.event = name
    return reply


def look_decoded(
    s: Session,
    key: bytes,
    kind: int,
    decode: Callable[[bytes | None], _Items],
    look: Callable[[_Items], Any],
) -> Deferred:
    """A read of the container of ``kind`` under ``key``: ``look`` gets its items, decoded.

    ``decode`` is the kind's codec (:mod:`stashd.containers`), which gives no items for
    no key.
    """
    return Deferred(s.service.inspect(s.require(), key, kind, lambda v: look(decode(v))))


def edit_decoded(  # noqa: PLR0917 - the container, its codec both ways, and the change
    s: Session,
    key: bytes,
    kind: int,
    decode: Callable[[bytes | None], _Items],
    encode: Callable[[_Items], bytes],
    edit: Callable[[_Items], tuple[bool, Any]],
) -> Deferred:
    """A change to the container of ``kind`` under ``key``: ``edit`` changes its items in place.

    ``edit`` returns (whether it changed them, the reply); an unchanged container is not
    written, an emptied one is deleted (the rules of :mod:`stashd.ops.containers`).
    """

    def change(value: bytes | None) -> tuple[Any, Any]:
        items = decode(value)
        changed, reply = edit(items)
        if not changed:
            return KEEP, reply
        return (encode(items) if items else None), reply

    return Deferred(s.service.edit(s.require(), key, kind, change))


def run_subcommand(rows: dict[bytes, Command], s: Session, args: list[bytes]) -> Reply:
    """Dispatch a container command's request to the row of its subcommand.

    ``rows`` maps lower-case subcommand names to their rows. An unknown subcommand is
    refused before its arguments are counted, as Redis does.
    """
    row = rows.get(args[1].lower())
    if row is None:
        # args[0] matched the container's name case-insensitively, so it is that name.
        raise UnknownSubcommand(args[1].decode("utf-8", "replace"), args[0].decode())
    n = len(args)
    if (row.arity > 0 and n != row.arity) or n < -row.arity:
        raise WrongArity(row.name)
    s.last_command = row.name  # CLIENT INFO shows "client|info", as Redis does
    return row.handler(s, args)


def subcommand_rows(rows: tuple[Command, ...]) -> dict[bytes, Command]:
    """Subcommand rows by the lower-case word a client sends after the container's name."""
    return {row.name.partition("|")[2].encode(): row for row in rows}


def help_lines(container: str, rows: tuple[Command, ...]) -> list[str]:
    """A container's HELP reply in Redis's layout: each syntax, then its summary indented."""
    lines = [f"{container} <subcommand> [<arg> [value] [opt] ...]. Subcommands are:"]
    for row in rows:
        lines.append(row.syntax.partition(" ")[2])
        lines.append(f"    {row.summary}")
    return lines


class NotPositive(CommandError):
    """A count that must not be below zero (LPOP's, SPOP's), in Redis's words."""

    template = "value is out of range, must be positive"


def int_arg(raw: bytes) -> int:
    """A signed 64-bit integer argument, read as strictly as Redis does."""
    return parse_int64(raw)


def positive_int(raw: bytes, error: Exception) -> int:
    """An integer argument that must be above zero, with the command's own error."""
    value = parse_int64(raw)
    if value <= 0:
        raise error
    return value


def scan_cursor(raw: bytes) -> int:
    """A SCAN, HSCAN, SSCAN or ZSCAN cursor read as Redis reads one, with C's ``strtoul``.

    Digits after an optional sign and nothing else (no spaces, no ``_``), below 2**64; a
    minus wraps round, so ``-1`` is 2**64-1, and the empty text is 0, as there.
    """
    body = raw[1:] if raw[:1] in (b"+", b"-") else raw
    if (body or raw) and not body.isdigit():
        raise CommandError("invalid cursor")
    n = int(body) if body else 0
    if n >= 2**64:
        raise CommandError("invalid cursor")
    return (-n) % 2**64 if raw[:1] == b"-" else n


def scan_match(args: list[bytes]) -> Callable[[bytes], object] | None:
    """HSCAN, SSCAN and ZSCAN's cursor and options (``key cursor [MATCH p] [COUNT n]``), checked.

    The result is the MATCH pattern's test, None when every item matches. A container
    is one stored value, so one page holds it all: the cursor must be one Redis could
    have given, and COUNT is checked and otherwise unused.
    """
    scan_cursor(args[2])
    pattern: bytes | None = None
    i = 3
    while i < len(args):
        opt = args[i].upper()
        if i + 1 >= len(args):
            raise SyntaxErr
        if opt == b"MATCH":
            pattern = args[i + 1]
        elif opt == b"COUNT":
            if parse_int64(args[i + 1]) < 1:
                raise SyntaxErr
        else:
            raise SyntaxErr
        i += 2
    if pattern is None or pattern == b"*":
        return None
    check_pattern(pattern)  # the bound SCAN's patterns have: compiling grows with the size
    return compile_glob(pattern).match


def upper(raw: bytes) -> bytes:
    """An option keyword, compared case-insensitively as Redis does."""
    return raw.upper()


def checked_ms(value: int, unit_ms: int, error: Exception) -> int:
    """Seconds or milliseconds as ms, refusing values whose ms form leaves 64 bits.

    The bounds are Redis's ``LLONG_MIN / 1000`` and ``LLONG_MAX / 1000``: C division
    truncates toward zero, so the lowest second count is -9223372036854775, not the
    floor -9223372036854776 (whose ms form would be below INT64_MIN).
    """
    if unit_ms != 1 and not -(-INT64_MIN // unit_ms) <= value <= INT64_MAX // unit_ms:
        raise error
    return value * unit_ms


def syntax_error() -> SyntaxErr:
    """Redis's generic error for options that do not parse."""
    return SyntaxErr()


def not_integer() -> NotInteger:
    """Redis's error for an argument that must be an integer."""
    return NotInteger()
