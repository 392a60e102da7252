"""Sorted sets on every backend: the rules of a key hold for them, scores read and write as in Redis."""

from __future__ import annotations

import heapq
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from stashd.containers import pack_members, pack_scores, unpack_scores
from stashd.errors import CommandError, NotFloat, PayloadTooLarge, QuotaExceeded, WrongType
from stashd.resp import Score, encode
from stashd.scores import parse_score, scan_text
from stashd.types import Kind, Quota
from tests.support.backends import Backend, open_backend
from tests.support.clock import Clock
from tests.support.door import DEFAULT_TTL_MS, MAX_PAYLOAD, T0, Door
from tests.support.resp_client import RespClient
from tests.support.servers import StashDaemon


def test_a_new_set_gets_the_default_ttl_and_a_change_keeps_its_ttl(backend: Backend) -> None:
    """ZADD on no key makes a sorted set with the default TTL; later writes leave the expiry."""
    door = Door(backend)
    assert door.call(b"ZADD", b"z", b"1", b"a") == 1
    assert door.call(b"PTTL", b"z") == DEFAULT_TTL_MS
    assert door.call(b"PEXPIRE", b"z", b"5000") == 1
    assert door.call(b"ZINCRBY", b"z", b"2", b"a") == 3.0
    assert door.call(b"ZPOPMIN", b"z", b"0") == []
    assert door.call(b"PTTL", b"z") == 5000
    assert door.entries()[b"z"][3] == Kind.ZSET
    assert door.call(b"TYPE", b"z") == "zset"


def test_a_new_set_by_zincrby_gets_the_default_ttl(backend: Backend) -> None:
    """ZINCRBY on no key creates the set, with the default TTL."""
    door = Door(backend)
    assert door.call(b"ZINCRBY", b"z", b"0.5", b"a") == 0.5
    assert door.call(b"PTTL", b"z") == DEFAULT_TTL_MS


def test_each_change_bumps_the_version_and_a_no_op_does_not(backend: Backend) -> None:
    """Versions count changes: the same score again, NX on a member or ZREM of none do not."""
    door = Door(backend)
    door.call(b"ZADD", b"z", b"1", b"a")
    door.call(b"ZADD", b"z", b"2", b"b")
    assert door.entries()[b"z"][1] == 2
    assert door.call(b"ZADD", b"z", b"1", b"a") == 0
    assert door.call(b"ZADD", b"z", b"NX", b"5", b"a") == 0
    assert door.call(b"ZADD", b"z", b"XX", b"5", b"nosuch") == 0
    assert door.call(b"ZREM", b"z", b"nosuch") == 0
    assert door.call(b"ZREMRANGEBYSCORE", b"z", b"10", b"20") == 0
    assert door.entries()[b"z"][1] == 2
    assert door.call(b"ZADD", b"z", b"XX", b"CH", b"5", b"a") == 1
    assert door.entries()[b"z"][1] == 3


def test_xx_on_no_key_creates_nothing(backend: Backend) -> None:
    """ZADD XX (and XX INCR) on a missing key answer as Redis does and leave no key."""
    door = Door(backend)
    assert door.call(b"ZADD", b"z", b"XX", b"1", b"a") == 0
    assert door.call(b"ZADD", b"z", b"XX", b"INCR", b"1", b"a") is None
    assert door.entries() == {}


def test_the_whole_set_counts_against_the_payload_cap(backend: Backend) -> None:
    """Members that fit one by one are refused once the set passes the cap, naming both sizes."""
    door = Door(backend)
    a, b, c = b"a" * 60, b"b" * 60, b"c" * 60
    assert door.call(b"ZADD", b"z", b"1", a, b"2", b) == 2
    before = door.entries()
    refused = door.call(b"ZADD", b"z", b"3", c)
    assert isinstance(refused, PayloadTooLarge)
    assert refused.limit == MAX_PAYLOAD
    assert refused.actual == len(pack_scores({a: 1.0, b: 2.0, c: 3.0}))
    assert isinstance(door.call(b"ZINCRBY", b"z", b"1", c), PayloadTooLarge)
    assert door.entries() == before
    assert door.call(b"ZCARD", b"z") == 2


def test_a_set_counts_against_the_namespace_quota(backend: Backend) -> None:
    """A member that would pass the namespace's byte quota is refused and changes nothing."""
    door = Door(backend, Quota(max_bytes=100))
    assert door.call(b"ZADD", b"z", b"1", b"x" * 40) == 1
    before = door.entries()
    assert isinstance(door.call(b"ZADD", b"z", b"2", b"y" * 60), QuotaExceeded)
    assert door.entries() == before


