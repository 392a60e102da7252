"""Storage quotas: every write that grows a namespace past its keys or bytes is refused whole.

Most tests run the real command handlers in process on the memory store and on SQLite
(direct and batched, as the daemon runs it), with an injected clock; the wire forms
(RESP inside MULTI, HTTP 507) and open mode's flags run against real daemons and a real
HTTP sidecar.
"""

from __future__ import annotations

import contextlib
import gc
import sqlite3
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stashd import ops
from stashd.commands.base import Session
from stashd.config import ConfigError, load
from stashd.errors import QuotaExceeded, StashError
from stashd.quota import check, entry_bytes, growth
from stashd.service import MemoryService
from stashd.store.memory import ENTRY_OVERHEAD, MemoryStore
from stashd.store.sqlite import SQLiteStore
from stashd.tenancy import OpenKeyring, open_limits
from stashd.tiers import TierError, render, resolve
from stashd.types import Entry, Limits, Principal, Quota
from tests.support.backends import Backend, open_backend, server_url
from tests.support.clock import Clock
from tests.support.http import sidecar
from tests.support.servers import StashDaemon

T0 = 1_700_000_000_000
NS = "alice"
BACKENDS = ("memory", "sqlite", "sqlite-batched", "redis", "redis-direct", "redis-cluster")


def limits(quota: Quota) -> Limits:
    """Roomy payload and TTL limits, with ``quota``."""
    return Limits(max_payload=10_000, default_ttl_ms=3_600_000, max_ttl_ms=86_400_000, quota=quota)


class World:
    """One backend, a clock, and a session whose principal has a quota the test sets."""

    def __init__(self, backend: Backend, clock: Clock) -> None:
        self.backend = backend
        self.clock = clock
        self.service = MemoryService(backend.store)
        self.session = Session(self.service, OpenKeyring(limits(Quota())), None)
        self.quota(Quota())

    def quota(self, quota: Quota) -> Principal:
        """Give the session's namespace ``quota`` from now on (as a changed tier would)."""
        principal = Principal(NS, limits(quota), NS)
        self.session.principal = principal
        return principal

    def call(self, *words: bytes) -> Any:  # noqa: ANN401 - each command has its own reply
        """Run one request as dispatch does; a refusal is returned, not raised."""
        return self.backend.call(self.session, *words)

    def run(self, op: ops.Op) -> Any:  # noqa: ANN401 - each operation has its own result
        """Run an operation on the backend."""
        return self.backend.run(op)

    def usage(self) -> tuple[int, int, int]:
        """(live keys, keys, bytes) of the namespace, as INFO reads them."""
        principal = self.session.principal
        assert principal is not None
        result: tuple[int, int, int] = self.run(self.service.usage(principal))
        return result

    def state(self) -> list[tuple[bytes, bytes, int, int]]:
        """Every live entry: key, value, version, expiry (what a refusal must not change)."""
        _, items = self.run(ops.Page(NS, 0, 1000))
        return sorted((k, e.value, e.version, e.expires_at) for k, e in items)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture(params=BACKENDS)
def world(request: pytest.FixtureRequest, clock: Clock, tmp_path: Path) -> Iterator[World]:
    backend = open_backend(request.param, clock, tmp_path, server_url(request, request.param))
    yield World(backend, clock)
    backend.close()


def fill(world: World) -> None:
    """Three keys: j holds JSON (8 bytes), n a counter at 9 (2 bytes), s text (4 bytes)."""
    assert world.call(b"SET", b"j", b'{"a":1}') == "OK"
    assert world.call(b"SET", b"n", b"9") == "OK"
    assert world.call(b"SET", b"s", b"abc") == "OK"
    assert world.usage() == (3, 3, 14)


def refused(world: World, words: tuple[bytes, ...]) -> QuotaExceeded:
    """Run ``words``, which must be refused by the quota with nothing changed."""
    before = world.state()
    usage = world.usage()
    result = world.call(*words)
    assert isinstance(result, QuotaExceeded), result
    assert world.state() == before
    assert world.usage() == usage
    assert world.call(b"DBSIZE") == usage[0]
    return result


