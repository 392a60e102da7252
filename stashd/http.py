"""The HTTP door: the JSON API, served in the daemon's loop and translated onto the memory service.

Each request is authenticated by the same keyring as RESP ``AUTH``, rate limited in one
place (:meth:`HttpApi.admit`), turned into an operation by :class:`MemoryService` and run
through the :class:`Batcher` the RESP connections share, so both doors land in the same
batches and obey the same rules. Nothing here decides what data means: this module
decides how requests and replies look, and how a misbehaving connection is cut off.

It runs on aiohttp's low-level server (``web.Server``, a documented protocol factory)
through its public API only: five fixed paths are routed by a dict
(:meth:`HttpApi.handle`), and every answer is a ``web.Response`` the handler writes
itself. Its ``write_eof`` waits while the client is behind in reading, and aiohttp
stops reading a connection while 32 of its requests wait to be handled
(``MAX_MSG_QUEUE_SIZE``, aiohttp 3.14.1), so a client that pipelines and never reads
holds a bounded share of the server: a socket buffer, one answer, 32 parsed requests.

What that API does not offer is done one level down, in asyncio: :class:`_Connection`
is each socket's protocol; it passes the bytes on to aiohttp's protocol and gives it
:class:`_Wire` as its transport. From there it bounds each request from its first byte
(slowloris), keeps a half-closed connection open for the answer under way, drops a
client that has read nothing for too long, and answers in the JSON shape, quoting
nothing, the requests aiohttp refuses itself because it cannot parse them.

Sockets are accepted by :class:`~stashd.listener.Listener`: each connection holds a
slot of the daemon's one count of clients, shared with RESP, for as long as it is open
(idle keep-alive included), and one over ``--max-clients`` gets 503 before a byte of
its request is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import unquote_to_bytes

from aiohttp import web

from stashd import log
from stashd._version import __version__
from stashd.cost import body_cost, op_debt
from stashd.errors import (
    BadExtend,
    BadRequest,
    BodyTooLarge,
    CommandError,
    Conflict,
    DataAndMerge,
    EmptyUpdate,
    IncompleteBody,
    InvalidRequest,
    InvalidTTL,
    MaxClients,
    MethodNotAllowed,
    NoAuth,
    NoRoute,
    NotFound,
    NotJSON,
    OutOfMemory,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    StashError,
    StoredNotJSON,
    StoreUnavailable,
    TTLNotPositive,
    UnsupportedEncoding,
    WrongPass,
)
from stashd.jsontext import check_stored, load_json
from stashd.listener import Listener
from stashd.ops import INT64_MAX
from stashd.service import PAGE_DEFAULT, rfc3339, seconds_left

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from aiohttp import StreamReader
    from multidict import CIMultiDictProxy

    from stashd.admission import Slot
    from stashd.batch import Batcher
    from stashd.commands.connection import RemoteKeyring
    from stashd.ops import Create
    from stashd.ratelimit import Decision, Rate, RateLimiter, SharedLimiter
    from stashd.server import ServerContext
    from stashd.service import MemoryService
    from stashd.tenancy import AuthThrottle, Keyring
    from stashd.types import Entry, Principal

logger = log.get("stashd.http")

#: Longest a request may take from its first byte to its last (headers and body): a client
#: that trickles bytes (slowloris) holds a connection and a buffer at most this long. With
#: the watchdog's interval on top, a cut-off comes within 10 s of the first byte.
REQUEST_TIMEOUT: Final = 9.5
#: A keep-alive connection with no request in progress is closed after this long; it costs
#: a socket and a little memory, not a handler.
IDLE_TIMEOUT: Final = 60.0
#: A connection whose client has read nothing of its answers for this long, while the
#: socket's send buffer stayed full, is dropped: it pins a handler, a socket and up to
#: the transport's high-water mark of answer bytes, and a client that reads again gets
#: the rest, so only one that has stopped reading loses anything.
SEND_TIMEOUT: Final = 60.0
#: How often request deadlines are checked: a cut-off comes at most this much late, and
#: the check costs one pass over open connections, not a timer per request.
WATCH_INTERVAL: Final = 0.25
#: On shutdown, in-flight requests get this long to finish before connections are closed.
SHUTDOWN_TIMEOUT: Final = 5.0
#: After answering a request whose body we did not read (413, a liar), keep reading and
#: dropping it this long before closing, so the client sees our answer rather than a reset
#: caused by unread bytes; bounded, so it cannot be used to hold the connection.
LINGER: Final = 2.0
#: Request line and each header line: aiohttp's default, stated so it is visible here.
MAX_LINE: Final = 8190
#: Answers are sent once the reads of this turn of the loop have been handled, as Redis
#: does, not one by one as each is written: writing each at once cost a third more CPU
#: per request (every write wakes the client for one answer). A connection holding this
#: many unsent bytes sends them at once, so the transport's own limit, which aiohttp
#: waits on for a slow reader, sees them.
SEND_AT: Final = 64 * 1024
#: Seconds a client refused for --max-clients is told to wait (Retry-After): slots come
#: free as other clients finish, idle keep-alive ones within IDLE_TIMEOUT.
FULL_RETRY_AFTER: Final = 1
#: How this door's writes are marked in their log events (stashd.events).
DOOR: Final = "http"

#: The fields each JSON body may carry; anything else is refused, so a typo such as
#: ``extend`` does not silently do nothing.
STASH_FIELDS: Final = frozenset({"data", "ttl"})
UPDATE_FIELDS: Final = frozenset({"data", "merge", "extra_seconds"})

# -- errors -----------------------------------------------------------------------------
# One table: error class -> (HTTP status, code, attributes reported as fields). A class
# missing here is looked up by its bases, so every StashError has an answer.
ERRORS: Final[dict[type[StashError], tuple[int, str, tuple[str, ...]]]] = {
    BadRequest: (400, "bad_request", ()),
    NotJSON: (400, "invalid_json", ("line", "column", "position")),
    IncompleteBody: (400, "incomplete_body", ("expected", "actual")),
    CommandError: (400, "bad_request", ()),
    NoAuth: (401, "unauthorized", ()),
    WrongPass: (401, "invalid_api_key", ()),
    NotFound: (404, "not_found", ()),
    NoRoute: (404, "not_found", ()),
    MethodNotAllowed: (405, "method_not_allowed", ("allowed",)),
    RequestTimeout: (408, "request_timeout", ("limit",)),
    StoredNotJSON: (409, "stored_value_not_json", ("line", "column", "position")),
    Conflict: (412, "version_mismatch", ("current", "expected")),
    PayloadTooLarge: (413, "payload_too_large", ("limit", "actual")),
    BodyTooLarge: (413, "payload_too_large", ("limit", "actual")),
    UnsupportedEncoding: (415, "unsupported_encoding", ()),
    InvalidRequest: (422, "invalid_request", ("field", "minimum", "maximum", "requested")),
    EmptyUpdate: (422, "invalid_request", ()),
    DataAndMerge: (422, "invalid_request", ()),
    InvalidTTL: (422, "invalid_ttl", ("requested", "minimum", "maximum")),
    TTLNotPositive: (422, "invalid_ttl", ("requested", "minimum", "maximum")),
    BadExtend: (422, "invalid_ttl", ("requested", "minimum")),
    RateLimited: (429, "rate_limited", ("retry_after_ms",)),
    MaxClients: (503, "max_clients_reached", ("limit",)),
    StoreUnavailable: (503, "unavailable", ()),
    QuotaExceeded: (507, "quota_exceeded", ("keys", "bytes", "max_keys", "max_bytes")),
    OutOfMemory: (507, "out_of_memory", ()),
    StashError: (400, "bad_request", ()),
}

# Where the RESP text names RESP syntax, the HTTP answer names the JSON field instead;
# templates are filled from the error's attributes.
_MESSAGES: Final[dict[type[StashError], str]] = {
    EmptyUpdate: "PATCH needs at least one of data, merge or extra_seconds",
    DataAndMerge: "data and merge cannot be used together",
    BadExtend: "extra_seconds must be a positive number, got {requested}",
    Conflict: "version is {current}, If-Match expected {expected}",
    NoAuth: "an API key is required: send X-API-KEY or Authorization: Bearer",
    WrongPass: "the API key is not valid",
}

#: The answer to bytes aiohttp cannot parse as a request. Which rule they broke is not
#: said: aiohttp's own text quotes the offending bytes.
MALFORMED: Final = (
    f"request is not valid HTTP/1.1, or a request line or header is longer than {MAX_LINE} bytes"
)

#: The answer to a failure of our own: it says nothing about the request or the failure.
INTERNAL_ERROR: Final = b'{"error":{"code":"internal_error","message":"internal error"}}'

# Built once: json.dumps with options builds an encoder per call.
_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def error_row(kind: type[StashError]) -> tuple[int, str, tuple[str, ...]]:
    """The table's row for an error class, or for its nearest base that has one."""
    for cls in kind.__mro__:
        row = ERRORS.get(cls)
        if row is not None:
            return row
    return ERRORS[StashError]  # pragma: no cover - StashError is in every MRO here


