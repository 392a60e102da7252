"""Sets on every backend: the rules of a key hold for them, and clients use them as on Redis."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stashd.commands import TABLE
from stashd.containers import drop, may_hold, pack_members, unpack, unpack_members
from stashd.errors import PayloadTooLarge, QuotaExceeded, WrongType
from stashd.types import Kind, Quota
from tests.support.backends import Backend, open_backend
from tests.support.clock import Clock
from tests.support.door import DEFAULT_TTL_MS, MAX_PAYLOAD, NS, T0, Door
from tests.support.resp_client import RespClient
from tests.support.servers import StashDaemon


def test_a_new_set_gets_the_default_ttl_and_a_change_keeps_its_ttl(backend: Backend) -> None:
    """SADD on no key makes a set with the default TTL; later writes leave the expiry alone."""
    door = Door(backend)
    assert door.call(b"SADD", b"s", b"a", b"b") == 2
    assert door.call(b"PTTL", b"s") == DEFAULT_TTL_MS
    assert door.call(b"PEXPIRE", b"s", b"5000") == 1
    assert door.call(b"SADD", b"s", b"c") == 1
    assert door.call(b"SREM", b"s", b"a") == 1
    assert door.call(b"SPOP", b"s") in {b"b", b"c"}
    assert door.call(b"PTTL", b"s") == 5000
    assert door.entries()[b"s"][3] == Kind.SET


def test_each_change_bumps_the_version_and_a_no_op_does_not(backend: Backend) -> None:
    """SADD of a member already there, SREM of none and SPOP 0 leave the version alone."""
    door = Door(backend)
    door.call(b"SADD", b"s", b"a")
    door.call(b"SADD", b"s", b"b")
    assert door.entries()[b"s"][1] == 2
    assert door.call(b"SADD", b"s", b"a") == 0
    assert door.call(b"SREM", b"s", b"nosuch") == 0
    assert door.call(b"SPOP", b"s", b"0") == set()
    assert door.call(b"SMOVE", b"s", b"s", b"a") == 1
    assert door.entries()[b"s"][1] == 2


def test_members_keep_the_order_they_were_added_in(backend: Backend) -> None:
    """The stored records are in insertion order, which SSCAN and SRANDMEMBER's whole set show."""
    door = Door(backend)
    door.call(b"SADD", b"s", b"c", b"a")
    door.call(b"SADD", b"s", b"b", b"a")
    assert list(unpack_members(door.entries()[b"s"][0])) == [b"c", b"a", b"b"]
    assert door.call(b"SSCAN", b"s", b"0") == [b"0", [b"c", b"a", b"b"]]


def test_the_whole_set_counts_against_the_payload_cap(backend: Backend) -> None:
    """Members that fit one by one are refused once the set passes the cap, naming both sizes."""
    door = Door(backend)
    member = b"x" * 63  # 68 bytes a record: two fit under the cap, three do not
    assert door.call(b"SADD", b"s", member + b"1", member + b"2") == 2
    before = door.entries()
    refused = door.call(b"SADD", b"s", member + b"3")
    assert isinstance(refused, PayloadTooLarge)
    assert refused.limit == MAX_PAYLOAD
    assert refused.actual == len(pack_members([member + b"%d" % i for i in (1, 2, 3)]))
    assert door.entries() == before
    assert door.call(b"SCARD", b"s") == 2


def test_a_move_refused_at_its_destination_leaves_the_source(backend: Backend) -> None:
    """SMOVE into a set the member would push past the cap changes neither set."""
    door = Door(backend)
    member = b"x" * 63  # 68 bytes a record: two fit under the cap, three do not
    door.call(b"SADD", b"src", member + b"!")
    door.call(b"SADD", b"dst", member + b"1", member + b"2")
    before = door.entries()
    assert isinstance(door.call(b"SMOVE", b"src", b"dst", member + b"!"), PayloadTooLarge)
    assert door.entries() == before


def test_a_store_past_the_payload_cap_changes_nothing(backend: Backend) -> None:
    """SUNIONSTORE of a union too large is refused, and the destination keeps what it held."""
    door = Door(backend)
    member = b"x" * 63  # 68 bytes a record: two fit under the cap, three do not
    door.call(b"SADD", b"a", member + b"1", member + b"2")
    door.call(b"SADD", b"b", member + b"3")
    door.call(b"SET", b"dst", b"text")
    before = door.entries()
    assert isinstance(door.call(b"SUNIONSTORE", b"dst", b"a", b"b"), PayloadTooLarge)
    assert door.entries() == before