# -- the check itself ---------------------------------------------------------------------


def test_the_check_refuses_only_a_side_that_grows_past_its_limit() -> None:
    """Over a lowered quota, shrinking or keeping a side is allowed; growing it is not."""
    quota = Quota(max_keys=10, max_bytes=100)
    check(10, 100, 0, 0, quota)  # at both limits, nothing added
    check(50, 500, -1, -20, quota)  # far over both, shrinking
    check(50, 50, 0, 10, quota)  # over on keys only, growing only bytes within its limit
    with pytest.raises(QuotaExceeded) as caught:
        check(10, 50, 1, 5, quota)
    assert (caught.value.keys, caught.value.bytes) == (11, 55)
    assert (caught.value.max_keys, caught.value.max_bytes) == (10, 100)
    assert str(caught.value) == (
        "namespace would hold 11 keys (55 bytes), the limit is 10 keys and 100 bytes"
    )
    with pytest.raises(QuotaExceeded, match=r"the limit is 100 bytes$") as caught:
        check(5, 99, 0, 2, Quota(max_bytes=100))  # only the side with a limit is named
    assert caught.value.max_keys == 0  # 0 stands for the side without a limit
    check(10**9, 10**12, 1, 1, Quota())


def test_sizes_count_the_key_and_the_value() -> None:
    """entry_bytes is key plus value; growth is new size minus old, with one key per entry."""
    assert entry_bytes(b"key", b"value") == 8
    assert growth(b"k", None, b"vv") == (1, 3)
    assert growth(b"k", b"vv", b"v") == (0, -1)
    assert growth(b"k", b"vv", None) == (-1, -3)


def test_a_quota_below_one_is_refused() -> None:
    """A limit of 0 or less is a mistake (None is no limit)."""
    with pytest.raises(ValueError, match="max_keys must be at least 1"):
        Quota(max_keys=0)
    assert not Quota().limited
    assert Quota(max_bytes=1).limited


# -- every write, on every store ----------------------------------------------------------

NEW_KEY_WRITES = {
    "SET": ((b"SET", b"new", b"v"), 4, 18),
    "MSET": ((b"MSET", b"new", b"v", b"s", b"abcd"), 4, 19),
    "APPEND": ((b"APPEND", b"new", b"v"), 4, 18),
    "INCR": ((b"INCR", b"new"), 4, 18),
    "SETNX": ((b"SET", b"new", b"v", b"NX"), 4, 18),
}


@pytest.mark.parametrize("name", NEW_KEY_WRITES)
def test_a_new_key_past_the_key_limit_is_refused(world: World, name: str) -> None:
    """At 3 of 3 keys, every write that adds a key is refused in QUOTA's words."""
    fill(world)
    world.quota(Quota(max_keys=3))
    words, keys, size = NEW_KEY_WRITES[name]
    exc = refused(world, words)
    assert str(exc) == f"namespace would hold {keys} keys ({size} bytes), the limit is 3 keys"
    assert exc.code == "QUOTA"


def test_stash_past_the_key_limit_is_refused(world: World) -> None:
    """STASH's new id counts like any key: 8 bytes of id and the JSON."""
    fill(world)
    world.quota(Quota(max_keys=3))
    exc = refused(world, (b"STASH", b'{"b":2}'))
    assert (exc.keys, exc.bytes) == (4, 14 + 8 + 7)


BYTE_WRITES = {
    "SET longer": ((b"SET", b"s", b"abcd"), 3, 15),
    "SET KEEPTTL": ((b"SET", b"s", b"abcd", b"KEEPTTL"), 3, 15),
    "APPEND": ((b"APPEND", b"s", b"d"), 3, 15),
    "INCR 9 to 10": ((b"INCR", b"n"), 3, 15),
    "UPDATE MERGE": ((b"UPDATE", b"j", b"MERGE", b'{"b":2}'), 3, 20),
    "UPDATE DATA": ((b"UPDATE", b"j", b"DATA", b'{"a":10}'), 3, 15),
    "RENAME longer": ((b"RENAME", b"s", b"longer"), 3, 19),
    "MSET": ((b"MSET", b"s", b"ab", b"n", b"100"), 3, 15),
    "STASH": ((b"STASH", b"1"), 4, 23),
}


