"""Strings in part, float counters, bits, LCS and the key commands: every backend, Redis's digits.

The rules of a key hold for each command that changes part of a value (SETRANGE,
SETBIT, INCRBYFLOAT): the default TTL on a new key, the TTL kept on a change, the
payload cap refused before anything is made, WRONGTYPE with nothing changed. Float
counters are checked against a real redis-server for any numbers, LCS against the
textbook table, and the key finder of COMMAND GETKEYS against every row of the table.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stashd import floats, lcs
from stashd.commands import TABLE
from stashd.commands.keyspecs import has_keys, key_flags, key_positions
from stashd.commands.ranges import LCS_CELLS_MAX
from stashd.errors import (
    CommandError,
    NoSuchKey,
    NotFloat,
    PayloadTooLarge,
    QuotaExceeded,
    WrongType,
)
from stashd.types import Kind, Limits, Principal, Quota
from tests.support.backends import Backend
from tests.support.clock import Clock
from tests.support.door import DEFAULT_TTL_MS, MAX_PAYLOAD, MAX_TTL_MS, NS, Door
from tests.support.servers import RedisServer, StashDaemon


def test_partial_writes_give_a_new_key_the_default_ttl_and_keep_a_ttl(backend: Backend) -> None:
    """SETRANGE, SETBIT and INCRBYFLOAT create with the default TTL and keep a TTL set later."""
    door = Door(backend)
    for first, second in (
        ((b"SETRANGE", b"r", b"2", b"ab"), (b"SETRANGE", b"r", b"0", b"x")),
        ((b"SETBIT", b"b", b"9", b"1"), (b"SETBIT", b"b", b"0", b"1")),
        ((b"INCRBYFLOAT", b"f", b"1.5"), (b"INCRBYFLOAT", b"f", b"0.25")),
    ):
        door.call(*first)
        key = first[1]
        assert door.call(b"PTTL", key) == DEFAULT_TTL_MS
        assert door.call(b"PEXPIRE", key, b"5000") == 1
        door.call(*second)
        assert door.call(b"PTTL", key) == 5000
    assert door.call(b"GET", b"r") == b"x\0ab"
    assert door.call(b"GET", b"b") == b"\x80\x40"
    assert door.call(b"GET", b"f") == b"1.75"
    assert {kind for _, _, _, kind in door.entries().values()} == {Kind.STRING}


def test_each_partial_write_bumps_the_version_and_an_empty_setrange_writes_nothing(
    backend: Backend,
) -> None:
    """A change is a new version; SETRANGE of nothing neither creates nor changes a key."""
    door = Door(backend)
    door.call(b"SET", b"s", b"hello")
    door.call(b"SETRANGE", b"s", b"0", b"J")
    door.call(b"SETBIT", b"s", b"0", b"1")
    assert door.entries()[b"s"][1] == 3
    before = door.entries()
    assert door.call(b"SETRANGE", b"s", b"100", b"") == 5
    assert door.call(b"SETRANGE", b"none", b"3", b"") == 0
    assert door.entries() == before


def test_an_offset_past_the_payload_cap_is_refused_before_anything_is_made(
    backend: Backend,
) -> None:
    """SETRANGE and SETBIT name the size they would write; past the cap they change nothing."""
    door = Door(backend)
    door.call(b"SET", b"s", b"abc")
    before = door.entries()
    refused = door.call(b"SETRANGE", b"s", b"4000000000", b"x")  # would be 4 GB
    assert isinstance(refused, PayloadTooLarge)
    assert (refused.limit, refused.actual) == (MAX_PAYLOAD, 4_000_000_001)
    refused = door.call(b"SETBIT", b"s", str(MAX_PAYLOAD * 8).encode(), b"1")
    assert isinstance(refused, PayloadTooLarge)
    assert refused.actual == MAX_PAYLOAD + 1
    assert isinstance(door.call(b"APPEND", b"s", b"x" * MAX_PAYLOAD), PayloadTooLarge)
    assert door.entries() == before
    # The last byte the cap allows is fine.
    assert door.call(b"SETBIT", b"s", str(MAX_PAYLOAD * 8 - 1).encode(), b"1") == 0
    assert door.call(b"STRLEN", b"s") == MAX_PAYLOAD


def test_the_wrong_kind_changes_nothing(backend: Backend) -> None:
    """Every string command on a hash is refused, and COPY and RENAMENX move any kind."""
    door = Door(backend)
    door.call(b"HSET", b"h", b"f", b"v")
    before = door.entries()
    for words in (
        (b"GETRANGE", b"h", b"0", b"1"),
        (b"SUBSTR", b"h", b"0", b"1"),
        (b"SETRANGE", b"h", b"0", b"x"),
        (b"GETSET", b"h", b"x"),
        (b"INCRBYFLOAT", b"h", b"1"),
        (b"SETBIT", b"h", b"0", b"1"),
        (b"GETBIT", b"h", b"0"),
        (b"BITCOUNT", b"h"),
    ):
        assert isinstance(door.call(*words), WrongType), words
    refused = door.call(b"LCS", b"h", b"h")
    assert isinstance(refused, CommandError)
    assert refused.message == "The specified keys must contain string values"
    assert door.call(b"MSETNX", b"new", b"1", b"h", b"2") == 0
    assert door.entries() == before
    assert door.call(b"COPY", b"h", b"h2") == 1
    assert door.call(b"RENAMENX", b"h2", b"h3") == 1
    assert door.call(b"HGET", b"h3", b"f") == b"v"
    assert door.call(b"TYPE", b"h3") == "hash"


def test_copy_keeps_kind_and_expiry_and_counts_a_new_version(backend: Backend) -> None:
    """The copy expires with its source; REPLACE writes over a key, one version up from it."""
    door = Door(backend)
    door.call(b"RPUSH", b"src", b"a", b"b")
    door.call(b"PEXPIRE", b"src", b"7000")
    door.call(b"SET", b"dst", b"old")
    door.call(b"SET", b"dst", b"older")
    assert door.call(b"COPY", b"src", b"dst") == 0
    assert door.call(b"COPY", b"src", b"dst", b"REPLACE") == 1
    entries = door.entries()
    (value, version, expires, kind), src = entries[b"dst"], entries[b"src"]
    assert (value, expires, kind) == (src[0], src[2], src[3])
    assert version == 3
    assert door.call(b"PTTL", b"dst") == 7000
    assert door.call(b"COPY", b"nosuch", b"x") == 0
    assert b"x" not in door.entries()


def test_copy_and_msetnx_are_held_to_the_quota(backend: Backend) -> None:
    """A copy or an MSETNX that would pass the byte quota is refused and writes nothing."""
    door = Door(backend, Quota(max_bytes=100))
    door.call(b"SET", b"big", b"x" * 60)
    before = door.entries()
    assert isinstance(door.call(b"COPY", b"big", b"copy"), QuotaExceeded)
    assert isinstance(door.call(b"MSETNX", b"a", b"y" * 20, b"b", b"y" * 20), QuotaExceeded)
    assert door.entries() == before
    assert door.call(b"MSETNX", b"a", b"1", b"b", b"2") == 1


def test_renamenx_moves_only_onto_a_free_name(backend: Backend) -> None:
    """A name in use is left alone with its value and version; a missing source is an error."""
    door = Door(backend)
    door.call(b"SET", b"a", b"1")
    door.call(b"SET", b"b", b"2")
    before = door.entries()
    assert door.call(b"RENAMENX", b"a", b"b") == 0
    assert door.call(b"RENAMENX", b"a", b"a") == 0
    assert door.entries() == before
    assert isinstance(door.call(b"RENAMENX", b"none", b"c"), NoSuchKey)
    assert door.call(b"RENAMENX", b"a", b"c") == 1
    assert door.entries()[b"c"] == before[b"a"]


def test_randomkey_and_touch_see_live_keys_only(backend: Backend) -> None:
    """An expired key is never drawn or counted; every live key can be drawn."""
    door = Door(backend)
    clock = backend.store.clock
    assert isinstance(clock, Clock)
    assert door.call(b"RANDOMKEY") is None
    door.call(b"SET", b"short", b"v", b"PX", b"10")
    for name in (b"a", b"b", b"c"):
        door.call(b"SET", name, b"v")
    clock.now += 20
    drawn = {door.call(b"RANDOMKEY") for _ in range(200)}
    assert drawn == {b"a", b"b", b"c"}
    assert door.call(b"TOUCH", b"a", b"short", b"a", b"none") == 2


def test_object_and_memory_usage_read_any_kind(backend: Backend) -> None:
    """OBJECT answers from the stored value, MEMORY USAGE the bytes the quota counts."""
    door = Door(backend)
    door.call(b"SET", b"n", b"42")
    door.call(b"HSET", b"h", b"f", b"v" * 65)
    door.call(b"RPUSH", b"l", b"x")
    assert door.call(b"OBJECT", b"ENCODING", b"n") == b"int"
    assert door.call(b"OBJECT", b"ENCODING", b"h") == b"hashtable"
    assert door.call(b"OBJECT", b"ENCODING", b"l") == b"quicklist"
    assert door.call(b"OBJECT", b"REFCOUNT", b"n") == 2**31 - 1
    assert door.call(b"OBJECT", b"IDLETIME", b"l") == 0
    assert door.call(b"OBJECT", b"ENCODING", b"none") is None
    _, keys, size = backend.run(door.session.service.usage(door.session.require()))
    usages = [door.call(b"MEMORY", b"USAGE", k) for k in (b"n", b"h", b"l")]
    assert (keys, size) == (3, sum(usages))


def test_lcs_work_is_bounded(backend: Backend) -> None:
    """Values whose table would pass the cap are refused, naming both lengths and the limit."""
    door = Door(backend)
    service = door.session.service
    # The door's payload cap is small: store the long values as a roomier caller of the
    # same namespace could have.
    roomy = Principal(NS, Limits(10**6, DEFAULT_TTL_MS, MAX_TTL_MS))
    side = 4200  # 4201 ** 2 cells, just past 2 ** 24
    backend.run(service.set(roomy, b"a", b"ab" * (side // 2)))
    backend.run(service.set(roomy, b"b", b"ba" * (side // 2)))
    backend.run(service.set(roomy, b"c", b"ab" * 2000))  # 4001 ** 2 cells: within
    reply = door.call(b"LCS", b"a", b"b", b"LEN")
    assert isinstance(reply, CommandError)
    assert reply.message == (
        f"LCS of values of {side} and {side} bytes needs {(side + 1) ** 2} cells, "
        f"the limit is {LCS_CELLS_MAX}"
    )
    assert door.call(b"LCS", b"c", b"c", b"LEN") == 4000


def _lcs_table(a: bytes, b: bytes) -> int:
    """The textbook dynamic-programming LCS length."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            if a[i - 1] == b[j - 1]:
                rows[i][j] = rows[i - 1][j - 1] + 1
            else:
                rows[i][j] = max(rows[i - 1][j], rows[i][j - 1])
    return rows[-1][-1]


