"""The HTTP direct path: a POST /stash answered from data_received gives the general path's answer.

Every request is sent on a raw socket to two sidecars that differ only in the direct path
(on, off) and the two answers are compared byte for byte, after the one thing that must
differ (the new id) and the Date field are masked; so is what each store then holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stashd import http
from stashd.http import DIRECT_SUPPORTED, HttpApi
from stashd.httpreply import Reply
from stashd.jsontext import MAX_DEPTH
from stashd.ops import Op, Set
from stashd.ratelimit import LocalLimiter, Rate
from stashd.store.sqlite import SQLiteStore
from stashd.tenancy import Limits, OpenKeyring, Principal, namespace_of
from tests.support.http import Sidecar, StrictKeyring, sidecar, split_response

KEY = b"X-API-KEY: alice-key\r\n"


def test_the_installed_aiohttp_allows_the_direct_path() -> None:
    """An aiohttp upgrade that removed what the direct path uses would silently slow it down."""
    assert DIRECT_SUPPORTED


async def _read_answer(reader: asyncio.StreamReader) -> bytes:
    """One whole answer: the head, then Content-Length bytes of body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    match = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
    assert match is not None, head
    return head + await asyncio.wait_for(reader.readexactly(int(match[1])), 5)


async def exchange(port: int, *requests: bytes, answers: int | None = None) -> list[bytes]:
    """Send each request as its own write on one connection; the answers, then EOF or not."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            writer.write(request)
            await writer.drain()
        return [await _read_answer(reader) for _ in range(answers or len(requests))]
    finally:
        writer.close()


def masked(answer: bytes) -> bytes:
    """The answer with the Date field and the ids it names replaced by fixed text."""
    answer = re.sub(rb"\r\nDate: [^\r]*", b"\r\nDate: -", answer)
    return re.sub(rb'(?<="memory_id":")[0-9A-Za-z]{8}|(?<=/recall/)[0-9A-Za-z]{8}', b"ID", answer)


def post(
    body: bytes, headers: bytes = KEY, *, path: bytes = b"/stash", version: bytes = b"1.1"
) -> bytes:
    """A POST with a Content-Length."""
    return (
        b"POST " + path + b" HTTP/" + version + b"\r\nHost: t\r\n" + headers
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


@contextlib.asynccontextmanager
async def twins(**kw: object) -> AsyncIterator[tuple[Sidecar, Sidecar]]:
    """Two sidecars alike but for the direct path: (on, off)."""
    async with sidecar(direct=True, **kw) as on, sidecar(direct=False, **kw) as off:  # type: ignore[arg-type]
        yield on, off


async def same_answers(on: Sidecar, off: Sidecar, *requests: bytes) -> list[bytes]:
    """Send the requests to both; their answers must match; returns the direct path's."""
    got = await exchange(on.port, *requests)
    want = await exchange(off.port, *requests)
    assert [masked(a) for a in got] == [masked(a) for a in want]
    return got


def held(s: Sidecar) -> list[tuple[str, list[bytes]]]:
    """What a memory store holds: each namespace's values."""
    return sorted(
        (ns, [e.value for e in space.data.values()]) for ns, space in s.store.spaces.items()
    )


# -- the same answers -------------------------------------------------------------------

BODIES = st.one_of(
    st.builds(
        lambda data, ttl: json.dumps({"data": data} if ttl is None else {"data": data, "ttl": ttl}),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=4), inner, max_size=3)
            ),
            max_leaves=6,
        ),
        st.none() | st.integers(-5, 200_000) | st.sampled_from([1.0, 1.5, "60", True]),
    ),
    st.sampled_from(
        [
            "",
            "{",
            "[]",
            "null",
            '{"ttl": 60}',
            '{"data": 1, "extend": 5}',
            '{"data": "' + "x" * 1200 + '"}',
            '{"data": NaN}',
            '{"data": 1e400}',
            '{"data": "\\ud800"}',
            '{"data": 1}\n',
            ' {"data": 2} ',
        ]
    ),
    st.binary(max_size=20),
).map(lambda b: b if isinstance(b, bytes) else b.encode())

