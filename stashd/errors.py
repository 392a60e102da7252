"""Error classes that carry their exact wire text, Redis's own wherever Redis has one.

The text after the first word is what clients match on (redis-py classifies errors by
prefix and message), so these strings are part of the protocol and must not be reworded
casually. Each class declares its ``code``, its message as one ``template`` and its
fields as annotations (their types, from :mod:`stashd.errorwire`, say how each is written
and read back); the base class renders the message from them, and :func:`from_wire`
turns a text back into its class and fields through the same templates, for the remote
client, which receives only the text.
"""

# This module is long on purpose: it is the one table of every error the doors send, one
# declaration (code, template, fields, docstring) per class, and from_wire reads back
# exactly the classes defined here (a class kept elsewhere would be one it cannot read).
#
# No ``from __future__ import annotations`` here: the annotations of an error class are
# its fields, read when the class is made (StashError.__init_subclass__).

from collections.abc import Mapping
from typing import Any, ClassVar, Final, Self

from stashd.errorwire import (
    AT_POSITION,
    NESTED,
    Field,
    Form,
    JSONDetail,
    Label,
    Limit,
    Listed,
    Quoted,
    Reader,
    Seconds,
    Word,
    declare,
    render,
)


class StashError(Exception):
    """Base of every error Stash reports to a client; ``wire`` is the RESP error text.

    A subclass sets ``code`` (the wire's first word) and ``template`` (the message, with
    a ``{placeholder}`` per field; a tuple of templates for a message with several forms,
    the first whose fields all have a value being used), and annotates every field,
    those the message leaves out too. Its ``__init__`` takes the fields by their names
    (:func:`from_wire` calls it so) and hands them to :meth:`_fill`. A subclass without
    a template of its own keeps its base's, and its fields.
    """

    code = "ERR"
    template: ClassVar[str | tuple[str, ...]] = "{message}"
    #: Every field of the class, name -> how it is written; set for each class when made.
    fields: ClassVar[Mapping[str, Field[Any]]]
    #: The class's templates, compiled.
    forms: ClassVar[tuple[Form, ...]]

    message: str

    def __init__(self, message: str | None = None) -> None:
        # A class whose template has no field is made without arguments.
        if message is None:
            self._fill()
        else:
            self._fill(message=message)

    def __init_subclass__(cls, **kwargs: Any) -> None:  # noqa: ANN401 - passed on as given
        super().__init_subclass__(**kwargs)
        _declare(cls)

    def _fill(self, **values: object) -> None:
        """Keep the fields, and render the message from them: the one place it is written."""
        vars(self).update(values)
        get = self.__getattribute__
        forms = self.forms
        if len(forms) > 1:
            forms = tuple(form for form in forms if form.fits(get)) or forms[-1:]
        self.message = forms[0].write(get)
        self.args = (self.message,)

    @property
    def wire(self) -> str:
        """The error line as sent after ``-`` on the wire."""
        return f"{self.code} {self.message}"

    def worded(self, template: str) -> str:
        """The message a door words as ``template``, rendered with this error's fields."""
        return render(template, self.fields, self.__getattribute__)

    def in_words(self, template: str) -> Self:
        """The error told in a door's own words: ``template`` rendered with its fields.

        A door whose callers name things differently from RESP (the Python API's
        ``extra_seconds`` for UPDATE's EXTEND, the CLI's ``--extend``) keeps the class
        and its fields and changes only what the caller reads.
        """
        self.message = self.worded(template)
        self.args = (self.message,)
        return self


def _declare(cls: type[StashError]) -> None:
    """Give a class its fields and forms, read from its declaration (errorwire.declare)."""
    base = next((b for b in cls.__mro__[1:] if issubclass(b, StashError)), None)
    fields, forms = declare(cls, None if base is None else base.fields)
    cls.fields = fields
    if forms is not None:
        cls.forms = forms


_declare(StashError)


class CommandError(StashError):
    """A request Redis would also refuse, answered with ``-ERR ...``."""


class SyntaxErr(CommandError):
    """Options that do not parse: Redis's generic ``ERR syntax error``."""

    template = "syntax error"


class NotInteger(CommandError):
    """An argument or stored value that must be a 64-bit integer and is not."""

    template = "value is not an integer or out of range"


class IncrOverflow(CommandError):
    """INCR and friends past the signed 64-bit range."""

    template = "increment or decrement would overflow"


class Busy(StashError):
    """A request while a script runs past lua-time-limit: Redis's exact words (clients retry).

    Only SCRIPT KILL is answered meanwhile; the script's own namespace may kill it.
    """

    code = "BUSY"
    template = "Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."


