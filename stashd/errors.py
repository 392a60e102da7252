"""Error classes that carry their exact wire text, Redis's own wherever Redis has one.

The text after the first word is what clients match on (redis-py classifies errors by
prefix and message), so these strings are part of the protocol and must not be reworded
casually. Every class keeps the numbers it names as attributes, so the HTTP door and the
Python client can report them without parsing the text; :func:`from_wire` turns a text
back into its class and attributes, for the remote client, which receives only the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final


class StashError(Exception):
    """Base of every error Stash reports to a client; ``wire`` is the RESP error text."""

    code = "ERR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def wire(self) -> str:
        """The error line as sent after ``-`` on the wire."""
        return f"{self.code} {self.message}"

    def in_words(self, text: str) -> StashError:
        """The error told in a door's own words: ``text`` formatted with its fields.

        A door whose callers name things differently from RESP (the Python API's
        ``extra_seconds`` for UPDATE's EXTEND, the CLI's ``--extend``) keeps the class
        and its fields and changes only what the caller reads.
        """
        self.message = text.format_map(vars(self))
        self.args = (self.message,)
        return self


class CommandError(StashError):
    """A request Redis would also refuse, answered with ``-ERR ...``."""


class SyntaxErr(CommandError):
    """Options that do not parse: Redis's generic ``ERR syntax error``."""

    def __init__(self) -> None:
        super().__init__("syntax error")


class NotInteger(CommandError):
    """An argument or stored value that must be a 64-bit integer and is not."""

    def __init__(self) -> None:
        super().__init__("value is not an integer or out of range")


class IncrOverflow(CommandError):
    """INCR and friends past the signed 64-bit range."""

    def __init__(self) -> None:
        super().__init__("increment or decrement would overflow")


class WrongArity(CommandError):
    """Wrong number of arguments, in Redis's exact words (redis-py's AUTH retry relies on it)."""

    def __init__(self, command: str) -> None:
        super().__init__(f"wrong number of arguments for '{command.lower()}' command")


class UnknownCommand(CommandError):
    """A command name not in the table, quoting it and its first arguments as Redis 7 does."""

    def __init__(self, name: str, args: list[str]) -> None:
        shown = "".join(f"'{a[:128]}' " for a in args[:20])
        super().__init__(f"unknown command '{name[:128]}', with args beginning with: {shown}")


class UnknownSubcommand(CommandError):
    """A subcommand of a container command (CLIENT, COMMAND, CONFIG) that we do not know."""

    def __init__(self, sub: str, command: str) -> None:
        super().__init__(f"unknown subcommand '{sub[:128]}'. Try {command.upper()} HELP.")


class EmptyUpdate(CommandError):
    """UPDATE with nothing to do; nothing was changed."""

    def __init__(self) -> None:
        super().__init__("UPDATE needs at least one of DATA, MERGE or EXTEND")


class DataAndMerge(CommandError):
    """UPDATE with both a replacement and a merge patch, which contradict each other."""

    def __init__(self) -> None:
        super().__init__("DATA and MERGE cannot be used together")


class BadExtend(CommandError):
    """UPDATE ... EXTEND with a number of seconds that is not positive."""

    def __init__(self, seconds: int) -> None:
        super().__init__(f"EXTEND needs a positive number of seconds, got {seconds}")
        self.requested = seconds
        self.minimum = 1


class NoSuchKey(CommandError):
    """RENAME of a missing key."""

    def __init__(self) -> None:
        super().__init__("no such key")


