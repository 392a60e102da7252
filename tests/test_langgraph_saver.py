"""StashSaver and AsyncStashSaver: LangGraph's conformance suite on every Stash, and TTLs.

The conformance suite runs against embedded memory and SQLite, the Redis backend on a
redis-server the session started, and a stashd over RESP. TTLs are checked on an
embedded memory Stash whose store runs on a clock the test moves, so no test waits
for a TTL.
"""

from __future__ import annotations

import asyncio
import operator
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)
from langgraph.graph import END, START, StateGraph

from stashd import AsyncStash, Conflict, InvalidTTL, Stash
from stashd.clientmode import Embedded, choose
from stashd.langgraph import AsyncStashSaver, StashSaver
from stashd.langgraph.saver import next_version
from stashd.store.memory import MemoryStore
from tests.support.clock import Clock
from tests.support.door import T0
from tests.support.servers import RedisServer, StashDaemon

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import Checkpoint
    from langgraph.checkpoint.conformance.report import CapabilityReport

EXTENDED = {"copy_thread", "prune", "delete_for_runs"}


def _check(report: CapabilityReport) -> None:
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert report.passed_all_base(), failures
    for name in EXTENDED:
        assert report.results[name].passed is True, failures
    assert report.conformance_level() == "FULL"


async def _conform_sync(stash: Stash) -> CapabilityReport:
    @checkpointer_test(name=f"StashSaver {stash!r}")
    async def factory() -> AsyncIterator[StashSaver]:
        yield StashSaver(stash, ttl=600)

    return await validate(factory)


async def test_conformance_memory() -> None:
    """StashSaver on an embedded memory Stash passes every capability."""
    with Stash("memory") as stash:
        _check(await _conform_sync(stash))


async def test_conformance_sqlite(tmp_path: Path) -> None:
    """StashSaver on an embedded SQLite file passes every capability."""
    with Stash(path=tmp_path / "saver.db") as stash:
        _check(await _conform_sync(stash))


async def test_conformance_redis(redis_store: RedisServer) -> None:
    """StashSaver on the Redis backend passes every capability."""
    redis_store.flush()
    with Stash(backend="redis", redis_url=redis_store.url) as stash:
        _check(await _conform_sync(stash))


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    """A stashd on the memory backend, for the savers' remote runs."""
    with StashDaemon("--backend", "memory", "--no-http") as started:
        yield started


async def test_conformance_remote(daemon: StashDaemon) -> None:
    """StashSaver on a stashd over RESP, in a namespace of its own, passes every capability."""
    with Stash(url=f"redis://127.0.0.1:{daemon.port}", api_key="saver") as stash:
        _check(await _conform_sync(stash))


async def _conform_async(stash: AsyncStash) -> CapabilityReport:
    @checkpointer_test(name=f"AsyncStashSaver {stash!r}")
    async def factory() -> AsyncIterator[AsyncStashSaver]:
        yield AsyncStashSaver(stash, ttl=600)

    return await validate(factory)


async def test_conformance_async_memory() -> None:
    """AsyncStashSaver on an embedded memory AsyncStash passes every capability."""
    async with AsyncStash("memory") as stash:
        _check(await _conform_async(stash))


async def test_conformance_async_redis(redis_store: RedisServer) -> None:
    """AsyncStashSaver on the Redis backend passes every capability."""
    redis_store.flush()
    async with AsyncStash(backend="redis", redis_url=redis_store.url) as stash:
        _check(await _conform_async(stash))


async def test_conformance_async_remote(daemon: StashDaemon) -> None:
    """AsyncStashSaver on a stashd over RESP passes every capability."""
    url = f"redis://127.0.0.1:{daemon.port}"
    async with AsyncStash(url=url, api_key="async-saver") as stash:
        _check(await _conform_async(stash))


# -- TTLs on a clock the test moves ---------------------------------------------------


