"""The HTTP door's leases: POST, PATCH, DELETE and GET on ``/lease/{key}``, onto the service."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from stashd.errors import InvalidRequest, LeaseHeld, LeaseLost, NotFound
from stashd.http.answer import json_response
from stashd.http.request import integer, json_object
from stashd.ops import held_lease
from stashd.service import rfc3339, seconds_left

if TYPE_CHECKING:
    from stashd.http.api import HttpApi
    from stashd.http.protocol import Connection
    from stashd.ops import LeaseAnswer, LeaseState
    from stashd.types import Entry, Principal

#: The fields each lease request's body may have.
CLAIM_FIELDS: Final = frozenset({"owner", "ttl"})
RENEW_FIELDS: Final = frozenset({"owner", "token", "ttl"})
RELEASE_FIELDS: Final = frozenset({"owner", "token"})


def _owner(body: dict[str, Any]) -> bytes:
    """The ``owner`` field: a string (its length is the memory service's rule)."""
    owner = body.get("owner")
    if type(owner) is not str:
        raise InvalidRequest("owner is required and must be a string", field="owner")
    return owner.encode()


def _ttl(body: dict[str, Any]) -> int:
    """The ``ttl`` field, required: whole seconds."""
    ttl = integer(body, "ttl")
    if ttl is None:
        raise InvalidRequest("ttl is required", field="ttl")
    return ttl


def _token(body: dict[str, Any]) -> int | None:
    """The ``token`` field, optional: a token the claim returned (any of the owner's if absent)."""
    if "token" not in body:
        return None
    token = body["token"]
    if type(token) is not int or token < 1:
        raise InvalidRequest("token must be a token the claim returned", field="token")
    return token


class LeaseRoutes:
    """The handlers of ``/lease/{key}``, on the API's service, batcher and body reader."""

    def __init__(self, api: HttpApi, door: str) -> None:
        self.api = api
        # The door's name in the events of its writes, the rest of the HTTP API's.
        self.door = door

    def methods(self) -> dict[str, Any]:
        """Method -> handler, for the API's route table."""
        return {
            "POST": self.claim,
            "PATCH": self.renew,
            "DELETE": self.release,
            "GET": self.info,
        }

    def _lease(self, key: bytes, lease: LeaseState | None, status: int) -> web.Response:
        """The answer that shows a held lease: its key, holder, token and TTL."""
        assert lease is not None, "a granted claim or renew answers with the lease written"
        assert lease.owner is not None, "a lease that is shown is held"
        owner = lease.owner.decode("utf-8", "replace")
        return json_response(
            status,
            {
                "key": key.decode("utf-8", "replace"),
                "owner": owner,
                "token": lease.token,
                "ttl_remaining": seconds_left(lease.expires_at, self.api.service.clock()),
                "expires_at": rfc3339(lease.expires_at),
            },
        )

    async def claim(
        self, request: web.BaseRequest, p: Principal, key: bytes, conn: Connection
    ) -> web.StreamResponse:
        """POST /lease/{key} {"owner", "ttl"} -> 201 with the token; 409 while held."""
        body = json_object(await self.api.body(request, p, conn), CLAIM_FIELDS)
        op = self.api.service.lease_claim(p, key, _owner(body), _ttl(body))
        answer: LeaseAnswer = await self.api.batcher.run(op, self.door)
        if not answer.granted:
            assert answer.lease is not None
            left = max(answer.lease.expires_at - self.api.service.clock(), 0)
            raise LeaseHeld(left)
        return self._lease(key, answer.lease, 201)

    async def renew(
        self, request: web.BaseRequest, p: Principal, key: bytes, conn: Connection
    ) -> web.StreamResponse:
        """PATCH /lease/{key} {"owner", "token"?, "ttl"} -> 200; 409 when not held."""
        body = json_object(await self.api.body(request, p, conn), RENEW_FIELDS)
        op = self.api.service.lease_renew(p, key, _owner(body), _token(body), _ttl(body))
        answer: LeaseAnswer = await self.api.batcher.run(op, self.door)
        if not answer.granted:
            raise LeaseLost
        return self._lease(key, answer.lease, 200)

    async def release(
        self, request: web.BaseRequest, p: Principal, key: bytes, conn: Connection
    ) -> web.StreamResponse:
        """DELETE /lease/{key} {"owner", "token"?} -> 204; 409 when not held."""
        body = json_object(await self.api.body(request, p, conn), RELEASE_FIELDS)
        op = self.api.service.lease_release(p, key, _owner(body), _token(body))
        answer: LeaseAnswer = await self.api.batcher.run(op, self.door)
        if not answer.granted:
            raise LeaseLost
        return web.Response(status=204)

    async def info(
        self, request: web.BaseRequest, p: Principal, key: bytes, conn: Connection
    ) -> web.StreamResponse:
        """GET /lease/{key} -> the holder, token and TTL; 404 when no one holds it."""
        del request, conn
        entry: Entry | None = await self.api.batcher.run(self.api.service.lease_info(p, key))
        lease = held_lease(entry)
        if lease is None:
            raise NotFound
        return self._lease(key, lease, 200)