HEADERS = st.sampled_from(
    [
        KEY,
        b"",
        b"X-API-KEY: \r\n",
        b"Authorization: Bearer bob-key\r\n",
        b"Authorization: Basic Ym9iOng=\r\n",
        b"X-API-KEY: a\r\nAuthorization: Bearer b\r\n",
        KEY + b"Content-Encoding: identity\r\n",
        KEY + b"Content-Encoding: gzip\r\n",
        KEY + b"Content-Type: application/x-www-form-urlencoded\r\n",
        KEY + b"Expect: 100-continue\r\n",
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, headers=HEADERS, version=st.sampled_from([b"1.1", b"1.0"]))
def test_random_posts_get_the_same_answers_and_store_the_same(
    body: bytes, headers: bytes, version: bytes
) -> None:
    """Bodies and header fields of every kind: status, fields and body as the general path's."""

    async def run() -> None:
        async with twins() as (on, off):
            await same_answers(on, off, post(body, headers, version=version))
            assert held(on) == held(off)

    asyncio.run(run())


def seed(s: Sidecar) -> None:
    """The same entries in a sidecar's store: alice's, bob's, one not JSON, one expired."""
    alice, bob = namespace_of(b"alice-key"), namespace_of(b"bob-key")
    now = s.clock()
    for ns, key, value, ttl in (
        (alice, b"known001", b'{"k":[1,2]}', 60_000),
        (alice, b"notjson1", b"raw bytes", 60_000),
        (alice, b"expired1", b"1", 1_000),
        (alice, "\u00e9t\u00e9".encode(), b'"summer"', 60_000),
        (bob, b"bobs0001", b'"bob"', 60_000),
    ):
        s.store.run(Set(ns, key, value, now + ttl))
    s.clock.now += 2_000


IDS = st.sampled_from(
    [
        b"known001",
        b"missing1",
        b"bobs0001",
        b"notjson1",
        b"expired1",
        b"known001?x=1",
        b"known001/",
        b"known001/x",
        b"kno%77n001",
        b"%C3%A9t%C3%A9",
        b"\xc3\xa9t\xc3\xa9",
        b"",
    ]
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(memory_id=IDS, headers=HEADERS, version=st.sampled_from([b"1.1", b"1.0"]))
def test_random_recalls_get_the_same_answers(
    memory_id: bytes, headers: bytes, version: bytes
) -> None:
    """Found, missing, another tenant's, not JSON, expired, odd forms: the same bytes."""

    async def run() -> None:
        async with twins() as (on, off):
            seed(on)
            seed(off)
            request = (
                b"GET /recall/"
                + memory_id
                + b" HTTP/"
                + version
                + b"\r\nHost: t\r\n"
                + headers
                + b"\r\n"
            )
            await same_answers(on, off, request)

    asyncio.run(run())


def _frozen() -> float:
    return 0.0


def _three(_p: object) -> Rate:
    return Rate(3, 60, 3)


async def test_metered_keys_get_the_same_fields_and_refusals() -> None:
    """Under a rate limit: the RateLimit fields, the 429 with Retry-After, refusals counted once."""
    for requests in (
        [post(b'{"data": 1}')] * 4,
        [post(b'{"data": 1, "ttl": 0}'), post(b"{"), post(b'{"data": 1}'), post(b'{"data": 2}')],
        [b"GET /recall/known001 HTTP/1.1\r\nHost: t\r\n" + KEY + b"\r\n"] * 4,
    ):
        async with (
            sidecar(direct=True, limiter=LocalLimiter(_frozen), rate_of=_three) as on,
            sidecar(direct=False, limiter=LocalLimiter(_frozen), rate_of=_three) as off,
        ):
            seed(on)
            seed(off)
            answers = await same_answers(on, off, *requests)
            statuses = [split_response(a)[0] for a in answers]
            assert statuses[-1] == 429
            assert b"\r\nRetry-After: " in answers[-1]
            assert all(
                b"\r\nRateLimit: " in a for a, st in zip(answers, statuses, strict=True) if st < 300
            )
            assert held(on) == held(off)


async def test_other_routes_and_forms_take_the_general_path_alike() -> None:
    """Query strings, other paths, methods, chunked bodies, Connection: close, strict keys."""
    chunked = (
        b"POST /stash HTTP/1.1\r\nHost: t\r\n" + KEY
        + b'Transfer-Encoding: chunked\r\n\r\n9\r\n{"data":1\r\n1\r\n}\r\n0\r\n\r\n'
    )  # fmt: skip
    async with twins() as (on, off):
        for request in (
            post(b'{"data": 1}', path=b"/stash?x=1"),
            post(b'{"data": 1}', path=b"/stash/"),
            post(b'{"data": 1}', path=b"/recall/abc"),
            post(b'{"data": 1}', path=b"http://t/stash"),
            post(b'{"data": 1}', KEY + b"Connection: close\r\n"),
            chunked,
            b"GET /stash HTTP/1.1\r\nHost: t\r\n" + KEY + b"\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        ):
            await same_answers(on, off, request)
    strict = StrictKeyring({b"alice-key": "alice"})
    async with twins(keyring=strict) as (on, off):
        for headers in (KEY, b"X-API-KEY: nope\r\n", b""):
            await same_answers(on, off, post(b'{"data": 1}', headers))


async def test_the_direct_path_is_the_one_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """A POST, refused or not, never reaches the general handler; a chunked one does."""
    calls: list[str] = []
    general = HttpApi.stash

    async def spy(self: HttpApi, *args: object) -> object:
        calls.append("general")
        return await general(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(HttpApi, "stash", spy)
    async with sidecar() as s:
        (ok,) = await exchange(s.port, post(b'{"data": {"a": 1}, "ttl": 60}'))
        assert b" 201 Created\r\n" in ok
        assert calls == []
        (bad,) = await exchange(s.port, post(b'{"data": 1, "ttl": 0}'))
        assert b" 422 " in bad
        (chunked,) = await exchange(
            s.port,
            b"POST /stash HTTP/1.1\r\nHost: t\r\n"
            + KEY
            + b'Transfer-Encoding: chunked\r\n\r\nb\r\n{"data": 2}\r\n0\r\n\r\n',
        )
        assert b" 201 " in chunked
        assert calls == ["general"]  # the chunked one only
        assert s.count(namespace_of(b"alice-key")) == 2


async def test_a_plain_recall_takes_the_direct_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /recall/{id} never reaches the general handler, found or not."""

    async def never(*_: object) -> object:
        raise AssertionError("the general path answered")

    monkeypatch.setattr(HttpApi, "recall", never)
    async with sidecar() as s:
        seed(s)
        for memory_id, status in ((b"known001", 200), (b"missing1", 404), (b"notjson1", 409)):
            (answer,) = await exchange(
                s.port, b"GET /recall/" + memory_id + b" HTTP/1.1\r\nHost: t\r\n" + KEY + b"\r\n"
            )
            assert split_response(answer)[0] == status


# -- order, connections, time -------------------------------------------------------------


async def _ordered(s: Sidecar) -> None:
    for _ in range(30):
        answers = await exchange(
            s.port,
            post(b'{"data": 1}'),
            b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
            post(b'{"data": 2}'),
        )
        assert [split_response(a)[0] for a in answers] == [201, 200, 201]


async def test_requests_behind_a_direct_answer_are_answered_after_it() -> None:
    """A request arriving while a direct answer waits (end of turn, a batch) comes second."""
    async with sidecar() as s:
        await _ordered(s)


@contextlib.asynccontextmanager
async def sqlite_sidecar(path: Path, *, direct: bool = True) -> AsyncIterator[Sidecar]:
    """A sidecar on the SQLite store, whose writes go through the batcher."""
    store = SQLiteStore(path)
    await store.open()
    try:
        async with sidecar(store=store, direct=direct) as s:  # type: ignore[arg-type]
            yield s
    finally:
        await store.close()


async def test_sqlite_answers_after_the_commit_in_order(tmp_path: Path) -> None:
    """On SQLite the answer waits for the batch; the same answers as the general path."""
    async with sqlite_sidecar(tmp_path / "on.db") as s:
        await _ordered(s)
        (created,) = await exchange(s.port, post(b'{"data": {"k": [1, 2]}, "ttl": 60}'))
        mid = json.loads(split_response(created)[2])["memory_id"].encode()
        recall = b"GET /recall/" + mid + b" HTTP/1.1\r\nHost: t\r\n" + KEY + b"\r\n"
        (got,) = await exchange(s.port, recall)
        assert json.loads(split_response(got)[2])["data"] == {"k": [1, 2]}
        async with sqlite_sidecar(tmp_path / "off.db", direct=False) as off:
            await same_answers(
                s,
                off,
                post(b'{"data": 1, "ttl": 5}'),
                post(b'{"data": 1, "ttl": -1}'),
                b"GET /recall/missing1 HTTP/1.1\r\nHost: t\r\n" + KEY + b"\r\n",
            )


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
    tmp_path: Path, *, direct: bool
) -> AsyncIterator[tuple[HeldStore, Sidecar, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A POST /stash sent to a SQLite sidecar, its batch started and held until released."""
    store = HeldStore(tmp_path / "s.db")
    await store.open()
    try:
        async with sidecar(store=store, direct=direct) as s:  # type: ignore[arg-type]
            reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
            writer.write(post(b'{"data": 1}'))
            await asyncio.wait_for(store.started.wait(), 5)
            try:
                yield store, s, reader, writer
            finally:
                writer.close()
    finally:
        await store.close()


@pytest.mark.parametrize("direct", [True, False])
async def test_a_request_sent_while_an_answer_waits_is_answered_after_it(
    tmp_path: Path, direct: bool
) -> None:
    """HTTP answers in request order: a GET behind a POST whose batch waits comes second."""
    async with held_post(tmp_path, direct=direct) as (store, _, reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        await asyncio.sleep(0.05)
        store.release.set()
        answers = [await _read_answer(reader) for _ in range(2)]
    assert [split_response(a)[0] for a in answers] == [201, 200]


@pytest.mark.parametrize("direct", [True, False])
async def test_a_client_that_half_closes_while_its_answer_waits_gets_it_with_close(
    tmp_path: Path, direct: bool
) -> None:
    """The client stops sending while its write is under way: the answer says close, then EOF."""
    async with held_post(tmp_path, direct=direct) as (store, _, reader, writer):
        writer.write_eof()
        await asyncio.sleep(0.05)
        store.release.set()
        answer = await asyncio.wait_for(reader.read(), 5)
    status, headers, _ = split_response(answer)
    assert status == 201
    assert headers["connection"] == "close"


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a direct answer the idle timer runs as after any other."""
    monkeypatch.setattr(http, "IDLE_TIMEOUT", 0.3)
    async with sidecar() as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(post(b'{"data": 1}'))
        assert b" 201 " in await _read_answer(reader)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()


async def test_the_write_is_logged_as_on_the_general_path() -> None:
    """stash_created, with the same fields, whichever path answered."""
    for direct in (True, False):
        async with sidecar(direct=direct, log_writes=True) as s:
            with structlog.testing.capture_logs() as logs:
                await exchange(s.port, post(b'{"data": [1, 2, 3], "ttl": 60}'))
        (event,) = [e for e in logs if e["event"] == "stash_created"]
        assert event["door"] == "http"
        assert event["ttl_seconds"] == 60
        assert event["payload_bytes"] == len(b"[1,2,3]")


async def test_a_failing_store_gets_a_500_and_a_closed_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A failure of our own: the general path's 500 body, and the connection ends."""
    async with sidecar() as s:

        def broken(_op: object) -> object:
            raise RuntimeError("boom")

        monkeypatch.setattr(s.store, "run", broken)
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(post(b'{"data": 1}'))
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        status, headers, body = split_response(answer)
        assert status == 500
        assert headers["connection"] == "close"
        assert body == http.INTERNAL_ERROR


@pytest.mark.parametrize("direct", [True, False])
async def test_shutdown_waits_for_an_answer_under_way(tmp_path: Path, direct: bool) -> None:
    """Closing the sidecar while an answer waits for its batch still sends it."""
    async with held_post(tmp_path, direct=direct) as (store, s, reader, _):
        closing = asyncio.ensure_future(s.server.close())
        await asyncio.sleep(0.05)
        assert not closing.done()
        store.release.set()
        assert b" 201 " in await _read_answer(reader)
        await asyncio.wait_for(closing, 5)


@pytest.mark.parametrize("direct", [True, False])
async def test_the_idle_timer_never_ends_a_connection_whose_answer_is_under_way(
    tmp_path: Path, direct: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle means no request in progress: a write waiting for its batch past the idle time
    is still answered (the client would otherwise store it again on retry)."""
    monkeypatch.setattr(http, "IDLE_TIMEOUT", 0.3)
    async with held_post(tmp_path, direct=direct) as (store, _, reader, _writer):
        await asyncio.sleep(0.6)
        store.release.set()
        assert b" 201 " in await _read_answer(reader)


class CountingKeyring(StrictKeyring):
    """A strict keyring that counts its lookups."""

    def __init__(self) -> None:
        super().__init__({b"alice-key": "alice"})
        self.lookups = 0

    def authenticate(self, username: str | None, key: bytes) -> Principal | None:
        """Count, then look up."""
        self.lookups += 1
        return super().authenticate(username, key)


async def test_a_refused_key_is_looked_up_and_counted_once() -> None:
    """One lookup per request, refused or not, and the same 401 and throttle on both paths."""
    answers = []
    for direct in (True, False):
        keyring = CountingKeyring()
        async with sidecar(keyring=keyring, direct=direct) as s:
            throttle = s.api.throttle
            assert throttle is not None
            failed: list[str] = []
            count = throttle.failed

            def counted(
                address: str, count: Callable[[str], None] = count, failed: list[str] = failed
            ) -> None:
                failed.append(address)
                count(address)

            throttle.failed = counted  # type: ignore[method-assign]
            answers.append(
                await exchange(
                    s.port,
                    post(b'{"data": 1}', b"X-API-KEY: nope\r\n"),
                    b"GET /recall/abc HTTP/1.1\r\nHost: t\r\nX-API-KEY: nope\r\n\r\n",
                    post(b'{"data": 1}'),
                )
            )
            assert keyring.lookups == 3
            assert failed == ["127.0.0.1", "127.0.0.1"]
    assert [masked(a) for a in answers[0]] == [masked(a) for a in answers[1]]
    assert [split_response(a)[0] for a in answers[0]] == [401, 401, 201]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_a_failure_of_our_own_is_a_500_for_that_request_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """An answer that cannot be made ends its own connection with the 500, on a batch too."""

    def broken(*_: object) -> Reply:
        raise RuntimeError("boom")

    monkeypatch.setattr(HttpApi, "created", broken)
    chosen = sidecar() if backend == "memory" else sqlite_sidecar(tmp_path / "s.db")
    async with chosen as s:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(post(b'{"data": 1}'))
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        status, _, body = split_response(answer)
        assert (status, body) == (500, http.INTERNAL_ERROR)
        (ok,) = await exchange(s.port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert split_response(ok)[0] == 200


async def test_json_nested_too_deep_is_refused_alike() -> None:
    """Past the depth limit: 400 invalid_json on both paths, not a 500 or a reset."""
    body = b'{"data":' + b"[" * 2000 + b"]" * 2000 + b"}"
    roomy = OpenKeyring(Limits(max_payload=100_000, default_ttl_ms=60_000, max_ttl_ms=60_000))
    async with twins(keyring=roomy) as (on, off):
        (answer,) = await same_answers(on, off, post(body))
    status, _, error = split_response(answer)
    assert status == 400
    assert json.loads(error)["error"]["message"] == (
        f"request body is not valid JSON: nested 2001 levels deep, the limit is {MAX_DEPTH} levels"
    )
