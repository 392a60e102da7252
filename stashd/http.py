"""The HTTP door: the JSON API, served in the daemon's loop and translated onto the memory service.

Each request is authenticated by the same keyring as RESP ``AUTH``, rate limited in one
place (:meth:`HttpApi.admit`), turned into an operation by :class:`MemoryService` and run
through the :class:`Batcher` the RESP connections share, so both doors land in the same
batches and obey the same rules. Nothing here decides what data means: this module
decides how requests and replies look, and how a misbehaving connection is cut off.

It runs on aiohttp's low-level server rather than ``web.Application``: the guard against
slow clients, a JSON answer to requests that are not HTTP, and a reply to a body cut short
by a half-closed connection all need our own connection protocol, which only the
low-level server lets us supply; five fixed paths need no router.

The two hot requests, POST /stash and GET /recall/{id}, are answered from the
connection's ``data_received`` when they arrive whole on an idle connection (the direct
path, see :meth:`HttpApi.direct_request`); everything else goes through aiohttp's request
loop. Both give the same bytes (tests/test_http_direct.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import unquote_to_bytes

from aiohttp import web
from aiohttp.http import HttpRequestParser, HttpVersion
from aiohttp.http_parser import RawRequestMessage
from aiohttp.web_protocol import RequestHandler

from stashd import __version__, log
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
    MethodNotAllowed,
    NoAuth,
    NoRoute,
    NotFound,
    NotJSON,
    PayloadTooLarge,
    RateLimited,
    RequestTimeout,
    StashError,
    StoredNotJSON,
    StoreUnavailable,
    TTLNotPositive,
    UnsupportedEncoding,
    WrongPass,
)
from stashd.httpreply import Reply
from stashd.jsontext import check_stored, load_json
from stashd.service import PAGE_DEFAULT, rfc3339, seconds_left

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiohttp.streams import StreamReader
    from aiohttp.web_request import BaseRequest
    from multidict import CIMultiDictProxy

    from stashd.batch import Batcher
    from stashd.commands.connection import RemoteKeyring
    from stashd.ops import Create, Op
    from stashd.ratelimit import Decision, Rate, RateLimiter, SharedLimiter
    from stashd.server import ServerContext
    from stashd.service import MemoryService
    from stashd.store.base import Entry
    from stashd.tenancy import AuthThrottle, Keyring, Principal

logger = log.get("stashd.http")

#: Longest a request may take from its first byte to its last (headers and body): a client
#: that trickles bytes (slowloris) holds a connection and a buffer at most this long. With
#: the watchdog's interval on top, a cut-off comes within 10 s of the first byte.
REQUEST_TIMEOUT: Final = 9.5
#: A keep-alive connection with no request in progress is closed after this long; it costs
#: a socket and a little memory, not a handler.
IDLE_TIMEOUT: Final = 60.0
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

#: The parts of aiohttp's connection protocol the direct path uses besides its public
#: ones: its request queue and the future its request loop waits on, the parser's count
#: of queued requests, and the idle timer. Checked once: with an aiohttp that lacks one,
#: every request takes the general path.
DIRECT_SUPPORTED: Final = all(
    any(name in getattr(cls, "__slots__", ()) for cls in RequestHandler.__mro__)
    for name in (
        "_waiter",
        "_messages",
        "_parser",
        "_upgraded",
        "_keepalive",
        "_keepalive_handle",
        "_keepalive_timeout",
        "_next_keepalive_close_time",
    )
) and all(
    hasattr(cls, name)
    for cls, name in (
        (HttpRequestParser, "message_consumed"),
        (RequestHandler, "writing_paused"),
        (RequestHandler, "_process_keepalive"),
    )
)

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
    StoreUnavailable: (503, "unavailable", ()),
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


def error_response(exc: StashError, headers: dict[str, str] | None = None) -> Reply:
    """An error as a response; 401 says how to authenticate, 405 what is allowed.

    ``headers`` (the 429's rate-limit fields) come first, as ``web.Response(headers=...)``
    sends them; a :class:`Reply` is written by both paths, with or without a request.
    """
    status, body = error_body(exc)
    fields = "".join(f"{name}: {value}\r\n" for name, value in headers.items()) if headers else ""
    reply = Reply(status, body, fields)
    reply.headers.update(error_fields(exc, status))
    return reply


def error_fields(exc: StashError, status: int) -> dict[str, str]:
    """The header fields an error's status calls for."""
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="stash"'}
    if status == 415:
        return {"Accept-Encoding": "identity"}  # RFC 7694
    if isinstance(exc, MethodNotAllowed):
        return {"Allow": ", ".join(exc.allowed)}
    return {}


def _answer_of(
    reply: Callable[[Any, Any], Reply],
    op: Op,
    result: object,
    rate: dict[str, str] | None,
) -> Reply | None:
    """The direct path's answer to an operation's result; None for a failure of our own."""
    if result is _FAILED:
        return None
    if isinstance(result, StashError):
        return error_response(result)
    try:
        answer = reply(op, result)
    except StashError as exc:  # the result refused (not found, not JSON)
        return error_response(exc)
    except Exception:
        # Called from a batch's end too, where raising would leave the batch's other
        # callers unanswered: a failure of our own is this request's 500 alone.
        logger.exception("http_internal_error")
        return None
    if rate is not None:
        answer.headers.update(rate)
    return answer


def _remote(peer: object) -> str | None:
    """The client's address as aiohttp's ``BaseRequest.remote`` gives it."""
    if peer is None:
        return None
    if isinstance(peer, (list, tuple)):
        return str(peer[0])
    return str(peer)


#: The result of an operation that failed in a way it should not (a bug, not a refusal).
_FAILED: Final = object()

#: The answer to a failure of our own: it says nothing about the request or the failure.
INTERNAL_ERROR: Final = b'{"error":{"code":"internal_error","message":"internal error"}}'


# Built once: json.dumps with options builds an encoder per call.
_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _json(status: int, payload: object, fields: str = "") -> Reply:
    return Reply(status, _ENCODE(payload).encode(), fields)


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
        return int(value)
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
class _Connection(RequestHandler):
    """aiohttp's protocol plus a request deadline, and an answer to a body cut short.

    ``deadline`` is armed by a request's first byte and bounds headers and body together;
    the watchdog (:class:`_Guard`) ends a connection whose request is not whole by then.
    While a handler runs (``in_handler``) the body read enforces the same deadline itself.
    """

    # RequestHandler has __slots__; ours keep the per-connection cost as small.
    __slots__ = (
        "arrived",
        "body",
        "deadline",
        "direct",
        "draining",
        "guard",
        "in_handler",
        "lingering",
        "loop",
        "peer_eof",
        "pending",
        "settled",
    )

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        guard: _Guard,
        direct: HttpApi | None,
        **kw: Any,  # noqa: ANN401 - aiohttp's options
    ) -> None:
        super().__init__(manager, loop=loop, **kw)
        self.loop = loop
        self.guard = guard
        self.direct = direct  # the API answering on the direct path (None: never)
        self.pending = False  # a direct answer waits for its batch
        self.settled: asyncio.Future[None] | None = None  # made by shutdown() while pending
        self.deadline = 0.0  # loop time; 0 when no request is arriving
        self.in_handler = False
        self.draining = False
        self.arrived = 0  # bytes received while a handler ran: the next request began
        self.peer_eof = False
        self.body: StreamReader | None = None  # the body being read, fed EOF on half-close
        # An unread body aiohttp is dropping after our answer: ended when the client or
        # the deadline ends the connection, so the drain stops with it.
        self.lingering: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register with the watchdog."""
        super().connection_made(transport)
        self.guard.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        """Unregister, and end any drain of an unread body."""
        self.guard.connections.discard(self)
        self.stop_lingering()
        super().connection_lost(exc)

    def stop_lingering(self) -> None:
        """Let aiohttp's drain of an unread body finish now."""
        if self.lingering is not None:
            self.lingering.feed_eof()
            self.lingering = None

    def data_received(self, data: bytes) -> None:
        """Arm the deadline on a request's first byte, then parse; answer directly if we can.

        aiohttp's request loop waits on ``_waiter`` for parsed requests. The direct path
        parses with it asleep, then either answers the one request itself or wakes it.
        """
        if self.in_handler:
            self.arrived += len(data)
        elif not self.deadline:
            self.deadline = self.loop.time() + self.guard.request_timeout
        if self.pending:  # queued behind the direct answer under way, in order
            self._parse_quietly(data)
            return
        waiter = self._waiter
        if (
            self.direct is None
            or not data
            or self.in_handler
            or self._messages
            or waiter is None
            or waiter.done()
            or self.writing_paused  # the client is not reading: the general path waits
        ):
            super().data_received(data)
            return
        self._parse_quietly(data)
        messages = self._messages
        if len(messages) == 1 and not self._upgraded and self._serve_direct(self.direct):
            return
        if messages and not waiter.done():
            waiter.set_result(None)

    def _parse_quietly(self, data: bytes) -> None:
        """Let aiohttp parse ``data`` into its queue without waking its request loop."""
        waiter, self._waiter = self._waiter, None
        try:
            super().data_received(data)
        finally:
            self._waiter = waiter

    def _serve_direct(self, api: HttpApi) -> bool:
        """Answer the one queued request directly, if the API takes it."""
        message, payload = self._messages[0]
        if not isinstance(message, RawRequestMessage):  # a request that failed to parse
            return False
        taken = api.direct_request(self, message, payload)
        if taken is None:
            return False
        principal, key = taken
        self._messages.popleft()
        if isinstance(principal, StashError):
            api.direct_refusal(self, message.version, principal)
        elif key:
            api.direct_recall(self, message.version, principal, key)
        else:
            api.direct_stash(self, message.version, principal, payload.read_nowait(-1))
        if self._parser is not None:  # aiohttp's count of requests in its queue
            self._parser.message_consumed()
        return True

    def answer(self, reply: Reply | None, version: HttpVersion) -> None:
        """Send a direct answer (None: a failure of our own, a 500 that ends the connection).

        Then serve what arrived meanwhile, as aiohttp's request loop would.
        """
        self.pending = False
        keep_alive = reply is not None and not self.peer_eof
        if reply is None:
            reply = Reply(500, INTERNAL_ERROR)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(reply.render(version, keep_alive=keep_alive))
        self.leave()
        if self.settled is not None and not self.settled.done():
            self.settled.set_result(None)
        if not keep_alive:
            self.force_close()
            return
        # What aiohttp's loop does after an answer: the idle timeout counts from now.
        self._keepalive = True
        close_time = self.loop.time() + self._keepalive_timeout
        self._next_keepalive_close_time = close_time
        if self._keepalive_handle is None and self._keepalive_timeout:
            self._keepalive_handle = self.loop.call_at(close_time, self._process_keepalive)
        waiter = self._waiter
        if self._messages and waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _process_keepalive(self) -> None:
        """The idle check of aiohttp, except that a connection whose answer is pending is busy.

        aiohttp's loop stops this timer while a handler runs; a direct answer waiting for
        its batch leaves that loop waiting, which the check would take for idleness.
        :meth:`answer` starts the idle time again and sets the timer.
        """
        if self.pending:
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp's signature
        """Let a direct answer under way go out first, within the same time limit."""
        if self.pending:
            self.settled = self.loop.create_future()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self.settled
        await super().shutdown(timeout)

    def eof_received(self) -> bool:  # type: ignore[override]  # asyncio: True keeps it open
        """A half-close: keep the socket open for the answer if a request is under way.

        A body that ends before its Content-Length then gets its 400 instead of a reset.
        """
        self.peer_eof = True
        if self.body is not None:
            self.body.feed_eof()
        if self.lingering is not None:  # answered already: nothing more will come
            self.stop_lingering()
            return False
        return self.in_handler or bool(self.deadline)

    def enter(self) -> None:
        """A handler starts: the request's headers are complete."""
        self.in_handler = True
        self.arrived = 0
        if not self.deadline:  # pipelined behind the previous request
            self.deadline = self.loop.time() + self.guard.request_timeout

    def leave(self, *, draining: bool = False) -> None:
        """A handler is done: the next request's clock starts with its first byte.

        ``draining``: the answer went out before the body was read, and aiohttp drops the
        rest for up to LINGER seconds before closing; the request's own deadline still
        bounds that, so no client holds the connection past it.
        """
        self.in_handler = False
        self.draining = draining
        if not draining:
            self.deadline = self.loop.time() + self.guard.request_timeout if self.arrived else 0.0

    def expire(self, now: float) -> None:
        """Called by the watchdog: end a request that has not arrived in time."""
        if self.in_handler or not self.deadline or now < self.deadline:
            return
        transport = self.transport
        if self.draining:  # already answered: just stop listening
            transport = None
            self.stop_lingering()
        if transport is not None and not transport.is_closing():
            _, body = error_body(RequestTimeout(self.guard.request_timeout))
            head = (
                "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            transport.write(head.encode() + body)
        logger.info("http_request_timeout", seconds=self.guard.request_timeout)
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,  # noqa: ARG002 - aiohttp's text may quote the request
    ) -> web.StreamResponse:
        """Requests that are not HTTP, and failures of our own, in the one JSON shape.

        aiohttp's default text quotes the offending bytes; ours never does.
        """
        if request.writer.output_size > 0:  # pragma: no cover - our handlers return whole
            msg = "response already started"
            raise ConnectionError(msg)
        if status >= 500:
            logger.error("http_internal_error", exc_info=exc)
            resp = Reply(500, INTERNAL_ERROR)
        else:
            logger.info("http_malformed_request", error=type(exc).__name__)
            detail = (
                f"a request line or header is longer than {MAX_LINE} bytes"
                if type(exc).__name__ == "LineTooLong"
                else "request is not valid HTTP/1.1"
            )
            resp = error_response(BadRequest(detail))
        resp.force_close()
        return resp