@pytest.mark.parametrize("name", BYTE_WRITES)
def test_a_write_past_the_byte_limit_is_refused(world: World, name: str) -> None:
    """At 14 of 14 bytes, every write that adds a byte is refused, changing nothing."""
    fill(world)
    world.quota(Quota(max_bytes=14))
    words, keys, size = BYTE_WRITES[name]
    exc = refused(world, words)
    assert (exc.keys, exc.bytes, exc.max_keys, exc.max_bytes) == (keys, size, 0, 14)
    assert str(exc) == (f"namespace would hold {keys} keys ({size} bytes), the limit is 14 bytes")


def test_mset_is_all_or_nothing(world: World) -> None:
    """An MSET whose last pair would pass the quota writes none of its pairs."""
    world.quota(Quota(max_keys=3))
    assert world.call(b"SET", b"a", b"1") == "OK"
    exc = refused(world, (b"MSET", b"b", b"1", b"c", b"1", b"d", b"1"))
    assert exc.keys == 4
    assert world.call(b"MSET", b"b", b"1", b"c", b"1") == "OK"  # exactly at the quota
    # A key given twice counts once, with its last value.
    assert world.call(b"MSET", b"b", b"2", b"b", b"3") == "OK"
    assert world.call(b"GET", b"b") == b"3"
    assert world.usage() == (3, 3, 6)


def test_writes_that_do_not_grow_are_allowed_over_a_lowered_quota(world: World) -> None:
    """Over a quota lowered below what it holds, a namespace can still shrink and rewrite."""
    fill(world)
    world.quota(Quota(max_keys=1, max_bytes=5))
    assert world.call(b"SET", b"s", b"xyz") == "OK"  # the same size
    assert world.call(b"SET", b"s", b"x") == "OK"  # smaller
    assert world.call(b"UPDATE", b"j", b"EXTEND", b"10") == 3610  # only the TTL
    assert world.call(b"EXPIRE", b"n", b"100") == 1
    assert world.call(b"RENAME", b"s", b"t") == "OK"  # the same length
    assert world.call(b"DEL", b"t") == 1
    assert world.usage() == (2, 2, 10)
    assert isinstance(world.call(b"SET", b"n", b"10"), QuotaExceeded)  # one byte more


def test_delete_frees_quota(world: World) -> None:
    """A deleted key's room can be used at once."""
    world.quota(Quota(max_keys=2, max_bytes=100))
    assert world.call(b"SET", b"a", b"1") == "OK"
    assert world.call(b"SET", b"b", b"1") == "OK"
    assert isinstance(world.call(b"SET", b"c", b"1"), QuotaExceeded)
    assert world.call(b"DEL", b"a") == 1
    assert world.call(b"SET", b"c", b"1") == "OK"
    assert world.call(b"GETDEL", b"b") == b"1"
    assert world.usage() == (1, 1, 2)


def test_expiry_frees_quota_before_the_sweep(world: World, clock: Clock) -> None:
    """Expired entries stop counting once the clock passes them, sweep or no sweep."""
    world.quota(Quota(max_keys=2))
    assert world.call(b"SET", b"a", b"1", b"EX", b"10") == "OK"
    assert world.call(b"SET", b"b", b"1", b"EX", b"1000") == "OK"
    assert isinstance(world.call(b"SET", b"c", b"1"), QuotaExceeded)
    clock.now += 10_000
    assert world.call(b"SET", b"c", b"1") == "OK"
    assert world.usage() == (2, 2, 4)
    assert sorted(k for k, *_ in world.state()) == [b"b", b"c"]