def test_a_set_counts_against_the_namespace_quota(backend: Backend) -> None:
    """SADD, SMOVE to a new key and a STORE past the quota are refused and change nothing."""
    door = Door(backend, Quota(max_keys=2, max_bytes=100))
    assert door.call(b"SADD", b"a", b"x" * 30) == 1
    assert door.call(b"SADD", b"b", b"y", b"z") == 2
    before = door.entries()
    for words in (
        (b"SADD", b"a", b"w" * 60),
        (b"SMOVE", b"b", b"new", b"y"),
        (b"SUNIONSTORE", b"c", b"a", b"b"),
    ):
        assert isinstance(door.call(*words), QuotaExceeded), words
        assert door.entries() == before, words
    # A move that frees in one set what it adds to another fits a full quota.
    assert door.call(b"SMOVE", b"b", b"a", b"y") == 1


def test_a_wrong_kind_changes_nothing(backend: Backend) -> None:
    """A set command on a string or hash and other commands on a set are refused; all stay."""
    door = Door(backend)
    door.call(b"SET", b"str", b"text")
    door.call(b"HSET", b"h", b"f", b"v")
    door.call(b"SADD", b"s", b"a", b"b")
    before = door.entries()
    for words in (
        (b"SADD", b"str", b"a"),
        (b"SREM", b"h", b"f"),
        (b"SPOP", b"str"),
        (b"SPOP", b"str", b"2"),
        (b"SMEMBERS", b"h"),
        (b"SMOVE", b"s", b"str", b"a"),
        (b"SMOVE", b"str", b"s", b"text"),
        (b"SINTER", b"s", b"h"),
        (b"SINTERCARD", b"2", b"nosuch", b"str"),
        (b"SUNIONSTORE", b"out", b"s", b"str"),
        (b"SDIFFSTORE", b"s", b"s", b"h"),
        (b"APPEND", b"s", b"x"),
        (b"INCR", b"s"),
        (b"HSET", b"s", b"f", b"v"),
        (b"LPUSH", b"s", b"x"),
        (b"GETDEL", b"s"),
        (b"RECALL", b"s"),
        (b"UPDATE", b"s", b"DATA", b"{}"),
    ):
        assert isinstance(door.call(*words), WrongType), words
    # A missing source moves nothing: 0, whatever the destination holds, as in Redis.
    assert door.call(b"SMOVE", b"nosuch", b"h", b"a") == 0
    assert door.entries() == before


def test_emptying_a_set_frees_its_key_and_bytes(backend: Backend) -> None:
    """SREM, SPOP and SMOVE of the last member delete the key; usage goes back to zero."""
    door = Door(backend)
    door.call(b"SADD", b"a", b"x")
    door.call(b"SADD", b"b", b"y")
    door.call(b"SADD", b"c", b"z", b"w")
    assert door.call(b"SREM", b"a", b"x") == 1
    assert door.call(b"SPOP", b"b") == b"y"
    assert door.call(b"SPOP", b"c", b"9") == {b"z", b"w"}
    assert door.entries() == {}
    door.call(b"SADD", b"d", b"m")
    assert door.call(b"SMOVE", b"d", b"e", b"m") == 1
    assert door.call(b"DEL", b"e") == 1
    principal = door.session.require()
    _, keys, size = backend.run(door.session.service.usage(principal))
    assert (keys, size) == (0, 0)


def test_smove_creates_with_the_default_ttl_and_keeps_an_existing_one(backend: Backend) -> None:
    """A destination SMOVE creates gets the default TTL; one that was there keeps its own."""
    door = Door(backend)
    door.call(b"SADD", b"src", b"a", b"b", b"c")
    door.call(b"PEXPIRE", b"src", b"5000")
    assert door.call(b"SMOVE", b"src", b"fresh", b"a") == 1
    assert door.call(b"PTTL", b"fresh") == DEFAULT_TTL_MS
    door.call(b"PEXPIRE", b"fresh", b"7000")
    assert door.call(b"SMOVE", b"src", b"fresh", b"b") == 1
    assert door.call(b"PTTL", b"fresh") == 7000
    assert door.call(b"PTTL", b"src") == 5000
    assert door.call(b"SMEMBERS", b"fresh") == {b"a", b"b"}
    door.call(b"SADD", b"fresh", b"c")
    assert door.call(b"SMOVE", b"src", b"fresh", b"c") == 1  # already there: src loses it
    assert door.call(b"EXISTS", b"src") == 0
    assert door.call(b"SCARD", b"fresh") == 3