class _Server(web.Server):
    """aiohttp's low-level server, making :class:`_Connection` protocols."""

    def __init__(
        self,
        handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
        guard: _Guard,
        direct: HttpApi | None,
        **kw: Any,  # noqa: ANN401 - aiohttp's protocol options
    ) -> None:
        super().__init__(handler, **kw)
        self.guard = guard
        self.direct = direct
        self.protocol_kw = kw

    def __call__(self) -> RequestHandler:
        return _Connection(
            self,
            loop=asyncio.get_running_loop(),
            guard=self.guard,
            direct=self.direct,
            **self.protocol_kw,
        )


class _Guard:
    """The watchdog: every WATCH_INTERVAL, end requests past their deadline."""

    def __init__(self, request_timeout: float) -> None:
        self.request_timeout = request_timeout
        self.connections: set[_Connection] = set()

    async def watch(self) -> None:
        """Run until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            now = loop.time()
            for conn in list(self.connections):
                conn.expire(now)


# -- the API ------------------------------------------------------------------------------
class HttpApi:
    """The request handler: routing, authentication, rate limits, and one method per endpoint.

    ``limiter`` and ``rate_of`` are the rate-limit hook: when both are given, every
    authenticated request costs one unit of ``rate_of(principal)`` for the principal's
    namespace (None: not limited).
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
        # On an inline store (memory) the batcher would run the operation at once anyway;
        # the two hot endpoints call the store directly and save an await per request.
        self.store = ctx.store
        self.inline = ctx.store.inline
        self.ctx = ctx
        self.backend = backend
        self.limiter = limiter
        self.rate_of = rate_of
        # Direct answers of this turn of the loop, sent together at its end.
        self._answers: list[tuple[_Connection, HttpVersion, Reply | None]] = []
        # Which kinds of keyring and limiter these are is fixed for the process: decided
        # here once, not per request. Remote ones are asked without blocking the loop.
        self.remote_keyring = bool(getattr(ctx.keyring, "remote", False))
        self.shared_limiter = limiter is not None and hasattr(limiter, "request")
        # path's first segment -> (takes an id, {method: handler})
        self.routes: dict[str, tuple[bool, dict[str, Any]]] = {
            "stash": (False, {"POST": self.stash, "GET": self.listing}),
            "recall": (True, {"GET": self.recall}),
            "update": (True, {"PATCH": self.update}),
            "forget": (True, {"DELETE": self.forget}),
        }

    async def __call__(self, request: BaseRequest) -> web.StreamResponse:
        """Serve one request; every refusal is a StashError turned into the JSON shape."""
        conn = cast("_Connection", request.protocol)
        conn.enter()
        try:
            resp = await self._dispatch(request, conn)
        except _Limited as exc:
            resp = error_response(exc, exc.headers)
        except StashError as exc:
            resp = error_response(exc)
        except BaseException:
            conn.leave()
            raise
        unread = not request.content.is_eof()
        conn.leave(draining=unread)
        if unread:
            conn.lingering = request.content
        if conn.peer_eof or unread:
            # The client has stopped sending, or sent a body we did not read: this
            # connection cannot carry another request.
            resp.force_close()
        return resp

    async def _dispatch(self, request: BaseRequest, conn: _Connection) -> web.StreamResponse:
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
        if self.shared_limiter:
            rate = await self.admit_shared(principal)
        else:
            rate = self.admit(principal)
        resp: web.StreamResponse = await handler(request, principal, key, conn)
        if rate is not None:
            resp.headers.update(rate)
        return resp

    # -- who is asking ------------------------------------------------------------------
    def authenticate(self, request: BaseRequest) -> Principal:
        """The principal of ``X-API-KEY`` or ``Authorization: Bearer``, by RESP AUTH's rules."""
        key = self._credentials(request)
        if key is None:
            return self._anonymous()
        return self._checked(self.keyring.authenticate(None, key), lambda: request.remote)

    async def authenticate_async(self, request: BaseRequest) -> Principal:
        """:meth:`authenticate` with a keyring that looks keys up in Redis."""
        key = self._credentials(request)
        if key is None:
            return self._anonymous()
        remote = cast("RemoteKeyring", self.keyring)
        return self._checked(await remote.authenticate_async(None, key), lambda: request.remote)

    def _credentials(self, request: BaseRequest) -> bytes | None:
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
        key = headers.get("X-API-KEY")
        auth = headers.get("Authorization")
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

    def admit(self, principal: Principal) -> dict[str, str] | None:
        """The one rate-limit check: the RateLimit fields to send, or 429 when over.

        Fields follow the IETF draft (draft-ietf-httpapi-ratelimit-headers): the policy
        ``q`` requests per ``w`` seconds, and ``r`` remaining with ``t`` seconds until the
        quota is whole again; a refusal adds ``Retry-After`` in whole seconds.
        """
        if self.limiter is None or self.rate_of is None:
            return None
        rate = self.rate_of(principal)
        if rate is None:
            return None
        limiter = cast("RateLimiter", self.limiter)
        return _rate_fields(rate, limiter.acquire(principal.namespace, rate))

    async def admit_shared(self, principal: Principal) -> dict[str, str] | None:
        """:meth:`admit` with a limiter kept in Redis, asked without blocking the loop."""
        if self.limiter is None or self.rate_of is None:
            return None
        rate = self.rate_of(principal)
        if rate is None:
            return None
        limiter = cast("SharedLimiter", self.limiter)
        grant = await limiter.take(principal.namespace, rate)
        return _rate_fields(rate, grant.decision)

    # -- the direct path ------------------------------------------------------------------
    # aiohttp gives every request a task, a request object, a payload stream and a
    # response writer, which together cost more than everything Stash does for a POST
    # /stash or a GET /recall. Those two, when they arrive whole on an idle connection,
    # are therefore answered from the connection's data_received: the same checks, the
    # same operation, the same rate limit, the same bytes out, refusals included. Whatever
    # could make the answer differ (another route, a body still arriving or too large, an
    # id to unquote, a refused key, a blocked address, a limiter in Redis) is left to the
    # general path above, before anything has changed; tests/test_http_direct.py holds
    # the two to the same answers.

    def direct_request(
        self, conn: _Connection, message: RawRequestMessage, payload: StreamReader
    ) -> tuple[Principal | StashError, bytes] | None:
        """The sender and id of a request the direct path answers (b"": a POST /stash).

        The sender may be the refusal of its key, to be answered as such. None: the
        general path answers; that is decided before any side effect, so it still can.
        """
        if message.should_close or self.remote_keyring:
            return None
        method, path, headers = message.method, message.path, message.headers
        key = b""
        if method == "POST" and path == "/stash":
            length = headers.get("Content-Length")
            if (
                length is None  # chunked
                or not (length.isascii() and length.isdigit())
                or int(length) != payload.total_bytes
                or not payload.is_eof()
                or "Content-Encoding" in headers
            ):
                return None
        elif method == "GET" and path.startswith("/recall/"):
            # An id as Stash makes them; anything to unquote or decode is the general path's.
            memory_id = path[8:]
            if (
                not memory_id
                or not memory_id.isascii()
                or "/" in memory_id
                or "?" in memory_id
                or "%" in memory_id
                or payload.total_bytes
                or not payload.is_eof()
            ):
                return None
            key = memory_id.encode()
        else:
            return None
        throttle = self.throttle
        if throttle is not None and throttle.blocking():
            return None
        try:
            sent = self._key_of(headers)
            if sent is None:
                p = self._anonymous()
            else:
                p = self._checked(
                    self.keyring.authenticate(None, sent), lambda: _remote(conn.peername)
                )
        except StashError as exc:  # as the general path refuses it
            return exc, key
        if payload.total_bytes > p.limits.max_payload:
            return None  # refused before the body is read, by the general path
        if self.shared_limiter and self.rate_of is not None and self.rate_of(p) is not None:
            return None  # a limiter in Redis is asked without blocking: the general path
        return p, key

    def direct_stash(
        self, conn: _Connection, version: HttpVersion, p: Principal, raw: bytes
    ) -> None:
        """Admit, check the body, store it, and answer (refusals included)."""

        def make() -> Create:
            return self.stash_op(p, raw)

        self._direct(conn, version, p, make, lambda op, key: self.created(p, op, key))

    def direct_recall(
        self, conn: _Connection, version: HttpVersion, p: Principal, key: bytes
    ) -> None:
        """Admit, read the id, and answer."""

        def make() -> Op:
            return self.service.get(p, key)

        self._direct(conn, version, p, make, lambda _op, entry: self.recalled(key, entry))

    def _direct(
        self,
        conn: _Connection,
        version: HttpVersion,
        p: Principal,
        make: Callable[[], Any],
        reply: Callable[[Any, Any], Reply],
    ) -> None:
        """Admit, run ``make()``'s operation, and answer ``reply(op, result)`` or the error.

        As on the general path: a refusal by the rate limit is a 429 with its fields, any
        other refusal has none, and a success carries the RateLimit fields.
        """
        conn.enter()
        conn.pending = True
        try:
            rate = self.admit(p)
            op = make()
        except _Limited as exc:
            self._send_later(conn, version, error_response(exc, exc.headers))
            return
        except StashError as exc:
            self._send_later(conn, version, error_response(exc))
            return
        except Exception:
            logger.exception("http_internal_error")
            self._send_later(conn, version, None)
            return
        store = self.store
        if not (self.inline or (store.inline_reads and not op.writes)):
            self.batcher.submit(
                [op],
                lambda results: conn.answer(_answer_of(reply, op, results[0], rate), version),
            )
            return
        result: object
        try:
            result = store.run(op) if self.inline else store.read_now(op)
        except StashError as exc:
            result = exc
        except Exception:
            logger.exception("http_internal_error")
            result = _FAILED
        self._send_later(conn, version, _answer_of(reply, op, result, rate))

    def direct_refusal(self, conn: _Connection, version: HttpVersion, exc: StashError) -> None:
        """Answer a request whose key was refused (401) or could not be checked (503)."""
        conn.enter()
        conn.pending = True
        self._send_later(conn, version, error_response(exc))

    def _send_later(self, conn: _Connection, version: HttpVersion, reply: Reply | None) -> None:
        # As in Redis, answers go out once the reads of this turn of the loop have been
        # handled, not one by one as each request is: measured, writing each answer at
        # once cost a third more CPU per request (every write wakes the client again).
        answers = self._answers
        answers.append((conn, version, reply))
        if len(answers) == 1:
            conn.loop.call_soon(self._send_answers)

    def _send_answers(self) -> None:
        answers, self._answers = self._answers, []
        for conn, version, reply in answers:
            conn.answer(reply, version)

    # -- bodies ---------------------------------------------------------------------------
    async def read_body(self, request: BaseRequest, conn: _Connection, limit: int) -> bytes:
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
            if request.headers.get("Expect", "").lower() == "100-continue":
                # The client waits for this before sending a large body (curl does for
                # bodies over 1 MiB); a body over the limit was refused above instead.
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            got = bytearray()
            conn.body = content
            if conn.peer_eof:
                content.feed_eof()
            try:
                async with asyncio.timeout_at(conn.deadline):
                    while True:
                        chunk = await content.read(limit + 1 - len(got))
                        if not chunk:
                            break
                        got += chunk
                        if len(got) > limit:
                            raise BodyTooLarge(limit, length)
            except TimeoutError:
                if length is not None:
                    raise IncompleteBody(length, len(got)) from None
                raise RequestTimeout(conn.guard.request_timeout) from None
            except (ConnectionError, ValueError) as exc:
                # aiohttp reports a malformed chunked encoding as a ValueError subclass.
                raise BadRequest("request body is malformed") from exc
            finally:
                conn.body = None
            body = bytes(got)
        if length is not None and len(body) != length:
            raise IncompleteBody(length, len(body))
        return body

    # -- endpoints -------------------------------------------------------------------------
    async def healthz(self) -> web.StreamResponse:
        """200 when the store runs operations; 503 (unavailable) when it does not."""
        await self.batcher.run(self.service.ping())
        return _json(200, {"status": "ok", "version": __version__, "backend": self.backend})

    async def stash(
        self, request: BaseRequest, p: Principal, _key: bytes, conn: _Connection
    ) -> web.StreamResponse:
        """POST /stash {"data": any, "ttl": seconds?} -> 201 with the new id."""
        op = self.stash_op(p, await self.read_body(request, conn, p.limits.max_payload))
        key: bytes = self.store.run(op) if self.inline else await self.batcher.run(op)
        return self.created(p, op, key)

    def stash_op(self, p: Principal, raw: bytes) -> Create:
        """The operation a POST /stash body asks for; refusals raise, and change nothing."""
        body = _object(raw, STASH_FIELDS)
        if "data" not in body:
            raise InvalidRequest("data is required", field="data")
        return self.service.stash_value(p, body["data"], _integer(body, "ttl"))

    def created(self, p: Principal, op: Create, key: bytes) -> Reply:
        """The 201 of a stored POST /stash (and its log event)."""
        memory_id = key.decode()
        if self.ctx.log_writes:
            logger.info(
                "stash_created",
                door="http",
                namespace=p.namespace,
                id=memory_id,
                ttl_seconds=seconds_left(op.expires_at, self.service.clock()),
                payload_bytes=len(op.value),
            )
        ttl = seconds_left(op.expires_at, self.service.clock())
        # New ids are base62 (or hex), so they need no JSON escaping.
        reply = f'{{"memory_id":"{memory_id}","ttl":{ttl},"expires_at":"{rfc3339(op.expires_at)}"}}'
        return Reply(201, reply.encode(), f'ETag: "1"\r\nLocation: /recall/{memory_id}\r\n')

    async def recall(
        self, request: BaseRequest, p: Principal, key: bytes, conn: _Connection
    ) -> web.StreamResponse:
        """GET /recall/{id} -> the data with its TTL, expiry and version."""
        del request, conn
        get = self.service.get(p, key)
        entry: Entry | None = self.store.run(get) if self.inline else await self.batcher.run(get)
        return self.recalled(key, entry)

    def recalled(self, key: bytes, entry: Entry | None) -> Reply:
        """The 200 of a GET /recall, or the 404 (or 409) it raises."""
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
        return Reply(200, body, f'ETag: "{entry.version}"\r\n')

    async def update(
        self, request: BaseRequest, p: Principal, key: bytes, conn: _Connection
    ) -> web.StreamResponse:
        """PATCH /update/{id} {"data"?, "merge"?, "extra_seconds"?}, If-Match -> new TTL."""
        if_version = if_match_version(request.headers.get("If-Match"))
        body = _object(await self.read_body(request, conn, p.limits.max_payload), UPDATE_FIELDS)
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
        entry: Entry | None = await self.batcher.run(op)
        if entry is None:
            raise NotFound
        if self.ctx.log_writes:
            logger.info(
                "stash_updated",
                door="http",
                namespace=p.namespace,
                id=_text(key),
                ttl_seconds=seconds_left(entry.expires_at, self.service.clock()),
                payload_bytes=len(entry.value),
            )
        return _json(
            200,
            {
                "memory_id": _text(key),
                "ttl_remaining": seconds_left(entry.expires_at, self.service.clock()),
                "expires_at": rfc3339(entry.expires_at),
                "version": entry.version,
            },
            f'ETag: "{entry.version}"\r\n',
        )

    async def forget(
        self, request: BaseRequest, p: Principal, key: bytes, conn: _Connection
    ) -> web.StreamResponse:
        """DELETE /forget/{id} -> 204, or 404 when there was nothing to forget."""
        del request, conn
        removed: int = await self.batcher.run(self.service.delete(p, [key]))
        if not removed:
            raise NotFound
        if self.ctx.log_writes:
            logger.info("stash_forgotten", door="http", namespace=p.namespace, id=_text(key))
        return web.Response(status=204)

    async def listing(
        self, request: BaseRequest, p: Principal, _key: bytes, conn: _Connection
    ) -> web.StreamResponse:
        """GET /stash?cursor=&limit= -> a page of ids with TTL, size and version, no data."""
        del conn
        query = request.query
        cursor = _query_int(query.get("cursor"), "cursor", 0)
        limit = _query_int(query.get("limit"), "limit", PAGE_DEFAULT)
        nxt, items = await self.batcher.run(self.service.page(p, cursor, limit))
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
        self, api: HttpApi, *, request_timeout: float = REQUEST_TIMEOUT, direct: bool = True
    ) -> None:
        """``direct=False`` answers every request through aiohttp's request loop (for tests)."""
        self.api = api
        self.direct = direct and DIRECT_SUPPORTED
        self.guard = _Guard(request_timeout)
        self.runner: web.ServerRunner | None = None
        self.watchdog: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and serve; returns the bound port (useful with port 0)."""
        server = _Server(
            self.api,
            self.guard,
            self.api if self.direct else None,
            access_log=None,  # write events are logged by the handlers, never request lines
            keepalive_timeout=IDLE_TIMEOUT,
            lingering_time=LINGER,
            # A compressed body is refused, never inflated: a small gzip can expand past
            # any payload limit before a handler sees a byte of it.
            auto_decompress=False,
            max_line_size=MAX_LINE,
            max_field_size=MAX_LINE,
        )
        self.runner = web.ServerRunner(
            server, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        self.port = self.runner.addresses[0][1]
        self.watchdog = asyncio.get_running_loop().create_task(self.guard.watch())
        return self.port

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), close connections."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.watchdog is not None:
            self.watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.watchdog
            self.watchdog = None