class NotFloat(CommandError):
    """An argument or stored value that must be a number (INCRBYFLOAT) and is not."""

    template = "value is not a valid float"


class FloatOverflow(CommandError):
    """INCRBYFLOAT and HINCRBYFLOAT whose result is not a finite number."""

    template = "increment would produce NaN or Infinity"


class WrongArity(CommandError):
    """Wrong number of arguments, in Redis's exact words (redis-py's AUTH retry relies on it)."""

    template = "wrong number of arguments for '{command}' command"
    command: str

    def __init__(self, command: str) -> None:
        self._fill(command=command.lower())


class UnknownCommand(CommandError):
    """A command name not in the table, quoting it and its first arguments as Redis 7 does.

    ``name`` and ``arguments`` are kept as quoted: 128 characters of each, 20 arguments.
    """

    template = "unknown command '{name}', with args beginning with: {arguments}"
    name: str
    arguments: Quoted

    def __init__(self, name: str, arguments: list[str] | tuple[str, ...]) -> None:
        self._fill(name=name[:128], arguments=tuple(a[:128] for a in arguments[:20]))


class UnknownSubcommand(CommandError):
    """A subcommand of a container command (CLIENT, COMMAND, CONFIG) that we do not know."""

    template = "unknown subcommand '{sub}'. Try {command} HELP."
    sub: str
    command: Word

    def __init__(self, sub: str, command: str) -> None:
        self._fill(sub=sub[:128], command=command.upper())


class EmptyUpdate(CommandError):
    """UPDATE with nothing to do; nothing was changed."""

    template = "UPDATE needs at least one of DATA, MERGE or EXTEND"


class DataAndMerge(CommandError):
    """UPDATE with both a replacement and a merge patch, which contradict each other."""

    template = "DATA and MERGE cannot be used together"


class BadExtend(CommandError):
    """UPDATE ... EXTEND with a number of seconds that is not positive."""

    template = "EXTEND needs a positive number of seconds, got {requested}"
    requested: int
    minimum: int = 1

    def __init__(self, requested: int) -> None:
        self._fill(requested=requested)


class NoSuchKey(CommandError):
    """RENAME of a missing key."""

    template = "no such key"


class ProtocolError(CommandError):
    """Malformed framing; the connection that sent it is answered and closed."""

    template = "Protocol error: {detail}"
    detail: str

    def __init__(self, detail: str) -> None:
        self._fill(detail=detail)


class QueryBufferFull(ProtocolError):
    """A request that would make one connection hold more than its query buffer allows."""

    template = (
        "Protocol error: request needs at least {needed} bytes of query buffer, "
        "the limit is {limit} bytes"
    )
    limit: int
    needed: int

    def __init__(self, limit: int, needed: int) -> None:
        self._fill(limit=limit, needed=needed)


class MaxClients(CommandError):
    """A connection over --max-clients, in Redis's words; it is closed after this reply.

    ``limit`` is the server's max-clients where the door can say it (HTTP's body); the
    RESP text is Redis's and carries no number, so it does not come back from the wire.
    """

    template = "max number of clients reached"
    limit: int | None

    def __init__(self, limit: int | None = None) -> None:
        self._fill(limit=limit)


class QueueFull(CommandError):
    """A request queued after MULTI past what a connection or a namespace may queue."""

    template = "queued MULTI requests would hold {size} bytes {where}, the limit is {limit} bytes"
    size: int
    limit: int
    where: str

    def __init__(self, size: int, limit: int, where: str) -> None:
        self._fill(size=size, limit=limit, where=where)


class InternalError(CommandError):
    """A command that failed with a bug of ours: this reply, a logged traceback, nothing else.

    The connection and every other request of its pipeline are served as usual.
    """

    template = "internal error in '{command}' command ({cause}); it was logged"
    command: str
    cause: Word  # an exception's class

    def __init__(self, command: str, cause: str) -> None:
        self._fill(command=command, cause=cause)


class TransactionAborted(CommandError):
    """EXEC whose transaction failed with a bug of ours: none of it was applied, it was logged.

    ``cause`` names the exception's class. Refusals (any other error of this module) never
    abort a transaction: each stands in its command's place, as in Redis.
    """

    template = (
        "transaction aborted by an internal error ({cause}); none of its commands were applied"
    )
    cause: str

    def __init__(self, cause: str) -> None:
        self._fill(cause=cause)