def error_body(exc: StashError) -> tuple[int, bytes]:
    """The status and the one JSON shape of every error: code, message, applicable fields."""
    status, code, names = error_row(type(exc))
    text = _MESSAGES.get(type(exc))
    message = exc.message if text is None else text.format_map(vars(exc))
    err: dict[str, Any] = {"code": code, "message": message}
    for name in names:
        value = getattr(exc, name, None)
        if value is not None:
            err[name] = list(value) if isinstance(value, tuple) else value
    return status, _ENCODE({"error": err}).encode()


def error_response(exc: StashError, headers: dict[str, str] | None = None) -> web.Response:
    """An error as a response; 401 says how to authenticate, 405 what is allowed.

    ``headers`` (the 429's rate-limit fields) come first.
    """
    status, body = error_body(exc)
    fields = dict(headers) if headers else {}
    fields.update(error_fields(exc, status))
    return _response(status, body, fields)


def error_fields(exc: StashError, status: int) -> dict[str, str]:
    """The header fields an error's status calls for."""
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="stash"'}
    if status == 415:
        return {"Accept-Encoding": "identity"}  # RFC 7694
    if isinstance(exc, MethodNotAllowed):
        return {"Allow": ", ".join(exc.allowed)}
    if isinstance(exc, MaxClients):
        return {"Retry-After": str(FULL_RETRY_AFTER)}
    return {}


def refusal(limit: int) -> bytes:
    """The whole answer of a connection over --max-clients, sent before it is closed.

    It is written before the request is read: a refused client gets no further.
    """
    exc = MaxClients(limit)
    status, body = error_body(exc)
    return _closing_answer(status, body, error_fields(exc, status))


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


def _json(status: int, payload: object, headers: dict[str, str] | None = None) -> web.Response:
    return _response(status, _ENCODE(payload).encode(), headers)


def _internal_error() -> web.Response:
    """The 500 of a failure of our own; the connection ends with it."""
    resp = _response(500, INTERNAL_ERROR)
    resp.force_close()
    return resp


