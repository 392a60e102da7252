"""GET /watch: keyspace events as Server-Sent Events, in order, resumable, per namespace."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import redis.asyncio as aredis

from stashd.pubsub import Hub
from stashd.watchlog import MAX_AGE, MAX_EVENTS, RESET, WATCHER_BUFFER, Watcher, WatchLog
from tests.support.servers import StashDaemon

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

WAIT = 10.0


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    """One memory-backed daemon with its HTTP door."""
    with StashDaemon("--backend", "memory") as d:
        yield d


async def _frames(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Each SSE frame with an event, as a dict of its fields."""
    fields: dict[str, Any] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "event" in fields:
                yield fields
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value


async def _take(frames: AsyncIterator[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while len(out) < n:
        out.append(await anext(frames))
    return out


def _key() -> str:
    return f"k-{uuid.uuid4().hex}"


async def test_events_arrive_in_order_with_ids(daemon: StashDaemon) -> None:
    """A watcher hears its namespace's writes matching its glob, with increasing ids."""
    key = _key()
    r = aredis.Redis(port=daemon.port, password=key)
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        aiohttp.ClientSession(daemon.http_url, timeout=timeout) as http,
        http.get("/watch", params={"pattern": "task:*"}, headers={"X-API-KEY": key}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        frames = _frames(resp)
        await r.set("other", 1)
        await r.set("task:1", 1)
        await r.expire("task:1", 100)
        await r.delete("task:1")
        got = await _take(frames, 3)
        assert [f["event"] for f in got] == ["set", "expire", "del"]
        assert all('"key":"task:1"' in f["data"] for f in got)
        ids = [int(f["id"]) for f in got]
        assert ids == sorted(ids)
        assert len(set(ids)) == 3
    await r.aclose()


async def test_reconnect_with_last_event_id_loses_nothing_under_load(daemon: StashDaemon) -> None:
    """A watcher that drops and resumes with Last-Event-ID hears every write exactly once."""
    key = _key()
    r = aredis.Redis(port=daemon.port, password=key)
    timeout = aiohttp.ClientTimeout(total=WAIT * 3)
    total = 300
    seen: list[str] = []
    last: str | None = None
    async with aiohttp.ClientSession(daemon.http_url, timeout=timeout) as http:
        written = 0
        while len(seen) < total:
            headers = {"X-API-KEY": key}
            if last is not None:
                headers["Last-Event-ID"] = last
            async with http.get("/watch", headers=headers) as resp:
                frames = _frames(resp)
                # Write a burst, read a part of it, and drop the stream mid-way.
                burst = min(50, total - written)
                pipe = r.pipeline(transaction=False)
                for i in range(written, written + burst):
                    pipe.set(f"n:{i}", i)
                await pipe.execute()
                written += burst
                for f in await _take(frames, min(20, total - len(seen))):
                    assert f["event"] == "set"
                    seen.append(f["data"])
                    last = f["id"]
    assert len(seen) == total
    assert seen == [f'{{"event":"set","key":"n:{i}"}}' for i in range(total)]
    await r.aclose()


async def test_an_id_older_than_the_log_gets_reset(daemon: StashDaemon) -> None:
    """An id the log no longer holds (here: from before this daemon) gets a reset first."""
    key = _key()
    r = aredis.Redis(port=daemon.port, password=key)
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        aiohttp.ClientSession(daemon.http_url, timeout=timeout) as http,
        http.get("/watch", params={"last_event_id": "5"}, headers={"X-API-KEY": key}) as resp,
    ):
        frames = _frames(resp)
        first = await anext(frames)
        assert first["event"] == "reset"
        await r.set("a", 1)
        after = await anext(frames)
        assert after["event"] == "set"
        assert int(after["id"]) > int(first["id"])
    await r.aclose()


async def test_another_namespace_hears_nothing(daemon: StashDaemon) -> None:
    """Writes under another key reach no watcher of this one."""
    mine, theirs = _key(), _key()
    r_theirs = aredis.Redis(port=daemon.port, password=theirs)
    r_mine = aredis.Redis(port=daemon.port, password=mine)
    timeout = aiohttp.ClientTimeout(total=WAIT)
    async with (
        aiohttp.ClientSession(daemon.http_url, timeout=timeout) as http,
        http.get("/watch", headers={"X-API-KEY": mine}) as resp,
    ):
        frames = _frames(resp)
        await r_theirs.set("secret", 1)
        await r_mine.set("mine", 1)
        got = await anext(frames)
        assert got["data"] == '{"event":"set","key":"mine"}'
    await r_theirs.aclose()
    await r_mine.aclose()


async def test_a_bad_last_event_id_is_refused(daemon: StashDaemon) -> None:
    """A Last-Event-ID that is not a number is a 400 naming it."""
    async with (
        aiohttp.ClientSession(daemon.http_url) as http,
        http.get("/watch", headers={"X-API-KEY": _key(), "Last-Event-ID": "abc"}) as resp,
    ):
        assert resp.status == 400
        assert "abc" in (await resp.json())["error"]["message"]


class _Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _open(log: WatchLog, ns: str, last: int | None = None) -> Watcher:
    return log.open(ns, b"*", last, lambda _w: None)


def test_an_id_trimmed_from_the_ring_gets_reset_and_a_held_one_resumes() -> None:
    """Past MAX_EVENTS the oldest ids fall out: resuming from them is a reset."""
    hub, clock = Hub(), _Clock()
    log = WatchLog(hub, clock)
    first = _open(log, "ns")
    ids: list[int] = []
    for i in range(MAX_EVENTS + 5):
        hub.notify("ns", b"set", b"k%d" % i)
        ids += [e.id for e in first.take()]
    assert len(ids) == MAX_EVENTS + 5
    log.close(first)
    stale = _open(log, "ns", ids[0])
    assert [e.event for e in stale.take()] == [RESET]
    held = _open(log, "ns", ids[-3])
    assert [e.id for e in held.take()] == ids[-2:]


def test_idle_logs_are_dropped_and_the_hub_untapped() -> None:
    """A namespace nobody watched for MAX_AGE seconds holds nothing and is not tapped."""
    hub, clock = Hub(), _Clock()
    log = WatchLog(hub, clock)
    for n in range(100):
        watcher = _open(log, f"ns{n}")
        hub.notify(f"ns{n}", b"set", b"k")
        log.close(watcher)
    assert log.logs() == 100
    clock.now += MAX_AGE
    log.prune()
    assert log.logs() == 0
    assert not hub.listening


def test_a_watcher_past_its_buffer_is_cut() -> None:
    """A watcher that never takes its events is cut at WATCHER_BUFFER, holding none."""
    hub = Hub()
    log = WatchLog(hub, _Clock())
    watcher = _open(log, "ns")
    for i in range(WATCHER_BUFFER + 1):
        hub.notify("ns", b"set", b"k%d" % i)
    assert watcher.cut
    assert watcher.overflow
    assert not watcher.pending
