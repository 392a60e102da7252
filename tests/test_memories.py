"""MEMORIES and the WITHMETA forms of STASH and UPDATE on every backend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd import ops
from stashd.errors import CommandError, InvalidRequest, StashError, SyntaxErr
from stashd.glob import compile_glob
from stashd.service import PAGE_MAX, PATTERN_MAX
from stashd.store.memory import MemoryStore
from stashd.types import Limits, Principal
from tests.support.backends import Backend
from tests.support.clock import Clock
from tests.support.door import DEFAULT_TTL_MS, MAX_TTL_MS, T0, Door


def _time(ms: int) -> bytes:
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def _listing(door: Door, *options: bytes) -> tuple[list[bytes], list[dict[bytes, Any]]]:
    """Every page of a listing, followed to its end: the cursors seen and the items."""
    cursor = b"0"
    cursors: list[bytes] = []
    items: list[dict[bytes, Any]] = []
    while True:
        reply = door.call(b"MEMORIES", cursor, *options)
        assert not isinstance(reply, StashError), reply
        cursor, page = reply
        items.extend(page)
        cursors.append(cursor)
        if cursor == b"0":
            return cursors, items


def _clock(backend: Backend) -> Any:  # noqa: ANN401 - the test clock
    return backend.store.clock


def test_stash_withmeta_replies_the_id_and_its_metadata(backend: Backend) -> None:
    """STASH ... WITHMETA: id, time left, expiry and version 1, options in any order."""
    door = Door(backend)
    meta = door.call(b"STASH", b'{"a":1}', b"WITHMETA", b"EX", b"60")
    assert meta == {
        b"memory_id": meta[b"memory_id"],
        b"ttl_remaining": 60,
        b"expires_at": _time(T0 + 60_000),
        b"version": 1,
    }
    assert door.call(b"RECALL", meta[b"memory_id"]) == b'{"a":1}'
    meta = door.call(b"STASH", b"[]", b"PX", b"1500", b"WITHMETA")
    assert meta[b"ttl_remaining"] == 2  # rounded to nearest, as TTL is
    assert door.call(b"PTTL", meta[b"memory_id"]) == 1500
    meta = door.call(b"STASH", b"2", b"WITHMETA")
    assert meta[b"ttl_remaining"] == DEFAULT_TTL_MS // 1000
    assert isinstance(door.call(b"STASH", b"3"), bytes)  # without WITHMETA, the id alone


@pytest.mark.parametrize(
    "words",
    [
        (b"WITHMETA", b"WITHMETA"),
        (b"EX", b"5", b"PX", b"5000"),
        (b"EX", b"5", b"EX", b"6"),
        (b"EX",),
        (b"WITHMETA", b"EX"),
        (b"NOPE",),
    ],
)
def test_stash_refuses_a_repeated_or_unknown_option(backend: Backend, words: tuple[bytes]) -> None:
    """Each option at most once, EX and PX not both: a syntax error, and nothing stored."""
    door = Door(backend)
    assert isinstance(door.call(b"STASH", b"1", *words), SyntaxErr)
    assert door.entries() == {}


def test_stash_refuses_a_bad_expire_time(backend: Backend) -> None:
    """EX 0 is STASH's own error, WITHMETA or not."""
    door = Door(backend)
    refused = door.call(b"STASH", b"1", b"WITHMETA", b"EX", b"0")
    assert isinstance(refused, CommandError)
    assert refused.wire == "ERR invalid expire time in 'stash' command"
    assert door.entries() == {}


def test_update_withmeta_replies_the_entry_as_written(backend: Backend) -> None:
    """UPDATE ... WITHMETA: the new time left, expiry and version; nil for a missing id."""
    door = Door(backend)
    mid = door.call(b"STASH", b'{"a":1}', b"EX", b"100")
    meta = door.call(b"UPDATE", mid, b"WITHMETA", b"MERGE", b'{"b":2}', b"EXTEND", b"50")
    assert meta == {
        b"ttl_remaining": 150,
        b"expires_at": _time(T0 + 150_000),
        b"version": 2,
    }
    assert door.call(b"RECALL", mid) == b'{"a":1,"b":2}'
    assert door.call(b"UPDATE", mid, b"DATA", b"[]", b"WITHMETA")[b"version"] == 3
    assert door.call(b"UPDATE", b"nosuch", b"DATA", b"1", b"WITHMETA") is None
    assert door.call(b"UPDATE", mid, b"EXTEND", b"1") == 151  # without WITHMETA: seconds