class ClockedStash(Stash):
    """An embedded memory Stash whose store tells time by ``clock``."""

    def __init__(self, clock: Clock, **settings: Any) -> None:
        target = choose("memory", None, None, None, settings)
        assert isinstance(target, Embedded)
        self._open(replace(target, store=MemoryStore(clock)))


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def stash(clock: Clock) -> Iterator[Stash]:
    with ClockedStash(clock, default_ttl=120, max_ttl=3600) as opened:
        yield opened


def _cfg(thread: str, ns: str = "") -> Any:  # noqa: ANN401 - a RunnableConfig
    """A config for ``thread`` (generate_config swaps an empty thread id for a new one)."""
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}


def _put(
    saver: StashSaver, thread: str, parent: RunnableConfig | None = None, ns: str = ""
) -> RunnableConfig:
    config = _cfg(thread, ns)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    cp: Checkpoint = generate_checkpoint(
        channel_values={"v": thread}, channel_versions={"v": next_version(None)}
    )
    return saver.put(config, cp, generate_metadata(), dict(cp["channel_versions"]))


def _ttls(stash: Stash) -> dict[str, int | None]:
    return {k: stash.ttl(k) for k in stash.keys("lg:*")}


def test_thread_expires_whole(stash: Stash, clock: Clock) -> None:
    """Each write extends every key of the thread: they expire together, ttl after it."""
    saver = StashSaver(stash, ttl=60)
    first = _put(saver, "t")
    clock.now += 30_000
    assert set(_ttls(stash).values()) == {30}
    second = _put(saver, "t", first)
    saver.put_writes(second, [("ch", 1)], "task")
    assert set(_ttls(stash).values()) == {60}, "the earlier keys were extended"
    assert len(_ttls(stash)) == 4  # two checkpoints, two channel values
    clock.now += 59_000
    assert saver.get_tuple(first) is not None
    assert saver.get_tuple(generate_config("t")) is not None
    clock.now += 2_000
    assert list(stash.keys("lg:*")) == []
    assert saver.get_tuple(generate_config("t")) is None


def test_refresh_on_read(stash: Stash, clock: Clock) -> None:
    """With refresh_on_read, reading a checkpoint keeps its whole thread alive."""
    lazy, eager = StashSaver(stash, ttl=60), StashSaver(stash, ttl=60, refresh_on_read=True)
    stored = {name: _put(lazy, name) for name in ("lazy", "eager")}
    for _ in range(3):  # 150 s in all, reading every 50 s
        clock.now += 50_000
        lazy.get_tuple(stored["lazy"])
        eager.get_tuple(stored["eager"])
    assert lazy.get_tuple(generate_config("lazy")) is None
    tup = eager.get_tuple(generate_config("eager"))
    assert tup is not None
    assert tup.checkpoint["channel_values"] == {"v": "eager"}
    assert set(_ttls(stash).values()) == {60}


def test_default_ttl(stash: Stash, clock: Clock) -> None:
    """Without a ttl the Stash's default applies, and writes extend back to it."""
    saver = StashSaver(stash)
    first = _put(saver, "t")
    clock.now += 100_000
    _put(saver, "t", first)
    assert set(_ttls(stash).values()) == {120}


def test_ttl_over_the_maximum(stash: Stash) -> None:
    """A ttl over the Stash's maximum is its InvalidTTL at the first write; nothing stored."""
    saver = StashSaver(stash, ttl=3601)
    with pytest.raises(InvalidTTL):
        _put(saver, "t")
    assert list(stash.keys("*")) == []


def test_ttl_at_the_maximum(stash: Stash, clock: Clock) -> None:
    """Extending to a ttl that is the maximum never asks for more (the seconds are rounded)."""
    saver = StashSaver(stash, ttl=3600)
    first = _put(saver, "t")
    clock.now += 10_600  # 3589.4 s left, told as 3589
    _put(saver, "t", first)
    # 3589.4 + 11 would pass the maximum: the key gets 10 more (3599.4 s), within a second.
    assert set(_ttls(stash).values()) == {3599, 3600}