class ProtocolError(CommandError):
    """Malformed framing; the connection that sent it is answered and closed."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"Protocol error: {detail}")


class QueryBufferFull(ProtocolError):
    """A request that would make one connection hold more than its query buffer allows."""

    def __init__(self, limit: int, needed: int) -> None:
        super().__init__(
            f"request needs at least {needed} bytes of query buffer, the limit is {limit} bytes"
        )
        self.limit = limit
        self.needed = needed


class MaxClients(CommandError):
    """A connection over --max-clients, in Redis's words; it is closed after this reply.

    ``limit`` is the server's max-clients where the door can say it (HTTP's body); the
    RESP text is Redis's and carries no number, so it does not come back from the wire.
    """

    def __init__(self, limit: int | None = None) -> None:
        super().__init__("max number of clients reached")
        self.limit = limit


class QueueFull(CommandError):
    """A request queued after MULTI past what a connection or a namespace may queue."""

    def __init__(self, size: int, limit: int, where: str) -> None:
        super().__init__(
            f"queued MULTI requests would hold {size} bytes {where}, the limit is {limit} bytes"
        )
        self.size = size
        self.limit = limit
        self.where = where


class InternalError(CommandError):
    """A command that failed with a bug of ours: this reply, a logged traceback, nothing else.

    The connection and every other request of its pipeline are served as usual.
    """

    def __init__(self, command: str, cause: str) -> None:
        super().__init__(f"internal error in '{command}' command ({cause}); it was logged")
        self.command = command
        self.cause = cause


class TransactionAborted(CommandError):
    """EXEC whose transaction failed with a bug of ours: none of it was applied, it was logged.

    ``cause`` names the exception's class. Refusals (any other error of this module) never
    abort a transaction: each stands in its command's place, as in Redis.
    """

    def __init__(self, cause: str) -> None:
        super().__init__(
            f"transaction aborted by an internal error ({cause}); none of its commands were applied"
        )
        self.cause = cause


class StoreUnavailable(StashError):
    """The backend failed under a batch (disk error, Redis unreachable); retrying may work."""

    code = "UNAVAILABLE"

    def __init__(self, cause: str) -> None:
        super().__init__(f"store unavailable: {cause}")
        self.cause = cause


class AuthenticationError(StashError):
    """The caller is not authenticated, or its key was refused (NOAUTH, WRONGPASS)."""


class NoAuth(AuthenticationError):
    """A command before AUTH in strict mode."""

    code = "NOAUTH"

    def __init__(self, message: str = "Authentication required.") -> None:
        super().__init__(message)


class HelloNoAuth(NoAuth):
    """HELLO without AUTH on a connection that must authenticate, in Redis 7.0's words."""

    def __init__(self) -> None:
        super().__init__(
            "HELLO must be called with the client already authenticated, otherwise the "
            "HELLO AUTH <user> <pass> option can be used to authenticate the client and "
            "select the RESP protocol version at the same time",
        )


class WrongPass(AuthenticationError):
    """An unknown, revoked or malformed key: one byte-identical reply for all of them."""

    code = "WRONGPASS"

    def __init__(self) -> None:
        super().__init__("invalid username-password pair or user is disabled.")


class NoProto(StashError):
    """HELLO with a protocol version other than 2 or 3."""

    code = "NOPROTO"

    def __init__(self) -> None:
        super().__init__("unsupported protocol version")


class PayloadTooLarge(StashError):
    """A value over the caller's payload limit; nothing was stored."""

    code = "TOOLARGE"

    def __init__(self, limit: int, actual: int) -> None:
        super().__init__(f"value is {actual} bytes, the limit is {limit} bytes")
        self.limit = limit
        self.actual = actual


class InvalidTTL(StashError):
    """A TTL above the caller's maximum; nothing was changed."""

    code = "BADTTL"
    minimum = 1  # seconds: the bounds a client is told about are 1..maximum

    def __init__(self, requested_seconds: int, max_seconds: int) -> None:
        super().__init__(
            f"ttl {requested_seconds} seconds exceeds the maximum of {max_seconds} seconds"
        )
        self.requested = requested_seconds
        self.maximum = max_seconds