class NoScript(StashError):
    """EVALSHA of a script not in the namespace's cache; clients then send EVAL (redis-py does)."""

    code = "NOSCRIPT"
    template = "No matching script. Please use EVAL."


class NotBusy(StashError):
    """SCRIPT KILL with no script running, in Redis's words."""

    code = "NOTBUSY"
    template = "No scripts in execution right now."


class ScriptTimeLimit(CommandError):
    """A script that ran past its hard limit (lua-time-limit times 12): stopped, nothing kept."""

    template = (
        "script ran past the time limit ({limit_ms} ms, 12 times lua-time-limit) and was "
        "stopped; nothing it wrote was kept"
    )
    limit_ms: int

    def __init__(self, limit_ms: int) -> None:
        self._fill(limit_ms=limit_ms)


class ScriptKilled(CommandError):
    """A script stopped by SCRIPT KILL; nothing it wrote was kept."""

    template = "Script killed by user with SCRIPT KILL..."


class ScriptOutOfMemory(CommandError):
    """A script whose Lua runtime ran out of its memory cap; nothing it wrote was kept."""

    template = "script used more than {limit} bytes of Lua memory and was stopped"
    limit: int

    def __init__(self, limit: int) -> None:
        self._fill(limit=limit)


class StoreUnavailable(StashError):
    """The backend failed under a batch (disk error, Redis unreachable); retrying may work."""

    code = "UNAVAILABLE"
    template = "store unavailable: {cause}"
    cause: str

    def __init__(self, cause: str) -> None:
        self._fill(cause=cause)


class AuthenticationError(StashError):
    """The caller is not authenticated, or its key was refused (NOAUTH, WRONGPASS)."""


class NoAuth(AuthenticationError):
    """A command before AUTH in strict mode."""

    code = "NOAUTH"

    def __init__(self, message: str = "Authentication required.") -> None:
        self._fill(message=message)


class HelloNoAuth(NoAuth):
    """HELLO without AUTH on a connection that must authenticate, in Redis 7.0's words."""

    template = (
        "HELLO must be called with the client already authenticated, otherwise the "
        "HELLO AUTH <user> <pass> option can be used to authenticate the client and "
        "select the RESP protocol version at the same time"
    )


class WrongPass(AuthenticationError):
    """An unknown, revoked or malformed key: one byte-identical reply for all of them."""

    code = "WRONGPASS"
    template = "invalid username-password pair or user is disabled."


class NoProto(StashError):
    """HELLO with a protocol version other than 2 or 3."""

    code = "NOPROTO"
    template = "unsupported protocol version"


class PayloadTooLarge(StashError):
    """A value over the caller's payload limit; nothing was stored."""

    code = "TOOLARGE"
    template = "value is {actual} bytes, the limit is {limit} bytes"
    limit: int
    actual: int

    def __init__(self, limit: int, actual: int) -> None:
        self._fill(limit=limit, actual=actual)


class InvalidTTL(StashError):
    """A TTL above the caller's maximum; nothing was changed."""

    code = "BADTTL"
    template = "ttl {requested} seconds exceeds the maximum of {maximum} seconds"
    requested: int
    minimum: int = 1  # seconds: the bounds a client is told about are 1..maximum
    maximum: int

    def __init__(self, requested: int, maximum: int) -> None:
        self._fill(requested=requested, maximum=maximum)


class TTLNotPositive(StashError):
    """A TTL of zero or less where a lifetime is being set (the HTTP door's ``ttl``)."""

    code = "BADTTL"
    template = "ttl must be between 1 and {maximum} seconds, got {requested}"
    requested: int
    minimum: int = 1
    maximum: int

    def __init__(self, requested: int, maximum: int) -> None:
        self._fill(requested=requested, maximum=maximum)


class PersistRefused(CommandError):
    """PERSIST (or GETEX PERSIST): every key in Stash expires, so it is refused."""

    template = (
        "PERSIST is not supported: every key in Stash expires (maximum ttl {maximum} seconds)"
    )
    maximum: int

    def __init__(self, maximum: int) -> None:
        self._fill(maximum=maximum)


def nested_past(actual: int, limit: int) -> str:
    """The detail of a NOTJSON error for a text whose arrays and objects nest past the limit."""
    return NESTED.write({"actual": actual, "limit": limit}.__getitem__)


def at_position(reason: str, line: int, column: int, position: int) -> str:
    """The detail of a NOTJSON error for a text the parser stopped in, and where it stopped."""
    where = {"reason": reason, "line": line, "column": column, "position": position}
    return AT_POSITION.write(where.__getitem__)