def _closing_answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    """A whole answer written by the connection itself, after which it closes."""
    fields = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{fields}Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _text(key: bytes) -> str:
    # Ids made over HTTP are ASCII; a RESP key that is not UTF-8 is shown with U+FFFD.
    return key.decode("utf-8", "replace")


def if_match_version(header: str | None) -> int | tuple[int, ...] | None:
    """The version(s) an ``If-Match`` header accepts; None for none or ``*``.

    Versions travel as strong entity tags (``"3"``), and a bare ``3`` is read as the tag
    its sender meant; a list matches any of its tags. A weak tag, or a tag that is not a
    version, never matches (RFC 9110 compares If-Match strongly): it becomes 0, a version
    no entry has, so an existing id answers 412 and nothing changes. A header that is
    not entity tags at all is refused with 400.
    """
    if header is None:
        return None
    value = header.strip(" \t")
    if value == "*":
        return None
    if value.isascii() and value.isdigit():  # a bare version, as a person types it
        return int(value) if len(value) <= 19 else 0
    if _IF_MATCH.fullmatch(value) is None:
        raise BadRequest('If-Match must be "*", a version, or entity tags such as "3"')
    versions = tuple(
        int(opaque)
        if not weak and opaque.isascii() and opaque.isdigit() and len(opaque) <= 19
        else 0
        for weak, opaque in _ENTITY_TAG.findall(value)
    )
    return versions[0] if len(versions) == 1 else versions


# The same grammar as If-Match's pattern in protocol/openapi.yaml (RFC 9110 entity tags,
# without commas inside, in a comma-separated list; a bare number is checked before).
_IF_MATCH: Final = re.compile(r'(W/)?"[^",]*"([ \t]*,[ \t]*(W/)?"[^",]*")*')
_ENTITY_TAG: Final = re.compile(r'(W/)?"([^",]*)"')


def _integer(body: dict[str, Any], name: str) -> int | None:
    """A JSON number with no fraction (5 and 5.0 alike, as JSON Schema's integer), or None."""
    if name not in body:
        return None
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(f"{name} must be an integer number of seconds", field=name)
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidRequest(f"{name} must be an integer number of seconds", field=name)
        value = int(value)
    if not -INT64_MAX <= value <= INT64_MAX:
        # Past any TTL there could be; echoing its hundreds of digits helps nobody.
        raise InvalidRequest(
            f"{name} must be an integer number of seconds within a signed 64-bit number",
            field=name,
        )
    return value


