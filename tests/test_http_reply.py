"""stashd.httpreply.Reply: the bytes web.Response would send, in one write, and keep-alive kept."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from stashd.httpreply import Reply
from stashd.tenancy import Limits, OpenKeyring
from tests.support.http import sidecar, split_response

if TYPE_CHECKING:
    from aiohttp.web_request import BaseRequest

BODY = b'{"memory_id":"abcdefgh","ttl":600}'
RATE = {"RateLimit-Policy": '"default";q=2;w=1', "RateLimit": '"default";r=1;t=1'}


async def _handler(request: BaseRequest) -> web.StreamResponse:
    """/reply/... answers with a Reply, /response/... with the web.Response it replaces."""
    kind, variant = request.path.strip("/").split("/")
    resp: web.StreamResponse
    if kind == "reply":
        resp = Reply(201, BODY, 'ETag: "1"\r\nLocation: /recall/abcdefgh\r\n')
    else:
        resp = web.Response(
            body=BODY,
            status=201,
            content_type="application/json",
            headers={"ETag": '"1"', "Location": "/recall/abcdefgh"},
        )
    if variant == "limited":
        resp.headers.update(RATE)
    elif variant == "closing":
        resp.force_close()
    return resp


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[int]:
    runner = web.ServerRunner(web.Server(_handler), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def _exchange(port: int, request: bytes) -> tuple[bytes, bool]:
    """The response to ``request`` on a fresh connection, and whether the server kept it open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        _, headers, _ = split_response(head)
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
        try:
            more = await asyncio.wait_for(reader.read(1), 0.3)
        except TimeoutError:
            kept = True
        else:
            assert more == b""
            kept = False
        return head + body, kept
    finally:
        writer.close()


def _dateless(raw: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", raw)


@pytest.mark.parametrize("variant", ["plain", "limited", "closing"])
@pytest.mark.parametrize(
    ("version", "connection"),
    [
        ("1.1", ""),
        ("1.1", "Connection: close\r\n"),
        ("1.1", "Connection: keep-alive\r\n"),
        ("1.0", ""),
        ("1.0", "Connection: keep-alive\r\n"),
    ],
)
async def test_the_same_bytes_and_connection_as_web_response(
    variant: str, version: str, connection: str
) -> None:
    async with _server() as port:
        answers = []
        for kind in ("reply", "response"):
            request = f"GET /{kind}/{variant} HTTP/{version}\r\nHost: t\r\n{connection}\r\n"
            raw, kept = await _exchange(port, request.encode())
            answers.append((_dateless(raw), kept))
        assert answers[0] == answers[1]
        raw, kept = answers[0]
        assert raw.startswith(f"HTTP/{version} 201 Created\r\n".encode())
        assert raw.endswith(b"\r\n\r\n" + BODY)
        assert b"Content-Type: application/json\r\n" in raw
        asked_to_close = "close" in connection or (version == "1.0" and not connection)
        assert kept == (variant != "closing" and not asked_to_close)


async def test_the_sidecar_answers_keep_their_fields_and_connection() -> None:
    """POST and GET over one kept-alive connection: status, fields, Date and Server."""
    async with sidecar() as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        try:
            body = b'{"data": {"a": 1}}'
            writer.write(
                b"POST /stash HTTP/1.1\r\nHost: t\r\nX-API-KEY: k\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            status, headers, _ = split_response(head)
            created = await reader.readexactly(int(headers["content-length"]))
            memory_id = created.split(b'"memory_id":"')[1].split(b'"')[0].decode()
            assert status == 201
            assert head.startswith(b"HTTP/1.1 201 Created\r\n")
            assert headers["etag"] == '"1"'
            assert headers["location"] == f"/recall/{memory_id}"
            assert headers["content-type"] == "application/json"
            assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", headers["date"])
            assert headers["server"].startswith("Python/")
            assert "connection" not in headers
            writer.write(
                f"GET /recall/{memory_id} HTTP/1.1\r\nHost: t\r\nX-API-KEY: k\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            rest = await asyncio.wait_for(reader.read(), 5)  # read to the server's close
            status, headers, recalled = split_response(rest)
            assert status == 200
            assert headers["connection"] == "close"
            assert headers["etag"] == '"1"'
            assert recalled.startswith(b'{"memory_id":"%s","data":{"a":1},' % memory_id.encode())
        finally:
            writer.close()


async def test_a_large_answer_reaches_a_slow_reader_whole() -> None:
    """A recall far over the socket buffer waits for the client instead of dropping bytes."""
    limits = Limits(max_payload=4_000_000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000)
    async with sidecar(keyring=OpenKeyring(limits)) as s:
        data = "x" * 3_000_000
        async with s.session.post("/stash", json={"data": data}, headers={"X-API-KEY": "k"}) as r:
            memory_id = (await r.json())["memory_id"]
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port, limit=2**16)
        try:
            writer.write(
                f"GET /recall/{memory_id} HTTP/1.1\r\nHost: t\r\nX-API-KEY: k\r\n\r\n".encode()
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(split_response(head)[1]["content-length"])
            await asyncio.sleep(0.3)  # the server's write is blocked on us by now
            got = await asyncio.wait_for(reader.readexactly(length), 10)
            assert got.endswith(b'"version":1}')
            assert f'"data":"{data}"'.encode() in got
        finally:
            writer.close()


def test_a_reply_sets_what_stream_response_sets() -> None:
    """Reply sets StreamResponse's attributes itself: one added by aiohttp fails here."""
    plain = web.StreamResponse(status=201)
    reply = Reply(201, b"{}")
    assert set(vars(plain)) <= set(vars(reply))
    assert (reply.status, reply.reason, reply.keep_alive) == (201, "Created", None)
    assert not reply.headers
    assert Reply(200, b"{}").reason == web.StreamResponse(status=200).reason
    assert Reply(422, b"{}").reason == web.StreamResponse(status=422).reason