def test_a_store_replaces_its_destination_as_a_new_set(backend: Backend) -> None:
    """The STORE forms replace any kind, give the default TTL, and delete on an empty result."""
    door = Door(backend)
    door.call(b"SADD", b"a", b"1", b"2", b"3")
    door.call(b"SADD", b"b", b"2", b"3", b"4")
    door.call(b"SET", b"out", b"text")
    door.call(b"PEXPIRE", b"out", b"5000")
    assert door.call(b"SINTERSTORE", b"out", b"a", b"b") == 2
    assert door.call(b"SMEMBERS", b"out") == {b"2", b"3"}
    assert door.call(b"PTTL", b"out") == DEFAULT_TTL_MS
    assert door.entries()[b"out"][3] == Kind.SET
    assert door.call(b"SUNIONSTORE", b"out", b"a", b"b") == 4
    assert list(unpack_members(door.entries()[b"out"][0])) == [b"1", b"2", b"3", b"4"]
    assert door.call(b"SDIFFSTORE", b"a", b"a", b"b") == 1  # a source as destination
    assert door.call(b"SMEMBERS", b"a") == {b"1"}
    assert door.call(b"SDIFFSTORE", b"out", b"a", b"a") == 0
    assert door.call(b"EXISTS", b"out") == 0
    assert door.call(b"SINTERSTORE", b"nothing", b"nosuch") == 0
    assert b"nothing" not in door.entries()


def test_the_reads_of_several_sets(backend: Backend) -> None:
    """SINTER, SUNION, SDIFF and SINTERCARD read every key in one step."""
    door = Door(backend)
    door.call(b"SADD", b"a", b"1", b"2", b"3", b"4")
    door.call(b"SADD", b"b", b"3", b"4", b"5")
    assert door.call(b"SINTER", b"a", b"b") == {b"3", b"4"}
    assert door.call(b"SUNION", b"a", b"b", b"nosuch") == {b"1", b"2", b"3", b"4", b"5"}
    assert door.call(b"SDIFF", b"a", b"b") == {b"1", b"2"}
    assert door.call(b"SINTER", b"a", b"nosuch") == set()
    assert door.call(b"SINTERCARD", b"2", b"a", b"b") == 2
    assert door.call(b"SINTERCARD", b"1", b"a", b"LIMIT", b"3") == 3


def test_a_key_named_many_times_is_read_once(backend: Backend) -> None:
    """SUNION of one set named 1,000 times reads one key; SDIFF of the first again is empty."""
    door = Door(backend)
    door.call(b"SADD", b"s", b"a", b"b")
    door.call(b"SADD", b"t", b"b")
    words = [b"SUNION", *([b"s"] * 1000)]
    deferred = TABLE[b"sunion"].handler(door.session, words)
    assert deferred.op.slots() == [(NS, b"s")]
    assert door.call(*words) == {b"a", b"b"}
    assert door.call(b"SDIFF", b"s", b"t", b"s") == set()
    assert door.call(b"SDIFFSTORE", b"s", b"s", b"t", b"t") == 1
    assert door.call(b"SINTERCARD", b"3", b"s", b"s", b"s") == 1


def test_sscan_bounds_its_pattern_as_scan_does(backend: Backend) -> None:
    """A MATCH pattern past 1,024 bytes is refused, naming its size; one at the bound is read."""
    door = Door(backend)
    door.call(b"SADD", b"s", b"a")
    err = door.call(b"SSCAN", b"s", b"0", b"MATCH", b"a" * 1025)
    assert str(err) == "pattern is 1025 bytes, the limit is 1024 bytes"
    assert door.call(b"SSCAN", b"s", b"0", b"MATCH", b"*" * 1024) == [b"0", [b"a"]]


