"""Hashes on every backend: the rules of a key hold for them, and real libraries use them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from stashd.containers import pack_map, unpack_map
from stashd.errors import PayloadTooLarge, QuotaExceeded, WrongType
from stashd.types import Kind, Quota
from tests.support.backends import Backend
from tests.support.door import DEFAULT_TTL_MS, MAX_PAYLOAD, Door
from tests.support.servers import StashDaemon


def test_a_new_hash_gets_the_default_ttl_and_a_change_keeps_its_ttl(backend: Backend) -> None:
    """HSET on no key makes a hash with the default TTL; later writes leave the expiry alone."""
    door = Door(backend)
    assert door.call(b"HSET", b"h", b"f", b"v") == 1
    assert door.call(b"PTTL", b"h") == DEFAULT_TTL_MS
    assert door.call(b"PEXPIRE", b"h", b"5000") == 1
    assert door.call(b"HINCRBY", b"h", b"n", b"2") == 2
    assert door.call(b"PTTL", b"h") == 5000
    assert door.entries()[b"h"][3] == Kind.HASH


def test_each_change_bumps_the_version_and_a_no_op_does_not(backend: Backend) -> None:
    """Versions count changes of the fields: HSETNX on a present field and HDEL of none do not."""
    door = Door(backend)
    door.call(b"HSET", b"h", b"f", b"v")
    door.call(b"HSET", b"h", b"g", b"w")
    assert door.entries()[b"h"][1] == 2
    assert door.call(b"HSETNX", b"h", b"f", b"other") == 0
    assert door.call(b"HDEL", b"h", b"nosuch") == 0
    assert door.entries()[b"h"][1] == 2


def test_the_whole_hash_counts_against_the_payload_cap(backend: Backend) -> None:
    """Fields that fit one by one are refused once the hash passes the cap, naming both sizes."""
    door = Door(backend)
    value = b"x" * 60
    assert door.call(b"HSET", b"h", b"a", value, b"b", value) == 2
    before = door.entries()
    refused = door.call(b"HSET", b"h", b"c", value)
    assert isinstance(refused, PayloadTooLarge)
    assert refused.limit == MAX_PAYLOAD
    assert refused.actual == len(pack_map({b"a": value, b"b": value, b"c": value}))
    assert door.entries() == before
    assert door.call(b"HLEN", b"h") == 2


def test_a_hash_counts_against_the_namespace_quota(backend: Backend) -> None:
    """A field that would pass the namespace's byte quota is refused and changes nothing."""
    door = Door(backend, Quota(max_bytes=100))
    assert door.call(b"HSET", b"h", b"a", b"x" * 40) == 1
    before = door.entries()
    assert isinstance(door.call(b"HSET", b"h", b"b", b"x" * 60), QuotaExceeded)
    assert door.entries() == before


def test_a_wrong_kind_changes_nothing(backend: Backend) -> None:
    """A hash command on a string and a string command on a hash are refused; both stay."""
    door = Door(backend)
    door.call(b"SET", b"s", b"text")
    door.call(b"HSET", b"h", b"f", b"v")
    before = door.entries()
    for words in (
        (b"HSET", b"s", b"f", b"v"),
        (b"HINCRBY", b"s", b"f", b"1"),
        (b"APPEND", b"h", b"x"),
        (b"INCR", b"h"),
        (b"GETDEL", b"h"),
        (b"SET", b"h", b"v", b"GET"),
        (b"RECALL", b"h"),
        (b"UPDATE", b"h", b"DATA", b"{}"),
    ):
        assert isinstance(door.call(*words), WrongType), words
    assert door.entries() == before


def test_emptying_a_hash_frees_its_key_and_bytes(backend: Backend) -> None:
    """HDEL of the last field deletes the key, and the namespace's usage goes back to zero."""
    door = Door(backend)
    door.call(b"HSET", b"h", b"f", b"v")
    assert door.call(b"HDEL", b"h", b"f") == 1
    assert door.entries() == {}
    principal = door.session.require()
    _, keys, size = backend.run(door.session.service.usage(principal))
    assert (keys, size) == (0, 0)


@given(st.dictionaries(st.binary(max_size=40), st.binary(max_size=40), max_size=30))
def test_the_codec_keeps_every_field_and_its_order(fields: dict[bytes, bytes]) -> None:
    """Any binary fields and values come back as they were set, in their order."""
    assert list(unpack_map(pack_map(fields)).items()) == list(fields.items())


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    with StashDaemon("--backend", "memory") as d:
        yield d


def test_http_answers_409_wrong_type_for_a_hash(daemon: StashDaemon) -> None:
    """GET /recall of a key holding a hash is a 409 with code wrong_type, not a 500."""
    client = redis.Redis(port=daemon.port)
    client.hset("task:1", mapping={"state": "done"})
    url = f"http://127.0.0.1:{daemon.http_port}/recall/task:1"
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310 - a local test URL
    assert caught.value.code == 409
    assert json.loads(caught.value.read())["error"]["code"] == "wrong_type"
    client.close()


def test_redis_py_hash_api(daemon: StashDaemon) -> None:
    """redis-py's hash methods, as an application calls them, RESP2 and RESP3."""
    for protocol in (2, 3):
        client = redis.Redis(port=daemon.port, protocol=protocol, decode_responses=True)
        key = f"profile:{protocol}"
        assert client.hset(key, mapping={"name": "ada", "visits": "1"}) == 2
        assert client.hincrby(key, "visits", 4) == 5
        assert client.hgetall(key) == {"name": "ada", "visits": "5"}
        assert client.hmget(key, ["name", "nosuch"]) == ["ada", None]
        assert client.type(key) == "hash"
        assert client.ttl(key) > 0
        with client.pipeline() as pipe:  # MULTI/EXEC, as libraries write a hash
            pipe.hset(key, "name", "grace")
            pipe.expire(key, 60)
            assert pipe.execute() == [0, True]
        assert client.hget(key, "name") == "grace"
        assert dict(client.hscan_iter(key, match="n*")) == {"name": "grace"}
        client.close()


# langchain-community warns of its own deprecation and of a default it will change.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_langchain_llm_cache_hits_on_the_second_call(daemon: StashDaemon) -> None:
    """langchain's RedisCache stores the first answer (HSET in MULTI) and serves it again."""
    from langchain_community.cache import RedisCache  # noqa: PLC0415 - heavy, this test only
    from langchain_core.globals import set_llm_cache  # noqa: PLC0415
    from langchain_core.language_models.fake import FakeListLLM  # noqa: PLC0415

    client = redis.Redis(port=daemon.port)
    others: list[bytes] = client.keys("*")  # type: ignore[assignment]  # bytes: no decoding
    set_llm_cache(RedisCache(redis_=client, ttl=300))
    try:
        llm = FakeListLLM(responses=["first answer", "second answer"])
        assert llm.invoke("what is stash?") == "first answer"
        # A miss would ask the model again and get its second answer.
        assert llm.invoke("what is stash?") == "first answer"
        found: list[bytes] = client.keys("*")  # type: ignore[assignment]
        keys = set(found) - set(others)  # the cache's own
        assert keys
        for key in keys:
            assert (key, client.type(key)) == (key, b"hash")
            assert 0 < client.ttl(key) <= 300, key
    finally:
        set_llm_cache(None)
        client.close()