def test_a_wrong_kind_changes_nothing(backend: Backend) -> None:
    """Sorted-set commands on a string, and other families' on a sorted set, are refused."""
    door = Door(backend)
    door.call(b"SET", b"s", b"text")
    door.call(b"ZADD", b"z", b"1", b"a")
    before = door.entries()
    for words in (
        (b"ZADD", b"s", b"1", b"a"),
        (b"ZINCRBY", b"s", b"1", b"a"),
        (b"ZREM", b"s", b"a"),
        (b"ZPOPMIN", b"s"),
        (b"ZPOPMAX", b"s", b"0"),
        (b"ZREMRANGEBYRANK", b"s", b"0", b"-1"),
        (b"ZREMRANGEBYSCORE", b"s", b"-inf", b"+inf"),
        (b"ZSCORE", b"s", b"a"),
        (b"ZRANGE", b"s", b"0", b"-1"),
        (b"ZSCAN", b"s", b"0"),
        (b"APPEND", b"z", b"x"),
        (b"INCR", b"z"),
        (b"GETDEL", b"z"),
        (b"HSET", b"z", b"f", b"v"),
        (b"LPUSH", b"z", b"x"),
        (b"RECALL", b"z"),
    ):
        assert isinstance(door.call(*words), WrongType), words
    assert door.entries() == before


def test_bad_arguments_change_nothing_even_on_a_key_of_another_kind(backend: Backend) -> None:
    """Arguments are checked before the key is read, so a bad one wins over WRONGTYPE."""
    door = Door(backend)
    door.call(b"SET", b"s", b"text")
    door.call(b"ZADD", b"z", b"1", b"a")
    before = door.entries()
    for words in (
        (b"ZADD", b"s", b"nan", b"a"),
        (b"ZADD", b"z", b"1", b"b", b"x", b"c"),
        (b"ZADD", b"z", b"NX", b"XX", b"1", b"a"),
        (b"ZPOPMIN", b"s", b"-1"),
        (b"ZRANGE", b"s", b"a", b"b"),
        (b"ZREMRANGEBYSCORE", b"z", b"x", b"1"),
        (b"ZRANDMEMBER", b"z", b"-1000000"),
    ):
        refused = door.call(*words)
        assert isinstance(refused, CommandError), words
        assert not isinstance(refused, WrongType), words
    assert door.entries() == before


def test_an_increment_to_nan_changes_nothing(backend: Backend) -> None:
    """ZINCRBY of +inf on -inf is refused in Redis's words and the score stays."""
    door = Door(backend)
    door.call(b"ZADD", b"z", b"-inf", b"a")
    before = door.entries()
    refused = door.call(b"ZINCRBY", b"z", b"+inf", b"a")
    assert isinstance(refused, CommandError)
    assert refused.wire == "ERR resulting score is not a number (NaN)"
    assert door.entries() == before


def test_emptying_a_set_frees_its_key_and_bytes(backend: Backend) -> None:
    """ZREM, a pop or a removal by range of the last member deletes the key."""
    door = Door(backend)
    principal = door.session.require()
    for words in (
        (b"ZREM", b"z", b"a"),
        (b"ZPOPMAX", b"z", b"3"),
        (b"ZREMRANGEBYRANK", b"z", b"0", b"-1"),
        (b"ZREMRANGEBYSCORE", b"z", b"-inf", b"+inf"),
    ):
        door.call(b"ZADD", b"z", b"1", b"a")
        assert door.call(*words) in (1, [b"a", 1.0]), words
        assert door.entries() == {}, words
        _, keys, size = backend.run(door.session.service.usage(principal))
        assert (keys, size) == (0, 0)