def test_spop_and_srandmember_pick_uniformly(tmp_path: Path) -> None:
    """Each member is picked about as often as any other, by SPOP and both SRANDMEMBERs."""
    backend = open_backend("memory", Clock(T0), tmp_path)
    try:
        door = Door(backend)
        members = [b"m%d" % i for i in range(5)]
        door.call(b"SADD", b"s", *members)
        repeats = door.call(b"SRANDMEMBER", b"s", b"-5000")
        distinct: Counter[bytes] = Counter()
        popped: Counter[bytes] = Counter()
        for _ in range(1000):
            distinct.update(door.call(b"SRANDMEMBER", b"s", b"2"))
            popped[door.call(b"SPOP", b"s")] += 1
            door.call(b"SADD", b"s", *members)
        for counts, total in ((Counter(repeats), 5000), (distinct, 2000), (popped, 1000)):
            assert set(counts) == set(members)
            for n in counts.values():  # each expects total / 5, far inside these bounds
                assert total / 5 * 0.7 < n < total / 5 * 1.3, counts
    finally:
        backend.close()


def test_srandmember_bounds_a_negative_count(tmp_path: Path) -> None:
    """A count past -100,000 is refused before any work, naming the bound and the count."""
    backend = open_backend("memory", Clock(T0), tmp_path)
    try:
        door = Door(backend)
        door.call(b"SADD", b"s", b"a")
        err = door.call(b"SRANDMEMBER", b"s", b"-1000000000000")
        assert "-1000000000000" in str(err)
        assert "-100000" in str(err)
        assert len(door.call(b"SRANDMEMBER", b"s", b"-100000")) == 100_000
    finally:
        backend.close()


_MODEL_OPS = st.lists(
    st.one_of(
        st.tuples(st.just(b"SADD"), st.lists(st.sampled_from(b"abcdef"), min_size=1, max_size=4)),
        st.tuples(st.just(b"SREM"), st.lists(st.sampled_from(b"abcdef"), min_size=1, max_size=4)),
        st.tuples(st.just(b"SPOP"), st.integers(-1, 4)),
        st.tuples(
            st.just(b"SISMEMBER"), st.lists(st.sampled_from(b"abcdef"), min_size=1, max_size=1)
        ),
        st.tuples(st.just(b"SCARD"), st.just(0)),
    ),
    max_size=25,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=_MODEL_OPS)
def test_sets_behave_as_a_python_set(backend: Backend, steps: list[tuple[bytes, Any]]) -> None:
    """SADD, SREM, SPOP, SISMEMBER and SCARD agree with a Python set after every step."""
    door = Door(backend)
    door.call(b"FLUSHDB")
    model: set[bytes] = set()
    for cmd, arg in steps:
        if cmd in (b"SADD", b"SREM", b"SISMEMBER"):
            members = [bytes([c]) for c in arg]
            reply = door.call(cmd, b"s", *members)
            if cmd == b"SADD":
                assert reply == len(set(members) - model)
                model |= set(members)
            elif cmd == b"SREM":
                assert reply == len(set(members) & model)
                model -= set(members)
            else:
                assert reply == int(members[0] in model)
        elif cmd == b"SPOP":
            if arg == -1:  # no count
                reply = door.call(b"SPOP", b"s")
                if model:
                    assert reply in model
                    model.discard(reply)
                else:
                    assert reply is None
            else:
                reply = door.call(b"SPOP", b"s", b"%d" % arg)
                assert len(reply) == min(arg, len(model))
                assert reply <= model
                model -= reply
        else:
            assert door.call(b"SCARD", b"s") == len(model)
        assert door.call(b"SCARD", b"s") == len(model)
        assert door.call(b"EXISTS", b"s") == int(bool(model))
    assert door.call(b"SMEMBERS", b"s") == model


@given(st.lists(st.binary(max_size=40), max_size=30, unique=True))
def test_the_codec_keeps_every_member_and_its_order(members: list[bytes]) -> None:
    """Any binary members come back as they were added, in their order."""
    assert list(unpack_members(pack_members(members))) == members


