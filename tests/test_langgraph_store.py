"""StashStore and AsyncStashStore: LangGraph's BaseStore on every Stash backend."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    SearchOp,
    TTLConfig,
)
from langgraph.store.memory import InMemoryStore

from stashd import AsyncStash, Stash
from stashd.errors import InvalidTTL
from stashd.langgraph import AsyncStashStore, StashStore
from stashd.langgraph.keys import key as make_key
from tests.support.servers import RedisServer, StashDaemon

BACKENDS = ("memory", "sqlite", "redis", "remote")
#: The remote backend's daemon settings: the tests that set a Stash's limits use these.
DAEMON_SETTINGS = {"default_ttl": 123, "max_ttl": 3600}
KINDS = ("sync", "async")


class Harness:
    """One store under test, called the same way whether it is StashStore or AsyncStashStore.

    ``h.put(...)`` calls ``store.put`` or awaits ``store.aput`` on the harness's own loop;
    ``h.raw(name, ...)`` calls the Stash underneath the same way, to look at what was kept.
    """

    def __init__(self, kind: str, open_stash: Callable[..., Any], ttl: TTLConfig | None) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop()
        if kind == "sync":
            self.stash: Any = open_stash(Stash)
            self.store: Any = StashStore(self.stash, ttl=ttl)
        else:

            async def opened() -> tuple[Any, Any]:
                stash = open_stash(AsyncStash)
                return stash, AsyncStashStore(stash, ttl=ttl)

            self.stash, self.store = self.loop.run_until_complete(opened())

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.kind == "sync":
                return getattr(self.store, name)(*args, **kwargs)
            return self.loop.run_until_complete(getattr(self.store, "a" + name)(*args, **kwargs))

        return call

    def raw(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "sync":
            return getattr(self.stash, name)(*args, **kwargs)
        return self.loop.run_until_complete(getattr(self.stash, name)(*args, **kwargs))

    def stored_keys(self) -> list[str]:
        if self.kind == "sync":
            return sorted(self.stash.keys("*"))

        async def collect() -> list[str]:
            return sorted([k async for k in self.stash.keys("*")])

        return self.loop.run_until_complete(collect())

    def clear(self) -> None:
        stored = self.stored_keys()
        if stored:
            self.raw("forget", *stored)

    def close(self) -> None:
        if self.kind == "sync":
            self.stash.close()
        else:
            self.loop.run_until_complete(self.stash.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def redis_for_store() -> Iterator[RedisServer]:
    """A redis-server of this module's own, flushed by every test that uses it."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def daemon_for_store() -> Iterator[StashDaemon]:
    """A stashd of this module's own (memory backend), emptied by every test that uses it."""
    flags = ["--default-ttl", str(DAEMON_SETTINGS["default_ttl"])]
    flags += ["--max-ttl", str(DAEMON_SETTINGS["max_ttl"])]
    with StashDaemon("--no-http", "--backend", "memory", *flags) as daemon:
        yield daemon


@pytest.fixture(params=[(b, k) for b in BACKENDS for k in KINDS], ids=lambda p: f"{p[0]}-{p[1]}")
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    """A factory of harnesses on one backend and kind: ``make(ttl=..., **stash_settings)``."""
    backend, kind = request.param
    url = None
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_for_store")
        server.flush()
        url = server.url
    if backend == "remote":
        daemon: StashDaemon = request.getfixturevalue("daemon_for_store")
        url = f"redis://{daemon.host}:{daemon.port}"
    made: list[Harness] = []

    def factory(ttl: TTLConfig | None = None, **settings: Any) -> Harness:
        def open_stash(cls: type[Any]) -> Any:
            if backend == "memory":
                return cls("memory", **settings)
            if backend == "sqlite":
                return cls(path=tmp_path / f"store{len(made)}.db", **settings)
            if backend == "remote":
                # The daemon's limits apply to a remote client: the ones tests ask for.
                assert settings.items() <= DAEMON_SETTINGS.items(), settings
                return cls(url=url)
            return cls(backend="redis", redis_url=url, **settings)

        harness = Harness(kind, open_stash, ttl)
        if backend == "remote":
            harness.clear()
        made.append(harness)
        return harness

    yield factory
    for harness in made:
        if backend == "remote":
            harness.clear()
        harness.close()