def _object(raw: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """The request body as a JSON object with only the allowed fields."""
    body = load_json(raw, "request body")
    if type(body) is not dict:
        raise InvalidRequest("request body must be a JSON object")
    for name in body:
        if name not in allowed:
            raise InvalidRequest(
                f"unknown field; the body may only have {', '.join(sorted(allowed))}"
            )
    return body


# -- connections --------------------------------------------------------------------------
class _Connection(asyncio.Protocol):
    """The asyncio protocol of one client socket, in front of aiohttp's.

    Bytes and events from the socket go on to ``inner`` (aiohttp's protocol for this
    connection); aiohttp writes through :attr:`wire`. ``deadline`` is armed by a
    request's first byte and bounds headers and body together; the watchdog
    (:class:`_Guard`) ends a connection whose request is not whole by then. While the
    handler runs (``in_handler``) the body read enforces the same deadline itself, and a
    half-close ends that read at once (``body_timeout``).
    """

    __slots__ = (
        "arrived",
        "body_timeout",
        "deadline",
        "draining",
        "guard",
        "in_handler",
        "inner",
        "loop",
        "peer_eof",
        "slot",
        "stalled",
        "transport",
        "unsent",
        "unsent_size",
        "wire",
    )

    def __init__(self, guard: _Guard, inner: asyncio.Protocol, slot: Slot | None = None) -> None:
        self.guard = guard
        self.loop = guard.loop
        self.inner = inner
        self.slot = slot  # its place in the count of clients, released when it is lost
        self.wire = _Wire(self)
        self.transport: asyncio.Transport | None = None
        self.deadline = 0.0  # loop time; 0 when no request is arriving
        self.in_handler = False
        self.draining = False
        self.arrived = 0  # bytes received while the handler ran: the next request began
        self.peer_eof = False
        self.body_timeout: asyncio.Timeout | None = None  # the body read under way
        self.stalled = 0.0  # loop time the socket's send buffer filled up; 0 when it is not
        self.unsent: list[bytes] = []  # written by aiohttp, sent at the end of the turn
        self.unsent_size = 0

    # -- from the socket ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the watchdog and start aiohttp's protocol on the wire."""
        self.transport = cast("asyncio.Transport", transport)
        self.guard.connections.add(self)
        self.inner.connection_made(self.wire)

    def data_received(self, data: bytes) -> None:
        """Arm the deadline on a request's first byte, then let aiohttp parse."""
        if self.in_handler:
            self.arrived += len(data)
        elif not self.deadline:
            self.deadline = self.loop.time() + self.guard.request_timeout
        self.inner.data_received(data)

    def eof_received(self) -> bool:
        """A half-close: keep the socket open for the answer if a request is under way.

        A body that ends before its Content-Length then gets its 400 at once instead of
        a reset or a wait for the deadline.
        """
        self.peer_eof = True
        self.inner.eof_received()
        if self.body_timeout is not None:
            self.body_timeout.reschedule(self.loop.time())
        if self.draining or not (self.in_handler or self.deadline):
            # Nothing more will come and nothing is under way: the transport closes once
            # the answers written so far are sent.
            self.flush()
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        """Unregister and give the slot back; aiohttp ends what it had under way."""
        self.guard.connections.discard(self)
        if self.slot is not None:
            self.slot.release()
        self.unsent.clear()
        self.unsent_size = 0
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """The send buffer is full: aiohttp's writes wait, and the stall is timed."""
        self.stalled = self.loop.time()
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        """The client reads again."""
        self.stalled = 0.0
        self.inner.resume_writing()

    # -- sending ----------------------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Queue bytes for the end of this turn of the loop (at once past SEND_AT)."""
        if not self.unsent:
            self.loop.call_soon(self.flush)
        # A transport copies what it cannot send at once; a buffer of the writer's could
        # change before the queue is sent.
        self.unsent.append(data if type(data) is bytes else bytes(data))
        self.unsent_size += len(data)
        if self.unsent_size >= SEND_AT:
            self.flush()

    def flush(self) -> None:
        """Hand what is queued to the socket's transport."""
        unsent = self.unsent
        if not unsent:
            return
        self.unsent = []
        self.unsent_size = 0
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if len(unsent) == 1:
                transport.write(unsent[0])
            else:
                transport.writelines(unsent)

    # -- from the handler -----------------------------------------------------------------
    def enter(self) -> None:
        """The handler starts: the request's headers are complete."""
        self.in_handler = True
        self.arrived = 0
        if not self.deadline:  # pipelined behind the previous request
            self.deadline = self.loop.time() + self.guard.request_timeout

    def leave(self, *, draining: bool = False) -> None:
        """The answer is written: the next request's clock starts with its first byte.

        ``draining``: the answer went out before the body was read, and aiohttp drops the
        rest for up to LINGER seconds before closing; the request's own deadline still
        bounds that, so no client holds the connection past it.
        """
        self.in_handler = False
        self.draining = draining
        if not draining:
            self.deadline = self.loop.time() + self.guard.request_timeout if self.arrived else 0.0

    # -- from the watchdog ----------------------------------------------------------------
    def expire(self, now: float) -> None:
        """End a request that has not arrived in time, or a client that stopped reading."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        guard = self.guard
        if self.stalled and now - self.stalled >= guard.send_timeout:
            logger.info("http_send_timeout", seconds=guard.send_timeout)
            transport.abort()  # what it holds can never be delivered
            return
        if self.in_handler or not self.deadline or now < self.deadline:
            return
        self.flush()
        if not self.draining:  # nothing answered yet: say why the connection ends
            _, body = error_body(RequestTimeout(guard.request_timeout))
            transport.write(_closing_answer(408, body))
        logger.info("http_request_timeout", seconds=guard.request_timeout)
        transport.close()

    # -- from aiohttp -----------------------------------------------------------------------
    def refuse(self, first: bytes) -> None:
        """An answer aiohttp made to a request it never handed to the API: ours goes instead.

        That happens when it cannot parse the bytes (its text would quote them). The
        status is read from its status line (RFC 9112); the answer has the JSON shape
        and a 404 or 400 says no more than that, and the connection ends with it.
        """
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        status = int(first[9:12]) if first[:7] == b"HTTP/1." and first[9:12].isdigit() else 500
        if status >= 500:
            answer = _closing_answer(500, INTERNAL_ERROR)
        else:
            answer = _closing_answer(
                *error_body(NoRoute() if status == 404 else BadRequest(MALFORMED))
            )
        self.flush()
        transport.write(answer)
        transport.close()


class _Wire(asyncio.Transport):
    """The transport aiohttp writes to: the socket's, as long as the API is answering.

    Everything the handler sends (the answer, a ``100 Continue``) is written while
    :attr:`_Connection.in_handler`, and queued to go out at the end of the loop's turn
    (:meth:`_Connection.send`); a write at any other time is an answer aiohttp made by
    itself, which :meth:`_Connection.refuse` replaces.
    """

    __slots__ = ("conn",)

    def __init__(self, conn: _Connection) -> None:
        super().__init__()
        self.conn = conn

    def _socket(self) -> asyncio.Transport:
        transport = self.conn.transport
        assert transport is not None  # aiohttp is handed the wire once the socket is there
        return transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send, or replace aiohttp's own answer."""
        conn = self.conn
        if conn.in_handler:
            conn.send(data)
        else:
            conn.refuse(bytes(data[:12]))

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        """Send, or replace aiohttp's own answer."""
        conn = self.conn
        if conn.in_handler:
            for data in list_of_data:
                conn.send(data)
        else:
            conn.refuse(b"".join(bytes(chunk) for chunk in list_of_data)[:12])

    def get_extra_info(self, name: str, default: Any = None) -> Any:  # noqa: ANN401 - asyncio's signature
        """The socket's."""
        return self._socket().get_extra_info(name, default)

    def is_closing(self) -> bool:
        """The socket's."""
        transport = self.conn.transport
        return transport is None or transport.is_closing()

    def close(self) -> None:
        """Close the socket once what is queued and buffered is sent."""
        self.conn.flush()
        self._socket().close()

    def abort(self) -> None:
        """Close the socket now, dropping what is queued."""
        self.conn.unsent.clear()
        self.conn.unsent_size = 0
        self._socket().abort()

    def is_reading(self) -> bool:
        """The socket's."""
        return self._socket().is_reading()

    def pause_reading(self) -> None:
        """Stop reading the socket: back-pressure on pipelined requests, from aiohttp."""
        self._socket().pause_reading()

    def resume_reading(self) -> None:
        """Read the socket again."""
        self._socket().resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """The socket's."""
        self._socket().set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        """What is queued and what the socket's transport holds."""
        return self.conn.unsent_size + self._socket().get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """The socket's."""
        return self._socket().get_write_buffer_limits()

    def write_eof(self) -> None:
        """Half-close the socket after what is queued."""
        self.conn.flush()
        self._socket().write_eof()

    def can_write_eof(self) -> bool:
        """The socket's."""
        return self._socket().can_write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Another protocol for the socket's bytes (aiohttp never asks)."""
        self.conn.inner = cast("asyncio.Protocol", protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The protocol the socket's bytes go to (aiohttp's)."""
        return self.conn.inner


class _Guard:
    """The watchdog: every WATCH_INTERVAL, end requests past their deadline."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, request_timeout: float, send_timeout: float
    ) -> None:
        self.loop = loop
        self.request_timeout = request_timeout
        self.send_timeout = send_timeout
        self.connections: set[_Connection] = set()

    async def watch(self) -> None:
        """Run until cancelled."""
        loop = self.loop
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = loop.time()
            for conn in list(self.connections):
                conn.expire(now)


