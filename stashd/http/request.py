"""A request's parts read and checked: its body within limits, JSON fields, If-Match, query."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl

from aiohttp import web

from stashd.errors import (
    BadRequest,
    BodyTooLarge,
    IncompleteBody,
    InvalidRequest,
    RequestTimeout,
    UnsupportedEncoding,
)
from stashd.jsontext import load_json
from stashd.ops import INT64_MAX

if TYPE_CHECKING:
    from aiohttp import StreamReader

    from stashd.http.protocol import Connection

#: The fields each JSON body may carry; anything else is refused, so a typo such as
#: ``extend`` does not silently do nothing.
STASH_FIELDS: Final = frozenset({"data", "ttl"})
UPDATE_FIELDS: Final = frozenset({"data", "merge", "extra_seconds"})


#: A field name plain enough to name back in an error: a short identifier.
_PLAIN_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


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


# The same grammar as If-Match's pattern in openapi.yaml (RFC 9110 entity tags,
# without commas inside, in a comma-separated list; a bare number is checked before).
_IF_MATCH: Final = re.compile(r'(W/)?"[^",]*"([ \t]*,[ \t]*(W/)?"[^",]*")*')
_ENTITY_TAG: Final = re.compile(r'(W/)?"([^",]*)"')


def integer(body: dict[str, Any], name: str) -> int | None:
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


def json_object(raw: bytes, allowed: frozenset[str]) -> dict[str, Any]:
    """The request body as a JSON object with only the allowed fields."""
    body = load_json(raw, "request body")
    if type(body) is not dict:
        raise InvalidRequest("request body must be a JSON object")
    for name in body:
        if name not in allowed:
            may = ", ".join(sorted(allowed))
            if _PLAIN_NAME.fullmatch(name):  # a typo such as "extend": say which field
                raise InvalidRequest(
                    f"unknown field {name}; the body may only have {may}", field=name
                )
            # Anything else is not echoed: no error body quotes what a client sent.
            raise InvalidRequest(f"unknown field; the body may only have {may}")
    return body


def query_int(raw: str | None, name: str, default: int) -> int:
    """A query parameter that must be a non-negative decimal integer."""
    if raw is None:
        return default
    if not raw.isdigit() or not raw.isascii() or len(raw) > 19:
        if name == "cursor":
            raise InvalidRequest("cursor must be a value returned as next_cursor", field=name)
        raise InvalidRequest(f"{name} must be a positive integer", field=name)
    return int(raw)


def query_bytes(request: web.BaseRequest, name: str) -> bytes | None:
    """A query parameter's bytes as sent, percent-decoded as an id in the path is; None if absent.

    The decoded ``request.query`` would put U+FFFD for bytes that are not UTF-8, so a
    pattern could not name a key written over RESP in another encoding.
    """
    # Latin-1 maps each byte to one character and back: the bytes come through whole.
    pairs = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True, encoding="latin-1")
    return next((value.encode("latin-1") for key, value in pairs if key == name), None)


async def read_body(
    request: web.BaseRequest, conn: Connection, limit: int, length: int | None
) -> bytes:
    """The body, refused before reading when its Content-Length (``length``) is over ``limit``.

    A body without a Content-Length (chunked) is read to ``limit + 1`` bytes at most.
    A body shorter than its Content-Length (the client half-closed, or stopped before
    the request deadline) is refused with 400 and changes nothing.
    """
    if length is not None and length > limit:
        raise BodyTooLarge(limit, length)
    encoding = request.headers.get("Content-Encoding")
    if encoding is not None and encoding.strip().lower() != "identity":
        raise UnsupportedEncoding
    content = request.content
    if content.is_eof():  # the whole body is already here: the common case
        body = content.read_nowait(-1)
    else:
        body = await read_rest(request, conn, content, limit, length)
    if length is not None and len(body) != length:
        raise IncompleteBody(length, len(body))
    return body


async def read_rest(
    request: web.BaseRequest,
    conn: Connection,
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
