"""Hostile HTTP on real sockets: oversized, lying, malformed and slow requests, and bystanders."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from stashd.http import server
from stashd.ops import Op
from stashd.store.sqlite import SQLiteStore
from tests.support.http import (
    LIMITS,
    Sidecar,
    exchange,
    post,
    raw_exchange,
    read_answer,
    sidecar,
    split_response,
)

LIMIT = LIMITS.max_payload  # 1000 bytes in these tests
NS = "default"  # no key: the default namespace


def _post(body: bytes, *, length: int | None = None, extra: str = "") -> bytes:
    """A POST /stash head with the given Content-Length (the body's own by default)."""
    n = len(body) if length is None else length
    return (
        f"POST /stash HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {n}\r\n{extra}\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader, timeout: float = 5.0) -> bytes:
    """One whole response (head and Content-Length body) from a stream."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    _, headers, _ = split_response(head)
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), timeout)
    return head + body


async def _healthy(s: Sidecar) -> None:
    async with s.session.get("/healthz") as resp:
        assert resp.status == 200


async def test_content_length_over_the_limit_is_refused_before_the_body() -> None:
    """Only the headers are sent: the 413 comes anyway, names both numbers, and closes."""
    async with sidecar() as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(_post(b"", length=2 * LIMIT))
        status, headers, body = split_response(await _read_response(reader))
        writer.close()
        assert status == 413
        assert headers["connection"] == "close"
        assert json.loads(body)["error"] == {
            "code": "payload_too_large",
            "message": f"request body is {2 * LIMIT} bytes, the limit is {LIMIT} bytes",
            "limit": LIMIT,
            "actual": 2 * LIMIT,
        }
        assert s.count(NS) == 0
        await _healthy(s)


async def test_chunked_body_is_read_to_the_limit_plus_one_byte() -> None:
    """limit+1 bytes and then silence get the 413 at once; exactly the limit is accepted."""
    async with sidecar() as s:
        head = b"POST /stash HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        over = b'{"data":"' + b"x" * (LIMIT - 10) + b'"}'
        assert len(over) == LIMIT + 1
        # The terminating chunk never comes: the server must decide on what it has read.
        writer.write(head + b"%x\r\n" % len(over) + over + b"\r\n")
        await writer.drain()
        status, _, body = split_response(await _read_response(reader, timeout=3))
        assert status == 413
        assert json.loads(body)["error"]["limit"] == LIMIT
        assert "actual" not in json.loads(body)["error"]
        writer.close()
        exact = over[:9] + over[10:]
        assert len(exact) == LIMIT
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (exact[:300], exact[300:]))
        raw = await raw_exchange(
            s.port,
            head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n") + chunks + b"0\r\n\r\n",
        )
        assert split_response(raw)[0] == 201
        assert s.count(NS) == 1


async def test_body_shorter_than_content_length_then_half_close_gets_400() -> None:
    """A liar that stops and shuts its side gets 400 incomplete_body, and nothing is stored."""
    async with sidecar() as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(_post(b'{"data": 1}', length=50))
        await writer.drain()
        writer.write_eof()
        raw = await asyncio.wait_for(reader.read(), 5)
        status, _, body = split_response(raw)
        assert status == 400
        assert json.loads(body)["error"] == {
            "code": "incomplete_body",
            "message": "request body has 11 bytes, its Content-Length announced 50",
            "expected": 50,
            "actual": 11,
        }
        writer.close()
        assert s.count(NS) == 0


async def test_body_shorter_than_content_length_then_silence_gets_400_at_the_deadline() -> None:
    """A liar that keeps the connection open is answered when the request deadline passes."""
    async with sidecar(request_timeout=1.0) as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        started = time.monotonic()
        writer.write(_post(b'{"data": 1}', length=50))
        raw = await _read_response(reader)
        assert time.monotonic() - started < 1.0 + WATCH_SLACK
        writer.close()
        status, _, body = split_response(raw)
        assert status == 400
        assert json.loads(body)["error"]["code"] == "incomplete_body"
        assert s.count(NS) == 0


async def test_body_longer_than_content_length_stores_nothing() -> None:
    """The bytes past Content-Length are no request: the answer is 400 and nothing is stored."""
    async with sidecar() as s:
        body = b'{"data": {"a": 1}, "ttl": 60}'
        for length in (12, 1):
            raw = await raw_exchange(s.port, _post(body, length=length))
            status, _, err = split_response(raw)
            assert status == 400
            assert json.loads(err)["error"]["code"] in ("invalid_json", "bad_request")
        assert s.count(NS) == 0
        await _healthy(s)


async def test_garbage_and_oversized_lines_get_json_400_without_echo() -> None:
    """Bytes that are not HTTP are answered in the JSON shape, quoting nothing."""
    async with sidecar() as s:
        marker = b"ZZ-secret-marker-ZZ"
        for payload in [
            marker + b" / HTTP/1.1\r\n\r\n",
            b"GET /" + marker * 500 + b" HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-Long: " + marker * 500 + b"\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00" + marker + b"\r\n\r\n",  # TLS hello
            # Both framings at once (request smuggling): refused, never guessed.
            b"POST /stash HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + marker,
        ]:
            raw = await raw_exchange(s.port, payload)
            status, headers, body = split_response(raw)
            assert status == 400, payload[:20]
            assert headers["content-type"] == "application/json"
            assert marker not in raw
            assert json.loads(body)["error"]["code"] == "bad_request"
        await _healthy(s)


@pytest.mark.slow
async def test_trickled_headers_and_bodies_are_cut_off_while_others_are_served() -> None:
    """Slow clients get 408/400 within the deadline; a normal client meanwhile is served."""
    timeout = 1.5
    async with sidecar(request_timeout=timeout) as s:

        async def trickle(head: bytes, slow: bytes) -> tuple[float, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            started = time.monotonic()
            chunks: list[bytes] = []

            async def collect() -> None:
                # Read as bytes arrive: asyncio raises the write side's broken pipe on the
                # next read, so whatever the server said must already be collected.
                with contextlib.suppress(ConnectionError):
                    while chunk := await reader.read(65536):
                        chunks.append(chunk)

            collecting = asyncio.create_task(collect())
            with contextlib.suppress(ConnectionError):
                writer.write(head)
                for i in range(len(slow)):
                    if collecting.done():
                        break
                    writer.write(slow[i : i + 1])
                    await writer.drain()
                    await asyncio.sleep(0.1)
            await asyncio.wait_for(collecting, timeout + 3)
            writer.close()
            return time.monotonic() - started, b"".join(chunks)

        headers = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Padding: " + b"p" * 100 + b"\r\n\r\n"
        body = b'{"data": "' + b"y" * 200 + b'"}'
        slow = [asyncio.create_task(trickle(b"", headers)) for _ in range(10)]
        slow += [
            asyncio.create_task(trickle(_post(b"", length=len(body)), body)) for _ in range(10)
        ]
        await asyncio.sleep(0.3)
        served = 0
        started = time.monotonic()
        while time.monotonic() - started < timeout / 2:
            async with s.session.post("/stash", json={"data": served}) as resp:
                assert resp.status == 201
            served += 1
        assert not any(t.done() for t in slow), "bystanders are served before any cut-off"
        assert served >= 10
        results = await asyncio.gather(*slow)
        for elapsed, _ in results:
            assert elapsed < timeout + WATCH_SLACK, elapsed
        assert {split_response(r)[0] for _, r in results[:10]} == {408}
        assert {split_response(r)[0] for _, r in results[10:]} == {400}
        assert s.count(NS) == served


WATCH_SLACK = 1.0  # the watchdog's interval plus scheduling noise on a loaded machine


async def test_expect_100_continue_only_for_a_body_within_the_limit() -> None:
    """Within the limit the client is told to go on; over it, the 413 comes instead."""
    async with sidecar() as s:
        body = b'{"data": "after the interim answer"}'
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(_post(b"", length=len(body), extra="Expect: 100-continue\r\n"))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        assert split_response(await _read_response(reader))[0] == 201
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(_post(b"", length=LIMIT + 1, extra="Expect: 100-continue\r\n"))
        assert (await _read_response(reader)).startswith(b"HTTP/1.1 413")
        writer.close()
        assert s.count(NS) == 1


async def test_half_close_while_the_body_is_being_read() -> None:
    """A client that stops mid-body after the handler began waiting still gets its 400."""
    async with sidecar() as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(_post(b'{"data": ', length=40))
        await writer.drain()
        await asyncio.sleep(0.2)  # the handler is now waiting for the rest
        writer.write_eof()
        status, _, body = split_response(await asyncio.wait_for(reader.read(), 5))
        assert status == 400
        assert json.loads(body)["error"]["actual"] == 9
        writer.close()
        assert s.count(NS) == 0


async def test_chunked_body_that_stalls_or_is_malformed() -> None:
    """A stalled chunked body is cut off with 408; a malformed one gets a JSON 400."""
    async with sidecar(request_timeout=1.0) as s:
        head = b"POST /stash HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(head + b'5\r\n{"dat')
        status, _, body = split_response(await _read_response(reader))
        assert status == 408
        assert json.loads(body)["error"]["code"] == "request_timeout"
        writer.close()
        raw = await raw_exchange(s.port, head + b"zz\r\nnot a chunk\r\n0\r\n\r\n")
        status, headers, body = split_response(raw)
        assert status == 400
        assert headers["content-type"] == "application/json"
        assert b"not a chunk" not in raw
        assert s.count(NS) == 0


async def test_pipelined_and_absolute_form_requests() -> None:
    """Requests sent back to back are answered in order; an absolute-form target works."""
    async with sidecar() as s:
        one = _post(b'{"data": 1}')
        get = b"GET http://127.0.0.1/healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        raw = await raw_exchange(s.port, one + one + get)
        assert raw.count(b"HTTP/1.1 201") == 2
        assert raw.count(b"HTTP/1.1 200") == 1
        assert raw.index(b"HTTP/1.1 200") > raw.rindex(b"HTTP/1.1 201")
        assert s.count(NS) == 2


async def test_compressed_bodies_are_refused_unread() -> None:
    """A gzip body (a possible bomb) gets 415 and is never inflated; nothing is stored."""
    async with sidecar() as s:
        bomb = gzip.compress(b'{"data": "' + b"0" * 5_000_000 + b'"}')
        assert len(bomb) < LIMIT * 10
        async with s.session.post(
            "/stash", data=bomb[:LIMIT], headers={"Content-Encoding": "gzip"}
        ) as resp:
            assert resp.status == 415
            assert resp.headers["Accept-Encoding"] == "identity"
            assert (await resp.json())["error"]["code"] == "unsupported_encoding"
        async with s.session.post(
            "/stash", data=b'{"data": 1}', headers={"Content-Encoding": "identity"}
        ) as resp:
            assert resp.status == 201
        assert s.count(NS) == 1


# -- order, half-closes, idle time and shutdown around answers that wait -----------------
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


async def _ordered(s: Sidecar) -> None:
    for _ in range(30):
        answers = await exchange(s.port, post(b'{"data": 1}'), HEALTH, post(b'{"data": 2}'))
        assert [split_response(a)[0] for a in answers] == [201, 200, 201]


@contextlib.asynccontextmanager
async def sqlite_sidecar(path: Path) -> AsyncIterator[Sidecar]:
    """A sidecar on the SQLite store, whose writes go through the batcher."""
    store = SQLiteStore(path)
    await store.open()
    try:
        async with sidecar(store=store) as s:  # type: ignore[arg-type]
            yield s
    finally:
        await store.close()


async def test_answers_come_in_request_order() -> None:
    """Requests sent one after another on a connection are answered in that order."""
    async with sidecar() as s:
        await _ordered(s)


async def test_sqlite_answers_after_the_commit_in_order(tmp_path: Path) -> None:
    """On SQLite each answer waits for its batch; order holds, and the write is readable."""
    async with sqlite_sidecar(tmp_path / "s.db") as s:
        await _ordered(s)
        (created,) = await exchange(s.port, post(b'{"data": {"k": [1, 2]}, "ttl": 60}'))
        mid = json.loads(split_response(created)[2])["memory_id"].encode()
        (got,) = await exchange(
            s.port, b"GET /recall/" + mid + b" HTTP/1.1\r\nHost: t\r\nX-API-KEY: alice-key\r\n\r\n"
        )
        assert json.loads(split_response(got)[2])["data"] == {"k": [1, 2]}


class HeldStore(SQLiteStore):
    """A SQLite store whose batches wait until the test lets them run."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def run_many(self, ops: list[Op]) -> list[Any]:
        """Run the batch once released."""
        self.started.set()
        await self.release.wait()
        return await super().run_many(ops)


@contextlib.asynccontextmanager
async def held_post(
    tmp_path: Path,
) -> AsyncIterator[tuple[HeldStore, Sidecar, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A POST /stash sent to a SQLite sidecar, its batch started and held until released."""
    store = HeldStore(tmp_path / "s.db")
    await store.open()
    try:
        async with sidecar(store=store) as s:  # type: ignore[arg-type]
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            writer.write(post(b'{"data": 1}'))
            await asyncio.wait_for(store.started.wait(), 5)
            try:
                yield store, s, reader, writer
            finally:
                writer.close()
    finally:
        await store.close()


async def test_a_request_sent_while_an_answer_waits_is_answered_after_it(tmp_path: Path) -> None:
    """HTTP answers in request order: a GET behind a POST whose batch waits comes second."""
    async with held_post(tmp_path) as (store, _, reader, writer):
        writer.write(HEALTH)
        await asyncio.sleep(0.05)
        store.release.set()
        answers = [await read_answer(reader) for _ in range(2)]
    assert [split_response(a)[0] for a in answers] == [201, 200]


async def test_a_client_that_half_closes_while_its_answer_waits_gets_it_with_close(
    tmp_path: Path,
) -> None:
    """The client stops sending while its write is under way: the answer says close, then EOF."""
    async with held_post(tmp_path) as (store, _, reader, writer):
        writer.write_eof()
        await asyncio.sleep(0.05)
        store.release.set()
        answer = await asyncio.wait_for(reader.read(), 5)
    status, headers, _ = split_response(answer)
    assert status == 201
    assert headers["connection"] == "close"


async def test_shutdown_waits_for_an_answer_under_way(tmp_path: Path) -> None:
    """Closing the sidecar while an answer waits for its batch still sends it."""
    async with held_post(tmp_path) as (store, s, reader, _):
        closing = asyncio.ensure_future(s.server.close())
        await asyncio.sleep(0.05)
        assert not closing.done()
        store.release.set()
        assert b" 201 " in await read_answer(reader)
        await asyncio.wait_for(closing, 5)


async def test_the_idle_timer_never_ends_a_connection_whose_answer_is_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle means no request in progress: a write waiting for its batch past the idle time
    is still answered (the client would otherwise store it again on retry)."""
    monkeypatch.setattr(server, "IDLE_TIMEOUT", 0.3)
    async with held_post(tmp_path) as (store, _, reader, _writer):
        await asyncio.sleep(0.6)
        store.release.set()
        assert b" 201 " in await read_answer(reader)


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After an answer, a connection that sends nothing more is closed by the server."""
    monkeypatch.setattr(server, "IDLE_TIMEOUT", 0.3)
    async with sidecar() as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(post(b'{"data": 1}'))
        assert b" 201 " in await read_answer(reader)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()


async def test_a_request_sent_with_a_half_close_is_answered() -> None:
    """A client that sends its request and shuts its side at once (nc, scripts) gets the answer."""
    async with sidecar() as s:
        for request in (HEALTH, post(b'{"data": 1}')):
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            writer.write(request)
            writer.write_eof()
            status, headers, _ = split_response(await asyncio.wait_for(reader.read(), 5))
            writer.close()
            assert status in (200, 201)
            assert headers["connection"] == "close"
        assert s.count(NS) == 0  # the POST was made with alice's key, not in the default space