def _is_subsequence(small: bytes, big: bytes) -> bool:
    it = iter(big)
    return all(byte in it for byte in small)


@given(st.binary(max_size=40), st.binary(max_size=40))
def test_lcs_finds_a_longest_common_subsequence(a: bytes, b: bytes) -> None:
    """Its length is the table's, its text is common to both, its runs add up and lie in both."""
    found = lcs.common(a, b)
    assert found.length == lcs.length(a, b) == _lcs_table(a, b) == len(found.text)
    assert _is_subsequence(found.text, a)
    assert _is_subsequence(found.text, b)
    assert sum(m.length for m in found.matches) == found.length
    for m in found.matches:
        assert a[m.a_start : m.a_end + 1] == b[m.b_start : m.b_end + 1]


@pytest.fixture(scope="module")
def redis_for_floats() -> Iterator[redis.Redis]:
    with RedisServer() as server:
        client = redis.Redis(port=server.port)
        # The reply's own bytes, not redis-py's float of them: the digits are the point.
        client.set_response_callback("INCRBYFLOAT", lambda reply, **_: reply)
        yield client
        client.close()


_NUMBERS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=20).map(str),
    st.sampled_from(["0.1", "0.2", "-0.0", "1e308", "1e-320", "3.0e3", "0x1p-3", "1E5"]),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_NUMBERS, _NUMBERS)