def test_flushdb_resets_usage(world: World) -> None:
    """FLUSHDB leaves the namespace holding nothing, with its whole quota free."""
    fill(world)
    world.quota(Quota(max_keys=3))
    assert world.call(b"FLUSHDB") == "OK"
    assert world.usage() == (0, 0, 0)
    assert world.call(b"MSET", b"a", b"1", b"b", b"2", b"c", b"3") == "OK"
    assert world.usage() == (3, 3, 6)


def test_other_namespaces_have_quotas_of_their_own(world: World) -> None:
    """One namespace at its quota leaves another's untouched."""
    world.quota(Quota(max_keys=1))
    assert world.call(b"SET", b"a", b"1") == "OK"
    bob = Principal("bob", limits(Quota(max_keys=1)), "bob")
    assert world.run(world.service.set(bob, b"a", b"1")) == (True, None)
    assert isinstance(world.call(b"SET", b"b", b"1"), QuotaExceeded)


def test_multi_counts_the_earlier_writes_of_the_transaction(world: World) -> None:
    """The third SET of one transaction passes the quota: the first two stand, it fails."""
    p = world.quota(Quota(max_keys=2))
    svc = world.service
    txn = ops.Transaction([svc.set(p, k, b"1") for k in (b"a", b"b", b"c")], [])
    results = world.run(txn)
    assert results[:2] == [(True, None), (True, None)]
    assert isinstance(results[2], QuotaExceeded)
    assert results[2].keys == 3
    assert world.usage() == (2, 2, 4)


def test_multi_counts_the_room_its_earlier_deletes_made(world: World) -> None:
    """At the quota, a transaction that deletes first may write as much in its place."""
    p = world.quota(Quota(max_keys=2, max_bytes=4))
    assert world.call(b"MSET", b"a", b"1", b"b", b"1") == "OK"
    svc = world.service
    queued = [svc.delete(p, [b"a"]), svc.set(p, b"c", b"1"), svc.append(p, b"b", b"2")]
    queued += [svc.getdel(p, b"c"), svc.append(p, b"b", b"3")]
    results = world.run(ops.Transaction(queued, []))
    assert results[:2] == [1, (True, None)]
    assert isinstance(results[2], QuotaExceeded)  # b grows by a byte while c holds the room
    assert results[3].value == b"1"
    assert results[4] == 2  # c's room again
    assert world.usage() == (1, 1, 3)
    assert world.call(b"GET", b"b") == b"13"


def test_multi_after_flushdb_counts_what_the_transaction_wrote(world: World) -> None:
    """Inside MULTI, a flushed namespace counts only the writes after FLUSHDB."""
    fill(world)
    p = world.quota(Quota(max_keys=2))
    svc = world.service
    queued: list[ops.Op] = [svc.flush(p), svc.set(p, b"a", b"1"), svc.set(p, b"b", b"1")]
    queued += [svc.set(p, b"c", b"1"), svc.usage(p)]
    results = world.run(ops.Transaction(queued, []))
    assert isinstance(results[3], QuotaExceeded)
    assert results[4] == (2, 2, 4)
    assert world.state() == [(b"a", b"1", 1, T0 + 3_600_000), (b"b", b"1", 1, T0 + 3_600_000)]


def test_an_undone_transaction_gives_its_room_back(world: World) -> None:
    """A transaction that fails with a bug is undone, and its writes stop counting."""
    p = world.quota(Quota(max_keys=5))
    svc = world.service

    class Broken(ops.Op):
        """An operation with a bug."""

        __slots__ = ()

        def run(self, view: Any, now: int) -> None:  # noqa: ANN401, ARG002
            raise RuntimeError

    txn = ops.Transaction([svc.set(p, b"a", b"1"), Broken(NS)], [])
    assert isinstance(world.backend.run_many([txn])[0], StashError)
    assert world.usage() == (0, 0, 0)