class NotJSON(StashError):
    """A value that had to be JSON and is not; the message gives the position, never the input.

    ``line``, ``column`` (1-based) and ``position`` (0-based character offset) are set when
    the parser reported them (:func:`at_position`), so the HTTP door can return them as
    fields. A text nested too deeply (:func:`nested_past`) keeps the depth limit as
    ``limit`` and its own depth as ``actual``. All of them are read back from ``detail``.
    """

    code = "NOTJSON"
    template = "{what} is not valid JSON: {detail}"
    what: Label
    detail: JSONDetail
    line: int | None
    column: int | None
    position: int | None
    limit: int | None
    actual: int | None

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
        self._fill(
            what=what,
            detail=detail,
            line=line,
            column=column,
            position=position,
            limit=limit,
            actual=actual,
        )


class StoredNotJSON(NotJSON):
    """The stored value had to be JSON (a merge, an HTTP read) and is not: it was SET over RESP.

    Or it nests deeper than the limit: written before there was one.
    """

    template = "stored value is not valid JSON: {detail}"
    what: str = "stored value"

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
        self._fill(
            detail=detail, line=line, column=column, position=position, limit=limit, actual=actual
        )


class WrongType(StashError):
    """A command for one kind of value (string, hash, list) on a key holding another.

    Redis's exact text: clients (redis-py's ``ResponseError``, ioredis) show it as is.
    """

    code = "WRONGTYPE"
    template = "Operation against a key holding the wrong kind of value"


class Conflict(StashError):
    """UPDATE ... IFVERSION that does not match; nothing was changed."""

    code = "CONFLICT"
    template = "version is {current}, IFVERSION expected {expected}"
    current: int
    expected: int

    def __init__(self, current: int, expected: int) -> None:
        self._fill(current=current, expected=expected)


class LeaseHeld(StashError):
    """A lease claim refused because another owner holds the lease; nothing was changed.

    It says for how long, never by whom (LEASE INFO tells that to whoever asks).
    """

    code = "LEASED"
    template = (
        "the lease is held by another owner for {retry_after_ms} ms more",
        "the lease is held by another owner",
    )
    retry_after_ms: int | None

    def __init__(self, retry_after_ms: int | None = None) -> None:
        self._fill(retry_after_ms=retry_after_ms)


class LeaseLost(StashError):
    """A renew or release by an owner that no longer holds the lease (or not with that token)."""

    code = "NOTOWNER"
    template = "the lease is not held by this owner with this token (expired, released or taken)"


class RateLimited(StashError):
    """Too many commands for the caller's rate; the command was not executed."""

    code = "RATELIMIT"
    template = "rate limit exceeded, retry after {retry_after_ms} ms"
    retry_after_ms: int

    def __init__(self, retry_after_ms: int) -> None:
        self._fill(retry_after_ms=retry_after_ms)

    @property
    def retry_after(self) -> float:
        """Seconds to wait before retrying, as Python APIs usually count time."""
        return self.retry_after_ms / 1000


# -- errors only the HTTP door reports ------------------------------------------------
# They carry the same kind of text and fields; stashd.http maps each class to its status
# and code in one table.


class NotFound(StashError):
    """No live entry under this id in the caller's namespace (missing, expired or another's)."""

    code = "NOTFOUND"
    template = "no memory with this id"


class MethodNotAllowed(StashError):
    """A path that exists, asked with a method it does not serve.

    ``method`` is the method as the message shows it: a name of at most 16 letters, or
    ``this method`` for anything else (the message never echoes odd bytes).
    """

    code = "METHOD"
    template = "{method} is not allowed here; use {allowed}"
    method: str
    allowed: Listed

    def __init__(self, method: str, allowed: tuple[str, ...]) -> None:
        shown = method if method.isalpha() and len(method) <= 16 else "this method"
        self._fill(method=shown, allowed=allowed)


class NoRoute(StashError):
    """A path the API does not have."""

    code = "NOROUTE"
    template = "no such endpoint; GET /openapi.yaml lists them"


class InvalidRequest(StashError):
    """A well-formed JSON request whose fields break the API's rules; nothing was changed.

    ``field`` names the field (never its value); ``minimum``/``maximum`` give the bounds
    when the field is a number out of range, ``requested`` the number that was sent.
    The message is free text: only it comes back from the wire.
    """

    code = "INVALID"
    field: str | None
    minimum: int | None
    maximum: int | None
    requested: int | None

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
        requested: int | None = None,
    ) -> None:
        self._fill(
            message=message, field=field, minimum=minimum, maximum=maximum, requested=requested
        )