def test_float_counters_give_redis_digits(
    redis_for_floats: redis.Redis, start: str, increment: str
) -> None:
    """For any two numbers, INCRBYFLOAT's reply (or its refusal) is redis-server's, byte for byte."""
    client = redis_for_floats
    client.set("f", start)
    try:
        want: object = client.incrbyfloat("f", increment)  # type: ignore[arg-type]
    except redis.ResponseError as exc:
        want = str(exc)
    try:
        got: object = floats.incr(start.encode(), floats.parse(increment.encode()), NotFloat())
    except CommandError as exc:
        got = exc.message
    assert got == want, (start, increment)


@given(st.data())
def test_getkeys_names_arguments_of_the_request_for_every_command(data: st.DataObject) -> None:
    """For any command of the table and any arguments, the keys found are among them."""
    name = data.draw(st.sampled_from(sorted(TABLE)))
    cmd = TABLE[name]
    rows = [cmd, *cmd.subcommands]
    row = data.draw(st.sampled_from(rows))
    words = row.name.split("|")
    extra = data.draw(st.lists(st.sampled_from([b"k", b"0", b"2", b"GET", b"x"]), max_size=8))
    args = [w.encode() for w in words] + extra
    positions = key_positions(row, args)
    assert all(len(words) <= i < len(args) for i in positions)
    assert has_keys(row) or not positions
    for nth in range(len(positions)):
        assert key_flags(row, args, nth) & {"RO", "RW", "OW", "RM"}


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    with StashDaemon("--backend", "memory") as d:
        yield d