def test_info_shows_the_usage_and_the_quota(world: World) -> None:
    """INFO keyspace adds what the quota counts and the limits to Redis's fields."""
    fill(world)
    world.quota(Quota(max_keys=10, max_bytes=1000))
    assert str(world.call(b"INFO", b"keyspace")) == (
        "# Keyspace\r\n"
        "db0:keys=3,expires=3,avg_ttl=3600000,quota_keys=3,quota_bytes=14,max_keys=10,"
        "max_bytes=1000\r\n"
    )
    memory = str(world.call(b"INFO", b"memory")).split("\r\n")
    assert memory[1:3] == ["used_memory:14", "used_memory_human:14B"], "the namespace's bytes"


def test_info_avg_ttl_is_the_mean_time_left_in_ms(world: World) -> None:
    """avg_ttl is what the keys have left on average, in ms, as Redis reports it."""
    assert world.call(b"SET", b"a", b"1", b"EX", b"100") == "OK"
    assert world.call(b"SET", b"b", b"2", b"EX", b"300") == "OK"
    world.clock.now += 50_000
    text = str(world.call(b"INFO", b"keyspace"))
    assert "db0:keys=2,expires=2,avg_ttl=150000," in text, text
    world.clock.now += 60_000  # a has expired: only b's 190 s are left to average
    text = str(world.call(b"INFO", b"keyspace"))
    assert "db0:keys=1,expires=1,avg_ttl=190000," in text, text


def test_info_avg_ttl_counts_every_key_of_a_namespace_of_thousands(world: World) -> None:
    """Up to 10,000 keys the mean is over all of them, not a first page's sample."""
    world.call(b"FLUSHDB")
    # TTLs of 1001..3000 s, in the order written: a first page alone would be short ones.
    # (None so short that Redis's own clock could expire it while the test writes.)
    for i in range(1001, 3001):
        world.call(b"SET", b"k%d" % i, b"v", b"EX", b"%d" % i)
    text = str(world.call(b"INFO", b"keyspace"))
    assert "db0:keys=2000,expires=2000,avg_ttl=2000500," in text, text


# -- SQLite: the usage table --------------------------------------------------------------


def recount(db: Path) -> dict[str, tuple[int, int]]:
    """Every namespace's rows and bytes, counted from the entries table itself."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT namespace, count(*), sum(length(key) + length(value)) FROM entries "
            "GROUP BY namespace"
        ).fetchall()
    return {ns: (keys, size) for ns, keys, size in rows}


def usage_table(db: Path) -> dict[str, tuple[int, int]]:
    """The usage table's rows, namespaces holding nothing left out."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT namespace, keys, bytes FROM usage WHERE keys > 0").fetchall()
    return {ns: (keys, size) for ns, keys, size in rows}


def test_sqlite_usage_survives_a_restart(tmp_path: Path, clock: Clock) -> None:
    """Usage is in the file: a store opened again counts on from it."""
    db = tmp_path / "stash.db"
    p = Principal(NS, limits(Quota(max_keys=3)), NS)
    store = SQLiteStore(db, clock)
    svc = MemoryService(store)
    store.run(svc.set_many(p, [(b"a", b"1"), (b"b", b"22")]))
    store.close_threads()
    again = SQLiteStore(db, clock)
    svc = MemoryService(again)
    assert again.run(svc.usage(p)) == (2, 2, 5)
    again.run(svc.set(p, b"c", b"3"))
    with pytest.raises(QuotaExceeded):
        again.run(svc.set(p, b"d", b"4"))
    again.close_threads()
    assert usage_table(db) == recount(db) == {NS: (3, 7)}


#: The entries table as files from before the usage table have it (with seq already).
OLD_SCHEMA = """
CREATE TABLE entries (
    id INTEGER PRIMARY KEY, namespace TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
    expires_at INTEGER NOT NULL, version INTEGER NOT NULL, sweep_at INTEGER NOT NULL,
    seq INTEGER NOT NULL, UNIQUE (namespace, key)
);
CREATE INDEX entries_namespace_seq ON entries (namespace, seq);
CREATE INDEX entries_sweep ON entries (sweep_at);
"""


