"""One client suite for every mode: embedded memory, SQLite and Redis, and remote; sync and async.

Each test gets a ``client`` whose calls are all awaited: for ``Stash`` the call simply
runs, for ``AsyncStash`` it is awaited, so one test body checks both APIs. Remote
clients talk to a stashd this module starts, each test in a namespace of its own (a
fresh key); embedded ones get a fresh store with the same limits as that daemon. A test
passes in every mode or the modes differ, which is the point.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import re
import threading
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from stashd import (
    AsyncStash,
    AuthenticationError,
    Conflict,
    InvalidTTL,
    Memory,
    MemoryInfo,
    NotJSON,
    PayloadTooLarge,
    RateLimited,
    Stash,
    StashError,
    StoreUnavailable,
)
from stashd.errors import DataAndMerge, EmptyUpdate, InvalidRequest, StoredNotJSON, WrongPass
from stashd.service import MemoryService
from stashd.tenancy import DEFAULT_NAMESPACE
from stashd.types import Principal
from tests.support.servers import RedisServer, StashDaemon

# The limits every mode runs with: the daemon's flags and the embedded arguments agree.
PAYLOAD = 4096
DEFAULT_TTL = 600
MAX_TTL = 7200
LIMITS: dict[str, Any] = {
    "default_ttl": DEFAULT_TTL,
    "max_ttl": MAX_TTL,
    "max_payload_bytes": PAYLOAD,
}
DAEMON_FLAGS = (
    "--no-http",
    "--default-ttl",
    str(DEFAULT_TTL),
    "--max-ttl",
    str(MAX_TTL),
    "--max-payload-bytes",
    str(PAYLOAD),
)
BACKENDS = ("memory", "sqlite", "redis", "remote")
MODES = [f"{backend}-{face}" for backend in BACKENDS for face in ("sync", "async")]
BASE62_ID = re.compile(r"[0-9A-Za-z]{8}")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No STASH_* variable or .env file of the machine running the tests leaks in."""
    for name in [n for n in __import__("os").environ if n.startswith("STASH_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    """One stashd (SQLite) with the suite's limits; tests keep apart by namespace."""
    with StashDaemon(*DAEMON_FLAGS) as d:
        yield d


@pytest.fixture(scope="module")
def redis_for_clients() -> Iterator[RedisServer]:
    """A redis-server of the suite's own for the embedded Redis backend."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def limited_daemon() -> Iterator[StashDaemon]:
    """A stashd whose open-mode callers may make 5 commands, then one every 12 s."""
    with StashDaemon(*DAEMON_FLAGS, "--rate-limit", "5/min", "--rate-burst", "5") as d:
        yield d


class Client:
    """Both APIs behind one awaitable face; ``raw_set`` writes bytes as redis-cli would."""

    def __init__(self, inner: Stash | AsyncStash, raw_set: Callable[[str, bytes], None]) -> None:
        self.inner = inner
        self.raw_set = raw_set
        self.is_async = isinstance(inner, AsyncStash)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.inner, name)
        if self.is_async:
            return method  # type: ignore[no-any-return]

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call

    async def keys(self, pattern: str = "*") -> list[str]:
        if isinstance(self.inner, AsyncStash):
            return [k async for k in self.inner.keys(pattern)]
        return list(self.inner.keys(pattern))

    async def close(self) -> None:
        if isinstance(self.inner, AsyncStash):
            await self.inner.aclose()
        else:
            self.inner.close()


def _embedded_raw_set(inner: Stash | AsyncStash) -> Callable[[str, bytes], None]:
    """Write bytes into the client's own store in the default namespace, as SET does."""
    store = inner._t.store
    service = MemoryService(store)
    who = Principal(DEFAULT_NAMESPACE, inner._t.calls.principal.limits)

    def raw_set(key: str, value: bytes) -> None:
        store.run(service.set(who, key.encode("utf-8", "surrogateescape"), value))

    return raw_set


def make_client(
    mode: str, tmp_path: Path, daemon: StashDaemon, redis_port: int = 0, **extra: Any
) -> tuple[Client, Callable[[], None]]:
    """A client of ``mode`` with the suite's limits, and how to release what it holds."""
    backend, face = mode.split("-")
    kind: type[Stash | AsyncStash] = AsyncStash if face == "async" else Stash
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if backend == "remote":
        key = f"key-{uuid.uuid4().hex}"
        inner = kind(url=f"redis://127.0.0.1:{daemon.port}", api_key=key)
        writer = redis.Redis(port=daemon.port, password=key)

        def raw_set(k: str, value: bytes) -> None:
            writer.set(k.encode("utf-8", "surrogateescape"), value)

        cleanup = writer.close
        return Client(inner, raw_set), cleanup
    if backend == "memory":
        inner = kind("memory", **LIMITS, **extra)
    elif backend == "redis":
        # Embedded clients share the default namespace, so each test starts on an empty
        # Redis of the suite's own (never the machine's on 6379).
        admin = redis.Redis(port=redis_port)
        admin.flushall()
        admin.close()
        inner = kind(redis_url=f"redis://127.0.0.1:{redis_port}/0", **LIMITS, **extra)
    else:
        inner = kind(path=tmp_path / f"{uuid.uuid4().hex}.db", **LIMITS, **extra)
    return Client(inner, _embedded_raw_set(inner)), cleanup


@pytest.fixture(params=MODES)
async def client(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    daemon: StashDaemon,
    redis_for_clients: RedisServer,
) -> AsyncIterator[Client]:
    """A client of every mode in turn."""
    c, cleanup = make_client(request.param, tmp_path, daemon, redis_for_clients.port)
    yield c
    await c.close()
    cleanup()


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same type all the way down (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


JSON_VALUES: list[Any] = [
    {"task": "summarize", "progress": 0.5, "done": False, "notes": None},
    {"nested": {"list": [1, 2.5, "three", True, None, {"deep": []}]}, "": "empty key"},
    {},
    [],
    [[], {}, [None]],
    "",
    "plain",
    'ünïcødé ✓ 🐍 \u2028 \x00 "quoted" \\',
    0,
    -1,
    2**63 - 1,
    10**30,
    1.5,
    -0.25,
    1e-300,
    1.7976931348623157e308,
    0.1 + 0.2,
    True,
    False,
    None,
]


# -- values ------------------------------------------------------------------------------


async def test_every_json_type_round_trips_with_its_type(client: Client) -> None:
    """dict, list, str, int, float, bool and None come back as they went, type and all."""
    for i, value in enumerate(JSON_VALUES):
        await client.set(f"v{i}", value)
        assert same(await client.get(f"v{i}"), value), value
        memory_id = await client.stash(value)
        assert same(await client.recall(memory_id), value), value
        meta = await client.recall(memory_id, with_meta=True)
        assert same(meta.data, value), value


async def test_a_value_json_cannot_hold_is_refused_before_sending(client: Client) -> None:
    """TypeError or ValueError, and nothing is stored."""
    with pytest.raises(TypeError):
        await client.set("k", {"when": datetime.now(UTC)})
    with pytest.raises(TypeError):
        await client.stash({1, 2})
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        await client.set("k", math.nan)
    with pytest.raises(ValueError, match="Out of range float values"):
        await client.stash([math.inf])
    with pytest.raises(ValueError, match="surrogates not allowed"):
        await client.set("k", "\ud800")
    with pytest.raises(TypeError):
        await client.update("k", merge={"x": object()})
    assert not await client.exists("k")
    assert await client.keys() == []


async def test_get_returns_default_only_for_a_missing_key(client: Client) -> None:
    """A missing key gives the default; a stored null is None, not the default."""
    assert await client.get("missing") is None
    assert await client.get("missing", {"fallback": 1}) == {"fallback": 1}
    await client.set("null", None)
    assert await client.get("null", "default") is None
    assert await client.recall("missing") is None
    assert await client.recall("missing", with_meta=True) is None


async def test_a_stored_value_that_is_not_json_raises_not_json(client: Client) -> None:
    """A value written raw over RESP reads as StoredNotJSON (a NotJSON) with its position."""
    client.raw_set("raw", b"{not json")
    with pytest.raises(StoredNotJSON) as caught:
        await client.get("raw")
    assert isinstance(caught.value, NotJSON)
    assert (caught.value.line, caught.value.column, caught.value.position) == (1, 2, 1)
    assert caught.value.wire == (
        "NOTJSON stored value is not valid JSON: Expecting property name enclosed in double "
        "quotes at line 1 column 2 (char 1)"
    )
    with pytest.raises(StoredNotJSON):
        await client.recall("raw", with_meta=True)
    with pytest.raises(StoredNotJSON) as merged:
        await client.update("raw", merge={"a": 1})
    assert vars(merged.value) == vars(caught.value)
    client.raw_set("bytes", b"\xff\xfe")
    with pytest.raises(StoredNotJSON, match="invalid UTF-8 at byte 0"):
        await client.get("bytes")
    # What is not JSON can still be replaced, extended and forgotten.
    assert await client.extend("raw", 10) in (DEFAULT_TTL + 9, DEFAULT_TTL + 10)
    assert await client.update("raw", {"now": "json"}) is not None
    assert await client.get("raw") == {"now": "json"}


# -- set, get, ttl, extend, exists ---------------------------------------------------------


async def test_set_uses_the_ttl_given_or_the_default(client: Client) -> None:
    """ttl= sets the lifetime in seconds; without it the default TTL applies."""
    await client.set("short", 1, ttl=100)
    await client.set("default", 2)
    assert await client.ttl("short") in (99, 100)
    assert await client.ttl("default") in (DEFAULT_TTL - 1, DEFAULT_TTL)
    await client.set("short", 3)  # a new SET replaces the TTL too, as in Redis
    assert await client.ttl("short") in (DEFAULT_TTL - 1, DEFAULT_TTL)


async def test_ttl_extend_and_exists(client: Client) -> None:
    """extend adds to the time left and keeps the value; missing keys say None/False."""
    await client.set("k", {"a": 1}, ttl=100)
    assert await client.exists("k")
    assert await client.extend("k", 50) in (149, 150)
    assert await client.ttl("k") in (149, 150)
    assert await client.get("k") == {"a": 1}
    assert await client.ttl("missing") is None
    assert await client.extend("missing", 10) is None
    assert not await client.exists("missing")
    assert not await client.exists("")


async def test_keys_are_text_and_may_be_anything(client: Client) -> None:
    """Empty, spaced, unicode keys, and bytes written over RESP that are not UTF-8."""
    for key in ["", "with space", "ключ", "a:b:c", "*?[]"]:
        await client.set(key, key)
        assert await client.get(key) == key
    client.raw_set("caf\udce9", b'"latin-1 key"')  # the byte 0xE9 alone
    listed = await client.keys()
    assert "caf\udce9" in listed
    assert await client.get("caf\udce9") == "latin-1 key"
    with pytest.raises(TypeError, match="key must be a str, got bytes"):
        await client.get(b"k")


@pytest.mark.parametrize(
    ("ttl", "error", "text"),
    [
        (0, ValueError, "^ttl must be a positive number of seconds, got 0$"),
        (-5, ValueError, "got -5"),
        (2**63, ValueError, "got 9223372036854775808"),
        (1.5, TypeError, "ttl must be an int \\(seconds\\), got float"),
        ("60", TypeError, "got str"),
        (True, TypeError, "got bool"),
    ],
)
async def test_impossible_ttls_are_refused_before_sending(
    client: Client, ttl: Any, error: type[Exception], text: str
) -> None:
    """A TTL no server could take is a TypeError or ValueError naming it; nothing is stored."""
    with pytest.raises(error, match=text):
        await client.set("k", 1, ttl=ttl)
    with pytest.raises(error):
        await client.stash(1, ttl=ttl)
    with pytest.raises(error):
        await client.extend("k", ttl)
    with pytest.raises(error):
        await client.update("k", 1, extra_seconds=ttl)
    assert await client.keys() == []


# -- stash, recall, update, forget -------------------------------------------------------


async def test_stash_and_recall_with_meta(client: Client) -> None:
    """A new id of 8 base62 characters; the record has data, TTL, aware expiry and version."""
    before = datetime.now(UTC).replace(microsecond=0)
    memory_id = await client.stash({"context": "..."}, ttl=300)
    assert isinstance(memory_id, str)
    assert BASE62_ID.fullmatch(memory_id)
    assert await client.recall(memory_id) == {"context": "..."}
    meta = await client.recall(memory_id, with_meta=True)
    assert isinstance(meta, Memory)
    assert meta.id == memory_id
    assert meta.data == {"context": "..."}
    assert meta.ttl_remaining in (299, 300)
    assert meta.version == 1
    assert meta.expires_at.tzinfo is not None
    assert meta.expires_at.utcoffset() == timedelta(0)
    assert meta.expires_at.microsecond == 0
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert before + timedelta(seconds=299) <= meta.expires_at <= after + timedelta(seconds=300)
    with pytest.raises(AttributeError):
        meta.version = 2  # type: ignore[misc]  # frozen
    ids = {await client.stash(i) for i in range(20)}
    assert len(ids) == 20
    assert await client.ttl(memory_id) in (299, 300)  # ids are keys like any other


async def test_update_replaces_merges_extends_and_counts_versions(client: Client) -> None:
    """data replaces, merge patches (null removes), extra_seconds adds; versions follow data."""
    memory_id = await client.stash({"task": "summarize", "draft": "v1"}, ttl=100)
    left = await client.update(memory_id, merge={"progress": 0.5, "draft": None})
    assert left in (99, 100)
    assert await client.recall(memory_id) == {"task": "summarize", "progress": 0.5}
    assert await client.update(memory_id, extra_seconds=60) in (159, 160)
    meta = await client.recall(memory_id, with_meta=True)
    assert (meta.version, meta.ttl_remaining in (159, 160)) == (2, True)
    assert await client.update(memory_id, ["replaced"], extra_seconds=40) in (199, 200)
    assert await client.recall(memory_id) == ["replaced"]
    assert await client.update(memory_id, None) is not None  # data=None stores null
    nulled = await client.recall(memory_id, with_meta=True)
    assert (nulled.data, nulled.version) == (None, 4)
    assert nulled.expires_at == meta.expires_at + timedelta(seconds=40)
    assert await client.update(memory_id, merge={"a": 1}) is not None  # patch onto null
    assert await client.recall(memory_id) == {"a": 1}
    assert await client.update("missing", {"x": 1}) is None
    assert await client.update("missing", merge={"x": 1}, extra_seconds=5) is None


async def test_if_version_applies_the_update_only_at_that_version(client: Client) -> None:
    """A stale version raises Conflict with both versions, and nothing changes."""
    memory_id = await client.stash({"n": 0})
    assert await client.update(memory_id, {"n": 1}, if_version=1) is not None
    with pytest.raises(Conflict) as caught:
        await client.update(memory_id, {"n": 99}, extra_seconds=100, if_version=1)
    assert (caught.value.current, caught.value.expected) == (2, 1)
    assert caught.value.wire == "CONFLICT version is 2, IFVERSION expected 1"
    meta = await client.recall(memory_id, with_meta=True)
    assert (meta.data, meta.version) == ({"n": 1}, 2)
    assert meta.ttl_remaining in (DEFAULT_TTL - 1, DEFAULT_TTL)
    assert await client.update(memory_id, merge={"n": 2}, if_version=2) is not None
    with pytest.raises(TypeError, match="if_version must be an int"):
        await client.update(memory_id, {"n": 3}, if_version="3")
    with pytest.raises(ValueError, match="if_version must fit in 64 bits"):
        await client.update(memory_id, {"n": 3}, if_version=2**64)


async def test_update_needs_something_to_do_and_not_both_data_and_merge(client: Client) -> None:
    """EmptyUpdate and DataAndMerge, the classes RESP gives, in the words of update()'s arguments."""
    memory_id = await client.stash(1)
    with pytest.raises(EmptyUpdate) as empty:
        await client.update(memory_id)
    assert str(empty.value) == "update() needs at least one of data, merge or extra_seconds"
    with pytest.raises(DataAndMerge) as both:
        await client.update(memory_id, 2, merge=3)
    assert str(both.value) == "update() takes data or merge, not both"
    assert await client.recall(memory_id) == 1


async def test_forget_counts_what_existed(client: Client) -> None:
    """Several ids at once; missing and repeated ones count nothing; no ids is 0."""
    a = await client.stash("a")
    b = await client.stash("b")
    await client.set("plain-key", 1)
    assert await client.forget(a, "missing", a) == 1
    assert await client.forget(b, "plain-key") == 2
    assert await client.forget() == 0
    assert await client.recall(a) is None
    assert await client.keys() == []


async def test_keys_pages_through_scan_and_filters_by_pattern(client: Client) -> None:
    """Hundreds of keys over several SCAN pages, each once; glob patterns as Redis has them."""
    names = [f"task:{i:03}" for i in range(250)] + ["plan", "plan:b", "other"]
    for name in names:
        await client.set(name, 1)
    listed = await client.keys()
    assert sorted(listed) == sorted(names)
    assert len(listed) == len(set(listed))
    assert sorted(await client.keys("plan*")) == ["plan", "plan:b"]
    assert sorted(await client.keys("task:00?")) == [f"task:00{i}" for i in range(10)]
    assert await client.keys("task:[2]4[9]") == ["task:249"]
    assert await client.keys("nothing*") == []


async def test_add_stores_only_where_nothing_live_is(client: Client) -> None:
    """add is SET NX: True once, False while the key lives, True again once it is gone."""
    assert await client.add("lock", {"owner": "a"}, ttl=60) is True
    assert await client.add("lock", {"owner": "b"}, ttl=60) is False
    assert await client.get("lock") == {"owner": "a"}
    assert await client.ttl("lock") in (59, 60)
    assert await client.forget("lock") == 1
    assert await client.add("lock", {"owner": "b"}) is True
    assert await client.ttl("lock") in (DEFAULT_TTL - 1, DEFAULT_TTL)
    with pytest.raises(InvalidTTL):
        await client.add("other", 1, ttl=MAX_TTL + 1)
    assert await client.exists("other") is False


async def test_writes_report_their_metadata_with_meta(client: Client) -> None:
    """stash and update with with_meta answer the id, time left, expiry, version (and size)."""
    stashed = await client.stash({"step": 1}, ttl=300, with_meta=True)
    assert isinstance(stashed, MemoryInfo)
    assert BASE62_ID.fullmatch(stashed.id)
    assert (stashed.ttl_remaining, stashed.version, stashed.size) == (300, 1, len('{"step":1}'))
    meta = await client.recall(stashed.id, with_meta=True)
    assert meta.expires_at == stashed.expires_at
    assert (await client.stash(1, with_meta=True)).ttl_remaining == DEFAULT_TTL
    merged = await client.update(stashed.id, merge={"step": 2}, with_meta=True)
    assert (merged.id, merged.version, merged.size) == (stashed.id, 2, None)
    assert merged.expires_at == stashed.expires_at
    extended = await client.update(stashed.id, extra_seconds=60, with_meta=True)
    assert extended.version == 2
    assert extended.expires_at == stashed.expires_at + timedelta(seconds=60)
    assert extended.ttl_remaining in (359, 360)
    assert await client.update("missing", {"x": 1}, with_meta=True) is None
    with pytest.raises(Conflict):
        await client.update(stashed.id, {"x": 1}, if_version=1, with_meta=True)


async def test_memories_pages_with_metadata_by_pattern(client: Client) -> None:
    """A listing a page at a time: each matching memory once, with its metadata, no values."""
    names = [f"task:{i:03}" for i in range(130)] + ["plan", "other"]
    for name in names:
        await client.set(name, {"name": name}, ttl=500)
    seen: list[MemoryInfo] = []
    cursor = None
    while True:
        page = await client.memories("task:*", cursor=cursor, limit=50)
        assert len(page.memories) <= 50
        seen.extend(page.memories)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(m.id for m in seen) == [n for n in sorted(names) if n.startswith("task:")]
    first = next(m for m in seen if m.id == "task:000")
    assert (first.version, first.size) == (1, len('{"name":"task:000"}'))
    assert first.ttl_remaining in (499, 500)
    whole = await client.memories(limit=1000)
    assert sorted(m.id for m in whole.memories) == sorted(names)
    assert whole.next_cursor is None
    with pytest.raises(InvalidRequest, match="limit must be between 1 and 1000, got 5000"):
        await client.memories(limit=5000)
    with pytest.raises(ValueError, match="cursor must be a next_cursor"):
        await client.memories(cursor="not-a-cursor")


# -- the rules, as errors with their attributes --------------------------------------------


async def test_payload_too_large_names_the_limit_and_the_size(client: Client) -> None:
    """Every write over the limit raises PayloadTooLarge(limit, actual) and stores nothing."""
    big = "x" * PAYLOAD  # encoded with its quotes: PAYLOAD + 2 bytes
    with pytest.raises(PayloadTooLarge) as caught:
        await client.set("k", big)
    assert (caught.value.limit, caught.value.actual) == (PAYLOAD, PAYLOAD + 2)
    assert (
        caught.value.wire == f"TOOLARGE value is {PAYLOAD + 2} bytes, the limit is {PAYLOAD} bytes"
    )
    with pytest.raises(PayloadTooLarge):
        await client.stash(big)
    memory_id = await client.stash({"half": "y" * (PAYLOAD // 2)})
    with pytest.raises(PayloadTooLarge):
        await client.update(memory_id, big)
    with pytest.raises(PayloadTooLarge) as merged:  # the patch fits, the merged document not
        await client.update(memory_id, merge={"other": "z" * (PAYLOAD // 2)})
    assert merged.value.limit == PAYLOAD
    assert merged.value.actual > PAYLOAD
    assert not await client.exists("k")
    assert (await client.recall(memory_id, with_meta=True)).version == 1


async def test_invalid_ttl_names_the_request_and_the_maximum(client: Client) -> None:
    """TTLs beyond the maximum raise InvalidTTL(requested, maximum) and change nothing."""
    with pytest.raises(InvalidTTL) as caught:
        await client.set("k", 1, ttl=MAX_TTL + 1)
    assert (caught.value.requested, caught.value.maximum) == (MAX_TTL + 1, MAX_TTL)
    assert caught.value.wire == (
        f"BADTTL ttl {MAX_TTL + 1} seconds exceeds the maximum of {MAX_TTL} seconds"
    )
    with pytest.raises(InvalidTTL):
        await client.stash(1, ttl=MAX_TTL + 1)
    await client.set("k", 1, ttl=100)
    with pytest.raises(InvalidTTL) as extended:
        await client.extend("k", MAX_TTL)
    assert extended.value.requested in (MAX_TTL + 99, MAX_TTL + 100)
    assert extended.value.maximum == MAX_TTL
    with pytest.raises(InvalidTTL):
        await client.update("k", 2, extra_seconds=MAX_TTL + 1)
    assert await client.get("k") == 1
    assert await client.ttl("k") in (99, 100)
    await client.set("max", 1, ttl=MAX_TTL)  # the maximum itself is allowed
    assert await client.ttl("max") in (MAX_TTL - 1, MAX_TTL)


@pytest.mark.parametrize("mode", MODES)
async def test_rate_limited_says_how_long_to_wait(
    mode: str, tmp_path: Path, limited_daemon: StashDaemon, redis_for_clients: RedisServer
) -> None:
    """Past the burst every call raises RateLimited with retry_after; nothing runs."""
    c, cleanup = make_client(
        mode, tmp_path, limited_daemon, redis_for_clients.port, rate_limit="5/min", rate_burst=5
    )
    try:
        for i in range(5):
            await c.set(f"k{i}", i)
        with pytest.raises(RateLimited) as caught:
            await c.set("k5", 5)
        assert 0 < caught.value.retry_after_ms <= 12_000
        assert caught.value.retry_after == caught.value.retry_after_ms / 1000
        assert isinstance(caught.value, StashError)
    finally:
        await c.close()
        cleanup()


async def test_a_closed_client_raises_store_unavailable(client: Client) -> None:
    """After close every call says the client is closed; closing again is harmless."""
    await client.set("k", 1)
    await client.close()
    await client.close()
    with pytest.raises(StoreUnavailable, match="store unavailable: the client is closed"):
        await client.get("k")


# -- sharing ---------------------------------------------------------------------------


async def _increment(client: Client, memory_id: str, times: int) -> int:
    """Optimistic increments: read the version, update at it, retry on Conflict."""
    conflicts = 0
    for _ in range(times):
        while True:
            meta = await client.recall(memory_id, with_meta=True)
            try:
                await client.update(memory_id, {"n": meta.data["n"] + 1}, if_version=meta.version)
                break
            except Conflict:
                conflicts += 1
    return conflicts


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_client_is_shared_by_threads(
    backend: str, tmp_path: Path, daemon: StashDaemon, redis_for_clients: RedisServer
) -> None:
    """Threads share a Stash: versioned increments never lose one, plain writes all land."""
    c, cleanup = make_client(f"{backend}-sync", tmp_path, daemon, redis_for_clients.port)
    stash = c.inner
    assert isinstance(stash, Stash)
    memory_id = stash.stash({"n": 0})
    threads, times = 6, 40
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(times):
                stash.set(f"t{t}:{i}", {"thread": t, "i": i})
            asyncio.run(_increment(c, memory_id, times))
            for i in range(times):
                assert stash.get(f"t{t}:{i}") == {"thread": t, "i": i}
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    assert errors == []
    meta = stash.recall(memory_id, with_meta=True)
    assert meta is not None
    assert meta.data == {"n": threads * times}
    assert meta.version == 1 + threads * times
    assert len(list(stash.keys("t*:*"))) == threads * times  # ":" keeps the base62 id out
    stash.close()
    cleanup()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_one_client_is_shared_by_tasks(
    backend: str, tmp_path: Path, daemon: StashDaemon, redis_for_clients: RedisServer
) -> None:
    """Tasks share an AsyncStash: versioned increments never lose one, plain writes all land."""
    c, cleanup = make_client(f"{backend}-async", tmp_path, daemon, redis_for_clients.port)
    memory_id = await c.stash({"n": 0})
    tasks, times = 10, 20

    async def work(t: int) -> None:
        await asyncio.gather(*(c.set(f"t{t}:{i}", i) for i in range(times)))
        await _increment(c, memory_id, times)
        assert await asyncio.gather(*(c.get(f"t{t}:{i}") for i in range(times))) == list(
            range(times)
        )

    await asyncio.gather(*(work(t) for t in range(tasks)))
    meta = await c.recall(memory_id, with_meta=True)
    assert (meta.data, meta.version) == ({"n": tasks * times}, 1 + tasks * times)
    assert len(await c.keys("t*:*")) == tasks * times  # ":" keeps the base62 id out
    await c.close()
    cleanup()


# -- remote only: what an in-process client has no way to meet ----------------------------


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_closing_a_remote_client_closes_its_connections(
    face: str, daemon: StashDaemon
) -> None:
    """No socket is left for the garbage collector to find (and warn about) after close."""
    url = f"redis://127.0.0.1:{daemon.port}"

    async def use_and_close() -> None:  # every reference to the client ends with it
        if face == "async":
            client = AsyncStash(url=url, api_key="closing")
            await client.set("k", 1)
            await client.aclose()
        else:
            sync = Stash(url=url, api_key="closing")
            sync.set("k", 1)
            sync.close()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        await use_and_close()
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_a_refused_key_raises_authentication_error(face: str) -> None:
    """A strict daemon refuses an unknown key: WrongPass, an AuthenticationError, both APIs."""
    with StashDaemon("--no-http", "--auth", "keys") as strict:
        url = f"redis://127.0.0.1:{strict.port}"
        key = "sk_live_" + "0" * 38
        if face == "sync":
            with Stash(url=url, api_key=key) as stash, pytest.raises(WrongPass) as caught:
                stash.get("k")
        else:
            async with AsyncStash(url=url, api_key=key) as astash:
                with pytest.raises(WrongPass) as caught:
                    await astash.get("k")
        assert isinstance(caught.value, AuthenticationError)
        assert caught.value.wire == "WRONGPASS invalid username-password pair or user is disabled."


@pytest.mark.parametrize("face", ["sync", "async"])
async def test_an_unreachable_daemon_raises_store_unavailable(face: str) -> None:
    """Nothing listening: StoreUnavailable naming where, without the key in the text."""
    from tests.support.servers import free_port  # noqa: PLC0415

    url = f"redis://:secret-key@127.0.0.1:{free_port()}"
    if face == "sync":
        with Stash(url=url) as stash, pytest.raises(StoreUnavailable) as caught:
            stash.get("k")
    else:
        async with AsyncStash(url=url) as astash:
            with pytest.raises(StoreUnavailable) as caught:
                await astash.get("k")
    assert "cannot reach redis://:***@127.0.0.1:" in caught.value.message
    assert "secret-key" not in caught.value.message
    assert json.dumps(caught.value.message)  # plain text, printable


@pytest.mark.parametrize("cls", [Stash, AsyncStash])
def test_every_public_method_has_a_docstring_with_an_example(cls: type) -> None:
    """The API promises an example in every docstring; a new method without one fails here."""
    import inspect  # noqa: PLC0415 - only this test needs it

    missing = [
        name
        for name, fn in inspect.getmembers(cls, predicate=inspect.isfunction)
        if not name.startswith("_") and "Example" not in (inspect.getdoc(fn) or "")
    ]
    assert missing == []
    assert "Example" in (inspect.getdoc(cls) or "")