class BadRequest(StashError):
    """A request that cannot be read as HTTP or whose headers contradict each other."""

    code = "BADREQUEST"


class IncompleteBody(StashError):
    """A body that ended (or stalled past the deadline) before its Content-Length."""

    code = "INCOMPLETE"
    template = "request body has {actual} bytes, its Content-Length announced {expected}"
    expected: int
    actual: int

    def __init__(self, expected: int, actual: int) -> None:
        self._fill(expected=expected, actual=actual)


class RequestTimeout(StashError):
    """A request whose headers or body did not arrive within the deadline (``limit`` s)."""

    code = "TIMEOUT"
    template = "request did not arrive within {limit} seconds"
    limit: Seconds

    def __init__(self, limit: float) -> None:
        self._fill(limit=limit)


class UnsupportedEncoding(StashError):
    """A compressed request body: refused unread, since inflating it could exceed any limit."""

    code = "ENCODING"
    template = "request bodies must not be compressed (Content-Encoding: identity)"


class BodyTooLarge(StashError):
    """A request body over the caller's payload limit, refused before it is read.

    ``actual`` is the announced Content-Length, or None for a body sent without one (it
    is read to the limit plus one byte and no further).
    """

    code = "TOOLARGE"
    template = (
        "request body is {actual} bytes, the limit is {limit} bytes",
        "request body is over the limit of {limit} bytes",
    )
    limit: int
    actual: int | None

    def __init__(self, limit: int, actual: int | None) -> None:
        self._fill(limit=limit, actual=actual)


_WOULD_HOLD: Final = "namespace would hold {keys} keys ({bytes} bytes), the limit is "


class QuotaExceeded(StashError):
    """A write that would take its namespace past its quota of keys or bytes; nothing changed.

    ``keys`` and ``bytes`` are what the namespace would hold after the write (bytes count
    each key and its value), ``max_keys`` and ``max_bytes`` its tier's or the server's
    quota, 0 for a side without one: the message names only the sides there are.
    """

    code = "QUOTA"
    template = (
        _WOULD_HOLD + "{max_keys} keys and {max_bytes} bytes",
        _WOULD_HOLD + "{max_keys} keys",
        _WOULD_HOLD + "{max_bytes} bytes",
        _WOULD_HOLD + "none",
    )
    keys: int
    bytes: int
    max_keys: Limit
    max_bytes: Limit

    def __init__(
        self,
        keys: int,
        bytes: int,  # noqa: A002 - the field's name, which from_wire passes by keyword
        max_keys: int,
        max_bytes: int,
    ) -> None:
        self._fill(keys=keys, bytes=bytes, max_keys=max_keys, max_bytes=max_bytes)


class OutOfMemory(StashError):
    """A write that adds data while the server is over its maxmemory, in Redis's exact words."""

    code = "OOM"
    template = "command not allowed when used memory > 'maxmemory'."


# -- from the wire back to the class ------------------------------------------------------
# The remote client receives only the error line; the classes' own templates turn it back
# into the class that produced it, with the same fields, so a caller cannot tell an error
# raised in process from one that crossed the wire.


def _read_back() -> Reader:
    """The reader of every class here that declares a code or a template of its own.

    CommandError and StashError, which declare neither, are what from_wire falls back to.
    """
    found: list[type[StashError]] = []
    todo = [StashError]
    while todo:
        cls = todo.pop(0)
        todo += cls.__subclasses__()
        declares = "code" in vars(cls) or "template" in vars(cls)
        if declares and cls.__module__ == __name__ and cls is not StashError:
            found.append(cls)
    return Reader(found)


_READER: Final = _read_back()


def from_wire(text: str) -> StashError:
    """The error an error line stands for: ``from_wire(e.wire)`` rebuilds ``e``.

    The class and its fields come back for every error in this module; a text this
    module never produces (another server's, or a future code) becomes a
    :class:`CommandError` for ``ERR`` and a plain :class:`StashError` carrying the code
    otherwise. The result's ``wire`` is always ``text`` itself.

    >>> from_wire("CONFLICT version is 3, IFVERSION expected 2").current
    3
    """
    read = _READER.read(text)
    if isinstance(read, StashError):
        return read
    code, _, message = text.partition(" ")
    exc = CommandError(message) if code == CommandError.code else StashError(message)
    if code != exc.code:
        exc.code = code
    return exc


#: Every code an error line of this module starts with: how the remote client tells a
#: line redis-py kept whole from a message whose code redis-py stripped.
WIRE_CODES: Final = frozenset(_READER.codes)