def test_a_file_from_before_the_usage_table_is_counted_when_opened(
    tmp_path: Path, clock: Clock
) -> None:
    """The table is created and filled from the rows in place, then kept by the triggers."""
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(OLD_SCHEMA)
        rows = [(NS, b"k%d" % i, b"v" * i, T0 + 60_000, 1, T0 + 65_536, i) for i in range(5)]
        rows.append(("bob", b"x", b"12345", T0 + 60_000, 1, T0 + 65_536, 1))
        conn.executemany(
            "INSERT INTO entries (namespace, key, value, expires_at, version, sweep_at, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    store = SQLiteStore(db, clock)
    svc = MemoryService(store)
    p = Principal(NS, limits(Quota(max_keys=6)), NS)
    assert store.run(svc.usage(p)) == (5, 5, 20)
    store.run(svc.set(p, b"k5", b"v"))
    with pytest.raises(QuotaExceeded):
        store.run(svc.set(p, b"k6", b"v"))
    store.close_threads()
    assert usage_table(db) == recount(db) == {NS: (6, 23), "bob": (1, 6)}


def test_the_sweep_and_other_connections_are_counted(tmp_path: Path, clock: Clock) -> None:
    """Deletes by the sweep, and writes of a connection that is not the store's, are counted."""
    db = tmp_path / "stash.db"
    store = SQLiteStore(db, clock)
    svc = MemoryService(store)
    p = Principal(NS, limits(Quota()), NS)
    store.run(svc.set_many(p, [(b"k%d" % i, b"v") for i in range(300)]))
    with sqlite3.connect(db) as other:
        other.execute("DELETE FROM entries WHERE key = ?", (b"k0",))
    clock.now += 4_000_000  # past the TTL and its sweep window
    assert store.sweep(rounds=10) == 299
    assert store.run(svc.usage(p)) == (0, 0, 0)
    store.close_threads()
    assert usage_table(db) == recount(db) == {}


# -- the memory store's accounting -------------------------------------------------------


def test_memory_bytes_tracks_what_tracemalloc_measures() -> None:
    """memory_bytes() stays within a fifth of the memory its entries really take."""
    store = MemoryStore(lambda: T0)
    n = 50_000
    keys = [b"key:%012d" % i for i in range(n)]
    values = [b"%0100d" % i for i in range(n)]
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            # Fresh bytes, as a request's arguments are: the lists above are not counted.
            key, value = bytes(bytearray(keys[i])), bytes(bytearray(values[i]))
            store.view.put(NS, key, Entry(value, T0 + 60_000 + i, 1))
        gc.collect()
        measured = tracemalloc.get_traced_memory()[0] - start
    finally:
        tracemalloc.stop()
    del keys, values
    accounted = store.memory_bytes()
    assert accounted == n * (16 + 100 + ENTRY_OVERHEAD)
    assert 0.8 * measured <= accounted <= 1.2 * measured, (accounted, measured)
    store.view.clear(NS)
    assert store.memory_bytes() == n * (16 + 100 + ENTRY_OVERHEAD)  # until freed
    while store.retired:
        store.free_retired()
    assert store.memory_bytes() == 0


# -- random histories ---------------------------------------------------------------------

KEYS = st.sampled_from([b"a", b"b", b"cc", b"ddd"])
VALUES = st.binary(max_size=12)
TTLS = st.sampled_from([1, 5, 3600])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES, TTLS),
        st.tuples(st.just("append"), KEYS, VALUES),
        st.tuples(st.just("del"), KEYS),
        st.tuples(st.just("rename"), KEYS, KEYS),
        st.tuples(st.just("mset"), st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=3)),
        st.tuples(st.just("multi"), KEYS, VALUES, KEYS),
        st.tuples(st.just("tick"), st.integers(0, 6000)),
        st.tuples(st.just("flush")),
    ),
    max_size=40,
)


