"""Random sorted-set requests, good and bad, against stashd and a real redis-server at once."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest

from tests.support.resp_client import RespClient
from tests.support.servers import RedisServer, StashDaemon


@pytest.fixture(scope="module")
def daemon() -> Iterator[StashDaemon]:
    with StashDaemon("--backend", "memory") as d:
        yield d


_MEMBERS = [b"a", b"b", b"c", b"ab", b"", b"d"]
_SCORES = [b"0", b"1", b"-1", b"2.5", b"0.1", b"inf", b"-inf", b"+inf", b"1e3", b"-0", b"nan"]
_SCORES += [b"x", b"1e400", b"(1", b"3", b" 1", b"0x1p-2"]
_BOUNDS = [b"-inf", b"+inf", b"(1", b"1", b"(0", b"2.5", b"x", b"", b"(", b"-1", b" 2"]
_LEX = [b"-", b"+", b"[a", b"(a", b"[b", b"(c", b"[", b"a", b"[ab"]
_RANKS = [b"0", b"1", b"-1", b"2", b"-2", b"5", b"-100", b"x"]


def _request(r: random.Random) -> list[bytes]:  # noqa: C901 - one line per command
    """A random sorted-set request, valid or not, on one of a few keys."""
    key = r.choice([b"z", b"z", b"z", b"w", b"s"])
    c = r.choice

    def maybe(*words: bytes, p: float = 0.4) -> list[bytes]:
        return list(words) if r.random() < p else []

    def limit() -> list[bytes]:
        return maybe(b"LIMIT", c(_RANKS), c(_RANKS))

    name = c(["zadd", "zincrby", "zrem", "zscore", "zmscore", "zcard", "zcount", "zlexcount"])
    name = c([name, "rank", "score", "lex", "byscore", "bylex", "rev", "pop", "rem", "other"])
    name = c([name, name, name, "combine", "store", "rangestore", "mpop"])
    flags = [f for f in (b"NX", b"XX", b"GT", b"LT", b"CH", b"INCR") if r.random() < 0.15]
    pairs = [w for _ in range(r.randint(1, 3)) for w in (c(_SCORES), c(_MEMBERS))]
    withscores = maybe(b"WITHSCORES", p=0.5)
    requests = {
        "zadd": [b"ZADD", key, *flags, *pairs],
        "zincrby": [b"ZINCRBY", key, c(_SCORES), c(_MEMBERS)],
        "zrem": [b"ZREM", key, *_MEMBERS[: r.randint(1, 4)]],
        "zscore": [b"ZSCORE", key, c(_MEMBERS)],
        "zmscore": [b"ZMSCORE", key, c(_MEMBERS), c(_MEMBERS)],
        "zcard": [b"ZCARD", key],
        "zcount": [b"ZCOUNT", key, c(_BOUNDS), c(_BOUNDS)],
        "zlexcount": [b"ZLEXCOUNT", key, c(_LEX), c(_LEX)],
        "rank": [b"ZRANGE", key, c(_RANKS), c(_RANKS), *withscores, *maybe(b"REV")],
        "score": [b"ZRANGE", key, c(_BOUNDS), c(_BOUNDS), b"BYSCORE", *maybe(b"REV"), *limit()],
        "lex": [b"ZRANGE", key, c(_LEX), c(_LEX), b"BYLEX", *maybe(b"REV"), *limit()],
        "byscore": [c([b"ZRANGEBYSCORE", b"ZREVRANGEBYSCORE"]), key, c(_BOUNDS), c(_BOUNDS)],
        "bylex": [c([b"ZRANGEBYLEX", b"ZREVRANGEBYLEX"]), key, c(_LEX), c(_LEX), *limit()],
        "rev": [b"ZREVRANGE", key, c(_RANKS), c(_RANKS), *withscores],
        "pop": [c([b"ZPOPMIN", b"ZPOPMAX"]), key, *maybe(c(_RANKS), p=0.6)],
        "rem": [b"ZREMRANGEBYRANK", key, c(_RANKS), c(_RANKS)],
        "store": [
            c([b"ZUNIONSTORE", b"ZINTERSTORE", b"ZDIFFSTORE"]),
            c([b"w", b"z", b"s2"]),
            c([b"1", b"2", b"0"]),
            *[c([b"z", b"w", b"s", b"nokey"]) for _ in range(r.randint(1, 2))],
            *maybe(b"WEIGHTS", c(_SCORES), c(_SCORES)),
            *maybe(b"AGGREGATE", c([b"SUM", b"MIN", b"max"])),
        ],
        "mpop": [
            b"ZMPOP",
            c([b"1", b"2", b"0"]),
            *[c([b"z", b"w", b"s", b"nokey"]) for _ in range(r.randint(1, 2))],
            c([b"MIN", b"max", b"x"]),
            *maybe(b"COUNT", c(_RANKS)),
        ],
        "rangestore": [b"ZRANGESTORE", c([b"w", b"z"]), key, c(_RANKS), c(_RANKS)],
        "combine": [
            c([b"ZUNION", b"ZINTER", b"ZDIFF", b"ZINTERCARD"]),
            c([b"1", b"2", b"3", b"0"]),
            *[c([b"z", b"w", b"s", b"nokey"]) for _ in range(r.randint(1, 3))],
            *maybe(b"WEIGHTS", c(_SCORES), c(_SCORES)),
            *maybe(b"AGGREGATE", c([b"SUM", b"min", b"MAX", b"x"])),
            *maybe(b"LIMIT", c(_RANKS)),
            *withscores,
        ],
        "other": c(
            [
                [b"ZREMRANGEBYSCORE", key, c(_BOUNDS), c(_BOUNDS)],
                [b"ZREMRANGEBYLEX", key, c(_LEX), c(_LEX)],
                [b"ZSCAN", key, b"0", *maybe(b"MATCH", c([b"a*", b"*b", b"?"]))],
                [b"ZRANDMEMBER", key, c([b"100", b"0"]), *withscores],
                [b"ZRANK", key, c(_MEMBERS)],
                [b"ZREVRANK", key, c(_MEMBERS)],
                [b"SET", b"s", b"text"],
            ]
        ),
    }
    words = requests[name]
    if name == "byscore":
        words += withscores + limit()
    return words


@pytest.mark.parametrize("proto", [2, 3])
def test_random_requests_answer_as_redis_answers(
    daemon: StashDaemon, redis_server: RedisServer, proto: int
) -> None:
    """Thousands of random sorted-set requests, good and bad, get Redis's replies exactly."""
    clients = [RespClient(daemon.port), RespClient(redis_server.port)]
    for client in clients:
        if proto == 3:
            assert client.call("HELLO", "3").kind == "%"
        client.call("FLUSHALL")
    r = random.Random(proto)
    for _ in range(1500):
        words = _request(r)
        stash, real = (client.call(*words) for client in clients)
        assert stash == real, (b" ".join(words), stash.render(), real.render())
    for client in clients:
        client.close()