def test_replies_carry_redis_formatted_scores(backend: Backend) -> None:
    """Scores come back as Score, flat in RESP2 and in pairs in RESP3."""
    door2, door3 = Door(backend), Door(backend, proto=3)
    door2.call(b"ZADD", b"z", b"0.1", b"a", b"2", b"b")
    score = door2.call(b"ZSCORE", b"z", b"a")
    assert type(score) is Score
    assert score.text() == b"0.10000000000000001"
    assert door2.call(b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES") == [b"a", 0.1, b"b", 2.0]
    assert door3.call(b"ZRANGE", b"z", b"0", b"-1", b"WITHSCORES") == [[b"a", 0.1], [b"b", 2.0]]
    assert door3.call(b"ZPOPMIN", b"z") == [b"a", 0.1]
    assert door3.call(b"ZPOPMIN", b"z", b"1") == [[b"b", 2.0]]


def test_plain_sets_combine_with_sorted_sets_as_members_of_score_1(backend: Backend) -> None:
    """ZUNION, ZINTER, ZDIFF and ZINTERCARD read a plain set as Redis does: each member 1."""
    door = Door(backend)
    principal = door.session.require()
    members = pack_members([b"a", b"x"])
    backend.run(door.session.service.edit(principal, b"st", Kind.SET, lambda _: (members, None)))
    door.call(b"ZADD", b"u1", b"1", b"a", b"2", b"b", b"3", b"c")
    door.call(b"ZADD", b"u2", b"10", b"b", b"20", b"d", b"inf", b"c")
    union = door.call(b"ZUNION", b"3", b"u1", b"u2", b"st", b"WITHSCORES")
    assert union == [b"x", 1.0, b"a", 2.0, b"b", 12.0, b"d", 20.0, b"c", float("inf")]
    assert door.call(b"ZINTER", b"2", b"u1", b"st", b"WITHSCORES") == [b"a", 2.0]
    assert door.call(b"ZDIFF", b"2", b"st", b"u1") == [b"x"]
    assert door.call(b"ZINTERCARD", b"2", b"st", b"u1") == 1
    assert isinstance(door.call(b"ZADD", b"st", b"1", b"a"), WrongType)


def test_a_store_replaces_its_destination_by_the_rules_of_a_write(backend: Backend) -> None:
    """ZUNIONSTORE replaces a string with the default TTL, bumps its version, keeps the cap."""
    door = Door(backend)
    door.call(b"SET", b"dst", b"text")
    door.call(b"PEXPIRE", b"dst", b"5000")
    door.call(b"ZADD", b"a", b"1", b"x", b"2", b"y")
    assert door.call(b"ZUNIONSTORE", b"dst", b"1", b"a") == 2
    assert door.entries()[b"dst"][1:] == (2, T0 + DEFAULT_TTL_MS, Kind.ZSET)
    door.call(b"ZADD", b"one", b"1", b"b" * 60)
    door.call(b"ZADD", b"two", b"2", b"c" * 60, b"3", b"d" * 60)
    before = door.entries()
    refused = door.call(b"ZUNIONSTORE", b"dst", b"2", b"one", b"two")
    assert isinstance(refused, PayloadTooLarge)
    assert door.entries() == before
    assert door.call(b"ZINTERSTORE", b"dst", b"2", b"a", b"nosuch") == 0
    assert b"dst" not in door.entries()


def test_a_store_counts_against_the_quota(backend: Backend) -> None:
    """A stored set that would pass the namespace's quota is refused and changes nothing."""
    door = Door(backend, Quota(max_bytes=200))
    door.call(b"ZADD", b"a", b"1", b"x", b"2", b"y")
    door.call(b"ZADD", b"big", b"1", b"b" * 60)
    assert door.call(b"ZUNIONSTORE", b"dst", b"1", b"a") == 2
    before = door.entries()
    assert isinstance(door.call(b"ZUNIONSTORE", b"dst", b"2", b"a", b"big"), QuotaExceeded)
    assert door.entries() == before


def _format(value: Any, proto: int) -> bytes:  # noqa: ANN401 - any reply
    out = bytearray()
    encode(value, proto, out)
    return bytes(out)


finite = st.floats(allow_nan=False)


@given(finite)
def test_a_score_is_written_as_redis_writes_it(x: float) -> None:
    """Any score is sent in %.17g (bulk in RESP2, double in RESP3) and reads back exactly."""
    text = b"%.17g" % x
    assert _format(Score(x), 2) == b"$%d\r\n%b\r\n" % (len(text), text)
    assert _format(Score(x), 3) == b",%b\r\n" % text
    assert parse_score(text) == x
    assert parse_score(repr(x).encode()) == x
    assert float(scan_text(x)) == x
    assert _format(x, 3) == b",%b\r\n" % repr(x).encode()  # a plain float keeps its form


@given(st.text(alphabet="0123456789+-.eExXabcdefinINFtyp _", max_size=12))
def test_a_score_argument_is_read_as_strtod_reads_it(text: str) -> None:
    """A text Python reads as a number Redis reads the same, unless Redis refuses it."""
    raw = text.encode()
    try:
        mine: float | None = parse_score(raw)
    except NotFloat:
        mine = None
    if mine is None:
        return
    # What Stash accepts is a number to Python too (after the hex forms strtod has).
    try:
        expected = float(text)
    except ValueError:
        expected = float.fromhex(text)
    assert mine == expected or (mine != mine and expected != expected)  # noqa: PLR0124
    assert not text[:1].isspace()
    assert not text[-1:].isspace()
    assert "_" not in text
    assert "nan" not in text.lower()


def _model_range(model: dict[bytes, float], start: int, stop: int) -> list[bytes]:
    order = [m for s, m in sorted((s, m) for m, s in model.items())]
    n = len(order)
    lo = start + n if start < 0 else start
    hi = stop + n if stop < 0 else stop
    lo = max(lo, 0)
    hi = min(hi, n - 1)
    return order[lo : hi + 1] if lo <= hi else []


members = st.sampled_from([b"a", b"b", b"c", b"d", b"ab", b""])
scores = st.sampled_from([b"0", b"1", b"-1", b"2.5", b"1e3", b"-inf", b"inf", b"0.1"])
steps = st.lists(
    st.one_of(
        st.tuples(st.just("zadd"), st.lists(st.tuples(scores, members), min_size=1, max_size=4)),
        st.tuples(st.just("zrem"), st.lists(members, min_size=1, max_size=3)),
        st.tuples(st.just("zincrby"), st.tuples(scores, members)),
        st.tuples(st.just("zrange"), st.tuples(st.integers(-6, 6), st.integers(-6, 6))),
        st.tuples(st.just("zpopmin"), st.integers(0, 4)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(steps)
def test_commands_match_a_dict_model(script: list[tuple[str, Any]]) -> None:
    """ZADD, ZREM, ZINCRBY, ZRANGE and ZPOPMIN agree with a dict of scores at every step."""
    with tempfile.TemporaryDirectory() as tmp:
        backend = open_backend("memory", Clock(T0), Path(tmp))
        try:
            _run_model(Door(backend), script)
        finally:
            backend.close()


def _run_model(door: Door, script: list[tuple[str, Any]]) -> None:  # noqa: C901 - one branch per command
    model: dict[bytes, float] = {}
    for name, arg in script:
        if name == "zadd":
            words = [w for score, member in arg for w in (score, member)]
            before = len(model)
            for score, member in arg:
                model[member] = float(score) + 0.0
            assert door.call(b"ZADD", b"z", *words) == len(model) - before
        elif name == "zrem":
            gone = len(set(arg) & set(model))
            for member in arg:
                model.pop(member, None)
            assert door.call(b"ZREM", b"z", *arg) == gone
        elif name == "zincrby":
            score, member = arg
            new = model.get(member, 0.0) + float(score)
            reply = door.call(b"ZINCRBY", b"z", score, member)
            if new != new:  # noqa: PLR0124 - NaN: refused, nothing changed
                assert isinstance(reply, CommandError)
            else:
                model[member] = new + 0.0
                assert reply == new
        elif name == "zrange":
            start, stop = arg
            got = door.call(b"ZRANGE", b"z", b"%d" % start, b"%d" % stop)
            assert got == _model_range(model, start, stop)
        else:
            picked = heapq.nsmallest(arg, ((s, m) for m, s in model.items()))
            for _, m in picked:
                del model[m]
            got = door.call(b"ZPOPMIN", b"z", b"%d" % arg)
            assert got == [part for s, m in picked for part in (m, s)]
        entries = door.entries()
        if model:
            assert unpack_scores(entries[b"z"][0]) == model
        else:
            assert entries == {}


@given(st.dictionaries(st.binary(max_size=40), finite, max_size=30))
def test_the_codec_keeps_every_member_and_score(zs: dict[bytes, float]) -> None:
    """Any binary members and scores come back as they were set, in their order."""
    assert list(unpack_scores(pack_scores(zs)).items()) == list(zs.items())


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    with StashDaemon("--backend", "memory") as d:
        yield d


def test_redis_py_sorted_set_api(daemon: StashDaemon) -> None:
    """redis-py's sorted-set methods, as an application calls them, RESP2 and RESP3."""
    for protocol in (2, 3):
        client = redis.Redis(port=daemon.port, protocol=protocol, decode_responses=True)
        key = f"leaderboard:{protocol}"
        assert client.zadd(key, {"ada": 10, "grace": 7.5, "linus": 3}) == 3
        assert client.zincrby(key, 0.5, "linus") == 3.5
        assert client.zscore(key, "grace") == 7.5
        pairs: list[Any] = client.zrange(key, 0, -1, withscores=True)
        assert [tuple(p) for p in pairs] == [("linus", 3.5), ("grace", 7.5), ("ada", 10.0)]
        assert all(type(p[1]) is float for p in pairs)
        assert client.zrevrange(key, 0, 0) == ["ada"]
        assert client.zrangebyscore(key, "(3.5", "+inf") == ["grace", "ada"]
        assert client.zrank(key, "ada") == 2
        assert client.zcard(key) == 3
        assert client.zmscore(key, ["ada", "nobody"]) == [10.0, None]
        assert dict(client.zscan_iter(key, match="a*")) == {"ada": 10.0}
        # One pop without a count is one flat pair in RESP3, as Redis sends it.
        popped = client.zpopmin(key)
        assert popped == ([("linus", 3.5)] if protocol == 2 else ["linus", 3.5])
        assert [tuple(p) for p in client.zpopmax(key, 2)] == [("ada", 10.0), ("grace", 7.5)]
        assert client.exists(key) == 0
        client.close()


def test_bzpopmin_is_woken_by_zadd_from_another_connection(daemon: StashDaemon) -> None:
    """A blocked BZPOPMIN returns the member another client ZADDs, with its score."""
    other = redis.Redis(port=daemon.port)
    got: list[Any] = []
    blocked = redis.Redis(port=daemon.port)
    thread = threading.Thread(target=lambda: got.append(blocked.bzpopmin(["q1", "q2"], 0)))
    thread.start()
    deadline = time.monotonic() + 10
    while other.info("clients")["blocked_clients"] != 1:
        assert time.monotonic() < deadline, "never blocked"
        time.sleep(0.01)
    other.zadd("q2", {"job": 1.5})
    thread.join(10)
    assert got == [(b"q2", b"job", 1.5)]
    assert other.exists("q2") == 0
    blocked.close()
    other.close()


def test_bzmpop_is_woken_by_zadd_from_another_connection(daemon: StashDaemon) -> None:
    """A blocked BZMPOP returns the members another client ZADDs, lowest first."""
    other = redis.Redis(port=daemon.port)
    blocked = RespClient(daemon.port, timeout=10)
    blocked.send(b"BZMPOP", b"0", b"2", b"m1", b"m2", b"MIN", b"COUNT", b"5")
    deadline = time.monotonic() + 10
    while other.info("clients")["blocked_clients"] != 1:
        assert time.monotonic() < deadline, "never blocked"
        time.sleep(0.01)
    other.zadd("m2", {"b": 2, "a": 1})
    assert blocked.read().render() == "[$'m2', [[$'a', $'1'], [$'b', $'2']]]"
    assert other.exists("m2") == 0
    blocked.close()
    other.close()


def test_a_blocking_pop_that_times_out_is_a_null_array(daemon: StashDaemon) -> None:
    """The timeout's reply is Redis's null array, *-1 in RESP2 (not the null bulk $-1)."""
    client = RespClient(daemon.port)
    for words in (
        (b"BZPOPMIN", b"nothing", b"0.01"),
        (b"BZPOPMAX", b"nothing", b"0.01"),
        (b"BLPOP", b"nothing", b"0.01"),
        (b"BZMPOP", b"0.01", b"1", b"nothing", b"MIN"),
        (b"ZMPOP", b"1", b"nothing", b"MIN"),
    ):
        reply = client.call(*words)
        assert (reply.kind, reply.value) == ("*", None), words
    client.close()


@pytest.mark.skipif(shutil.which("redis-benchmark") is None, reason="needs redis-benchmark")
def test_redis_benchmark_zadd_and_zpopmin_run(daemon: StashDaemon) -> None:
    """redis-benchmark's own ZADD and ZPOPMIN tests complete with no error reply."""
    done = subprocess.run(  # noqa: S603 - a fixed local tool
        [  # noqa: S607 - found on PATH, as its users run it
            "redis-benchmark",
            "-p",
            str(daemon.port),
            "-t",
            "zadd,zpopmin",
            "-n",
            "2000",
            "-c",
            "4",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout.replace("\r", "\n")
    assert "ZADD" in out, out
    assert "ZPOPMIN" in out, out
    assert "ERR" not in out, out