def apply_step(backend: Backend, svc: MemoryService, p: Principal, step: tuple[Any, ...]) -> None:
    """Run one random step; refusals (quota, missing keys) are part of the history."""
    kind = step[0]
    op: ops.Op
    if kind == "tick":
        clock = backend.store.clock
        assert isinstance(clock, Clock)
        clock.now += step[1]
        return
    if kind == "set":
        op = svc.set(p, step[1], step[2], expires_at=svc.expiry(p, step[3] * 1000))
    elif kind == "append":
        op = svc.append(p, step[1], step[2])
    elif kind == "del":
        op = svc.delete(p, [step[1]])
    elif kind == "rename":
        op = svc.rename(p, step[1], step[2])
    elif kind == "mset":
        op = svc.set_many(p, step[1])
    elif kind == "multi":
        queued = [svc.delete(p, [step[3]]), svc.set(p, step[1], step[2]), svc.usage(p)]
        results = backend.run(ops.Transaction(queued, []))
        # What the transaction saw of its own writes is what the store holds after it.
        assert results[2] == backend.run(svc.usage(p))
        return
    else:
        op = svc.flush(p)
    with contextlib.suppress(StashError):
        backend.run(op)


def live(backend: Backend) -> tuple[int, int]:
    """Live keys and their bytes, recounted from a listing."""
    _, items = backend.run(ops.Page(NS, 0, 1000))
    return len(items), sum(entry_bytes(k, e.value) for k, e in items)


def sweep_all(backend: Backend) -> None:
    """Free every expired entry the store's own sweep can free now."""
    store = backend.store
    if isinstance(store, MemoryStore):
        for _ in range(2):  # from the hand to the end, then from the start
            for name in list(store.spaces):
                store.sweep_space(name, store.clock(), 10**6)
    elif isinstance(store, SQLiteStore):
        store.sweep(rounds=100)
    # The Redis store frees expired entries whenever it reads a namespace's usage.


@pytest.mark.parametrize("name", BACKENDS)
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(steps=STEPS, small=st.booleans())
def test_usage_always_matches_a_recount(
    name: str, steps: list[tuple[Any, ...]], small: bool, request: pytest.FixtureRequest
) -> None:
    """Any history of writes, deletes and expiry leaves usage equal to a recount after a sweep.

    Before the sweep it is never below the live entries (expired ones count until freed);
    a small quota makes refusals, and the freeing before them, part of the history.
    """
    quota = Quota(max_keys=3, max_bytes=24) if small else Quota()
    with tempfile.TemporaryDirectory() as tmp:
        backend = open_backend(name, Clock(T0), Path(tmp), server_url(request, name))
        try:
            svc = MemoryService(backend.store)
            p = Principal(NS, limits(quota), NS)
            for step in steps:
                apply_step(backend, svc, p, step)
                count, keys, size = backend.run(svc.usage(p))
                live_keys, live_bytes = live(backend)
                assert count == live_keys
                assert keys >= live_keys
                assert size >= live_bytes
            clock = backend.store.clock
            assert isinstance(clock, Clock)
            clock.now += 2 * 65_536 + 3_600_000  # past every short TTL and its sweep window
            sweep_all(backend)
            live_keys, live_bytes = live(backend)
            assert backend.run(svc.usage(p)) == (live_keys, live_keys, live_bytes)
        finally:
            backend.close()


# -- settings -----------------------------------------------------------------------------