class TTLNotPositive(StashError):
    """A TTL of zero or less where a lifetime is being set (the HTTP door's ``ttl``)."""

    code = "BADTTL"
    minimum = 1

    def __init__(self, requested_seconds: int, max_seconds: int) -> None:
        super().__init__(
            f"ttl must be between 1 and {max_seconds} seconds, got {requested_seconds}"
        )
        self.requested = requested_seconds
        self.maximum = max_seconds


class PersistRefused(CommandError):
    """PERSIST (or GETEX PERSIST): every key in Stash expires, so it is refused."""

    def __init__(self, max_seconds: int) -> None:
        super().__init__(
            "PERSIST is not supported: every key in Stash expires "
            f"(maximum ttl {max_seconds} seconds)"
        )
        self.maximum = max_seconds


def nested_past(actual: int, limit: int) -> str:
    """The detail of a NOTJSON error for a text whose arrays and objects nest past the limit."""
    return f"nested {actual} levels deep, the limit is {limit} levels"


class NotJSON(StashError):
    """A value that had to be JSON and is not; the message gives the position, never the input.

    ``line``, ``column`` (1-based) and ``position`` (0-based character offset) are set when
    the parser reported them, so the HTTP door can return them as fields. A text nested
    too deeply (:func:`nested_past`) keeps the depth limit as ``limit`` and its own depth
    as ``actual``.
    """

    code = "NOTJSON"

    def __init__(
        self,
        detail: str,
        what: str = "value",
        *,
        line: int | None = None,
        column: int | None = None,
        position: int | None = None,
        limit: int | None = None,
        actual: int | None = None,
    ) -> None:
        super().__init__(f"{what} is not valid JSON: {detail}")
        self.what = what
        self.line = line
        self.column = column
        self.position = position
        self.limit = limit
        self.actual = actual


class StoredNotJSON(NotJSON):
    """The stored value had to be JSON (a merge, an HTTP read) and is not: it was SET over RESP.

    Or it nests deeper than the limit: written before there was one.
    """

    def __init__(
        self,
        detail: str,
        *,
        line: int | None = None,
        column: int | None = None,
        position: int | None = None,
        limit: int | None = None,
        actual: int | None = None,
    ) -> None:
        super().__init__(
            detail,
            "stored value",
            line=line,
            column=column,
            position=position,
            limit=limit,
            actual=actual,
        )


class Conflict(StashError):
    """UPDATE ... IFVERSION that does not match; nothing was changed."""

    code = "CONFLICT"

    def __init__(self, current: int, expected: int) -> None:
        super().__init__(f"version is {current}, IFVERSION expected {expected}")
        self.current = current
        self.expected = expected