def test_bad_ttl() -> None:
    """ttl is a positive whole number of seconds."""
    with Stash("memory") as stash:
        with pytest.raises(ValueError, match="positive number of seconds, got 0"):
            StashSaver(stash, ttl=0)
        with pytest.raises(TypeError, match="got float"):
            StashSaver(stash, ttl=1.5)  # type: ignore[arg-type]


# -- threads kept apart ---------------------------------------------------------------

ODD = ["a", "a:b", "a:*", "a*", "[a]", "a?", "", "ünï cødé ✓", "a%3Ab", "a\\b"]


def test_odd_thread_ids_kept_apart() -> None:
    """Thread ids and namespaces holding ':' or glob characters never reach one another."""
    with Stash("memory") as stash:
        saver = StashSaver(stash, ttl=600)
        for thread in ODD:
            for ns in ("", "child:1", "*"):
                _put(saver, thread, ns=ns)
        for thread in ODD:
            listed = list(saver.list({"configurable": {"thread_id": thread}}))
            assert len(listed) == 3, thread
            assert {t.checkpoint["channel_values"]["v"] for t in listed} == {thread}
            assert {t.config["configurable"]["thread_id"] for t in listed} == {thread}
            for ns in ("", "child:1", "*"):
                tup = saver.get_tuple(_cfg(thread, ns))
                assert tup is not None
                assert tup.config["configurable"]["checkpoint_ns"] == ns
        assert len(list(saver.list(None))) == 3 * len(ODD)


def test_delete_thread_removes_only_that_thread() -> None:
    """delete_thread takes a thread's keys and leaves every other thread whole."""
    with Stash("memory") as stash:
        saver = StashSaver(stash, ttl=600)
        for thread in ODD:
            stored = _put(saver, thread)
            saver.put_writes(stored, [("ch", thread)], "task")
        saver.delete_thread("a")
        assert saver.get_tuple(generate_config("a")) is None
        for thread in ODD[1:]:
            tup = saver.get_tuple(_cfg(thread))
            assert tup is not None, thread
            assert tup.pending_writes == [("task", "ch", thread)]
        assert len(list(stash.keys("lg:*"))) == 2 * (len(ODD) - 1)


def test_put_writes_all_or_none_and_kept(stash: Stash) -> None:
    """A task's regular writes are not replaced by a retry; its special ones are."""
    saver = StashSaver(stash, ttl=600)
    stored = _put(saver, "t")
    saver.put_writes(stored, [("a", 1), ("b", 2), ("__error__", "first")], "task")
    saver.put_writes(stored, [("a", 10), ("b", 20), ("__error__", "second")], "task")
    tup = saver.get_tuple(stored)
    assert tup is not None
    assert sorted(tup.pending_writes or []) == [
        ("task", "__error__", "second"),
        ("task", "a", 1),
        ("task", "b", 2),
    ]


class RacedStash(Stash):
    """A memory Stash where another task's writes land just before the first versioned update.

    So a put_writes loses the race for its checkpoint's version once, as it would when
    two tasks of a super-step finish together.
    """

    def __init__(self) -> None:
        super().__init__("memory")
        self.race: Any = None
        self.conflicts = 0

    def update(self, *args: Any, **kwargs: Any) -> Any:
        race, self.race = self.race, None
        if race is not None and kwargs.get("if_version") is not None:
            race()
        try:
            return super().update(*args, **kwargs)
        except Conflict:
            self.conflicts += 1
            raise