def test_update_withmeta_keeps_update_s_rules(backend: Backend) -> None:
    """A repeated WITHMETA is a syntax error; IFVERSION still refuses, and changes nothing."""
    door = Door(backend)
    mid = door.call(b"STASH", b"1")
    before = door.entries()
    assert isinstance(door.call(b"UPDATE", mid, b"WITHMETA", b"DATA", b"2", b"WITHMETA"), SyntaxErr)
    assert isinstance(door.call(b"UPDATE", mid, b"WITHMETA"), StashError)  # nothing to do
    refused = door.call(b"UPDATE", mid, b"DATA", b"2", b"IFVERSION", b"7", b"WITHMETA")
    assert isinstance(refused, StashError)
    assert refused.code == "CONFLICT"
    assert door.entries() == before


def test_memories_lists_live_entries_with_their_metadata(backend: Backend) -> None:
    """One page holds every memory with time left, expiry, size and version; cursor "0" ends."""
    door = Door(backend)
    a = door.call(b"STASH", b'{"a":1}', b"EX", b"100")
    b = door.call(b"STASH", b"[1,2,3]")
    door.call(b"UPDATE", b, b"DATA", b"[1,2]")
    cursor, items = door.call(b"MEMORIES", b"0")
    assert cursor == b"0"
    assert sorted(items, key=lambda m: m[b"size"]) == [
        {
            b"memory_id": b,
            b"ttl_remaining": DEFAULT_TTL_MS // 1000,
            b"expires_at": _time(T0 + DEFAULT_TTL_MS),
            b"size": 5,
            b"version": 2,
        },
        {
            b"memory_id": a,
            b"ttl_remaining": 100,
            b"expires_at": _time(T0 + 100_000),
            b"size": 7,
            b"version": 1,
        },
    ]


def test_memories_follows_a_pattern_across_several_pages(backend: Backend) -> None:
    """MATCH keeps only matching ids, no page is over COUNT, and none is missed or repeated."""
    door = Door(backend)
    for i in range(23):
        assert door.call(b"SET", b"task:%d" % i, b"1") == "OK"
        assert door.call(b"SET", b"note:%d" % i, b"1") == "OK"
    cursor = b"0"
    keys: list[bytes] = []
    pages = 0
    while True:
        cursor, page = door.call(b"MEMORIES", cursor, b"MATCH", b"task:*", b"COUNT", b"5")
        assert len(page) <= 5
        keys.extend(m[b"memory_id"] for m in page)
        pages += 1
        if cursor == b"0":
            break
    assert sorted(keys) == sorted(b"task:%d" % i for i in range(23))
    assert pages >= 5


def test_memories_fills_each_page_before_the_end(backend: Backend) -> None:
    """Unlike SCAN, a listing's page holds COUNT memories unless the listing ends there."""
    door = Door(backend)
    for i in range(12):
        door.call(b"SET", b"k%d" % i, b"1")
    cursor, page = door.call(b"MEMORIES", b"0", b"COUNT", b"5")
    assert len(page) == 5
    cursor, page = door.call(b"MEMORIES", cursor, b"COUNT", b"5")
    assert len(page) == 5
    _, items = _listing(door, b"COUNT", b"5")
    assert len(items) == 12


def test_memories_never_lists_an_expired_entry(backend: Backend) -> None:
    """An entry past its expiry is gone from the listing, however the pages fall."""
    door = Door(backend)
    keep = door.call(b"STASH", b"1", b"EX", b"100")
    for _ in range(7):
        door.call(b"STASH", b"2", b"EX", b"1")
    _clock(backend).now += 2000
    _, items = _listing(door, b"COUNT", b"2")
    assert [m[b"memory_id"] for m in items] == [keep]
    assert items[0][b"ttl_remaining"] == 98