class RateLimited(StashError):
    """Too many commands for the caller's rate; the command was not executed."""

    code = "RATELIMIT"

    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(f"rate limit exceeded, retry after {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms

    @property
    def retry_after(self) -> float:
        """Seconds to wait before retrying, as Python APIs usually count time."""
        return self.retry_after_ms / 1000


# -- errors only the HTTP door reports ------------------------------------------------
# They carry the same kind of text and attributes; stashd.http maps each class to its
# status and code in one table.


class NotFound(StashError):
    """No live entry under this id in the caller's namespace (missing, expired or another's)."""

    code = "NOTFOUND"

    def __init__(self) -> None:
        super().__init__("no memory with this id")


class MethodNotAllowed(StashError):
    """A path that exists, asked with a method it does not serve."""

    code = "METHOD"

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        shown = method if method.isalpha() and len(method) <= 16 else "this method"
        super().__init__(f"{shown} is not allowed here; use {', '.join(allowed)}")
        self.allowed = allowed


class NoRoute(StashError):
    """A path the API does not have."""

    code = "NOROUTE"

    def __init__(self) -> None:
        super().__init__("no such endpoint; see protocol/openapi.yaml")


class InvalidRequest(StashError):
    """A well-formed JSON request whose fields break the API's rules; nothing was changed.

    ``field`` names the field (never its value); ``minimum``/``maximum`` give the bounds
    when the field is a number out of range, ``requested`` the number that was sent.
    """

    code = "INVALID"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
        requested: int | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.minimum = minimum
        self.maximum = maximum
        self.requested = requested


class BadRequest(StashError):
    """A request that cannot be read as HTTP or whose headers contradict each other."""

    code = "BADREQUEST"


class IncompleteBody(StashError):
    """A body that ended (or stalled past the deadline) before its Content-Length."""

    code = "INCOMPLETE"

    def __init__(self, expected: int, received: int) -> None:
        super().__init__(
            f"request body has {received} bytes, its Content-Length announced {expected}"
        )
        self.expected = expected
        self.actual = received


class RequestTimeout(StashError):
    """A request whose headers or body did not arrive within the deadline."""

    code = "TIMEOUT"

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request did not arrive within {seconds:g} seconds")
        self.limit = seconds


class UnsupportedEncoding(StashError):
    """A compressed request body: refused unread, since inflating it could exceed any limit."""

    code = "ENCODING"

    def __init__(self) -> None:
        super().__init__("request bodies must not be compressed (Content-Encoding: identity)")


class BodyTooLarge(StashError):
    """A request body over the caller's payload limit, refused before it is read.

    ``actual`` is the announced Content-Length, or None for a body sent without one (it
    is read to the limit plus one byte and no further).
    """

    code = "TOOLARGE"

    def __init__(self, limit: int, actual: int | None) -> None:
        super().__init__(
            f"request body is {actual} bytes, the limit is {limit} bytes"
            if actual is not None
            else f"request body is over the limit of {limit} bytes"
        )
        self.limit = limit
        self.actual = actual


class QuotaExceeded(StashError):
    """A write that would take its namespace past its quota of keys or bytes; nothing changed.

    ``keys`` and ``bytes`` are what the namespace would hold after the write (bytes count
    each key and its value), ``max_keys`` and ``max_bytes`` its tier's or the server's quota.
    """

    code = "QUOTA"

    def __init__(self, keys: int, size: int, max_keys: int, max_bytes: int) -> None:
        # 0 stands for a side without a limit; the text names only the sides there are.
        sides = [f"{max_keys} keys"] if max_keys else []
        sides += [f"{max_bytes} bytes"] if max_bytes else []
        super().__init__(
            f"namespace would hold {keys} keys ({size} bytes), "
            f"the limit is {' and '.join(sides) or 'none'}"
        )
        self.keys = keys
        self.bytes = size
        self.max_keys = max_keys
        self.max_bytes = max_bytes


class OutOfMemory(StashError):
    """A write that adds data while the server is over its maxmemory, in Redis's exact words."""

    code = "OOM"

    def __init__(self) -> None:
        super().__init__("command not allowed when used memory > 'maxmemory'.")


# -- from the wire back to the class ------------------------------------------------------
# The remote client receives only the error line; these forms turn it back into the class
# that produced it, with the same attributes, so a caller cannot tell an error raised in
# process from one that crossed the wire. Each form is the fullmatch of one class's text.

_N = r"(-?\d+)"
_WireForm = tuple[str, re.Pattern[str], Callable[[re.Match[str]], "StashError"]]


def _form(code: str, pattern: str, make: Callable[[re.Match[str]], StashError]) -> _WireForm:
    return code, re.compile(pattern, re.DOTALL), make


_WIRE_FORMS: Final[tuple[_WireForm, ...]] = (
    _form("ERR", "syntax error", lambda _: SyntaxErr()),
    _form("ERR", "value is not an integer or out of range", lambda _: NotInteger()),
    _form("ERR", "increment or decrement would overflow", lambda _: IncrOverflow()),
    _form("ERR", "wrong number of arguments for '(.*)' command", lambda m: WrongArity(m[1])),
    _form(
        "ERR",
        "unknown command '(.*?)', with args beginning with: ((?:'.*?' )*)",
        lambda m: UnknownCommand(m[1], re.findall(r"'(.*?)' ", m[2], re.DOTALL)),
    ),
    _form(
        "ERR",
        r"unknown subcommand '(.*)'\. Try (\S+) HELP\.",
        lambda m: UnknownSubcommand(m[1], m[2]),
    ),
    _form("ERR", "UPDATE needs at least one of DATA, MERGE or EXTEND", lambda _: EmptyUpdate()),
    _form("ERR", "DATA and MERGE cannot be used together", lambda _: DataAndMerge()),
    _form(
        "ERR",
        f"EXTEND needs a positive number of seconds, got {_N}",
        lambda m: BadExtend(int(m[1])),
    ),
    _form("ERR", "no such key", lambda _: NoSuchKey()),
    _form(
        "ERR",
        f"Protocol error: request needs at least {_N} bytes of query buffer, "
        f"the limit is {_N} bytes",
        lambda m: QueryBufferFull(int(m[2]), int(m[1])),
    ),
    _form("ERR", "Protocol error: (.*)", lambda m: ProtocolError(m[1])),
    _form("ERR", "max number of clients reached", lambda _: MaxClients()),
    _form(
        "ERR",
        f"queued MULTI requests would hold {_N} bytes (.*), the limit is {_N} bytes",
        lambda m: QueueFull(int(m[1]), int(m[3]), m[2]),
    ),
    _form(
        "ERR",
        r"internal error in '(.*)' command \((.*)\); it was logged",
        lambda m: InternalError(m[1], m[2]),
    ),
    _form(
        "ERR",
        r"transaction aborted by an internal error \((.*)\); none of its commands were applied",
        lambda m: TransactionAborted(m[1]),
    ),
    _form(
        "ERR",
        f"PERSIST is not supported: every key in Stash expires \\(maximum ttl {_N} seconds\\)",
        lambda m: PersistRefused(int(m[1])),
    ),
    _form("ERR", "(.*)", lambda m: CommandError(m[1])),
    _form("UNAVAILABLE", "store unavailable: (.*)", lambda m: StoreUnavailable(m[1])),
    _form("NOAUTH", "Authentication required\\.", lambda _: NoAuth()),
    _form(
        "NOAUTH",
        "HELLO must be called with the client already authenticated, .*",
        lambda _: HelloNoAuth(),
    ),
    _form("NOAUTH", "(.*)", lambda m: NoAuth(m[1])),
    _form(
        "WRONGPASS", "invalid username-password pair or user is disabled\\.", lambda _: WrongPass()
    ),
    _form("NOPROTO", "unsupported protocol version", lambda _: NoProto()),
    _form(
        "TOOLARGE",
        f"value is {_N} bytes, the limit is {_N} bytes",
        lambda m: PayloadTooLarge(int(m[2]), int(m[1])),
    ),
    _form(
        "TOOLARGE",
        f"request body is {_N} bytes, the limit is {_N} bytes",
        lambda m: BodyTooLarge(int(m[2]), int(m[1])),
    ),
    _form(
        "TOOLARGE",
        f"request body is over the limit of {_N} bytes",
        lambda m: BodyTooLarge(int(m[1]), None),
    ),
    _form(
        "BADTTL",
        f"ttl {_N} seconds exceeds the maximum of {_N} seconds",
        lambda m: InvalidTTL(int(m[1]), int(m[2])),
    ),
    _form(
        "BADTTL",
        f"ttl must be between 1 and {_N} seconds, got {_N}",
        lambda m: TTLNotPositive(int(m[2]), int(m[1])),
    ),
    _form(
        "NOTJSON", "(stored value) is not valid JSON: (.*)", lambda m: _not_json(m, StoredNotJSON)
    ),
    _form(
        "NOTJSON", "(value|merge patch) is not valid JSON: (.*)", lambda m: _not_json(m, NotJSON)
    ),
    _form(
        "CONFLICT",
        f"version is {_N}, IFVERSION expected {_N}",
        lambda m: Conflict(int(m[1]), int(m[2])),
    ),
    _form(
        "RATELIMIT",
        f"rate limit exceeded, retry after {_N} ms",
        lambda m: RateLimited(int(m[1])),
    ),
    _form(
        "QUOTA",
        f"namespace would hold {_N} keys \\({_N} bytes\\), the limit is "
        f"(?:{_N} keys)?(?: and )?(?:{_N} bytes)?",
        lambda m: QuotaExceeded(int(m[1]), int(m[2]), int(m[3] or 0), int(m[4] or 0)),
    ),
    _form("OOM", "command not allowed when used memory > 'maxmemory'\\.", lambda _: OutOfMemory()),
    _form("NOTFOUND", "no memory with this id", lambda _: NotFound()),
    _form(
        "METHOD",
        "(.*) is not allowed here; use (.*)",
        lambda m: MethodNotAllowed(m[1], tuple(m[2].split(", "))),
    ),
    _form("NOROUTE", "no such endpoint; see protocol/openapi.yaml", lambda _: NoRoute()),
    _form("INVALID", "(.*)", lambda m: InvalidRequest(m[1])),
    _form("BADREQUEST", "(.*)", lambda m: BadRequest(m[1])),
    _form(
        "INCOMPLETE",
        f"request body has {_N} bytes, its Content-Length announced {_N}",
        lambda m: IncompleteBody(int(m[2]), int(m[1])),
    ),
    _form(
        "TIMEOUT",
        r"request did not arrive within (\S+) seconds",
        lambda m: RequestTimeout(float(m[1])),
    ),
    _form(
        "ENCODING",
        r"request bodies must not be compressed \(Content-Encoding: identity\)",
        lambda _: UnsupportedEncoding(),
    ),
)

_JSON_POSITION: Final = re.compile(r".* at line (\d+) column (\d+) \(char (\d+)\)", re.DOTALL)
_NESTED: Final = re.compile(f"nested {_N} levels deep, the limit is {_N} levels")


def _not_json(m: re.Match[str], kind: type[NotJSON]) -> NotJSON:
    """A NOTJSON text with its position, which the parser's message always ends with."""
    what, detail = m[1], m[2]
    at = _JSON_POSITION.fullmatch(detail)
    line, column, position = (None, None, None) if at is None else map(int, at.groups())
    nested = _NESTED.fullmatch(detail)
    actual, limit = (None, None) if nested is None else map(int, nested.groups())
    if kind is StoredNotJSON:
        return StoredNotJSON(
            detail, line=line, column=column, position=position, limit=limit, actual=actual
        )
    return NotJSON(
        detail, what, line=line, column=column, position=position, limit=limit, actual=actual
    )


def from_wire(text: str) -> StashError:
    """The error an error line stands for: ``from_wire(e.wire)`` rebuilds ``e``.

    The class and its attributes come back for every error in this module; a text this
    module never produces (another server's, or a future code) becomes a
    :class:`CommandError` for ``ERR`` and a plain :class:`StashError` carrying the code
    otherwise. The result's ``wire`` is always ``text`` itself.

    >>> from_wire("CONFLICT version is 3, IFVERSION expected 2").current
    3
    """
    code, _, message = text.partition(" ")
    for form_code, pattern, make in _WIRE_FORMS:
        if form_code == code and (match := pattern.fullmatch(message)) is not None:
            try:
                exc = make(match)
            except ValueError:  # a number too odd for the class: keep the text as sent
                break
            if exc.wire == text:
                return exc
    exc = CommandError(message) if code == "ERR" else StashError(message)
    exc.code = code
    return exc


#: Every code an error line of this module starts with: how the remote client tells a
#: line redis-py kept whole from a message whose code redis-py stripped.
WIRE_CODES: Final = frozenset(code for code, _, _ in _WIRE_FORMS)