class _AiohttpLog(logging.Handler):
    """aiohttp's own log records as this module's events, never quoting a request's bytes.

    aiohttp logs each request it cannot parse with a traceback whose text quotes the
    bytes; here it is one ``http_malformed_request`` event naming the error's class (an
    HTTP error of aiohttp's carries its status as ``code``). Anything else it logs is
    ours to look at: an error with its traceback, or a debug event.
    """

    def emit(self, record: logging.LogRecord) -> None:
        """One event per record."""
        exc = record.exc_info[1] if record.exc_info else None
        code = getattr(exc, "code", None)
        if exc is not None and isinstance(code, int) and 400 <= code < 500:
            logger.info("http_malformed_request", error=type(exc).__name__)
        elif record.levelno >= logging.ERROR:
            logger.error(
                "http_aiohttp_error", message=record.getMessage(), exc_info=record.exc_info
            )
        else:
            logger.debug("http_aiohttp", message=record.getMessage())


def _aiohttp_logger() -> logging.Logger:
    """The logger handed to aiohttp (its ``logger`` protocol option), set up once."""
    bridge = logging.getLogger("stashd.http.aiohttp")
    if not bridge.handlers:
        bridge.addHandler(_AiohttpLog())
        bridge.setLevel(logging.DEBUG)  # the handler decides: aiohttp logs some at debug
        bridge.propagate = False
    return bridge


