"""The HTTP API: routes, callers, rate limits, and one handler per endpoint onto the memory service.

Each request is authenticated by the same keyring as RESP ``AUTH``, rate limited in one
place (:meth:`HttpApi.admit`), turned into an operation by :class:`MemoryService` and run
through the :class:`Batcher` the RESP connections share, so both doors land in the same
batches and obey the same rules. Nothing here decides what data means: this module
decides how requests and replies look.

Seven fixed paths are routed by a dict (:meth:`HttpApi.handle`), after three public ones
that need no key (``PUBLIC``), and every answer is a ``web.Response`` the handler writes
itself. Its ``write_eof`` waits while the client is
behind in reading, and aiohttp stops reading a connection while 32 of its requests wait
to be handled (``MAX_MSG_QUEUE_SIZE``, aiohttp 3.14.1), so a client that pipelines and
never reads holds a bounded share of the server: a socket buffer, one answer, 32 parsed
requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import unquote_to_bytes

from aiohttp import web

from stashd import log
from stashd._version import __version__
from stashd.cost import body_cost, op_debt
from stashd.errors import (
    BadExtend,
    BadRequest,
    InvalidRequest,
    MethodNotAllowed,
    NoAuth,
    NoRoute,
    NotFound,
    RateLimited,
    StashError,
    WrongPass,
)
from stashd.http import docs
from stashd.http.answer import ENCODE, json_response, response
from stashd.http.errors import error_response, internal_error
from stashd.http.leases import LeaseRoutes
from stashd.http.mcpdoor import McpDoor
from stashd.http.protocol import Wire
from stashd.http.request import (
    STASH_FIELDS,
    UPDATE_FIELDS,
    if_match_version,
    integer,
    json_object,
    query_bytes,
    query_int,
    read_body,
)
from stashd.http.watch import open_stream
from stashd.jsontext import check_stored
from stashd.service import PAGE_DEFAULT, rfc3339, seconds_left

if TYPE_CHECKING:
    from collections.abc import Callable

    from multidict import CIMultiDictProxy

    from stashd.batch import Batcher
    from stashd.commands.connection import RemoteKeyring
    from stashd.http.protocol import Connection
    from stashd.ops import Create
    from stashd.ratelimit import Decision, Rate, RateLimiter, SharedLimiter
    from stashd.server import ServerContext
    from stashd.service import MemoryService
    from stashd.tenancy import AuthThrottle, Keyring
    from stashd.types import Entry, Principal

logger = log.get("stashd.http")

#: How this door's writes are marked in their log events (stashd.events).
DOOR: Final = "http"
#: Paths every caller may GET without a key: the index, the health check, the contract.
PUBLIC: Final = frozenset({"", "healthz", "openapi.yaml"})
#: Bytes of JSON-RPC around a tool call's value: an /mcp request body may be this much
#: larger than twice the caller's payload limit (a value sent as JSON text in a string,
#: ``data_json``, can double by escaping). The limit itself applies to the value.
MCP_ENVELOPE: Final = 64 * 1024


def mcp_body_limit(max_payload: int) -> int:
    """The largest /mcp request body a caller with this payload limit may send."""
    return 2 * max_payload + MCP_ENVELOPE


def _text(key: bytes) -> str:
    # Ids made over HTTP are ASCII; a RESP key that is not UTF-8 is shown with U+FFFD.
    return key.decode("utf-8", "replace")


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
        mcp: bool = False,
        loopback: bool = True,
    ) -> None:
        self.service: MemoryService = ctx.service
        self.keyring: Keyring = ctx.keyring
        self.throttle: AuthThrottle | None = ctx.auth_throttle
        batcher = ctx.batcher
        assert batcher is not None
        self.batcher: Batcher = batcher
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
            "lease": (True, LeaseRoutes(self, DOOR).methods()),
            "watch": (False, {"GET": self.watch}),
        }
        # The MCP endpoint (stashd.mcp.endpoint), when the daemon serves it. Stateless, it
        # serves POST only: a GET would open a server stream that never carries anything
        # (there is no session to speak on) and a DELETE ends no session, so both are the
        # 405 the MCP specification provides for them.
        self.mcp_door: McpDoor | None = None
        if mcp:
            self.mcp_door = McpDoor(ctx.service, batcher, loopback=loopback)
            self.routes["mcp"] = (False, {"POST": self.mcp})

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Serve one request and write its answer; every refusal is a StashError's JSON shape.

        The answer is written here rather than by aiohttp once this returns (a prepared,
        finished response is returned, as aiohttp's low-level docs allow), so every byte
        of it goes out while the connection knows the API is answering (see
        :class:`Wire`); ``write_eof`` waits while the client is behind in reading.
        """
        wire = request.transport
        if not isinstance(wire, Wire):  # the client has gone: aiohttp drops what comes back
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
                resp = internal_error()
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

    async def _dispatch(self, request: web.BaseRequest, conn: Connection) -> web.StreamResponse:
        path = request.raw_path
        if path[:1] != "/":  # absolute-form target
            path = request.rel_url.raw_path
        cut = path.find("?")
        if cut >= 0:
            path = path[:cut]
        parts = path.split("/")
        if len(parts) == 2 and parts[1] in PUBLIC:
            # No key and no rate limit: what these say is the same for every caller.
            if request.method != "GET":
                raise MethodNotAllowed(request.method, ("GET",))
            if parts[1] == "healthz":
                return await self.healthz()
            if parts[1] == "openapi.yaml":
                return docs.openapi()
            return docs.index(request.headers.get("Accept", ""))
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
            rate = await self.admit_shared(principal, request)
        else:
            rate = self.admit(principal, request)
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

    def rate(self, principal: Principal) -> Rate | None:
        """The rate the principal's requests are limited by (None: not limited)."""
        if self.limiter is None or self.rate_of is None:
            return None
        return self.rate_of(principal)

    def admit(self, principal: Principal, request: web.BaseRequest) -> dict[str, str] | None:
        """The one rate-limit check: the RateLimit fields to send, or 429 when over.

        A request costs what :func:`~stashd.cost.body_cost` says of the body its
        Content-Length announces (a chunked one's bytes are charged once read, see
        :meth:`body`); that is worked out only for a principal who is limited.

        Fields follow the IETF draft (draft-ietf-httpapi-ratelimit-headers): the policy
        ``q`` units per ``w`` seconds, and ``r`` units remaining, after this request's
        cost, with ``t`` seconds until the quota is whole again; a refusal adds
        ``Retry-After`` in whole seconds.
        """
        rate = self.rate(principal)
        if rate is None:
            return None
        limiter = cast("RateLimiter", self.limiter)
        cost = body_cost(request.content_length or 0)
        return _rate_fields(rate, limiter.acquire(principal.namespace, rate, cost))

    async def admit_shared(
        self, principal: Principal, request: web.BaseRequest
    ) -> dict[str, str] | None:
        """:meth:`admit` with a limiter kept in Redis, asked without blocking the loop."""
        rate = self.rate(principal)
        if rate is None:
            return None
        limiter = cast("SharedLimiter", self.limiter)
        grant = await limiter.take(
            principal.namespace, rate, (body_cost(request.content_length or 0),)
        )
        return _rate_fields(rate, grant.decision)

    def charge(self, principal: Principal, units: int) -> None:
        """Charge work learned after a request ran to the principal's rate, as a debt."""
        if units:
            rate = self.rate(principal)
            if rate is not None:
                cast("RateLimiter | SharedLimiter", self.limiter).charge(
                    principal.namespace, rate, units
                )

    async def body(
        self, request: web.BaseRequest, p: Principal, conn: Connection, limit: int | None = None
    ) -> bytes:
        """The body, within ``limit`` bytes (the principal's payload limit by default).

        A body with a Content-Length was paid for by :meth:`admit` (it is read whole or
        refused); a chunked one's bytes are charged here, once they are known.
        """
        length = request.content_length
        raw = await read_body(
            request, conn, p.limits.max_payload if limit is None else limit, length
        )
        if length is None:
            self.charge(p, body_cost(len(raw)) - body_cost(0))
        return raw

    # -- endpoints -------------------------------------------------------------------------
    async def healthz(self) -> web.StreamResponse:
        """200 when the store runs operations; 503 (unavailable) when it does not."""
        await self.batcher.run(self.service.ping())
        mcp = "off" if self.mcp_door is None else self.mcp_door.state()
        body = {"status": "ok", "version": __version__, "backend": self.backend, "mcp": mcp}
        return json_response(200, body)

    async def stash(
        self, request: web.BaseRequest, p: Principal, _key: bytes, conn: Connection
    ) -> web.StreamResponse:
        """POST /stash {"data": any, "ttl": seconds?} -> 201 with the new id."""
        raw = await self.body(request, p, conn)
        op = self.stash_op(p, raw)
        key: bytes = await self.batcher.run(op, DOOR)
        return self.created(op, key)

    def stash_op(self, p: Principal, raw: bytes) -> Create:
        """The operation a POST /stash body asks for; refusals raise, and change nothing."""
        body = json_object(raw, STASH_FIELDS)
        if "data" not in body:
            raise InvalidRequest("data is required", field="data")
        return self.service.stash_value(p, body["data"], integer(body, "ttl"))

    def created(self, op: Create, key: bytes) -> web.Response:
        """The 201 of a stored POST /stash."""
        memory_id = key.decode()
        ttl = seconds_left(op.expires_at, self.service.clock())
        # New ids are base62 (or hex), so they need no JSON escaping.
        reply = f'{{"memory_id":"{memory_id}","ttl":{ttl},"expires_at":"{rfc3339(op.expires_at)}"}}'
        return response(201, reply.encode(), {"ETag": '"1"', "Location": f"/recall/{memory_id}"})

    async def recall(
        self, request: web.BaseRequest, p: Principal, key: bytes, conn: Connection
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
        memory_id = b'"' + key + b'"' if key.isalnum() else ENCODE(_text(key)).encode()
        tail = (
            f',"ttl_remaining":{seconds_left(entry.expires_at, self.service.clock())},'
            f'"expires_at":"{rfc3339(entry.expires_at)}","version":{entry.version}}}'
        ).encode()
        # The stored text is valid UTF-8 JSON, so it is embedded as it is, unparsed.
        body = b"".join((b'{"memory_id":', memory_id, b',"data":', value, tail))
        return response(200, body, {"ETag": f'"{entry.version}"'})

    async def update(
        self, request: web.BaseRequest, p: Principal, key: bytes, conn: Connection
    ) -> web.StreamResponse:
        """PATCH /update/{id} {"data"?, "merge"?, "extra_seconds"?}, If-Match -> new TTL."""
        if_version = if_match_version(request.headers.get("If-Match"))
        raw = await self.body(request, p, conn)
        body = json_object(raw, UPDATE_FIELDS)
        extra = integer(body, "extra_seconds")
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
        return json_response(
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
        self, request: web.BaseRequest, p: Principal, key: bytes, conn: Connection
    ) -> web.StreamResponse:
        """DELETE /forget/{id} -> 204, or 404 when there was nothing to forget."""
        del request, conn
        removed: int = await self.batcher.run(self.service.forget(p, [key]), DOOR)
        if not removed:
            raise NotFound
        return web.Response(status=204)

    async def mcp(
        self, request: web.BaseRequest, p: Principal, _key: bytes, conn: Connection
    ) -> web.StreamResponse:
        """/mcp: the MCP streamable HTTP endpoint, for the caller authenticated above."""
        door = self.mcp_door
        assert door is not None  # routed only when there is one
        raw = await self.body(request, p, conn, mcp_body_limit(p.limits.max_payload))
        endpoint = await door.endpoint()
        return await endpoint.handle(request, p, raw)

    async def watch(
        self, request: web.BaseRequest, p: Principal, _key: bytes, conn: Connection
    ) -> web.StreamResponse:
        """GET /watch?pattern= -> the namespace's keyspace events as Server-Sent Events."""
        del conn
        return open_stream(self.ctx.watch, request, p.namespace)

    async def listing(
        self, request: web.BaseRequest, p: Principal, _key: bytes, conn: Connection
    ) -> web.StreamResponse:
        """GET /stash?cursor=&limit=&pattern= -> a page of ids with TTL, size and version."""
        del conn
        query = request.query
        cursor = query_int(query.get("cursor"), "cursor", 0)
        limit = query_int(query.get("limit"), "limit", PAGE_DEFAULT)
        page = self.service.page(p, cursor, limit, query_bytes(request, "pattern"))
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
        return json_response(200, {"memories": memories, "next_cursor": str(nxt) if nxt else None})


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