@pytest.fixture
def h(make: Callable[..., Harness]) -> Harness:
    """A harness with no TTL configuration (items get the Stash's default TTL)."""
    return make()


def item_key(namespace: tuple[str, ...], key: str) -> str:
    return make_key("langgraph", "store", *namespace, key)


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until it holds (expiry is on Stash's clock, in whole seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        time.sleep(0.05)


# -- put, get, delete ------------------------------------------------------------------


def test_put_get_delete(h: Harness) -> None:
    """An item comes back with its value and times; put(None) and delete remove it."""
    h.put(("users", "u1"), "prefs", {"theme": "dark", "n": [1, 2]})
    item = h.get(("users", "u1"), "prefs")
    assert item.value == {"theme": "dark", "n": [1, 2]}
    assert (item.namespace, item.key) == (("users", "u1"), "prefs")
    assert item.created_at == item.updated_at
    assert item.created_at.tzinfo is not None
    assert h.get(("users", "u1"), "other") is None
    assert h.get(("users",), "prefs") is None
    h.delete(("users", "u1"), "prefs")
    assert h.get(("users", "u1"), "prefs") is None
    h.put(("users",), "a", {"x": 1})
    h.batch([PutOp(("users",), "a", None)])
    assert h.get(("users",), "a") is None
    assert h.stored_keys() == []


def test_put_again_keeps_created_at(h: Harness) -> None:
    """A put over an item replaces the value and updated_at, not when it was created."""
    h.put(("ns",), "k", {"v": 1})
    first = h.get(("ns",), "k")
    h.put(("ns",), "k", {"v": 2})
    second = h.get(("ns",), "k")
    assert second.value == {"v": 2}
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at


def test_odd_parts_are_kept_apart(h: Harness) -> None:
    """Labels and keys with ':' '*' '%' unicode, and keys with '.', never reach each other."""
    places = [
        (("a:b",), "c"),
        (("a", "b"), "c"),
        (("a",), "b:c"),
        (("*",), "k"),
        (("x",), "*"),
        (("x",), "k.v"),
        (("x",), "k"),
        (("%3A",), "k"),
        (("ünï", "🙂"), "ключ"),
        (("a", "b", "c"), "d"),
    ]
    for i, (ns, key) in enumerate(places):
        h.put(ns, key, {"i": i})
    for i, (ns, key) in enumerate(places):
        item = h.get(ns, key)
        assert (item.namespace, item.key, item.value) == (ns, key, {"i": i})
    assert {(i.namespace, i.key) for i in h.search((), limit=100)} == set(places)
    assert [(i.namespace, i.key) for i in h.search(("*",))] == [(("*",), "k")]
    assert {i.key for i in h.search(("a",))} == {"b:c", "c", "d"}
    assert {i.key for i in h.search(("a", "b"))} == {"c", "d"}
    assert h.list_namespaces(prefix=("a:b",)) == [("a:b",)]


def test_namespace_labels_langgraph_refuses(h: Harness) -> None:
    """Labels LangGraph refuses ('.', empty, a "langgraph" root) are refused, nothing written."""
    for ns in [("a.b",), ("a", ""), (), ("langgraph", "x")]:
        with pytest.raises(InvalidNamespaceError):
            h.put(ns, "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        h.batch([PutOp(("ok",), "k", {"v": 1}), GetOp(("a.b",), "k")])
    with pytest.raises(InvalidNamespaceError, match="empty"):
        h.batch([PutOp((), "k", {"v": 1})])
    assert h.stored_keys() == []


def test_query_and_index_refused(h: Harness) -> None:
    """Semantic search and per-item indexing need a vector index: refused, never ignored."""
    h.put(("docs",), "d", {"text": "hello"})
    with pytest.raises(NotImplementedError, match="no vector index") as caught:
        h.search(("docs",), query="greetings")
    assert "greetings" in str(caught.value)
    with pytest.raises(NotImplementedError, match="no vector index"):
        h.put(("docs",), "e", {"text": "x"}, index=["text"])
    assert h.get(("docs",), "e") is None
    h.put(("docs",), "f", {"text": "x"}, index=False)  # asks for no index: nothing to refuse
    assert h.get(("docs",), "f") is not None


# -- search and filters ----------------------------------------------------------------


def fill(h: Harness) -> None:
    for i in range(6):
        ns = ("docs", "even" if i % 2 == 0 else "odd")
        h.put(
            ns,
            f"d{i}",
            {"n": i, "tag": "t" + str(i % 3), "meta": {"lang": "en" if i < 3 else "fr"}},
        )


def test_search_filters(h: Harness) -> None:
    """Plain equality, nested objects and each $ operator select as InMemoryStore's do."""
    fill(h)

    def keys(**kwargs: Any) -> set[str]:
        return {i.key for i in h.search(("docs",), limit=100, **kwargs)}

    assert keys() == {f"d{i}" for i in range(6)}
    assert keys(filter={"tag": "t1"}) == {"d1", "d4"}
    assert keys(filter={"meta": {"lang": "fr"}}) == {"d3", "d4", "d5"}
    assert keys(filter={"n": {"$gt": 3}}) == {"d4", "d5"}
    assert keys(filter={"n": {"$gte": 3, "$lt": 5}}) == {"d3", "d4"}
    assert keys(filter={"n": {"$lte": 1}}) == {"d0", "d1"}
    assert keys(filter={"n": {"$ne": 0}, "tag": "t0"}) == {"d3"}
    assert keys(filter={"n": {"$eq": 2}}) == {"d2"}
    assert keys(filter={"missing": {"$gt": 1}}) == set()
    assert keys(filter={"tag": {"$gt": 1}}) == set()  # text against a number: no match
    assert {i.key for i in h.search(("docs", "odd"), limit=100)} == {"d1", "d3", "d5"}
    with pytest.raises(ValueError, match=r"\$regex"):
        h.search(("docs",), filter={"n": {"$regex": "x"}})


def test_search_order_limit_offset(h: Harness) -> None:
    """Newest updated first; limit and offset page through that order."""
    fill(h)
    h.put(("docs", "odd"), "d1", {"n": 1})  # now the most recently updated
    found = h.search(("docs",), limit=100)
    assert found[0].key == "d1"
    assert [i.updated_at for i in found] == sorted((i.updated_at for i in found), reverse=True)
    assert all(i.score is None for i in found)
    pages = [h.search(("docs",), limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert [len(p) for p in pages] == [2, 2, 2, 0]
    assert [i.key for p in pages for i in p] == [i.key for i in found]


def test_search_reads_many_items(h: Harness) -> None:
    """A search over more items than the calls kept in flight at once finds them all."""
    h.batch([PutOp(("many",), f"k{i}", {"i": i}) for i in range(80)])
    found = h.search(("many",), filter={"i": {"$gte": 10}}, limit=100)
    assert sorted(i.value["i"] for i in found) == list(range(10, 80))
    assert h.delete_namespace(("many",)) == 80


# -- list_namespaces -------------------------------------------------------------------


def test_list_namespaces(h: Harness) -> None:
    """Prefix and suffix (with '*'), max_depth, limit and offset, as LangGraph documents."""
    for ns in [
        ("a", "b", "c"),
        ("a", "b", "d", "e"),
        ("a", "b", "d", "i"),
        ("a", "b", "f"),
        ("a", "c", "f"),
        ("z",),
    ]:
        h.put(ns, "k", {"v": 1})
    assert h.list_namespaces(prefix=("a", "b"), max_depth=3) == [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "b", "f"),
    ]
    assert h.list_namespaces(suffix=("f",)) == [("a", "b", "f"), ("a", "c", "f")]
    assert h.list_namespaces(prefix=("a", "*", "f")) == [("a", "b", "f"), ("a", "c", "f")]
    assert h.list_namespaces(prefix=("*", "b"), suffix=("*", "i")) == [("a", "b", "d", "i")]
    assert h.list_namespaces(max_depth=1) == [("a",), ("z",)]
    assert h.list_namespaces(limit=2, offset=1) == [("a", "b", "d", "e"), ("a", "b", "d", "i")]
    assert h.list_namespaces(prefix=("nothing",)) == []
    assert len(h.list_namespaces()) == 6


def test_delete_namespace(h: Harness) -> None:
    """delete_namespace removes a prefix's items (and only those), and says how many."""
    for ns in [("a",), ("a", "b"), ("a", "b", "c"), ("ab",), ("b", "a")]:
        h.put(ns, "k", {"v": 1})
        h.put(ns, "k2", {"v": 2})
    assert h.delete_namespace(("a",)) == 6
    assert h.list_namespaces() == [("ab",), ("b", "a")]
    assert h.delete_namespace(("a",)) == 0
    with pytest.raises(ValueError, match="non-empty"):
        h.delete_namespace(())
    with pytest.raises(InvalidNamespaceError):
        h.delete_namespace(("a.b",))


# -- TTL -------------------------------------------------------------------------------


def test_default_ttl_and_per_put_ttl(make: Callable[..., Harness]) -> None:
    """default_ttl (minutes) for puts without one; a put's own ttl wins; minutes round up."""
    h = make(ttl={"default_ttl": 2})
    h.put(("ns",), "default", {"v": 1})
    h.put(("ns",), "own", {"v": 1}, ttl=0.5)
    h.put(("ns",), "odd", {"v": 1}, ttl=1 / 60 + 1e-9)
    assert h.raw("ttl", item_key(("ns",), "default")) == 120
    assert h.raw("ttl", item_key(("ns",), "own")) == 30
    assert h.raw("ttl", item_key(("ns",), "odd")) in (1, 2)
    for bad in (0, -1):
        with pytest.raises(ValueError, match=f"positive number of minutes, got {bad}"):
            h.put(("ns",), "bad", {"v": 1}, ttl=bad)
    assert h.get(("ns",), "bad") is None


def test_no_ttl_takes_the_stash_default(make: Callable[..., Harness]) -> None:
    """With no ttl and no default_ttl the item still expires: at the Stash's default TTL."""
    h = make(default_ttl=123)
    h.put(("ns",), "a", {"v": 1})
    h.put(("ns",), "b", {"v": 1}, ttl=None)
    assert h.raw("ttl", item_key(("ns",), "a")) == 123
    assert h.raw("ttl", item_key(("ns",), "b")) == 123
    # That TTL is kept with the item, so a read restores it like any other.
    doc = h.raw("get", item_key(("ns",), "a"))
    h.raw("set", item_key(("ns",), "a"), doc, ttl=5)
    h.get(("ns",), "a")
    assert h.raw("ttl", item_key(("ns",), "a")) == 123


def test_ttl_over_the_stash_maximum_is_refused(make: Callable[..., Harness]) -> None:
    """A TTL over the Stash's maximum raises its InvalidTTL: never clamped, nothing written."""
    h = make(max_ttl=3600)
    with pytest.raises(InvalidTTL) as caught:
        h.put(("ns",), "k", {"v": 1}, ttl=61)
    assert (caught.value.requested, caught.value.maximum) == (3660, 3600)
    assert h.get(("ns",), "k") is None
    with pytest.raises(InvalidTTL):
        make(ttl={"default_ttl": 120}, max_ttl=3600).put(("ns",), "k", {"v": 1})


def shorten(h: Harness, namespace: tuple[str, ...], key: str, seconds: int) -> None:
    """Make an item's time left ``seconds``, as if the rest had passed: its value unchanged."""
    stored = item_key(namespace, key)
    h.raw("set", stored, h.raw("get", stored), ttl=seconds)


def test_refresh_on_read(make: Callable[..., Harness]) -> None:
    """A read sets the time left back to the item's own TTL, unless refresh is turned off."""
    h = make(ttl={"default_ttl": 10})
    h.put(("ns",), "k", {"v": 1}, ttl=1)
    h.put(("ns",), "j", {"v": 2})
    shorten(h, ("ns",), "k", 5)
    h.get(("ns",), "k", refresh_ttl=False)
    assert h.raw("ttl", item_key(("ns",), "k")) == 5
    assert h.search(("ns",), refresh_ttl=False)
    assert h.raw("ttl", item_key(("ns",), "k")) == 5
    h.get(("ns",), "k")
    assert h.raw("ttl", item_key(("ns",), "k")) == 60
    shorten(h, ("ns",), "k", 5)
    shorten(h, ("ns",), "j", 5)
    assert len(h.search(("ns",), filter={"v": 1})) == 1
    assert h.raw("ttl", item_key(("ns",), "k")) == 60
    assert h.raw("ttl", item_key(("ns",), "j")) == 5  # not returned: not refreshed


def test_refresh_on_read_off_by_config(make: Callable[..., Harness]) -> None:
    """refresh_on_read=False makes reads leave TTLs alone unless a call asks."""
    h = make(ttl={"default_ttl": 1, "refresh_on_read": False})
    h.put(("ns",), "k", {"v": 1})
    shorten(h, ("ns",), "k", 5)
    h.get(("ns",), "k")
    assert h.raw("ttl", item_key(("ns",), "k")) == 5
    h.get(("ns",), "k", refresh_ttl=True)
    assert h.raw("ttl", item_key(("ns",), "k")) == 60


def test_expired_items_are_never_returned(make: Callable[..., Harness]) -> None:
    """Once an item's TTL has passed, get, search and list_namespaces no longer see it."""
    h = make(ttl={"default_ttl": 10})
    h.put(("gone",), "k", {"v": 1}, ttl=1 / 60)
    h.put(("kept",), "k", {"v": 1})
    assert h.get(("gone",), "k", refresh_ttl=False) is not None
    wait_until(lambda: h.get(("gone",), "k", refresh_ttl=False) is None)
    assert [i.namespace for i in h.search((), limit=10)] == [("kept",)]
    assert h.list_namespaces() == [("kept",)]


# -- the same answers as InMemoryStore ------------------------------------------------


def script() -> list[list[Op]]:
    """Batches of ops, each batch's reads seeing the data before its puts."""
    puts: list[Op] = [
        PutOp(("users", "u1"), "prefs", {"theme": "dark", "n": 1}),
        PutOp(("users", "u1"), "notes", {"text": "x", "n": 2}),
        PutOp(("users", "u2"), "prefs", {"theme": "light", "n": 3}),
        PutOp(("users", "u2", "deep"), "x", {"n": 4, "meta": {"a": [1, 2]}}),
        PutOp(("teams", "t:1"), "k*", {"n": 5}),
    ]
    reads: list[Op] = [
        GetOp(("users", "u1"), "prefs"),
        SearchOp(("users",), limit=100),
        SearchOp(("users",), filter={"n": {"$gte": 2}}, limit=100),
        SearchOp(("users",), filter={"theme": "dark"}, limit=100),
        SearchOp(("users", "u2"), filter={"meta": {"a": [1, 2]}}, limit=100),
        SearchOp((), filter={"n": {"$ne": 3, "$lt": 5}}, limit=100),
        ListNamespacesOp(limit=100),
        ListNamespacesOp((MatchCondition("prefix", ("users", "*")),), max_depth=2, limit=100),
        ListNamespacesOp((MatchCondition("suffix", ("prefs",)),), limit=100),
        ListNamespacesOp(limit=2, offset=1),
        GetOp(("users", "u3"), "prefs"),  # last: InMemoryStore would list ("users", "u3")
    ]
    return [
        [*puts[:2], reads[0]],  # the batch's own put is not seen by its read
        [*reads, *puts[2:]],
        reads,
        [
            PutOp(("users", "u1"), "prefs", {"theme": "light", "n": 9}),
            PutOp(("users", "u1"), "prefs", None),
            *reads,
        ],
        reads,
        [PutOp(("users", "u2", "deep"), "x", None), PutOp(("teams", "t:1"), "k*", None)],
        reads,
    ]


def comparable(result: Any) -> Any:
    """A result without what may differ: times, scores and the order of search hits."""
    if isinstance(result, list) and result and hasattr(result[0], "value"):
        return sorted((i.namespace, i.key, repr(i.value)) for i in result)
    if hasattr(result, "value"):
        return (result.namespace, result.key, result.value)
    return result


def live_copy(store: InMemoryStore) -> InMemoryStore:
    """An InMemoryStore of ``store``'s items only.

    InMemoryStore keeps listing a namespace whose items were deleted (or that was only
    read); keys that expire leave nothing behind, so the reference starts each batch
    from the items it holds.
    """
    copy = InMemoryStore()
    for item in store.search((), limit=10_000):
        copy.put(item.namespace, item.key, item.value)
    return copy


def test_same_answers_as_in_memory_store(h: Harness) -> None:
    """Batch by batch, the store answers what InMemoryStore answers (minus times and scores)."""
    reference = InMemoryStore()
    for ops in script():
        expected = [comparable(r) for r in reference.batch(ops)]
        assert [comparable(r) for r in h.batch(ops)] == expected, ops
        reference = live_copy(reference)


# -- how each class runs ---------------------------------------------------------------


def test_sync_store_abatch() -> None:
    """StashStore's awaited methods run the blocking batch in a thread: same answers."""
    store = StashStore(Stash("memory"))

    async def main() -> None:
        await store.aput(("ns",), "k", {"v": 1})
        assert (await store.aget(("ns",), "k")).value == {"v": 1}
        assert [i.key for i in await store.asearch(("ns",))] == ["k"]
        assert await store.alist_namespaces() == [("ns",)]
        assert await store.adelete_namespace(("ns",)) == 1

    asyncio.run(main())
    store.stash.close()


def test_async_store_blocking_methods() -> None:
    """AsyncStashStore's blocking methods run on its loop from another thread, and refuse on it."""
    with pytest.raises(RuntimeError, match="has run on an event loop yet"):
        AsyncStashStore(AsyncStash("memory")).get(("ns",), "k")

    async def main() -> None:
        stash = AsyncStash("memory")
        store = AsyncStashStore(stash)
        await store.aput(("ns",), "k", {"v": 1})
        item = await asyncio.to_thread(store.get, ("ns",), "k")
        assert item.value == {"v": 1}
        await asyncio.to_thread(store.put, ("ns",), "j", {"v": 2})
        assert await asyncio.to_thread(store.delete_namespace, ("ns",)) == 2
        with pytest.raises(RuntimeError, match="event loop's thread"):
            store.get(("ns",), "k")
        assert threading.current_thread() is threading.main_thread()
        await stash.aclose()

    asyncio.run(main())


def test_supports_ttl() -> None:
    """Both classes say they honour TTLs, so LangGraph passes them through."""
    assert StashStore.supports_ttl
    assert AsyncStashStore.supports_ttl


# -- open inputs -----------------------------------------------------------------------

labels = st.text(min_size=1, max_size=8).filter(lambda t: "." not in t and "\x00" not in t)
namespaces = (
    st.lists(labels, min_size=1, max_size=3).map(tuple).filter(lambda ns: ns[0] != "langgraph")
)
values = st.fixed_dictionaries(
    {
        "n": st.integers(-3, 3),
        "s": st.sampled_from(["a", "b"]),
        "o": st.fixed_dictionaries({"x": st.integers(0, 2)}),
    }
)
number_filters = st.one_of(
    st.integers(-3, 3),
    st.dictionaries(
        st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"]),
        st.integers(-3, 3),
        min_size=1,
    ),
)
filters = st.fixed_dictionaries(
    {},
    optional={
        "n": number_filters,
        "s": st.one_of(
            st.sampled_from(["a", "b"]),
            st.dictionaries(
                st.sampled_from(["$eq", "$ne"]), st.sampled_from(["a", "b"]), min_size=1
            ),
        ),
        "o": st.fixed_dictionaries({"x": st.integers(0, 2)}),
    },
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(st.tuples(namespaces, st.text(max_size=6), values), max_size=8),
    prefix=st.lists(labels, max_size=2).map(tuple),
    wanted=filters,
)
def test_any_labels_and_filters_agree_with_in_memory_store(
    items: list[tuple[tuple[str, ...], str, dict[str, Any]]],
    prefix: tuple[str, ...],
    wanted: dict[str, Any],
) -> None:
    """Any labels and keys come back as put; any filter selects what InMemoryStore selects."""
    reference = InMemoryStore()
    with Stash("memory") as stash:
        store = StashStore(stash)
        for ns, key, value in items:
            store.put(ns, key, value)
            reference.put(ns, key, value)
        for ns, key, value in {(ns, key): (ns, key, v) for ns, key, v in items}.values():
            got = store.get(ns, key)
            assert got is not None
            assert (got.namespace, got.key, got.value) == (ns, key, value)
        assert store.list_namespaces(limit=100) == reference.list_namespaces(limit=100)
        for search_prefix in (prefix, items[0][0][:1] if items else ()):
            found = store.search(search_prefix, filter=wanted, limit=100)
            expected = reference.search(search_prefix, filter=wanted, limit=100)
            assert comparable(found) == comparable(expected)