def test_memories_never_lists_another_namespace(backend: Backend) -> None:
    """A second caller's memories are invisible to the first, pattern or not."""
    door = Door(backend)
    other = Door(backend)
    limits = Limits(200, DEFAULT_TTL_MS, MAX_TTL_MS)
    other.session.principal = Principal("bob", limits, "bob")
    other.call(b"SET", b"shared", b"1")
    other.call(b"STASH", b"2")
    mine = door.call(b"STASH", b"3")
    _, items = _listing(door)
    assert [m[b"memory_id"] for m in items] == [mine]
    assert _listing(door, b"MATCH", b"shared") == ([b"0"], [])


def test_memories_answers_a_map_per_memory_in_resp3(backend: Backend) -> None:
    """In RESP3 each memory is a map; in RESP2 the same pairs come as a flat array on the wire."""
    door = Door(backend, proto=3)
    mid = door.call(b"STASH", b"1")
    cursor, items = door.call(b"MEMORIES", b"0", b"MATCH", mid)
    assert cursor == b"0"
    assert [m[b"memory_id"] for m in items] == [mid]


@pytest.mark.parametrize("count", [b"0", b"-1", b"%d" % (PAGE_MAX + 1)])
def test_memories_refuses_a_count_outside_its_range(backend: Backend, count: bytes) -> None:
    """COUNT outside 1..PAGE_MAX names the limit and the value."""
    door = Door(backend)
    refused = door.call(b"MEMORIES", b"0", b"COUNT", count)
    assert isinstance(refused, InvalidRequest)
    assert refused.maximum == PAGE_MAX
    assert refused.requested == int(count)
    assert f"got {int(count)}" in refused.wire


@pytest.mark.parametrize("cursor", [b"-1", b"+1", b"x", b"", b" 1", b"1.5"])
def test_memories_refuses_a_cursor_that_is_not_a_count(backend: Backend, cursor: bytes) -> None:
    """A cursor must be a non-negative integer, as SCAN's error says."""
    refused = Door(backend).call(b"MEMORIES", cursor)
    assert isinstance(refused, CommandError)
    assert refused.wire == "ERR invalid cursor"


@pytest.mark.parametrize(
    "words",
    [
        (b"MATCH",),
        (b"COUNT", b"x"),
        (b"COUNT", b"2", b"COUNT", b"3"),
        (b"MATCH", b"a", b"MATCH", b"b"),
        (b"TYPE", b"string"),
    ],
)
def test_memories_refuses_bad_options(backend: Backend, words: tuple[bytes]) -> None:
    """A missing value, a repeated option, a non-integer COUNT or an unknown option."""
    assert isinstance(Door(backend).call(b"MEMORIES", b"0", *words), CommandError)


def test_memories_refuses_a_pattern_over_the_limit(backend: Backend) -> None:
    """MATCH is capped as SCAN's is: the error names the limit and the length."""
    refused = Door(backend).call(b"MEMORIES", b"0", b"MATCH", b"*" * (PATTERN_MAX + 1))
    assert isinstance(refused, CommandError)
    assert str(PATTERN_MAX) in refused.wire
    assert str(PATTERN_MAX + 1) in refused.wire


_KEYS = st.binary(min_size=0, max_size=4).map(lambda b: bytes(97 + c % 3 for c in b))


@settings(max_examples=200, deadline=None)
@given(
    keys=st.sets(_KEYS, max_size=40),
    pattern=st.text("abc*?[]^\\-", max_size=5).map(str.encode),
    limit=st.integers(1, 7),
)
def test_a_pattern_listing_is_the_matching_part_of_the_whole(
    keys: set[bytes], pattern: bytes, limit: int
) -> None:
    """Followed to the end, a listing with a glob gives exactly the keys SCAN's MATCH accepts."""
    store = MemoryStore(Clock(T0))
    for key in keys:
        store.run(ops.Set("ns", key, b"1", T0 + 1000))
    # "*" matches every key, the empty one included, as Redis's SCAN skips matching then.
    every = pattern == b"*"
    match = compile_glob(pattern).match
    got: list[bytes] = []
    cursor = 0
    while True:
        cursor, items = store.run(ops.Page("ns", cursor, limit, pattern))
        assert len(items) <= limit
        got += [key for key, _ in items]
        if cursor == 0:
            break
    assert sorted(got) == sorted(k for k in keys if every or match(k))