def test_tier_quotas_come_from_the_file_and_the_environment() -> None:
    """max_keys and max_bytes follow the other tier settings: file over defaults, env over file."""
    text = '[free]\nmax_keys = 50\nmax_bytes = "1mb"\n[pro]\nmax_bytes = 2048\n'
    env = {"STASH_TIER_PRO_MAX_KEYS": "unlimited", "STASH_TIER_ENTERPRISE_MAX_BYTES": "10gb"}
    table = resolve(text, env)
    assert table["free"].quota == Quota(50, 1024 * 1024)
    assert table["pro"].quota == Quota(None, 2048)
    assert table["enterprise"].quota == Quota(None, 10 * 1024**3)
    lines = render(table).splitlines()
    assert lines[0].endswith("max keys   max bytes")
    assert lines[1].endswith("50         1 MiB")
    assert lines[2].endswith("unlimited  2 KiB")


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[free]\nmax_keys = -1\n", {}, r"tiers.toml \[free\] max_keys must be at least 1"),
        (
            "[free]\nmax_keys = 'many'\n",
            {},
            r"max_keys must be an integer or 'unlimited', got 'many'",
        ),
        ("", {"STASH_TIER_PRO_MAX_BYTES": "4 GB"}, r"STASH_TIER_PRO_MAX_BYTES must be a number of"),
        ("[pro]\nmax_bytes = 1.5\n", {}, r"\[pro\] max_bytes must be a number of bytes .*got 1.5"),
    ],
)
def test_bad_tier_quotas_name_the_source_and_the_value(
    text: str, env: dict[str, str], message: str
) -> None:
    """Each mistake names where it came from and what was given."""
    with pytest.raises(TierError, match=message):
        resolve(text or None, env, file_name="tiers.toml")


def test_open_mode_quota_settings() -> None:
    """--max-keys and --max-bytes (Redis sizes), 0 for no limit; flags over env."""
    assert load({}, env={}).quota == Quota(1_000_000, 1024**3)
    assert load({"max_keys": 5}, env={"STASH_MAX_KEYS": "7"}).quota.max_keys == 5
    assert load({}, env={"STASH_MAX_BYTES": "512mb"}).quota.max_bytes == 512 * 1024**2
    unlimited = load({}, env={"STASH_MAX_KEYS": "0", "STASH_MAX_BYTES": "0"})
    assert open_limits(unlimited).quota == Quota()
    with pytest.raises(ConfigError, match="max_bytes: 'lots' is not a size"):
        load({}, env={"STASH_MAX_BYTES": "lots"})
    with pytest.raises(ConfigError, match="max_keys must not be negative"):
        load({"max_keys": -1}, env={})


# -- the wire ---------------------------------------------------------------------------


def test_resp_refuses_with_quota_and_exec_puts_the_error_in_place() -> None:
    """A real daemon: -QUOTA for a write over --max-keys, and inside EXEC as Redis errors."""
    with StashDaemon(
        "--no-http", "--backend", "memory", "--max-keys", "2", "--max-bytes", "1kb"
    ) as d:
        client = redis.Redis(port=d.port)
        pipe = client.pipeline(transaction=True)
        pipe.set("a", "1").set("b", "1").set("c", "1")
        results = pipe.execute(raise_on_error=False)
        assert results[:2] == [True, True]
        assert isinstance(results[2], redis.ResponseError)
        assert str(results[2]) == (
            "QUOTA namespace would hold 3 keys (6 bytes), the limit is 2 keys and 1024 bytes"
        )
        assert client.dbsize() == 2
        with pytest.raises(redis.ResponseError, match=r"^QUOTA namespace would hold 2 keys"):
            client.set("a", "x" * 1100)
        assert client.get("a") == b"1"
        client.close()


async def test_http_stash_over_quota_is_507_with_the_fields() -> None:
    """POST /stash past the quota answers 507 with what the namespace would hold and the limits."""
    keyring = OpenKeyring(limits(Quota(max_keys=1, max_bytes=100)))
    async with sidecar(keyring=keyring) as side:
        async with side.session.post("/stash", json={"data": {"a": 1}}) as first:
            assert first.status == 201
        async with side.session.post("/stash", json={"data": {"b": 2}}) as second:
            assert second.status == 507
            body = await second.json()
        assert body == {
            "error": {
                "code": "quota_exceeded",
                "message": "namespace would hold 2 keys (30 bytes), "
                "the limit is 1 keys and 100 bytes",
                "keys": 2,
                "bytes": 30,
                "max_keys": 1,
                "max_bytes": 100,
            }
        }
        assert side.count("default") == 1