def test_put_writes_retries_a_lost_race() -> None:
    """Writes that lose the checkpoint's version to another task are read again, not lost."""
    with RacedStash() as stash:
        saver = StashSaver(stash, ttl=600)
        stored = _put(saver, "t")
        stash.race = lambda: saver.put_writes(stored, [("a", "other")], "other")
        saver.put_writes(stored, [("a", "mine"), ("__interrupt__", "stop")], "mine")
        assert stash.conflicts == 1
        tup = saver.get_tuple(stored)
        assert tup is not None
        assert sorted(tup.pending_writes or []) == [
            ("mine", "__interrupt__", "stop"),
            ("mine", "a", "mine"),
            ("other", "a", "other"),
        ]


class FirstWriteRace(Stash):
    """A memory Stash where another write makes a document just before the first add of one.

    LangGraph saves a step's checkpoint and that step's writes from different threads,
    so either may be the first to make the checkpoint's document.
    """

    def __init__(self) -> None:
        super().__init__("memory")
        self.race: Any = None

    def add(self, *args: Any, **kwargs: Any) -> bool:
        race, self.race = self.race, None
        if race is not None:
            race()
        return super().add(*args, **kwargs)


def _checkpoint() -> tuple[Checkpoint, RunnableConfig]:
    cp: Checkpoint = generate_checkpoint(
        channel_values={"v": 1}, channel_versions={"v": next_version(None)}
    )
    at: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": cp["id"]}}
    return cp, at


@pytest.mark.parametrize("first", ["writes", "checkpoint"])
def test_a_checkpoint_and_its_writes_made_at_once_keep_both(first: str) -> None:
    """Whichever makes the document first, the other merges into it: nothing is wiped."""
    with FirstWriteRace() as stash:
        saver = StashSaver(stash, ttl=600)
        cp, at = _checkpoint()

        def put() -> None:
            saver.put(_cfg("t"), cp, generate_metadata(), dict(cp["channel_versions"]))

        def writes() -> None:
            saver.put_writes(at, [("__interrupt__", "stop")], "task")

        if first == "writes":
            stash.race = writes  # the writes make the document under the put's add
            put()
        else:
            stash.race = put  # the checkpoint is made under the writes' add
            writes()
        tup = saver.get_tuple(at)
        assert tup is not None
        assert tup.checkpoint["id"] == cp["id"]
        assert tup.pending_writes == [("task", "__interrupt__", "stop")]


# -- the async saver's blocking methods -----------------------------------------------


async def test_async_saver_blocking_methods() -> None:
    """From another thread the blocking methods run on the saver's loop; on it they refuse."""
    async with AsyncStash("memory") as stash:
        saver = AsyncStashSaver(stash, ttl=600)
        cp = generate_checkpoint()
        stored = await asyncio.to_thread(
            saver.put, generate_config("t"), cp, generate_metadata(), {}
        )
        tup = await saver.aget_tuple(stored)
        assert tup is not None
        assert tup.checkpoint["id"] == cp["id"]
        listed = await asyncio.to_thread(lambda: list(saver.list(generate_config("t"))))
        assert [t.checkpoint["id"] for t in listed] == [cp["id"]]
        with pytest.raises(RuntimeError, match=r"await saver\.aget_tuple"):
            saver.get_tuple(stored)


# -- a graph ----------------------------------------------------------------------------


class _State(TypedDict):
    seen: Annotated[list[str], operator.add]


def test_graph_resumes_a_thread() -> None:
    """A compiled graph keeps its state in the saver between invocations of one thread."""
    builder = StateGraph(_State)
    builder.add_node("echo", lambda state: {"seen": ["echo"]})
    builder.add_edge(START, "echo")
    builder.add_edge("echo", END)
    with Stash("memory") as stash:
        graph = builder.compile(checkpointer=StashSaver(stash, ttl=600))
        config: Any = {"configurable": {"thread_id": str(uuid.uuid4())}}
        graph.invoke({"seen": ["in"]}, config)
        final = graph.invoke({"seen": ["again"]}, config)
        assert final["seen"] == ["in", "echo", "again", "echo"]
        assert len(list(graph.get_state_history(config))) >= 4