# -- the API ------------------------------------------------------------------------------
class HttpApi:
    """The request handler: routing, authentication, rate limits, and one method per endpoint.

    ``limiter`` and ``rate_of`` are the rate-limit hook: when both are given, every
    authenticated request costs units of ``rate_of(principal)`` for the principal's
    namespace (None: not limited), by the rule of :mod:`stashd.cost`: one, and more for
    a body past 16 KiB, before it runs; a debt for what it read or walked, after.
    """

    def __init__(
        self,
        ctx: ServerContext,
        *,
        backend: str = "memory",
        limiter: RateLimiter | SharedLimiter | None = None,
        rate_of: Callable[[Principal], Rate | None] | None = None,
    ) -> None:
        self.service: MemoryService = ctx.service
        self.keyring: Keyring = ctx.keyring
        self.throttle: AuthThrottle | None = ctx.auth_throttle
        batcher = ctx.batcher
        assert batcher is not None
        self.batcher: Batcher = batcher
        self.store = ctx.store
        self.ctx = ctx
        self.backend = backend
        self.limiter = limiter
        self.rate_of = rate_of
        # Which kinds of keyring and limiter these are is fixed for the process: decided
        # here once, not per request. Remote ones are asked without blocking the loop.
        self.remote_keyring = ctx.keyring.remote
        self.shared_limiter = limiter is not None and limiter.shared
        # path's first segment -> (takes an id, {method: handler})
        self.routes: dict[str, tuple[bool, dict[str, Any]]] = {
            "stash": (False, {"POST": self.stash, "GET": self.listing}),
            "recall": (True, {"GET": self.recall}),
            "update": (True, {"PATCH": self.update}),
            "forget": (True, {"DELETE": self.forget}),
        }

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one request and write its answer; every refusal is a StashError's JSON shape.

        The answer is written here rather than by aiohttp once this returns (a prepared,
        finished response is returned, as aiohttp's low-level docs allow), so every byte
        of it goes out while the connection knows the API is answering (see
        :class:`_Wire`); ``write_eof`` waits while the client is behind in reading.
        """
        wire = request.transport
        if not isinstance(wire, _Wire):  # the client has gone: aiohttp drops what comes back
            return web.Response(status=204)
        conn = wire.conn
        conn.enter()
        try:
            try:
                resp = await self._dispatch(request, conn)
            except _Limited as exc:
                resp = error_response(exc, exc.headers)
            except StashError as exc:
                resp = error_response(exc)
            except Exception:
                # A failure of our own: this request's 500 alone, and its connection ends.
                logger.exception("http_internal_error")
                resp = _internal_error()
            if conn.peer_eof or not request.content.is_eof():
                # The client has stopped sending, or sent a body we did not read: this
                # connection cannot carry another request.
                resp.force_close()
            try:
                await resp.prepare(request)
                await resp.write_eof()
            except ConnectionError:
                pass  # the client has gone: aiohttp ends the connection
        finally:
            conn.leave(draining=not request.content.is_eof())
        return resp

    async def _dispatch(self, request: web.BaseRequest, conn: _Connection) -> web.StreamResponse:
        path = request.raw_path
        if path[:1] != "/":  # absolute-form target
            path = request.rel_url.raw_path
        cut = path.find("?")
        if cut >= 0:
            path = path[:cut]
        parts = path.split("/")
        if len(parts) == 2 and parts[1] == "healthz":
            if request.method != "GET":
                raise MethodNotAllowed(request.method, ("GET",))
            return await self.healthz()
        route = self.routes.get(parts[1]) if len(parts) in (2, 3) else None
        if route is None or route[0] != (len(parts) == 3):
            raise NoRoute
        takes_id, methods = route
        handler = methods.get(request.method)
        if handler is None:
            raise MethodNotAllowed(request.method, tuple(methods))
        key = b""
        if takes_id:
            key = unquote_to_bytes(parts[2])
            if not key:
                raise NotFound
        if self.remote_keyring:
            principal = await self.authenticate_async(request)
        else:
            principal = self.authenticate(request)
        # A body's bytes are known up front from its Content-Length; a chunked one's are
        # charged once read (see charge_body).
        cost = body_cost(request.content_length or 0)
        if self.shared_limiter:
            rate = await self.admit_shared(principal, cost)
        else:
            rate = self.admit(principal, cost)
        resp: web.StreamResponse = await handler(request, principal, key, conn)
        if rate is not None:
            resp.headers.update(rate)
        return resp

    # -- who is asking ------------------------------------------------------------------
    def authenticate(self, request: web.BaseRequest) -> Principal:
        """The principal of ``X-API-KEY`` or ``Authorization: Bearer``, by RESP AUTH's rules."""
        key = self._credentials(request)
        if key is None:
            return self._anonymous()
        return self._checked(self.keyring.authenticate(None, key), lambda: request.remote)

    async def authenticate_async(self, request: web.BaseRequest) -> Principal:
        """:meth:`authenticate` with a keyring that looks keys up in Redis."""
        key = self._credentials(request)
        if key is None:
            return self._anonymous()
        remote = cast("RemoteKeyring", self.keyring)
        return self._checked(await remote.authenticate_async(None, key), lambda: request.remote)

    def _credentials(self, request: web.BaseRequest) -> bytes | None:
        """The key sent (None: none), once the client's address is known not to be blocked."""
        key = self._key_of(request.headers)
        if key is None:
            return None
        # The same failed-key throttle as RESP AUTH, per client address: while an address
        # has failed too often its keys are not even looked up. The address is only
        # worked out while some address is blocked.
        throttle = self.throttle
        if throttle is not None and throttle.blocking() and throttle.blocked(request.remote or ""):
            raise WrongPass
        return key

    @staticmethod
    def _key_of(headers: CIMultiDictProxy[str]) -> bytes | None:
        """The key in ``X-API-KEY`` or ``Authorization: Bearer`` (None: none)."""
        keys = headers.getall("X-API-KEY", ())
        auths = headers.getall("Authorization", ())
        if len(keys) > 1 or len(auths) > 1:
            # Which of two keys counts would be a guess; a proxy adding its own is a mistake.
            name = "X-API-KEY" if len(keys) > 1 else "Authorization"
            raise BadRequest(f"send one {name} header, got {max(len(keys), len(auths))}")
        key = keys[0] if keys else None
        auth = auths[0] if auths else None
        if auth is not None:
            scheme, _, token = auth.strip().partition(" ")
            if scheme.lower() != "bearer":
                raise WrongPass
            token = token.strip()
            if key is not None and key != token:
                raise BadRequest("X-API-KEY and Authorization carry different keys")
            key = token
        if key is None:
            return None
        # aiohttp decodes header bytes as UTF-8 with surrogateescape; this gives the bytes
        # back, so a key names the same namespace here as in RESP AUTH.
        return key.encode("utf-8", "surrogateescape")

    def _anonymous(self) -> Principal:
        anonymous = self.keyring.anonymous()
        if anonymous is None:
            raise NoAuth
        return anonymous

    def _checked(self, principal: Principal | None, remote: Callable[[], str | None]) -> Principal:
        """The principal; a refused key counts against the client's address, then 401."""
        if principal is None:
            if self.throttle is not None:
                self.throttle.failed(remote() or "")
            raise WrongPass
        return principal

    def admit(self, principal: Principal, cost: int = 1) -> dict[str, str] | None:
        """The one rate-limit check: the RateLimit fields to send, or 429 when over.

        Fields follow the IETF draft (draft-ietf-httpapi-ratelimit-headers): the policy
        ``q`` units per ``w`` seconds, and ``r`` units remaining, after this request's
        ``cost``, with ``t`` seconds until the quota is whole again; a refusal adds
        ``Retry-After`` in whole seconds.
        """
        if self.limiter is None or self.rate_of is None:
            return None
        rate = self.rate_of(principal)
        if rate is None:
            return None
        limiter = cast("RateLimiter", self.limiter)
        return _rate_fields(rate, limiter.acquire(principal.namespace, rate, cost))

    async def admit_shared(self, principal: Principal, cost: int = 1) -> dict[str, str] | None:
        """:meth:`admit` with a limiter kept in Redis, asked without blocking the loop."""
        if self.limiter is None or self.rate_of is None:
            return None
        rate = self.rate_of(principal)
        if rate is None:
            return None
        limiter = cast("SharedLimiter", self.limiter)
        grant = await limiter.take(principal.namespace, rate, (cost,))
        return _rate_fields(rate, grant.decision)

    def charge(self, principal: Principal, units: int) -> None:
        """Charge work learned after a request ran to the principal's rate, as a debt."""
        if units and self.limiter is not None and self.rate_of is not None:
            rate = self.rate_of(principal)
            if rate is not None:
                self.limiter.charge(principal.namespace, rate, units)

    def charge_body(self, principal: Principal, request: web.BaseRequest, body: bytes) -> None:
        """Charge what a body read costs past what its Content-Length said (chunked ones)."""
        self.charge(principal, body_cost(len(body)) - body_cost(request.content_length or 0))

    # -- bodies ---------------------------------------------------------------------------
    async def read_body(self, request: web.BaseRequest, conn: _Connection, limit: int) -> bytes:
        """The body, refused before reading when its Content-Length is over ``limit``.

        A body without a Content-Length (chunked) is read to ``limit + 1`` bytes at most.
        A body shorter than its Content-Length (the client half-closed, or stopped before
        the request deadline) is refused with 400 and changes nothing.
        """
        length = request.content_length
        if length is not None and length > limit:
            raise BodyTooLarge(limit, length)
        encoding = request.headers.get("Content-Encoding")
        if encoding is not None and encoding.strip().lower() != "identity":
            raise UnsupportedEncoding
        content = request.content
        if content.is_eof():  # the whole body is already here: the common case
            body = content.read_nowait(-1)
        else:
            body = await self._read_rest(request, conn, content, limit, length)
        if length is not None and len(body) != length:
            raise IncompleteBody(length, len(body))
        return body

    async def _read_rest(
        self,
        request: web.BaseRequest,
        conn: _Connection,
        content: StreamReader,
        limit: int,
        length: int | None,
    ) -> bytes:
        """Wait for the rest of a body, until the request's deadline or a half-close."""
        transport = request.transport
        if (
            transport is not None
            and not conn.peer_eof
            and request.headers.get("Expect", "").lower() == "100-continue"
        ):
            # The client waits for this before sending a large body (curl does for
            # bodies over 1 MiB); a body over the limit was refused above instead.
            transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        got = bytearray()
        try:
            async with asyncio.timeout_at(conn.deadline) as deadline:
                conn.body_timeout = deadline
                if conn.peer_eof:  # what is buffered is all there is
                    deadline.reschedule(conn.loop.time())
                while chunk := await content.read(limit + 1 - len(got)):
                    got += chunk
                    if len(got) > limit:
                        raise BodyTooLarge(limit, length)
        except TimeoutError:
            if length is not None:
                raise IncompleteBody(length, len(got)) from None
            if conn.peer_eof:
                raise BadRequest("request body ended before its last chunk") from None
            raise RequestTimeout(conn.guard.request_timeout) from None
        except (ConnectionError, ValueError, web.RequestPayloadError) as exc:
            # A malformed chunked encoding, reported by aiohttp as the body is read.
            raise BadRequest("request body is malformed") from exc
        finally:
            conn.body_timeout = None
        return bytes(got)

    # -- endpoints -------------------------------------------------------------------------
    async def healthz(self) -> web.StreamResponse:
        """200 when the store runs operations; 503 (unavailable) when it does not."""
        await self.batcher.run(self.service.ping())
        return _json(200, {"status": "ok", "version": __version__, "backend": self.backend})

    async def stash(
        self, request: web.BaseRequest, p: Principal, _key: bytes, conn: _Connection
    ) -> web.StreamResponse:
        """POST /stash {"data": any, "ttl": seconds?} -> 201 with the new id."""
        raw = await self.read_body(request, conn, p.limits.max_payload)
        self.charge_body(p, request, raw)
        op = self.stash_op(p, raw)
        key: bytes = await self.batcher.run(op, DOOR)
        return self.created(p, op, key)

    def stash_op(self, p: Principal, raw: bytes) -> Create:
        """The operation a POST /stash body asks for; refusals raise, and change nothing."""
        body = _object(raw, STASH_FIELDS)
        if "data" not in body:
            raise InvalidRequest("data is required", field="data")
        return self.service.stash_value(p, body["data"], _integer(body, "ttl"))

    def created(self, p: Principal, op: Create, key: bytes) -> web.Response:
        """The 201 of a stored POST /stash."""
        del p
        memory_id = key.decode()
        ttl = seconds_left(op.expires_at, self.service.clock())
        # New ids are base62 (or hex), so they need no JSON escaping.
        reply = f'{{"memory_id":"{memory_id}","ttl":{ttl},"expires_at":"{rfc3339(op.expires_at)}"}}'
        return _response(201, reply.encode(), {"ETag": '"1"', "Location": f"/recall/{memory_id}"})

    async def recall(
        self, request: web.BaseRequest, p: Principal, key: bytes, conn: _Connection
    ) -> web.StreamResponse:
        """GET /recall/{id} -> the data with its TTL, expiry and version."""
        del request, conn
        get = self.service.get(p, key)
        entry: Entry | None = await self.batcher.run(get)
        self.charge(p, op_debt(get, entry))  # a large document read back
        if entry is None:
            raise NotFound
        value = entry.value
        check_stored(value)  # a value SET raw over RESP may not be JSON: 409, with the position
        # An id Stash made (base62 or hex) needs no escaping; any other is encoded.
        memory_id = b'"' + key + b'"' if key.isalnum() else _ENCODE(_text(key)).encode()
        tail = (
            f',"ttl_remaining":{seconds_left(entry.expires_at, self.service.clock())},'
            f'"expires_at":"{rfc3339(entry.expires_at)}","version":{entry.version}}}'
        ).encode()
        # The stored text is valid UTF-8 JSON, so it is embedded as it is, unparsed.
        body = b"".join((b'{"memory_id":', memory_id, b',"data":', value, tail))
        return _response(200, body, {"ETag": f'"{entry.version}"'})

    async def update(
        self, request: web.BaseRequest, p: Principal, key: bytes, conn: _Connection
    ) -> web.StreamResponse:
        """PATCH /update/{id} {"data"?, "merge"?, "extra_seconds"?}, If-Match -> new TTL."""
        if_version = if_match_version(request.headers.get("If-Match"))
        raw = await self.read_body(request, conn, p.limits.max_payload)
        self.charge_body(p, request, raw)
        body = _object(raw, UPDATE_FIELDS)
        extra = _integer(body, "extra_seconds")
        if extra is not None and extra <= 0:
            raise BadExtend(extra)
        op = self.service.update_value(
            p,
            key,
            data=body.get("data"),
            has_data="data" in body,
            merge=body.get("merge"),
            has_merge="merge" in body,
            extend_seconds=extra or 0,
            if_version=if_version,
        )
        try:
            entry: Entry | None = await self.batcher.run(op, DOOR)
        finally:
            self.charge(p, op_debt(op, None))  # the document read and merged, even if refused
        if entry is None:
            raise NotFound
        return _json(
            200,
            {
                "memory_id": _text(key),
                "ttl_remaining": seconds_left(entry.expires_at, self.service.clock()),
                "expires_at": rfc3339(entry.expires_at),
                "version": entry.version,
            },
            {"ETag": f'"{entry.version}"'},
        )

    async def forget(
        self, request: web.BaseRequest, p: Principal, key: bytes, conn: _Connection
    ) -> web.StreamResponse:
        """DELETE /forget/{id} -> 204, or 404 when there was nothing to forget."""
        del request, conn
        removed: int = await self.batcher.run(self.service.forget(p, [key]), DOOR)
        if not removed:
            raise NotFound
        return web.Response(status=204)

    async def listing(
        self, request: web.BaseRequest, p: Principal, _key: bytes, conn: _Connection
    ) -> web.StreamResponse:
        """GET /stash?cursor=&limit= -> a page of ids with TTL, size and version, no data."""
        del conn
        query = request.query
        cursor = _query_int(query.get("cursor"), "cursor", 0)
        limit = _query_int(query.get("limit"), "limit", PAGE_DEFAULT)
        page = self.service.page(p, cursor, limit)
        nxt, items = await self.batcher.run(page)
        self.charge(p, op_debt(page, None))  # the entries it walked
        now = self.service.clock()
        memories = [
            {
                "memory_id": _text(k),
                "ttl_remaining": seconds_left(e.expires_at, now),
                "expires_at": rfc3339(e.expires_at),
                "size": len(e.value),
                "version": e.version,
            }
            for k, e in items
        ]
        return _json(200, {"memories": memories, "next_cursor": str(nxt) if nxt else None})


def _rate_fields(rate: Rate, decision: Decision) -> dict[str, str]:
    """The RateLimit fields of a decision; raises the 429 when it refuses."""
    headers = {
        "RateLimit-Policy": f'"default";q={rate.limit};w={rate.period_s}',
        "RateLimit": f'"default";r={decision.remaining};t={-(-decision.reset_ms // 1000)}',
    }
    if not decision.allowed:
        headers["Retry-After"] = str(max(1, -(-decision.retry_after_ms // 1000)))
        raise _Limited(decision.retry_after_ms, headers)
    return headers


class _Limited(RateLimited):
    """A refusal by the rate limiter, with the header fields that go with the 429."""

    def __init__(self, retry_after_ms: int, headers: dict[str, str]) -> None:
        super().__init__(retry_after_ms)
        self.headers = headers


def _query_int(raw: str | None, name: str, default: int) -> int:
    """A query parameter that must be a non-negative decimal integer."""
    if raw is None:
        return default
    if not raw.isdigit() or not raw.isascii() or len(raw) > 19:
        if name == "cursor":
            raise InvalidRequest("cursor must be a value returned as next_cursor", field=name)
        raise InvalidRequest(f"{name} must be a positive integer", field=name)
    return int(raw)


# -- running it ---------------------------------------------------------------------------
class HttpServer:
    """The sidecar as the daemon runs it: bound, served in the running loop, closed first."""

    def __init__(
        self,
        api: HttpApi,
        *,
        request_timeout: float = REQUEST_TIMEOUT,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.api = api
        self.request_timeout = request_timeout
        self.send_timeout = send_timeout
        self.guard: _Guard | None = None
        self.runner: web.ServerRunner | None = None
        self.listener: Listener | None = None
        self.watchdog: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        # aiohttp's low-level server: a protocol factory calling the handler with each
        # request; the options are the protocol's, as documented for AppRunner.
        server = web.Server(
            self.api.handle,
            access_log=None,  # write events are logged by the handlers, never request lines
            logger=_aiohttp_logger(),
            keepalive_timeout=IDLE_TIMEOUT,
            lingering_time=LINGER,
            # A compressed body is refused, never inflated: a small gzip can expand past
            # any payload limit before a handler sees a byte of it.
            auto_decompress=False,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
        )
        self.runner = runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await runner.setup()
        loop = asyncio.get_running_loop()
        self.guard = guard = _Guard(loop, self.request_timeout, self.send_timeout)
        # Every connection holds a slot of the daemon's one count of clients (RESP's
        # too); one over it is answered 503 and closed, unread.
        slots = self.api.ctx.slots
        self.listener = Listener(
            "http", slots, lambda slot: _Connection(guard, server(), slot), refusal(slots.limit)
        )
        self.port = await self.listener.start(host, port)
        self.watchdog = loop.create_task(guard.watch())
        return self.port

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), close connections."""
        if self.listener is not None:
            self.listener.close()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.watchdog is not None:
            self.watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watchdog
            self.watchdog = None
        if self.listener is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.listener.wait_closed(), SHUTDOWN_TIMEOUT)
            self.listener = None