@given(st.lists(st.binary(max_size=6), min_size=1, max_size=20, unique=True), st.data())
def test_drop_removes_one_record_and_keeps_the_rest(
    members: list[bytes], data: st.DataObject
) -> None:
    """Cutting record i out of the value leaves the others' records, in their order."""
    i = data.draw(st.integers(0, len(members) - 1))
    blob = pack_members(members)
    assert drop(blob, unpack(blob), i) == pack_members(members[:i] + members[i + 1 :])


@given(st.lists(st.binary(max_size=6), max_size=20, unique=True), st.binary(max_size=6))
def test_may_hold_never_rules_out_a_member(members: list[bytes], probe: bytes) -> None:
    """The quick search says no only for a member that is not there (short bytes collide)."""
    blob = pack_members(members)
    for member in members:
        assert may_hold(blob, member)
    if not may_hold(blob, probe):
        assert probe not in members


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    with StashDaemon("--backend", "memory", "--no-http") as d:
        yield d


def test_resp3_answers_a_set_type_where_redis_does(daemon: StashDaemon) -> None:
    """SMEMBERS, SINTER, SUNION, SDIFF and SPOP with a count are `~` in RESP3, `*` in RESP2."""
    for proto in (2, 3):
        client = RespClient(daemon.port)
        try:
            if proto == 3:
                assert client.call("HELLO", "3").kind == "%"
            client.call("SADD", "s", "a", "b")
            want = "~" if proto == 3 else "*"
            for words in (
                ("SMEMBERS", "s"),
                ("SINTER", "s"),
                ("SUNION", "s"),
                ("SDIFF", "s"),
                ("SPOP", "s", "0"),
            ):
                assert client.call(*words).kind == want, words
            for words in (("SRANDMEMBER", "s", "2"), ("SSCAN", "s", "0"), ("SMISMEMBER", "s", "a")):
                assert client.call(*words).kind == "*", words
            client.call("DEL", "s")
        finally:
            client.close()


def test_redis_py_set_api(daemon: StashDaemon) -> None:
    """redis-py's set methods, as an application calls them, RESP2 and RESP3."""
    for protocol in (2, 3):
        client = redis.Redis(port=daemon.port, protocol=protocol, decode_responses=True)
        seen, other = f"seen:{protocol}", f"other:{protocol}"
        assert client.sadd(seen, "u1", "u2", "u3") == 3
        assert client.smembers(seen) == {"u1", "u2", "u3"}
        assert client.sismember(seen, "u2")
        assert client.smismember(seen, ["u1", "nosuch"]) == [1, 0]
        assert client.scard(seen) == 3
        assert client.sadd(other, "u3", "u4") == 2
        assert client.sinter([seen, other]) == {"u3"}
        assert client.sunion([seen, other]) == {"u1", "u2", "u3", "u4"}
        assert client.sdiff([seen, other]) == {"u1", "u2"}
        assert client.sintercard(2, [seen, other]) == 1
        assert client.sinterstore(f"both:{protocol}", [seen, other]) == 1
        assert client.smove(seen, other, "u1")
        assert client.srem(other, "u1", "u4") == 2
        assert client.srandmember(seen) in {"u2", "u3"}
        popped = client.spop(seen, 5)
        assert isinstance(popped, (list, set)), popped  # RESP2 gives a list, RESP3 a set
        assert set(popped) == {"u2", "u3"}
        assert client.exists(seen) == 0
        assert set(client.sscan_iter(other, match="u*")) == {"u3"}
        assert client.type(other) == "set"
        assert client.ttl(other) > 0
        with client.pipeline() as pipe:  # MULTI/EXEC
            pipe.sadd(other, "u9")
            pipe.scard(other)
            assert pipe.execute() == [1, 2]
        client.close()


def test_redis_benchmark_default_set_commands(daemon: StashDaemon) -> None:
    """redis-benchmark's own SADD and SPOP tests run against stashd without an error."""
    out = subprocess.run(  # noqa: S603 - a fixed local command
        ["redis-benchmark", "-p", str(daemon.port), "-t", "sadd,spop", "-n", "2000", "-q"],  # noqa: S607
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "SADD" in out.stdout, out.stdout
    assert "SPOP" in out.stdout, out.stdout
    assert "ERR" not in out.stdout + out.stderr
    client = redis.Redis(port=daemon.port)
    assert client.type("myset") in (b"set", b"none")
    client.close()