def test_redis_py_string_and_key_api(daemon: StashDaemon) -> None:
    """redis-py's own methods for these commands work as their users call them."""
    client = redis.Redis(port=daemon.port, decode_responses=True)
    client.set("greeting", "Hello World")
    assert client.getrange("greeting", 0, 4) == "Hello"
    assert client.setrange("greeting", 6, "Stash") == 11
    assert client.getset("greeting", "hi") == "Hello Stash"
    assert client.msetnx({"m1": "a", "m2": "b"}) is True
    assert client.msetnx({"m2": "c", "m3": "d"}) is False
    assert client.incrbyfloat("price", 10.5) == 10.5
    assert client.incrbyfloat("price", 0.1) == pytest.approx(10.6)
    assert client.hincrbyfloat("h", "f", 2.5) == 2.5
    assert client.setbit("bits", 7, 1) == 0
    assert client.getbit("bits", 7) == 1
    assert client.bitcount("bits") == 1
    client.mset({"key1": "ohmytext", "key2": "mynewtext"})
    assert client.lcs("key1", "key2") == "mytext"
    assert client.copy("key1", "key3") is True
    assert client.renamenx("key3", "key4") is True
    assert client.touch("key1", "key4", "nosuch") == 2
    assert client.randomkey() is not None
    assert client.object("encoding", "key1") == "embstr"
    assert client.memory_usage("key1") == len("key1") + len("ohmytext")
    assert client.command_getkeys("MSET", "a", "1", "b", "2") == ["a", "b"]
    assert "client|list" in client.command_list()
    assert client.command_list(pattern="get*") == [
        "get",
        "getex",
        "getdel",
        "getset",
        "getrange",
        "getbit",
    ]
    client.close()
